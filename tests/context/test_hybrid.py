"""The hybrid and audio-only retrievers, with a fake audio scorer (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ctxasr.context.hybrid import AudioOptions, AudioRetriever, HybridOptions, HybridRetriever
from ctxasr.context.retrieval import Evidence, PhoneticRetriever
from ctxasr.context.terms import ContextTerm

TERMS = ["Birkett", "Linnell", "Burkitt", "Zanzibar", "Kubernetes", "Quilter", "Hephzibah"]


class FakeScorer:
    """'Hears' the terms whose first phone is listed in the frames' first row."""

    encoder_dim = 4

    def __init__(self, spoken: dict[str, float]) -> None:
        self.spoken = spoken
        self.tables = 0
        self.scored: list[int] = []

    def term_table(self, prons):
        self.tables += 1
        return list(prons)

    def listen(self, frames: np.ndarray):
        assert frames.shape == (10, 4)
        return "memory"

    def score(self, memory, table, ids: np.ndarray) -> np.ndarray:
        assert memory == "memory"
        self.scored.extend(ids.tolist())
        return np.array([self.spoken.get(TERMS[i], 0.01) for i in ids.tolist()])


@pytest.fixture(scope="module")
def phonetic() -> PhoneticRetriever:
    return PhoneticRetriever([ContextTerm(t) for t in TERMS])


FRAMES = np.zeros((10, 4), dtype=np.float32)


def test_audio_decides_between_terms_that_sound_alike(phonetic):
    scorer = FakeScorer({"Birkett": 0.9, "Burkitt": 0.02})
    hybrid = HybridRetriever(phonetic, scorer)
    found = hybrid.retrieve(Evidence(("mister burke it said",), FRAMES))
    assert [e.term for e in found.selected] == ["Birkett"]
    (e,) = found.selected
    assert e.audio == pytest.approx(0.9) and e.phonetic is not None and 0 < e.score <= 1
    assert "Burkitt" not in [r.term for r in found.selected]
    # Only the shortlist is scored on the audio, and the term table is built once.
    hybrid.retrieve(Evidence(("mister burke it said",), FRAMES))
    assert scorer.tables == 1
    assert set(scorer.scored) <= {TERMS.index("Birkett"), TERMS.index("Burkitt"),
                                  TERMS.index("Quilter"), TERMS.index("Linnell")}  # fmt: skip


def test_audio_rescues_a_term_under_the_phonetic_threshold(phonetic):
    evidence = Evidence(("the apostle mister quill ter spoke",), FRAMES)
    heard = HybridRetriever(phonetic, FakeScorer({"Quilter": 0.99})).retrieve(evidence)
    assert "Quilter" in [e.term for e in heard.selected]
    deaf = HybridRetriever(phonetic, FakeScorer({})).retrieve(evidence)
    assert "Quilter" not in [e.term for e in deaf.selected]


def test_a_phonetic_pick_stays_unless_the_audio_rules_it_out(phonetic):
    evidence = Evidence(("mister burke it said",), FRAMES)
    own = [e.term for e in phonetic.retrieve(evidence).selected]
    assert "Birkett" in own
    unsure = HybridRetriever(phonetic, FakeScorer({"Birkett": 0.15})).retrieve(evidence)
    (e,) = [e for e in unsure.selected if e.term == "Birkett"]
    assert e.audio == pytest.approx(0.15) and e.score < 0.5  # its blend alone would not pick it
    vetoed = HybridRetriever(phonetic, FakeScorer({"Birkett": 0.02})).retrieve(evidence)
    assert "Birkett" not in [e.term for e in vetoed.selected]
    assert "Birkett" in [e.term for e in vetoed.rejected]
    never = HybridRetriever(phonetic, FakeScorer({"Birkett": 0.02}), HybridOptions(veto=0.0))
    assert "Birkett" in [e.term for e in never.retrieve(evidence).selected]


def test_spelled_terms_need_no_audio(phonetic):
    scorer = FakeScorer({})
    found = HybridRetriever(phonetic, scorer).retrieve(Evidence(("Linnell's pictures",), FRAMES))
    assert [(e.term, e.in_text) for e in found.selected] == [("Linnell", True)]
    assert not found.needs_second_pass


def test_picks_are_capped_per_stretch(phonetic):
    scorer = FakeScorer({t: 0.99 for t in TERMS})
    hybrid = HybridRetriever(phonetic, scorer, HybridOptions(floor=0.0, max_picks=2))
    found = hybrid.retrieve(Evidence(("mister burke it and quill ter in zanzibar",), FRAMES))
    heard = [e for e in found.selected if not e.in_text]
    assert len(heard) == 2 and [e.term for e in found.selected if e.in_text] == ["Zanzibar"]


def test_without_frames_the_phonetic_pick_stands(phonetic):
    hybrid = HybridRetriever(phonetic, FakeScorer({}))
    evidence = Evidence(("mister burke it said",))
    assert hybrid.retrieve(evidence).selected == phonetic.retrieve(evidence).selected


def test_frames_of_another_encoder_are_refused(phonetic):
    hybrid = HybridRetriever(phonetic, FakeScorer({}))
    with pytest.raises(ValueError, match="width 4"):
        hybrid.retrieve(Evidence(("mister burke it said",), np.zeros((10, 8), np.float32)))


def test_audio_retriever_scores_every_term(phonetic):
    scorer = FakeScorer({"Hephzibah": 0.8})
    found = AudioRetriever(phonetic, scorer, AudioOptions(chunk=3)).retrieve(
        Evidence(("nothing like it",), FRAMES)
    )
    assert [e.term for e in found.selected] == ["Hephzibah"]
    assert sorted(scorer.scored) == list(range(len(TERMS)))


def test_options_are_checked():
    with pytest.raises(ValueError, match="floor"):
        HybridOptions(floor=1.5)


def test_spelled_terms_match_the_full_candidates(phonetic):
    evidence = Evidence(("", "Linnell's pictures and Zanzibar"))
    spelled = phonetic.spelled(evidence)
    assert [(e.term, e.span) for e in spelled] == [
        ("Linnell", "Linnell's"),
        ("Zanzibar", "Zanzibar"),
    ]
    assert spelled == [e for e in phonetic.candidates(evidence, 0.5, 10) if e.in_text]
