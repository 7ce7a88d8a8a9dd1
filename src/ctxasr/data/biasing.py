"""Biasing lists of any size N for the LibriSpeech contextual-biasing benchmark.

The benchmark of Le et al., "Contextualized Streaming End-to-End Speech Recognition
with Trie-Based Deep Biasing and Shallow Fusion" (Interspeech 2021), gives every test
utterance a *biasing list*: the utterance's own rare words plus N distractors drawn from
a pool of rare words (``all_rare_words.txt``, every LibriSpeech training word outside the
5,000 most frequent). Only the N = 100 lists were published; this module draws lists of
any size the same way:

* each list is the utterance's rare words plus exactly N distractors drawn uniformly
  without replacement from the pool minus those rare words. (The published N = 100
  files drew from the whole pool, so 87 of their 5,559 lists have 98 or 99 distractors
  where a draw hit one of the utterance's own rare words.)
* each utterance draws from its own generator, ``random.Random(f"{seed}:{utt_id}")``,
  over the pool in sorted order: a list depends only on the seed, the utterance id,
  its rare words, N and the *set* of pool words -- not on the other utterances, the
  order of the reference file, or the order of the pool file.
* the list is sorted, as in the published files, so a word's position says nothing
  about whether it is a rare word (``shuffle=True`` shuffles it with the same generator
  instead).

Output files have the published format byte for byte: ``id TAB text TAB JSON rare
words TAB JSON biasing list``, lists written by ``json.dumps`` with its defaults
(``", "`` separators, ASCII escapes), rare words sorted. The format's reader and
writer are :mod:`ctxasr.eval.tsv`'s (:func:`format_ref_line` is re-exported here).

Size: a list costs about 12 bytes a word, so N = 100,000 on test-clean (2,620
utterances, 262 million words) writes a 3.1 GB file in about 6 minutes (measured:
3,085,010,550 bytes, 5 min 42 s, 124 MB peak memory); lists are generated and written
one utterance at a time, so memory stays at one list.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ctxasr.errors import CtxasrError
from ctxasr.eval.tsv import format_ref_line, read_refs
from ctxasr.files import atomic_write, check_input_file, check_output_file

MAX_DISTRACTORS = 100_000  # words: the largest N accepted
PUBLISHED_SIZES = (100, 500, 1000, 2000)  # the N of Le et al. 2021

# An utterance id -> (reference text, rare words) mapping, e.g. ctxasr.eval.read_refs's.
RefTable = Mapping[str, tuple[str, Collection[str]]]


# --- one list ------------------------------------------------------------------------


class WordPool:
    """The distractor pool, canonicalised: distinct words in sorted order.

    Sorting makes every draw independent of the order of the pool file.
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.words: tuple[str, ...] = tuple(sorted(set(words)))
        self._members = frozenset(self.words)

    def __len__(self) -> int:
        return len(self.words)

    def count_in(self, words: Collection[str]) -> int:
        """How many of ``words`` are in the pool."""
        return sum(1 for w in words if w in self._members)


def _check_size(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_DISTRACTORS:
        raise CtxasrError(
            "biasing list size",
            f"N must be a whole number from 0 to {MAX_DISTRACTORS:,}, got {n!r}",
        )


def biasing_list(
    utt_id: str,
    rare_words: Collection[str],
    pool: WordPool,
    n: int,
    seed: int,
    *,
    shuffle: bool = False,
) -> list[str]:
    """One utterance's biasing list: its rare words plus ``n`` distractors (see module doc).

    Raises:
        CtxasrError: ``n`` is out of range, or the pool has fewer than ``n`` words
            besides this utterance's rare words.
    """
    _check_size(n)
    rare = set(rare_words)
    own = pool.count_in(rare)
    if len(pool) - own < n:
        raise CtxasrError(
            utt_id,
            f"needs {n:,} distractors but the pool has only {len(pool) - own:,} words "
            f"besides its {len(rare)} rare words",
        )
    rng = random.Random(f"{seed}:{utt_id}")
    # The first n non-rare words of a uniformly random draw of n + own pool words are a
    # uniform n-subset of the pool minus the rare words (any prefix of a sample is one).
    drawn = rng.sample(range(len(pool)), n + own)  # pool indices, in draw order
    picked = [i for i in drawn if pool.words[i] not in rare][:n]
    picked.sort()  # sorting indices into a sorted pool sorts the words, and ints sort fast
    # Two sorted runs: Python's sort merges them in linear time.
    words = sorted([pool.words[i] for i in picked] + sorted(rare))
    if shuffle:
        rng.shuffle(words)
    return words


# --- many lists ------------------------------------------------------------------------


def iter_biasing_lists(
    refs: RefTable, pool: WordPool, n: int, seed: int, *, shuffle: bool = False
) -> Iterator[tuple[str, list[str]]]:
    """``(utt_id, biasing list)`` in the order of ``refs``, one list at a time."""
    _check_size(n)
    for utt_id, (_, rare) in refs.items():
        yield utt_id, biasing_list(utt_id, rare, pool, n, seed, shuffle=shuffle)


def build_biasing_lists(
    refs: RefTable, pool: Sequence[str] | WordPool, n: int, seed: int, *, shuffle: bool = False
) -> dict[str, list[str]]:
    """Every utterance's biasing list, by id (see module doc for the draw).

    ``refs`` maps an utterance id to ``(text, rare_words)`` (a
    :class:`ctxasr.eval.Reference` is one); ``pool`` is the distractor pool. For large
    ``n`` prefer :func:`write_biasing_refs`, which holds one list at a time.
    """
    pool = pool if isinstance(pool, WordPool) else WordPool(pool)
    return dict(iter_biasing_lists(refs, pool, n, seed, shuffle=shuffle))


# --- files ---------------------------------------------------------------------------


def read_word_pool(path: str | Path) -> list[str]:
    """Words of a pool file: one a line, stripped, blank lines skipped, first occurrence kept."""
    path = check_input_file(path, CtxasrError, "a word list")  # a FIFO would block
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CtxasrError(str(path), f"cannot read: {err}") from None
    words = dict.fromkeys(w for w in (line.strip() for line in text.splitlines()) if w)
    return list(words)


def write_biasing_refs(
    path: str | Path, refs: RefTable, pool: WordPool, n: int, seed: int, *, shuffle: bool = False
) -> int:
    """Write a 4-column reference file atomically (temporary file, then rename).

    An error part-way (e.g. an utterance the pool cannot serve) leaves any earlier file
    at ``path`` untouched. Returns the number of bytes written.
    """
    path = Path(path)
    _check_output(path)
    _check_size(n)
    with atomic_write(path) as f:
        for utt_id, biasing in iter_biasing_lists(refs, pool, n, seed, shuffle=shuffle):
            text, rare = refs[utt_id]
            f.write(format_ref_line(utt_id, text, rare, biasing))
        return f.tell()


def make_biasing_refs(
    refs_path: str | Path,
    pool_path: str | Path,
    n: int,
    seed: int,
    output: str | Path,
    *,
    shuffle: bool = False,
) -> tuple[int, int]:
    """Read a reference file and a pool, write the size-``n`` reference file.

    Returns ``(utterances, bytes written)``.
    """
    _check_size(n)
    output = Path(output)
    _check_output(output)
    for source in (refs_path, pool_path):
        if _same_file(output, Path(source)):
            raise CtxasrError(str(output), "is an input file; refusing to overwrite it")
    refs = read_refs(refs_path)
    pool = WordPool(read_word_pool(pool_path))
    return len(refs), write_biasing_refs(output, refs, pool, n, seed, shuffle=shuffle)


def _check_output(path: Path) -> None:
    check_output_file(path)  # a folder, a FIFO, a missing folder, a name too long


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing, or no name a file can have
        return False
