"""Server settings: from ``CTXASR_*`` environment variables, overridden by flags.

The decoding and model settings are ``TranscribeOptions`` and ``ModelOptions`` themselves
(``decoding`` and ``engine``), checked by them, so the server offers what the command
line offers with the same defaults and ranges. Their fields read the flat names users
already set (``CTXASR_BEAM_SIZE``, ``CTXASR_BACKEND``, ...) as well as the nested ones
(``CTXASR_DECODING__BEAM_SIZE``); ``ServerSettings(beam_size=3)`` works too.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ctxasr.cpus import cpu_count
from ctxasr.options import (
    PER_REQUEST,
    ModelOptions,
    TranscribeOptions,
    check_backend,
    shell_fields,
)

MIB = 1024 * 1024
MAX_DEFAULT_CONCURRENCY = 8  # each running transcription holds its own decoder state
ENV_PREFIX = "CTXASR_"
# The nested settings whose shell fields are also read by their flat names.
NESTED: dict[str, type] = {"decoding": TranscribeOptions, "engine": ModelOptions}


def default_concurrency() -> int:
    return max(1, min(MAX_DEFAULT_CONCURRENCY, cpu_count()))


def flat_fields() -> dict[str, str]:
    """Flat setting name -> the nested setting that holds it (``beam_size`` -> decoding)."""
    return {
        f.name: nested
        for nested, owner in NESTED.items()
        for f in shell_fields(owner)
        if f.name not in PER_REQUEST
    }


class _FlatEnvironment(PydanticBaseSettingsSource):
    """``CTXASR_<FIELD>`` for the nested options' fields, as flat names."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads everything at once

    def __call__(self) -> dict[str, Any]:
        return {
            name: os.environ[key]
            for name in flat_fields()
            if (key := ENV_PREFIX + name.upper()) in os.environ
        }


class ServerSettings(BaseSettings):
    """How ``ctxasr serve`` runs. Each field reads ``CTXASR_<NAME>`` from the environment.

    Frozen: the app reads it once at start; change it by starting another server.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    host: str = "127.0.0.1"
    """Interface to listen on; 0.0.0.0 for every interface."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0: any free port)."""
    model: str | None = None
    """Model to load once at start: tiny.en (packaged, default), base (multilingual, with
    the ``base`` extra), a CTranslate2 model directory, or a faster-whisper model name."""
    model_aliases: tuple[str, ...] = ("whisper-1",)
    """Other names clients may send in the ``model`` field for the loaded model (OpenAI's
    tools send ``whisper-1``)."""
    concurrency: int = Field(default_factory=lambda: default_concurrency(), ge=1, le=64)
    """Transcriptions that run at once; default one per CPU, at most 8, each with
    ``cpu_threads`` = CPUs / concurrency. Much of a transcription is single-threaded
    (decoding the upload, VAD, beam bookkeeping), so parallel requests on one thread
    each use the cores better than one request on all: on 2 CPUs, 2 x 1 thread served
    1.4-1.5x the requests per second of 1 x 2 threads, for 15% more latency when only one
    client is asking (``bench/results/serve_load.md``)."""
    max_queue: int = Field(8, ge=0)
    """Requests that may wait for a free slot; beyond that the server answers 503 with
    Retry-After."""
    max_upload_bytes: int = Field(25 * MIB, ge=1)
    """Largest request body accepted (OpenAI's limit is 25 MB); larger answers 413."""
    request_timeout: float = Field(600.0, gt=0)
    """Seconds a request may take, queueing included; then 504 and the work stops."""
    shutdown_grace: float = Field(30.0, ge=0)
    """On SIGTERM, seconds in-flight requests get to finish before they are cancelled."""
    decoding: TranscribeOptions = Field(default_factory=TranscribeOptions)
    """How requests are decoded (``retriever``, ``beam_size``, ``fusion_weight``, ...);
    a request's own fields (language, temperature, timestamps) override these."""
    engine: ModelOptions = Field(default_factory=ModelOptions)
    """Where the model runs (``backend``, ``device``, ``compute_type``, ``cpu_threads``:
    threads per transcription, 0 for the CPUs shared out among ``concurrency``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        flat = _FlatEnvironment(settings_cls)
        return init_settings, env_settings, flat, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        """Fold flat names (``beam_size=3``, ``CTXASR_BEAM_SIZE``) into their options."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, nested in flat_fields().items():
            if name not in data:
                continue
            value = data.pop(name)
            current = data.get(nested, {})
            if dataclasses.is_dataclass(current):
                current = dataclasses.asdict(current)
            data[nested] = {**current, name: value}
        return data

    @model_validator(mode="after")
    def _together(self) -> ServerSettings:
        check_backend(self.decoding, self.engine.backend)
        return self

    @property
    def threads_per_transcription(self) -> int:
        return self.engine.cpu_threads or max(1, cpu_count() // self.concurrency)

    def model_options(self) -> ModelOptions:
        """The model's options, with room for ``concurrency`` decodes at once."""
        return dataclasses.replace(self.engine, cpu_threads=self.threads_per_transcription,
                                   num_workers=self.concurrency)  # fmt: skip


def server_decoding(settings: ServerSettings) -> dict[str, Any]:
    """The decoding fields the server's settings set (those the shells offer), by name."""
    return {
        name: getattr(settings.decoding, name)
        for name, nested in flat_fields().items()
        if nested == "decoding"
    }
