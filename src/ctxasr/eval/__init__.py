"""Scoring transcripts against references: WER, and its split into biased (B-WER) and
unbiased (U-WER) words for contextual biasing."""

from ctxasr.eval.score import (
    NORMALIZATIONS,
    AlignedPair,
    BiasingScores,
    ErrorCounts,
    Reference,
    align,
    format_scores,
    read_hyps,
    read_refs,
    score_corpus,
    score_text,
    score_utterance,
    tokenize,
)

__all__ = [
    "NORMALIZATIONS",
    "AlignedPair",
    "BiasingScores",
    "ErrorCounts",
    "Reference",
    "align",
    "format_scores",
    "read_hyps",
    "read_refs",
    "score_corpus",
    "score_text",
    "score_utterance",
    "tokenize",
]
