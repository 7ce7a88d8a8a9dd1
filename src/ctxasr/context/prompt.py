"""Fitting context terms into Whisper's decoder prompt.

Whisper reads up to 223 prompt tokens (half its 448-token text context, less one for
``<|startofprev|>``). Terms are written as a comma-separated list, the form Whisper
copies spellings from most reliably, most relevant first, until the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ctxasr.context.terms import ContextTerm

PROMPT_BUDGET = 223  # tokens: n_text_ctx // 2 - 1 for every Whisper model
SEPARATOR = ","


@dataclass(frozen=True)
class Prompt:
    """A rendered context prompt."""

    text: str
    tokens: tuple[int, ...]
    terms: tuple[str, ...]  # the terms that fitted, in prompt order


EMPTY_PROMPT = Prompt("", (), ())


def rank_terms(terms: Sequence[ContextTerm]) -> list[ContextTerm]:
    """Most relevant first: by weight, then by the order the user gave."""
    return sorted(terms, key=lambda t: -t.weight)  # sorted() is stable


def build_prompt(
    terms: Sequence[ContextTerm],
    encode: Callable[[str], list[int]],
    budget: int = PROMPT_BUDGET,
) -> Prompt:
    """Render ``terms`` as a prompt of at most ``budget`` tokens.

    ``encode`` is the model's tokenizer (text -> token ids, no special tokens). Terms
    that do not fit are left out; smaller ones further down may still fit.
    """
    # GPT-2 style BPE pre-splits text at spaces and punctuation, so the tokens of
    # " a, b" are exactly those of " a" + "," + " b": the cost of each term can be
    # counted on its own without re-encoding the whole prompt.
    separator = encode(SEPARATOR)
    tokens: list[int] = []
    used: list[str] = []
    for term in rank_terms(terms):
        piece = encode(" " + term.text)
        cost = len(piece) + (len(separator) if used else 0)
        if len(tokens) + cost > budget:
            continue
        if used:
            tokens.extend(separator)
        tokens.extend(piece)
        used.append(term.text)
    if not used:
        return EMPTY_PROMPT
    return Prompt(text=" " + ", ".join(used), tokens=tuple(tokens), terms=tuple(used))
