"""Golden tests for picking context terms out of free text (ctxasr.context.extract)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.context.extract import ExtractOptions, extract_terms, normalize_text
from ctxasr.context.terms import ContextTerm


def texts(terms: list[ContextTerm]) -> list[str]:
    return [term.text for term in terms]


# OCR of a few slides: a page-number header, bullets, a URL, an e-mail address,
# hyphenation across a line break, shouting, and a line of OCR garbage.
SLIDES = """\
Speech Recognition Overview                                3
• Whisper-style encoder–decoder with a custom tokenizer
• Speaker diarization with x-vectors, trained via backpropagation
• Runs on H100 GPUs; we compare GPT-4o and Qwen2-Audio for ASR
• Partners: the Bank of America and the New York Stock Exchange
• The model results are important: WER improved after recog-
nition fixes by Sarah Linnell’s team at NASA
tHe ThIS mod§el aaargh ■ ■ ▪ xkcdqzt rnodel 0ptimization
https://github.com/ctxasr/whisper-tools  contact: team@ctxasr.dev
Kubernetes Deployment
- KUBERNETES cluster on Kubernetes 1.29, managed by Linnell
Questions? Ask Quilter or Phoebe.
Page 12 / 40        © 2024
"""

SLIDES_TERMS = {
    # names
    "Sarah Linnell", "Bank of America", "New York Stock Exchange",
    # rare words: jargon and names
    "Kubernetes", "tokenizer", "diarization", "backpropagation", "encoder-decoder",
    "Linnell", "Quilter", "Phoebe",
    # acronyms ("GPUs" is the plural of "GPU") and alphanumerics
    "ASR", "WER", "NASA", "GPU", "H100", "GPT-4o", "Qwen2-Audio",
}  # fmt: skip


def test_slides_give_exactly_the_expected_terms() -> None:
    assert set(texts(extract_terms(SLIDES))) == SLIDES_TERMS


@pytest.mark.parametrize(
    "noise",
    [
        # common words, also when shouted or title-cased
        "the", "model", "results", "important", "questions", "page", "cluster",
        "speech", "recognition", "overview", "deployment", "whisper",
        # a one-off Title-Case heading is not a name
        "Speech Recognition Overview", "Kubernetes Deployment",
        # OCR noise, digits, URL and e-mail parts
        "tHe", "ThIS", "mod§el", "aaargh", "xkcdqzt", "rnodel", "0ptimization",
        "12", "40", "2024", "1.29", "3", "github", "ctxasr", "whisper-tools", "team",
        # a single character and pieces of split compounds
        "x", "x-vectors", "vectors", "Whisper-style",
    ],
)  # fmt: skip
def test_slides_exclude_noise_and_common_words(noise: str) -> None:
    assert noise.casefold() not in {text.casefold() for text in texts(extract_terms(SLIDES))}


def test_weights_are_normalised_and_sorted() -> None:
    terms = extract_terms(SLIDES)
    weights = [term.weight for term in terms]
    assert weights[0] == 1.0
    assert all(0.0 < w <= 1.0 for w in weights)
    assert weights == sorted(weights, reverse=True)
    # Kubernetes: rare (Zipf 2.25) and said 3 times; it beats terms said once.
    assert terms[0].text == "Kubernetes"


def test_frequency_and_rarity_order_terms() -> None:
    # Both unseen by wordfreq (Zipf 0): the one said three times ranks first.
    terms = extract_terms("We tuned the tokenizer. The diarization tokenizer. A tokenizer.")
    assert texts(terms) == ["tokenizer", "diarization"]
    # (1 + ln 3) x rarity 1.0 vs (1 + ln 1) x 1.0
    assert terms[1].weight == pytest.approx(1 / (1 + 1.0986123), rel=1e-6)
    # Said once each: rarer first ("Linnell" 1.89 < "Phoebe" 3.38).
    assert texts(extract_terms("Phoebe met Linnell.")) == ["Linnell", "Phoebe"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tokenizer then diarization", ["tokenizer", "diarization"]),
        ("diarization then tokenizer", ["diarization", "tokenizer"]),
    ],
)
def test_ties_keep_first_occurrence_order(text: str, expected: list[str]) -> None:
    terms = extract_terms(text)
    assert texts(terms) == expected
    assert terms[0].weight == terms[1].weight == 1.0


def test_dedupe_keeps_most_frequent_spelling() -> None:
    text = "KUBERNETES. We run Kubernetes, kubernetes pods, and more Kubernetes."
    assert texts(extract_terms(text)) == ["Kubernetes"]
    assert texts(extract_terms("KUBERNETES, KUBERNETES, Kubernetes")) == ["KUBERNETES"]
    # On a tie a word is not shouted, an acronym keeps its capitals, else first seen.
    assert texts(extract_terms("KUBERNETES, Kubernetes")) == ["Kubernetes"]
    assert texts(extract_terms("Llama, LLAMA")) == ["LLAMA"]
    assert texts(extract_terms("kubernetes, Kubernetes")) == ["kubernetes"]


def test_dedupe_counts_every_spelling() -> None:
    # Kubernetes (Zipf 2.25) said 3 times in 3 spellings outranks Quilter (Zipf 2.1)
    # said once; counted per spelling, Quilter would come first.
    terms = extract_terms("Kubernetes, KUBERNETES, kubernetes. Quilter.")
    assert texts(terms) == ["Kubernetes", "Quilter"]


def test_line_break_hyphenation_is_joined() -> None:
    text = "Speech recog-\nnition with diariza-\ntion is well-\nknown at Hewlett-\nPackard."
    assert normalize_text(text) == (
        "Speech recognition with diarization is well-known at Hewlett-Packard."
    )
    assert texts(extract_terms(text)) == ["diarization", "Hewlett-Packard"]


def test_normalize_text_unicode() -> None:
    assert normalize_text("ﬁne “quotes” ‘and’ ＧＰＵ\u00a0\u00a0x\u200by") == (
        "fine \"quotes\" 'and' GPU xy"
    )
    assert normalize_text("a\r\nb\rc \t d  \n  e") == "a\nb\nc d\ne"
    assert normalize_text("encoder–decoder—done") == "encoder-decoder — done"
    assert normalize_text("Kubernetes™¹") == "Kubernetes"


def test_unicode_forms_give_the_same_terms() -> None:
    terms = extract_terms("“Kubernetes” runs on ＧＰＵs; Linnell’s ﬁx for the tokenizer.")
    assert set(texts(terms)) == {"Kubernetes", "GPU", "Linnell", "tokenizer"}


def test_possessives_and_punctuation_are_stripped() -> None:
    terms = extract_terms("(Quilter), Linnell's paper; Phoebe's! [tokenizer]... 'diarization'")
    assert set(texts(terms)) == {"Quilter", "Linnell", "Phoebe", "tokenizer", "diarization"}


@pytest.mark.parametrize(
    "term", ["NASA", "GPU", "LLM", "ASR", "GPT-4o", "COVID-19", "H100", "Qwen2-Audio", "5G"]
)
def test_acronyms_and_alphanumerics_are_kept(term: str) -> None:
    assert texts(extract_terms(f"We discussed {term} today.")) == [term]


@pytest.mark.parametrize(
    "text",
    [
        "In 2023 we had 12 pages, 3.5 points and 1,000 users.",  # numbers
        "the 1st and 2nd runs took 100ms on 16GB in the 1990s at 2x",  # quantities
        "US UK OK TV USA NOT VERY THE",  # common words in capitals
        "Section II and Part IV",  # Roman numerals
        "tHe ThIS HeLLo aaaargh xkcdqzt rnodel 0ptimization Th1s",  # OCR noise
        "a b c I x y z",  # single characters
        "mod§el re@sult k#ey snake_case a.b.c",  # stray symbols
        "supercalifragilisticexpialidociousxyzzyplughfoo",  # over 30 characters
        "• ■ ▪ ► ✓ ◦ — – … *",  # bullet glyphs
        "see https://ctxasr.dev/zorblax or www.zorblax.org or mail zorblax@ctxasr.dev",
        "The model results are important. However, the results were important.",
    ],
)
def test_noise_and_common_words_give_nothing(text: str) -> None:
    assert extract_terms(text) == []


def test_urls_are_dropped_whole_but_slashes_split_words() -> None:
    text = "Code at github.com/openai/tokenizer and docs at http://x.org/diarization; and/ASR"
    assert texts(extract_terms(text)) == ["ASR"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n", "\u00a0\u200b"])
def test_blank_text_gives_no_terms(text: str) -> None:
    assert extract_terms(text) == []


# ----------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yesterday Barack Obama visited the plant.", ["Barack Obama"]),
        ("We met the Bank of America board.", ["Bank of America"]),
        ("Prices on the New York Stock Exchange fell.", ["New York Stock Exchange"]),
        ("We study Quantum Field Theory here.", ["Quantum Field Theory"]),
        ("He played Ludwig van Beethoven and Leonardo da Vinci.",
         ["Leonardo da Vinci", "Ludwig van Beethoven"]),  # by weight: Vinci is rarer
        # a sentence-initial capital on an ordinary word does not start a name
        ("The Bank of America is big.", ["Bank of America"]),
        ("However Barack Obama said no.", ["Barack Obama"]),
        ("Yesterday Barack Obama said no.", ["Barack Obama"]),
        ("Buy shares. Shares of Bank of the West fell.", []),  # "shares" is ordinary
        ("Ask Sarah Linnell about it. Do ask.", ["Sarah Linnell"]),
        # ... unless the text capitalises it mid-sentence too
        ("New York Stock Exchange. We like the New York Stock Exchange, new or old.",
         ["New York Stock Exchange"]),
        # connectors are never at the ends
        ("We visited the Bank of.", []),
        ("Shares in Bank of the West fell.", []),
        # a repeated word is no name
        ("Kubernetes Kubernetes everywhere.", ["Kubernetes"]),
        # acronyms and codes are not name words
        ("We bought Google TPUs and H100 GPUs.", ["H100", "TPU", "GPU"]),
    ],
)  # fmt: skip
def test_multi_word_names(text: str, expected: list[str]) -> None:
    assert texts(extract_terms(text)) == expected


def test_names_never_cross_punctuation_or_lines() -> None:
    assert extract_terms("We met Barack, Obama and Quantum\nField in class.") == []


def test_common_word_name_needs_prose_or_repetition() -> None:
    # A one-off Title-Case heading is not evidence of a name ...
    assert extract_terms("Introduction to Quantum Field Theory") == []
    # ... but a repeated one (or one seen in running prose) is.
    twice = "Quantum Field Theory\nQuantum Field Theory\n"
    assert texts(extract_terms(twice)) == ["Quantum Field Theory"]
    heading_then_prose = "Quantum Field Theory\nWe love Quantum Field Theory.\n"
    assert texts(extract_terms(heading_then_prose)) == ["Quantum Field Theory"]


def test_word_inside_a_name_is_listed_only_if_also_alone() -> None:
    assert texts(extract_terms("We thank Sarah Linnell for this.")) == ["Sarah Linnell"]
    terms = texts(extract_terms("We thank Sarah Linnell for this. Linnell agreed."))
    assert terms == ["Sarah Linnell", "Linnell"]


def test_name_outranks_equally_rare_word() -> None:
    # "Sarah Linnell" is as rare as its rarest word, plus the name bonus.
    terms = extract_terms("We thank Sarah Linnell for this. Linnell agreed.")
    assert terms[0].weight == 1.0
    assert terms[1].weight == pytest.approx(1 / ExtractOptions().name_bonus)


# -------------------------------------------------------------------- options


def test_max_terms_keeps_the_best() -> None:
    every = extract_terms(SLIDES)
    top3 = extract_terms(SLIDES, ExtractOptions(max_terms=3))
    assert top3 == every[:3]
    assert extract_terms(SLIDES, ExtractOptions(max_terms=0)) == []


def test_min_count() -> None:
    # "Linnell" occurs once alone and once inside "Sarah Linnell": count 1.
    options = ExtractOptions(min_count=2)
    assert texts(extract_terms(SLIDES, options)) == ["Kubernetes"]


def test_rare_zipf_threshold() -> None:
    # "transformer" is at Zipf 3.37: rare by default, common under a stricter threshold.
    text = "A transformer and a tokenizer."
    assert texts(extract_terms(text)) == ["tokenizer", "transformer"]
    strict = dataclasses.replace(ExtractOptions(), rare_zipf=3.0)
    assert texts(extract_terms(text, strict)) == ["tokenizer"]


@pytest.mark.parametrize(
    "changes",
    [
        {"max_terms": -1},
        {"rare_zipf": -0.1},
        {"acronym_zipf": 9.0},
        {"min_word_chars": 1},
        {"max_token_chars": 2},
        {"max_name_words": 1},
        {"min_count": 0},
        {"name_bonus": 0.0},
    ],
)
def test_invalid_options_raise(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ExtractOptions(**changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------- property

WORDS = [
    "the", "model", "Results", "IMPORTANT", "tokenizer", "Kubernetes", "KUBERNETES",
    "diarization", "Linnell's", "Quilter", "Phoebe", "Bank", "of", "America", "New",
    "York", "NASA", "GPUs", "GPT-4o", "H100", "recog-\nnition", "tHe", "aaargh",
    "2024", "x", "https://a.io/b", "•", "“Kubernetes”", "ﬁne", "van", "Gogh",
    "The", "However", "speaker-diarization", "LLM", "mod§el",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "\n", ". ", ", ", ": ", "-\n", " / ", "\t", "  "]

slide_like = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=40
).map(lambda pairs: "".join(word + sep for word, sep in pairs))
unicode_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
latin_text = st.text(alphabet="aAbBeEiIoOxXyZ019-'’. \n/:", max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.one_of(slide_like, unicode_text, latin_text))
def test_output_invariants(text: str) -> None:
    terms = extract_terms(text)
    normalised = normalize_text(text)
    keys = [term.text.casefold() for term in terms]
    assert len(keys) == len(set(keys)), "duplicates"
    for term in terms:
        assert term.text and term.text in normalised
        assert 0.0 < term.weight <= 1.0
    weights = [term.weight for term in terms]
    assert weights == sorted(weights, reverse=True)
    if terms:
        assert weights[0] == 1.0
    assert extract_terms(text) == terms, "not deterministic"
