"""Training the speech LLM: ``ctxasr train speechllm CONFIG``.

One loop over ``accelerate`` (one CPU, a GPU with bf16, or DDP), seeded and resumable:
every ``save_every`` steps the whole training state goes to ``OUT/state`` and a rerun of
the same command continues from there. With ``ctc_steps``, the run starts by aligning the
speech side alone with the LM's token embeddings by CTC (``ctxasr.speechllm.align``, no
pass through the LM, at ``ctc_lr``), then trains everything for ``steps`` with the LM's
loss plus ``ctc_weight`` times CTC. The frozen encoders run once per audio file
(``OUT/cache``, ``ctxasr.speechllm.data``); each step then trains MoSE, the projector,
the pooling, the context markers' embeddings and LoRA on ``grad_accum`` micro-batches of
``batch`` utterances, each with a fresh SAP²-style context. Every ``eval_every`` steps and
at the end the dev manifest is decoded greedily and scored (WER, U-WER, B-WER, with
Whisper's normaliser). The trained parts are exported to ``OUT`` for
``ctxasr.speechllm.checkpoint.load(OUT)``, with the scores in ``OUT/scores.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.speechllm import checkpoint
from ctxasr.speechllm.config import TrainConfig, read_config
from ctxasr.speechllm.data import (
    FrameCache,
    Schedule,
    Utterance,
    read_utterances,
    training_context,
    word_pool,
)
from ctxasr.speechllm.model import SpeechLLM, batch_frames
from ctxasr.training import RunState, warmup_cosine

__all__ = ["evaluate", "read_config", "train"]

Progress = Callable[[int, int, float], None]  # (step, total steps, smoothed loss)


def _schedule(cfg: TrainConfig) -> Callable[[int], float]:
    """The CTC stage: linear warm-up to ``ctc_lr``, then constant. The whole model's: a
    new linear warm-up (LoRA and the pooling start there), then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < cfg.ctc_steps:
            return min(1.0, (step + 1) / max(1, cfg.warmup)) * (cfg.ctc_lr or cfg.lr) / cfg.lr
        return warmup_cosine(step - cfg.ctc_steps, cfg.warmup, cfg.steps)

    return factor


class Objective(nn.Module):
    """One step's loss: the LM's cross-entropy of the targets, the CTC alignment loss of
    the model's CTC head, or both. One module, so that DDP sees every trained parameter
    in one ``forward``."""

    def __init__(self, model: SpeechLLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, speech: torch.Tensor, mask: torch.Tensor, contexts: Sequence[Sequence[str]],
                targets: Sequence[str], lm: bool, ctc_weight: float) -> torch.Tensor:  # fmt: skip
        s, smask = self.model.project(speech, mask)  # (B, S, H), (B, S): once for both
        loss = self.model.lm_loss(s, smask, contexts, targets) if lm else s.new_zeros(())
        if ctc_weight and self.model.ctc is not None:
            ids = [self.model.tokenizer(t, add_special_tokens=False).input_ids for t in targets]
            loss = loss + ctc_weight * self.model.ctc(s, smask, self.model.token_table(), ids)
        return loss


def _kept(name: str) -> bool:
    """What a saved training state holds: the model's trained parts (its CTC head too)."""
    return checkpoint.trained(name.removeprefix("model."))


def train(cfg: TrainConfig, progress: Progress | None = None) -> dict:
    """Train (or resume) the run of ``cfg`` and export it; returns the final dev scores."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=not gpu, mixed_precision="bf16" if gpu else "no",
        gradient_accumulation_steps=cfg.grad_accum,
        # a batch without any context leaves the pooling unused
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )  # fmt: skip
    set_seed(cfg.seed)
    utts = read_utterances(cfg.train, cfg.lowercase)
    dev = read_utterances(cfg.dev, cfg.lowercase) if cfg.dev else []
    pool = word_pool(cfg.word_pool, utts, cfg.lowercase)
    model = SpeechLLM(cfg.model)
    cache = FrameCache(out / "cache", model.encoders)
    batches = Schedule([len(cache.frames(u.audio)) for u in utts], cfg.batch, cfg.bucket, cfg.seed)
    if cfg.ctc_steps or cfg.ctc_weight:
        model.add_ctc()
    objective = Objective(model)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    objective, opt, sched = accelerator.prepare(objective, opt, sched)
    run = RunState(accelerator, out, keep=_kept)
    start = run.resume()
    total = cfg.ctc_steps + cfg.steps
    loss_avg, scores = None, {}
    for step in range(start, total):
        objective.train()
        aligning = step < cfg.ctc_steps
        if step == cfg.ctc_steps:
            loss_avg = None  # from here it is the LM's loss, not comparable
        for micro in range(cfg.grad_accum):
            idx = batches(step * cfg.grad_accum + micro)
            rng = np.random.default_rng([cfg.seed, step, micro])
            contexts = [training_context(rng, utts[i], pool, cfg.distractors, cfg.no_context)
                        for i in idx]  # fmt: skip
            x, mask = batch_frames([cache.frames(utts[i].audio) for i in idx])
            with accelerator.accumulate(objective):
                loss = objective(x.to(accelerator.device), mask.to(accelerator.device), contexts,
                                 [utts[i].text for i in idx], lm=not aligning,
                                 ctc_weight=1.0 if aligning else cfg.ctc_weight)  # fmt: skip
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
            loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
        if progress is not None:
            progress(step + 1, total, loss_avg)
        if (step + 1) % cfg.save_every == 0 or step + 1 == total:
            run.save(step + 1)
        done = step + 1 - cfg.ctc_steps  # updates of the whole model
        if dev and done > 0 and (done % cfg.eval_every == 0 or step + 1 == total):
            scores = evaluate(accelerator.unwrap_model(objective).model, dev, cache, pool, cfg)
    unwrapped = accelerator.unwrap_model(objective).model.eval()
    if dev and not scores:  # a finished run, rerun: score what was trained
        scores = evaluate(unwrapped, dev, cache, pool, cfg)
    if loss_avg is not None:
        scores = {**scores, "train_loss": round(loss_avg, 4)}
    if accelerator.is_main_process:
        checkpoint.save(unwrapped, out, lowercase=cfg.lowercase)
        (out / "scores.json").write_text(json.dumps({"step": total, **scores}) + "\n")
    return scores


def dev_context(utt: Utterance, pool: Sequence[str], cfg: TrainConfig, index: int) -> list[str]:
    """The manifest's own context, else the rare words with ``distractors`` pool words drawn
    from a fixed seed (the same at every evaluation)."""
    if utt.context:
        return list(utt.context)
    rng = np.random.default_rng([12345, index])
    return training_context(rng, utt, pool, cfg.distractors, no_context=0.0)


def evaluate(model: SpeechLLM, dev: Sequence[Utterance], cache: FrameCache,
             pool: Sequence[str], cfg: TrainConfig) -> dict:  # fmt: skip
    """Greedy transcripts of ``dev`` (joint CTC/attention ones at ``dev_ctc_weight``),
    scored: WER, U-WER and B-WER (percent), normalised."""
    was_training = model.training
    model.eval()
    total = BiasingScores()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(dev), cfg.batch):
            part = dev[start : start + cfg.batch]
            x, mask = batch_frames([cache.frames(u.audio) for u in part])
            contexts = [dev_context(u, pool, cfg, start + i) for i, u in enumerate(part)]
            hyps = model.generate(x.to(device), mask.to(device), contexts, cfg.max_new_tokens,
                                  ctc_weight=cfg.dev_ctc_weight)  # fmt: skip
            for u, hyp in zip(part, hyps):
                total += score_text(u.text, hyp, u.rare, normalize="whisper")
    model.train(was_training)
    return {"dev_utterances": len(dev), **total.percents()}
