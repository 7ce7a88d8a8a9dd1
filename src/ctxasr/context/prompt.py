"""Fitting context terms into Whisper's decoder prompt.

Whisper reads up to 223 prompt tokens (half its 448-token text context, less one for
``<|startofprev|>``). Terms are written as a comma-separated list ending in a full stop, most relevant first,
until the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ctxasr.context.terms import ContextTerm

PROMPT_BUDGET = 223  # tokens: n_text_ctx // 2 - 1 for every Whisper model
SEPARATOR = ","
MIN_TERM_TOKENS = 1  # a term with its full stop can be one token (" U.S." merges)
# The list ends with a full stop so that the transcript starts as a new sentence: with
# a bare word at the prompt's end Whisper may take the speech's first words for the
# rest of the prompt and drop them ("Mister Quilter is..." after a prompt " quilter"
# came out as "is the apostle...").
TERMINATOR = "."


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
    # " a, b." are exactly those of " a," + " b.": each term can be costed on its own
    # without re-encoding the whole prompt. The punctuation is encoded with the term
    # before it because a term's own trailing punctuation merges with it (" U.S.,"
    # ends in ".,", one token), so " U.S." + "," would not be the prompt's real tokens.
    tokens: list[int] = []  # all terms but the last, each followed by the separator
    used: list[str] = []
    separated: list[int] = []  # the last term as it reads when another follows it
    closing: list[int] = []  # the last term with the closing full stop
    for term in rank_terms(terms):
        if budget - len(tokens) - len(separated) < MIN_TERM_TOKENS:
            break  # full: with 100,000 terms, encoding the rest would take a second
        as_last = encode(" " + term.text + TERMINATOR)
        if len(tokens) + len(separated) + len(as_last) > budget:
            continue
        tokens.extend(separated)
        separated = encode(" " + term.text + SEPARATOR)
        closing = as_last
        used.append(term.text)
    if not used:
        return EMPTY_PROMPT
    tokens.extend(closing)
    text = " " + (SEPARATOR + " ").join(used) + TERMINATOR
    return Prompt(text=text, tokens=tuple(tokens), terms=tuple(used))
