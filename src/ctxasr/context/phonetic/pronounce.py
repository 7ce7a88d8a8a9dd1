"""``Pronouncer``: words and terms to phone ids, combining the lexicon, numbers and g2p2.

Each piece of a word (``split_words`` output) is pronounced by the first source that
knows it: a number's readings, CMUdict and its rules, pieces of a camel-case word, and
only then g2p2, asked once per batch (shared among helper processes for a large one).
"""

from __future__ import annotations

import functools
import heapq
import re
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ctxasr.context.phonetic.g2p import idle_cpus as _idle_cpus
from ctxasr.context.phonetic.g2p import ipa_to_phones
from ctxasr.context.phonetic.g2p import load_g2p2 as _load_g2p2
from ctxasr.context.phonetic.lexicon import MAX_WORD_VARIANTS
from ctxasr.context.phonetic.lexicon import cmudict as _cmudict
from ctxasr.context.phonetic.lexicon import distinct as _distinct
from ctxasr.context.phonetic.lexicon import fold as _fold
from ctxasr.context.phonetic.lexicon import is_acronym as _is_acronym
from ctxasr.context.phonetic.lexicon import known as _known
from ctxasr.context.phonetic.lexicon import s_ending as _s_ending
from ctxasr.context.phonetic.lexicon import spelled as _spelled
from ctxasr.context.phonetic.numbers import number_readings as _number_readings
from ctxasr.context.phonetic.phones import Phones, Pron
from ctxasr.context.phonetic.phones import phone_ids as _ids
from ctxasr.context.phonetic.text import WORD_EDGES as _EDGES
from ctxasr.context.phonetic.text import split_words

G2P_CACHE_SIZE = 300_000  # words; the g2p results kept between calls (a 209k-word pool fits)
G2P_WORDS_PER_PROCESS = 1_000  # fewest words worth starting a helper process for (~0.3 s)
G2P_MAX_PROCESSES = 8
G2P_HELPER_TIMEOUT = 600  # seconds

# g2p2 as a separate process: its Rust model holds the GIL, so a large batch goes faster
# shared among processes. Only g2p2 is imported there, never the caller's __main__.
_G2P_WORKER = (
    "import sys; from g2p2 import Model; m = Model.load(sys.argv[1]); "
    "w = sys.stdin.buffer.read().decode('utf-8').split('\\n'); "
    "sys.stdout.buffer.write('\\n'.join(m.phonemize_many(w)).encode('utf-8'))"
)

G2P = Callable[[str], Phones]


def _best_combinations(options: Sequence[Sequence[Phones]], limit: int) -> list[tuple[Phones, ...]]:
    """Up to ``limit`` picks of one option per slot, by increasing sum of option ranks."""
    if limit < 1 or not options or not all(options):
        return []
    start = (0,) * len(options)
    heap, seen, picks = [(0, start)], {start}, []
    while heap and len(picks) < limit:
        cost, ranks = heapq.heappop(heap)
        picks.append(tuple(slot[r] for slot, r in zip(options, ranks)))
        for s, slot in enumerate(options):
            if ranks[s] + 1 < len(slot):
                following = ranks[:s] + (ranks[s] + 1,) + ranks[s + 1 :]
                if following not in seen:
                    seen.add(following)
                    heapq.heappush(heap, (cost + 1, following))
    return picks


def _concatenated(parts: Sequence[Sequence[Phones]]) -> tuple[Phones, ...]:
    """Variants of a word made of parts said one after another ("GPT4", "mRNA")."""
    parts = [p for p in parts if p]
    picks = _best_combinations(parts, 4 * MAX_WORD_VARIANTS)
    return _distinct(tuple(p for part in pick for p in part) for pick in picks)


_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z']+|[A-Z]+")


_UNLISTED_NUMBER_WORDS = {"zeroth": _ids("Z IH R OW TH"), "trillionth": _ids("T R IH L Y AH N TH")}


def _number_word(word: str) -> Phones:
    entry = _cmudict().get(word) or (_UNLISTED_NUMBER_WORDS.get(word),)
    assert entry[0], f"no pronunciation of the number word {word!r}"
    return entry[0]


def _piece(word: str, g2p: G2P) -> tuple[Phones, ...]:
    """Variants of one piece of split_words output (letters or one number)."""
    if word[0].isdecimal():
        return _distinct(
            tuple(p for w in reading for p in _number_word(w)) for reading in _number_readings(word)
        )
    key = _fold(word)
    known = _known(key)
    if known:
        return _distinct([*known, _spelled(key)] if _is_acronym(word) else known)
    if key.endswith("'s") and len(key) > 2:  # possessive of a word only g2p knows
        return _distinct(p + _s_ending(p) for p in _piece(word[:-2], g2p))
    spoken = key.replace("'", "")
    if _is_acronym(word):
        says_word = len(key) >= 3 and any(c in "aeiouy" for c in key)
        variants = [_spelled(key), g2p(spoken) if says_word else ()]
    elif any(c.isupper() for c in word[1:]) and any(c.islower() for c in word) and word.isascii():
        # camel case ("GitLab", "mRNA", "PyTorch"): its pieces said in turn, and g2p's
        # guess at the whole, which goes first if a piece needs g2p anyway ("Py")
        pieces = _CAMEL.findall(word)
        letters = [len(p) == 1 or _is_acronym(p) for p in pieces]
        said = _concatenated(
            [
                (_spelled(p.lower()),) if spell else _piece(p, g2p)
                for p, spell in zip(pieces, letters)
            ]
        )
        if all(spell or _known(_fold(p)) for p, spell in zip(pieces, letters)):
            variants = [*said, g2p(spoken)]
        else:
            variants = [g2p(spoken), *said]
    else:
        variants = [g2p(spoken)]
    return _distinct(variants) or _distinct([_spelled(key)])


def _no_g2p(_word: str) -> Phones:
    return ()


class Pronouncer:
    """Word and term pronunciations: CMUdict first, g2p2 for the rest. Thread-safe for reads.

    ``g2p=False`` pronounces words CMUdict and its rules do not cover by their letter
    names (for tests, or where g2p2's guesses are unwanted). ``g2p_processes``: how many
    processes share a large batch of words for g2p2 (about 0.5 ms a word in one
    process); None uses the CPUs idle at the time, at most 8; 1 only this process.
    """

    def __init__(self, *, g2p: bool = True, g2p_processes: int | None = None) -> None:
        if g2p_processes is not None and g2p_processes < 1:
            raise ValueError(f"g2p_processes must be at least 1, got {g2p_processes}")
        self._use_g2p = g2p
        self._processes = g2p_processes
        self._cache: OrderedDict[str, Phones] = OrderedDict()  # g2p results, LRU
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._model = None
        self._model_path = ""

    def word(self, word: str) -> tuple[Phones, ...]:
        """Pronunciation variants of one word, at most 3, likeliest first.

        Case-insensitive; surrounding punctuation is ignored. A word of several pieces
        ("GPT-4") is said piece after piece unless CMUdict lists it whole ("x-ray").
        Empty only for a word with no letter or digit (or only letters outside the Latin
        script that g2p2 cannot read).
        """
        pieces = split_words(word)
        if len(pieces) != 1:
            whole = _cmudict().get(_fold(_EDGES.sub("", word)))
            if whole:
                return whole[:MAX_WORD_VARIANTS]
        said = self._pronounce(pieces)
        return _concatenated([said[p] for p in pieces])

    def words(self, words: Sequence[str]) -> list[Phones]:
        """The preferred pronunciation of each word: ``word(w)[0]``, or () if it has none.

        Words CMUdict lists are looked up directly; all the others go to g2p2 in one batch.
        """
        entries = _cmudict()
        out: list[Phones] = []
        pending: dict[int, list[str]] = {}
        for i, word in enumerate(words):
            entry = entries.get(_fold(_EDGES.sub("", word)))
            out.append(entry[0] if entry else ())
            if not entry:
                pending[i] = split_words(word)
        if pending:
            said = self._pronounce(p for pieces in pending.values() for p in pieces)
            for i, pieces in pending.items():
                variants = _concatenated([said[p] for p in pieces])
                out[i] = variants[0] if variants else ()
        return out

    def term(self, text: str, max_variants: int = 4) -> tuple[Pron, ...]:
        """Pronunciations of a context term (one word or several), likeliest first.

        Each pronunciation keeps the term's word boundaries; words with nothing to say
        are left out. () if nothing in ``text`` is pronounceable.
        """
        return self.terms([text], max_variants)[0]

    def terms(self, texts: Sequence[str], max_variants: int = 4) -> list[tuple[Pron, ...]]:
        """``term`` for many texts; words no rule covers go to g2p2 in one batch."""
        if max_variants < 1:
            raise ValueError(f"max_variants must be at least 1, got {max_variants}")
        split = [split_words(text) for text in texts]
        said = self._pronounce(w for words in split for w in words)
        return [
            tuple(_best_combinations([said[w] for w in words if said[w]], max_variants))
            for words in split
        ]

    def _pronounce(self, pieces: Iterable[str]) -> dict[str, tuple[Phones, ...]]:
        """Variants of each distinct piece (split_words output), g2p2 called once for all."""
        distinct = dict.fromkeys(pieces)
        if not self._use_g2p:
            return {p: _piece(p, _no_g2p) for p in distinct}
        asked: list[str] = []
        said: dict[str, tuple[Phones, ...]] = {}
        waiting: list[str] = []
        for piece in distinct:  # a dry run: which words will g2p2 be asked about?
            before = len(asked)
            variants = _piece(piece, lambda spoken: asked.append(spoken) or ())
            if len(asked) == before:
                said[piece] = variants  # needed no g2p: final already
            else:
                waiting.append(piece)
        fresh = self._g2p_batch([w for w in dict.fromkeys(asked) if w not in self._cache])
        g2p = functools.partial(self._g2p_one, fresh)
        said.update((p, _piece(p, g2p)) for p in waiting)
        return said

    def _g2p_one(self, fresh: dict[str, Phones], spoken: str) -> Phones:
        if spoken in fresh:
            return fresh[spoken]
        with self._cache_lock:
            if spoken in self._cache:
                self._cache.move_to_end(spoken)
                return self._cache[spoken]
        return self._g2p_batch([spoken])[spoken]  # evicted by another thread meanwhile

    def _g2p_batch(self, spoken: list[str]) -> dict[str, Phones]:
        if not spoken:
            return {}
        with self._model_lock:
            if self._model is None:
                self._model, self._model_path = _load_g2p2()
            ipa = self._phonemize(spoken)
        fresh = {w: ipa_to_phones(s) for w, s in zip(spoken, ipa)}
        with self._cache_lock:
            self._cache.update(fresh)
            while len(self._cache) > G2P_CACHE_SIZE:
                self._cache.popitem(last=False)
        return fresh

    def _phonemize(self, words: list[str]) -> list[str]:
        """g2p2's IPA for each word; a large batch is shared with helper processes.

        The model holds the GIL while it works, so helpers get their words and give back
        their answers through files, needing nothing from this process in between.
        """
        processes = self._processes or min(_idle_cpus(), G2P_MAX_PROCESSES)
        shares = min(processes, len(words) // G2P_WORDS_PER_PROCESS)
        if shares < 2 or not sys.executable or not self._model_path:
            return self._model.phonemize_many(words)
        chunks = [words[i::shares] for i in range(shares)]  # chunk 0 is done here
        ipa = [""] * len(words)
        with tempfile.TemporaryDirectory(prefix="ctxasr-g2p-") as tmp:
            paths = [Path(tmp) / str(i) for i in range(shares)]
            helpers = [self._start_helper(paths[i], chunks[i]) for i in range(1, shares)]
            try:
                ipa[0::shares] = self._model.phonemize_many(chunks[0])  # while helpers work
                for i, helper in enumerate(helpers, start=1):
                    done = self._helper_output(helper, paths[i], len(chunks[i]))
                    ipa[i::shares] = done or self._model.phonemize_many(chunks[i])
            finally:
                for helper in helpers:
                    if helper is not None and helper.poll() is None:
                        helper.kill()
                        helper.wait()
        return ipa

    def _start_helper(self, path: Path, words: list[str]) -> subprocess.Popen | None:
        try:
            path.with_suffix(".in").write_bytes("\n".join(words).encode("utf-8"))
            with (
                path.with_suffix(".in").open("rb") as given,
                path.with_suffix(".out").open("wb") as answer,
            ):
                return subprocess.Popen(
                    [sys.executable, "-c", _G2P_WORKER, self._model_path],
                    stdin=given,
                    stdout=answer,
                    stderr=subprocess.DEVNULL,
                )
        except OSError:
            return None

    @staticmethod
    def _helper_output(helper: subprocess.Popen | None, path: Path, count: int) -> list[str] | None:
        """A helper's answers, or None if it failed (the caller does its share then)."""
        if helper is None:
            return None
        try:
            failed = helper.wait(timeout=G2P_HELPER_TIMEOUT) != 0
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
            failed = True
        if failed:
            return None
        try:
            ipa = path.with_suffix(".out").read_bytes().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            return None
        return ipa if len(ipa) == count else None
