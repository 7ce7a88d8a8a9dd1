"""A trained retriever that listens: Attention2Probability (A2P) over Whisper encoder frames.

``A2PScorer`` (numpy) scores context terms against a stretch of speech; ``model`` (torch),
``data`` and ``train`` build and train it.
"""

from ctxasr.a2p.scorer import A2PScorer, Memory, TermTable

__all__ = ["A2PScorer", "Memory", "TermTable"]
