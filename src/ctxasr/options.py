"""The options of a transcription, each declared once: default, range, choices and help.

``TranscribeOptions`` (how each window is decoded) and ``ModelOptions`` (where the model
runs) are frozen dataclasses, checked when built. Every field the shells offer carries an
``Option`` in its metadata, and the shells derive their flags from it: ``ctxasr
transcribe``, ``ctxasr batch`` and ``ctxasr serve`` get the same ``--beam-size`` (its
default, its 1-20 range, its help) from ``TranscribeOptions.beam_size`` alone, and the
server reads the same field from ``CTXASR_BEAM_SIZE``. Override per call with
``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ctxasr.context.hybrid import AudioOptions, HybridOptions
from ctxasr.context.prompt import PROMPT_BUDGET
from ctxasr.context.retrieval import PhoneticOptions
from ctxasr.vad import VadOptions

RETRIEVERS = ("hybrid", "a2p", "phonetic", "all", "none")
LISTENING = ("hybrid", "a2p")  # retrievers that need the audio scorer
BACKENDS = ("ct2", "torch", "speechllm", "madeon")
FUSING = ("torch", "speechllm", "madeon")  # backends whose search ctxasr owns: fusion runs there
# Backends whose second pass is a recognizer of clips that Whisper's first pass cut:
# segment times, no word timestamps; a checkpoint folder.
CLIP_BACKENDS = ("speechllm", "madeon")
TORCH_DTYPES = ("float32", "bfloat16")
# Fields each request of the server sets for itself, as OpenAI's API has them.
PER_REQUEST = ("language", "word_timestamps")


@dataclass(frozen=True)
class Option:
    """What the shells need to offer a field: its flag, help, range and choices.

    ``flags`` are the command line's names (the first, without dashes and with ``_``
    for ``-``, is also the server's ``CTXASR_<NAME>``); empty for fields only the library
    sets. ``auto`` is the word that stands for None on the command line ("auto" for a
    detected language).
    """

    help: str
    flags: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    auto: str | None = None
    path: bool = False  # a file or folder: the CLI checks nothing more, the library reads it

    @property
    def name(self) -> str:
        """The shells' name of the field: ``beam_size`` for ``--beam-size``."""
        return self.flags[0].lstrip("-").split("/")[0].replace("-", "_")


def option(default: Any, help: str, *flags: str, **spec: Any) -> Any:
    """A dataclass field with its default and its ``Option``."""
    return field(default=default, metadata={"option": Option(help, flags, **spec)})


def option_of(owner: type, name: str) -> Option | None:
    """The ``Option`` of ``owner``'s field ``name``, or None when it has none."""
    found = {f.name: f for f in dataclasses.fields(owner)}[name]
    return found.metadata.get("option")


def shell_fields(owner: type) -> list[dataclasses.Field]:
    """The fields of an options class that the shells offer (those with flags)."""
    return [f for f in dataclasses.fields(owner) if (o := f.metadata.get("option")) and o.flags]


class OptionError(ValueError):
    """An option's value is out of its range or choices, or clashes with another's.

    ``field`` names the option at fault, so a shell can name its own flag for it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_fields(obj: object) -> None:
    """Check each field of a frozen options object against its ``Option``."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        spec: Option | None = f.metadata.get("option")
        value = getattr(obj, f.name)
        if spec is None or value is None or isinstance(value, bool):
            continue
        if spec.choices and value not in spec.choices:
            raise OptionError(f.name, f"{f.name} must be one of {', '.join(spec.choices)}, "
                              f"got {value!r}")  # fmt: skip
        if spec.min is None and spec.max is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f.name, f"{f.name} must be a finite number, got {value}")
        if (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max
        ):
            if spec.max is None:
                bounds = f"at least {spec.min:g}"
            elif spec.min is None:
                bounds = f"at most {spec.max:g}"
            else:
                bounds = f"between {spec.min:g} and {spec.max:g}"
            raise OptionError(f.name, f"{f.name} must be {bounds}, got {value}")


RETRIEVER_HELP = (
    "hybrid: a first pass's words shortlist the terms by sound, a trained audio scorer "
    "re-ranks them, the picks go to a second pass (any context size); a2p: the audio "
    "scorer alone over the whole list (small contexts); phonetic: the sound match "
    "alone; all: the whole list in the prompt, as far as it fits; none: ignore the context."
)
VERIFY_FROM = 30_000  # terms; see ``TranscribeOptions.verify``


@dataclass(frozen=True)
class TranscribeOptions:
    """How each window is decoded. Override per call with ``dataclasses.replace``."""

    language: str | None = option(
        "en", "Spoken language; 'auto' to detect it per window (multilingual models).",
        "--language", "-l", auto="auto",
    )  # fmt: skip
    beam_size: int = option(5, "Beam width.", "--beam-size", min=1, max=20)
    word_timestamps: bool = option(False, "Add word timings (JSON).", "--word-timestamps")
    # Whisper's own fallback: re-decode at a higher temperature when the text looks like
    # a loop (compression ratio) or the model is unsure (log-probability).
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    # Whether the previous text follows the context terms in the prompt. Off by default:
    # on long recordings, feeding Whisper its own output lets one bad window (a list
    # style, a skipped stretch) derail the next ones. Measured on 12 min of real speech
    # (bench/transcribe_speed.py's long file): WER 18.5% with it, 11.6% without, and
    # 25% less time; plain faster-whisper, which conditions, scored 10.9% there.
    condition_on_previous_text: bool = False
    # Tokens of the prompt the context terms may take (Whisper's whole prompt is capped
    # at 223 tokens; the previous window's text gets what the terms leave).
    prompt_budget: int = option(PROMPT_BUDGET, "Prompt tokens for terms.", min=0, max=223)
    # Respell decoded near-misses of the offered terms ("there under" -> "thereunder").
    respell_terms: bool = True
    # How the context reaches the decoder. "phonetic": speech-aware pruning -- a first
    # pass without context, the terms it heard (matched by sound) in a second pass's
    # prompt; any context size. "all": the whole list in every prompt, as far as the
    # budget goes (the usual prompting; fine for a handful of terms). "none": ignore it.
    # "hybrid": the phonetic index shortlists by sound, a trained audio scorer (A2P,
    # ``ctxasr.a2p``) re-ranks the shortlist on the stretch's encoder frames. "a2p": the
    # audio scorer alone over the whole list (small contexts).
    retriever: str = option("phonetic", RETRIEVER_HELP, "--retriever", choices=RETRIEVERS)
    # First-pass hypotheses the retriever sees (at most beam_size).
    nbest: int = option(5, "First-pass hypotheses the retriever sees.", min=1)
    retrieval: PhoneticOptions = field(default_factory=PhoneticOptions)
    hybrid: HybridOptions = field(default_factory=HybridOptions)
    audio_retrieval: AudioOptions = field(default_factory=AudioOptions)
    # The audio scorer's weights (a directory with model.safetensors and config.json);
    # None: the packaged ones, trained for the packaged tiny.en.
    scorer: str | None = option(
        None, "Weights of the audio scorer for hybrid/a2p (a directory from `ctxasr train "
        "retriever`); default: the packaged ones.", "--scorer", path=True,
    )  # fmt: skip
    # Decoder verification of the second pass: each stretch where pass 2 brings a picked
    # term in is scored, with and without the change, by a prompt-free forced decode of
    # the same audio; the change is kept when it costs at most ``verify_margin`` nats.
    # It keeps distractors that the prompt pushed into the text out of it. None: only
    # for contexts of at least ``verify_from`` terms. Measured (bench/results/
    # context_scaling.md, real-speech / real-speech-2): at 100,000 terms, where most
    # picks are distractors, it cut B-WER 17.65 -> 8.82 / 30.74 -> 28.15 and U-WER
    # 8.43 -> 6.02 / 15.04 -> 13.85; at 10,000 it was mixed (U-WER better on both, B-WER
    # 23.33 -> 27.41 on real-speech-2); at 1,000 it rejected true terms' changes
    # (real-speech-2 B-WER 19.63 -> 27.04). 30,000 is the geometric middle of 10,000 and
    # 100,000: the crossover lies between them, not measured more closely.
    verify: bool | None = option(
        None, "Keep a second-pass change only when a prompt-free forced decode of the same "
        "audio finds it at most --verify-margin nats less likely than the first pass's "
        f"words. [default: on for contexts of {VERIFY_FROM:,} terms or more]",
        "--verify/--no-verify",
    )  # fmt: skip
    verify_margin: float = option(
        2.0, "Nats a verified change may cost (higher: more terms, more distractors).",
        "--verify-margin", min=0.0,
    )  # fmt: skip
    verify_from: int = option(VERIFY_FROM, "Terms from which verification is on.", min=1)
    # Store the index of a large context (>= 2,000 terms), and the language model of a
    # large document (>= 200,000 characters), on disk under its content hash
    # ($CTXASR_CACHE, else ~/.cache/ctxasr/index), so the next run skips the build.
    cache_index: bool = True
    # Shallow fusion (torch and speechllm backends): during beam search each token that
    # continues a chosen term earns ``fusion_weight`` in log-probability, taken back if the
    # term is abandoned (``context.graph``). The terms are those the retriever chose: pass
    # 2's picks with "phonetic", the whole list with "all". 0 turns fusion off. The
    # packaged speech LLM reads its prompt's terms poorly; fusion at 3 is what cut its
    # B-WER (bench/results/speechllm.md).
    fusion_weight: float = option(
        0.0, "Shallow fusion (torch and speechllm backends): log-probability bonus per token "
        "of a context term the search is spelling, taken back if it stops short. 0: off.",
        "--fusion-weight", min=0.0,
    )  # fmt: skip
    # Joint CTC/attention decoding of the speech LLM (backend "speechllm", checkpoints
    # trained with a CTC head): each step weighs the LM's log-probability by 1 - w and the
    # CTC prefix score's gain by w. On the packaged CPU-trained checkpoint (bench/results/
    # speechllm.md) real-speech WER was 127.6 with the LM alone and 45.2 at w = 0.7, chosen
    # on the first 20 real-speech clips (w 0.5 / 0.7 / 0.9: WER 56 / 50 / 48, B-WER best at
    # 0.7); the CTC side keeps a weak LM from wandering off the audio. A well-trained LLM
    # wants less (0.3 is usual). Other backends, and checkpoints without a CTC head,
    # ignore it.
    ctc_weight: float = option(
        0.7, "Speech LLM backend: weight of the CTC prefix score in joint CTC/attention "
        "decoding (checkpoints with a CTC head; 0: the LM alone).", "--ctc-weight",
        min=0.0, max=1.0,
    )  # fmt: skip
    # Whether the chosen terms also go into the decoder prompt. Off gives fusion only.
    context_prompt: bool = option(
        True, "Put the chosen terms in the decoder prompt (off: fusion only).",
        "--context-prompt/--no-context-prompt",
    )  # fmt: skip
    # A document given as context (``--context-text``) also becomes a language model of
    # its text (``ctxasr.context.ngram``): a token n-gram that re-ranks the n-best of
    # every beam search of the ct2 and torch backends (CTranslate2's search has no hook
    # for more; ``lm_in_search`` fuses it at every step of the torch search), with the
    # decoder's internal LM, estimated on a zero encoder output, subtracted (HAED).
    # Measured on the document benchmark's development sets (bench/results/documents.md,
    # ct2, synth-hard / real-speech-2 chapters): WER 19.03 -> 18.64 / 6.40 -> 6.08 with
    # terms + LM + ILM against no context. The weight sweep there found no setting
    # clearly better than 0.3 / 0.3 on both sets (differences of 1-3 errors).
    domain_lm: bool = option(
        True, "Build a language model of the context's documents (--context-text, a "
        "manifest's context_text) and re-rank each search's n-best with it.",
        "--domain-lm/--no-domain-lm",
    )  # fmt: skip
    lm_weight: float = option(
        0.3, "Weight of the documents' language model (log-probability).", "--lm-weight",
        min=0.0, max=2.0,
    )  # fmt: skip
    ilm_weight: float = option(
        0.3, "Weight of the decoder's internal language model, subtracted where the "
        "documents' model is added (0: add without subtracting).", "--ilm-weight",
        min=0.0, max=2.0,
    )  # fmt: skip
    # The documents' n-gram mixed with the internal LM (``ngram.DomainScorer``): a word
    # the documents never use then costs at most lm_weight * ln 2 more.
    lm_mix: float = option(0.5, "Share of the documents' n-gram in the domain LM.", min=0.01,
                           max=1.0)  # fmt: skip
    lm_order: int = option(4, "N-gram order of the domain LM, in tokens.", min=1, max=8)
    # Where the torch backend applies the domain LM: re-ranking its n-best, as on ct2
    # (default), or at every step of its search. Every step costs a second decoder pass
    # (the internal LM), 1.9-2.3x the time, and on real speech it did worse than no
    # context (bench/results/documents.md: real-speech-2 chapters WER 6.24 -> 7.18).
    lm_in_search: bool = option(
        False, "Torch backend: fuse the domain LM at every beam step (slower; measured worse "
        "on real speech) instead of re-ranking the n-best.", "--lm-in-search/--lm-rescore",
    )  # fmt: skip
    vad: VadOptions = field(default_factory=VadOptions)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.context_prompt and self.fusion_weight == 0 and self.retriever != "none":
            raise OptionError("context_prompt", "with context_prompt off, only fusion carries "
                              "the context: set fusion_weight above 0 (or retriever 'none')")  # fmt: skip

    def verifies(self, terms: int) -> bool:
        """Whether second passes over a context of ``terms`` terms are verified."""
        return self.verify if self.verify is not None else terms >= self.verify_from


@dataclass(frozen=True)
class ModelOptions:
    """Where and how the model runs.

    ``backend`` "ct2" runs CTranslate2 (fastest on CPUs); "torch" runs ctxasr's own
    PyTorch Whisper and beam search (``ctxasr.whisper``) on the same weights, in float32
    on the CPU, which shallow fusion needs. ``torch_weights`` loads the torch backend's
    weights from elsewhere (an openai-whisper ``.pt`` or a Hugging Face directory of the
    same model); the tokenizer and features still come from the model directory.
    """

    device: str = option("cpu", "cpu, cuda or auto.", "--device")
    # ct2: int8 weights are about 2x faster than float32 on CPUs
    compute_type: str = option("int8", "int8, float16, float32, ...", "--compute-type")
    cpu_threads: int = option(0, "CPU threads (0: the library's default).", "--threads", min=0)
    num_workers: int = option(1, "Decodes the model may run at once.", min=1)
    backend: str = option(
        "ct2", "ct2: CTranslate2 (fastest on CPUs); torch: ctxasr's PyTorch Whisper and beam "
        "search on the same weights (pip install torch==2.13.0 'ctxasr[torch]'); speechllm: "
        "Whisper cuts and hears, then a speech LLM transcribes with the picked terms in its "
        "prompt (pip install 'ctxasr[speechllm]'; see the README); madeon: the same with a "
        "decoder-only Mamba over speech tokens (--checkpoint from `ctxasr train madeon`). "
        "torch, speechllm and madeon take --fusion-weight.", "--backend", choices=BACKENDS,
    )  # fmt: skip
    torch_weights: str | None = None
    # The clip recognizer's checkpoint folder (``ctxasr train speechllm`` / ``madeon``);
    # None: the packaged speech LLM (MADEON has no packaged checkpoint).
    checkpoint: str | None = option(
        None, "Checkpoint folder for --backend speechllm (default: the packaged one) or "
        "madeon (required).", "--checkpoint", path=True,
    )  # fmt: skip
    # The torch backend's precision: "float32" matches CTranslate2's float32 closely;
    # "bfloat16" is several times faster on CPUs with bf16 instructions (AVX512-BF16).
    torch_dtype: str = option(
        "float32", "Precision of the torch backend: float32, or bfloat16 (faster on CPUs with "
        "AVX512-BF16).", "--torch-dtype", choices=TORCH_DTYPES,
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_fields(self)
        if self.torch_weights is not None and self.backend != "torch":
            raise OptionError("torch_weights", "torch_weights needs backend 'torch'")
        if self.checkpoint is not None and self.backend not in CLIP_BACKENDS:
            raise OptionError("checkpoint", "checkpoint needs backend 'speechllm' or 'madeon'")


def check_backend(options: TranscribeOptions, backend: str) -> None:
    """Shallow fusion runs in ctxasr's own search, which only the torch, speechllm and
    madeon backends have; the clip recognizers give no word timestamps."""
    if options.fusion_weight > 0 and backend not in FUSING:
        raise OptionError("fusion_weight", "fusion_weight needs backend torch, speechllm or "
                          "madeon: shallow fusion runs in ctxasr's own search")  # fmt: skip
    if options.word_timestamps and backend in CLIP_BACKENDS:
        raise OptionError("word_timestamps", f"the {backend} backend gives segment times, not "
                          "word timestamps: use backend ct2 or torch")  # fmt: skip
