"""Tests for ``ctxasr.data.synth``: seeded selection and voices (pure), and espeak-ng speech
end to end (skipped where espeak-ng is not installed)."""

from __future__ import annotations

import collections
import json
import shutil
import wave
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxasr.cli.data import data_app
from ctxasr.data.synth import (
    RATES,
    VOICES,
    RefRow,
    SynthOptions,
    assign_voices,
    plan_synthesis,
    read_ref_rows,
    read_sentence_rows,
    select_ids,
    speak,
    synth_dataset,
    synthesize,
)
from ctxasr.errors import CtxasrError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)

IDS = [f"{spk}-{chap}-{k:04d}" for spk in (11, 22) for chap in (5, 6) for k in range(25)]


def write_refs(path: Path, rows: list[tuple[str, str, list[str], list[str] | None]]) -> Path:
    lines = []
    for uid, text, rare, context in rows:
        fields = [uid, text, json.dumps(rare)] + (
            [json.dumps(context)] if context is not None else []
        )
        lines.append("\t".join(fields) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def rows_of(ids, prefix="") -> dict[str, RefRow]:
    return {uid: RefRow(f"text of {uid}", (), None) for uid in (prefix + i for i in ids)}


# --- selection and voices: pure --------------------------------------------------------


def test_selection_is_seeded_and_order_free():
    picked = select_ids(IDS, 10, seed=0)
    assert len(picked) == len(set(picked)) == 10 and set(picked) <= set(IDS)
    assert select_ids(reversed(IDS), 10, seed=0) == picked
    assert select_ids(IDS, 10, seed=1) != picked
    assert select_ids(IDS, 20, seed=0)[:10] == picked  # growing n keeps the earlier picks
    assert select_ids(IDS, 0, seed=0) == []


def test_selection_larger_than_the_file():
    with pytest.raises(CtxasrError, match="must be 0 to 100"):
        select_ids(IDS, 101, seed=0)


def test_voices_cycle_voice_first_then_rate():
    pairs = assign_voices(48, VOICES, RATES)
    assert pairs[:3] == [(VOICES[0], RATES[0]), (VOICES[1], RATES[0]), (VOICES[2], RATES[0])]
    assert pairs[len(VOICES)] == (VOICES[0], RATES[1])
    cycle = len(VOICES) * len(RATES)
    assert len(set(pairs[:cycle])) == cycle and pairs[cycle:] == pairs[:cycle]
    with pytest.raises(CtxasrError):
        assign_voices(3, [], RATES)


def test_plan_picks_n_from_each_source_and_cycles_voices_across_them():
    sources = [("clean.tsv", rows_of(IDS, "c")), ("other.tsv", rows_of(IDS, "o"))]
    options = SynthOptions(voices=("v1", "v2", "v3"), rates=(150, 170))
    plan = plan_synthesis(sources, 5, seed=4, options=options)
    assert plan == plan_synthesis(sources, 5, seed=4, options=options)
    assert [it.source_ref for it in plan] == ["clean.tsv"] * 5 + ["other.tsv"] * 5
    assert [it.utt_id for it in plan[:5]] == select_ids(sources[0][1], 5, seed=4)
    assert [(it.voice, it.rate) for it in plan] == assign_voices(10, options.voices, options.rates)
    assert all(it.text == f"text of {it.utt_id}" for it in plan)


def test_plan_refuses_more_than_a_source_has():
    with pytest.raises(CtxasrError, match="small.tsv: has 3 utterances; cannot pick 4"):
        plan_synthesis([("big.tsv", rows_of(IDS)), ("small.tsv", rows_of(IDS[:3], "s"))], 4, seed=0)


def test_plan_refuses_an_id_in_two_sources():
    with pytest.raises(CtxasrError, match="also in a.tsv"):
        plan_synthesis([("a.tsv", rows_of(IDS)), ("b.tsv", rows_of(IDS))], len(IDS), seed=0)


def test_read_ref_rows_keeps_the_biasing_list(tmp_path):
    path = write_refs(
        tmp_path / "r.tsv",
        [("a", "hello zed world", ["zed", "abc"], ["abc", "foo", "zed"]), ("b", "plain", [], None)],
    )
    rows = read_ref_rows(path)
    assert rows["a"] == RefRow("hello zed world", ("abc", "zed"), ("abc", "foo", "zed"))
    assert rows["b"] == RefRow("plain", (), None)
    (tmp_path / "bad.tsv").write_text('a\ttext\t[]\t{"x": 1}\n')
    with pytest.raises(CtxasrError, match="bad.tsv:1: biasing list: must be a JSON list"):
        read_ref_rows(tmp_path / "bad.tsv")


def test_missing_espeak_is_named(tmp_path):
    refs = write_refs(tmp_path / "r.tsv", [("a", "hello", [], None)])
    options = SynthOptions(espeak="no-such-espeak-ng-here")
    with pytest.raises(CtxasrError, match="espeak-ng: not installed: apt-get install espeak-ng"):
        synth_dataset([refs], 1, 0, tmp_path / "out", options)


@pytest.mark.parametrize("rates", [(79,), (451,), (160, 1000)])
def test_rates_out_of_range(tmp_path, rates):
    with pytest.raises(CtxasrError, match="80 to 450 words per minute"):
        synthesize([], tmp_path / "out", SynthOptions(rates=rates))


def test_cli_rejects_a_bad_rate_list(tmp_path):
    refs = write_refs(tmp_path / "r.tsv", [("a", "hello", [], None)])
    args = [
        "synth",
        "--refs",
        str(refs),
        "-n",
        "1",
        "-o",
        str(tmp_path / "o"),
        "--rates",
        "fast,slow",
    ]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "ctxasr: error: --rates: expected whole numbers separated by commas, got 'fast,slow'"
    ]


# --- speech: needs espeak-ng -------------------------------------------------------------

TWO = [
    ("1-2-0001", "the zephyr blew", ["zephyr"], ["alpha", "zephyr"]),
    ("1-2-0002", "a quiet quixotic night", ["quixotic"], ["beta", "quixotic"]),
]


def read_wav(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


@needs_espeak
def test_synthesizes_two_utterances(tmp_path):
    refs = write_refs(tmp_path / "test-x.tsv", TWO)
    out = tmp_path / "synth"
    options = SynthOptions(voices=("en-us", "en+f2"), rates=(150,))
    spoken = synth_dataset([refs], 2, seed=0, outdir=out, options=options)

    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [u.to_json() for u in spoken] == manifest
    assert sorted(m["id"] for m in manifest) == ["1-2-0001", "1-2-0002"]
    assert [m["voice"] for m in manifest] == ["en-us", "en+f2"]
    by_id = {uid: (text, rare, context) for uid, text, rare, context in TWO}
    for m in manifest:
        assert list(m)[:3] == ["audio_filepath", "text", "duration"]
        assert m["audio_filepath"] == f"audio/{m['id']}.wav"
        assert (m["text"], m["rare_words"], m["context"]) == by_id[m["id"]]
        assert m["rate"] == 150 and m["source_ref"] == "test-x.tsv"
        rate, channels, width, frames = read_wav(out / m["audio_filepath"])
        assert (rate, channels, width) == (16000, 1, 2)
        assert m["duration"] == frames / 16000 and 0.5 < m["duration"] < 5.0

    # Deterministic: a second run writes the same bytes.
    again = tmp_path / "again"
    synth_dataset([refs], 2, seed=0, outdir=again, options=options)
    for m in manifest:
        assert (again / m["audio_filepath"]).read_bytes() == (
            out / m["audio_filepath"]
        ).read_bytes()
    assert (again / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()


@needs_espeak
def test_speak_returns_16k_float_audio():
    audio = speak("hello world", "en-us", 175)
    assert audio.dtype.name == "float32" and audio.ndim == 1
    assert 0.3 < audio.shape[0] / 16000 < 3.0
    assert 0.05 < abs(audio).max() <= 1.0


@needs_espeak
@pytest.mark.parametrize(
    ("voice", "message"),
    [
        ("no-such-voice", "no such voice"),
        ("en-zz", "no such voice"),  # espeak-ng itself would speak en
        ("en+f99", r"no such voice \(espeak-ng --voices=variant"),
        ("en-gb+f2", "ignores variant 'f2' on 'en-gb'"),
    ],
)
def test_bad_voices_fail_before_anything_is_written(tmp_path, voice, message):
    refs = write_refs(tmp_path / "r.tsv", TWO)
    with pytest.raises(CtxasrError, match=message):
        synth_dataset([refs], 1, 0, tmp_path / "out", SynthOptions(voices=("en-us", voice)))
    assert not (tmp_path / "out").exists()


@needs_espeak
def test_cli_synth(tmp_path):
    refs = write_refs(tmp_path / "r.tsv", TWO)
    out = tmp_path / "out"
    args = [
        "synth",
        "--refs",
        str(refs),
        "-n",
        "1",
        "--seed",
        "2",
        "-o",
        str(out),
        "--voices",
        "en",
        "--rates",
        "170",
    ]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert f"{out}: 1 utterances" in result.stderr
    [row] = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert (row["voice"], row["rate"]) == ("en", 170)
    assert collections.Counter(p.suffix for p in (out / "audio").iterdir()) == {".wav": 1}


def test_training_sentences_become_reference_rows(tmp_path: Path) -> None:
    text = tmp_path / "sentences.norm.txt"
    text.write_text(
        "the quilter sewed a coverlet\n"  # rare words: coverlet, quilter, sewed
        "we went home\n"  # no rare word
        "in eighteen 12 the war began\n"  # a digit: left out
        "one two three four five six seven eight nine ten eleven twelve thirteen\n"
    )
    rows = read_sentence_rows(text, max_words=12)
    assert sorted(rows) == ["sentences.norm-1", "sentences.norm-2"]
    assert rows["sentences.norm-1"] == RefRow(
        "the quilter sewed a coverlet", ("coverlet", "quilter", "sewed"), None
    )
    assert list(read_sentence_rows(text, max_words=12, min_rare=1)) == ["sentences.norm-1"]
    with pytest.raises(CtxasrError, match="no sentence of 1 to 2 words"):
        read_sentence_rows(text, max_words=2)


def test_synth_needs_refs_or_sentences(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_app, ["synth", "-n", "1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "give --refs or --sentences" in result.output
