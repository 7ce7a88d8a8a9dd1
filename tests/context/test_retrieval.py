"""The phonetic retriever: terms matched to first-pass text by sound."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctxasr.context.retrieval import (
    Evidence,
    PhoneticOptions,
    PhoneticRetriever,
    Retrieval,
    context_key,
)
from ctxasr.context.terms import ContextTerm

DISTRACTORS = [
    "Kubernetes", "Zanzibar", "photosynthesis", "Quilter", "Hephzibah", "xylophone",
    "Montmorency", "Tchaikovsky", "ombudsman", "Ptolemy", "sarsaparilla", "Gwendolyn",
    "Aberystwyth", "chrysanthemum", "Nebuchadnezzar", "quinoa", "Worcestershire",
]  # fmt: skip


def terms(*texts: str) -> list[ContextTerm]:
    return [ContextTerm(t) for t in texts]


def picked(r: Retrieval) -> list[str]:
    return [e.term for e in r.selected]


@pytest.fixture(scope="module")
def retriever() -> PhoneticRetriever:
    return PhoneticRetriever(terms("Birkett", "Linnell", "thereunder", *DISTRACTORS))


def test_a_misheard_name_is_found_by_sound(retriever):
    r = retriever.retrieve(Evidence(("and then mister burke it said no more",)))
    assert picked(r) == ["Birkett"]
    (e,) = r.selected
    assert e.span == "burke it"
    assert not e.in_text
    assert r.needs_second_pass
    assert 0.75 <= e.score <= 1.0


def test_a_term_already_spelled_needs_no_second_pass(retriever):
    r = retriever.retrieve(Evidence(("Linnell's pictures are a sort of up guards",)))
    assert picked(r) == ["Linnell"]
    assert r.selected[0].in_text
    assert not r.needs_second_pass


def test_a_term_split_into_words_counts_as_spelled(retriever):
    r = retriever.retrieve(Evidence(("the land there under passed",)))
    assert "thereunder" in picked(r)
    assert next(e for e in r.selected if e.term == "thereunder").in_text


def test_ordinary_speech_picks_nothing(retriever):
    text = "we went to the market on saturday and bought some bread and cheese"
    r = retriever.retrieve(Evidence((text,)))
    assert picked(r) == []
    assert not r.needs_second_pass


def test_empty_evidence_picks_nothing(retriever):
    assert retriever.retrieve(Evidence(("",))).selected == ()
    assert retriever.retrieve(Evidence(())).selected == ()


def test_a_runner_up_hypothesis_can_carry_the_term():
    r = PhoneticRetriever(terms("trivialities", *DISTRACTORS))
    best_only = r.retrieve(Evidence(("all these ities were forgotten",)))
    with_alternative = r.retrieve(
        Evidence(("all these ities were forgotten", "all these trivial ities were forgotten"))
    )
    assert "trivialities" not in picked(best_only)
    assert "trivialities" in picked(with_alternative)


def test_terms_competing_for_one_span_are_capped():
    r = PhoneticRetriever(terms("Birkett", "Burkett", "Birkitt", "Berkut", "Burkitt"))
    result = r.retrieve(Evidence(("mister burke it said",)))
    assert len(result.selected) == r.options.per_span
    assert result.rejected  # the others are reported, not silently dropped


def test_short_terms_need_an_exact_sound_match():
    r = PhoneticRetriever(terms("Oz", "Io"))
    assert picked(r.retrieve(Evidence(("he was as tall as a tree",)))) == []
    assert picked(r.retrieve(Evidence(("the land of oz",)))) == ["Oz"]


def test_near_misses_are_reported_as_rejected():
    options = PhoneticOptions(threshold=0.99, near=0.5)
    r = PhoneticRetriever(terms("Birkett"), options)
    result = r.retrieve(Evidence(("mister burt kit said",)))
    assert picked(result) == []
    assert [e.term for e in result.rejected] == ["Birkett"]


def test_multiword_and_acronym_terms():
    r = PhoneticRetriever(terms("Dr. Linnell", "IBM", *DISTRACTORS))
    assert "IBM" in picked(r.retrieve(Evidence(("she worked at i b m for years",))))
    assert "Dr. Linnell" in picked(r.retrieve(Evidence(("doctor lynnel came",))))


def test_shortlist_agrees_with_aligning_every_term():
    texts = ["Birkett", "Linnell", "Quilter", *DISTRACTORS]
    evidence = Evidence(("mister quilter and the burke it boys met lynnel",))
    fast = PhoneticRetriever(terms(*texts)).retrieve(evidence)
    exhaustive = PhoneticRetriever(
        terms(*texts), PhoneticOptions(min_coverage=0.0, shortlist=10_000)
    ).retrieve(evidence)
    assert picked(fast) == picked(exhaustive)


def test_index_is_cached_on_disk_by_content(tmp_path, monkeypatch):
    ctx = terms("Birkett", "Linnell", *DISTRACTORS)
    built = PhoneticRetriever(ctx, cache_dir=tmp_path)
    assert (tmp_path / f"{context_key(ctx)}.npz").exists()

    def no_build(self):
        raise AssertionError("the cached index should have been loaded")

    monkeypatch.setattr(PhoneticRetriever, "_build", no_build)
    loaded = PhoneticRetriever(ctx, cache_dir=tmp_path)
    for name, array in built._index.arrays().items():
        np.testing.assert_array_equal(array, loaded._index.arrays()[name])
    evidence = Evidence(("mister burke it said",))
    assert loaded.retrieve(evidence).selected == built.retrieve(evidence).selected


def test_a_different_context_gets_a_different_key():
    assert context_key(terms("a", "b")) != context_key(terms("a", "c"))
    assert context_key(terms("a", "b")) == context_key(terms("a", "b"))


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PhoneticOptions().threshold = 0.1  # type: ignore[misc]


def test_homophones_of_common_words_are_dropped_from_long_contexts():
    ctx = terms("sorte", "Birkett")
    evidence = Evidence(("it was a sort of joke said burke it",))
    short = PhoneticRetriever(ctx).retrieve(evidence)
    assert "sorte" in picked(short)  # a hand-made list: worth offering
    long_context = PhoneticOptions(homophone_context=2)
    long = PhoneticRetriever(ctx, long_context).retrieve(evidence)
    assert "sorte" not in picked(long)  # with many terms: a chance homophone
    assert "Birkett" in picked(long)  # a term heard as a rare word still is


def test_spelled_in_text_means_spelled_as_written():
    r = PhoneticRetriever(terms("guards'", "Linnell", "areas", *DISTRACTORS))
    result = r.retrieve(Evidence(("Linnell's guards are as good",)))
    in_text = {e.term for e in result.selected if e.in_text}
    assert in_text == {"Linnell"}  # the possessive spells the name; "guards" is not "guards'"
    # Short words do not join into a term by chance ("are as" is not "areas").
    assert "areas" not in in_text
