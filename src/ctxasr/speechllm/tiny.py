"""``llm = "tiny-random"``: a 2-layer random Llama with Whisper's tokenizer, built in code.

For tests and CI: it needs no download (the tokenizer is the packaged Whisper tiny.en's
``tokenizer.json``) and is the same on every build (seeded), so a checkpoint trained on it
can be loaded again.
"""

from __future__ import annotations

from pathlib import Path

import torch

HIDDEN, LAYERS, HEADS = 64, 2, 4
EOS = "<|endoftext|>"


def tiny_tokenizer():
    """Whisper tiny.en's byte-level BPE (50k tokens) as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from ctxasr.models import resolve_model

    path = Path(resolve_model(None).path) / "tokenizer.json"
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, pad_token=EOS)


def tiny_llm(seed: int = 0):
    """``(model, tokenizer)``: a random ``LlamaForCausalLM``, the same for the same seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
        max_position_embeddings=2048, tie_word_embeddings=True,
        # Wider than Llama's 0.02 so that a frozen random output layer can still put one
        # token well above the others: the overfitting test decodes greedily.
        initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id,  # no pad_token_id: Llama would zero its row
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer
