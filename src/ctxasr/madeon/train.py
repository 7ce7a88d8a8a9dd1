"""Training MADEON: ``ctxasr train madeon CONFIG [--max-steps N] [-o OUT]``.

One loop over ``accelerate`` (one CPU, a GPU with bf16, DDP or DeepSpeed from an
accelerate config), seeded and resumable (``ctxasr.training.RunState``: rerunning the
command continues from ``OUT/state``). The recipe's tokenizer is fitted first when it
names none (``OUT/tokenizer``). Every utterance becomes ``[bos] speech [sep] text [eos]``
once, at the start: the frozen encoder's frames come from the frame cache and the
k-means units are cut into the joint vocabulary's speech pieces. Batches group sequences
of similar length (``ctxasr.speechllm.data.Schedule``). Every ``eval_every`` steps and at
the end the dev manifest is decoded greedily and scored (WER, U-WER, B-WER, Whisper's
normaliser). The model is exported to ``OUT`` for ``ctxasr.madeon.checkpoint.load``,
with the scores, the parameter count and the training time in ``OUT/scores.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ctxasr.errors import CtxasrError
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.madeon import checkpoint
from ctxasr.madeon.config import TrainConfig, read_config
from ctxasr.madeon.decode import transcribe
from ctxasr.madeon.model import Madeon, parameters
from ctxasr.madeon.tokconfig import TokenizerConfig, config_from_table
from ctxasr.madeon.tokens import SpeechTokenizer, fit_tokenizer
from ctxasr.speechllm.data import FrameCache, Schedule, Utterance, read_utterances
from ctxasr.training import RunState, warmup_cosine

__all__ = ["Recipe", "evaluate", "read_config", "train"]

Progress = Callable[[int, int, float], None]  # (step, total steps, smoothed loss)


@dataclass(frozen=True)
class Recipe:
    """What ``ctxasr train madeon`` runs: the training table and, when the recipe fits
    its own tokenizer (into ``OUT/tokenizer``), that tokenizer's config."""

    train: TrainConfig
    tokenizer: TokenizerConfig | None

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def out(self) -> str:
        return self.train.out


def read_recipe(
    path: str | Path, steps: int | None = None, out: str | Path | None = None
) -> Recipe:
    """The recipe in ``path`` with the CLI's overrides (see ``config.read_config``); its
    ``tokenizer`` table reads the training manifest into ``OUT/tokenizer`` unless it
    says otherwise."""
    cfg, table = read_config(path, steps=steps, out=out)
    tok = None
    if table is not None:  # checked now, not after minutes of work
        defaults = {"train": cfg.train, "out": str(Path(cfg.out) / "tokenizer")}
        tok = config_from_table(Path(path), table, defaults)
    return Recipe(cfg, tok)


class Objective(torch.nn.Module):
    """The model's loss as a module's ``forward``, so that DDP sees every parameter."""

    def __init__(self, model: Madeon) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, prefix: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return self.model.loss(ids, prefix, lengths)


class Sequences:
    """Every utterance's prefix ``[bos] speech [sep]`` and text ``text [eos]`` as ids."""

    def __init__(self, utts: Sequence[Utterance], tok: SpeechTokenizer, cache: FrameCache) -> None:
        self.prefixes = [tok.sequence(tok.speech_ids(tok.units(cache.frames(u.audio))))
                         for u in utts]  # fmt: skip
        self.texts = [[*tok.text_ids(u.text), tok.eos_id] for u in utts]

    def lengths(self) -> list[int]:
        return [len(p) + len(t) for p, t in zip(self.prefixes, self.texts)]

    def batch(self, idx: Sequence[int], pad: int) -> tuple[torch.Tensor, ...]:
        """``ids`` (B, L) right-padded with ``pad``, prefix lengths (B,), lengths (B,)."""
        rows = [self.prefixes[i] + self.texts[i] for i in idx]
        ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.tensor(row)
        prefix = torch.tensor([len(self.prefixes[i]) for i in idx])
        return ids, prefix, torch.tensor([len(r) for r in rows])


class _Encoder:
    """The tokenizer's encoder as the frame cache sees it, loaded only when a file's
    frames are not cached yet (a resumed or rerun run never loads it)."""

    def __init__(self, tok: SpeechTokenizer) -> None:
        self.tok, self.name, self.frame_rate = tok, tok.encoder_name, tok.frame_rate

    def __call__(self, samples):
        return self.tok.encoder(samples)


def _tokenizer(recipe: Recipe) -> tuple[SpeechTokenizer, Path]:
    """The recipe's tokenizer (fitted first when the run has none yet) and the folder of
    its encoder's frames."""
    cfg, fit = recipe.train, recipe.tokenizer
    if fit is None:
        return SpeechTokenizer.load(cfg.tokenizer), Path(cfg.cache or Path(cfg.out) / "cache")
    if not (Path(fit.out) / "tokenizer.json").is_file():  # fitted once; a rerun reuses it
        fit_tokenizer(fit)
    return SpeechTokenizer.load(fit.out), Path(cfg.cache) if cfg.cache else fit.cache_folder


def train(recipe: Recipe, progress: Progress | None = None) -> dict:
    """Train (or resume) the run of ``recipe`` and export it; returns the final scores."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg = recipe.train
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not gpu, mixed_precision="bf16" if gpu else "no",
                              gradient_accumulation_steps=cfg.grad_accum)  # fmt: skip
    set_seed(cfg.seed)
    tok, frames = _tokenizer(recipe)
    cache = FrameCache(frames, [_Encoder(tok)])
    utts = read_utterances(cfg.train, cfg.lowercase)
    dev = read_utterances(cfg.dev, cfg.lowercase) if cfg.dev else []
    data = Sequences(utts, tok, cache)
    batches = Schedule(data.lengths(), cfg.batch, cfg.bucket, cfg.seed)
    model = Objective(Madeon(replace(cfg.model, vocab=tok.vocab_size)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.warmup, cfg.steps)
    )
    model, opt, sched = accelerator.prepare(model, opt, sched)
    run = RunState(accelerator, out)
    start = run.resume()
    if start > cfg.steps:  # exporting it would label a longer run with fewer steps
        raise CtxasrError(str(out / "state"), f"holds a run at step {start}, past the "
                          f"recipe's {cfg.steps} steps: give more steps or another out folder")  # fmt: skip
    seconds = _elapsed(out)
    began, loss_avg, scores = time.monotonic(), None, {}
    for step in range(start, cfg.steps):
        model.train()
        for micro in range(cfg.grad_accum):
            ids, prefix, lengths = data.batch(batches(step * cfg.grad_accum + micro), tok.pad_id)
            on = accelerator.device
            with accelerator.accumulate(model):
                loss = model(ids.to(on), prefix.to(on), lengths.to(on))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
            loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
        if progress is not None:
            progress(step + 1, cfg.steps, loss_avg)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            _save_elapsed(out, seconds + time.monotonic() - began)
            run.save(step + 1)
        if dev and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            scores = evaluate(accelerator.unwrap_model(model).model, tok, dev, cache, cfg)
    seconds += time.monotonic() - began
    unwrapped = accelerator.unwrap_model(model).model.eval()
    if dev and not scores:  # a finished run, rerun: score what was trained
        scores = evaluate(unwrapped, tok, dev, cache, cfg)
    scores = {**scores, "parameters": parameters(unwrapped),
              "train_seconds": round(seconds, 1)}  # fmt: skip
    if loss_avg is not None:
        scores["train_loss"] = round(loss_avg, 4)
    if accelerator.is_main_process:
        checkpoint.save(unwrapped, tok, out, lowercase=cfg.lowercase)
        (out / "scores.json").write_text(json.dumps({"step": cfg.steps, **scores}) + "\n")
    return scores


def _elapsed(out: Path) -> float:
    """Training seconds of the earlier parts of a resumed run."""
    path = out / "state" / "elapsed.json"
    return json.loads(path.read_text())["seconds"] if path.is_file() else 0.0


def _save_elapsed(out: Path, seconds: float) -> None:
    (out / "state").mkdir(parents=True, exist_ok=True)
    (out / "state" / "elapsed.json").write_text(json.dumps({"seconds": round(seconds, 1)}))


def evaluate(model: Madeon, tok: SpeechTokenizer, dev: Sequence[Utterance], cache: FrameCache,
             cfg: TrainConfig) -> dict:  # fmt: skip
    """Greedy transcripts of ``dev``, scored: WER, U-WER and B-WER (percent), normalised."""
    was_training = model.training
    model.eval()
    total = BiasingScores()
    for u in dev:
        speech = tok.speech_ids(tok.units(cache.frames(u.audio)))
        hyp = transcribe(model, tok, speech, cfg.max_new_tokens)
        total += score_text(u.text, hyp, u.rare, normalize="whisper")
    model.train(was_training)
    return {"dev_utterances": len(dev), **total.percents()}
