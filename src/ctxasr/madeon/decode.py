"""Decoding a MADEON model: greedy and beam search over its recurrent state.

The prefix (``[bos] speech [sep]``) runs once in parallel (``Madeon.prefill``); then
every step advances all live hypotheses by one token (``Madeon.step``, the hypotheses
are the batch). Only text tokens and ``eos`` may be written: speech pieces and the other
special tokens are banned. A ``ScoreHook`` (the context graph's shallow fusion,
``ctxasr.speechllm.fusion.GraphHook``) adjusts each hypothesis's next-token scores, as in
the speech LLM's search. The search ends when no live hypothesis scores above the best
finished one; finished hypotheses are ranked by their mean token score (Whisper's
default length normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ctxasr.madeon.model import Madeon, select_states
from ctxasr.madeon.tokens import SpeechTokenizer
from ctxasr.speechllm.search import ScoreHook


@torch.no_grad()
def beam_search(model: Madeon, prefix: Sequence[int], eos: int, banned: torch.Tensor,
                max_new_tokens: int, beam_size: int = 1,
                hook: ScoreHook | None = None) -> list[int]:  # fmt: skip
    """The best text-token sequence (without ``eos``) after ``prefix``; ``banned`` (V,)
    bool marks the tokens that may not be written. Beam 1 is greedy."""
    device = model.embed.weight.device
    logp, states = model.prefill(torch.tensor([list(prefix)], device=device))
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    pos = len(prefix)
    for _ in range(max_new_tokens):
        logp = logp.float().masked_fill(banned.to(logp.device), -math.inf).cpu()  # (N, V)
        if hook is not None:
            for row, (tokens, _) in enumerate(beams):
                hook.adjust(tokens, logp[row])
        total = torch.tensor([s for _, s in beams])[:, None] + logp  # (N, V)
        top = total.flatten().topk(min(beam_size + 1, total.numel()))
        keep, src = [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            if score == -math.inf:
                break
            row, token = divmod(flat, total.shape[1])
            if token == eos:  # ends within the beam's best: kept (beam 1: greedy)
                finished.append((beams[row][0], score))
                continue
            keep.append((beams[row][0] + [token], score))
            src.append(row)
            if len(keep) == beam_size:
                break
        # Sums only fall: once no live beam beats the best finished one, none will. (Stopping
        # at ``beam_size`` finished ones instead lets early, short mistakes crowd it out.)
        if not keep or (finished and keep[0][1] < max(s for _, s in finished)):
            break
        beams = keep
        states = select_states(states, torch.tensor(src, device=device))
        last = torch.tensor([b[-1] for b, _ in beams], device=device)
        logp, states = model.step(last, states, pos)
        pos += 1
    finished = finished or beams  # out of steps: the live beams as they are
    return max(finished, key=lambda h: h[1] / max(1, len(h[0]) + 1))[0]


def transcribe(model: Madeon, tok: SpeechTokenizer, speech: Sequence[int], max_new_tokens: int,
               beam_size: int = 1, hook: ScoreHook | None = None) -> str:  # fmt: skip
    """The text of one utterance's speech pieces ``speech``."""
    banned = torch.from_numpy(~tok.is_text)
    banned[tok.eos_id] = False  # text pieces and the end: all the decoder may write
    ids = beam_search(model, tok.sequence(speech), tok.eos_id, banned, max_new_tokens,
                      beam_size, hook)  # fmt: skip
    return tok.decode(ids)
