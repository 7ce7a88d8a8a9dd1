"""Shallow fusion of the context graph into the speech LLM's search.

:class:`GraphHook` is a ``ctxasr.speechllm.search.ScoreHook``: at each step it walks the
hypothesis's tokens through a ``ContextGraph`` built with the LLM's tokenizer and adds
``weight`` x the graph's bonus to the next token's log-probability, as the Whisper
backend's ``ContextFusion`` does in its beam search. A token that continues a term
earns the term's per-token bonus; any other token, the end of text included, takes
back what the unfinished match had earned, so a hypothesis that spells half a term and
stops gains nothing.

The exact bonus is computed for the tokens that continue the current match and for the
model's own ``top`` candidates; every other token gets the take-back alone (it could
only differ for a token that starts another term from a failure state, and such a token
is outside the model's top candidates, where a bonus would rarely change the ranking).
Walking the graph from the root each step costs one dictionary lookup per token so far:
nothing next to one step of the LLM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ctxasr.context.graph import ContextGraph, ContextState
from ctxasr.recent import Recent


class GraphHook:
    """``weight`` x the bonuses of ``graph`` (token ids of the LLM's tokenizer)."""

    def __init__(self, graph: ContextGraph, weight: float, top: int = 16) -> None:
        if not 0.0 <= weight < float("inf"):
            raise ValueError(f"fusion weight must be a finite number >= 0, got {weight}")
        self.graph, self.weight, self.top = graph, weight, top

    def state(self, tokens: Sequence[int]) -> ContextState:
        """The graph state after ``tokens`` from the root."""
        state = self.graph.root
        for token in tokens:
            state = self.graph.forward_one_step(state, token)[1]
        return state

    def adjust(self, tokens: Sequence[int], logp: torch.Tensor) -> None:
        """Add the fusion bonus of every next token to ``logp`` ``(V,)``, in place."""
        if not self.weight or not len(self.graph):
            return
        state = self.state(tokens)
        back = self.graph.finalize(state)  # leaving the match: its bonus taken back
        candidates = set(self.graph.next_tokens(state))
        finite = torch.isfinite(logp)
        k = min(self.top, int(finite.sum()))
        if k:
            candidates.update(logp.masked_fill(~finite, float("-inf")).topk(k).indices.tolist())
        if back:
            logp += self.weight * back
        for token in candidates:
            if token < len(logp):
                bonus = self.graph.forward_one_step(state, token)[0]
                logp[token] += self.weight * (bonus - back)


def graph_hook(terms: Sequence[str], encode: Callable[[str], list[int]], weight: float,
               graphs: Recent[tuple[str, ...], ContextGraph]) -> GraphHook | None:  # fmt: skip
    """The fusion hook of ``terms`` (tokenized by ``encode``) at ``weight``; the graph is
    built once per term list and kept in ``graphs``. None without terms."""
    from ctxasr.context.terms import ContextTerm

    if not terms:
        return None
    graph = graphs.get(tuple(terms), lambda: ContextGraph.from_terms(
        [ContextTerm(t) for t in terms], encode, 1.0))  # fmt: skip
    return GraphHook(graph, weight)


def normalize_terms(terms: Sequence[str], lowercase: bool) -> list[str]:
    """Terms as a model trained on (lower-cased) single-spaced text reads them, deduplicated."""
    out = [" ".join(t.lower().split() if lowercase else t.split()) for t in terms]
    return list(dict.fromkeys(t for t in out if t))
