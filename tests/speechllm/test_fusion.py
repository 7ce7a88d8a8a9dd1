"""The context graph's shallow fusion in the speech LLM's search (``GraphHook``)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ctxasr.context.graph import ContextGraph
from ctxasr.speechllm.fusion import GraphHook

V = 10


def flat() -> torch.Tensor:
    return torch.full((V,), -2.0)


def test_a_term_token_earns_its_bonus_and_leaving_takes_it_back() -> None:
    graph = ContextGraph([([3, 4, 5], 1.0)])
    hook = GraphHook(graph, weight=2.0, top=0)
    start = flat()
    hook.adjust([], start)
    assert start[3] == pytest.approx(-2.0 + 2.0)  # the term's first token
    assert start[7] == pytest.approx(-2.0)  # nothing else moves at the root
    inside = flat()
    hook.adjust([3], inside)
    assert inside[4] == pytest.approx(-2.0 + 2.0)  # continuing: one more token's bonus
    assert inside[7] == pytest.approx(-2.0 - 2.0)  # leaving: the first token's bonus back
    done = flat()
    hook.adjust([3, 4, 5], done)  # a finished term keeps what it earned; a new one may start
    assert done[7] == pytest.approx(-2.0) and done[3] == pytest.approx(0.0)


def test_the_bonuses_add_up_to_the_graphs() -> None:
    graph = ContextGraph([([3, 4, 5], 1.5), ([4, 6], 1.0)])
    hook = GraphHook(graph, weight=1.0, top=V)
    tokens, total, state = [3, 4, 6, 3, 4, 5, 1], 0.0, graph.root
    for i, token in enumerate(tokens):
        row = torch.zeros(V)
        hook.adjust(tokens[:i], row)
        bonus, state, _ = graph.forward_one_step(state, token)
        assert row[token] == pytest.approx(bonus)
        total += float(row[token])
    assert total == pytest.approx(3 * 1.5 + 2 * 1.0)  # both terms, once each


def test_weight_zero_or_an_empty_graph_changes_nothing() -> None:
    row = flat()
    GraphHook(ContextGraph([([3], 1.0)]), weight=0.0).adjust([], row)
    GraphHook(ContextGraph([]), weight=1.0).adjust([2], row)
    assert torch.equal(row, flat())
    with pytest.raises(ValueError):
        GraphHook(ContextGraph([]), weight=-1.0)
