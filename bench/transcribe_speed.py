"""ctxasr against plain faster-whisper: wall time, real-time factor and peak memory.

Both run the same model (the packaged Whisper tiny.en, int8, CPU) with the same beam
size on the same files, in one run, so the ratios are fair on a noisy machine:

* the short real recordings of ``../shared/data/real-speech``, transcribed in one
  process with the two systems alternating file by file (order swapped every file);
* one long recording, built by concatenating those recordings (with short pauses)
  to one hour, each system in a fresh process so its peak RSS is its own.

Usage::

    python bench/transcribe_speed.py [--data ../shared/data/real-speech] [--hours 1.0]

Writes the table to stdout and to ``bench/results/transcribe_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "real-speech"
WORK = HERE / "work"
RESULTS = HERE / "results"
BEAM = 5


def _plain_model():
    from faster_whisper import WhisperModel

    from ctxasr.models import packaged_model_path

    return WhisperModel(str(packaged_model_path()), device="cpu", compute_type="int8")


def _plain(model, path: str) -> tuple[str, float]:
    segments, info = model.transcribe(path, language="en", beam_size=BEAM)
    return " ".join(s.text.strip() for s in segments), info.duration


def _ctx(transcriber, path: str, context=()) -> tuple[str, float]:
    result = transcriber.transcribe(path, context)
    return result.text, result.duration


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER in percent, Whisper-normalised (cased, punctuated output vs references)."""
    from ctxasr.eval import score_text

    total = None
    for ref, hyp in zip(refs, hyps):
        scores = score_text(ref, hyp, [], normalize="whisper")
        total = scores if total is None else total + scores
    return total.wer.error_rate


def short_files(data: Path) -> dict:
    """Alternate the two systems file by file; return totals in seconds."""
    from ctxasr import Transcriber

    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    plain, ctx = _plain_model(), Transcriber()
    for path in (str(data / rows[0]["audio"]),) * 2:  # warm both up
        _plain(plain, path), _ctx(ctx, path)
    totals = {"faster-whisper": 0.0, "ctxasr": 0.0}
    texts: dict[str, list[str]] = {"faster-whisper": [], "ctxasr": []}
    audio = 0.0
    for i, row in enumerate(rows):
        path = str(data / row["audio"])
        order = [
            ("faster-whisper", lambda path=path: _plain(plain, path)),
            ("ctxasr", lambda path=path: _ctx(ctx, path)),
        ]
        for name, run in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            text, duration = run()
            totals[name] += time.perf_counter() - start
            texts[name].append(text)
        audio += duration
    refs = [row["text"] for row in rows]
    return {
        "files": len(rows),
        "audio_s": audio,
        **totals,
        "wer": {name: wer(refs, hyps) for name, hyps in texts.items()},
    }


def build_long_file(data: Path, hours: float) -> Path:
    """Concatenate the real recordings (16 kHz mono, 0.5 s pauses) to ``hours`` of audio."""
    import soundfile as sf

    from ctxasr.audio import SAMPLE_RATE, load_audio

    target = WORK / f"long_{hours:g}h.flac"
    reference = target.with_suffix(".txt")
    if target.exists() and reference.exists():
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()]
    clips = [load_audio(data / r["audio"]) for r in rows]
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    need, written = int(hours * 3600 * SAMPLE_RATE), 0
    texts: list[str] = []
    tmp = target.with_suffix(".tmp.flac")
    with sf.SoundFile(tmp, "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as out:
        while written < need:
            for row, clip in zip(rows, clips):
                whole = clip.shape[0] + pause.shape[0] <= need - written
                piece = np.concatenate([clip, pause])[: need - written]
                out.write(piece)
                written += piece.shape[0]
                if not whole:
                    break  # a clip cut short has no exact reference: stop before it
                texts.append(row["text"])
    reference.write_text("\n".join(texts) + "\n")
    tmp.rename(target)
    return target


def worker(system: str, path: str) -> None:
    """Run one system on one file in this process; print wall time and peak RSS."""
    from ctxasr import Transcriber

    load_start = time.perf_counter()
    model = _plain_model() if system == "faster-whisper" else Transcriber()
    load = time.perf_counter() - load_start
    start = time.perf_counter()
    text, duration = _plain(model, path) if system == "faster-whisper" else _ctx(model, path)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "wall_s": wall,
                "load_s": load,
                "audio_s": duration,
                "peak_rss_mib": peak_kib / 1024,
                "text": text,
            }
        )
    )


def long_file(path: Path) -> dict:
    out = {}
    for system in ("faster-whisper", "ctxasr"):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", system, str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        out[system] = json.loads(proc.stdout.strip().splitlines()[-1])
    reference = path.with_suffix(".txt").read_text()
    for result in out.values():
        result["wer"] = wer([reference], [result.pop("text")])
    return out


def render(short: dict, long: dict, long_path: Path) -> str:
    fw, cx = short["faster-whisper"], short["ctxasr"]
    lf, lc = long["faster-whisper"], long["ctxasr"]
    lines = [
        "# ctxasr vs plain faster-whisper (same model: packaged tiny.en, int8, CPU, beam 5)",
        "",
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}. "
        "No context given to ctxasr (the target: at most 1.1x the wall time of faster-whisper).",
        "",
        "| set | audio | faster-whisper wall | ctxasr wall | ratio ctxasr/fw | RTF fw | RTF ctxasr "
        "| peak RSS fw | peak RSS ctxasr | WER fw | WER ctxasr |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| real-speech ({short['files']} files, one process, alternating) | {short['audio_s']:.0f} s "
        f"| {fw:.1f} s | {cx:.1f} s | {cx / fw:.3f} | {fw / short['audio_s']:.4f} | {cx / short['audio_s']:.4f} "
        f"| – | – | {short['wer']['faster-whisper']:.2f}% | {short['wer']['ctxasr']:.2f}% |",
        f"| {long_path.name} (fresh process each) | {lc['audio_s'] / 60:.0f} min "
        f"| {lf['wall_s']:.1f} s | {lc['wall_s']:.1f} s | {lc['wall_s'] / lf['wall_s']:.3f} "
        f"| {lf['wall_s'] / lf['audio_s']:.4f} | {lc['wall_s'] / lc['audio_s']:.4f} "
        f"| {lf['peak_rss_mib']:.0f} MiB | {lc['peak_rss_mib']:.0f} MiB | {lf['wer']:.2f}% | {lc['wer']:.2f}% |",
        "",
        "RTF = processing seconds / audio seconds (lower is faster); model load excluded. "
        "WER: Whisper-normalised, against the references (the long file's reference is the "
        "concatenation of the clips' references).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    short = short_files(args.data)
    long_path = build_long_file(args.data, args.hours)
    table = render(short, long_file(long_path), long_path)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transcribe_speed.md").write_text(table)


if __name__ == "__main__":
    main()
