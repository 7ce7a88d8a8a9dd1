"""MADEON's comparison at this machine's scale: Mamba, Mamba + speech prefixing, Mamba-2 +
speech prefixing and a decoder-only Transformer, trained alike (``configs/madeon/*.yaml``),
against Whisper tiny.en on the development sets.

Sets as ``speechllm.py`` reads them: ``real`` (``../shared/data/real-speech``), ``real2``
(``real-speech-2``, markup stripped) and ``synth-hard`` (``bench/work/synth-hard``). Each
run is decoded through the pipeline (``backend="madeon"``: Whisper's pass 1 cuts the
clips, the decoder transcribes them; greedy unless ``--beam``), with no context, and,
with ``--fusion``, with each utterance's rare words plus N=1,000 distractors pruned by the
phonetic retriever and fused into the search at ``--fusion-weight``.

Columns: WER / U-WER / B-WER in percent (Whisper-normalised); parameters and training
seconds from the run's ``scores.json``; RTF, wall seconds per audio second of the whole
system; decoder RTF, of the MADEON stage alone (speech tokens included); tokens per
second the decoder wrote; step ms, one training step's forward and backward pass on the
same batch (16 sequences of 64 tokens), the systems timed in turn in this one run
(median of 7; ``train s`` in ``scores.json`` is wall time under whatever else ran); text CE, the decoder's teacher-forced cross-entropy of the
reference text and eos given the whole utterance's speech tokens (nats per token; a
measure that moves before WER does when a model is far from transcribing well).

Usage::

    python bench/madeon.py --runs bench/work/madeon/{mamba,mamba-sp,mamba2-sp,transformer}
        [--sets real real2 synth-hard] [--limit K] [--beam B] [--fusion]
        [--out bench/results] [--name madeon]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from biasing_report import with_lists

from ctxasr import Transcriber
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.manifest import EvalItem
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.options import ModelOptions, TranscribeOptions
from speechllm import load_set

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


@dataclass
class Row:
    system: str
    scores: BiasingScores
    seconds: float
    audio: float
    decoder_seconds: float = 0.0
    tokens: int = 0
    parameters: int = 0
    train_seconds: float = 0.0
    text_ce: float = 0.0
    step_ms: float = 0.0


class Meter:
    """Times the MADEON stage and counts the text tokens it writes."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.seconds, self.tokens = 0.0, 0
        rec = transcriber._llm
        real = rec.transcribe

        def transcribe(*args, **kwargs):
            start = time.perf_counter()
            texts = real(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.tokens += sum(len(rec.encode(t)) + 1 for t in texts)
            return texts

        rec.transcribe = transcribe

    def take(self) -> tuple[float, int]:
        out = (self.seconds, self.tokens)
        self.seconds, self.tokens = 0.0, 0
        return out


def run(name: str, transcriber: Transcriber, items: Sequence[EvalItem],
        options: TranscribeOptions, context: bool) -> Row:  # fmt: skip
    total, audio = BiasingScores(), 0.0
    start = time.perf_counter()
    for item in items:
        result = transcriber.transcribe(item.audio, item.context if context else (),
                                        options=options)  # fmt: skip
        total += score_text(item.text, result.text, rare_words(item), normalize="whisper")
        audio += result.duration
    row = Row(name, total, time.perf_counter() - start, audio)
    s = total
    print(f"  {name}: {pct(s.wer.error_rate)} / {pct(s.u_wer.error_rate)} / "
          f"{pct(s.b_wer.error_rate)} in {row.seconds:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return row


def text_ce(transcriber: Transcriber, items: Sequence[EvalItem]) -> float:
    """Mean cross-entropy (nats) of each reference's text tokens and eos."""
    import torch

    from ctxasr.audio import load_audio

    rec = transcriber._llm
    model, tok, total, count = rec.model, rec.tokenizer, 0.0, 0
    for item in items:
        prefix = tok.sequence(tok.speech_ids_of_audio(load_audio(item.audio)))
        words = re.sub(r"[^\w\s']", " ", item.text.lower()).split()  # as the TTS texts read
        text = [*tok.text_ids(" ".join(words)), tok.eos_id]
        ids = torch.tensor([prefix + text])
        n = len(ids[0])
        with torch.no_grad():
            loss = model.loss(ids, torch.tensor([len(prefix)]), torch.tensor([n]))
        total, count = total + float(loss) * len(text), count + len(text)
    return total / max(1, count)


def step_times(transcribers: Sequence[Transcriber], repeats: int = 7) -> list[float]:
    """Median ms of one forward + backward pass of each model on one batch, interleaved."""
    import statistics

    import torch

    models = [t._llm.model.train() for t in transcribers]
    times: list[list[float]] = [[] for _ in models]
    for r in range(repeats + 1):
        for i, model in enumerate(models):
            g = torch.Generator().manual_seed(r)
            ids = torch.randint(5, model.config.vocab, (16, 64), generator=g)
            prefix, lengths = torch.full((16,), 44), torch.full((16,), 64)
            start = time.perf_counter()
            model.loss(ids, prefix, lengths).backward()
            if r:  # the first round warms up
                times[i].append(1000 * (time.perf_counter() - start))
            model.zero_grad(set_to_none=True)
    for model in models:
        model.eval()
    return [statistics.median(t) for t in times]


def pct(rate: float) -> str:
    return f"{rate:.2f}" if math.isfinite(rate) else "-"


def table(rows: Sequence[Row]) -> str:
    lines = ["| system | params | train s | step ms | text CE | WER | U-WER | B-WER | RTF "
             "| decoder RTF | tok/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        s = r.scores
        params = f"{r.parameters / 1e6:.2f} M" if r.parameters else "-"
        train = f"{r.train_seconds:.0f}" if r.train_seconds else "-"
        dec = f"{r.decoder_seconds / r.audio:.3f}" if r.decoder_seconds else "-"
        tps = f"{r.tokens / r.decoder_seconds:.1f}" if r.decoder_seconds else "-"
        ce = f"{r.text_ce:.3f}" if r.text_ce else "-"
        step = f"{r.step_ms:.0f}" if r.step_ms else "-"
        lines.append(f"| {r.system} | {params} | {train} | {step} | {ce} | {pct(s.wer.error_rate)} | "
                     f"{pct(s.u_wer.error_rate)} | {pct(s.b_wer.error_rate)} | "
                     f"{r.seconds / r.audio:.3f} | {dec} | {tps} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=["real", "real2", "synth-hard"])
    parser.add_argument("--limit", type=int, default=0, help="first K utterances of each set")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--fusion", action="store_true")
    parser.add_argument("--fusion-weight", type=float, default=3.0)
    parser.add_argument(
        "--pool", type=Path, default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="madeon")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    whisper = Transcriber(model_options=ModelOptions(cpu_threads=args.threads))
    systems = []
    for path in args.runs:
        t = Transcriber(model_options=ModelOptions(backend="madeon", checkpoint=str(path),
                                                   cpu_threads=args.threads))  # fmt: skip
        scores = json.loads((path / "scores.json").read_text())
        systems.append((path.name, t, Meter(t), scores))
    steps = dict(zip([s[0] for s in systems], step_times([s[1] for s in systems])))
    plain = TranscribeOptions(beam_size=args.beam, retriever="none")
    fused = TranscribeOptions(beam_size=max(args.beam, 2), fusion_weight=args.fusion_weight)
    pool = WordPool(read_word_pool(args.pool)) if args.fusion else None
    md = [f"# MADEON benchmark\n\n{args.threads} CPU threads; MADEON beam {args.beam} through "
          f"the pipeline (Whisper tiny.en's pass 1 cuts the clips); Whisper tiny.en "
          f"CTranslate2 int8, beam 5, no context. Columns: WER / U-WER / B-WER in percent "
          f"(Whisper-normalised); RTF of the whole system; decoder RTF and tokens per "
          f"second of the MADEON stage alone.\n"]  # fmt: skip
    report = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "beam": args.beam, "sets": {}}  # fmt: skip
    for name in args.sets:
        items = load_set(name, args)
        if args.limit:
            items = items[: args.limit]
        if args.fusion:
            items = with_lists(items, pool, 1000)
        print(f"{name}: {len(items)} utterances", file=sys.stderr, flush=True)
        rows = [run("whisper tiny.en", whisper, items, TranscribeOptions(), False)]
        for label, t, meter, scores in systems:
            jobs = [(label, plain, False)]
            if args.fusion:
                jobs.append((f"{label} + pruned N=1000 + fusion {args.fusion_weight:g}", fused,
                             True))  # fmt: skip
            for system, options, context in jobs:
                row = run(system, t, items, options, context)
                row.decoder_seconds, row.tokens = meter.take()
                row.parameters = scores.get("parameters", 0)
                row.train_seconds = scores.get("train_seconds", 0.0)
                if not context:
                    row.text_ce, row.step_ms = text_ce(t, items), steps[label]
                rows.append(row)
        md.append(f"## {name} ({len(items)} utterances)\n\n{table(rows)}\n")
        report["sets"][name] = [
            {"system": r.system, "wer": r.scores.wer.error_rate,
             "u_wer": r.scores.u_wer.error_rate, "b_wer": r.scores.b_wer.error_rate,
             "seconds": r.seconds, "audio_seconds": r.audio, "parameters": r.parameters,
             "train_seconds": r.train_seconds, "decoder_seconds": r.decoder_seconds,
             "tokens": r.tokens, "text_ce": r.text_ce, "step_ms": r.step_ms}
            for r in rows
        ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/madeon.py " + " ".join(sys.argv[1:])
    md.append(f"Command: `{command}`\n")
    (args.out / f"{args.name}.md").write_text("\n".join(md))
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
