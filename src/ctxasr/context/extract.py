"""Pick candidate context terms out of free text (documents, OCR of slides).

A generic recognizer already spells common English right; what it gets wrong are
names, jargon, acronyms and model numbers. :func:`extract_terms` finds those in
free text and scores them so the prompt builder can keep the best ones when the
decoder's prompt budget is short.

Pipeline (each step is a small pure function below):

1. :func:`normalize_text` -- NFKC (ligatures such as "ﬁ", full-width forms),
   straight quotes, invisible characters removed, horizontal whitespace collapsed,
   words hyphenated across line breaks joined ("recog-\\nnition" -> "recognition").
2. Tokenise into whitespace chunks. Surrounding punctuation and a possessive
   "'s" are stripped; URLs and e-mail addresses are dropped whole (nobody reads
   them out as text, and their path parts are not terms); a chunk with a stray
   symbol inside (``mod§el``, ``a.b``, ``snake_case``) is dropped as noise.
   Punctuation, dropped chunks and line breaks separate *groups*: a name never
   spans them. ``. ! ? : ;``, bullet glyphs and line breaks end a *sentence*.
3. Multi-word names: runs of capitalised words inside one group, with short
   lowercase connectors ("of", "van", "da", ...) allowed inside.
4. Single tokens: acronyms, alphanumerics ("GPT-4o", "H100") and words that are
   rare in English by ``wordfreq``'s Zipf scale, minus OCR noise.
5. Dedupe case-insensitively, score by frequency x rarity x kind, normalise.

All thresholds are on the Zipf scale: log10 of a word's frequency per billion
words (wordfreq's English list); "the" is 7.7, "model" 5.1, "Phoebe" 3.4,
"tokenizer" 0 (unseen).
"""

from __future__ import annotations

import enum
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from ctxasr.context.terms import ContextTerm
from ctxasr.context.words import zipf as _zipf
from ctxasr.errors import ContextError

__all__ = [
    "FREE_TEXT_WEIGHT",
    "ExtractOptions",
    "extract_terms",
    "normalize_text",
    "terms_from_text",
]

# wordfreq's ceiling: nothing in English is more frequent than ~7.7 ("the").
ZIPF_CEILING = 8.0


@dataclass(frozen=True)
class ExtractOptions:
    """How :func:`extract_terms` picks and scores terms.

    Override per call with ``dataclasses.replace(ExtractOptions(), ...)``.
    """

    max_terms: int | None = None
    """Keep at most this many terms (the highest weighted); ``None`` keeps all."""

    rare_zipf: float = 3.5
    """A single word is rare, hence a term, below this Zipf frequency. 3.5 keeps
    "Phoebe" (3.38), "transformer" (3.37), "latency" (3.31) and drops
    "transcription" (3.54), "prompt" (3.86) and everything more common."""

    acronym_zipf: float = 4.5
    """An all-caps token of 2-5 letters is an acronym below this Zipf frequency of
    its lowercase form. Higher than ``rare_zipf`` because acronyms are easily
    misheard even when their letters spell a known word ("NASA" 4.2, "AI" 4.2);
    4.5 still drops shouted words and everyday ones ("NOT", "USA", "UK")."""

    min_word_chars: int = 3
    """Minimum length, in letters, of a plain rare word; shorter fragments are
    mostly OCR debris. Acronyms and alphanumerics need only 2 characters."""

    max_token_chars: int = 30
    """Tokens longer than this many characters are noise (glued OCR lines, hashes)."""

    max_name_words: int = 5
    """A capitalised run of more words than this (connectors included) is a
    Title-Case heading, not a name."""

    min_count: int = 1
    """Drop terms that occur fewer times than this in the text."""

    name_bonus: float = 1.5
    """Score multiplier for multi-word names: they pin down spelling and word
    boundaries the recognizer cannot guess."""

    acronym_bonus: float = 1.25
    """Score multiplier for acronyms and alphanumerics ("ASR", "H100")."""

    def __post_init__(self) -> None:
        if self.max_terms is not None and self.max_terms < 0:
            raise ValueError(f"max_terms must be >= 0 or None, got {self.max_terms}")
        for name in ("rare_zipf", "acronym_zipf"):
            value = getattr(self, name)
            if not 0.0 <= value <= ZIPF_CEILING:
                raise ValueError(f"{name} must be in [0, {ZIPF_CEILING}], got {value}")
        if self.min_word_chars < 2:
            raise ValueError(f"min_word_chars must be >= 2, got {self.min_word_chars}")
        if self.max_token_chars < self.min_word_chars:
            raise ValueError(
                f"max_token_chars ({self.max_token_chars}) must be >= "
                f"min_word_chars ({self.min_word_chars})"
            )
        if self.max_name_words < 2:
            raise ValueError(f"max_name_words must be >= 2, got {self.max_name_words}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if self.name_bonus <= 0 or self.acronym_bonus <= 0:
            raise ValueError("name_bonus and acronym_bonus must be > 0")


def extract_terms(text: str, options: ExtractOptions = ExtractOptions()) -> list[ContextTerm]:
    """Return the terms of ``text`` worth prompting with, most relevant first.

    ``weight`` is in (0, 1]: the best term gets 1.0. Ties keep the order of first
    occurrence, so the output is deterministic. Empty or blank text gives ``[]``.
    """
    tokens = _tokenize(normalize_text(text), options.max_token_chars)
    names = _kept_names(_name_occurrences(tokens, options), _prose_sentences(tokens))
    tally = _Tally()
    covered: set[int] = set()
    for occ in names:
        tally.add(occ.text, _Kind.NAME, (occ.indices[0], 0))
        covered.update(occ.indices)
    _tally_single_tokens(tokens, covered, options, tally)
    return tally.terms(options)


# Terms picked out of free text are guesses; terms a user listed outrank them.
FREE_TEXT_WEIGHT = 0.5


def terms_from_text(text: str, source: str = "<context text>") -> list[ContextTerm]:
    """The terms of a free text (a document, slides' OCR), weighted below listed terms.

    Plain prose may have none: that is no error, since the text is also a document whose
    language model the decoder can use (``ctxasr.context.ngram``).

    Raises:
        ContextError: the text has no word at all.
    """
    if not any(ch.isalnum() for ch in text):
        raise ContextError(source, "has no text (no word found)")
    return [ContextTerm(t.text, t.weight * FREE_TEXT_WEIGHT) for t in extract_terms(text)]


def _tally_single_tokens(
    tokens: _Tokens, covered: set[int], options: ExtractOptions, tally: _Tally
) -> None:
    """Add the terms each token stands for, except tokens ``covered`` by a name."""
    memo: dict[str, tuple[tuple[str, _Kind], ...]] = {}  # cheaper than hashing options
    for i, word in enumerate(tokens.text):
        if i in covered:
            continue  # part of a name here; the name carries it
        terms = memo.get(word)
        if terms is None:
            terms = memo[word] = _classify(word, options)
        for sub, (surface, kind) in enumerate(terms):
            tally.add(surface, kind, (i, sub))


# --------------------------------------------------------------------------- text

# Applied before NFKC: "™" would otherwise become the letters "TM", and footnote
# markers ("Kubernetes¹") would become digits glued to the word.
_PRE_NFKC = str.maketrans({c: None for c in "™℠¹²³⁰⁴⁵⁶⁷⁸⁹"})
_CHAR_MAP = str.maketrans(
    {
        **{c: "'" for c in "‘’‚‛′`´"},
        **{c: '"' for c in "“”„‟″«»"},
        # Hyphens and en dashes join words ("encoder–decoder"); em dashes separate them.
        **{c: "-" for c in "\u2010\u2011\u2012\u2013\u2212"},
        **{c: " \u2014 " for c in "\u2014\u2015"},
        **{c: None for c in "\u00ad\u200b\u200c\u200d\u2060\ufeff"},  # soft hyphen, ZW*
        **{c: "\n" for c in "\r\u2028\u2029\x0b\x0c\x85"},
    }
)
_HSPACE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NL = re.compile(r" ?\n ?")
# \b: only try matches at word starts, else every letter of every word is a start.
_LINE_BREAK_HYPHEN = re.compile(r"\b([^\W\d_]+)-\n([^\W\d_]+)")


def normalize_text(text: str) -> str:
    """Normalise ``text`` the way :func:`extract_terms` reads it.

    Every extracted term's text is a substring of this function's output.
    """
    text = text.replace("\r\n", "\n").translate(_PRE_NFKC)
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_MAP)
    text = _SPACE_AROUND_NL.sub("\n", _HSPACE.sub(" ", text))
    return _LINE_BREAK_HYPHEN.sub(_join_hyphenated, text)


def _join_hyphenated(match: re.Match[str]) -> str:
    """Undo a line-break hyphen, keeping a real compound hyphen.

    "recog-\\nnition" joins (the joined word is far more frequent) while
    "well-\\nknown" and "co-\\noperate" keep their hyphen; a capitalised second
    half ("Hewlett-\\nPackard") always keeps it. Unknown halves ("diariza-") join.
    """
    head, tail = match.group(1), match.group(2)
    if tail[0].islower():
        joined, hyphenated = head + tail, f"{head}-{tail}"
        if _zipf(joined.lower()) >= _zipf(hyphenated.lower()):
            return joined
    return f"{head}-{tail}"


def _word_set(words: str) -> frozenset[str]:
    """A set of words written as one whitespace-separated string, for word lists."""
    return frozenset(words.split())


# --------------------------------------------------------------------- tokenising


@dataclass
class _Tokens:
    """The words of a text as parallel lists; a word's index is its position.

    Lists of strings and ints rather than an object per word: a 1 MB text has
    ~150k words, and that many small objects keep the garbage collector busy.
    """

    text: list[str] = field(default_factory=list)  # punctuation, possessive 's stripped
    sentence: list[int] = field(default_factory=list)  # a line break starts a new one
    initial: list[bool] = field(default_factory=list)  # first word: capital proves nothing
    group: list[int] = field(default_factory=list)  # same group: only spaces in between


_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
# A chunk with "/" that is a URL: a scheme, or a domain followed by a path.
# (E-mail addresses and bare domains need no rule: "@" and inner "." are stray
# symbols, which drop the whole chunk.)
_URL = re.compile(r"://|^\W*[\w-]+(?:\.[\w-]+)+/")
_BULLETS = frozenset("•◦▪▫●○■□►▶▸▹➢➤➔→⇒✓✔✗✘❖◆◇★☆·∙♦")
_SENTENCE_END = frozenset(".!?:;") | _BULLETS
# A period after these does not end the sentence ("Dr. Linnell", "e.g. PyTorch").
_ABBREVIATIONS = _word_set("mr mrs ms dr prof st vs etc e.g i.e fig eq vol al approx")


class _TokenStream:
    """Turns normalised text into :class:`_Tokens`, tracking sentences and groups."""

    __slots__ = ("group", "initial", "max_chars", "sentence", "tokens", "well_formed")

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.tokens = _Tokens()
        self.well_formed: dict[str, bool] = {}  # per call: cheaper than lru_cache's key
        self.sentence = self.group = 0
        self.initial = True

    def new_sentence(self) -> None:
        self.sentence += 1
        self.group += 1
        self.initial = True

    def add_chunk(self, chunk: str) -> None:
        if chunk.isalnum():  # fast path: most chunks are bare words
            self.add_word(chunk)
        elif "/" in chunk and _URL.search(chunk):
            self.group += 1  # a URL: nobody says it as written, its path is no term
        elif "/" in chunk:  # "TCP/IP", "and/or": two words each
            for i, piece in enumerate(chunk.split("/")):
                self.group += i > 0
                self.add_piece(piece)
        else:
            self.add_piece(chunk)

    def add_piece(self, piece: str) -> None:
        match = _EDGES.match(piece)
        assert match is not None  # the pattern matches any string
        lead, core, trail = match.groups()
        if lead or not core:
            self.group += 1
        if not core:
            if any(c in _SENTENCE_END for c in piece):
                self.new_sentence()
            return
        possessive = core[-2:] in ("'s", "'S")
        self.add_word(core[:-2] if possessive else core)
        if trail or possessive:
            self.group += 1
        if any(c in _SENTENCE_END for c in trail) and core.lower() not in _ABBREVIATIONS:
            self.new_sentence()

    def add_word(self, word: str) -> None:
        ok = self.well_formed.get(word)
        if ok is None:
            ok = self.well_formed[word] = _well_formed(word, self.max_chars)
        if ok:
            self.tokens.text.append(word)
            self.tokens.sentence.append(self.sentence)
            self.tokens.initial.append(self.initial)
            self.tokens.group.append(self.group)
        else:
            self.group += 1  # OCR noise between two words breaks a name
        self.initial = False


def _tokenize(text: str, max_chars: int) -> _Tokens:
    stream = _TokenStream(max_chars)
    for line in text.split("\n"):
        stream.new_sentence()  # slide lines are bullets or titles, not running text
        for chunk in line.split():
            stream.add_chunk(chunk)
    return stream.tokens


# -------------------------------------------------------------------- noise filter

# Letters and digits, single hyphens or apostrophes inside: "GPT-4o", "O'Brien".
_WORD_SHAPE = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_TRIPLE_LETTER = re.compile(r"([^\W\d_])\1\1")
# Letter case patterns (U = upper, L = lower) of a plausible word: lower, UPPER,
# Title, and brand camel case such as iPhone, PyTorch, McDonald, OpenAI, ChatGPT.
# Rejects OCR case noise: "tHe" (LUL), "ThIS" (ULUU), "HeLLo".
_PLAUSIBLE_CASE = re.compile(r"L+|U+|UL+|(?:L|UL+)(?:ULL+)+U*|UL{2,}U+")


def _well_formed(word: str, max_chars: int) -> bool:
    """Whether ``word`` (punctuation already stripped) is a plausible token at all.

    Digit-only tokens (page numbers, years) fail: they are never terms.
    """
    if not 2 <= len(word) <= max_chars or not _WORD_SHAPE.fullmatch(word):
        return False  # a stray symbol inside is OCR noise
    if not _LETTER_RUN.search(word) or _TRIPLE_LETTER.search(word.lower()):
        return False
    if word.islower() or word.isupper() or word.istitle():
        return True  # the common cases, without building case patterns
    return all(_PLAUSIBLE_CASE.fullmatch(_case_pattern(run)) for run in _LETTER_RUN.findall(word))


def _case_pattern(run: str) -> str:
    if len(run) > 2 and run.endswith("s") and run[-2].isupper():
        run = run[:-1]  # plural of an acronym: "GPUs", "ChatGPTs"
    return "".join("U" if c.isupper() else "L" for c in run)


_VOWELS = frozenset("aeiouy")


def _has_vowel(word: str) -> bool:
    """False for a vowel-less Latin word ("rnrnm"); other scripts always pass."""
    if word.isascii():
        return not _VOWELS.isdisjoint(word.lower())
    letters = unicodedata.normalize("NFD", word.lower())
    if any(c.isalpha() and ord(c) >= 0x250 for c in letters):
        return True
    return not _VOWELS.isdisjoint(letters)


# Characters OCR confuses; a rare token that becomes a common word after
# undoing one of these ("rnodel" -> "model", "0ptimization", "Th1s") is noise.
_OCR_CONFUSIONS = (
    ("rn", "m"),
    ("vv", "w"),
    ("0", "o"),
    ("1", "l"),
    ("1", "i"),
    ("5", "s"),
    ("3", "e"),
)


_OCR_SUSPECT = re.compile(r"rn|vv|[0135]")
_DIGIT = re.compile(r"\d")


def _looks_like_ocr_error(word: str, options: ExtractOptions) -> bool:
    lower = word.lower()
    if not _OCR_SUSPECT.search(lower):
        return False  # the common case, answered without lookups
    if sum(map(len, _LETTER_RUN.findall(lower))) < 3:
        return False  # "5G", "H100": too short to be a misread word
    for wrong, right in _OCR_CONFUSIONS:
        if wrong in lower:
            fixed = lower.replace(wrong, right)
            if not _DIGIT.search(fixed) and _zipf(fixed) >= max(
                options.rare_zipf, _zipf(lower) + 1.0
            ):
                return True
    return False


# ----------------------------------------------------------------- single tokens


class _Kind(enum.Enum):
    NAME = "name"
    ACRONYM = "acronym"
    ALNUM = "alphanumeric"
    WORD = "word"


_ACRONYM = re.compile(r"([A-Z]{2,5})s?")
_ROMAN = re.compile(r"[IVX]+")
# Numbers with a unit or ordinal are not terms: "1st", "1990s", "100ms", "2x", "16GB".
_NUMBER_WITH_UNIT = re.compile(r"\d[\d-]*[a-z]{0,4}|\d{2,}[A-Za-z]{1,4}")


@lru_cache(maxsize=1 << 17)
def _classify(word: str, options: ExtractOptions) -> tuple[tuple[str, _Kind], ...]:
    """The terms one well-formed token stands for: usually none, sometimes one.

    A hyphenated word whose parts are not all rare yields its rare parts instead
    ("speaker-diarization" -> "diarization", "GPU-based" -> "GPU").
    """
    if _DIGIT.search(word):
        return ((word, _Kind.ALNUM),) if _is_alnum_term(word, options) else ()
    if "-" in word:
        parts = [p for p in word.split("-") if p]
        if all(_classify(p, options) for p in parts) and _is_rare_word(word, options):
            return ((word, _Kind.WORD),)
        return tuple(term for part in parts for term in _classify(part, options))
    acronym = _acronym(word, options)
    if acronym:
        return ((acronym, _Kind.ACRONYM),)
    return ((word, _Kind.WORD),) if _is_rare_word(word, options) else ()


def _is_alnum_term(word: str, options: ExtractOptions) -> bool:
    """Model and product codes ("GPT-4o", "COVID-19", "H100", "5G"), not quantities."""
    if _NUMBER_WITH_UNIT.fullmatch(word):
        return False
    return not _looks_like_ocr_error(word, options)


def _acronym(word: str, options: ExtractOptions) -> str | None:
    """The acronym ``word`` spells ("GPUs" -> "GPU"), or None."""
    match = _ACRONYM.fullmatch(word)
    if not match or _ROMAN.fullmatch(match.group(1)):
        return None  # "II", "XIV": section numbers
    base = match.group(1)
    return base if _zipf(base.lower()) < options.acronym_zipf else None


def _is_rare_word(word: str, options: ExtractOptions) -> bool:
    letters = len(word) - word.count("-") - word.count("'")  # no digits reach here
    if letters < options.min_word_chars or not _has_vowel(word):
        return False
    if _zipf(word.lower()) >= options.rare_zipf or _inflects_common_word(word, options):
        return False
    return not _looks_like_ocr_error(word, options)


_SUFFIXES = (("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""), ("ly", ""))


def _inflects_common_word(word: str, options: ExtractOptions) -> bool:
    """Whether a lowercase ``word`` is an inflection of a common word.

    Inflections are rarer than their stem ("benchmarked" 3.2 vs "benchmark" 3.6)
    but no harder to recognise. Capitalised words are left alone: "Quilter" is
    not "quilt" + "er".
    """
    if not word.islower():
        return False
    for suffix, ending in _SUFFIXES:
        stem = word[: -len(suffix)] + ending
        if word.endswith(suffix) and len(stem) >= 3 and _zipf(stem) >= options.rare_zipf:
            return True
    return False


# ------------------------------------------------------------------------- names

# Lowercase words allowed inside a name: "Bank of America", "Ludwig van Beethoven".
_CONNECTORS = _word_set("of de van von der la le du da del")
# Words that Title-Case headings leave in lower case ("Introduction to Quantum
# Field Theory"): seeing them in a line does not make it running prose.
_HEADING_WORDS = _CONNECTORS | _word_set(
    """a an the and or but nor of to in on for with at by from into onto over under
    about via vs versus through between across after before beyond without within
    toward towards against among around per upon as"""
)
# Closed-class words and sentence adverbs: capitalised at a sentence start only
# because of their position ("The Bank of America", "However Linnell ...").
_FUNCTION_WORDS = _HEADING_WORDS | _word_set(
    """this that these those there here it its i i'm i've we our us you your he she
    his her they their them my me what which who whom whose when where why how so yet
    if then than above behind below during except inside near off out past since until
    up is are was were be been being am do does did has have had can could
    will would shall should may might must not no all any each every some many most
    more much few other such both either neither also however therefore thus moreover
    furthermore meanwhile finally first second third next now today recently currently
    additionally overall instead still again once only just even yesterday tomorrow
    tonight later earlier soon often perhaps maybe indeed hence although though because
    unless whether while whereas another last"""
)


@dataclass(frozen=True)
class _NameOccurrence:
    text: str  # words joined by single spaces, exactly as in the normalised text
    indices: tuple[int, ...]  # token indices it covers
    sentence: int


@lru_cache(maxsize=1 << 17)
def _is_capitalised(word: str) -> bool:
    """Title or camel case word that can be part of a name (not an acronym or code)."""
    if not word[0].isupper() or word.isupper() or _ACRONYM.fullmatch(word):
        return False  # "GPUs" has a lowercase letter but is an acronym
    return not _DIGIT.search(word)


def _name_occurrences(tokens: _Tokens, options: ExtractOptions) -> list[_NameOccurrence]:
    """Every run of 2+ capitalised words (connectors inside) in one group."""
    ordinary = _ordinary_words(tokens) | _FUNCTION_WORDS
    found: list[_NameOccurrence] = []
    run: list[int] = []  # token indices
    for i, (word, group) in enumerate(zip(tokens.text, tokens.group)):
        if run and group != tokens.group[run[-1]]:
            found += _as_name(run, tokens, ordinary, options)
            run = []
        if _is_capitalised(word) or (run and word in _CONNECTORS):
            run.append(i)
        elif run:
            found += _as_name(run, tokens, ordinary, options)
            run = []
    if run:
        found += _as_name(run, tokens, ordinary, options)
    return found


def _ordinary_words(tokens: _Tokens) -> set[str]:
    """Words the text writes in lower case and never capitalises mid-sentence.

    At a sentence start such a word is capitalised by position only: "Shares of
    Bank of the West fell" is no name "Shares of Bank" if "shares" occurs too.
    """
    lower = {word for word in tokens.text if word.islower()}
    capitalised = {
        w.lower() for w, first in zip(tokens.text, tokens.initial) if not first and not w.islower()
    }
    return lower - capitalised


def _as_name(
    run: list[int], tokens: _Tokens, ordinary: set[str], options: ExtractOptions
) -> list[_NameOccurrence]:
    """The name a capitalised run spells, as a list of zero or one occurrence."""
    words = tokens.text
    if tokens.initial[run[0]] and words[run[0]].lower() in ordinary:
        run = run[1:]  # "The", "However": capitalised by position only
    while run and words[run[0]] in _CONNECTORS:
        run = run[1:]
    while run and words[run[-1]] in _CONNECTORS:
        run = run[:-1]
    distinct = {words[i].casefold() for i in run if words[i] not in _CONNECTORS}
    if len(distinct) < 2 or len(run) > options.max_name_words:
        return []  # "Kubernetes Kubernetes" is a repetition, not a name
    text = " ".join(words[i] for i in run)
    return [_NameOccurrence(text, tuple(run), tokens.sentence[run[0]])]


def _prose_sentences(tokens: _Tokens) -> set[int]:
    """Sentences of running prose, where capitals are evidence of a name.

    A Title-Case heading capitalises its first word and every word but the
    articles, prepositions and conjunctions; prose does not, so it has a lowercase
    first word ("the Bank of America and ...") or a lowercase content word.
    """
    return {
        sentence
        for word, sentence, initial in zip(tokens.text, tokens.sentence, tokens.initial)
        if word[0].islower() and (initial or word not in _HEADING_WORDS)
    }


def _kept_names(occurrences: list[_NameOccurrence], prose: set[int]) -> list[_NameOccurrence]:
    """Names seen in running prose at least once, or repeated (e.g. in slide titles).

    A one-off Title-Case heading ("Results And Discussion") is dropped; its rare
    words still come out as single terms.
    """
    by_key: dict[str, list[_NameOccurrence]] = {}
    for occ in occurrences:
        by_key.setdefault(occ.text.casefold(), []).append(occ)
    kept = {
        key
        for key, group in by_key.items()
        if len(group) >= 2 or any(occ.sentence in prose for occ in group)
    }
    return [occ for occ in occurrences if occ.text.casefold() in kept]


# ----------------------------------------------------------------------- scoring


class _Tally:
    """Occurrences of candidate terms, deduplicated case-insensitively at the end."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()  # surface -> occurrences
        self.first: dict[str, tuple[int, int]] = {}  # surface -> first position
        self.kind: dict[str, _Kind] = {}  # surface -> kind

    def add(self, surface: str, kind: _Kind, position: tuple[int, int]) -> None:
        # Each surface is added in text order, so the first position sticks.
        self.count[surface] += 1
        self.first.setdefault(surface, position)
        self.kind.setdefault(surface, kind)

    def terms(self, options: ExtractOptions) -> list[ContextTerm]:
        by_key: dict[str, list[str]] = {}
        for surface in self.count:
            by_key.setdefault(surface.casefold(), []).append(surface)
        scored = []
        for spellings in by_key.values():
            if len(spellings) == 1:  # the common case, kept cheap
                surface = spellings[0]
                total, first = self.count[surface], self.first[surface]
            else:
                surface = self._pick(spellings)
                total = sum(self.count[s] for s in spellings)
                first = min(self.first[s] for s in spellings)
            if total >= options.min_count:
                scored.append((self._score(surface, total, options), first, surface))
        scored.sort(key=lambda item: (-item[0], item[1]))
        if options.max_terms is not None:
            scored = scored[: options.max_terms]
        top = scored[0][0] if scored else 1.0
        return [ContextTerm(surface, score / top) for score, _, surface in scored]

    def _pick(self, spellings: list[str]) -> str:
        """Most frequent spelling; on a tie an acronym's capitals, else not SHOUTED,
        then the one seen first."""

        def rank(surface: str) -> tuple[int, int, tuple[int, int]]:
            if self.kind[surface] is _Kind.ACRONYM:
                style = 0
            else:
                style = 2 if surface.isupper() else 1
            return (-self.count[surface], style, self.first[surface])

        return min(spellings, key=rank)

    def _score(self, surface: str, count: int, options: ExtractOptions) -> float:
        """Relevance: (1 + ln count) x rarity x kind bonus; rarity is in (0, 1]."""
        kind = self.kind[surface]
        if kind is _Kind.NAME:  # a name is as distinctive as its rarest word
            zipf = min(_zipf(w.lower()) for w in surface.split() if w not in _CONNECTORS)
        else:
            zipf = _zipf(surface.lower())
        rarity = (ZIPF_CEILING - min(zipf, ZIPF_CEILING - 0.5)) / ZIPF_CEILING
        if kind is _Kind.NAME:
            bonus = options.name_bonus
        else:
            bonus = 1.0 if kind is _Kind.WORD else options.acronym_bonus
        return (1.0 + math.log(count)) * rarity * bonus
