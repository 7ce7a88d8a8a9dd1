"""Two decoding passes per 30 s stretch: hear first, then decode with what was heard.

For each stretch of audio Whisper decodes (a "seek"), the encoder runs once. Pass 1
decodes it with no context and keeps its n-best hypotheses; a retriever picks the
context terms they contain (``context.retrieval``); pass 2, only when a picked term is
missing from pass 1's text, decodes the same encoder output with those terms in the
prompt. The two texts are then merged: pass 2 is taken only where it brings in a picked
term, pass 1 everywhere else, so a term in the prompt can fix its own words but cannot
reword the rest of the stretch. This is what keeps U-WER with context at its
no-context level.

The code here is plain token and text work, testable without a model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ctxasr.context.prompt import PROMPT_BUDGET, Prompt, build_prompt
from ctxasr.context.retrieval import Evidence, Retrieval, Retriever
from ctxasr.context.spelling import TermSpeller
from ctxasr.context.terms import ContextTerm
from ctxasr.context.words import letters
from ctxasr.results import ContextPick


class WordTokenizer(Protocol):
    """The part of faster-whisper's tokenizer that merging needs."""

    eot: int

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]: ...


def with_context(
    prompt: Sequence[int], context: Sequence[int], sot_prev: int, sot: int
) -> list[int]:
    """Put ``context`` tokens first in a Whisper prompt, ahead of any previous text.

    ``prompt`` is ``[<|startofprev|> previous... ] <|startoftranscript|> ...``; the
    previous text keeps only what the 223-token budget leaves after the context.
    """
    at = list(prompt).index(sot)
    previous = list(prompt[1:at]) if at and prompt[0] == sot_prev else []
    room = PROMPT_BUDGET - len(context)
    tail = previous[-room:] if room > 0 and previous else []
    if not context and not tail:
        return list(prompt[at:])  # no empty previous-text section: Whisper never saw one
    return [sot_prev, *context, *tail, *prompt[at:]]


@dataclass
class _Unit:
    key: str | None  # a word's letters and digits, casefolded; None for special tokens
    text: str
    tokens: list[int]


def _units(tokens: Sequence[int], tokenizer: WordTokenizer) -> list[_Unit]:
    units: list[_Unit] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            words, pieces = tokenizer.split_to_word_tokens(list(run))
            for word, piece in zip(words, pieces):
                key = letters(word) or word.strip()
                units.append(_Unit(key, word, list(piece)))
            run.clear()

    for t in tokens:
        if t >= tokenizer.eot:
            flush()
            units.append(_Unit(None, "", [t]))
        else:
            run.append(t)
    flush()
    return units


def merge_passes(
    first: Sequence[int],
    second: Sequence[int],
    tokenizer: WordTokenizer,
    wanted: Sequence[str],
) -> list[int]:
    """Pass 1's tokens with pass 2's words wherever pass 2 brought in a ``wanted`` term.

    The texts are aligned word by word (case and punctuation aside); each stretch where
    they differ is taken from pass 2 if one of its words belongs to an occurrence of a
    wanted term in pass 2's text (exact, or a near-miss the term speller would fix),
    and from pass 1 otherwise. Pass 1's timestamp tokens are kept as they are.
    """
    a_units, b_units = _units(first, tokenizer), _units(second, tokenizer)
    a_words = [i for i, u in enumerate(a_units) if u.key is not None]
    b_words = [i for i, u in enumerate(b_units) if u.key is not None]
    covered = _term_words([b_units[i].text for i in b_words], wanted)
    matcher = difflib.SequenceMatcher(
        a=[a_units[i].key for i in a_words], b=[b_units[i].key for i in b_words], autojunk=False
    )
    out: list[int] = []
    next_unit = 0  # the first pass-1 unit not yet written

    def emit_a_until(unit: int) -> None:
        nonlocal next_unit
        for u in a_units[next_unit:unit]:
            out.extend(u.tokens)
        next_unit = max(next_unit, unit)

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if i1 < len(a_words):
            start = a_words[i1]
        else:  # after pass 1's last word, before its closing timestamp
            start = a_words[-1] + 1 if a_words else 0
        if tag == "equal":
            continue
        touched = range(max(j1 - 1, 0), j2 + 1) if j1 == j2 else range(j1, j2)
        if not any(j in covered for j in touched):
            continue
        emit_a_until(start)
        for j in range(j1, j2):
            out.extend(b_units[b_words[j]].tokens)
        end = a_words[i2 - 1] + 1 if i2 > i1 else start
        # Pass 1's timestamps inside the replaced stretch still mark its segment ends.
        for u in a_units[start:end]:
            if u.key is None:
                out.extend(u.tokens)
        next_unit = max(next_unit, end)
    emit_a_until(len(a_units))
    return out


def _term_words(words: Sequence[str], wanted: Sequence[str]) -> set[int]:
    """Indices of ``words`` inside an occurrence (or a near-miss) of a wanted term."""
    if not wanted:
        return set()
    covered: set[int] = set()
    for found in TermSpeller(list(wanted)).find(words):
        # Only the words themselves: the speller's match may take a comma along.
        covered.update(i for i in range(found.start, found.end) if any(map(str.isalnum, words[i])))
    return covered


@dataclass
class SeekPlan:
    """The state of a two-pass transcription, shared by all seeks of one recording.

    ``encode`` turns text into token ids (the model's tokenizer); ``budget`` caps the
    tokens the picked terms may take in pass 2's prompt.
    """

    retriever: Retriever
    terms: dict[str, ContextTerm]  # by text, for the user's weights
    encode: Callable[[str], list[int]]
    nbest: int = 5
    budget: int = PROMPT_BUDGET
    picks: list[ContextPick] = field(default_factory=list)
    used: dict[str, None] = field(default_factory=dict)  # terms picked so far, in order
    window: tuple[float, float] = (0.0, 0.0)  # the decoder window now decoded (seconds)

    def retrieve(self, hypotheses: Sequence[str]) -> Retrieval:
        return self.retriever.retrieve(Evidence(tuple(hypotheses)))

    def prompt(self, retrieval: Retrieval) -> Prompt:
        """Pass 2's prompt: the picked terms, best-scoring first, within the budget."""
        picked = [  # terms pass 1 spelled already need no prompting
            ContextTerm(e.term, self.terms[e.term].weight if e.term in self.terms else 1.0)
            for e in retrieval.selected
            if not e.in_text
        ]
        # build_prompt ranks by weight (stably), so equal weights keep the score order.
        return build_prompt(picked, self.encode, self.budget)

    def record(self, retrieval: Retrieval, heard: str, second_pass: bool) -> None:
        self.used.update(dict.fromkeys(e.term for e in retrieval.selected))
        self.picks.append(
            ContextPick(
                start=self.window[0],
                end=self.window[1],
                heard=heard,
                selected=retrieval.selected,
                rejected=retrieval.rejected,
                second_pass=second_pass,
                seconds=round(retrieval.seconds, 6),
            )
        )
