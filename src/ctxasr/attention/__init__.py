"""Attention kernels for long prompts: ``unique`` is top-k sparse attention over pages of the
KV cache (UNIQUE), usable by any transformers causal LM through its ``AttentionInterface``.

Nothing here is imported by the package at start-up: torch loads only when a module of this
package is imported, transformers only when a model is switched to it.
"""
