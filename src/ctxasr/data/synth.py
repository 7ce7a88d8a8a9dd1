"""Synthetic speech of benchmark reference texts, spoken by eSpeak NG.

The LibriSpeech audio is not at hand, so a development set is made by speaking a seeded
sample of the biasing benchmark's reference texts with ``espeak-ng`` (a formant
synthesiser: robotic, but free, small, offline and deterministic). Variety comes from
cycling through several English voices and speaking rates.

* **Selection** (:func:`select_ids`): each reference file contributes the ``n`` ids
  with the smallest ``sha256(f"{seed}:{id}")``. So a selection does not depend on the
  order of the file, and growing ``n`` keeps the earlier picks.
* **Voices and rates** (:func:`assign_voices`): the selected utterances, in that hash
  order and file after file (in file-name order), take the ``(voice, rate)`` pairs in
  turn, voice varying fastest; with 8 voices and 3 rates every 24 consecutive
  utterances use every pair once.
* **Audio**: 16 kHz mono 16-bit PCM WAV, ``OUTDIR/audio/<id>.wav``, resampled from
  espeak-ng's 22,050 Hz by FFmpeg (PyAV). espeak-ng is deterministic, so the same seed
  gives the same bytes with the same espeak-ng and FFmpeg versions.
* **Manifest**: ``OUTDIR/manifest.jsonl``, NeMo style, one JSON object a line (see
  :meth:`SynthUtterance.to_json`), in selection order.

Files are written atomically (temporary file, then rename). Audio of an earlier run that
the new selection does not include is left in place; the manifest lists what belongs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.data.augment import AugmentOptions
from ctxasr.errors import CtxasrError
from ctxasr.files import atomic_write

# eSpeak NG 1.51 English voices (`espeak-ng --voices=en`), some with a variant (`+f2`:
# female 2, `+m3`: male 3; `espeak-ng --voices=variant`). Chosen for accent and speaker
# variety among those Whisper tiny.en understands reasonably (17-27% WER on 20 test-clean
# texts at 160 wpm, against 30-43% for en-gb-scotland, en-029, en-gb-x-gbcwmd, en-us+f3 and
# en+f4). espeak-ng ignores a variant on `en-gb` (`en-gb+f2` sounds exactly like `en-gb`),
# so British variants are spelled `en+...`; :func:`check_voices` rejects such no-ops.
VOICES: tuple[str, ...] = (
    "en-us",
    "en",  # British English (en-gb)
    "en-gb-x-rp",
    "en-gb-x-gbclan",  # Lancaster
    "en-us-nyc",
    "en-us+m3",
    "en-us+f2",
    "en+f2",
)
# Words per minute, around LibriSpeech's own pace (test-clean: 52,576 words in 5.4 h,
# about 160 wpm); espeak-ng's default is 175.
RATES: tuple[int, ...] = (140, 160, 180)
MIN_RATE, MAX_RATE = 80, 450  # words per minute: what espeak-ng accepts
ESPEAK_TIMEOUT = 120.0  # seconds per utterance
MANIFEST_NAME = "manifest.jsonl"
AUDIO_DIR = "audio"


@dataclass(frozen=True)
class SynthOptions:
    """How to speak: voices and rates to cycle through, the worker count, and the
    augmentation (none by default: the audio is the engines' own).

    A voice is an eSpeak NG voice name, or ``ENGINE:NAME`` for another engine
    (:mod:`ctxasr.data.engines`); a voice listed twice is used twice as often.
    """

    voices: tuple[str, ...] = VOICES
    rates: tuple[int, ...] = RATES  # words per minute
    workers: int = 2  # concurrent TTS processes
    espeak: str = "espeak-ng"  # executable name or path
    augment: AugmentOptions | None = None
    augment_name: str | None = None  # the preset's name, recorded in the manifest
    babble_pool: int = 64  # clean utterances (the first of the plan) that babble draws on


@dataclass(frozen=True)
class SynthItem:
    """One utterance to speak: its reference row, voice and rate."""

    utt_id: str
    text: str
    rare_words: tuple[str, ...]  # sorted
    context: tuple[str, ...] | None  # the file's biasing list (column 4), if it has one
    voice: str
    rate: int  # words per minute
    source_ref: str  # file name of the reference file it came from


@dataclass(frozen=True)
class SynthUtterance:
    """A spoken utterance: where its audio is and how long it lasts."""

    item: SynthItem
    audio_filepath: str  # relative to the manifest's folder
    duration: float  # seconds
    augment: dict[str, object] | None = None  # the applied chain; None: not augmented

    def to_json(self) -> dict[str, object]:
        """The manifest row (NeMo's ``audio_filepath``, ``text``, ``duration`` first)."""
        it = self.item
        return {
            "audio_filepath": self.audio_filepath,
            "text": it.text,
            "duration": self.duration,
            "id": it.utt_id,
            "rare_words": list(it.rare_words),
            "context": None if it.context is None else list(it.context),
            "voice": it.voice,
            "rate": it.rate,
            "source_ref": it.source_ref,
        } | ({} if self.augment is None else {"augment": self.augment})


# --- planning (pure) ---------------------------------------------------------------------


def select_ids(ids: Iterable[str], n: int, seed: int) -> list[str]:
    """The ``n`` ids with the smallest ``sha256(f"{seed}:{id}")``, smallest first."""
    ranked = sorted(set(ids), key=lambda uid: hashlib.sha256(f"{seed}:{uid}".encode()).digest())
    if not 0 <= n <= len(ranked):
        raise CtxasrError(
            "utterance count", f"must be 0 to {len(ranked)} (the utterances available), got {n}"
        )
    return ranked[:n]


def assign_voices(count: int, voices: Sequence[str], rates: Sequence[int]) -> list[tuple[str, int]]:
    """``(voice, rate)`` for ``count`` utterances in turn, voice varying fastest."""
    if not voices or not rates:
        raise CtxasrError("voices and rates", "need at least one voice and one rate")
    return [(voices[i % len(voices)], rates[i // len(voices) % len(rates)]) for i in range(count)]


@dataclass(frozen=True)
class RefRow:
    """A reference file's row: text, rare words, and the biasing list when present."""

    text: str
    rare_words: tuple[str, ...]
    context: tuple[str, ...] | None


def read_ref_rows(path: str | Path) -> dict[str, RefRow]:
    """A benchmark reference file, keeping column 4 (which ``ctxasr.eval.read_refs`` drops)."""
    from ctxasr.eval import tsv

    return {
        uid: RefRow(ref.text, tuple(sorted(ref.rare_words)), biasing)
        for uid, ref, biasing in tsv.read_ref_rows(path)
    }


def read_sentence_rows(path: str | Path, min_words: int = 1, max_words: int = 40,
                       min_rare: int = 0) -> dict[str, RefRow]:  # fmt: skip
    """Training sentences, one a line (``text/sentences.norm.txt``: lower case, no
    punctuation but apostrophes), as reference rows: id ``<file stem>-<line number>``,
    the line as text, its rare words by the benchmark's rule, no biasing list.

    Lines of fewer than ``min_words`` or more than ``max_words`` words, with fewer than
    ``min_rare`` rare words (a set to train biasing on wants them), and lines with
    digits (TTS voices and readers speak them differently), are left out.
    """
    from ctxasr.eval.manifest import rare_words_of

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CtxasrError(str(path), f"cannot read the sentences: {err}") from None
    rows = {}
    for number, line in enumerate(lines, 1):
        words = line.split()
        if min_words <= len(words) <= max_words and not re.search(r"\d", line):
            text = " ".join(words)
            rare = tuple(sorted(rare_words_of(text)))
            if len(rare) >= min_rare:
                rows[f"{path.stem}-{number}"] = RefRow(text, rare, None)
    if not rows:
        raise CtxasrError(str(path), f"has no sentence of {min_words} to {max_words} words "
                          f"with {min_rare} rare words")  # fmt: skip
    return rows


def plan_synthesis(
    sources: Sequence[tuple[str, dict[str, RefRow]]],
    n_per_ref: int,
    seed: int,
    options: SynthOptions = SynthOptions(),
) -> list[SynthItem]:
    """What to speak: ``n_per_ref`` utterances of each ``(name, rows)`` source, with voices.

    Raises:
        CtxasrError: a source has fewer than ``n_per_ref`` utterances, or an id is in
            two sources (they would share an audio file).
    """
    picked: list[tuple[str, str, RefRow]] = []
    owner: dict[str, str] = {}
    for name, rows in sources:
        if n_per_ref > len(rows):
            raise CtxasrError(name, f"has {len(rows)} utterances; cannot pick {n_per_ref}")
        for uid in select_ids(rows, n_per_ref, seed):
            if uid in owner:
                raise CtxasrError(name, f"utterance {uid} is also in {owner[uid]}")
            owner[uid] = name
            picked.append((name, uid, rows[uid]))
    pairs = assign_voices(len(picked), options.voices, options.rates)
    return [
        SynthItem(uid, row.text, row.rare_words, row.context, voice, rate, name)
        for (name, uid, row), (voice, rate) in zip(picked, pairs)
    ]


# --- speaking ------------------------------------------------------------------------------


def find_espeak(espeak: str = "espeak-ng") -> str:
    """The espeak-ng executable's path."""
    path = shutil.which(espeak)
    if path is None:
        raise CtxasrError("espeak-ng", "not installed: apt-get install espeak-ng")
    return path


def speak(text: str, voice: str, rate: int, *, espeak: str = "espeak-ng") -> np.ndarray:
    """Speak ``text``: shape ``(n,)``, 16 kHz mono float32 in [-1, 1].

    ``voice`` is an eSpeak NG voice, or ``ENGINE:NAME`` for another engine
    (:func:`ctxasr.data.engines.speak_engine`). eSpeak NG takes the text through stdin,
    so its length and characters need no quoting.
    """
    from ctxasr.audio import load_audio
    from ctxasr.data.engines import ESPEAK, speak_engine, split_voice

    _check_rate(rate)
    engine, name = split_voice(voice)
    if engine != ESPEAK:
        return speak_engine(engine, name, text, rate)
    voice = name
    exe = find_espeak(espeak)
    with tempfile.TemporaryDirectory(prefix="ctxasr-espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = [exe, "-v", voice, "-s", str(rate), "-w", str(wav), "--stdin"]
        proc = subprocess.run(
            cmd,
            check=False,
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT,
        )
        if proc.returncode != 0 or not wav.exists():
            reason = (
                proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
            )
            raise CtxasrError(f"espeak-ng -v {voice}", " ".join(reason.split()))
        return load_audio(wav)


def _check_rate(rate: int) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise CtxasrError(
            "rate", f"must be {MIN_RATE} to {MAX_RATE} words per minute, got {rate!r}"
        )


def check_voices(voices: Iterable[str], *, espeak: str = "espeak-ng") -> None:
    """Fail early, before any file is written, on a voice espeak-ng does not list (it
    would silently speak another one: ``en-zz`` comes out as ``en``), or a
    ``voice+variant`` whose variant espeak-ng ignores (it sounds exactly like ``voice``)."""
    from ctxasr.data.engines import ESPEAK, check_engine_voice, split_voice

    voices = list(dict.fromkeys(voices))
    others = [split_voice(v) for v in voices if split_voice(v)[0] != ESPEAK]
    for engine, name in others:
        check_engine_voice(engine, name)
    voices = [v for v in voices if split_voice(v)[0] == ESPEAK]
    if not voices:
        return
    languages, variants = espeak_voices(espeak)
    for voice in voices:
        voice = split_voice(voice)[1]
        base, plus, variant = voice.partition("+")
        if base.lower() not in languages or (plus and variant.lower() not in variants):
            listing = (
                "espeak-ng --voices=variant" if base.lower() in languages else "espeak-ng --voices"
            )
            raise CtxasrError(f"espeak-ng -v {voice}", f"no such voice ({listing} lists them)")
        sample = speak(_PROBE_TEXT, voice, 175, espeak=espeak)
        if plus and np.array_equal(sample, speak(_PROBE_TEXT, base, 175, espeak=espeak)):
            raise CtxasrError(
                f"espeak-ng -v {voice}",
                f"espeak-ng ignores variant {variant!r} on {base!r} (try 'en+{variant}')",
            )


@functools.lru_cache(maxsize=4)
def espeak_voices(espeak: str = "espeak-ng") -> tuple[frozenset[str], frozenset[str]]:
    """What ``-v`` accepts, lower-cased: ``(languages and voice names, variant names)``.

    Parsed from ``espeak-ng --voices`` (columns: priority, language, age/gender, voice
    name, file, other languages) and ``--voices=variant`` (variant files ``!v/NAME``).
    """
    exe = find_espeak(espeak)
    languages: set[str] = set()
    for line in _espeak_listing(exe, "--voices")[1:]:
        fields = line.split()
        if len(fields) >= 5:
            languages.update(
                f.lower() for f in (fields[1], fields[3], fields[4].rsplit("/", 1)[-1])
            )
    variants = {
        re.split(r"\s{2,}", line.split("!v/", 1)[1].strip())[0].lower()
        for line in _espeak_listing(exe, "--voices=variant")
        if "!v/" in line
    }
    return frozenset(languages), frozenset(variants)


def _espeak_listing(exe: str, option: str) -> list[str]:
    proc = subprocess.run([exe, option], check=False, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CtxasrError(
            f"espeak-ng {option}", proc.stderr.strip() or f"exit status {proc.returncode}"
        )
    return proc.stdout.splitlines()


_PROBE_TEXT = "testing one two three"


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write float samples in [-1, 1] as mono 16-bit PCM WAV, atomically."""
    path = Path(path)
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    with atomic_write(path, binary=True) as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def _speak_item(item: SynthItem, outdir: Path, espeak: str) -> SynthUtterance:
    from ctxasr.audio import SAMPLE_RATE

    samples = speak(item.text, item.voice, item.rate, espeak=espeak)
    relative = f"{AUDIO_DIR}/{item.utt_id}.wav"
    write_wav(outdir / relative, samples, SAMPLE_RATE)
    return SynthUtterance(item, relative, samples.shape[0] / SAMPLE_RATE)


def synthesize(
    items: Sequence[SynthItem],
    outdir: str | Path,
    options: SynthOptions = SynthOptions(),
    seed: int = 0,
) -> list[SynthUtterance]:
    """Speak every item into ``outdir/audio/`` and write ``outdir/manifest.jsonl``.

    espeak-ng does the work in its own processes, so a thread pool of
    ``options.workers`` keeps that many of them busy.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise CtxasrError(str(outdir), "is a file; the output is a folder")
    if options.workers < 1:
        raise CtxasrError("workers", f"must be at least 1, got {options.workers}")
    for rate in options.rates:
        _check_rate(rate)
    check_voices(options.voices, espeak=options.espeak)
    (outdir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    if options.augment is None:
        with ThreadPoolExecutor(max_workers=options.workers) as pool:
            spoken = list(pool.map(lambda it: _speak_item(it, outdir, options.espeak), items))
    else:
        spoken = _speak_augmented(items, outdir, options, seed)
    write_manifest(outdir / MANIFEST_NAME, spoken)
    return spoken


def _speak_augmented(
    items: Sequence[SynthItem], outdir: Path, options: SynthOptions, seed: int
) -> list[SynthUtterance]:
    """Speak everything clean first (babble needs other utterances), then augment each
    with its own generator, seeded by ``(seed, id)`` so an utterance's chain does not
    depend on what else is in the set."""
    from ctxasr.audio import SAMPLE_RATE
    from ctxasr.data.augment import augment

    assert options.augment is not None
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        clean = list(
            pool.map(lambda it: speak(it.text, it.voice, it.rate, espeak=options.espeak), items)
        )
    pool_ids = range(min(options.babble_pool, len(items)))
    spoken = []
    for k, (item, samples) in enumerate(zip(items, clean)):
        digest = hashlib.sha256(f"{seed}:augment:{item.utt_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        babble = [clean[j] for j in pool_ids if j != k]
        audio, applied = augment(samples, rng, options.augment, babble)
        if options.augment_name is not None:
            applied = {"preset": options.augment_name} | applied
        relative = f"{AUDIO_DIR}/{item.utt_id}.wav"
        write_wav(outdir / relative, audio, SAMPLE_RATE)
        spoken.append(SynthUtterance(item, relative, audio.shape[0] / SAMPLE_RATE, applied))
    return spoken


def write_manifest(path: str | Path, utterances: Iterable[SynthUtterance]) -> None:
    """One JSON object a line, atomically."""
    path = Path(path)
    text = "".join(json.dumps(u.to_json(), ensure_ascii=False) + "\n" for u in utterances)
    with atomic_write(path) as f:
        f.write(text)


def synth_dataset(
    ref_paths: Sequence[str | Path],
    n_per_ref: int,
    seed: int,
    outdir: str | Path,
    options: SynthOptions = SynthOptions(),
    sentences: Sequence[tuple[str, dict[str, RefRow]]] = (),
) -> list[SynthUtterance]:
    """Read the reference files, pick ``n_per_ref`` utterances of each, speak them.

    Files are taken in the order of their names, whatever the order of ``ref_paths``;
    ``sentences`` (``(name, read_sentence_rows(...))``) are further sources, after them.
    """
    from ctxasr.data.engines import ESPEAK, split_voice

    if any(split_voice(v)[0] == ESPEAK for v in options.voices):
        find_espeak(options.espeak)  # before reading anything: the likeliest failure
    named = sorted((Path(p).name, Path(p)) for p in ref_paths)  # the --refs order is no matter
    if len({name for name, _ in named}) != len(named):
        raise CtxasrError("--refs", "two reference files have the same name")
    sources = [(name, read_ref_rows(path)) for name, path in named] + list(sentences)
    if not sources:
        raise CtxasrError("synth", "needs reference files or sentences to speak")
    return synthesize(plan_synthesis(sources, n_per_ref, seed, options), outdir, options, seed)
