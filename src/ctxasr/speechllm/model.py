"""``SpeechLLM``: frozen speech encoder(s) -> MoSE -> projector -> causal LM with LoRA.

The LM's input, per utterance (one chat turn when the tokenizer has a chat template, else
the plain ``prompt \\n speech \\n``; ``prompt_ids`` in ``ctxasr.speechllm.prompt``)::

    [prompt up to <|startofcontext|>] [pooled context] [<|endofcontext|> ... ] [speech]
    [end of the turn, the assistant's start] [target tokens] [eos]

An utterance without context takes ``prompt_no_context`` instead, with no context span.
The loss is cross-entropy on the target tokens and the eos only. What is trained: MoSE's
projections and gate, the projector, SAP's projections, the two new tokens' embeddings,
LoRA and, when the run uses one, the CTC head (``add_ctc``); the LM itself and the
encoders stay frozen. Encoder frames may come from a cache (``encode_speech`` is apart
from ``forward``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctxasr.speechllm import search
from ctxasr.speechllm.align import CTCAligner
from ctxasr.speechllm.config import CONTEXT_END, CONTEXT_START, TINY_LLM, ModelConfig
from ctxasr.speechllm.interfaces import SpeechEncoder, load_encoder
from ctxasr.speechllm.mose import MoSE, align_frames
from ctxasr.speechllm.pooling import ContextPooling
from ctxasr.speechllm.projector import Projector
from ctxasr.speechllm.prompt import PromptIds, prompt_ids

IGNORE = -100  # labels cross-entropy skips


def load_llm(name: str):
    """``(model, tokenizer)`` of a causal LM: the tiny random one, or the real loader's."""
    if name == TINY_LLM:
        from ctxasr.speechllm.tiny import tiny_llm

        return tiny_llm()
    from ctxasr.speechllm.llm import load_llm as load

    return load(name)


def batch_frames(frames: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance ``(T_i, D)`` frames -> ``(B, T, D)`` zero-padded and ``(B, T)`` bool."""
    T = max(len(f) for f in frames)
    x = torch.zeros(len(frames), T, frames[0].shape[1])
    mask = torch.zeros(len(frames), T, dtype=torch.bool)
    for i, f in enumerate(frames):
        x[i, : len(f)] = torch.from_numpy(np.asarray(f, dtype=np.float32))
        mask[i, : len(f)] = True
    return x, mask


class SpeechLLM(nn.Module):
    def __init__(self, config: ModelConfig, encoders: Sequence[SpeechEncoder] | None = None,
                 llm: tuple | None = None) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.encoders = list(encoders or [load_encoder(n) for n in config.encoders])  # frozen
        lm, self.tokenizer = llm or load_llm(config.llm)
        self.tokenizer.add_tokens([CONTEXT_START, CONTEXT_END], special_tokens=True)
        self.special = self.tokenizer.convert_tokens_to_ids([CONTEXT_START, CONTEXT_END])
        _resize(lm, len(self.tokenizer))
        lm.requires_grad_(False)
        H = lm.get_input_embeddings().embedding_dim
        dims = [e.dim for e in self.encoders]
        self.mose = MoSE(dims, config.speech_dim or max(dims))
        self.projector = Projector(config.projector, config.speech_dim or max(dims), H)
        self.pooling = ContextPooling(config.pooling, H)
        # The two new tokens' rows, trained apart from the frozen embedding matrix.
        start = lm.get_input_embeddings().weight.detach().mean(0)  # (H,)
        self.new_tokens = nn.Parameter(start.repeat(2, 1).float())  # (2, H)
        self.lm = self._with_lora(lm)
        self.eos = self.tokenizer.eos_token_id
        self.ids: PromptIds = prompt_ids(self.tokenizer, config)
        self.ctc: CTCAligner | None = None  # add_ctc(): trained with a CTC loss

    def _with_lora(self, lm):
        if not self.config.lora.r:
            return lm
        from peft import LoraConfig, get_peft_model

        c = self.config.lora
        return get_peft_model(lm, LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                             target_modules=list(c.targets)))  # fmt: skip

    # --- the frozen part -----------------------------------------------------------
    def encode_speech(self, samples: Sequence[np.ndarray]) -> list[np.ndarray]:
        """16 kHz clips -> per-utterance ``(T, sum D_i)`` encoder frames, aligned for MoSE."""
        rates = [e.frame_rate for e in self.encoders]
        return [align_frames([e(s) for e in self.encoders], rates) for s in samples]

    # --- the trainable part --------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(...)`` -> ``(..., H)``; the context markers take their own rows."""
        e = self.lm.get_input_embeddings()(ids)
        for row, token in enumerate(self.special):
            e = torch.where((ids == token)[..., None], self.new_tokens[row].to(e.dtype), e)
        return e

    def _ids(self, ids: list[int]) -> torch.Tensor:
        return self.embed(torch.tensor(ids, dtype=torch.long, device=self.new_tokens.device))

    def project(self, speech: torch.Tensor,
                speech_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Encoder frames ``(B, T, sum D_i)``, ``(B, T)`` -> the LM's speech embeddings
        ``(B, S, H)`` and their mask ``(B, S)``: MoSE, then the projector."""
        return self.projector(self.mose(speech), speech_mask)

    def token_table(self) -> torch.Tensor:
        """The LM's frozen input embeddings ``(V, H)`` (the context markers' rows included)."""
        return self.lm.get_input_embeddings().weight

    def prefix(self, speech: torch.Tensor, speech_mask: torch.Tensor,
               contexts: Sequence[Sequence[str]]) -> list[torch.Tensor]:  # fmt: skip
        """Each utterance's LM input before its target, ``(N_i, H)``, from ``speech
        (B, T, sum D_i)`` encoder frames, ``speech_mask (B, T)`` and keyword lists."""
        return self._prefix(*self.project(speech, speech_mask), contexts)

    def _prefix(self, s: torch.Tensor, smask: torch.Tensor,
                contexts: Sequence[Sequence[str]]) -> list[torch.Tensor]:  # fmt: skip
        """:meth:`prefix` from the projected speech ``(B, S, H)`` and its mask ``(B, S)``."""
        if any(contexts):
            texts = [", ".join(c) for c in contexts]
            tok = self.tokenizer(texts, add_special_tokens=False, padding=True,
                                 return_tensors="pt")  # fmt: skip
            ids, cmask = tok.input_ids.to(s.device), tok.attention_mask.to(s.device) > 0
            c, cmask = self.pooling(self.embed(ids), cmask, s, smask)  # (B, C, H)
        out = []
        for b, words in enumerate(contexts):
            speech_b = s[b][smask[b]]  # (S_b, H)
            if words:
                parts = [self._ids(self.ids.head), c[b][cmask[b]], self._ids(self.ids.middle),
                         speech_b, self._ids(self.ids.tail)]  # fmt: skip
            else:
                parts = [self._ids(self.ids.head_no_context), speech_b, self._ids(self.ids.tail)]
            out.append(torch.cat(parts))  # (N_b, H)
        return out

    def target_ids(self, text: str) -> list[int]:
        return [*self.tokenizer(text, add_special_tokens=False).input_ids, self.eos]

    def forward(self, speech: torch.Tensor, speech_mask: torch.Tensor,
                contexts: Sequence[Sequence[str]], targets: Sequence[str]) -> torch.Tensor:  # fmt: skip
        """Mean cross-entropy of the target tokens (and eos) given the speech and context."""
        return self.lm_loss(*self.project(speech, speech_mask), contexts, targets)

    def lm_loss(self, s: torch.Tensor, smask: torch.Tensor, contexts: Sequence[Sequence[str]],
                targets: Sequence[str]) -> torch.Tensor:  # fmt: skip
        """:meth:`forward` from the projected speech ``(B, S, H)`` and its mask ``(B, S)``,
        for a caller that uses the projection for another loss too."""
        rows, labels = [], []
        for p, text in zip(self._prefix(s, smask, contexts), targets):
            t = torch.tensor(self.target_ids(text), device=p.device)
            rows.append(torch.cat([p, self.embed(t)]))  # (N_b + L_b, H)
            labels.append(F.pad(t, (len(p), 0), value=IGNORE))  # (N_b + L_b,)
        x, mask = _pad(rows, left=False)  # (B, N, H), (B, N)
        y = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE)
        logits = self.lm(inputs_embeds=x.to(self._lm_dtype), attention_mask=mask.long()).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), y[:, 1:].flatten(),
                               ignore_index=IGNORE)  # fmt: skip

    def add_ctc(self) -> CTCAligner:
        """Give the model a CTC head over the LM's token embeddings (``ctxasr.speechllm.
        align``): trained beside the LM's loss, saved in the checkpoint, and used by
        :meth:`generate` for joint CTC/attention decoding."""
        self.ctc = CTCAligner(self.token_table().shape[1]).to(self.new_tokens.device)
        return self.ctc

    @torch.no_grad()
    def generate(self, speech: torch.Tensor, speech_mask: torch.Tensor,
                 contexts: Sequence[Sequence[str]], max_new_tokens: int = 128,
                 beam_size: int = 1, hook: search.ScoreHook | None = None,
                 ctc_weight: float = 0.0) -> list[str]:  # fmt: skip
        """Transcripts: greedy for ``beam_size`` 1 (batched), else beam search per utterance.
        With ``ctc_weight`` above 0 and a CTC head (:meth:`add_ctc`), each utterance is
        decoded alone by joint CTC/attention search (``search.beam_search``; beam 1 is its
        greedy form); without a head the weight is ignored."""
        s, smask = self.project(speech, speech_mask)  # (B, S, H), (B, S)
        prefixes = [p.to(self._lm_dtype) for p in self._prefix(s, smask, contexts)]
        args = {"eos": self.eos, "max_new_tokens": max_new_tokens, "banned": self.special,
                "hook": hook}  # fmt: skip
        if self.ctc is not None and ctc_weight > 0:
            frames = self.ctc.logits(s, self.token_table())  # (B, S, V + 1)
            hyps = [search.beam_search(self.lm, self._embed_lm, p[None], beam_size=beam_size,
                                       ctc=search.CTCPrefixScorer(f[m]), ctc_weight=ctc_weight,
                                       **args)
                    for p, f, m in zip(prefixes, frames, smask)]  # fmt: skip
        elif beam_size == 1:
            x, mask = _pad(prefixes, left=True)
            hyps = search.greedy(self.lm, self._embed_lm, x, mask, **args)
        else:
            hyps = [search.beam_search(self.lm, self._embed_lm, p[None], beam_size=beam_size,
                                       **args) for p in prefixes]  # fmt: skip
        return [self.tokenizer.decode(h, skip_special_tokens=True).strip() for h in hyps]

    def _embed_lm(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).to(self._lm_dtype)

    @property
    def _lm_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype


def _resize(lm, vocab: int) -> None:
    """Room for the new tokens; their frozen rows set to the mean row, not drawn at random,
    so that a rebuilt model is the same (only the logits of the two markers see them)."""
    old = lm.get_input_embeddings().num_embeddings
    if vocab <= old:
        return
    lm.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():
        for table in {id(t): t for t in (lm.get_input_embeddings(), lm.get_output_embeddings())
                      if t is not None}.values():  # fmt: skip
            table.weight[old:] = table.weight[:old].mean(0)


def _pad(rows: Sequence[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N_i, H)`` rows -> ``(B, N, H)`` zero-padded on the right or left, ``(B, N)`` bool."""
    N = max(len(r) for r in rows)
    x = rows[0].new_zeros(len(rows), N, rows[0].shape[-1])
    mask = torch.zeros(len(rows), N, dtype=torch.bool, device=x.device)
    for i, r in enumerate(rows):
        span = slice(N - len(r), N) if left else slice(0, len(r))
        x[i, span], mask[i, span] = r, True
    return x, mask
