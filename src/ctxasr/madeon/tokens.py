"""MADEON's discrete speech tokens and its joint speech + text vocabulary.

Speech becomes tokens in three steps, as MADEON (Masuyama et al., SLT 2024) does:

1. a frozen encoder's frames (``ctxasr.speechllm.encoders``), each labelled with its
   nearest k-means centroid: a *unit*;
2. runs of one unit collapsed to one (``5 5 5 9 9 2`` -> ``5 9 2``);
3. the unit sequence, written as one Private Use Area character per unit
   (U+E000 + unit), cut into pieces by a SentencePiece model that also holds the text
   pieces: frequent unit runs become single *speech pieces*.

One vocabulary serves the decoder's input and output; its ids are laid out as::

    0 <pad>   1 <unk>   2 <s> (bos)   3 </s> (eos)   4 <|text|> (speech/text separator)
    5 ...     speech pieces (only PUA characters) and text pieces (none), interleaved

A training example reads ``<s> speech pieces <|text|> text pieces </s>``
(:meth:`SpeechTokenizer.sequence`). Speech and text pieces never mix: SentencePiece
learns from speech strings and text lines apart, and merges only within a string; the
speech strings carry no whitespace (no ``add_dummy_prefix``: the text side gets its
leading space from us instead), so no ``▁`` ever joins a unit.

:func:`fit_tokenizer` (``ctxasr train tokenizer CONFIG``) fits both from a manifest
(``ctxasr.madeon.tokconfig``); :meth:`SpeechTokenizer.load` reads the folder it writes:

    units.npy        the centroids, float32 ``(clusters, dim)``
    spm.model        the SentencePiece model
    tokenizer.json   the encoder's name, dim and frame rate, the special ids, the format
    stats.json       what fitting measured (not needed to load)
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ctxasr.errors import CtxasrError, ModelError
from ctxasr.madeon.tokconfig import TokenizerConfig, read_config
from ctxasr.speechllm.interfaces import SpeechEncoder

__all__ = ["SpeechTokenizer", "TokenizerConfig", "collapse", "fit_tokenizer", "read_config"]

UNIT_BASE = 0xE000  # unit u is the character chr(UNIT_BASE + u) (Unicode's Private Use Area)
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
TEXT = "<|text|>"  # between the speech and the text; a control symbol: no text encodes to it
SPECIALS = (PAD, UNK, BOS, EOS, TEXT)  # ids 0..4, in this order
CENTROIDS_FILE = "units.npy"
SPM_FILE = "spm.model"
CONFIG_FILE = "tokenizer.json"
STATS_FILE = "stats.json"
FORMAT = 1

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def collapse(units: np.ndarray) -> np.ndarray:
    """Each run of one unit as one unit: ``[5, 5, 9, 9, 9, 2, 5]`` -> ``[5, 9, 2, 5]``."""
    units = np.asarray(units, dtype=np.int64).reshape(-1)
    if len(units) == 0:
        return units
    keep = np.ones(len(units), dtype=bool)
    keep[1:] = units[1:] != units[:-1]
    return units[keep]


def nearest(frames: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The nearest centroid of each frame (squared Euclidean): ``(T, D)`` -> ``(T,)`` int64."""
    frames = np.asarray(frames, dtype=np.float32)
    sq = (centroids * centroids).sum(-1)  # (K,)
    out = [np.argmin(sq - 2.0 * (frames[i : i + chunk] @ centroids.T), axis=-1)  # (t, K)
           for i in range(0, len(frames), chunk)]  # fmt: skip
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def unit_string(units: Sequence[int] | np.ndarray) -> str:
    """Units as the PUA characters SentencePiece reads."""
    return "".join(chr(UNIT_BASE + int(u)) for u in units)


class SpeechTokenizer:
    """Frames or audio -> speech ids, text <-> text ids, in one vocabulary (module doc).

    ``is_speech`` and ``is_text`` are boolean tables over the vocabulary (the specials
    are neither); ``pad_id``, ``unk_id``, ``bos_id``, ``eos_id`` and ``text_id`` (the
    separator) are its special ids.
    """

    def __init__(self, centroids: np.ndarray, model: bytes, encoder_name: str,
                 frame_rate: float, lowercase: bool = True) -> None:  # fmt: skip
        """``centroids``: float32 ``(clusters, dim)``; ``model``: a serialised
        SentencePiece model holding every unit's character and the special pieces.

        Raises:
            ValueError: the model lacks a special piece or a unit's character.
        """
        import sentencepiece as spm

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # (K, D)
        self.clusters, self.dim = self.centroids.shape
        self.model = bytes(model)
        self.encoder_name = encoder_name
        self.frame_rate = float(frame_rate)
        self.lowercase = lowercase
        self.sp = spm.SentencePieceProcessor(model_proto=self.model)
        self.vocab_size = self.sp.get_piece_size()
        ids = [self.sp.piece_to_id(p) for p in SPECIALS]
        if ids != list(range(len(SPECIALS))):
            raise ValueError(f"special pieces {list(SPECIALS)} have ids {ids}, not 0..4")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.text_id = ids
        missing = [u for u in range(self.clusters)
                   if self.sp.piece_to_id(unit_string([u])) == self.unk_id]  # fmt: skip
        if missing:
            raise ValueError(f"{len(missing)} unit(s) have no piece, e.g. unit {missing[0]}")
        pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        special = np.array([i < len(SPECIALS) for i in range(self.vocab_size)])
        self.is_speech = np.array([_is_units(p, self.clusters) for p in pieces]) & ~special
        self.is_text = ~self.is_speech & ~special
        self._encoder: SpeechEncoder | None = None

    # -- speech ---------------------------------------------------------------------------

    def units(self, frames: np.ndarray) -> np.ndarray:
        """``(T, dim)`` encoder frames -> their units, repeats collapsed: ``(U,)`` int64."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"frames must be (T, {self.dim}), got {frames.shape}")
        return collapse(nearest(frames, self.centroids))

    def speech_ids(self, units: Sequence[int] | np.ndarray) -> list[int]:
        """Units (collapsed, 0..clusters-1) -> speech piece ids."""
        units = np.asarray(units, dtype=np.int64).reshape(-1)
        if len(units) and (units.min() < 0 or units.max() >= self.clusters):
            raise ValueError(f"units must be in 0..{self.clusters - 1}")
        return self.sp.encode(unit_string(units), out_type=int) if len(units) else []

    @property
    def encoder(self) -> SpeechEncoder:
        """The frozen encoder the units were fitted on, loaded on first use.

        Raises:
            ModelError: it cannot be loaded, or its frames are not ``dim`` wide.
        """
        if self._encoder is None:
            from ctxasr.speechllm.interfaces import load_encoder

            encoder = load_encoder(self.encoder_name)
            if encoder.dim != self.dim:
                raise ModelError(self.encoder_name, f"gives {encoder.dim}-wide frames, but the "
                                 f"units were fitted on {self.dim}-wide ones")  # fmt: skip
            self._encoder = encoder
        return self._encoder

    def speech_ids_of_audio(self, samples: np.ndarray) -> list[int]:
        """``(n,)`` float32 samples at 16 kHz -> speech piece ids, through the encoder."""
        return self.speech_ids(self.units(self.encoder(samples)))

    # -- text -----------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The text as the vocabulary was fitted on it: whitespace collapsed, lower-cased
        when fitted so, PUA characters (the units' alphabet) dropped."""
        text = _PUA.sub("", text)
        return " ".join((text.lower() if self.lowercase else text).split())

    def text_ids(self, text: str) -> list[int]:
        """Text -> text piece ids (never a special or a speech piece)."""
        text = self.normalize(text)
        # the model adds no dummy prefix (module doc): a leading space marks the first word
        # as the other words are marked
        return self.sp.encode(" " + text, out_type=int) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``: speech pieces and specials dropped."""
        kept = [int(i) for i in ids if 0 <= int(i) < self.vocab_size and self.is_text[int(i)]]
        return self.sp.decode(kept).strip()

    # -- the decoder's view ---------------------------------------------------------------

    def sequence(self, speech: Sequence[int], text: Sequence[int] | None = None) -> list[int]:
        """``<s> speech <|text|> text </s>``; without ``text``, the prompt to decode from:
        ``<s> speech <|text|>``."""
        prompt = [self.bos_id, *speech, self.text_id]
        return prompt if text is None else [*prompt, *text, self.eos_id]

    def piece(self, id: int) -> str:
        """The piece of ``id``; a speech piece is PUA characters (unit = code - U+E000)."""
        return self.sp.id_to_piece(int(id))

    def piece_units(self, id: int) -> list[int]:
        """The units a speech piece stands for ([] for any other piece)."""
        return [ord(c) - UNIT_BASE for c in self.piece(id)] if self.is_speech[int(id)] else []

    # -- files ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer to ``folder`` (created if needed) for :meth:`load`."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / CENTROIDS_FILE, self.centroids)
        (out / SPM_FILE).write_bytes(self.model)
        meta = {
            "format": FORMAT,
            "encoder": {"name": self.encoder_name, "dim": self.dim, "frame_rate": self.frame_rate},
            "clusters": self.clusters,
            "vocab_size": self.vocab_size,
            "lowercase": self.lowercase,
            "unit_base": UNIT_BASE,
            "special": dict(zip(("pad", "unk", "bos", "eos", "text"), range(len(SPECIALS)))),
            "pieces": {"speech": int(self.is_speech.sum()), "text": int(self.is_text.sum())},
        }
        (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> SpeechTokenizer:
        """The tokenizer saved in ``folder``.

        Raises:
            ModelError: a file is missing or corrupt, or the files do not agree.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ModelError(str(root), "not a folder: expected a speech tokenizer's folder")
        meta = _read_meta(root / CONFIG_FILE)
        centroids = _read_centroids(root / CENTROIDS_FILE)
        enc = meta["encoder"]
        if centroids.shape != (meta["clusters"], enc["dim"]):
            raise ModelError(str(root / CENTROIDS_FILE), f"holds {centroids.shape} centroids, "
                             f"not ({meta['clusters']}, {enc['dim']})")  # fmt: skip
        try:
            model = (root / SPM_FILE).read_bytes()
        except OSError as err:
            raise ModelError(
                str(root / SPM_FILE), f"cannot be read ({err.strerror or err})"
            ) from None
        try:
            tok = cls(centroids, model, enc["name"], enc["frame_rate"], meta["lowercase"])
        except (RuntimeError, ValueError) as err:
            problem = " ".join(str(err).split())
            raise ModelError(
                str(root / SPM_FILE), f"not this tokenizer's model: {problem}"
            ) from None
        if tok.vocab_size != meta["vocab_size"]:
            raise ModelError(str(root / SPM_FILE), f"has {tok.vocab_size} pieces, but "
                             f"{CONFIG_FILE} says {meta['vocab_size']}")  # fmt: skip
        return tok


_PUA = re.compile("[\ue000-\uf8ff]")


def _is_units(piece: str, clusters: int) -> bool:
    return bool(piece) and all(0 <= ord(c) - UNIT_BASE < clusters for c in piece)


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(str(path), "missing: not a speech tokenizer's folder")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        enc = meta["encoder"]
        ok = (isinstance(enc["name"], str), isinstance(enc["dim"], int),
              isinstance(enc["frame_rate"], (int, float)), isinstance(meta["clusters"], int),
              isinstance(meta["vocab_size"], int), isinstance(meta["lowercase"], bool),
              meta.get("unit_base") == UNIT_BASE)  # fmt: skip
        if not all(ok):
            raise ValueError("a field has the wrong type or value")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as err:
        raise ModelError(
            str(path), f"not a speech tokenizer config ({type(err).__name__})"
        ) from None
    except ValueError as err:
        raise ModelError(str(path), f"not a valid speech tokenizer config: {err}") from None
    return meta


def _read_centroids(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ModelError(str(path), "missing: the k-means centroids")
    try:
        centroids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ModelError(str(path), f"not a .npy array ({' '.join(str(err).split())})") from None
    if centroids.ndim != 2 or centroids.dtype != np.float32:
        raise ModelError(str(path), f"must be float32 (clusters, dim), got {centroids.dtype} "
                         f"{centroids.shape}")  # fmt: skip
    return centroids


# -- fitting ------------------------------------------------------------------------------


def fit_tokenizer(cfg: TokenizerConfig, progress: Progress | None = None) -> dict:
    """Fit the units and the joint vocabulary of ``cfg``, save them to ``cfg.out``;
    returns what it measured (also written to ``OUT/stats.json``).

    The encoder's frames of every training utterance go through the frame cache (computed
    once, then read); k-means learns from a seeded sample of at most ``max_frames`` of
    them; every utterance's collapsed units then become a speech string for SentencePiece,
    beside the text lines.

    Raises:
        CtxasrError: a bad manifest or text file, or a vocabulary the data cannot fill.
    """
    from threadpoolctl import threadpool_limits

    from ctxasr.speechllm.data import FrameCache, read_utterances
    from ctxasr.speechllm.interfaces import load_encoder

    report = progress or (lambda stage, done, total: None)
    start = time.monotonic()
    utts = read_utterances(cfg.train, cfg.lowercase)
    texts = [u.text for u in utts] + _text_lines(cfg)
    encoder = load_encoder(cfg.encoder)
    cache = FrameCache(cfg.cache_folder, [encoder])
    with threadpool_limits(limits=cfg.threads):
        lengths = []
        for i, u in enumerate(utts):  # computes the frames that are not cached yet
            lengths.append(len(cache.frames(u.audio)))
            report("frames", i + 1, len(utts))
        sample = _sample_frames(cache, utts, lengths, cfg)
        report("k-means", 0, 1)
        centroids = _kmeans(sample, cfg)
        report("k-means", 1, 1)
        speech = []
        for i, u in enumerate(utts):
            speech.append(collapse(nearest(cache.frames(u.audio), centroids)))
            report("units", i + 1, len(utts))
    report("pieces", 0, 1)
    model = _fit_pieces([unit_string(s) for s in speech], texts, cfg)
    report("pieces", 1, 1)
    tok = SpeechTokenizer(centroids, model, encoder.name, encoder.frame_rate, cfg.lowercase)
    tok.save(cfg.out)
    seconds = sum(lengths) / encoder.frame_rate
    pieces = sum(len(tok.speech_ids(s)) for s in speech)
    stats = {
        "utterances": len(utts),
        "seconds": round(seconds, 1),
        "frames": int(sum(lengths)),
        "frames_used": len(sample),
        "clusters": cfg.clusters,
        "clusters_seen": len(np.unique(np.concatenate(speech))) if speech else 0,
        "units_per_second": round(sum(map(len, speech)) / max(seconds, 1e-9), 2),
        "speech_pieces_per_second": round(pieces / max(seconds, 1e-9), 2),
        "text_lines": len(texts),
        "vocab": tok.vocab_size,
        "speech_pieces": int(tok.is_speech.sum()),
        "text_pieces": int(tok.is_text.sum()),
        "fit_seconds": round(time.monotonic() - start, 1),
    }
    (Path(cfg.out) / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def _text_lines(cfg: TokenizerConfig) -> list[str]:
    """The extra text file's sentences, normalised as transcripts are."""
    if not cfg.text:
        return []
    try:
        lines = Path(cfg.text).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CtxasrError(cfg.text, f"cannot read the text: {err}") from None
    lines = [" ".join((s.lower() if cfg.lowercase else s).split()) for s in lines]
    return [s for s in lines if s]


def _sample_frames(cache, utts, lengths: list[int], cfg: TokenizerConfig) -> np.ndarray:
    """At most ``max_frames`` frames drawn without replacement from all utterances, seeded."""
    total = sum(lengths)
    if total < cfg.clusters:
        raise CtxasrError(cfg.train, f"has {total} frames of speech, fewer than the "
                          f"{cfg.clusters} clusters ([tokenizer] clusters)")  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    picked = np.sort(rng.choice(total, size=min(total, cfg.max_frames), replace=False))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    parts = []
    for i, u in enumerate(utts):
        lo, hi = np.searchsorted(picked, starts[i : i + 2])
        if hi > lo:
            parts.append(cache.frames(u.audio)[picked[lo:hi] - starts[i]])
    return np.concatenate(parts)  # (N, D)


def _kmeans(frames: np.ndarray, cfg: TokenizerConfig) -> np.ndarray:
    """MiniBatchKMeans centroids, float32 ``(clusters, D)``."""
    from sklearn.cluster import MiniBatchKMeans

    # Large batches: steadier centroids than the default 1,024, and still cheap (a batch
    # costs batch x clusters x D). k-means++ seeds from 3 batches; the best of 3 seedings.
    batch = min(len(frames), 4096)
    km = MiniBatchKMeans(n_clusters=cfg.clusters, batch_size=batch, n_init=3,
                         random_state=cfg.seed, max_no_improvement=20)  # fmt: skip
    km.fit(frames)
    return km.cluster_centers_.astype(np.float32)


def _fit_pieces(speech: list[str], texts: list[str], cfg: TokenizerConfig) -> bytes:
    """One SentencePiece model over the speech strings and the text lines (serialised)."""
    import sentencepiece as spm

    text = [" " + _PUA.sub("", t) for t in texts]  # the leading space: see text_ids
    sentences = [s for s in speech + text if s.strip()]
    if not sentences:
        raise CtxasrError(cfg.train, "has neither speech nor text to fit a vocabulary on")
    model = io.BytesIO()
    spm.set_random_generator_seed(cfg.seed)  # unigram's sampling; BPE needs none
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab,
            character_coverage=1.0,  # every character of the text, none mapped to <unk>
            required_chars=unit_string(range(cfg.clusters)),  # every unit, even one unseen
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
            control_symbols=[TEXT],
            # No "▁" before a speech string (it would join its first unit); the text
            # lines carry their own leading space, kept as written.
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            max_sentence_length=max(len(s.encode()) for s in sentences) + 1,  # in bytes
            max_sentencepiece_length=16,
            num_threads=cfg.threads,
            minloglevel=2,
        )  # fmt: skip
    except RuntimeError as err:
        problem = " ".join(str(err).split())
        too_high = re.search(r"Vocabulary size too high .*?<= (\d+)", problem)
        if too_high:
            problem = (f"too little speech and text for [tokenizer] vocab = {cfg.vocab}: "
                       f"at most {too_high[1]}")  # fmt: skip
        raise CtxasrError(cfg.train, f"cannot fit the vocabulary: {problem}") from None
    return model.getvalue()
