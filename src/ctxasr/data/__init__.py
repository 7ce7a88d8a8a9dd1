"""Benchmark data: biasing lists for the LibriSpeech contextual-biasing benchmark
(:mod:`ctxasr.data.biasing`), synthetic speech of its reference texts
(:mod:`ctxasr.data.synth`) and documents as context (:mod:`ctxasr.data.documents`).

Development tools, not part of transcription: nothing below the shells imports them.
The package itself imports nothing, so ``ctxasr --help`` stays fast.
"""
