"""The speech LLM against Whisper tiny.en, with and without context, on the development sets.

Sets (as ``context_scaling.py`` reads them): ``real`` (``../shared/data/real-speech``),
``real2`` (``real-speech-2``, markup stripped) and ``synth-hard`` (``bench/work/synth-hard``;
the script says how to build it when it is missing). Every utterance's biasing list is its
own rare words plus N distractors from ``all_rare_words.txt`` (seeded as
``biasing_report.py`` seeds them).

Systems, each a ``Transcriber`` run over the whole set in this one process:

* ``whisper``: packaged tiny.en (CTranslate2 int8, beam 5), no context;
* ``whisper pruned N=1000``: the same with speech-aware pruning (phonetic retriever);
* ``llm none``: ``backend="speechllm"`` (the checkpoint given, by default the packaged
  one), no context: Whisper's pass 1 cuts the clips, the LLM transcribes them (beam 5; with
  joint CTC/attention decoding when the checkpoint has a CTC head);
* ``llm none, LM alone``: the same with ``ctc_weight`` 0 (checkpoints with a CTC head);
* ``llm pruned N=1000``: pass 1 and the phonetic retriever pick the terms of each 30 s
  stretch from the N=1,000 list, the LLM gets them in its prompt;
* ``llm whole N=100``: the whole N=100 list in every prompt (retriever "all");
* ``llm pruned N=1000 + fusion W``: pruned, and the picked terms fused into the search
  with weight W (``--fusion``, ``--fusion-weight``, default 3).

Scores are Whisper-normalised (``score_text``). Time: wall seconds per audio second
(RTF) of the whole system, on this machine's CPU threads; ``LLM tok/s``: tokens the LLM
emitted per second of ``SpeechLLMRecognizer.transcribe`` (its encoders included). Context
tokens: mean LLM positions the context took per prompted clip, after pooling.

Usage::

    python bench/speechllm.py [--checkpoint DIR] [--sets real real2 synth-hard]
        [--limit K] [--fusion [--fusion-weight W]] [--only SYSTEM ...]
        [--out bench/results] [--name speechllm]

Writes ``NAME.md`` and ``NAME.json`` (per-system scores, times and settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from biasing_report import (
    DATA,
    real2_items,
    real_items,
    synth_hard_items,
    with_lists,
)

from ctxasr import Transcriber
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.manifest import EvalItem
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.options import ModelOptions, TranscribeOptions

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Outcome:
    system: str
    scores: BiasingScores
    seconds: float
    audio: float
    llm_seconds: float = 0.0
    llm_tokens: int = 0
    context_positions: list[int] = dataclasses.field(default_factory=list)


class Meter:
    """Times the speech LLM's decoding and counts what it emits and what its context costs."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.seconds, self.tokens, self.positions = 0.0, 0, []
        llm = transcriber._llm
        model = llm.model
        real_transcribe, real_pool = llm.transcribe, model.pooling.forward

        def transcribe(*args, **kwargs):
            start = time.perf_counter()
            texts = real_transcribe(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.tokens += sum(len(llm.encode(t)) + 1 for t in texts)  # + eos
            return texts

        def pool(ctx, ctx_mask, speech, speech_mask):
            out, mask = real_pool(ctx, ctx_mask, speech, speech_mask)
            self.positions += [int(m.sum()) for m in mask]
            return out, mask

        llm.transcribe = transcribe
        model.pooling.forward = pool

    def take(self) -> tuple[float, int, list[int]]:
        out = (self.seconds, self.tokens, self.positions)
        self.seconds, self.tokens, self.positions = 0.0, 0, []
        return out


def run_system(name: str, transcriber: Transcriber, items: Sequence[EvalItem],
               options: TranscribeOptions, lists: dict[str, tuple[str, ...]] | None,
               meter: Meter | None) -> Outcome:  # fmt: skip
    """``lists``: each utterance's biasing list by id (None: no context)."""
    total, audio = BiasingScores(), 0.0
    start = time.perf_counter()
    for item in items:
        context = lists[item.id] if lists is not None else ()
        result = transcriber.transcribe(item.audio, context, options=options)
        total += score_text(item.text, result.text, rare_words(item), normalize="whisper")
        audio += result.duration
    seconds = time.perf_counter() - start
    out = Outcome(name, total, seconds, audio)
    if meter is not None:
        out.llm_seconds, out.llm_tokens, out.context_positions = meter.take()
    print(f"  {name}: {fmt(total)} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return out


def pct(rate: float) -> str:
    return f"{rate:.2f}" if math.isfinite(rate) else "-"  # error_rate is in percent


def fmt(s: BiasingScores) -> str:
    return f"{pct(s.wer.error_rate)} / {pct(s.u_wer.error_rate)} / {pct(s.b_wer.error_rate)}"


def table(outcomes: Sequence[Outcome]) -> str:
    lines = ["| system | WER | U-WER | B-WER | RTF | LLM tok/s | context positions |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in outcomes:
        tps = f"{o.llm_tokens / o.llm_seconds:.1f}" if o.llm_seconds else "-"
        ctx = (f"{sum(o.context_positions) / len(o.context_positions):.1f}"
               if o.context_positions else "-")  # fmt: skip
        s = o.scores
        lines.append(f"| {o.system} | {pct(s.wer.error_rate)} | {pct(s.u_wer.error_rate)} | "
                     f"{pct(s.b_wer.error_rate)} | {o.seconds / o.audio:.3f} | {tps} | {ctx} |")  # fmt: skip
    return "\n".join(lines)


def as_json(o: Outcome) -> dict:
    s = o.scores
    return {"system": o.system, "wer": s.wer.error_rate, "u_wer": s.u_wer.error_rate,
            "b_wer": s.b_wer.error_rate, "seconds": o.seconds, "audio_seconds": o.audio,
            "llm_seconds": o.llm_seconds, "llm_tokens": o.llm_tokens,
            "mean_context_positions": (sum(o.context_positions) / len(o.context_positions)
                                       if o.context_positions else None)}  # fmt: skip


def load_set(name: str, args) -> list[EvalItem]:
    if name == "real":
        return real_items(DATA / "real-speech")
    if name == "real2":
        return real2_items(DATA / "real-speech-2")
    return synth_hard_items(HERE / "work" / "synth-hard" / "manifest.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the packaged one")
    parser.add_argument("--sets", nargs="+", default=["real", "real2", "synth-hard"])
    parser.add_argument("--limit", type=int, default=0, help="first K utterances of each set")
    parser.add_argument("--fusion", action="store_true")
    parser.add_argument("--fusion-weight", type=float, default=3.0)
    parser.add_argument("--only", nargs="+", default=[], help="run only the systems named")
    parser.add_argument("--no-whisper", action="store_true", help="skip the Whisper rows")
    parser.add_argument(
        "--pool", type=Path, default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="speechllm")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pool = WordPool(read_word_pool(args.pool))
    whisper = Transcriber(model_options=ModelOptions(cpu_threads=args.threads))
    llm = Transcriber(model_options=ModelOptions(backend="speechllm", checkpoint=args.checkpoint,
                                                 cpu_threads=args.threads))  # fmt: skip
    meter = Meter(llm)
    base = TranscribeOptions()
    report = {"checkpoint": str(llm._llm.path), "machine": platform.processor() or
              platform.machine(), "threads": args.threads, "sets": {}}  # fmt: skip
    md = [f"# Speech LLM benchmark\n\nCheckpoint `{llm._llm.path}`; {args.threads} CPU "
          f"threads; Whisper tiny.en CTranslate2 int8, beam 5; the LLM beam 5"
          f"{f', joint CTC/attention decoding at CTC weight {base.ctc_weight}' if llm._llm.has_ctc else ''}"
          f" unless said. "
          f"Columns: WER / U-WER / B-WER in percent (Whisper-normalised), RTF (wall seconds "
          f"per audio second, whole system), LLM tokens per second of the LLM stage (its "
          f"encoders included), context "
          f"positions per prompted clip after pooling.\n"]  # fmt: skip
    for name in args.sets:
        items = load_set(name, args)
        if args.limit:
            items = items[: args.limit]
        n100 = {i.id: i.context for i in with_lists(items, pool, 100)}
        n1000 = {i.id: i.context for i in with_lists(items, pool, 1000)}
        print(f"{name}: {len(items)} utterances", file=sys.stderr, flush=True)
        systems = []
        if not args.no_whisper:
            systems += [
                ("whisper", whisper, base, None, None),
                ("whisper pruned N=1000", whisper, base, n1000, None),
            ]
        systems.append(("llm none", llm, base, None, meter))
        if llm._llm.has_ctc:  # the same without joint CTC decoding
            systems.append(("llm none, LM alone", llm, dataclasses.replace(base, ctc_weight=0.0),
                            None, meter))  # fmt: skip
        systems += [
            ("llm pruned N=1000", llm, base, n1000, meter),
            ("llm whole N=100", llm, dataclasses.replace(base, retriever="all"),
             n100, meter),
        ]  # fmt: skip
        if args.fusion:
            fused = dataclasses.replace(base, fusion_weight=args.fusion_weight)
            systems.append((f"llm pruned N=1000 + fusion {args.fusion_weight:g}", llm, fused,
                            n1000, meter))  # fmt: skip
        if args.only:
            systems = [s for s in systems if s[0] in args.only]
        outcomes = [run_system(s, t, items, o, f, m) for s, t, o, f, m in systems]
        hours = sum(o.audio for o in outcomes[:1]) / 3600
        md.append(f"## {name} ({len(items)} utterances, {hours:.2f} h)\n\n{table(outcomes)}\n")
        report["sets"][name] = [as_json(o) for o in outcomes]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text("\n".join(md))
        (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
