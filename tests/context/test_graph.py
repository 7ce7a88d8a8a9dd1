"""Golden and property tests for the shallow-fusion context graph (ctxasr.context.graph)."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.graph import DEFAULT_BONUS, ContextGraph, ContextState
from ctxasr.context.terms import ContextTerm

T = ContextTerm

Step = tuple[float, int, tuple[int, ...]]  # (bonus, depth of the next state, matched ids)


def walk(graph: ContextGraph, tokens: list[int]) -> tuple[list[Step], ContextState]:
    state = graph.root
    steps = []
    for token in tokens:
        bonus, state, matched = graph.forward_one_step(state, token)
        steps.append((bonus, state.depth, matched))
    return steps, state


def assert_walk(graph: ContextGraph, tokens: list[int], expected: list[Step], final: float) -> None:
    steps, state = walk(graph, tokens)
    assert [(pytest.approx(b), d, m) for b, d, m in steps] == expected
    assert graph.finalize(state) == pytest.approx(final)


# --- golden tables -----------------------------------------------------------------------

# Phrases 0 = (1, 2, 3) at 1.0 a token, 1 = (2, 4) at 2.0, 2 = (3,) at 0.5.
# Nodes and φ: "1" 1.0, "12" 2.0, "123" 3.0, "2" 2.0, "24" 4.0, "3" 0.5.
# Failure links: "12" -> "2", "123" -> "3", the others -> root.
# Output scores: "123" 3.0 + 0.5 ("3" via its failure link) = 3.5, "24" 4.0, "3" 0.5.
# "123", "24" and "3" have no children: a hypothesis reaching them resumes at the root.
ABC = [((1, 2, 3), 1.0), ((2, 4), 2.0), ((3,), 0.5)]


@pytest.mark.parametrize(
    ("tokens", "expected", "final"),
    [
        pytest.param(
            [1, 2, 3],
            # +1 (φ "1"), +1 (φ "12" - φ "1"); then "123" completes phrases 0 and 2:
            # φ(root) - φ("12") + output("123") = 0 - 2 + 3.5 = 1.5. Total 3.5 = 3.0 + 0.5.
            [(1.0, 1, ()), (1.0, 2, ()), (1.5, 0, (0, 2))],
            0.0,
            id="1,2,3 completes (1,2,3) and (3,)",
        ),
        pytest.param(
            [1, 2, 4],
            # "12" has no 4: fail to "2", which has -> "24" (φ 4, output 4), a leaf:
            # 0 - 2 + 4 = 2. Total 1 + 1 + 2 = 4 = φ(2,4).
            [(1.0, 1, ()), (1.0, 2, ()), (2.0, 0, (1,))],
            0.0,
            id="1,2,4 fails over to (2,4)",
        ),
        pytest.param(
            [1, 2, 5],
            # 5 is nowhere: fail "12" -> "2" -> root, and the 2.0 earned is taken back.
            [(1.0, 1, ()), (1.0, 2, ()), (-2.0, 0, ())],
            0.0,
            id="1,2,5 falls to the root",
        ),
        pytest.param(
            [9, 1, 2],
            # 9 earns nothing; 1, 2 earn 1 + 1; finalize takes the unfinished 2.0 back.
            [(0.0, 0, ()), (1.0, 1, ()), (1.0, 2, ())],
            -2.0,
            id="9,1,2 unfinished",
        ),
        pytest.param(
            [1, 3],
            # "1" has no 3: fail to root -> "3" (φ 0.5, output 0.5), a leaf:
            # 0 - 1 + 0.5 = -0.5. Total 0.5 = φ(3).
            [(1.0, 1, ()), (-0.5, 0, (2,))],
            0.0,
            id="1,3 completes (3,) on the way down",
        ),
        pytest.param(
            [2, 4, 3],
            # +2, then "24": 0 - 2 + 4 = 2; then "3" from the root: 0 - 0 + 0.5. Total 4.5.
            [(2.0, 1, ()), (2.0, 0, (1,)), (0.5, 0, (2,))],
            0.0,
            id="2,4,3 two phrases in a row",
        ),
        pytest.param(
            [1, 2, 2, 4],
            # The second 2: "12" -> fail "2" (no 2) -> root -> "2": 2 - 2 + 0 = 0.
            # Then "24": 0 - 2 + 4 = 2. Total 1 + 1 + 0 + 2 = 4 = φ(2,4).
            [(1.0, 1, ()), (1.0, 2, ()), (0.0, 1, ()), (2.0, 0, (1,))],
            0.0,
            id="1,2,2,4 restarts a match",
        ),
        pytest.param(
            [2],
            [(2.0, 1, ())],
            -2.0,
            id="2 unfinished",
        ),
        pytest.param([], [], 0.0, id="nothing decoded"),
    ],
)
def test_golden_abc(tokens, expected, final):
    assert_walk(ContextGraph(ABC), tokens, expected, final)


def test_abc_graph_shape_and_states():
    graph = ContextGraph(ABC)

    assert len(graph) == 3
    assert graph.num_nodes == 7  # root, "1", "12", "123", "2", "24", "3"
    assert [graph.phrase(i) for i in range(3)] == [(1, 2, 3), (2, 4), (3,)]
    _, twelve = walk(graph, [1, 2])
    assert (twelve.depth, twelve.score, twelve.is_root) == (2, 2.0, False)
    assert graph.next_tokens(twelve) == {3}
    assert graph.next_tokens(graph.root) == {1, 2, 3}
    _, end = walk(graph, [1, 2, 3])
    assert end is graph.root and end.is_root and end.score == 0.0
    assert graph.finalize(graph.root) == 0.0 and math.copysign(1, graph.finalize(end)) == 1


@pytest.mark.parametrize(
    ("tokens", "expected", "final"),
    [
        pytest.param(
            [7, 8, 9],
            # "New York" = (7, 8) ends at "78" (φ 2), which goes on to "789" (φ 3):
            # +1; +1 + output 2 = 3 (state stays "78"); "789" is a leaf: 0 - 2 + 3 = 1.
            # Total 5 = φ(New York) + φ(New York City): both occurrences count.
            [(1.0, 1, ()), (3.0, 2, (0,)), (1.0, 0, (1,))],
            0.0,
            id="New York City",
        ),
        pytest.param(
            [7, 8, 5],
            # "78" has no 5: back to the root, taking the 2.0 of the partial match
            # back; the locked-in output 2 stays. Total 1 + 3 - 2 = 2 = φ(New York).
            [(1.0, 1, ()), (3.0, 2, (0,)), (-2.0, 0, ())],
            0.0,
            id="New York then something else",
        ),
        pytest.param(
            [7, 8],
            # Total 4 before finalize, which takes the partial φ("78") = 2 back: 2.
            [(1.0, 1, ()), (3.0, 2, (0,))],
            -2.0,
            id="New York at the end",
        ),
        pytest.param(
            [7, 8, 7, 8, 9],
            # The second 7: "78" -> fail root -> "7": 1 - 2 + 0 = -1.
            # Total 1 + 3 - 1 + 3 + 1 = 7 = 2 + 2 + 3.
            [(1.0, 1, ()), (3.0, 2, (0,)), (-1.0, 1, ()), (3.0, 2, (0,)), (1.0, 0, (1,))],
            0.0,
            id="New York New York City",
        ),
    ],
)
def test_golden_phrase_that_is_a_prefix_of_another(tokens, expected, final):
    assert_walk(ContextGraph([((7, 8), 1.0), ((7, 8, 9), 1.0)]), tokens, expected, final)


def test_golden_overlapping_outputs_via_dictionary_suffix_links():
    # (1, 2, 3) and (2, 3) at 1.0: "123" fails to "23", so output("123") = 3 + 2 = 5.
    graph = ContextGraph([((1, 2, 3), 1.0), ((2, 3), 1.0)])
    # +1, +1, then 0 - 2 + 5 = 3. Total 5 = φ(1,2,3) + φ(2,3).
    assert_walk(graph, [1, 2, 3], [(1.0, 1, ()), (1.0, 2, ()), (3.0, 0, (0, 1))], 0.0)
    # +1, then "23" (a leaf, output 2): 0 - 1 + 2 = 1. Total 2.
    assert_walk(graph, [2, 3], [(1.0, 1, ()), (1.0, 0, (1,))], 0.0)


def test_golden_finished_leaf_resumes_on_its_failure_chain():
    # (1, 2) and (2, 3) at 1.0: "12" is a leaf whose failure link "2" still leads to
    # (2, 3), so the hypothesis resumes at "2" rather than the root and still finds
    # (2, 3) in 1, 2, 3.
    graph = ContextGraph([((1, 2), 1.0), ((2, 3), 1.0)])
    # +1; "12" completes (1, 2): φ("2") - φ("1") + output 2 = 1 - 1 + 2 = 2, state "2";
    # "23": 0 - 1 + 2 = 1. Total 4 = φ(1,2) + φ(2,3).
    assert_walk(graph, [1, 2, 3], [(1.0, 1, ()), (2.0, 1, (0,)), (1.0, 0, (1,))], 0.0)
    # From "2" a 4 falls to the root: 0 - 1 = -1. Total 1 + 2 - 1 = 2 = φ(1,2).
    assert_walk(graph, [1, 2, 4], [(1.0, 1, ()), (2.0, 1, (0,)), (-1.0, 0, ())], 0.0)
    # Ending right after (1, 2): finalize takes back the 1.0 of the partial "2".
    assert_walk(graph, [1, 2], [(1.0, 1, ()), (2.0, 1, (0,))], -1.0)


def test_golden_shared_prefix_takes_the_highest_score():
    # (5, 6) at 1.0 and (5, 7) at 3.0 share the arc 5, scored max(1, 3) = 3:
    # φ("56") = 3 + 1 = 4 and φ("57") = 3 + 3 = 6.
    graph = ContextGraph([((5, 6), 1.0), ((5, 7), 3.0)])
    assert_walk(graph, [5, 6], [(3.0, 1, ()), (1.0, 0, (0,))], 0.0)  # 0 - 3 + 4
    assert_walk(graph, [5, 7], [(3.0, 1, ()), (3.0, 0, (1,))], 0.0)  # 0 - 3 + 6
    assert_walk(graph, [5], [(3.0, 1, ())], -3.0)
    _, five = walk(graph, [5])
    assert graph.next_tokens(five) == {6, 7}


def test_end_leaf_returns_to_the_root():
    graph = ContextGraph([((4, 2), 1.0)])
    bonus, state, matched = graph.forward_one_step(graph.root, 4)
    bonus, state, matched = graph.forward_one_step(state, 2)
    # φ("42") - φ("4") + output("42") - φ("42") = 2 - 1 + 2 - 2 = 1.
    assert (bonus, state, matched) == (1.0, graph.root, (0,))


def test_duplicate_sequences_are_one_phrase_with_the_highest_score():
    graph = ContextGraph([((1, 2), 1.0), ((1, 2), 2.0), ((1, 2), 0.5)])
    assert len(graph) == 1 and graph.num_nodes == 3
    assert_walk(graph, [1, 2], [(2.0, 1, ()), (2.0, 0, (0,))], 0.0)  # φ = 2 + 2 = 4


@pytest.mark.parametrize("phrases", [[], iter(())])
def test_empty_graph_never_scores(phrases):
    graph = ContextGraph(phrases)

    assert len(graph) == 0 and graph.num_nodes == 1
    for token in (0, 1, 50257):
        assert graph.forward_one_step(graph.root, token) == (0.0, graph.root, ())
    assert graph.finalize(graph.root) == 0.0
    assert not graph.next_tokens(graph.root)


# --- states ------------------------------------------------------------------------------


def test_states_are_hashable_identities_and_read_only():
    graph = ContextGraph(ABC)
    _, one = walk(graph, [1])
    _, again = walk(graph, [9, 1])

    assert one is again and len({one, again, graph.root}) == 2
    assert copy.copy(one) is one and copy.deepcopy({"state": one})["state"] is one
    with pytest.raises(AttributeError):
        one.depth = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        one.anything = 1  # type: ignore[attr-defined]
    assert repr(one) == "ContextState(depth=1, score=1)"


# --- input errors ------------------------------------------------------------------------


@pytest.mark.parametrize("score", [0.0, -1.0, math.nan, math.inf])
def test_bad_scores_are_refused(score):
    with pytest.raises(ValueError, match="positive finite"):
        ContextGraph([((1, 2), 1.0), ((3,), score)])


def test_empty_token_sequence_is_refused():
    with pytest.raises(ValueError, match="phrase 1 has no tokens"):
        ContextGraph([((1,), 1.0), ((), 1.0)])


def test_labels_must_match_the_phrases():
    with pytest.raises(ValueError, match="2 labels for 1 phrases"):
        ContextGraph([((1,), 1.0)], labels=["a", "b"])


def test_unknown_phrase_ids_and_missing_labels():
    graph = ContextGraph(ABC)
    with pytest.raises(IndexError):
        graph.phrase(3)
    with pytest.raises(IndexError):
        graph.term(-1)
    with pytest.raises(LookupError, match="no term labels"):
        graph.term(0)
    labelled = ContextGraph([((1,), 1.0), ((1,), 2.0), ((2,), 1.0)], labels=["a", "b", "c"])
    assert [labelled.term(i) for i in range(2)] == ["a", "c"]  # the first label wins


# --- the invariant, against brute force --------------------------------------------------

PHRASES = st.lists(
    st.tuples(
        st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple),
        st.sampled_from([0.25, 0.5, 1.0, 1.5, 3.0]),
    ),
    max_size=8,
)
TOKENS = st.lists(st.integers(0, 5), max_size=24)  # 5 is in no phrase


class Reference:
    """The graph's scores worked out from the definitions, without a trie."""

    def __init__(self, phrases: list[tuple[tuple[int, ...], float]]) -> None:
        self.best: dict[tuple[int, ...], float] = {}
        for tokens, score in phrases:
            self.best[tokens] = max(self.best.get(tokens, 0.0), score)

    def token_score(self, prefix: tuple[int, ...]) -> float:
        return max(s for p, s in self.best.items() if p[: len(prefix)] == prefix)

    def phi(self, prefix: tuple[int, ...]) -> float:
        return sum(self.token_score(prefix[:k]) for k in range(1, len(prefix) + 1))

    def ending(self, text: tuple[int, ...]) -> set[tuple[int, ...]]:
        """Phrases that end at the last token of ``text``."""
        return {p for p in self.best if text[len(text) - len(p) :] == p}

    def state(self, text: tuple[int, ...]) -> tuple[int, ...]:
        """The longest suffix of ``text`` that a phrase goes on from (``()`` if none)."""
        for start in range(len(text)):
            suffix = text[start:]
            if any(len(p) > len(suffix) and p[: len(suffix)] == suffix for p in self.best):
                return suffix
        return ()


@settings(max_examples=300, deadline=None)
@given(PHRASES, TOKENS)
def test_bonus_is_completed_phrases_plus_the_partial_match(phrases, tokens):
    graph = ContextGraph(phrases)
    ref = Reference(phrases)
    assert len(graph) == len(ref.best)

    state, total, completed = graph.root, 0.0, 0.0
    for i, token in enumerate(tokens):
        bonus, state, matched = graph.forward_one_step(state, token)
        total += bonus
        text = tuple(tokens[: i + 1])
        ending = ref.ending(text)
        completed += sum(ref.phi(p) for p in ending)
        partial = ref.state(text)

        assert [len(graph.phrase(m)) for m in matched] == sorted(map(len, ending), reverse=True)
        assert {graph.phrase(m) for m in matched} == ending
        assert state.depth == len(partial) and state.is_root == (not partial)
        assert state.score == pytest.approx(ref.phi(partial))
        assert total == pytest.approx(completed + ref.phi(partial))
        assert graph.next_tokens(state) == {
            p[len(partial)]
            for p in ref.best
            if len(p) > len(partial) and p[: len(partial)] == partial
        }

    assert total + graph.finalize(state) == pytest.approx(completed)


# --- building from terms -----------------------------------------------------------------


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def spellings(graph: ContextGraph) -> set[str]:
    return {"".join(map(chr, graph.phrase(i))) for i in range(len(graph))}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Birket", {"Birket", " Birket", "birket", " birket"}),
        ("birket", {"birket", " birket", "Birket", " Birket"}),
        ("iPhone", {"iPhone", " iPhone", "IPhone", " IPhone", "iphone", " iphone"}),
        ("NASA", {"NASA", " NASA", "nasa", " nasa"}),
        ("New York", {"New York", " New York", "new york", " new york"}),
        ("42", {"42", " 42"}),
    ],
)
def test_terms_are_added_in_their_spellings(text, expected):
    graph = ContextGraph.from_terms([T(text)], chars)

    assert spellings(graph) == expected
    assert {graph.term(i) for i in range(len(graph))} == {text}


def test_spellings_that_encode_alike_are_one_phrase():
    graph = ContextGraph.from_terms([T("Birket")], lambda s: chars(s.strip()))
    assert spellings(graph) == {"Birket", "birket"}


def test_spellings_that_encode_to_nothing_are_skipped():
    vocab = {"Birket": [1, 2], " Birket": [3, 2]}
    graph = ContextGraph.from_terms([T("Birket")], lambda s: vocab.get(s, []))
    assert [graph.phrase(i) for i in range(len(graph))] == [(1, 2), (3, 2)]


def test_score_is_bonus_times_weight_per_token():
    graph = ContextGraph.from_terms([T("ab", 2.0)], chars, bonus=0.5)
    # 0.5 * 2.0 = 1.0 a token: +1 for "a", then "ab" (a leaf, output 2): 0 - 1 + 2 = 1.
    assert_walk(graph, chars("ab"), [(1.0, 1, ()), (1.0, 0, (0,))], 0.0)
    default = ContextGraph.from_terms([T("x")], chars)
    assert default.forward_one_step(default.root, ord("x"))[0] == DEFAULT_BONUS == 1.5


def test_shared_spellings_keep_the_first_label_and_the_highest_weight():
    # "US" gives US and us; "us" gives us and Us. The phrase "us" is labelled "US"
    # (first) but scored with the weight of "us": 1.5 * 3.0 = 4.5 a token.
    graph = ContextGraph.from_terms([T("US", 1.0), T("us", 3.0)], chars)
    labels = {"".join(map(chr, graph.phrase(i))): graph.term(i) for i in range(len(graph))}

    assert labels == {
        "US": "US", " US": "US", "us": "US", " us": "US", "Us": "us", " Us": "us"
    }  # fmt: skip
    assert graph.forward_one_step(graph.root, ord("u"))[0] == 4.5
    assert graph.forward_one_step(graph.root, ord("U"))[0] == 4.5  # "Us" shares the arc


def test_next_tokens_from_terms():
    graph = ContextGraph.from_terms([T("ab")], chars)
    assert graph.next_tokens(graph.root) == {ord("a"), ord("A"), ord(" ")}


def test_no_terms_give_the_empty_graph():
    assert len(ContextGraph.from_terms([], chars)) == 0


@pytest.mark.parametrize("bonus", [0.0, -1.5, math.nan, math.inf])
def test_bad_bonus_is_refused(bonus):
    with pytest.raises(ValueError, match="bonus"):
        ContextGraph.from_terms([T("ab")], chars, bonus=bonus)


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan])
def test_bad_term_weight_is_refused(weight):
    with pytest.raises(ValueError, match="'ab' has weight"):
        ContextGraph.from_terms([T("ab", weight)], chars)


def test_blank_term_is_refused():
    with pytest.raises(ValueError, match="blank"):
        ContextGraph.from_terms([T("ab"), T("  ")], chars)
