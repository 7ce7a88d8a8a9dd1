"""Greedy and beam search over a causal LM's KV cache, written out so that ctxasr owns the
loop: a :class:`ScoreHook` (the context graph's shallow fusion) can add a bonus to any
token's log-probability at every step of every hypothesis.

Both start from input *embeddings* (the speech LLM's prompt, context and speech) and feed
back the embeddings of the chosen tokens (``embed``), so the LM never sees token ids.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

Embed = Callable[[torch.Tensor], torch.Tensor]  # (B, N) token ids -> (B, N, H)


class ScoreHook(Protocol):
    """Per-step score adjustment: add bonuses, in log-probability units, to ``logp`` (the
    next token's ``(V,)`` log-probabilities of a hypothesis whose tokens so far are
    ``tokens``), in place. The context graph's shallow fusion is one
    (``ctxasr.speechllm.fusion.GraphHook``)."""

    def adjust(self, tokens: Sequence[int], logp: torch.Tensor) -> None: ...


def _run(lm, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache):
    """One LM call: ``(B, N, H)`` -> next-token log-probs ``(B, V)`` and the new cache."""
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
             use_cache=True, **{_CACHE: cache})  # fmt: skip
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), getattr(out, _CACHE)


def _cache_argument() -> str:
    """transformers 5.2x calls the KV cache ``cache``; earlier releases ``past_key_values``."""
    from transformers import LlamaForCausalLM

    return "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else (
        "past_key_values")  # fmt: skip


_CACHE = _cache_argument()


def _adjust(logp: torch.Tensor, hyps: Sequence[Sequence[int]], banned: Sequence[int],
            hook: ScoreHook | None) -> torch.Tensor:  # fmt: skip
    """Tokens never to emit (``banned``) out, the hook's bonuses in: ``(B, V)``."""
    logp[:, list(banned)] = float("-inf")
    if hook is not None:
        for row, tokens in enumerate(hyps):
            hook.adjust(tokens, logp[row])
    return logp


@torch.no_grad()
def greedy(lm, embed: Embed, embeds: torch.Tensor, mask: torch.Tensor, eos: int,
           max_new_tokens: int, banned: Sequence[int] = (),
           hook: ScoreHook | None = None) -> list[list[int]]:  # fmt: skip
    """Greedy decoding of a left-padded batch: ``embeds (B, N, H)``, ``mask (B, N)`` bool.
    Returns each row's tokens, without the final ``eos``."""
    mask = mask.long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, N): left padding shifts nothing
    logp, cache = _run(lm, embeds, mask, positions, None)
    hyps: list[list[int]] = [[] for _ in range(len(embeds))]
    done = torch.zeros(len(embeds), dtype=torch.bool)
    for _ in range(max_new_tokens):
        nxt = _adjust(logp, hyps, banned, hook).argmax(-1).cpu()  # (B,)
        done |= nxt == eos
        if done.all():
            break
        for row in (~done).nonzero().flatten().tolist():
            hyps[row].append(int(nxt[row]))
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)  # (B, N + 1)
        positions = positions[:, -1:] + 1  # (B, 1)
        logp, cache = _run(lm, embed(nxt[:, None].to(embeds.device)), mask, positions, cache)
    return hyps


@torch.no_grad()
def beam_search(lm, embed: Embed, embeds: torch.Tensor, eos: int, max_new_tokens: int,
                beam_size: int, banned: Sequence[int] = (),
                hook: ScoreHook | None = None) -> list[int]:  # fmt: skip
    """Beam search for one utterance, ``embeds (1, N, H)``; the beams are the batch of the
    KV cache, reordered each step. Finished hypotheses are ranked by their mean token
    log-probability (Whisper's default length normalisation)."""
    N, device = embeds.shape[1], embeds.device
    logp, cache = _run(lm, embeds, torch.ones(1, N, dtype=torch.long, device=device),
                       torch.arange(N, device=device)[None], None)  # fmt: skip
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for step in range(max_new_tokens):
        logp = _adjust(logp, [b for b, _ in beams], banned, hook)
        total = logp.cpu() + torch.tensor([s for _, s in beams])[:, None]  # (nb, V)
        top = total.flatten().topk(2 * beam_size)
        keep, src = [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, token = divmod(flat, total.shape[1])
            if token == eos:  # ends among the best: kept (Whisper's BeamSearchDecoder)
                finished.append((beams[row][0], score))
                continue
            keep.append((beams[row][0] + [token], score))
            src.append(row)
            if len(keep) == beam_size:
                break
        if len(finished) >= beam_size or not keep:
            break
        beams = keep
        cache.reorder_cache(torch.tensor(src, device=device))
        tokens = torch.tensor([[b[-1]] for b, _ in beams], device=device)  # (nb, 1)
        mask = torch.ones(len(beams), N + step + 1, dtype=torch.long, device=device)
        positions = torch.full((len(beams), 1), N + step, device=device)
        logp, cache = _run(lm, embed(tokens), mask, positions, cache)
    finished = finished or beams  # out of steps: the live beams as they are
    return max(finished, key=lambda h: h[1] / max(1, len(h[0]) + 1))[0]
