"""Tests for ``ctxasr.eval.score``: the published LibriSpeech biasing results, byte for
byte, plus hand-computed alignments and attributions."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxasr.errors import CtxasrError
from ctxasr.eval import (
    AlignedPair,
    BiasingScores,
    ErrorCounts,
    Reference,
    align,
    format_scores,
    read_hyps,
    read_refs,
    score_corpus,
    score_text,
    score_utterance,
    tokenize,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "biasing"
REFS = FIXTURES / "ref" / "test-clean.biasing_100.rare.tsv.gz"
RESULTS = sorted((FIXTURES / "results").glob("*.tsv.result"))


# --- the published results -----------------------------------------------------------


@pytest.fixture(scope="module")
def test_clean() -> dict[str, Reference]:
    return read_refs(REFS)


def test_all_published_results_are_here() -> None:
    # 2 baselines + 5 systems x 4 biasing-list sizes; a glob that found nothing would
    # otherwise pass the golden test vacuously.
    assert len(RESULTS) == 22


@pytest.mark.parametrize("result", RESULTS, ids=lambda p: p.name.removesuffix(".tsv.result"))
def test_reproduces_published_result(result: Path, test_clean: dict[str, Reference]) -> None:
    hyp = FIXTURES / "hyp" / (result.name.removesuffix(".result") + ".gz")
    hyps = read_hyps(hyp)
    assert hyps.keys() == test_clean.keys()  # so "missing" plays no part
    assert format_scores(score_corpus(test_clean, hyps)) == result.read_text(encoding="utf-8")


def test_reference_fixture_shape(test_clean: dict[str, Reference]) -> None:
    assert len(test_clean) == 2620
    ref = test_clean["237-134493-0004"]
    assert ref.rare_words == {"intermingled", "mated"}
    assert ref.text.startswith("the air and the earth are curiously mated")


# --- alignment -----------------------------------------------------------------------


def ops(ref: str, hyp: str) -> list[str]:
    return [p.op for p in align(ref.split(), hyp.split())]


def test_align_pairs() -> None:
    assert align(["a", "b", "c"], ["a", "x", "c", "d"]) == [
        AlignedPair("match", "a", "a"),
        AlignedPair("sub", "b", "x"),
        AlignedPair("match", "c", "c"),
        AlignedPair("ins", None, "d"),
    ]


def test_substitution_beats_delete_plus_insert() -> None:
    # sub (4) < del + ins (6)
    assert ops("a b", "a c") == ["match", "sub"]


def test_empty_sequences() -> None:
    assert align([], []) == []
    assert align([], ["a", "b"]) == [AlignedPair("ins", None, "a"), AlignedPair("ins", None, "b")]
    assert align(["a", "b"], []) == [AlignedPair("del", "a", None), AlignedPair("del", "b", None)]


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        # Diagonal before insertion: the *last* hyp word matches, the first is inserted.
        ("a", "a a", ["ins", "match"]),
        # Diagonal before deletion: sub a->c + del b and del a + sub b->c both cost 7;
        # the last cell keeps its diagonal step, so b is the substituted word.
        ("a b", "c", ["del", "sub"]),
        # Insertion before deletion: del a, match b, ins a (6) vs ins b, match, del a.
        ("a b", "b a", ["del", "match", "ins"]),
        ("a b c", "b c d", ["del", "match", "match", "ins"]),
        # All substitutions (12) beat any shift (3 + 3 + 3 + ...).
        ("a b c", "x y z", ["sub", "sub", "sub"]),
    ],
)
def test_ties_break_like_the_benchmark(ref: str, hyp: str, expected: list[str]) -> None:
    assert ops(ref, hyp) == expected


# --- attribution ---------------------------------------------------------------------


def test_biased_and_unbiased_substitutions_and_deletions() -> None:
    s = score_utterance(
        ["mister", "quilter", "is", "the", "apostle"],
        ["mister", "quilty", "is", "apostle"],
        {"quilter"},
    )
    assert s.b_wer == ErrorCounts(ref_words=1, subs=1)
    assert s.u_wer == ErrorCounts(ref_words=4, dels=1)
    assert s.wer == ErrorCounts(ref_words=5, subs=1, dels=1)


def test_tie_decides_which_word_is_biased() -> None:
    # [del a, sub b->c]: with b rare the substitution is biased, the deletion not.
    s = score_utterance(["a", "b"], ["c"], {"b"})
    assert s.b_wer == ErrorCounts(ref_words=1, subs=1)
    assert s.u_wer == ErrorCounts(ref_words=1, dels=1)


def test_insertions_count_against_b_wer_only_when_rare() -> None:
    s = score_utterance(["the", "cat"], ["the", "kubernetes", "cat", "sat"], {"kubernetes"})
    assert s.b_wer == ErrorCounts(ref_words=0, ins=1)
    assert s.u_wer == ErrorCounts(ref_words=2, ins=1)
    assert s.b_wer.error_rate == math.inf


def test_rare_words_are_matched_by_string_everywhere() -> None:
    s = score_utterance(["ann", "saw", "ann"], ["anne", "saw", "ann"], {"ann"})
    assert s.b_wer == ErrorCounts(ref_words=2, subs=1)
    assert s.u_wer == ErrorCounts(ref_words=1)


def test_empty_hypothesis_deletes_everything() -> None:
    s = score_utterance(["a", "b", "c"], [], {"b"})
    assert s.u_wer == ErrorCounts(ref_words=2, dels=2)
    assert s.b_wer == ErrorCounts(ref_words=1, dels=1)
    assert s.wer.error_rate == 100.0


def test_empty_reference_and_hypothesis() -> None:
    s = score_utterance([], [], {"x"})
    assert s == BiasingScores()
    assert s.wer.error_rate == 0.0


def test_ref_biased_flags_override_membership() -> None:
    s = score_utterance(["a", "b"], ["x", "b"], set(), ref_biased=[True, False])
    assert s.b_wer == ErrorCounts(ref_words=1, subs=1)
    with pytest.raises(ValueError, match="2 reference words"):
        score_utterance(["a", "b"], [], set(), ref_biased=[True])


def test_counts_add_up() -> None:
    a = score_utterance(["a", "b"], ["a"], {"b"})
    b = score_utterance(["c"], ["d", "e"], set())
    total = a + b
    assert total.wer == ErrorCounts(ref_words=3, subs=1, ins=1, dels=1)
    assert total.wer.errors == 3
    assert total.wer.error_rate == 100.0


def test_format_scores() -> None:
    s = BiasingScores(ErrorCounts(3, 1, 0, 0), ErrorCounts(2, 0, 0, 0), ErrorCounts(1, 1, 0, 0))
    expected = (
        "WER: error_rate=33.333333333333336, ref_words=3, subs=1, ins=0, dels=0\n"
        "U-WER: error_rate=0.0, ref_words=2, subs=0, ins=0, dels=0\n"
        "B-WER: error_rate=100.0, ref_words=1, subs=1, ins=0, dels=0\n"
    )
    assert format_scores(s) == expected
    assert format_scores(s, normalize="whisper") == expected + "normalization: whisper\n"


# --- corpus --------------------------------------------------------------------------


REFS_SMALL = {
    "u1": Reference("the cat sat", frozenset({"cat"})),
    "u2": Reference("a dog", frozenset()),
}


def test_missing_hypothesis_scores_as_empty() -> None:
    s = score_corpus(REFS_SMALL, {"u1": "the cat sat", "extra": "ignored"})
    assert s.wer == ErrorCounts(ref_words=5, dels=2)
    assert s.b_wer == ErrorCounts(ref_words=1)


def test_missing_hypothesis_skip_or_error() -> None:
    hyps = {"u1": "the cat sat"}
    assert score_corpus(REFS_SMALL, hyps, missing="skip").wer == ErrorCounts(ref_words=3)
    with pytest.raises(CtxasrError, match="1 of 2 .* no hypothesis .*u2"):
        score_corpus(REFS_SMALL, hyps, missing="error")


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="normalize"):
        score_corpus(REFS_SMALL, {}, normalize="lower")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        score_corpus(REFS_SMALL, {}, missing="zero")  # type: ignore[arg-type]


# --- normalised mode -----------------------------------------------------------------


def test_whisper_tokenize() -> None:
    assert tokenize("Mr. Quilter's colour, twenty one!", "whisper") == [
        "mister",
        "quilter",
        "is",
        "color",
        "21",
    ]
    assert tokenize("Mr. Quilter's") == ["Mr.", "Quilter's"]


def test_whisper_mode_normalises_reference_hypothesis_and_rare_words() -> None:
    ref, hyp, rare = "Mr. Quilter's colour", "mister quilter's color", {"Quilter's", "colour"}
    raw = score_text(ref, hyp, rare)
    assert raw.b_wer == ErrorCounts(ref_words=2, subs=2)
    assert raw.u_wer == ErrorCounts(ref_words=1, subs=1)
    norm = score_text(ref, hyp, rare, normalize="whisper")
    # "mister quilter is color" both sides; quilter + is (from Quilter's) + color biased.
    assert norm.b_wer == ErrorCounts(ref_words=3)
    assert norm.u_wer == ErrorCounts(ref_words=1)


def test_whisper_mode_biases_only_the_tokens_of_rare_words() -> None:
    # The "is" from "Quilter's" is biased, the sentence's own "is" is not.
    s = score_text(
        "Quilter's hat is red", "quilters hat was red", {"Quilter's"}, normalize="whisper"
    )
    # ref: quilter is hat is red; hyp: quilters hat was red
    assert s.b_wer == ErrorCounts(ref_words=2, subs=1, dels=1)
    assert s.u_wer == ErrorCounts(ref_words=3, subs=1)


def test_whisper_mode_carries_flags_through_context() -> None:
    # Alone "fellow's" -> "fellow is"; in context "fellow's been" -> "fellow has been".
    s = score_text(
        "the fellow's been here", "the fellow has been here", {"fellow's"}, normalize="whisper"
    )
    assert s.b_wer == ErrorCounts(ref_words=2)
    assert s.u_wer == ErrorCounts(ref_words=3)


def test_whisper_mode_compares_rare_words_after_normalising() -> None:
    # "colour" is not the string "Colour", but both normalise to "color".
    assert score_text("a colour", "a color", {"Colour"}).b_wer == ErrorCounts()
    s = score_text("a colour", "a collar", {"Colour"}, normalize="whisper")
    assert s.b_wer == ErrorCounts(ref_words=1, subs=1)
    assert s.u_wer == ErrorCounts(ref_words=1)


def test_whisper_mode_rare_insertions() -> None:
    s = score_text("the cat", "the colour cat", {"Colour"}, normalize="whisper")
    assert s.b_wer == ErrorCounts(ins=1)
    assert s.u_wer == ErrorCounts(ref_words=2)


def test_whisper_mode_on_the_benchmark(test_clean: dict[str, Reference]) -> None:
    hyps = read_hyps(FIXTURES / "hyp" / "test-clean.b1.rnnt_baseline.tsv.gz")
    s = score_corpus(test_clean, hyps, normalize="whisper")
    published = score_corpus(test_clean, hyps)
    assert s.wer == s.u_wer + s.b_wer
    # Normalising only removes differences the raw texts already share (both are lower
    # case without punctuation), so it changes WER little; it splits "'s" into "is".
    assert abs(s.wer.error_rate - published.wer.error_rate) < 0.5
    assert 5761 < s.b_wer.ref_words < 6100


# --- files ---------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_plain_and_gzip(tmp_path: Path) -> None:
    text = 'u1\tthe cat\t["cat"]\t["cat", "dog"]\n\nu2\t\t[]\n'
    plain = write(tmp_path, "refs.tsv", text)
    gz = tmp_path / "refs.tsv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    expected = {"u1": Reference("the cat", frozenset({"cat"})), "u2": Reference("", frozenset())}
    assert read_refs(plain) == read_refs(gz) == expected


def test_read_hyps_empty_hypotheses(tmp_path: Path) -> None:
    path = write(tmp_path, "hyps.tsv", "u1\tthe cat\r\nu2\t\nu3\n")
    assert read_hyps(path) == {"u1": "the cat", "u2": "", "u3": ""}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("u1\tthe cat\n", "expected 3 or 4 tab-separated fields"),
        ('u1\ta\t["a"]\t[]\textra\n', "got 5"),
        ("u1\tthe cat\t[cat]\n", "not JSON"),
        ('u1\tthe cat\t{"cat": 1}\n', "JSON list of strings"),
        ("u1\tthe cat\t[1]\n", "JSON list of strings"),
        ("u1\ta\t[]\n\nu1\tb\t[]\n", "u1 appears twice"),
        ("\ta\t[]\n", "empty utterance id"),
    ],
)
def test_read_refs_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "refs.tsv", "u0\tok\t[]\n" + text)
    with pytest.raises(CtxasrError, match=problem) as err:
        read_refs(path)
    line = 4 if "appears twice" in problem else 2
    assert err.value.source == f"{path}:{line}"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("u1\tthe\tcat\n", "expected 2 tab-separated fields"),
        ("u1 the cat\n", "contains spaces .*tabs"),
        ("u0\tagain\n", "u0 appears twice"),
    ],
)
def test_read_hyps_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "hyps.tsv", "u0\tok\n" + text)
    with pytest.raises(CtxasrError, match=problem) as err:
        read_hyps(path)
    assert err.value.source == f"{path}:2"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CtxasrError, match="no such file"):
        read_refs(tmp_path / "absent.tsv")
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(CtxasrError, match="cannot read"):
        read_hyps(bad)


# --- properties ----------------------------------------------------------------------

words = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=12)


def min_cost(ref: list[str], hyp: list[str]) -> int:
    """Plain Levenshtein with the benchmark's costs, as an independent check."""
    prev = [3 * j for j in range(len(hyp) + 1)]
    for i, r in enumerate(ref, 1):
        cur = [3 * i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j - 1] + (0 if r == h else 4), cur[-1] + 3, prev[j] + 3))
        prev = cur
    return prev[-1]


COST = {"match": 0, "sub": 4, "ins": 3, "del": 3}


@given(words, words)
def test_alignment_reconstructs_both_sequences_at_minimum_cost(
    ref: list[str], hyp: list[str]
) -> None:
    pairs = align(ref, hyp)
    assert [p.ref for p in pairs if p.ref is not None] == ref
    assert [p.hyp for p in pairs if p.hyp is not None] == hyp
    for p in pairs:
        assert (p.op == "match") == (p.ref is not None and p.ref == p.hyp)
        assert (p.op == "ins") == (p.ref is None)
        assert (p.op == "del") == (p.hyp is None)
    assert sum(COST[p.op] for p in pairs) == min_cost(ref, hyp)


@given(words, words, st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_error_bounds_and_split(ref: list[str], hyp: list[str], rare: set[str]) -> None:
    s = score_utterance(ref, hyp, rare)
    assert s.wer.errors >= abs(len(ref) - len(hyp))
    assert s.wer.ref_words == len(ref)
    assert s.wer == s.u_wer + s.b_wer
    assert s.b_wer.ref_words == sum(w in rare for w in ref)


@given(words, st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_identical_is_perfect(ref: list[str], rare: set[str]) -> None:
    s = score_utterance(ref, list(ref), rare)
    assert s.wer.errors == 0
    assert s.wer.error_rate == 0.0
