"""UNIQUE page-sparse attention where it counts: B-WER of the speech LLM given a whole long
biasing list in its prompt, dense attention against UNIQUE against speech-aware pruning.

``bench/sparse_attention.py`` measures one attention step; this runs the packaged speech
LLM (``ctxasr.speechllm``) on real-speech with each utterance's rare words plus N
distractors (``biasing_report.py``'s seeded lists) in its prompt, every term, with no
prompt budget (``SpeechLLMRecognizer.transcribe`` on the whole clip; joint CTC/attention
decoding, beam 1, the pipeline's default CTC weight). Systems:

* ``whole list, dense``: SDPA attention over prompt and speech at every step;
* ``whole list, UNIQUE p/k``: the same prompt; every decode step attends to the top-k
  pages of p keys (plus a sink page and two recent pages), ``ctxasr.attention.unique``;
  the prefill is exact in both;
* ``pruned``: the pipeline's default (``backend="speechllm"``, phonetic retriever): pass 1
  and the retriever pick the terms; only they go in the prompt.

The report gives the mean LLM tokens of a list (before SAP pooling halves them): with
N = 1,000 the cache holds a few thousand positions, fewer than the default options keep
(64 pages of 64), where UNIQUE is exact, so the rows use smaller pages as well. Scores: WER / U-WER / B-WER,
Whisper-normalised; time: wall seconds per audio second of the LLM stage.

Usage::

    python bench/sparse_attention_llm.py [--limit 20] [--n 1000] [--pages 16:8 64:64]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from biasing_report import DATA, real_items, with_lists

from ctxasr import Transcriber
from ctxasr.attention.unique import PageSparseOptions, use_unique_attention
from ctxasr.audio import load_audio
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.options import ModelOptions, TranscribeOptions

HERE = Path(__file__).resolve().parent


def fmt(s: BiasingScores) -> str:
    return f"{s.wer.error_rate:.2f} | {s.u_wer.error_rate:.2f} | {s.b_wer.error_rate:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=20, help="first K real-speech clips")
    parser.add_argument("--n", type=int, default=1000, help="distractors per list")
    parser.add_argument("--pages", nargs="+", default=["16:8", "64:64"],
                        help="UNIQUE settings as PAGE_SIZE:TOP_K")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sparse_attention_llm.md")
    args = parser.parse_args()
    items = real_items(DATA / "real-speech")[: args.limit]
    pool = WordPool(read_word_pool(DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"))
    items = with_lists(items, pool, args.n)
    pipeline = Transcriber(model_options=ModelOptions(backend="speechllm",
                                                      cpu_threads=args.threads))  # fmt: skip
    rec = pipeline._llm
    from ctxasr.speechllm.recognizer import Clip

    weight = TranscribeOptions().ctc_weight
    audio = {i.id: load_audio(i.audio) for i in items}
    seconds = sum(len(a) for a in audio.values()) / 16000
    list_tokens = sum(sum(len(rec.encode(t)) for t in rec.terms(i.context)) for i in items)
    rows = []

    def whole(label: str) -> None:
        total, start = BiasingScores(), time.perf_counter()
        for item in items:
            clip = Clip(audio[item.id], rec.terms(item.context))
            text = rec.transcribe([clip], beam_size=1, ctc_weight=weight)[0]
            total += score_text(item.text, text, rare_words(item), normalize="whisper")
        rows.append((label, total, (time.perf_counter() - start) / seconds))
        print(f"  {label}: {fmt(total)}", file=sys.stderr, flush=True)

    whole("whole list, dense")
    for setting in args.pages:
        page, k = (int(x) for x in setting.split(":"))
        options = PageSparseOptions(page_size=page, top_k=k)
        previous = use_unique_attention(rec.model.lm, options)
        try:
            whole(f"whole list, UNIQUE {page}/{k} ({options.kept_pages * page} keys a step)")
        finally:
            rec.model.lm.set_attn_implementation(previous)
    total, start = BiasingScores(), time.perf_counter()
    for item in items:
        result = pipeline.transcribe(
            item.audio, item.context, options=TranscribeOptions(beam_size=1)
        )
        total += score_text(item.text, result.text, rare_words(item), normalize="whisper")
    rows.append(("pruned (pipeline, phonetic retriever)", total,
                 (time.perf_counter() - start) / seconds))  # fmt: skip
    print(f"  pruned: {fmt(total)}", file=sys.stderr, flush=True)
    lines = [
        "# UNIQUE in the speech LLM: a whole biasing list in the prompt\n",
        f"{time.strftime('%Y-%m-%d')}; {platform.machine()}, {args.threads} torch threads; "
        f"packaged speech LLM, joint CTC/attention decoding (CTC weight {weight}), beam 1; "
        f"real-speech, first {len(items)} clips ({seconds:.0f} s); each list = the clip's "
        f"rare words + {args.n} distractors, {list_tokens / len(items):.0f} LLM tokens a "
        f"list before pooling. Command: `python bench/sparse_attention_llm.py "
        f"{' '.join(sys.argv[1:])}`\n",
        "| system | WER | U-WER | B-WER | RTF |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {label} | {fmt(s)} | {rtf:.3f} |" for label, s, rtf in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
