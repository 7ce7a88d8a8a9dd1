"""MoSE against each of its encoders alone, at the same training budget: the speech LLM's
CTC alignment stage (``ctxasr.speechllm.align``), scored by greedy CTC decoding.

For each encoder set (MoSE of all the recipe's encoders, then each one alone) the script
trains a fresh speech side -- MoSE, the projector and the CTC head over the LLM's frozen
token embeddings -- for ``--steps`` updates of ``--batch`` utterances of the recipe's
training manifest (same seed, same batches, same learning rate), then decodes the
development sets with the CTC head alone (best path) and scores WER. This is the stage
of training where the encoders matter most (the LLM cannot read what the projector has
not aligned), and it costs about 0.3 s a step here, so equal-budget runs fit on a CPU;
the full recipe's LM stage is not repeated per encoder set.

The encoders' frames come from the recipe run's cache (``OUT/cache``), so the first run
of the recipe (or of this script) pays for encoding once.

Usage::

    python bench/speechllm_encoders.py [--config configs/speechllm/cpu.toml]
        [--steps 600] [--batch 8] [--sets real real2] [--out bench/results]

Writes ``speechllm_encoders.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from biasing_report import DATA, real2_items, real_items

from ctxasr.eval.run import rare_words
from ctxasr.eval.score import BiasingScores, score_text
from ctxasr.speechllm.config import read_config
from ctxasr.speechllm.data import FrameCache, Schedule, read_utterances
from ctxasr.speechllm.model import SpeechLLM, batch_frames
from ctxasr.speechllm.train import Objective

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def train_probe(cfg, encoders: tuple[str, ...], steps: int, batch: int, lr: float,
                cache_folder: Path) -> tuple[SpeechLLM, FrameCache, float]:  # fmt: skip
    """A fresh speech side on ``encoders``, trained ``steps`` CTC updates; its seconds."""
    torch.manual_seed(cfg.seed)
    model = SpeechLLM(dataclasses.replace(cfg.model, encoders=encoders))
    model.add_ctc()
    cache = FrameCache(cache_folder, model.encoders)
    utts = read_utterances(cfg.train, cfg.lowercase)
    schedule = Schedule([len(cache.frames(u.audio)) for u in utts], batch, cfg.bucket, cfg.seed)
    objective = Objective(model).train()
    params = [p for n, p in objective.named_parameters()
              if p.requires_grad and n.startswith(("model.mose.", "model.projector.", "model.ctc."))]  # fmt: skip
    opt = torch.optim.AdamW(params, lr=lr)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    start = time.perf_counter()
    for step in range(steps):
        idx = schedule(step)
        x, mask = batch_frames([cache.frames(utts[i].audio) for i in idx])
        loss = objective(x, mask, [[] for _ in idx], [utts[i].text for i in idx], lm=False,
                         ctc_weight=1.0)  # fmt: skip
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        warm.step()
        opt.zero_grad()
        if (step + 1) % 100 == 0:
            print(f"    step {step + 1}: ctc {loss.item():.3f}", flush=True)
    return model.eval(), cache, time.perf_counter() - start


def score(model: SpeechLLM, cache: FrameCache, items) -> BiasingScores:
    total = BiasingScores()
    with torch.no_grad():
        for start in range(0, len(items), 8):
            part = items[start : start + 8]
            x, mask = batch_frames([cache.frames(i.audio) for i in part])
            s, smask = model.project(x, mask)
            for item, ids in zip(part, model.ctc.greedy(s, smask, model.token_table())):
                hyp = model.tokenizer.decode(ids, skip_special_tokens=True)
                total += score_text(item.text, hyp, rare_words(item), normalize="whisper")
    return total


def pct(rate: float) -> str:
    return f"{rate:.2f}" if math.isfinite(rate) else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/speechllm/cpu.toml")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.0, help="default: the recipe's ctc_lr")
    parser.add_argument("--sets", nargs="+", default=["real", "real2"])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    cfg = read_config(args.config)
    torch.set_num_threads(cfg.threads)
    lr = args.lr or cfg.ctc_lr or cfg.lr
    sets = {"real": lambda: real_items(DATA / "real-speech"),
            "real2": lambda: real2_items(DATA / "real-speech-2")}  # fmt: skip
    items = {name: sets[name]() for name in args.sets}
    variants = [tuple(cfg.model.encoders)] + [(e,) for e in cfg.model.encoders]
    rows, report = [], {"config": str(args.config), "steps": args.steps, "batch": args.batch,
                        "lr": lr, "seed": cfg.seed, "results": []}  # fmt: skip
    for encoders in variants:
        name = " + ".join(encoders) if len(encoders) > 1 else encoders[0]
        print(f"{name}:", flush=True)
        model, cache, seconds = train_probe(cfg, encoders, args.steps, args.batch, lr,
                                            Path(cfg.out) / "cache")  # fmt: skip
        result = {"encoders": list(encoders), "train_seconds": round(seconds, 1)}
        cells = []
        for set_name, set_items in items.items():
            s = score(model, cache, set_items)
            result[set_name] = {"wer": s.wer.error_rate, "u_wer": s.u_wer.error_rate,
                                "b_wer": s.b_wer.error_rate}  # fmt: skip
            cells.append(f"{pct(s.wer.error_rate)} / {pct(s.b_wer.error_rate)}")
            print(f"  {set_name}: WER {pct(s.wer.error_rate)} B-WER {pct(s.b_wer.error_rate)}",
                  flush=True)  # fmt: skip
        rows.append(f"| {name} | {' | '.join(cells)} | {seconds / args.steps:.2f} |")
        report["results"].append(result)
    head = " | ".join(f"{n} WER / B-WER" for n in items)
    md = [
        "# MoSE against single encoders (CTC alignment stage, equal budget)\n",
        f"Recipe `{args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}`"
        f"; each row trains a fresh MoSE + projector + CTC head for {args.steps} updates of "
        f"{args.batch} utterances (lr {lr}, seed {cfg.seed}, the same batches), then decodes "
        "by CTC best path over the LLM's vocabulary, no context, no LLM. Whisper-normalised "
        "percent.\n",
        f"| encoders | {head} | s/step |",
        "|---|" + "---|" * len(items) + "---|",
        *rows,
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speechllm_encoders.md").write_text("\n".join(md))
    (args.out / "speechllm_encoders.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
