"""The speech tokenizer's recipe: a ``[tokenizer]`` table read from TOML (or YAML).

::

    [tokenizer]
    train = "train.jsonl"    # NeMo-style manifest: audio_filepath and text
    out = "run"              # units.npy, spm.model, tokenizer.json, stats.json
    cache = ""               # the encoder's frames ("": OUT/cache); share one to encode once
    encoder = "moonshine:base"
    clusters = 500
    vocab = 2000

Unknown keys and bad values are one-line ``CtxasrError``\\ s naming the file, the table
and the key (the speech LLM's rules, ``ctxasr.speechllm.config``). Relative paths are
taken from the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctxasr.errors import CtxasrError
from ctxasr.training import at_least, build_table, check_known, one_of, read_recipe

# A unit is one character of Unicode's Private Use Area (U+E000 + unit) in the strings
# SentencePiece learns from, so the area's size bounds the number of clusters.
MAX_CLUSTERS = 0xF8FF - 0xE000 + 1  # 6,400
PATHS = ("train", "out", "cache", "text")  # taken from the config file's folder


@dataclass(frozen=True)
class TokenizerConfig:
    """How the discrete speech tokens and the joint vocabulary are fitted."""

    train: str  # NeMo-style JSONL manifest: its audio gives the units, its text the text side
    out: str  # the tokenizer's folder (``SpeechTokenizer.load(out)``)
    cache: str = ""  # the frozen encoder's frames, ``FrameCache`` layout ("": OUT/cache)
    encoder: str = "moonshine:base"  # any name ``ctxasr.speechllm.interfaces.load_encoder`` takes
    # MADEON used 2,000 clusters of 960 h of LibriSpeech. A few hours of speech fill 2,000
    # clusters too thinly (a few hundred frames each), and SentencePiece then sees each
    # unit pair too rarely to merge it: fewer, denser clusters suit a small corpus.
    clusters: int = 500
    vocab: int = 2000  # the joint vocabulary: special, speech and text pieces together
    model_type: str = "bpe"  # SentencePiece's "bpe" | "unigram"
    text: str = ""  # more text, one sentence a line, beside the manifest's transcripts
    max_frames: int = 200_000  # frames sampled (seeded) for k-means; the rest are only labelled
    lowercase: bool = True  # transcripts and text lines lower-cased
    seed: int = 0
    threads: int = 2  # CPU threads of k-means and SentencePiece

    def __post_init__(self) -> None:
        at_least(self, "clusters", 2)
        if self.clusters > MAX_CLUSTERS:
            raise ValueError(f"clusters must be at most {MAX_CLUSTERS}, got {self.clusters}")
        # the special pieces and one piece per unit, and room for text
        at_least(self, "vocab", self.clusters + 8)
        at_least(self, "max_frames", self.clusters)
        at_least(self, "threads", 1)
        one_of(self, "model_type", ("bpe", "unigram"))
        if not self.encoder:
            raise ValueError("encoder must name a speech encoder, e.g. 'moonshine:base'")

    @property
    def cache_folder(self) -> Path:
        """Where the encoder's frames are kept."""
        return Path(self.cache) if self.cache else Path(self.out) / "cache"


def read_config(path: str | Path) -> TokenizerConfig:
    """A ``TokenizerConfig`` from a recipe's ``[tokenizer]`` table; unknown keys are errors.

    Raises:
        CtxasrError: ``"<file>: [tokenizer] key: problem"`` for a bad file, table or value.
    """
    p = Path(path)
    raw = read_recipe(p)
    check_known(p, "the file", raw, {"tokenizer"})
    if "tokenizer" not in raw:
        raise CtxasrError(str(p), "needs a [tokenizer] table")
    return config_from_table(p, raw["tokenizer"])


def config_from_table(source: Path, table: object, defaults: dict | None = None) -> TokenizerConfig:
    """A ``TokenizerConfig`` from the ``[tokenizer]`` table of the recipe ``source``:
    ``defaults`` (absolute paths) fill the keys it leaves out, as a MADEON recipe fills
    ``train`` and ``out`` with its own manifest and ``OUT/tokenizer``."""
    if isinstance(table, dict):
        table = dict(table)
        for key in PATHS:
            if isinstance(table.get(key), str) and table[key]:
                table[key] = str((source.parent / table[key]).resolve())
        table = {**(defaults or {}), **table}
        for key in ("train", "out"):
            if key not in table:
                raise CtxasrError(str(source), f"[tokenizer] needs '{key}'")
    return build_table(source, "tokenizer", TokenizerConfig, table)
