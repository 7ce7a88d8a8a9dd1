"""A document's language model: a token n-gram with interpolated modified Kneser-Ney.

Users hand over documents (slides, a paper, the book being read). Their terms go to the
retriever; this module keeps the rest of what the text knows -- how its sentences go,
which words follow which -- as a small language model over the decoder's own tokens,
which the decoder's search then fuses (``ctxasr.whisper.decoding.DomainFusion``).

Why written here, in NumPy, rather than taken from a library: KenLM's Python module only
queries models (building one needs its ``lmplz`` binary, which does not install from the
package registries), and NLTK's ``KneserNeyInterpolated`` scores one word at a time in
Python -- the search needs a whole next-token distribution per hypothesis per step.

Tokens are mapped to *classes* first, so that the model does not care about case or
punctuation: " The", " the" and " THE" are one class (" the"), and tokens that are only
punctuation or whitespace (",", " (") are *transparent*: they neither score nor move the
history. Slides in capitals, a lowercased transcript and Whisper's cased, punctuated
output then share one model. Special tokens (ids at or above ``first_special``) are
transparent too.

The smoothing is Chen and Goodman's interpolated modified Kneser-Ney (1998): three
discounts per order from the count-of-counts, continuation counts below the highest
order, and a uniform floor over every class of the vocabulary at the bottom, so a class
the document never uses keeps a small probability.

Shapes: V = the decoder's vocabulary, C = classes the document uses (class 0 stands for
all the others, each of which gets ``P(class 0) / unseen``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxasr.files import atomic_write
from ctxasr.results import DomainLM

TRANSPARENT = -1  # a token the model skips
UNSEEN = 0  # the class of every token the document never uses
BOS = 1  # the start of a sentence, in histories only
ORDER = 4  # tokens; Whisper's tokens are about 1.3 per English word
_KEEP = re.compile(r"[^\w' ]+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def token_key(text: str) -> str:
    """The class key of one token's text: lower case, punctuation dropped, the leading
    space (which marks a word's start in Whisper's tokens) kept; "" for a token that is
    only punctuation or whitespace."""
    key = _KEEP.sub("", text.lower())
    return key if key.strip(" '") else ""


class TokenClasses:
    """The map from a vocabulary's token ids to class keys, built once per tokenizer.

    ``keys[i]`` is token ``i``'s class key ("" when transparent); ids at or above
    ``first_special`` are transparent.
    """

    def __init__(self, keys: Sequence[str], first_special: int) -> None:
        self.keys = [k if i < first_special else "" for i, k in enumerate(keys)]
        self.first_special = first_special
        self.vocab = len({k for k in self.keys if k})  # classes of the whole vocabulary
        # Names the map in cache keys: a model stored for one tokenizer is not another's.
        self.fingerprint = hashlib.sha256("\n".join(self.keys).encode()).hexdigest()[:16]

    @classmethod
    def of_tokenizer(cls, tokenizer, first_special: int) -> TokenClasses:
        """From a ``tokenizers.Tokenizer``. A token that decodes to a broken UTF-8 byte
        (part of a multi-byte character) keeps its own raw spelling as its key."""
        keys = []
        for i in range(tokenizer.get_vocab_size()):
            text = tokenizer.decode([i]) if i < first_special else ""
            keys.append(
                token_key(text) if "\ufffd" not in text else (tokenizer.id_to_token(i) or "")
            )
        return cls(keys, first_special)


class NgramLM:
    """A class n-gram model of one document; query with :meth:`distribution`.

    Build with :func:`build_domain_lm`. Histories are tuples of class ids (at most
    ``order - 1``, most recent last); a sentence starts from :meth:`start`.
    """

    def __init__(self, order: int, classes: dict[str, int], token_class: np.ndarray,
                 tables: list[_Table],
                 unigram: np.ndarray, info: DomainLM, first_special: int) -> None:  # fmt: skip
        self.order = order
        self.first_special = first_special  # ids from here on are the decoder's specials
        self.classes = classes  # key -> class id (>= 2)
        self.token_class = token_class  # (V,) int32 class of each token, TRANSPARENT
        self.tables = tables  # per order k >= 2: history -> (followers, probs, backoff)
        self.unigram = unigram  # (C,) float64
        self.info = info
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def start(self) -> tuple[int, ...]:
        """The history at a sentence's start."""
        return (BOS,) * (self.order - 1)

    def class_of(self, token: int) -> int:
        """``token``'s class: UNSEEN, a class id, or TRANSPARENT (also for ids past the
        tokenizer's, which the model's vocabulary may have)."""
        return int(self.token_class[token]) if token < len(self.token_class) else TRANSPARENT

    def advance(self, history: tuple[int, ...], token: int) -> tuple[int, ...]:
        """The history after ``token`` (unchanged for a transparent token)."""
        c = self.class_of(token)
        if c == TRANSPARENT:
            return history
        return (*history, c)[-(self.order - 1) :] if self.order > 1 else ()

    def class_probs(self, history: tuple[int, ...]) -> np.ndarray:
        """P(class | history), (C,) float64; entry UNSEEN is one unseen class's share."""
        history = history[-(self.order - 1) :] if self.order > 1 else ()
        found = self._cache.get(history)
        if found is not None:
            return found
        probs = self.unigram
        for k in range(1, len(history) + 1):  # lower orders first: interpolate upwards
            entry = self.tables[k + 1].get(history[-k:])
            if entry is None:
                break
            followers, discounted, backoff = entry
            probs = probs * backoff
            probs[followers] += discounted
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[history] = probs
        return probs

    def distribution(self, history: tuple[int, ...]) -> np.ndarray:
        """P(token | history) per token id, (V,) float64; transparent tokens get 1.0
        (the model does not score them)."""
        probs = self.class_probs(history)
        out = probs[np.maximum(self.token_class, 0)]
        out[self.token_class == TRANSPARENT] = 1.0
        return out

    def logprob(self, history: tuple[int, ...], token: int) -> float:
        """ln P(token | history); 0.0 for a transparent token."""
        c = self.class_of(token)
        if c == TRANSPARENT:
            return 0.0
        return math.log(self.class_probs(history)[max(c, 0)])

    def score(self, tokens: Iterable[int]) -> float:
        """ln P of a token sequence from a sentence start (transparent tokens skipped)."""
        history, total = self.start(), 0.0
        for t in tokens:
            total += self.logprob(history, t)
            history = self.advance(history, t)
        return total


@dataclass(frozen=True)
class DomainScorer:
    """What a document's model adds to a decoder token's log-probability.

    A text token ``v`` earns ``lm_weight * ln P_dom(v) - ilm_weight * ln P_ilm(v)``.
    ``P_ilm`` is the decoder's internal language model: its next-token distribution
    with the audio taken away (a zero encoder output, as in HAED and in Meng et al.'s
    internal LM estimation), so that the document's model replaces the built-in one
    instead of doubling it. ``P_dom = mix * P_doc + (1 - mix) * P_ilm``: a document of a
    few thousand words knows only its own words, and alone would cost every other word
    ``lm_weight`` times about 11 nats (its floor); mixed, a word the document never
    uses costs at most ``lm_weight * -ln(1 - mix)`` more than under the decoder's own
    estimate, while the document's words gain where the document predicts them better
    than the decoder does. Transparent and special tokens earn nothing.
    """

    lm: NgramLM
    lm_weight: float
    ilm_weight: float
    mix: float = 0.5

    def __post_init__(self) -> None:
        for name, value in (("lm_weight", self.lm_weight), ("ilm_weight", self.ilm_weight)):
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 < self.mix <= 1:
            raise ValueError(f"mix must be in (0, 1], got {self.mix}")

    def score(self, tokens: Sequence[int], ilm_logprobs: Sequence[float]) -> float:
        """The summed addition for one token sequence from a sentence start, given
        each token's internal-model log-probability (n-best rescoring)."""
        lm, state, total = self.lm, self.lm.start(), 0.0
        for token, ilm in zip(tokens, ilm_logprobs, strict=True):
            if lm.class_of(token) != TRANSPARENT:
                doc = math.exp(lm.logprob(state, token))
                mixed = math.log(self.mix * doc + (1 - self.mix) * math.exp(ilm))
                total += self.lm_weight * mixed - self.ilm_weight * ilm
                state = lm.advance(state, token)
        return total


def save_lm(lm: NgramLM, path: str | os.PathLike[str]) -> None:
    """Store ``lm`` as one ``.npz`` (written to a temporary name, then renamed)."""
    meta = {"order": lm.order, "first_special": lm.first_special,
            "info": dataclasses.asdict(lm.info)}  # fmt: skip
    arrays: dict[str, np.ndarray] = {
        "keys": np.array(sorted(lm.classes, key=lm.classes.__getitem__), dtype=str),
        "unigram": lm.unigram,
        "meta": np.array(json.dumps(meta)),
    }
    for k in range(2, lm.order + 1):
        table = lm.tables[k]
        histories = sorted(table.index, key=table.index.__getitem__)
        arrays[f"h{k}"] = np.array(histories, dtype=np.int64).reshape(len(histories), k - 1)
        arrays[f"b{k}"] = np.asarray(table.bounds, dtype=np.int64)
        arrays[f"i{k}"], arrays[f"p{k}"] = table.ids, table.probs
        arrays[f"w{k}"] = np.asarray(table.backoff, dtype=np.float64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as f:
        np.savez(f, **arrays)


def load_lm(path: str | os.PathLike[str], token_classes: TokenClasses) -> NgramLM:
    """The model :func:`save_lm` stored. Raises ``OSError``, ``KeyError`` or
    ``ValueError`` for a file that is missing, partial or of another format."""
    try:
        return _load_lm(path, token_classes)
    except zipfile.BadZipFile as err:  # a partial write: not an OSError
        raise ValueError(f"{path}: {err}") from None


def _load_lm(path: str | os.PathLike[str], token_classes: TokenClasses) -> NgramLM:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        order = int(meta["order"])
        classes = {str(k): i + 2 for i, k in enumerate(data["keys"].tolist())}
        tables = [_Table.empty(), _Table.empty()]
        for k in range(2, order + 1):
            index = {tuple(h): i for i, h in enumerate(data[f"h{k}"].tolist())}
            tables.append(_Table(index, data[f"b{k}"].tolist(), data[f"i{k}"], data[f"p{k}"],
                                 data[f"w{k}"].tolist()))  # fmt: skip
        unigram = data["unigram"]
    token_class = _token_class(token_classes.keys, classes)
    info = DomainLM(**meta["info"])
    return NgramLM(order, classes, token_class, tables, unigram, info, int(meta["first_special"]))


def _token_class(keys: Sequence[str], classes: dict[str, int]) -> np.ndarray:
    return np.array([classes.get(k, UNSEEN) if k else TRANSPARENT for k in keys], dtype=np.int32)


def sentences_of(text: str) -> list[str]:
    """The document's sentences: split at line breaks and sentence punctuation."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def build_domain_lm(text: str, encode: Callable[[list[str]], list[list[int]]],
                    token_classes: TokenClasses, order: int = ORDER) -> NgramLM:  # fmt: skip
    """The n-gram model of ``text`` over the decoder's tokens.

    ``encode`` tokenises a batch of strings (no special tokens). Each sentence is
    lowercased and given a leading space, as a decoded sentence starts, so that its
    tokens are the ones the decoder writes (case aside). Raises ``ValueError`` for a
    text with no word.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    start = time.perf_counter()
    sentences = sentences_of(text)
    keys = token_classes.keys
    classes: dict[str, int] = {}
    streams = []
    for ids in encode([" " + s.lower() for s in sentences]):
        stream = []
        for t in ids:
            key = keys[t] if t < len(keys) else ""
            if key:
                stream.append(classes.setdefault(key, len(classes) + 2))
        if stream:
            streams.append(stream)
    if not streams:
        raise ValueError("the text has no word to build a language model from")
    counts = _count(streams, order)
    tables, unigram = _kneser_ney(counts, len(classes) + 2, max(token_classes.vocab, 1), order)
    token_class = _token_class(keys, classes)
    info = DomainLM(
        words=len(text.split()),
        tokens=sum(len(s) for s in streams),
        order=order,
        ngrams=sum(len(c) for c in counts),
        classes=len(classes),
        seconds=round(time.perf_counter() - start, 3),
        sha256=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        lm_weight=0.0,
        ilm_weight=0.0,
    )
    return NgramLM(order, classes, token_class, tables, unigram, info,
                   token_classes.first_special)  # fmt: skip


def _count(streams: list[list[int]], order: int) -> list[Counter]:
    """Counts per order (index k - 1 holds k-grams): raw counts at the highest order,
    continuation counts (distinct left neighbours) below it, as Kneser-Ney wants.
    Every sentence starts with BOS, which is history only, never predicted."""
    top: Counter = Counter()
    for s in streams:
        padded = [BOS] * (order - 1) + s
        for i in range(order - 1, len(padded)):
            top[tuple(padded[i - order + 1 : i + 1])] += 1
    counts = [Counter() for _ in range(order)]
    counts[order - 1] = top
    for k in range(order - 1, 0, -1):  # continuation counts of (k)-grams from (k+1)-grams
        lower = counts[k - 1]
        for gram in counts[k]:
            lower[gram[1:]] += 1
    return counts


def _discounts(counts: Counter) -> tuple[float, float, float]:
    """Chen and Goodman's D1, D2, D3+ from the count-of-counts; fallbacks for texts too
    small to have every count-of-count."""
    n = Counter(counts.values())  # n[k]: n-grams seen exactly k times
    n1, n2, n3, n4 = n[1], n[2], n[3], n[4]
    if not (n1 and n2 and n3 and n4):
        return 0.5, 1.0, 1.5
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(max(x, 0.05), i + 1.0) for i, x in enumerate(d))  # type: ignore[return-value]


class _Table:
    """One order's n-grams grouped by history, in flat arrays: history -> (follower
    classes, their discounted probabilities, the history's backoff weight)."""

    def __init__(self, index: dict[tuple[int, ...], int], bounds: list[int], ids: np.ndarray,
                 probs: np.ndarray, backoff: list[float]) -> None:  # fmt: skip
        self.index, self.bounds, self.ids, self.probs = index, bounds, ids, probs
        self.backoff = backoff

    @classmethod
    def empty(cls) -> _Table:
        return cls({}, [0], np.zeros(0, np.int64), np.zeros(0), [])

    @classmethod
    def of(cls, counts: Counter, d: tuple[float, float, float]) -> _Table:
        grams = sorted(counts)  # grouped by history, as a history is a gram's prefix
        n = np.fromiter((counts[g] for g in grams), dtype=np.float64, count=len(grams))
        ids = np.fromiter((g[-1] for g in grams), dtype=np.int64, count=len(grams))
        index: dict[tuple[int, ...], int] = {}
        bounds = []
        for i, g in enumerate(grams):
            h = g[:-1]
            if h not in index:
                index[h] = len(bounds)
                bounds.append(i)
        bounds.append(len(grams))
        disc = np.asarray(d)[np.minimum(n, 3).astype(np.int64) - 1]
        starts = np.asarray(bounds[:-1])
        totals = np.add.reduceat(n, starts)
        freed = np.add.reduceat(disc, starts)  # D1 N1 + D2 N2 + D3 N3+ of each history
        sizes = np.diff(np.asarray(bounds))
        probs = np.maximum(n - disc, 0.0) / np.repeat(totals, sizes)
        return cls(index, bounds, ids, probs, (freed / totals).tolist())

    def get(self, history: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float] | None:
        i = self.index.get(history)
        if i is None:
            return None
        a, b = self.bounds[i], self.bounds[i + 1]
        return self.ids[a:b], self.probs[a:b], self.backoff[i]

    def __len__(self) -> int:
        return len(self.index)


def _kneser_ney(counts: list[Counter], size: int, vocab: int, order: int):
    """Per order k >= 2, history -> (follower classes, discounted probabilities, backoff
    weight); and the interpolated unigram over ``size`` classes with a uniform floor."""
    d1 = _discounts(counts[0])
    total = sum(counts[0].values())
    unigram = np.zeros(size, dtype=np.float64)
    for (c,), n in counts[0].items():
        unigram[c] = max(n - d1[min(n, 3) - 1], 0.0) / total
    # What the discounts freed spreads uniformly over the whole vocabulary's classes.
    floor = (1.0 - unigram.sum()) / vocab
    unigram += floor
    unigram[UNSEEN] = floor
    unigram[BOS] = 0.0
    tables: list[_Table] = [_Table.empty(), _Table.empty()]  # orders 0, 1: no history
    for k in range(2, order + 1):
        tables.append(_Table.of(counts[k - 1], _discounts(counts[k - 1])))
    return tables, unigram
