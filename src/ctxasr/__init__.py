"""ctxasr: contextual speech recognition.

>>> from ctxasr import Transcriber
>>> result = Transcriber().transcribe("talk.flac", context=["Kubernetes", "etcd"])
"""

from ctxasr.context.terms import ContextTerm
from ctxasr.errors import AudioError, ContextError, CtxasrError, ModelError
from ctxasr.results import Segment, Transcript, Word
from ctxasr.transcribe import ModelOptions, TranscribeOptions, Transcriber
from ctxasr.vad import VadOptions

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "ContextError",
    "ContextTerm",
    "CtxasrError",
    "ModelError",
    "ModelOptions",
    "Segment",
    "TranscribeOptions",
    "Transcriber",
    "Transcript",
    "VadOptions",
    "Word",
    "__version__",
]
