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

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

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


# Log-probabilities (nats) of text-token sequences (no special tokens) under a
# prompt-free forced decode of one stretch's encoder output.
SequenceScorer = Callable[[Sequence[Sequence[int]]], list[float]]


@dataclass(frozen=True)
class Change:
    """One stretch where pass 2 brought a wanted term in, and what became of it."""

    first: str  # pass 1's words there ("" where pass 2 inserted words)
    second: str  # pass 2's words
    terms: tuple[str, ...]  # the wanted terms among pass 2's words
    delta: float | None  # log P(with the change) - log P(pass 1), nats; None: not verified
    accepted: bool


@dataclass(frozen=True)
class Merged:
    tokens: list[int]
    changes: tuple[Change, ...]


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
    return merge_verified(first, second, tokenizer, wanted).tokens


def merge_verified(
    first: Sequence[int],
    second: Sequence[int],
    tokenizer: WordTokenizer,
    wanted: Sequence[str],
    score: SequenceScorer | None = None,
    margin: float = 0.0,
) -> Merged:
    """``merge_passes``, each change checked by the decoder itself when ``score`` is given.

    A prompt puts words in the decoder's mouth: with a distractor in it, pass 2 may
    write the distractor over what was said. So each change is scored as pass 1's text
    with only that change made, against pass 1's text as it is, by the same prompt-free
    forced decode of the same audio; the change is kept when it costs at most
    ``margin`` nats. A term that was really said is usually *more* likely than pass
    1's mishearing once the decoder is made to consider it; a distractor is much less.
    """
    a_units, b_units = _units(first, tokenizer), _units(second, tokenizer)
    a_words = [i for i, u in enumerate(a_units) if u.key is not None]
    b_words = [i for i, u in enumerate(b_units) if u.key is not None]
    b_texts = [b_units[i].text for i in b_words]
    covered = _term_words(b_texts, wanted)
    matcher = difflib.SequenceMatcher(
        a=[a_units[i].key for i in a_words], b=[b_units[i].key for i in b_words], autojunk=False
    )
    ops: list[tuple[int, int, int, int, int]] = []  # (pass-1 unit start, i1, i2, j1, j2)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        touched = range(max(j1 - 1, 0), j2 + 1) if j1 == j2 else range(j1, j2)
        if not any(j in covered for j in touched):
            continue
        if i1 < len(a_words):
            start = a_words[i1]
        else:  # after pass 1's last word, before its closing timestamp
            start = a_words[-1] + 1 if a_words else 0
        ops.append((start, i1, i2, j1, j2))

    def build(chosen: Sequence[tuple[int, int, int, int, int]]) -> list[int]:
        out: list[int] = []
        next_unit = 0  # the first pass-1 unit not yet written
        for start, i1, i2, j1, j2 in chosen:
            for u in a_units[next_unit:start]:
                out.extend(u.tokens)
            next_unit = max(next_unit, start)
            for j in range(j1, j2):
                out.extend(b_units[b_words[j]].tokens)
            end = a_words[i2 - 1] + 1 if i2 > i1 else start
            # Pass 1's timestamps inside the replaced stretch still mark its segment ends.
            for u in a_units[start:end]:
                if u.key is None:
                    out.extend(u.tokens)
            next_unit = max(next_unit, end)
        for u in a_units[next_unit:]:
            out.extend(u.tokens)
        return out

    deltas: list[float | None] = [None] * len(ops)
    if score is not None and ops:
        text = [
            [t for t in build(chosen) if t < tokenizer.eot]
            for chosen in ([], *([op] for op in ops))
        ]
        logprobs = score(text)
        deltas = [lp - logprobs[0] for lp in logprobs[1:]]
    accepted = [d is None or d >= -margin for d in deltas]
    changes = tuple(
        Change(
            first=" ".join(a_units[a_words[i]].text.strip() for i in range(i1, i2)),
            second=" ".join(b_texts[j].strip() for j in range(j1, j2)),
            terms=_terms_in(b_texts[max(j1 - 1, 0) : j2 + 1], wanted),
            delta=None if d is None else round(d, 4),
            accepted=ok,
        )
        for (_, i1, i2, j1, j2), d, ok in zip(ops, deltas, accepted)
    )
    return Merged(build([op for op, ok in zip(ops, accepted) if ok]), changes)


def _term_words(words: Sequence[str], wanted: Sequence[str]) -> set[int]:
    """Indices of ``words`` inside an occurrence (or a near-miss) of a wanted term."""
    if not wanted:
        return set()
    covered: set[int] = set()
    for found in TermSpeller(list(wanted)).find(words):
        # Only the words themselves: the speller's match may take a comma along.
        covered.update(i for i in range(found.start, found.end) if any(map(str.isalnum, words[i])))
    return covered


def _terms_in(words: Sequence[str], wanted: Sequence[str]) -> tuple[str, ...]:
    """The wanted terms that ``words`` spell (or nearly: the speller's near-misses)."""
    if not wanted:
        return ()
    keys = {letters(t): t for t in wanted}
    found = TermSpeller(list(wanted)).find(words)
    return tuple(dict.fromkeys(keys[k] for f in found if (k := letters(f.text)) in keys))


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
    # Decoder verification of pass 2's changes (see ``merge_verified``); None: off.
    verify_margin: float | None = None

    def retrieve(self, hypotheses: Sequence[str], frames: np.ndarray | None = None) -> Retrieval:
        return self.retriever.retrieve(Evidence(tuple(hypotheses), frames))

    def prompt(self, retrieval: Retrieval) -> Prompt:
        """Pass 2's prompt: the picked terms, best-scoring first, within the budget."""
        picked = [  # terms pass 1 spelled already need no prompting
            ContextTerm(e.term, self.terms[e.term].weight if e.term in self.terms else 1.0)
            for e in retrieval.selected
            if not e.in_text
        ]
        # build_prompt ranks by weight (stably), so equal weights keep the score order.
        return build_prompt(picked, self.encode, self.budget)

    def verified(self, changes: Sequence[Change]) -> None:
        """Note, in the last stretch's picks, how the decoder judged each term's change."""
        deltas: dict[str, float] = {}
        for c in changes:
            for term in c.terms:
                if c.delta is not None:  # a term changed in several places: its best
                    deltas[term] = max(deltas.get(term, c.delta), c.delta)
        if not deltas or not self.picks:
            return
        last = self.picks[-1]
        selected = tuple(
            dataclasses.replace(e, verify=deltas[e.term]) if e.term in deltas else e
            for e in last.selected
        )
        self.picks[-1] = dataclasses.replace(last, selected=selected)

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


@dataclass(frozen=True)
class FirstPass:
    """What pass 1 made of one stretch."""

    sequences: list[list[int]]  # n-best token sequences, best first
    texts: list[str]  # their texts (no special tokens), stripped
    silent: bool  # the decoder will drop the stretch as silence: nothing to retrieve


class SeekDecoder(Protocol):
    """What a two-pass seek needs from the model, bound to one stretch's encoder output.

    ``ctxasr.whisper.faster`` implements it over faster-whisper (CTranslate2 or ctxasr's
    torch backend); a test implements it with canned answers.
    """

    tokenizer: WordTokenizer

    def first_pass(self, nbest: int) -> FirstPass:
        """Decode without context, keeping ``nbest`` hypotheses."""
        ...

    def frames(self) -> np.ndarray | None:
        """The stretch's encoder frames (T, D), for retrievers that listen."""
        ...

    def second_pass(self, context: Prompt, terms: Sequence[ContextTerm]) -> list[int]:
        """Decode again with ``context`` in the prompt (``terms``: the terms wanted in the
        text, for fusion); the best hypothesis' tokens."""
        ...

    def score(self, texts: Sequence[Sequence[int]]) -> list[float]:
        """log P(text | audio) of each text-token sequence, prompt-free (nats)."""
        ...


class TwoPassSeek:
    """One stretch decoded in two passes, one named step each:
    ``hear`` (pass 1), ``pick`` (retrieval), ``redecode`` (pass 2), ``merge``.

    ``run()`` gives the merged tokens, or None when pass 1 stands as it is (silence, or
    nothing picked that pass 1 lacks). The plan records every stretch's picks.
    """

    def __init__(self, plan: SeekPlan, decoder: SeekDecoder) -> None:
        self.plan = plan
        self.decoder = decoder

    def run(self) -> list[int] | None:
        first = self.hear()
        if first.silent:
            return None
        retrieval = self.pick(first)
        if not retrieval.needs_second_pass:
            return None
        wanted = [e.term for e in retrieval.selected if not e.in_text]
        second = self.redecode(retrieval, wanted)
        return self.merge(first, second, wanted)

    def hear(self) -> FirstPass:
        """Pass 1: the stretch without context, n-best."""
        return self.decoder.first_pass(self.plan.nbest)

    def pick(self, first: FirstPass) -> Retrieval:
        """The retriever's picks from what pass 1 heard (and the frames, if it listens)."""
        frames = self.decoder.frames() if getattr(self.plan.retriever, "listens", False) else None
        retrieval = self.plan.retrieve(first.texts, frames)
        heard = first.texts[0] if first.texts else ""
        self.plan.record(retrieval, heard, retrieval.needs_second_pass)
        return retrieval

    def redecode(self, retrieval: Retrieval, wanted: Sequence[str]) -> list[int]:
        """Pass 2: the same stretch with the picked terms pass 1 lacks in the prompt."""
        terms = [self.plan.terms.get(t, ContextTerm(t)) for t in wanted]
        return self.decoder.second_pass(self.plan.prompt(retrieval), terms)

    def merge(self, first: FirstPass, second: list[int], wanted: Sequence[str]) -> list[int]:
        """Pass 1 with pass 2's words where they bring a wanted term, each such change
        verified by the decoder when the plan asks for it."""
        margin = self.plan.verify_margin
        score = self.decoder.score if margin is not None else None
        merged = merge_verified(first.sequences[0], second, self.decoder.tokenizer, wanted,
                                score, margin or 0.0)  # fmt: skip
        self.plan.verified(merged.changes)
        return merged.tokens
