"""Shallow fusion: does a context graph in the beam search beat, or add to, the prompt?

Issue "A PyTorch decoding backend with context-graph shallow fusion". On the two
development sets of ``bench/context_scaling.py`` (synth: LibriSpeech test references
spoken by espeak-ng; real: ``../shared/data/real-speech``), each utterance's context is
its true rare words plus N distractors from ``all_rare_words.txt`` (seeded as there),
N = 100 and 1000. All systems run the torch backend (packaged tiny.en, beam 5) with
speech-aware pruning choosing the terms, so they differ only in where the chosen terms
go:

* ``none``: no context;
* ``prompt only``: the picked terms in pass 2's prompt (fusion weight 0);
* ``fusion only``: the picked terms in pass 2's context graph, not in its prompt;
* ``prompt + fusion``: both.

Then two timings, side by side in this run:

* the backends on the real set without context: CTranslate2 int8 and float32 against
  the torch backend in float32 and bfloat16;
* fusion's overhead on the search itself: the first 30 s window of each real recording
  searched with and without a graph of its whole N-term list (no pruning: the largest
  graph), same encoder output and prompt, alternating order; per decoding step, since
  fusion changes what is decoded.

Scores are Whisper-normalised (as ``ctxasr eval``). Usage::

    python bench/fusion.py [--sets synth real] [--sizes 100 1000] [--limit K]
        [--weight 2.0] [--dtype bfloat16] [--out bench/results]

Writes ``fusion.md`` and ``fusion.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from biasing_report import DATA, real_items, with_lists
from context_scaling import _pct as pct
from context_scaling import git_state

from ctxasr.context.terms import ContextTerm
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.manifest import EvalItem, read_manifest
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber

HERE = Path(__file__).resolve().parent
SETS = {"synth": "synth (espeak-ng)", "real": "real-speech"}
NONE, PROMPT, FUSION, BOTH = "none", "prompt only", "fusion only", "prompt + fusion"


def options_for(system: str, weight: float) -> TranscribeOptions:
    base = TranscribeOptions()
    if system == NONE:
        return dataclasses.replace(base, retriever="none")
    if system == PROMPT:
        return base
    if system == FUSION:
        return dataclasses.replace(base, fusion_weight=weight, context_prompt=False)
    return dataclasses.replace(base, fusion_weight=weight)


def run_system(t: Transcriber, items: list[EvalItem], opts: TranscribeOptions,
               with_context: bool) -> tuple[BiasingScores, float, list[dict]]:  # fmt: skip
    scores, seconds, rows = BiasingScores(), 0.0, []
    for item in items:
        start = time.perf_counter()
        result = t.transcribe(item.audio, item.context if with_context else (), options=opts)
        took = time.perf_counter() - start
        seconds += took
        scores = scores + score_text(item.text, result.text, rare_words(item), normalize="whisper")
        rows.append({"id": item.id, "text": result.text, "seconds": round(took, 3),
                     "used": len(result.context_used)})  # fmt: skip
    return scores, seconds, rows


def backend_timing(items: list[EvalItem]) -> list[tuple[str, float, BiasingScores]]:
    """Wall seconds and scores of each backend over ``items`` without context."""
    configs = [
        ("ct2 int8", ModelOptions(compute_type="int8")),
        ("ct2 float32", ModelOptions(compute_type="float32")),
        ("torch float32", ModelOptions(backend="torch", torch_dtype="float32")),
        ("torch bfloat16", ModelOptions(backend="torch", torch_dtype="bfloat16")),
    ]
    out = []
    opts = options_for(NONE, 0.0)
    for name, model_options in configs:
        t = Transcriber(model_options=model_options)
        t.transcribe(items[0].audio, options=opts)  # warm-up: first-call costs aside
        scores, seconds, _ = run_system(t, items, opts, with_context=False)
        print(f"backends: {name}: {seconds:.1f} s, WER {pct(scores.wer)}", flush=True)
        out.append((name, seconds, scores))
    return out


def fusion_overhead(t: Transcriber, items: list[EvalItem], weight: float) -> dict:
    """Search time per decoding step with and without a graph of each item's whole list."""
    import numpy as np
    from faster_whisper.audio import pad_or_trim

    from ctxasr.audio import load_audio
    from ctxasr.whisper.decoding import BeamSearch, ContextFusion, SearchOptions

    model = t._model
    backend = model.model._model  # TorchWhisper under the n-best wrapper
    tokens = backend.tokens
    prompt = [tokens.sot]
    options = SearchOptions(beam_size=5, max_new_tokens=224)
    filters = backend._filters(prompt, 1.0, 0, True, [-1], 50)
    totals = {"plain": [0.0, 0], "fused": [0.0, 0]}
    graph_nodes = []
    for k, item in enumerate(items):
        mel = model.feature_extractor(load_audio(item.audio))[..., :-1]
        features = backend.encode(np.ascontiguousarray(pad_or_trim(mel)[None]))
        graph = t.graph_for([ContextTerm(w) for w in item.context])
        graph_nodes.append(graph.num_nodes)
        scorer = ContextFusion(graph, weight, tokens.eot)
        runs = [("plain", None), ("fused", scorer)]
        for name, sc in runs if k % 2 == 0 else runs[::-1]:
            search = BeamSearch(backend.model, tokens, options, filters, sc)
            start = time.perf_counter()
            found = search.run(features, prompt)[0]
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += search.steps
        del found
    per_step = {name: s / max(1, n) for name, (s, n) in totals.items()}
    return {
        "windows": len(items),
        "plain_seconds": round(totals["plain"][0], 3),
        "fused_seconds": round(totals["fused"][0], 3),
        "plain_steps": totals["plain"][1],
        "fused_steps": totals["fused"][1],
        "plain_ms_per_step": round(1000 * per_step["plain"], 3),
        "fused_ms_per_step": round(1000 * per_step["fused"], 3),
        "overhead_per_step": round(per_step["fused"] / per_step["plain"] - 1, 4),
        "graph_nodes_mean": round(sum(graph_nodes) / len(graph_nodes), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--limit", type=int, default=60, help="first K utterances of each set")
    parser.add_argument("--weight", type=float, default=2.0, help="fusion weight")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16",
                        help="torch backend precision of the quality runs")  # fmt: skip
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--synth", type=Path, default=HERE / "work" / "synth" / "manifest.jsonl")
    parser.add_argument("--real", type=Path, default=DATA / "real-speech")
    parser.add_argument("--pool", type=Path,
                        default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt")  # fmt: skip
    args = parser.parse_args()
    began = time.perf_counter()
    code = git_state()  # the code that runs, not what the tree holds when it ends
    pool = WordPool(read_word_pool(args.pool))
    loaders = {"synth": lambda: read_manifest(args.synth), "real": lambda: real_items(args.real)}
    t = Transcriber(model_options=ModelOptions(backend="torch", torch_dtype=args.dtype))
    report: dict = {"sets": {}}
    lines: list[str] = []
    for key in args.sets:
        items = loaders[key]()[: args.limit]
        t.transcribe(items[0].audio, options=options_for(NONE, 0.0))  # warm-up
        audio = sum(i.duration or 0.0 for i in items)
        biased = sum(len(rare_words(i)) for i in items)
        section = {"utterances": len(items), "audio_seconds": round(audio, 1), "rows": []}
        none_scores, none_s, rows = run_system(t, items, options_for(NONE, 0.0), False)
        print(f"{key} none: B-WER {pct(none_scores.b_wer)}, {none_s:.1f} s", flush=True)
        table = [(NONE, None, none_scores, none_s)]
        section["rows"].append({"system": NONE, "size": None, **_row(none_scores, none_s, none_s),
                                "utterances": rows})  # fmt: skip
        for n in args.sizes:
            listed = with_lists(items, pool, n)
            for system in (PROMPT, FUSION, BOTH):
                scores, s, rows = run_system(t, listed, options_for(system, args.weight), True)
                print(f"{key} N={n} {system}: WER {pct(scores.wer)} U-WER {pct(scores.u_wer)} "
                      f"B-WER {pct(scores.b_wer)}, {s:.1f} s", flush=True)  # fmt: skip
                table.append((system, n, scores, s))
                section["rows"].append({"system": system, "size": n,
                                        **_row(scores, s, none_s), "utterances": rows})  # fmt: skip
        report["sets"][key] = section
        lines += [f"## {SETS[key]}: {len(items)} utterances, {audio / 60:.1f} min, "
                  f"{biased} biased words", "",
                  "| N | system | WER | U-WER | B-WER | s (x none) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for system, n, scores, s in table:
            lines.append(f"| {n if n is not None else '—'} | {system} | {pct(scores.wer)} | "
                         f"{pct(scores.u_wer)} | {pct(scores.b_wer)} | "
                         f"{s:.1f} ({s / none_s:.2f}x) |")  # fmt: skip
        lines += ["", *verdicts(table), ""]

    timing_lines: list[str] = []
    if not args.skip_timing:
        real = real_items(args.real)[: args.limit]
        backends = backend_timing(real)
        base = {name: s for name, s, _ in backends}["ct2 int8"]
        timing_lines += [f"## Backends: real-speech, {len(real)} utterances, no context", "",
                         "| backend | wall s | x ct2 int8 | WER |", "|---|---|---|---|"]  # fmt: skip
        for name, s, scores in backends:
            timing_lines.append(f"| {name} | {s:.1f} | {s / base:.2f}x | {pct(scores.wer)} |")
        report["backends"] = [{"backend": n, "seconds": round(s, 3), "wer": pct(sc.wer)}
                              for n, s, sc in backends]  # fmt: skip
        size = max(args.sizes)
        listed = with_lists(real, pool, size)
        overhead = fusion_overhead(t, listed, args.weight)
        report["fusion_overhead"] = {"size": size, **overhead}
        met = overhead["overhead_per_step"] <= 0.10
        timing_lines += [
            "", f"## Fusion overhead on the search: real-speech, first 30 s window of "
            f"{overhead['windows']} recordings, graph of the whole N={size:,} list "
            f"(mean {overhead['graph_nodes_mean']:,.0f} nodes), weight {args.weight:g}", "",
            "| search | seconds | steps | ms / step |", "|---|---|---|---|",
            f"| plain beam search | {overhead['plain_seconds']:.2f} | {overhead['plain_steps']} "
            f"| {overhead['plain_ms_per_step']:.2f} |",
            f"| with fusion | {overhead['fused_seconds']:.2f} | {overhead['fused_steps']} "
            f"| {overhead['fused_ms_per_step']:.2f} |", "",
            f"- **{'met' if met else 'missed'}**: fusion overhead per step at most 10%: "
            f"{100 * overhead['overhead_per_step']:+.1f}%",
        ]  # fmt: skip

    took = (time.perf_counter() - began) / 60
    command = "python bench/fusion.py " + shlex.join(sys.argv[1:])
    head = [
        "# Shallow fusion with a context graph: prompt only, fusion only, both", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Model: packaged "
        f"tiny.en on the torch backend ({args.dtype}), beam 5, CPU; fusion weight "
        f"{args.weight:g}. Code: {code}. Command: `{command.strip()}` ({took:.1f} min).",
        "",
        "Every system runs speech-aware pruning (pass 1 without context; the terms it heard "
        "drive pass 2). They differ in where pass 2 puts them: its prompt, its context "
        "graph, or both. Lists: true rare words plus N distractors (seed 0). Scores "
        "Whisper-normalised, in percent; s = summed wall seconds of the transcription "
        "calls. The first system of each N (prompt only) also pays for pronouncing the "
        "list's new words, which the later ones find cached: compare search costs in the "
        "overhead table below.", "",
    ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion.md").write_text("\n".join(head + lines + timing_lines) + "\n")
    report.update(command=command, weight=args.weight, dtype=args.dtype, code=code,
                  minutes=round(took, 1))  # fmt: skip
    (args.out / "fusion.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(head + lines + timing_lines))


def _row(scores: BiasingScores, seconds: float, none_s: float) -> dict:
    return {"wer": pct(scores.wer), "u_wer": pct(scores.u_wer), "b_wer": pct(scores.b_wer),
            "seconds": round(seconds, 3), "x_none": round(seconds / none_s, 3)}  # fmt: skip


def verdicts(table) -> list[str]:
    """Whether fusion plus prompt beats prompt alone, per N (B-WER, and U-WER kept)."""
    out = []
    by = {(system, n): scores for system, n, scores, _ in table}
    for n in sorted({n for _, n, _, _ in table if n is not None}):
        p, b, f = by[(PROMPT, n)], by[(BOTH, n)], by[(FUSION, n)]
        better = b.b_wer.error_rate < p.b_wer.error_rate
        out.append(
            f"- N={n:,}: prompt + fusion {'beats' if better else 'does not beat'} prompt only "
            f"on B-WER ({pct(b.b_wer)} vs {pct(p.b_wer)}; U-WER {pct(b.u_wer)} vs "
            f"{pct(p.u_wer)}); fusion only: B-WER {pct(f.b_wer)}, U-WER {pct(f.u_wer)}."
        )
    return out


if __name__ == "__main__":
    main()
