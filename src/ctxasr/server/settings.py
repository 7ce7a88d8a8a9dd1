"""Server settings: from ``CTXASR_*`` environment variables, overridden by flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctxasr.cpus import cpu_count
from ctxasr.transcribe import BACKENDS, RETRIEVERS, TORCH_DTYPES, TranscribeOptions

MIB = 1024 * 1024
MAX_DEFAULT_CONCURRENCY = 8  # each running transcription holds its own decoder state


def default_concurrency() -> int:
    return max(1, min(MAX_DEFAULT_CONCURRENCY, cpu_count()))


class ServerSettings(BaseSettings):
    """How ``ctxasr serve`` runs. Each field reads ``CTXASR_<NAME>`` from the environment.

    Frozen: the app reads it once at start; change it by starting another server.
    """

    model_config = SettingsConfigDict(env_prefix="CTXASR_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Interface to listen on; 0.0.0.0 for every interface."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port (0: any free port)."""
    model: str | None = None
    """Model to load once at start: tiny.en (packaged, default), a CTranslate2 model
    directory, or a faster-whisper model name."""
    model_aliases: tuple[str, ...] = ("whisper-1",)
    """Other names clients may send in the ``model`` field for the loaded model (OpenAI's
    tools send ``whisper-1``)."""
    backend: str = "ct2"
    """ct2 (CTranslate2, fastest on CPUs) or torch (needed for shallow fusion)."""
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0)
    """CPU threads per transcription (0: the CPUs shared out among ``concurrency``)."""
    torch_dtype: str = "float32"
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
    retriever: str = TranscribeOptions.retriever
    """How a request's context is used (see ``TranscribeOptions.retriever``)."""
    fusion_weight: float = Field(0.0, ge=0)
    """Shallow-fusion bonus per context token (torch backend only); 0: off."""
    beam_size: int = Field(5, ge=1, le=20)

    @property
    def threads_per_transcription(self) -> int:
        return self.cpu_threads or max(1, cpu_count() // self.concurrency)

    def model_post_init(self, _context: object) -> None:
        for name, value, allowed in (
            ("backend", self.backend, BACKENDS),
            ("retriever", self.retriever, RETRIEVERS),
            ("torch_dtype", self.torch_dtype, TORCH_DTYPES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.fusion_weight > 0 and self.backend != "torch":
            raise ValueError("fusion_weight needs backend 'torch'")
