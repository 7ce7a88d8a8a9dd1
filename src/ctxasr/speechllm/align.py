"""CTC alignment of the projected speech with the LLM's own token embeddings.

A speech LLM trained from scratch first learns to ignore the speech: the projector's
outputs mean nothing to the frozen LM, and the cross-entropy of the target is lowered
faster by the LM's prior than by reading the speech, so alignment comes late (thousands of
updates on a GPU) or, on a CPU budget, not at all. This module gives the projector a
direct target: each projected frame ``s_t`` ``(H,)`` scores every token ``v`` by its dot
product with the LM's frozen input embedding ``E_v`` (times a learned scale), plus a
learned blank, and CTC ties the frames to the transcript's token ids. The projected speech
then lies near the embeddings of the tokens that were said, a sequence the LM can already
read, and the LM's LoRA only has to learn to copy from it.

It trains only the speech side (MoSE, projector) and its own blank and scale, needs no
pass through the LM, and is cheap: a ``(B, S, V)`` product per step. ``ctxasr train``
uses it for ``ctc_steps`` updates before the LM's loss is switched on, and at
``ctc_weight`` beside it afterwards. Its two parameters are saved with the checkpoint
(``SpeechLLM.ctc``), and decoding uses its frame posteriors for joint CTC/attention
search (``ctxasr.speechllm.search.CTCPrefixScorer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CTCAligner(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.blank = nn.Parameter(torch.zeros(hidden))  # (H,), the blank's "embedding"
        self.log_scale = nn.Parameter(torch.zeros(()))  # logits = exp(log_scale) * s . E

    def logits(self, speech: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``(B, S, H)`` projected speech, ``(V, H)`` token embeddings -> ``(B, S, V + 1)``
        log-probabilities; the blank is the last column."""
        rows = torch.cat([table.to(speech.dtype), self.blank[None].to(speech.dtype)])
        return torch.log_softmax(self.log_scale.exp() * speech @ rows.T, dim=-1)

    def forward(self, speech: torch.Tensor, mask: torch.Tensor, table: torch.Tensor,
                targets: Sequence[Sequence[int]]) -> torch.Tensor:  # fmt: skip
        """Mean CTC loss per target token of ``targets`` (token ids, no eos) given
        ``speech`` ``(B, S, H)`` with ``mask`` ``(B, S)`` bool and ``table`` ``(V, H)``.
        An utterance too short for its target (fewer frames than CTC needs) adds 0."""
        logp = self.logits(speech, table).float()  # (B, S, V + 1)
        blank = logp.shape[-1] - 1
        flat = torch.tensor([t for ts in targets for t in ts], dtype=torch.long,
                            device=speech.device)  # fmt: skip
        lengths = torch.tensor([len(t) for t in targets], dtype=torch.long, device=speech.device)
        return F.ctc_loss(logp.transpose(0, 1), flat, mask.sum(1), lengths, blank=blank,
                          reduction="mean", zero_infinity=True)  # fmt: skip

    @torch.no_grad()
    def greedy(self, speech: torch.Tensor, mask: torch.Tensor,
               table: torch.Tensor) -> list[list[int]]:  # fmt: skip
        """Best-path token ids per utterance (repeats merged, blanks dropped): a probe of
        what the projected speech says, for diagnostics and tests."""
        best = self.logits(speech, table).argmax(-1)  # (B, S)
        blank = table.shape[0]
        out = []
        for row, m in zip(best, mask):
            ids = row[m].tolist()
            out.append([t for i, t in enumerate(ids) if t != blank and (i == 0 or t != ids[i - 1])])
        return out
