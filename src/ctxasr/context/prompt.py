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
    # " a, b" are exactly those of " a," + " b": each term can be costed on its own
    # without re-encoding the whole prompt. The separator is encoded with the term
    # before it because a term's trailing punctuation merges with it (" U.S.," ends
    # in ".,", one token), so " U.S." + "," would not be the prompt's real tokens.
    tokens: list[int] = []  # the terms so far, each followed by the separator
    used: list[str] = []
    last: list[int] = []  # the last term's tokens without the separator
    last_with_separator = 0
    for term in rank_terms(terms):
        piece = encode(" " + term.text)
        if len(tokens) + len(piece) > budget:
            continue
        with_separator = encode(" " + term.text + SEPARATOR)
        tokens.extend(with_separator)
        used.append(term.text)
        last, last_with_separator = piece, len(with_separator)
    if not used:
        return EMPTY_PROMPT
    tokens[-last_with_separator:] = last
    return Prompt(text=" " + ", ".join(used), tokens=tuple(tokens), terms=tuple(used))
