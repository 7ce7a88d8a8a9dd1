"""A token-level context graph for shallow fusion.

Shallow fusion biases a beam search towards the user's context terms: every time a
hypothesis extends a term's token sequence by one more token it earns a bonus, added to
its log-probability, so names and jargon the model finds unlikely can outrank common
words that sound alike. The graph is a trie of the terms' token sequences with
Aho-Corasick failure links, so a hypothesis carries one ``ContextState`` and pays one
dict lookup per decoded token (amortised), however many terms there are.

Scores (a phrase is one token sequence; ``φ`` of a trie node is the sum of the token
scores on the path to it, each arc's token score being the highest per-token score of
the phrases that pass through it):

* a token that extends the current partial match earns that arc's token score;
* a token that breaks the match falls back along failure links to the longest suffix
  still in the trie, and the bonus of the part that was dropped is taken back;
* completing a phrase earns its ``φ`` once more as the node's *output score* (plus that
  of every shorter phrase ending at the same token, found through the failure links),
  which locks the phrase in: falling back later no longer takes it away;
* :meth:`ContextGraph.finalize` takes back the bonus of a match still unfinished when
  the hypothesis ends.

So the bonus a hypothesis has accumulated is always ``Σ φ(completed phrase occurrences)
+ φ(current state)``, and after ``finalize`` just the first sum: a hypothesis gains
only for terms it actually contains, and a partial term is just a temporary lift that
keeps it in the beam until the term can be finished.

The graph knows nothing of models or tokenizers (``from_terms`` takes the tokenizer as
a function), so every backend with a token-by-token beam search can use it. The design
follows the context graph of k2-fsa/icefall:
https://github.com/k2-fsa/icefall/blob/master/icefall/context_graph.py
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ctxasr.context.terms import ContextTerm

DEFAULT_BONUS = 1.5  # per matched token and unit of term weight, in log-probability units

_NO_TOKENS: frozenset[int] = frozenset()


class ContextState:
    """A node of a :class:`ContextGraph`, used as a beam search hypothesis's state.

    States belong to their graph and are compared and hashed by identity; copying one
    (also with ``copy.deepcopy`` of a hypothesis) gives the same state back, not a
    copy of the graph. Everything is read-only from outside this module.
    """

    __slots__ = (
        "_children",
        "_depth",
        "_fail",
        "_matched",
        "_next_tokens",
        "_output_score",
        "_phrase_id",
        "_resume",
        "_score",
        "_token_score",
    )

    def __init__(self, depth: int) -> None:
        self._children: dict[int, ContextState] = {}
        self._depth = depth
        self._token_score = 0.0  # the arc into this node: max over phrases through it
        self._score = 0.0  # φ: sum of the token scores from the root
        self._phrase_id = -1  # the phrase ending here, or -1
        self._fail: ContextState = self  # set for every node when the graph is built
        # Where a hypothesis goes after reaching this node: the node itself, or for a
        # finished phrase with no continuation the nearest node on its failure chain
        # that has one (see ContextGraph.forward_one_step).
        self._resume: ContextState = self
        self._output_score = 0.0  # φ of every phrase ending here, own and via failures
        self._matched: tuple[int, ...] = ()  # and their ids, longest first
        self._next_tokens: frozenset[int] | None = None  # built on first use

    @property
    def depth(self) -> int:
        """Number of tokens matched so far (0 at the root)."""
        return self._depth

    @property
    def score(self) -> float:
        """φ: the bonus earned by the current partial match, which ``finalize`` takes back."""
        return self._score

    @property
    def is_root(self) -> bool:
        """True when no match is in progress."""
        return self._depth == 0

    def __copy__(self) -> ContextState:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ContextState:
        return self

    def __repr__(self) -> str:
        return f"ContextState(depth={self._depth}, score={self._score:g})"


class ContextGraph:
    """An Aho-Corasick trie of token sequences that scores a hypothesis token by token.

    ``phrases`` are ``(token_ids, per_token_score)`` pairs. A token sequence given more
    than once is one phrase with the highest of its scores. Phrase ids number the
    distinct sequences in the order they first appear. ``labels``, if given, names
    each item of ``phrases`` (the first name given for a sequence is kept) for
    :meth:`term`.

    Raises:
        ValueError: an empty token sequence, a score that is not a positive finite
            number, or ``labels`` of a different length than ``phrases``.
    """

    def __init__(
        self,
        phrases: Iterable[tuple[Sequence[int], float]],
        *,
        labels: Iterable[str] | None = None,
    ) -> None:
        self._root = ContextState(0)
        self._num_nodes = 1
        # A build makes up to two objects a token (a node and its dict) and frees none,
        # yet every full pass of the cycle collector walks all objects alive, the trie
        # so far included. Paused, 100,000 phrases of 2-6 tokens built in 1.1-1.4 s
        # instead of 1.7-2.4 s (CPU time, with earlier graphs alive).
        with _collector_paused():
            best, first_index, count = _distinct_phrases(phrases)
            label_list = None if labels is None else list(labels)
            if label_list is not None and len(label_list) != count:
                raise ValueError(f"context graph got {len(label_list)} labels for {count} phrases")
            self._phrases = tuple(best)
            self._labels = None if label_list is None else tuple(label_list[i] for i in first_index)
            self._insert(best)
            self._link()

    @classmethod
    def from_terms(
        cls,
        terms: Iterable[ContextTerm],
        encode: Callable[[str], list[int]],
        bonus: float = DEFAULT_BONUS,
    ) -> ContextGraph:
        """Build a graph from context terms with the model's tokenizer.

        Each term is added in the spellings a decoder may produce: as written, with its
        first letter upper-cased and all lower-case, each alone and after a space (BPE
        vocabularies have separate tokens for a word that starts the text and one that
        follows a space). A term's per-token score is ``bonus * term.weight``. Spellings
        that encode to no tokens are skipped; spellings shared by two terms are one
        phrase, labelled with the first term and scored with the higher weight.

        Raises:
            ValueError: ``bonus`` or a term's weight is not a positive finite number, or
                a term's text is blank.
        """
        if not 0.0 < bonus < math.inf:
            raise ValueError(f"context bonus {bonus!r} must be a positive finite number")
        phrases: list[tuple[list[int], float]] = []
        labels: list[str] = []
        for term in terms:
            if not term.text.strip():
                raise ValueError(f"context term {term.text!r} is blank")
            if not 0.0 < term.weight < math.inf:
                raise ValueError(
                    f"context term {term.text!r} has weight {term.weight!r}; "
                    "it must be a positive finite number"
                )
            score = bonus * term.weight
            for surface in _surfaces(term.text):
                tokens = encode(surface)
                if tokens:  # the graph dedupes spellings that encode alike
                    phrases.append((tokens, score))
                    labels.append(term.text)
        return cls(phrases, labels=labels)

    @property
    def root(self) -> ContextState:
        """The start state of every hypothesis."""
        return self._root

    @property
    def num_nodes(self) -> int:
        """Trie nodes, the root included."""
        return self._num_nodes

    def __len__(self) -> int:
        """Number of distinct phrases (token sequences)."""
        return len(self._phrases)

    def __repr__(self) -> str:
        return f"ContextGraph({len(self)} phrases, {self._num_nodes} nodes)"

    def phrase(self, phrase_id: int) -> tuple[int, ...]:
        """The token sequence of a phrase id (as reported in ``matched``)."""
        self._check_id(phrase_id)
        return self._phrases[phrase_id]

    def term(self, phrase_id: int) -> str:
        """The context term a phrase id was built from.

        Raises:
            LookupError: the graph was built without labels.
        """
        self._check_id(phrase_id)
        if self._labels is None:
            raise LookupError("this context graph has no term labels (build it from_terms)")
        return self._labels[phrase_id]

    def next_tokens(self, state: ContextState) -> Collection[int]:
        """Tokens that extend the match in ``state``.

        A beam search can add these to its candidates so a term is followed even when
        its next token is outside the model's top k.
        """
        tokens = state._next_tokens
        if tokens is None:
            # Built lazily: a frozenset for each of 100,000s of nodes would cost more
            # memory than the graph, and a search only ever visits a few states.
            tokens = frozenset(state._children) if state._children else _NO_TOKENS
            state._next_tokens = tokens
        return tokens

    def forward_one_step(
        self, state: ContextState, token: int
    ) -> tuple[float, ContextState, tuple[int, ...]]:
        """Advance ``state`` by ``token``: ``(bonus, next_state, matched)``.

        ``next`` is the longest suffix of the hypothesis's tokens that is a path in the
        trie (standard Aho-Corasick: the child, else the child of the first node on the
        failure chain that has one, else the root). ``matched`` are the ids of the
        phrases completed by this token, longest first. The bonus is
        ``φ(next) - φ(state) + output_score(next)``, except that a finished phrase with
        no continuation is not kept as the state: the hypothesis resumes at the first
        node on its failure chain that has children (the root when there is none,
        which is the usual case), and the bonus is ``φ(resume) - φ(state) +
        output_score(next)``. Jumping there is no loss: from a node with no children
        every token would follow the same failure links anyway.

        Invariant: after any sequence of steps from the root, the bonuses add up to
        ``Σ φ(phrase)`` over every occurrence of a phrase completed so far (overlapping
        and nested ones included) plus ``φ(current state)``.
        """
        root = self._root
        node = state
        while True:
            nxt = node._children.get(token)
            if nxt is not None:
                break
            if node is root:
                nxt = root
                break
            node = node._fail
        resume = nxt._resume
        return resume._score - state._score + nxt._output_score, resume, nxt._matched

    def finalize(self, state: ContextState) -> float:
        """The bonus to add when a hypothesis ends: takes back an unfinished match."""
        return 0.0 - state._score  # not -score: no -0.0 at the root

    def _check_id(self, phrase_id: int) -> None:
        if not 0 <= phrase_id < len(self._phrases):
            raise IndexError(f"no context phrase {phrase_id} (the graph has {len(self)})")

    def _insert(self, best: dict[tuple[int, ...], float]) -> None:
        """Add the phrases to the trie, each arc scored with the best phrase through it."""
        root = self._root
        made = 0
        for phrase_id, (tokens, score) in enumerate(best.items()):
            node = root
            for token in tokens:
                children = node._children
                child = children.get(token)
                if child is None:
                    child = children[token] = ContextState(node._depth + 1)
                    made += 1
                child._token_score = max(child._token_score, score)
                node = child
            node._phrase_id = phrase_id
        self._num_nodes += made

    def _link(self) -> None:
        """Set φ, failure links, output scores and resume states, breadth first.

        Breadth first because a node's failure target is shallower, so it is complete
        by the time the node is reached.
        """
        root = self._root
        inner = [root]  # nodes with children in breadth-first order, grown while walked
        for node in inner:
            score = node._score
            for token, child in node._children.items():
                child._score = child_score = score + child._token_score
                if node is root:
                    fail = root
                else:
                    fail = node._fail
                    while token not in fail._children and fail is not root:
                        fail = fail._fail
                    fail = fail._children.get(token, root)
                child._fail = fail
                if child._phrase_id < 0:
                    child._output_score = fail._output_score
                    child._matched = fail._matched
                else:
                    child._output_score = child_score + fail._output_score
                    child._matched = (child._phrase_id, *fail._matched)
                if child._children:
                    inner.append(child)
                else:
                    child._resume = fail._resume


def _surfaces(text: str) -> list[str]:
    """The spellings of a term: as written, first letter upper-cased, lower-case; each
    alone and after a space. Repeats are dropped."""
    forms = dict.fromkeys([text, text[:1].upper() + text[1:], text.lower()])
    return [surface for form in forms for surface in (form, " " + form)]


def _distinct_phrases(
    phrases: Iterable[tuple[Sequence[int], float]],
) -> tuple[dict[tuple[int, ...], float], list[int], int]:
    """Check the phrases and merge repeats: ``(best score of each distinct sequence in
    first-seen order, index in ``phrases`` of each one's first occurrence, count)``."""
    best: dict[tuple[int, ...], float] = {}
    first_index: list[int] = []
    count = 0
    for index, (tokens, score) in enumerate(phrases):
        key = tuple(tokens)
        if not key:
            raise ValueError(f"context phrase {index} has no tokens")
        if not 0.0 < score < math.inf:  # also rejects NaN
            raise ValueError(
                f"context phrase {index} {list(key)} has score {score!r}; "
                "it must be a positive finite number"
            )
        seen = best.get(key)
        if seen is None:
            best[key] = score
            first_index.append(index)
        elif score > seen:
            best[key] = score
        count += 1
    return best, first_index, count


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector (reference counting still frees memory)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@dataclass(frozen=True)
class Fusion:
    """Shallow fusion for one transcription: fixed ``terms`` (and their Whisper ``graph``;
    None where another decoder builds its own, the speech LLM), or none, to build a graph
    with ``graph_for`` per second pass from the terms the retriever picked."""

    weight: float
    graph_for: Callable[[Sequence[ContextTerm]], ContextGraph]
    graph: ContextGraph | None = None
    terms: tuple[str, ...] = ()  # the fixed terms, fused in every pass
