"""Recipes of the speech LLM: frozen dataclasses with defaults and checks, read from TOML.

A config file has a ``[train]`` table (``TrainConfig``) and a ``[model]`` table
(``ModelConfig``) with sub-tables ``[model.projector]``, ``[model.pooling]`` and
``[model.lora]``. Unknown keys and bad values are one-line ``CtxasrError``\\ s naming
the file, the table and the key. Relative paths in ``[train]`` are taken from the
config file's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxasr.errors import CtxasrError
from ctxasr.training import at_least, build_table, check_known, one_of, read_toml, tuples

CONTEXT_START = "<|startofcontext|>"
CONTEXT_END = "<|endofcontext|>"
# SAP²-ASR's prompt; ``{keywords}`` becomes the (pooled) context embeddings.
DEFAULT_PROMPT = (
    "Transcribe speech to text according to keywords may appear in the utterance. "
    f"Possible keywords are: {CONTEXT_START}{{keywords}}{CONTEXT_END}"
)
DEFAULT_PROMPT_NO_CONTEXT = "Transcribe speech to text."
DEFAULT_LLM = "smollm2-135m-instruct"  # offline, resolved by speechllm.llm.load_llm
TINY_LLM = "tiny-random"  # a 2-layer random Llama built in code, for tests


@dataclass(frozen=True)
class ProjectorConfig:
    """Frame stacking, then a linear map or a 2-layer MLP to the LLM's hidden size."""

    stack: int = 4  # k consecutive frames become one LLM input embedding
    kind: str = "linear"  # "linear" | "mlp"
    hidden: int = 0  # the MLP's inner width; 0: the LLM's hidden size

    def __post_init__(self) -> None:
        at_least(self, "stack", 1)
        at_least(self, "hidden", 0)
        one_of(self, "kind", ("linear", "mlp"))


@dataclass(frozen=True)
class PoolingConfig:
    """How the context's token embeddings are compressed (``ctxasr.speechllm.pooling``)."""

    kind: str = "sap"  # "sap" (speech-driven attention) | "mean" (window mean) | "none"
    window: int = 2  # w context tokens become one embedding
    heads: int = 4  # attention heads of SAP; must divide the LLM's hidden size

    def __post_init__(self) -> None:
        at_least(self, "window", 1)
        at_least(self, "heads", 1)
        one_of(self, "kind", ("sap", "mean", "none"))


@dataclass(frozen=True)
class LoRAConfig:
    """peft's LoRA on the LLM; ``r = 0`` leaves the LLM untouched (frozen)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        at_least(self, "r", 0)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.r and not self.targets:
            raise ValueError("targets must name at least one module when r > 0")


@dataclass(frozen=True)
class ModelConfig:
    """What ``SpeechLLM`` is built from; saved as the checkpoint's ``config.json``."""

    encoders: tuple[str, ...] = ("whisper:tiny.en",)  # more than one: MoSE
    llm: str = DEFAULT_LLM
    speech_dim: int = 0  # MoSE's common dim; 0: the widest encoder's
    prompt: str = DEFAULT_PROMPT  # must hold "{keywords}"
    prompt_no_context: str = DEFAULT_PROMPT_NO_CONTEXT  # when an utterance has no context
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def __post_init__(self) -> None:
        if not self.encoders or not all(isinstance(e, str) and e for e in self.encoders):
            raise ValueError(f"encoders must be a non-empty list of names, got {self.encoders!r}")
        if len(set(self.encoders)) != len(self.encoders):
            raise ValueError(f"encoders names one encoder twice: {list(self.encoders)}")
        at_least(self, "speech_dim", 0)
        if self.prompt.count("{keywords}") != 1:
            raise ValueError("prompt must hold '{keywords}' exactly once")
        if "{keywords}" in self.prompt_no_context:
            raise ValueError("prompt_no_context must not hold '{keywords}'")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelConfig:
        """The inverse of ``to_json``; a ``TypeError``/``ValueError`` for bad input."""
        obj = dict(obj)
        parts = {"projector": ProjectorConfig, "pooling": PoolingConfig, "lora": LoRAConfig}
        for key, kind in parts.items():
            if key in obj:
                obj[key] = kind(**tuples(kind, obj[key]))
        return cls(**tuples(cls, obj))


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: the ``[train]`` table, and the ``[model]`` it trains."""

    train: str  # NeMo-style JSONL manifest: audio_filepath, text, optional context
    out: str  # the run's folder: encoder cache, training state, then the checkpoint
    dev: str = ""  # manifest scored every ``eval_every`` steps and at the end ("": none)
    word_pool: str = ""  # distractor words, one a line ("": the training set's rare words)
    seed: int = 0
    steps: int = 2000  # optimizer updates of the whole model (after ``ctc_steps``)
    ctc_steps: int = 0  # updates of the speech side alone by CTC first (speechllm.align)
    ctc_weight: float = 0.0  # the CTC loss's weight beside the LM's during ``steps``
    ctc_lr: float = 0.0  # the CTC stage's learning rate (0: ``lr``)
    batch: int = 8  # utterances per micro-batch
    grad_accum: int = 1  # micro-batches per update
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 0
    eval_every: int = 500
    save_every: int = 500
    distractors: int = 20  # random pool words added to an utterance's rare words
    no_context: float = 0.1  # probability of training an utterance without a context
    lowercase: bool = True  # targets (and contexts) lower-cased
    bucket: int = 20  # micro-batches per duration bucket
    max_new_tokens: int = 128  # dev decoding
    # Dev decoding by joint CTC/attention search at this CTC weight (a run with a CTC head;
    # as ``ctxasr transcribe --ctc-weight``); 0: greedy by the LM alone, batched.
    dev_ctc_weight: float = 0.0
    threads: int = 2  # CPU threads of torch
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "grad_accum", "eval_every", "save_every", "threads",
                     "bucket", "max_new_tokens"):  # fmt: skip
            at_least(self, name, 1)
        at_least(self, "warmup", 0)
        at_least(self, "ctc_steps", 0)
        at_least(self, "distractors", 0)
        if self.ctc_weight < 0:
            raise ValueError(f"ctc_weight must not be negative, got {self.ctc_weight}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.dev_ctc_weight <= 1.0:
            raise ValueError(f"dev_ctc_weight must be in [0, 1], got {self.dev_ctc_weight}")
        if self.ctc_lr < 0:
            raise ValueError(f"ctc_lr must not be negative, got {self.ctc_lr}")
        if not 0.0 <= self.no_context <= 1.0:
            raise ValueError(f"no_context must be a probability in [0, 1], got {self.no_context}")


def read_config(path: str | Path) -> TrainConfig:
    """A ``TrainConfig`` from a TOML file; unknown keys are errors, not ignored.

    Raises:
        CtxasrError: ``"<file>: [table] key: problem"`` for a bad file, table or value.
    """
    p = Path(path)
    raw = read_toml(p)
    check_known(p, "the file", raw, {"train", "model"})
    model = dict(raw.get("model", {}))
    parts = {"projector": ProjectorConfig, "pooling": PoolingConfig, "lora": LoRAConfig}
    for key, kind in parts.items():
        model[key] = build_table(p, f"model.{key}", kind, model.get(key, {}))
    built = build_table(p, "model", ModelConfig, model, skip=set(parts))
    train = dict(raw.get("train", {}))
    for key in ("train", "out"):
        if key not in train:
            raise CtxasrError(str(p), f"[train] needs '{key}'")
    for key in ("train", "out", "dev", "word_pool"):
        if isinstance(train.get(key), str) and train[key]:
            train[key] = str((p.parent / train[key]).resolve())
    return build_table(p, "train", TrainConfig, {**train, "model": built}, skip={"model"})
