"""Tests for ``ctxasr.data.biasing``: biasing lists of size N as in Le et al. 2021."""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxasr.cli.data import data_app
from ctxasr.data.biasing import (
    MAX_DISTRACTORS,
    WordPool,
    biasing_list,
    build_biasing_lists,
    format_ref_line,
    make_biasing_refs,
    read_word_pool,
    write_biasing_refs,
)
from ctxasr.errors import CtxasrError
from ctxasr.eval import read_refs

PUBLISHED_REFS = (
    Path(__file__).parent.parent
    / "fixtures"
    / "biasing"
    / "ref"
    / "test-clean.biasing_100.rare.tsv.gz"
)

ROWS = [
    ("u1", "the cat sat on the zephyr mat", ["zephyr"]),
    ("u2", "nothing rare here", []),
    ("u3", "quixotic and zephyr and xylem", ["quixotic", "xylem", "zephyr"]),
    ("u4", "one more ubiquitous line", ["ubiquitous"]),
]
POOL = [f"word{i:03d}" for i in range(200)] + [
    "quixotic",
    "xylem",
    "zephyr",
]  # some rare words in it


def write_refs(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{u}\t{t}\t{json.dumps(r)}\n" for u, t, r in rows), encoding="utf-8")
    return path


def write_pool(path: Path, words=POOL) -> Path:
    path.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return path


@pytest.fixture
def refs_file(tmp_path: Path) -> Path:
    return write_refs(tmp_path / "refs.tsv")


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    return write_pool(tmp_path / "pool.txt")


# --- contents of a list --------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 10, 150])
def test_each_list_is_its_rare_words_plus_n_distractors(n):
    refs = {u: (t, r) for u, t, r in ROWS}
    lists = build_biasing_lists(refs, POOL, n, seed=7)
    assert list(lists) == [u for u, _, _ in ROWS]
    for uid, (_, rare) in refs.items():
        words = lists[uid]
        assert len(words) == len(rare) + n
        assert len(set(words)) == len(words)
        assert set(rare) <= set(words)
        distractors = set(words) - set(rare)
        assert len(distractors) == n
        assert distractors <= set(POOL)
        assert words == sorted(words)


def test_own_rare_words_are_never_drawn_as_distractors():
    # A pool of 10 words, 3 of them u3's rare words: N=7 must take every other word.
    pool = ["quixotic", "xylem", "zephyr"] + [f"d{i}" for i in range(7)]
    words = biasing_list("u3", ["quixotic", "xylem", "zephyr"], WordPool(pool), 7, seed=0)
    assert words == sorted(pool)
    for seed in range(50):
        drawn = biasing_list("u3", ["zephyr"], WordPool(pool), 5, seed=seed)
        assert drawn.count("zephyr") == 1 and len(drawn) == 6


def test_n_zero_is_the_rare_words_alone():
    assert biasing_list("u3", {"zephyr", "quixotic"}, WordPool(POOL), 0, seed=1) == [
        "quixotic",
        "zephyr",
    ]


def test_rare_words_outside_the_pool_are_kept():
    words = biasing_list("u4", ["ubiquitous"], WordPool(POOL), 20, seed=3)
    assert "ubiquitous" in words and len(words) == 21


def test_distractors_are_uniform_over_the_pool():
    pool = WordPool(f"w{i:02d}" for i in range(20))
    counts = collections.Counter()
    for k in range(2000):
        counts.update(biasing_list(f"utt{k}", [], pool, 5, seed=0))
    # Each word is drawn with probability 1/4: 500 +- 19.4 (1 sd) times.
    assert set(counts) == set(pool.words)
    assert all(400 < c < 600 for c in counts.values()), counts


def test_shuffle_keeps_the_words_and_is_reproducible():
    pool = WordPool(POOL)
    ordered = biasing_list("u1", ["zephyr"], pool, 50, seed=2)
    shuffled = biasing_list("u1", ["zephyr"], pool, 50, seed=2, shuffle=True)
    assert sorted(shuffled) == ordered and shuffled != ordered
    assert shuffled == biasing_list("u1", ["zephyr"], pool, 50, seed=2, shuffle=True)


# --- reproducibility -------------------------------------------------------------------


def test_same_seed_writes_the_same_bytes(refs_file, pool_file, tmp_path):
    a, b, c = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"
    make_biasing_refs(refs_file, pool_file, 30, 11, a)
    make_biasing_refs(refs_file, pool_file, 30, 11, b)
    make_biasing_refs(refs_file, pool_file, 30, 12, c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_a_list_does_not_depend_on_file_order_or_other_utterances(tmp_path):
    pool = write_pool(tmp_path / "pool.txt")
    shuffled_pool = POOL[:]
    random.Random(0).shuffle(shuffled_pool)
    rows = ROWS[::-1][:3]  # other order, and u1 dropped
    out1, out2 = tmp_path / "1.tsv", tmp_path / "2.tsv"
    make_biasing_refs(write_refs(tmp_path / "r1.tsv"), pool, 40, 5, out1)
    make_biasing_refs(
        write_refs(tmp_path / "r2.tsv", rows),
        write_pool(tmp_path / "p2.txt", shuffled_pool),
        40,
        5,
        out2,
    )
    lines1 = {line.split("\t")[0]: line for line in out1.read_text().splitlines()}
    lines2 = out2.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines2] == [u for u, _, _ in rows]  # input order kept
    for line in lines2:
        assert lines1[line.split("\t")[0]] == line


# --- file format -----------------------------------------------------------------------


def test_first_three_columns_are_the_published_ones_byte_for_byte(tmp_path):
    """The committed test-clean reference (2,620 utterances, N=100 lists dropped)."""
    out = tmp_path / "test-clean.biasing_3.tsv"
    count, size = make_biasing_refs(PUBLISHED_REFS, write_pool(tmp_path / "pool.txt"), 3, 0, out)
    assert count == 2620 and size == out.stat().st_size
    with gzip.open(PUBLISHED_REFS, "rt", encoding="utf-8") as f:
        published = f.read().splitlines()
    ours = out.read_text(encoding="utf-8").splitlines()
    assert [line.rsplit("\t", 1)[0] for line in ours] == published
    for line in ours:
        rare, biasing = (json.loads(field) for field in line.split("\t")[2:])
        assert len(biasing) == len(rare) + 3


def test_line_format_matches_the_published_json():
    line = format_ref_line("a-1", "some text", {"zed", "ab"}, ["ab", "x's", "zed"])
    assert line == 'a-1\tsome text\t["ab", "zed"]\t["ab", "x\'s", "zed"]\n'


def test_output_reads_back(refs_file, pool_file, tmp_path):
    out = tmp_path / "out.tsv"
    make_biasing_refs(refs_file, pool_file, 10, 0, out)
    back = read_refs(out)
    assert {u: (r.text, set(r.rare_words)) for u, r in back.items()} == {
        u: (t, set(r)) for u, t, r in ROWS
    }


def test_output_has_the_usual_permissions(refs_file, pool_file, tmp_path):
    out = tmp_path / "out.tsv"
    make_biasing_refs(refs_file, pool_file, 1, 0, out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_word_pool_strips_skips_blanks_and_dedupes(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("  beta \n\nalpha\r\nbeta\n \ngamma\n", encoding="utf-8")
    assert read_word_pool(path) == ["beta", "alpha", "gamma"]


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [-1, MAX_DISTRACTORS + 1, 1.5, True])
def test_n_out_of_range(n):
    with pytest.raises(CtxasrError, match="0 to 100,000"):
        biasing_list("u1", [], WordPool(POOL), n, seed=0)


def test_pool_too_small_names_the_utterance():
    pool = WordPool(["a", "b", "c", "zephyr"])
    assert len(biasing_list("u1", ["zephyr"], pool, 3, seed=0)) == 4
    with pytest.raises(CtxasrError, match=r"u1: needs 4 distractors but the pool has only 3 words"):
        biasing_list("u1", ["zephyr"], pool, 4, seed=0)


def test_failed_write_keeps_the_earlier_file(refs_file, tmp_path):
    out = tmp_path / "out.tsv"
    out.write_text("earlier\n")
    small_pool = write_pool(tmp_path / "small.txt", ["a", "b", "zephyr", "quixotic", "xylem"])
    with pytest.raises(CtxasrError, match="u3: needs 3 distractors"):  # u1 and u2 fit, u3 does not
        make_biasing_refs(refs_file, small_pool, 3, 0, out)
    assert out.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv", "refs.tsv", "small.txt"]


def test_file_errors(refs_file, pool_file, tmp_path):
    with pytest.raises(CtxasrError, match="no such file"):
        make_biasing_refs(refs_file, tmp_path / "nope.txt", 1, 0, tmp_path / "o.tsv")
    with pytest.raises(CtxasrError, match="no such file"):
        make_biasing_refs(tmp_path / "nope.tsv", pool_file, 1, 0, tmp_path / "o.tsv")
    with pytest.raises(CtxasrError, match="does not exist"):
        make_biasing_refs(refs_file, pool_file, 1, 0, tmp_path / "no" / "o.tsv")
    with pytest.raises(CtxasrError, match="is a directory"):
        make_biasing_refs(refs_file, pool_file, 1, 0, tmp_path)
    with pytest.raises(CtxasrError, match="is an input file"):
        make_biasing_refs(refs_file, pool_file, 1, 0, refs_file)
    with pytest.raises(CtxasrError, match="is a directory"):
        read_word_pool(tmp_path)


def test_write_biasing_refs_takes_any_reference_table(tmp_path):
    out = tmp_path / "o.tsv"
    write_biasing_refs(out, {"x": ("a b", ["b"])}, WordPool(["p", "q"]), 1, 0)
    assert out.read_text().startswith('x\ta b\t["b"]\t[')


# --- command line -------------------------------------------------------------------------


def test_cli_writes_the_file(refs_file, pool_file, tmp_path):
    out = tmp_path / "out.tsv"
    args = [
        "biasing-lists",
        "--refs",
        str(refs_file),
        "--pool",
        str(pool_file),
        "-n",
        "5",
        "--seed",
        "3",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert "4 utterances, N=5" in result.stderr
    expected = tmp_path / "expected.tsv"
    make_biasing_refs(refs_file, pool_file, 5, 3, expected)
    assert out.read_bytes() == expected.read_bytes()


def test_cli_errors_are_one_line(refs_file, tmp_path):
    pool = write_pool(tmp_path / "small.txt", ["a", "b"])
    args = [
        "biasing-lists",
        "--refs",
        str(refs_file),
        "--pool",
        str(pool),
        "-n",
        "5",
        "-o",
        str(tmp_path / "o.tsv"),
    ]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "ctxasr: error: u1: needs 5 distractors but the pool has only 2 words besides its 1 rare words"
    ]
    result = CliRunner().invoke(data_app, [*args[:6], "-n", "100001", "-o", "x"])
    assert result.exit_code == 2  # usage error, caught by the option's range
