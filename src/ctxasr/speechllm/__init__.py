"""The LLM-based contextual recognizer (SAP²-ASR with a mixture of speech encoders).

Frozen speech encoder(s) -> MoSE (``mose``) -> frame-stacking projector (``projector``)
-> a causal LM adapted with LoRA (``model``). The pruned keywords go in the prompt
between ``<|startofcontext|>`` and ``<|endofcontext|>``, their token embeddings
compressed by speech-driven attention-based pooling (``pooling``). Trained with
``ctxasr train speechllm CONFIG`` (``train``, ``data``; recipes in ``config``).

Nothing here is imported by the package at start-up: torch, transformers and peft load
only when a module of this package is imported.
"""
