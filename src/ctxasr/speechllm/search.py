"""Greedy and beam search over a causal LM's KV cache, written out so that ctxasr owns the
loop: a :class:`ScoreHook` (the context graph's shallow fusion) can add a bonus to any
token's log-probability at every step of every hypothesis.

Both start from input *embeddings* (the speech LLM's prompt, context and speech) and feed
back the embeddings of the chosen tokens (``embed``), so the LM never sees token ids.

With a :class:`CTCPrefixScorer` the beam search is joint CTC/attention decoding (Watanabe
et al., 2017, "Hybrid CTC/Attention Architecture for End-to-End Speech Recognition"):
every extension is scored by ``(1 - w)`` times the LM's log-probability plus ``w`` times
the change in the CTC prefix score of the speech frames. The CTC side only gives mass to
token sequences the frames can be aligned with, monotonically and in full, so a weakly
trained LM can neither wander off into fluent text of its own nor stop early.
"""

from __future__ import annotations

import inspect
import math
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


class CTCPrefixScorer:
    """CTC prefix scores of one utterance's frame log-probabilities ``logp (T, V + 1)``
    (blank last): for a token sequence ``h``, the log-probability that the frames'
    labelling begins with ``h``, and, at the end, that it is exactly ``h``.

    A prefix's state is its forward variables ``r_n``, ``r_b`` ``(T,)``: the log-probability
    that frames ``0..t`` emit the prefix, ending in its last token or in blank. Extending by
    a token ``c`` is the usual recursion, ``r_n'[t] = logaddexp(r_n'[t-1], phi[t-1]) +
    x[t, c]``, ``r_b'[t] = logaddexp(r_b'[t-1], r_n'[t-1]) + x[t, blank]``. Both are
    linear in probability space, so they are solved for all ``t`` at once: with ``C`` the
    cumulative sum of ``x[:, c]``, ``r_n' = C + logcumsumexp(phi[t-1] - C[t-1])``, and
    ``r_b'`` likewise; many candidates are scored in one batched call instead of a
    Python loop over frames. Float64, since the cumulative sums reach thousands of nats.
    """

    def __init__(self, logp: torch.Tensor) -> None:
        self.x = logp.detach().double().cpu()  # (T, V + 1)
        self.blank = self.x.shape[1] - 1
        self.cum_blank = self.x[:, self.blank].cumsum(0)  # (T,)

    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty prefix's ``(r_n, r_b)``, each ``(1, T)``."""
        return torch.full_like(self.cum_blank, -math.inf)[None], self.cum_blank[None].clone()

    def extend(self, r_n: torch.Tensor, r_b: torch.Tensor, last: torch.Tensor,
               tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Prefixes ``(P, T)`` with their last tokens ``last (P,)`` (-1 for the empty one),
        each extended by every one of ``tokens (K,)``: returns the prefix scores
        ``(P, K)`` and the new ``r_n``, ``r_b`` ``(P, K, T)``."""
        x = self.x[:, tokens].T[None]  # (1, K, T)
        total = torch.logaddexp(r_n, r_b)[:, None]  # (P, 1, T)
        phi = torch.where((tokens[None] == last[:, None])[..., None], r_b[:, None], total)
        C = x.cumsum(-1)  # (1, K, T)
        empty = (last < 0)[:, None, None]  # the first token may start at frame 0
        start = torch.where(empty, torch.zeros(()), torch.full((), -math.inf))
        a = torch.cat([start.expand(len(last), len(tokens), 1),
                       phi[..., :-1] - C[..., :-1]], dim=-1)  # fmt: skip
        new_n = C + torch.logcumsumexp(a, dim=-1)  # (P, K, T)
        b = torch.cat([torch.full_like(new_n[..., :1], -math.inf),
                       new_n[..., :-1] - self.cum_blank[:-1]], dim=-1)  # fmt: skip
        new_b = self.cum_blank + torch.logcumsumexp(b, dim=-1)
        first = torch.where(empty[..., 0], x[..., 0], torch.full((), -math.inf))  # (P, K)
        psi = torch.logsumexp(torch.cat([first[..., None], phi[..., :-1] + x[..., 1:]], -1), -1)
        return psi, new_n, new_b

    def final(self, r_n: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
        """``(P,)``: the log-probability that the labelling is exactly each prefix."""
        return torch.logaddexp(r_n[:, -1], r_b[:, -1])

    def vocabulary(self, per_frame: int = 3, floor: float = 0.01) -> torch.Tensor:
        """Tokens some frame gives at least ``floor`` among its ``per_frame`` best (blank
        aside): candidates the search scores even when the LM does not rank them."""
        top = self.x[:, : self.blank].topk(min(per_frame, self.blank), dim=-1)
        return top.indices[top.values >= math.log(floor)].unique()


@torch.no_grad()
def beam_search(lm, embed: Embed, embeds: torch.Tensor, eos: int, max_new_tokens: int,
                beam_size: int, banned: Sequence[int] = (), hook: ScoreHook | None = None,
                ctc: CTCPrefixScorer | None = None, ctc_weight: float = 0.0,
                pre_beam: int = 8) -> list[int]:  # fmt: skip
    """Beam search for one utterance, ``embeds (1, N, H)``; the beams are the batch of the
    KV cache, reordered each step. Alone, finished hypotheses are ranked by their mean
    token log-probability (Whisper's default length normalisation).

    With ``ctc`` and ``ctc_weight`` w > 0, joint CTC/attention decoding: each step scores
    the LM's ``pre_beam`` best tokens of every beam, the tokens the frames favour
    (``CTCPrefixScorer.vocabulary``) and eos by ``(1 - w) * LM + w * CTC prefix gain``
    (the hook's bonuses added on top), and hypotheses are ranked by their summed joint
    score: CTC's own full-sequence term already charges a hypothesis that stops short."""
    N, device = embeds.shape[1], embeds.device
    joint = ctc is not None and ctc_weight > 0
    logp, cache = _run(lm, embeds, torch.ones(1, N, dtype=torch.long, device=device),
                       torch.arange(N, device=device)[None], None)  # fmt: skip
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    if joint:
        r_n, r_b = ctc.initial()  # (nb, T) each
        psi = torch.zeros(1, dtype=torch.float64)  # (nb,) the beams' prefix scores
        favoured = ctc.vocabulary()
    for step in range(max_new_tokens):
        if joint:  # (at w = 1 the LM only proposes candidates; 0 * -inf would be nan)
            logp = logp.float() * (1 - ctc_weight) if ctc_weight < 1 else torch.zeros_like(logp)
        logp = _adjust(logp, [b for b, _ in beams], banned, hook).cpu()  # (nb, V)
        base = torch.tensor([s for _, s in beams])[:, None]  # (nb, 1)
        if joint:
            cands = torch.cat([logp.topk(pre_beam, dim=-1).indices.flatten(), favoured])
            cands = cands[(cands != eos) & (cands < ctc.blank)].unique()  # (K,)
            last = torch.tensor([b[-1] if b else -1 for b, _ in beams])
            prefix, new_n, new_b = ctc.extend(r_n, r_b, last, cands)  # (nb, K), (nb, K, T)
            gain = torch.cat([prefix, ctc.final(r_n, r_b)[:, None]], 1) - psi[:, None]
            tokens = torch.cat([cands, torch.tensor([eos])])  # (K + 1,)
            total = base + logp[:, tokens] + ctc_weight * gain.float()  # (nb, K + 1)
        else:
            tokens = torch.arange(logp.shape[1])
            total = base + logp  # (nb, V)
        top = total.flatten().topk(min(2 * beam_size, total.numel()))
        keep, src, cols = [], [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, col = divmod(flat, total.shape[1])
            token = int(tokens[col])
            if score == -math.inf:
                break
            if token == eos:  # ends among the best: kept (Whisper's BeamSearchDecoder)
                finished.append((beams[row][0], score))
                continue
            keep.append((beams[row][0] + [token], score))
            src.append(row)
            cols.append(col)
            if len(keep) == beam_size:
                break
        if len(finished) >= beam_size or not keep:
            break
        beams = keep
        if joint:
            rows, at = torch.tensor(src), torch.tensor(cols)
            r_n, r_b, psi = new_n[rows, at], new_b[rows, at], prefix[rows, at]
        cache.reorder_cache(torch.tensor(src, device=device))
        ids = torch.tensor([[b[-1]] for b, _ in beams], device=device)  # (nb, 1)
        mask = torch.ones(len(beams), N + step + 1, dtype=torch.long, device=device)
        positions = torch.full((len(beams), 1), N + step, device=device)
        logp, cache = _run(lm, embed(ids), mask, positions, cache)
    if joint:
        if not finished:  # out of steps: the live beams, charged for ending there
            ends = ctc.final(r_n, r_b) - psi
            finished = [(b, s + ctc_weight * float(e)) for (b, s), e in zip(beams, ends)]
        return max(finished, key=lambda h: h[1])[0]
    finished = finished or beams  # out of steps: the live beams as they are
    return max(finished, key=lambda h: h[1] / max(1, len(h[0]) + 1))[0]
