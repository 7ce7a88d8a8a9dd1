"""The speech LLM's training data: contexts as SAP² draws them, the frame cache, buckets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctxasr.errors import CtxasrError
from ctxasr.speechllm.data import (
    FrameCache,
    Schedule,
    Utterance,
    epoch_batches,
    read_utterances,
    training_context,
    word_pool,
)
from ctxasr.speechllm.interfaces import RandomEncoder

AUDIO = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
POOL = [f"word{i}" for i in range(50)]


def test_manifest_rows_become_utterances(tmp_path: Path) -> None:
    rows = [{"audio_filepath": str(AUDIO / "jfk.flac"), "text": "Ask not  what Zanzibar"},
            {"audio_filepath": "x.wav", "text": "B", "rare_words": ["Quilter"],
             "context": ["Quilter", "Carker"]}]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = read_utterances(tmp_path / "m.jsonl")
    assert first.text == "ask not what zanzibar" and first.rare == ("zanzibar",)
    assert second.rare == ("quilter",) and second.context == ("quilter", "carker")
    assert second.audio == tmp_path / "x.wav"
    (tmp_path / "bad.jsonl").write_text('{"audio_filepath": "x.wav"}\n')
    with pytest.raises(CtxasrError, match=r"bad.jsonl:1: needs a non-blank 'text'"):
        read_utterances(tmp_path / "bad.jsonl")


def test_contexts_hold_the_rare_words_and_distractors_or_nothing() -> None:
    utt = Utterance(Path("a.wav"), "mister quilter", ("quilter",), ())
    rng = np.random.default_rng(0)
    drawn = [training_context(rng, utt, [*POOL, "quilter"], 5, no_context=0.3)
             for _ in range(400)]  # fmt: skip
    empty = sum(not c for c in drawn)
    assert 80 < empty < 160  # about 30 %
    for c in filter(None, drawn):
        assert len(c) == 6 and c.count("quilter") == 1 and set(c) <= {*POOL, "quilter"}
    assert len({c.index("quilter") for c in filter(None, drawn)}) > 3  # shuffled


def test_the_word_pool_is_a_file_or_the_rare_words(tmp_path: Path) -> None:
    utts = [Utterance(Path("a"), "", ("b", "a"), ()), Utterance(Path("b"), "", ("a",), ())]
    assert word_pool("", utts) == ["a", "b"]
    (tmp_path / "pool.txt").write_text("# distractors\nZanzibar\n\nquinoa\nzanzibar\n")
    assert word_pool(str(tmp_path / "pool.txt"), utts) == ["zanzibar", "quinoa"]
    with pytest.raises(CtxasrError, match="cannot read the word pool"):
        word_pool(str(tmp_path / "none.txt"), utts)


class Counting(RandomEncoder):
    calls = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        Counting.calls += 1
        return super().__call__(samples)


def test_frames_are_encoded_once_and_then_read(tmp_path: Path) -> None:
    encoders = [Counting(16, 50, name="a/b:16"), RandomEncoder(8, 25)]
    cache = FrameCache(tmp_path, encoders)
    clip = AUDIO / "1272-128104-0000.wav"
    first = cache.frames(clip)
    assert first.shape == (146, 24)  # 5.86 s at 25 fps, cut to the shorter encoder
    again = FrameCache(tmp_path, encoders).frames(clip)
    assert Counting.calls == 1 and np.array_equal(first, again)
    assert cache.path(clip, encoders[0]).parent.name == "a_b_16"


def test_buckets_group_lengths_and_follow_the_seed() -> None:
    lengths = list(np.random.default_rng(0).integers(10, 1000, size=100))
    batches = epoch_batches(lengths, batch=4, bucket=5, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(len(b) == 4 for b in batches)
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    assert spread < 0.3 * np.ptp(lengths)  # sorted within buckets of 20
    assert batches == epoch_batches(lengths, batch=4, bucket=5, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, batch=4, bucket=5, seed=1, epoch=1)
    schedule = Schedule(lengths, batch=4, bucket=5, seed=1)
    assert schedule(0) == batches[0] and schedule(25) == epoch_batches(lengths, 4, 5, 1, 1)[0]
