"""Documents as context: terms extracted from them, and a language model of their text.

Issue "Documents as context: text-only adaptation (HAED) and a long-document benchmark".
Every utterance's context is a document: the rest of its chapter (the other utterances'
references, never its own). Development sets:

* ``synth-hard``: LibriSpeech test-clean/test-other utterances spoken by 17 TTS voices,
  augmented (``bench/work/synth-hard``), with their chapters' documents from
  ``ctxasr data documents --refs ...test-clean... --refs ...test-other...
  --audio-manifest bench/work/synth-hard/manifest.jsonl -o bench/work/documents-synth-hard``;
* ``real2``: the real recordings of ``../shared/data/real-speech-2`` that come in
  chapters (LJSpeech's LJ001 and LJ050, LibriVox's chapters): each one's document is
  the rest of its chapter among those recordings.

Rare words (B-WER) are the references' (synth-hard) or the words outside the LibriSpeech
5k common list (real2). For each set and backend it measures:

* extraction (``ctxasr.context.extract``, as ``--context-text`` runs it): terms per
  document, and how many of the utterances' rare words are in the document at all and
  among its extracted terms;
* systems: ``none``; ``terms`` (the extracted terms through the default retriever,
  no LM); ``LM`` and ``LM + ILM`` (the document's language model alone, without and with
  the internal LM subtracted); ``terms + LM``; ``terms + LM + ILM`` (the default
  settings); ``oracle prompt`` (the utterance's own rare words in every prompt,
  retriever ``all``: a reference, not a system);
* a weight sweep of ``terms + LM + ILM`` over ``--lm-weight`` x ``--ilm-weight`` on the
  first ``--sweep-limit`` utterances of each set;
* the build time of the n-gram of a 100,000-word and a 1 MB document (public-domain
  prose, ``../shared/data/text``).

Scores are Whisper-normalised (as ``ctxasr eval``); seconds are the summed wall time
of the transcription calls, run one after another in this process. Usage::

    python bench/documents.py [--sets synth-hard real2] [--backends ct2 torch]
        [--limit K] [--sweep-limit K] [--out bench/results]

Writes ``documents.md``, ``documents.json`` and ``documents.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

from biasing_report import DATA, real2_items
from context_scaling import _pct as pct
from context_scaling import git_state

from ctxasr.eval.manifest import EvalItem, read_manifest
from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.manifest import ManifestRow, context_terms
from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber

HERE = Path(__file__).resolve().parent
SETS = {"synth-hard": "synth-hard (TTS voices, augmented)", "real2": "real-speech-2 chapters"}
_WORD = re.compile(r"[a-z0-9']+")


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    terms: bool  # the document's extracted terms as context
    document: bool  # the document as a language model
    lm_weight: float | None = None  # None: the default
    ilm_weight: float | None = None
    oracle: bool = False
    in_search: bool = False  # torch: the LM at every beam step, not n-best re-ranking


SYSTEMS = (
    System("none", False, False),
    System("terms", True, False),
    System("LM", False, True, ilm_weight=0.0),
    System("LM + ILM", False, True),
    System("terms + LM", True, True, ilm_weight=0.0),
    System("terms + LM + ILM (default)", True, True),
    System("terms + LM + ILM, in search", True, True, in_search=True),
    System("oracle prompt", False, False, oracle=True),
)


def real2_chapters(folder: Path) -> list[EvalItem]:
    """real-speech-2's recordings that share a chapter with another one, each with the
    rest of its chapter (in id order) as its document and its terms."""
    chapters: dict[str, list[EvalItem]] = {}
    for item in real2_items(folder):
        if item.id.startswith(("LJ", "librivox-")):
            chapters.setdefault(item.id.rsplit("-", 1)[0], []).append(item)
    items = []
    for group in chapters.values():
        group.sort(key=lambda i: i.id)
        for item in group if len(group) > 1 else ():
            document = "\n".join(o.text for o in group if o is not item)
            row = ManifestRow(str(folder), 0, context_text=document)
            terms = tuple(t.text for t in context_terms(row))  # as a manifest row's
            items.append(dataclasses.replace(item, context=terms, context_text=document))
    return items


def options_for(system: System, sweep: tuple[float, float] | None = None) -> TranscribeOptions:
    opts = TranscribeOptions()
    if system.oracle:
        return dataclasses.replace(opts, retriever="all", domain_lm=False)
    if not system.terms:
        opts = dataclasses.replace(opts, retriever="none")
    if not system.document:
        return dataclasses.replace(opts, domain_lm=False)
    lm, ilm = sweep or (system.lm_weight, system.ilm_weight)
    changes = {k: v for k, v in (("lm_weight", lm), ("ilm_weight", ilm)) if v is not None}
    return dataclasses.replace(opts, lm_in_search=system.in_search, **changes)


def run(t: Transcriber, items: list[EvalItem], system: System,
        sweep: tuple[float, float] | None = None) -> tuple[BiasingScores, float, list[dict]]:  # fmt: skip
    opts = options_for(system, sweep)
    scores, seconds, rows = BiasingScores(), 0.0, []
    for item in items:
        terms = tuple(sorted(rare_words(item))) if system.oracle else item.context
        document = item.context_text if system.document else None
        start = time.perf_counter()
        result = t.transcribe(item.audio, terms if system.terms or system.oracle else (),
                              document=document, options=opts)  # fmt: skip
        took = time.perf_counter() - start
        seconds += took
        scores = scores + score_text(item.text, result.text, rare_words(item), normalize="whisper")
        rows.append({"id": item.id, "text": result.text, "seconds": round(took, 3)})
    return scores, seconds, rows


def extraction(items: list[EvalItem]) -> dict:
    """How the documents' extracted terms cover the utterances' rare words."""
    rare = in_doc = extracted = 0
    for item in items:
        words = set(_WORD.findall((item.context_text or "").lower()))
        terms = {w for t in item.context for w in _WORD.findall(t.lower())}
        for w in rare_words(item):
            rare += 1
            in_doc += w in words
            extracted += w in terms
    counts = [len(i.context) for i in items]
    words = [len((i.context_text or "").split()) for i in items]
    return {
        "utterances": len(items),
        "rare_words": rare,
        "rare_in_document": in_doc,
        "rare_extracted": extracted,
        "recall_of_rare": round(extracted / max(1, rare), 4),
        "recall_of_rare_in_document": round(extracted / max(1, in_doc), 4),
        "terms_per_document": {
            "min": min(counts),
            "median": statistics.median(counts),
            "max": max(counts),
        },
        "words_per_document": {
            "min": min(words),
            "median": statistics.median(words),
            "max": max(words),
        },
    }


def build_times(t: Transcriber, text_file: Path) -> list[dict]:
    """Seconds to build the n-gram of a 100,000-word and a 1 MB document (no cache)."""
    text = text_file.read_text()
    out = []
    for name, doc in (("100,000 words", " ".join(text.split()[:100_000])),
                      ("1 MB", text[:1_000_000])):  # fmt: skip
        lm = t.domain_lm_for(doc + f"\n{time.time()}")  # a fresh text: never a cache hit
        out.append({"document": name, "words": lm.info.words, "seconds": lm.info.seconds,
                    "ngrams": lm.info.ngrams})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--backends", nargs="+", choices=("ct2", "torch"), default=["ct2"])
    parser.add_argument("--systems", nargs="+", default=[s.name for s in SYSTEMS])
    parser.add_argument("--limit", type=int, default=0, help="first K utterances (0: all)")
    parser.add_argument("--sweep-limit", type=int, default=60)
    parser.add_argument(
        "--torch-limit",
        type=int,
        default=80,
        help="first K utterances on the torch backend (slower; 0: all)",
    )
    parser.add_argument("--torch-sweep-limit", type=int, default=30)
    parser.add_argument("--sweep", default="0.1,0.3,0.5,1.0", help="lm weights to sweep")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="documents", help="output files' name")
    parser.add_argument("--synth-hard", type=Path,
                        default=HERE / "work" / "documents-synth-hard" / "manifest.jsonl")  # fmt: skip
    parser.add_argument("--real2", type=Path, default=DATA / "real-speech-2")
    parser.add_argument("--text", type=Path, default=DATA / "text" / "sentences.txt")
    args = parser.parse_args()
    began = time.perf_counter()
    code = git_state()
    loaders = {"synth-hard": lambda: read_manifest(args.synth_hard),
               "real2": lambda: real2_chapters(args.real2)}  # fmt: skip
    sweep = [float(w) for w in args.sweep.split(",")]
    report: dict = {"sets": {}}
    lines: list[str] = []
    for backend in args.backends:
        t = Transcriber(model_options=ModelOptions(backend=backend))
        if backend == args.backends[0]:
            report["build"] = build_times(t, args.text)
        for key in args.sets:
            items = loaders[key]()
            limit = args.torch_limit if backend == "torch" else args.limit
            items = items[:limit] if limit else items
            t.transcribe(items[0].audio, options=options_for(SYSTEMS[0]))  # warm-up
            audio = sum(i.duration or 0.0 for i in items)
            section = report["sets"].setdefault(key, {"extraction": extraction(items)})
            rows = section.setdefault(backend, {"systems": [], "sweep": []})
            table = []
            for system in (s for s in SYSTEMS if s.name in args.systems):
                scores, s, utts = run(t, items, system)
                table.append((system.name, scores, s))
                rows["systems"].append({"system": system.name, **_row(scores, s, table[0][2]),
                                        "utterances": utts})  # fmt: skip
                print(f"{backend} {key} {system.name}: WER {pct(scores.wer)} U-WER "
                      f"{pct(scores.u_wer)} B-WER {pct(scores.b_wer)}, {s:.1f} s", flush=True)  # fmt: skip
            lines += _table(key, backend, items, audio, table, section["extraction"])
            few = items[: args.torch_sweep_limit if backend == "torch" else args.sweep_limit]
            if not few:
                continue
            grid = [(lm, ilm) for lm in sweep for ilm in (0.0, lm / 2, lm)]
            default = SYSTEMS[5]
            sweep_rows = []
            for lm, ilm in [(0.0, 0.0), *grid]:
                system = SYSTEMS[1] if lm == 0 and ilm == 0 else default
                scores, s, _ = run(t, few, system, None if system is SYSTEMS[1] else (lm, ilm))
                sweep_rows.append((lm, ilm, scores, s))
                rows["sweep"].append({"lm_weight": lm, "ilm_weight": ilm,
                                      **_row(scores, s, sweep_rows[0][3])})  # fmt: skip
                print(f"{backend} {key} sweep lm {lm} ilm {ilm}: WER {pct(scores.wer)} "
                      f"B-WER {pct(scores.b_wer)}", flush=True)  # fmt: skip
            lines += _sweep_table(key, backend, len(few), sweep_rows)
    took = (time.perf_counter() - began) / 60
    command = "python bench/documents.py " + shlex.join(sys.argv[1:])
    head = [
        "# Documents as context: extracted terms and a domain language model", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}. "
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Model: packaged "
        f"tiny.en, beam 5, CPU. Code: {code}. Command: `{command.strip()}` ({took:.1f} min).",
        "", "Each utterance's context is the rest of its chapter. Scores Whisper-normalised, "
        "in percent; s = summed wall seconds of the transcription calls (x none: against "
        "the `none` row of the same table). The LM re-ranks each search's n-best; `in "
        "search` (torch only) fuses it at every beam step instead.", "",
        "## Language model build time", "", "| document | words | n-grams | seconds |",
        "|---|---|---|---|",
        *[f"| {b['document']} | {b['words']:,} | {b['ngrams']:,} | {b['seconds']:.2f} |"
          for b in report.get("build", [])], "",
    ]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text("\n".join(head + lines) + "\n")
    report.update(command=command, code=code, minutes=round(took, 1))
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out / f"{args.name}.png")
    print("\n".join(head + lines))


def _row(scores: BiasingScores, seconds: float, none_s: float) -> dict:
    return {"wer": pct(scores.wer), "u_wer": pct(scores.u_wer), "b_wer": pct(scores.b_wer),
            "seconds": round(seconds, 3), "x_none": round(seconds / max(none_s, 1e-9), 3)}  # fmt: skip


def _table(key: str, backend: str, items: list[EvalItem], audio: float, table: list,
           ext: dict) -> list[str]:  # fmt: skip
    terms = ext["terms_per_document"]
    out = [
        f"## {SETS[key]}, {backend}: {len(items)} utterances, {audio / 60:.1f} min", "",
        f"Documents: median {ext['words_per_document']['median']:g} words; extracted terms "
        f"per document {terms['min']}-{terms['max']} (median {terms['median']:g}). Of "
        f"{ext['rare_words']} rare words, {ext['rare_in_document']} occur in their "
        f"document and {ext['rare_extracted']} are among its extracted terms (recall "
        f"{100 * ext['recall_of_rare']:.1f}% of all, "
        f"{100 * ext['recall_of_rare_in_document']:.1f}% of those in the document).", "",
        "| system | WER | U-WER | B-WER | s (x none) |", "|---|---|---|---|---|",
    ]  # fmt: skip
    none_s = table[0][2]
    for name, scores, s in table:
        out.append(f"| {name} | {pct(scores.wer)} | {pct(scores.u_wer)} | "
                   f"{pct(scores.b_wer)} | {s:.1f} ({s / none_s:.2f}x) |")  # fmt: skip
    return [*out, "", *verdicts(table), ""]


def verdicts(table: list) -> list[str]:
    """The issue's targets, as met or missed on this table."""
    by = {name: (scores, s) for name, scores, s in table}
    if "none" not in by:
        return []
    none, none_s = by["none"]
    out = []

    def rel(a, b) -> float:
        a, b = a.error_rate, b.error_rate
        return (a - b) / b if b else 0.0

    default = by.get("terms + LM + ILM (default)")
    if default is not None:
        scores, s = default
        checks = [
            ("B-WER at least 40% lower than none", rel(scores.b_wer, none.b_wer) <= -0.40,
             f"{100 * rel(scores.b_wer, none.b_wer):+.1f}%"),
            ("WER at least 10% lower than none", rel(scores.wer, none.wer) <= -0.10,
             f"{100 * rel(scores.wer, none.wer):+.1f}%"),
            ("U-WER no higher than none", scores.u_wer.error_rate <= none.u_wer.error_rate,
             f"{pct(none.u_wer)} -> {pct(scores.u_wer)}"),
            ("time at most 1.5x none", s <= 1.5 * none_s, f"{s / none_s:.2f}x"),
        ]  # fmt: skip
        out += [
            f"- **{'met' if ok else 'missed'}**: {what} ({value})" for what, ok, value in checks
        ]
    if "LM" in by and "LM + ILM" in by:
        lm, ilm = by["LM"][0], by["LM + ILM"][0]
        out.append(f"- **{'met' if lm.wer.error_rate < none.wer.error_rate else 'missed'}**: the LM alone lowers WER "
                   f"({pct(none.wer)} -> {pct(lm.wer)})")  # fmt: skip
        out.append(f"- **{'met' if ilm.wer.error_rate < lm.wer.error_rate else 'missed'}**: ILM subtraction lowers "
                   f"it more ({pct(lm.wer)} -> {pct(ilm.wer)})")  # fmt: skip
    return out


def _sweep_table(key: str, backend: str, n: int, rows: list) -> list[str]:
    out = [f"### Weight sweep, {SETS[key]}, {backend}: first {n} utterances, terms + LM + ILM",
           "", "| lm weight | ilm weight | WER | U-WER | B-WER | s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for lm, ilm, scores, s in rows:
        label = "terms only" if lm == 0 and ilm == 0 else f"{lm:g}"
        out.append(f"| {label} | {ilm:g} | {pct(scores.wer)} | {pct(scores.u_wer)} | "
                   f"{pct(scores.b_wer)} | {s:.1f} |")  # fmt: skip
    return [*out, ""]


def plot(report: dict, path: Path) -> None:
    """WER of the sweep against the LM weight, one line per ILM ratio, per set/backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, b, v) for k, s in report["sets"].items() for b, v in s.items()
              if isinstance(v, dict) and "sweep" in v and v["sweep"]]  # fmt: skip
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, backend, data) in zip(axes[0], panels, strict=True):
        rows = data["sweep"]
        base = float(rows[0]["wer"])
        for ratio, label in ((0.0, "no ILM"), (0.5, "ILM x 0.5"), (1.0, "ILM x 1")):
            pts = [(r["lm_weight"], float(r["wer"])) for r in rows[1:]
                   if abs(r["ilm_weight"] - ratio * r["lm_weight"]) < 1e-9]  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.axhline(base, color="gray", linestyle="--", label="terms only")
        ax.set(title=f"{key}, {backend}", xlabel="LM weight", ylabel="WER %")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
