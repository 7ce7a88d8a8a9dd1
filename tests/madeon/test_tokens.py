"""MADEON's speech tokens: the recipe's checks, fitting the tiny recipe (Whisper tiny.en
frames of the four committed clips), the tokenizer's guarantees, its files and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("sentencepiece")

from ctxasr.audio import load_audio
from ctxasr.errors import CtxasrError, ModelError
from ctxasr.madeon.tokens import (
    SPECIALS,
    UNIT_BASE,
    SpeechTokenizer,
    TokenizerConfig,
    collapse,
    fit_tokenizer,
    read_config,
)
from ctxasr.speechllm.data import read_utterances

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "madeon" / "tokenizer-tiny.toml"
MANIFEST = ROOT / "tests" / "fixtures" / "audio" / "manifest.jsonl"
CLIP = ROOT / "tests" / "fixtures" / "audio" / "1272-128104-0000.wav"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[TokenizerConfig, dict, SpeechTokenizer]:
    """The tiny recipe fitted once, into a temporary folder; its frame cache is shared
    with the CLI's run below."""
    root = tmp_path_factory.mktemp("tokenizer")
    cfg = dataclasses.replace(read_config(TINY), out=str(root / "tok"), cache=str(root / "cache"))
    stats = fit_tokenizer(cfg)
    return cfg, stats, SpeechTokenizer.load(cfg.out)


@pytest.fixture(scope="module")
def tok(fitted) -> SpeechTokenizer:
    return fitted[2]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [u.text for u in read_utterances(MANIFEST)]


# -- the recipe -------------------------------------------------------------------------


def _recipe(tmp_path: Path, body: str, name: str = "tok.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_recipe_defaults_and_paths(tmp_path: Path) -> None:
    cfg = read_config(_recipe(tmp_path, '[tokenizer]\ntrain = "a/train.jsonl"\nout = "run"\n'))
    assert cfg.train == str(tmp_path / "a" / "train.jsonl")
    assert (cfg.encoder, cfg.clusters, cfg.vocab, cfg.model_type) == ("moonshine:base", 500,
                                                                      2000, "bpe")  # fmt: skip
    assert (cfg.max_frames, cfg.lowercase, cfg.seed, cfg.threads) == (200_000, True, 0, 2)
    assert cfg.cache_folder == tmp_path / "run" / "cache"  # "": the run's own cache


def test_recipe_reads_yaml(tmp_path: Path) -> None:
    body = "tokenizer:\n  train: t.jsonl\n  out: run\n  cache: ../shared\n  clusters: 32\n"
    cfg = read_config(_recipe(tmp_path, body, "tok.yaml"))
    assert cfg.clusters == 32 and cfg.cache_folder == (tmp_path / "../shared").resolve()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("clusterz = 3", "unknown key(s) in [tokenizer]: clusterz"),
        ('clusters = "many"', "[tokenizer] clusters: must be a int, got 'many'"),
        ("clusters = 1", "[tokenizer] clusters must be at least 2, got 1"),
        ("clusters = 9000", "[tokenizer] clusters must be at most 6400, got 9000"),
        ("vocab = 100", "[tokenizer] vocab must be at least 508, got 100"),
        ('model_type = "wordpiece"', "[tokenizer] model_type must be one of bpe, unigram"),
        ("lowercase = 1", "[tokenizer] lowercase: must be a bool, got 1"),
        ("threads = 0", "[tokenizer] threads must be at least 1, got 0"),
    ],
)
def test_recipe_errors_name_the_key(tmp_path: Path, body: str, expected: str) -> None:
    path = _recipe(tmp_path, f'[tokenizer]\ntrain = "t.jsonl"\nout = "run"\n{body}\n')
    with pytest.raises(CtxasrError) as err:
        read_config(path)
    assert str(err.value).startswith(f"{path}: {expected}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[tokenizer]\nout = "run"\n', "[tokenizer] needs 'train'"),
        ("[model]\nx = 1\n", "unknown key(s) in the file: model"),
        ("", "needs a [tokenizer] table"),
        ("tokenizer = 3\n", "[tokenizer] must be a table"),
        ("[tokenizer\n", "not a valid TOML file"),
    ],
)
def test_recipe_file_errors(tmp_path: Path, body: str, expected: str) -> None:
    path = _recipe(tmp_path, body)
    with pytest.raises(CtxasrError, match=f"^{path}: ") as err:
        read_config(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_missing_recipe_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CtxasrError, match="cannot read the config") as err:
        read_config(tmp_path / "nope.toml")
    assert str(err.value).startswith(str(tmp_path / "nope.toml")) and "\n" not in str(err.value)


def test_collapse() -> None:
    assert collapse(np.array([5, 5, 9, 9, 9, 2, 5])).tolist() == [5, 9, 2, 5]
    assert collapse(np.array([], dtype=np.int64)).tolist() == []


# -- the fitted tokenizer ---------------------------------------------------------------


@pytest.mark.model
def test_fitting_writes_the_folder_and_its_stats(fitted) -> None:
    cfg, stats, tok = fitted
    out = Path(cfg.out)
    assert {p.name for p in out.iterdir()} >= {"units.npy", "spm.model", "tokenizer.json",
                                               "stats.json"}  # fmt: skip
    assert json.loads((out / "stats.json").read_text()) == stats
    assert (stats["utterances"], stats["clusters"], stats["vocab"]) == (4, 16, 120)
    assert stats["frames_used"] == 2000 < stats["frames"]  # max_frames sampled
    assert stats["speech_pieces"] + stats["text_pieces"] + len(SPECIALS) == tok.vocab_size
    assert stats["speech_pieces"] > 16  # merged unit runs beside the 16 single units
    assert 0 < stats["speech_pieces_per_second"] <= stats["units_per_second"]
    assert tok.encoder_name == "whisper:tiny.en" and tok.centroids.shape == (16, 384)
    meta = json.loads((out / "tokenizer.json").read_text())
    assert meta["special"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "text": 4}
    assert [tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.text_id] == [0, 1, 2, 3, 4]
    assert [tok.piece(i) for i in range(5)] == list(SPECIALS)


@pytest.mark.model
def test_units_are_collapsed_and_match_the_audio(tok: SpeechTokenizer) -> None:
    samples = load_audio(CLIP)
    units = tok.units(tok.encoder(samples))
    assert len(units) > 5 and units.min() >= 0 and units.max() < tok.clusters
    assert not np.any(units[1:] == units[:-1])
    ids = tok.speech_ids_of_audio(samples)
    assert ids == tok.speech_ids(units)
    assert [u for i in ids for u in tok.piece_units(i)] == units.tolist()  # nothing lost


@pytest.mark.model
def test_every_unit_has_its_own_piece(tok: SpeechTokenizer) -> None:
    for u in range(tok.clusters):
        (i,) = tok.speech_ids([u])
        assert i != tok.unk_id and tok.is_speech[i] and tok.piece(i) == chr(UNIT_BASE + u)


@pytest.mark.model
def test_speech_and_text_pieces_never_mix(fitted, texts: list[str]) -> None:
    _, _, tok = fitted
    for i in range(len(SPECIALS), tok.vocab_size):
        pua = [UNIT_BASE <= ord(c) < UNIT_BASE + tok.clusters for c in tok.piece(i)]
        assert all(pua) or not any(pua), repr(tok.piece(i))
        assert tok.is_speech[i] == all(pua) and tok.is_text[i] == (not any(pua))
    assert not tok.is_speech[: len(SPECIALS)].any() and not tok.is_text[: len(SPECIALS)].any()
    for text in texts:
        assert all(tok.is_text[i] for i in tok.text_ids(text))
    speech = tok.speech_ids_of_audio(load_audio(CLIP))
    assert all(tok.is_speech[i] for i in speech) and tok.decode(speech) == ""


@pytest.mark.model
def test_text_round_trips_lower_case(tok: SpeechTokenizer, texts: list[str]) -> None:
    for text in [*texts, "the middle classes ask what you can do", "  Mister   QUILTER "]:
        ids = tok.text_ids(text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == " ".join(text.lower().split())
    assert tok.text_ids("") == [] and tok.text_ids("\ue003") == []  # units are not text


@pytest.mark.model
def test_sequence_layout(tok: SpeechTokenizer) -> None:
    speech, text = tok.speech_ids([3, 1, 4, 1, 5]), tok.text_ids("and so")
    seq = tok.sequence(speech, text)
    assert seq == [tok.bos_id, *speech, tok.text_id, *text, tok.eos_id]
    assert tok.sequence(speech) == seq[: len(speech) + 2]  # the prompt to decode from
    assert tok.decode(seq) == "and so"


@pytest.mark.model
def test_save_load_round_trip(tok: SpeechTokenizer, texts: list[str], tmp_path: Path) -> None:
    tok.save(tmp_path / "copy")
    again = SpeechTokenizer.load(tmp_path / "copy")
    frames = tok.encoder(load_audio(CLIP))
    assert again.speech_ids(again.units(frames)) == tok.speech_ids(tok.units(frames))
    assert [again.text_ids(t) for t in texts] == [tok.text_ids(t) for t in texts]
    assert np.array_equal(again.centroids, tok.centroids)
    assert np.array_equal(again.is_speech, tok.is_speech)
    assert (again.vocab_size, again.encoder_name, again.frame_rate, again.lowercase) == (
        tok.vocab_size, tok.encoder_name, tok.frame_rate, tok.lowercase)  # fmt: skip


@pytest.mark.model
def test_load_errors_are_one_line(tok: SpeechTokenizer, tmp_path: Path) -> None:
    def fails(folder: Path, file: str, problem: str) -> None:
        with pytest.raises(ModelError) as err:
            SpeechTokenizer.load(folder)
        assert str(err.value).startswith(str(folder / file)) and problem in str(err.value)
        assert "\n" not in str(err.value)

    fails(tmp_path / "none", "", "not a folder")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "tokenizer.json", "missing")
    for name, spoil in [
        ("model", lambda d: (d / "spm.model").write_bytes(b"not a model")),
        ("units", lambda d: np.save(d / "units.npy", np.zeros((3, 4), np.float32))),
        ("meta", lambda d: (d / "tokenizer.json").write_text("{")),
        ("format", lambda d: (d / "tokenizer.json").write_text('{"format": 9}')),
    ]:
        tok.save(tmp_path / name)
        spoil(tmp_path / name)
        file = {"model": "spm.model", "units": "units.npy"}.get(name, "tokenizer.json")
        fails(tmp_path / name, file, "")


@pytest.mark.model
def test_too_large_a_vocabulary_is_one_line(fitted, tmp_path: Path) -> None:
    cfg = dataclasses.replace(fitted[0], out=str(tmp_path / "big"), vocab=5000)
    with pytest.raises(CtxasrError, match=r"\[tokenizer\] vocab = 5000: at most \d+$"):
        fit_tokenizer(cfg)


@pytest.mark.model
def test_cli_fits_a_unigram_vocabulary(fitted, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ctxasr.cli import app

    cfg = fitted[0]
    recipe = _recipe(tmp_path, "[tokenizer]\n" + "".join(f'{k} = "{v}"\n' for k, v in {
        "train": MANIFEST, "out": tmp_path / "run", "cache": cfg.cache,
        "encoder": "whisper:tiny.en", "model_type": "unigram"}.items())
        + "clusters = 16\nvocab = 100\nmax_frames = 2000\n")  # fmt: skip
    result = CliRunner().invoke(app, ["train", "tokenizer", str(recipe), "-q"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'run'}: 16 units, 100 pieces (" in result.output
    assert " speech pieces/s" in result.output
    tok = SpeechTokenizer.load(tmp_path / "run")
    assert tok.vocab_size == 100 and tok.decode(tok.text_ids("ask not")) == "ask not"
    assert not list((tmp_path / "run").glob("cache"))  # the shared cache was used
