"""Training the A2P retriever: ``ctxasr train retriever CONFIG``.

One loop over ``accelerate`` (the same code on one CPU, under DDP or DeepSpeed), seeded,
resumable: every ``save_every`` steps the whole training state goes to
``OUT/state`` and a rerun of the same command continues from there. Each step draws
``batch`` stored stretches (``ctxasr data retriever-set``) and, per stretch, terms to
score against it: words it contains (rare words drawn more often) as positives;
as negatives, sound-alike pool words that were *not* said (mined with the phonetic
index), random pool words and the other stretches' words. The loss is binary
cross-entropy per (stretch, term). The batch a step draws depends only on the seed and
the step number, so a resumed run sees what an uninterrupted one would have.

At the end the weights are exported for ``A2PScorer.load(OUT)``: ``model.safetensors``,
``config.json`` and ``MODEL_CARD.md`` with the held-out scores.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctxasr.a2p.config import A2PConfig
from ctxasr.a2p.data import Example, read_examples
from ctxasr.a2p.scorer import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from ctxasr.errors import CtxasrError
from ctxasr.training import RunState, read_toml, warmup_cosine

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe (the ``[train]`` table of a config file; ``[model]`` sets
    ``A2PConfig``). Relative paths are taken from the config file's folder."""

    data: str  # a folder written by ``ctxasr data retriever-set``
    out: str  # the run's folder: state, then the exported weights
    seed: int = 0
    steps: int = 2000
    batch: int = 16  # stretches per step
    positives: int = 8  # per stretch
    hard: int = 8  # sound-alike words not said, per stretch
    random: int = 6  # random pool words per stretch
    in_batch: int = 6  # other stretches' words per stretch
    rare_boost: float = 3.0  # how much more often a rare word is drawn as a positive
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100  # steps of linear warm-up, then cosine decay to 0
    save_every: int = 200
    threads: int = 2  # CPU threads of torch
    limit: int = 0  # use only the first N training stretches (0: all); 1 overfits a clip
    dev_limit: int = 0  # held-out stretches scored at the end (0: all)
    model: A2PConfig = field(default_factory=A2PConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "save_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def read_config(path: str | Path) -> TrainConfig:
    """A ``TrainConfig`` from a TOML file; unknown keys are errors, not ignored."""
    p = Path(path)
    raw = read_toml(p)
    extra = set(raw) - {"train", "model"}
    if extra:
        raise CtxasrError(str(p), f"unknown table(s): {', '.join(sorted(extra))}")
    train = dict(raw.get("train", {}))
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    unknown = set(train) - known
    if unknown:
        raise CtxasrError(str(p), f"unknown key(s) in [train]: {', '.join(sorted(unknown))}")
    for key in ("data", "out"):
        if key not in train:
            raise CtxasrError(str(p), f"[train] needs '{key}'")
        train[key] = str((p.parent / train[key]).resolve())
    try:
        model = A2PConfig.from_json({**A2PConfig().to_json(), **raw.get("model", {})})
        return TrainConfig(**train, model=model)
    except (TypeError, ValueError) as err:
        raise CtxasrError(str(p), str(err)) from None


@dataclass
class _Split:
    frames: np.ndarray  # (N, slots, E) float16, memory-mapped
    examples: list[Example]


class _Batches:
    """The terms of each step, drawn from the seed and the step number alone."""

    def __init__(self, data: Path, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.vocab: dict[str, list[int]] = json.loads((data / "vocab.json").read_text())
        self.pool = [w for w in json.loads((data / "distractors.json").read_text())
                     if self.vocab.get(w)]  # fmt: skip
        from ctxasr.eval.manifest import common_words

        self.common = common_words()
        self.train = _load_split(data, "train", cfg.limit)
        self.dev = _load_split(data, "dev", cfg.dev_limit)

    def tokens(self, terms: Sequence[str]) -> np.ndarray:
        L = self.cfg.model.max_tokens
        out = np.zeros((len(terms), L), dtype=np.int64)
        for i, t in enumerate(terms):
            toks = self.vocab.get(t, [])[:L]
            out[i, : len(toks)] = toks
        return out

    def said(self, ex: Example) -> list[str]:
        return [w for w in dict.fromkeys((*ex.words, *ex.names)) if self.vocab.get(w)]

    def step(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(B, slots, E) frames, (B, M, L) tokens, (B, M) labels and (B, M) weights."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        n = len(self.train.examples)
        picks = rng.choice(n, size=cfg.batch, replace=n < cfg.batch)
        saids = [self.said(self.train.examples[i]) for i in picks]
        M = cfg.positives + cfg.hard + cfg.random + cfg.in_batch
        terms = np.zeros((cfg.batch, M, cfg.model.max_tokens), dtype=np.int64)
        labels = np.zeros((cfg.batch, M), dtype=np.float32)
        weights = np.zeros((cfg.batch, M), dtype=np.float32)
        for b, (i, said) in enumerate(zip(picks, saids)):
            ex = self.train.examples[i]
            spoken = set(said)
            pos = _draw(rng, said, cfg.positives,
                        [cfg.rare_boost if w not in self.common else 1.0 for w in said])  # fmt: skip
            hard = _draw(rng, [w for w in ex.hard if self.vocab.get(w)], cfg.hard)
            rand = [w for w in _draw(rng, self.pool, cfg.random) if w not in spoken]
            others = [w for j, s in enumerate(saids) if j != b for w in s if w not in spoken]
            inb = _draw(rng, list(dict.fromkeys(others)), cfg.in_batch)
            row = [(w, 1.0) for w in pos] + [(w, 0.0) for w in (*hard, *rand, *inb)]
            row = row[:M]
            if row:
                terms[b, : len(row)] = self.tokens([w for w, _ in row])
                labels[b, : len(row)] = [y for _, y in row]
                weights[b, : len(row)] = 1.0
        frames = np.stack([self.train.frames[i] for i in picks]).astype(np.float32)
        return frames, terms, labels, weights


def _draw(rng: np.random.Generator, items: Sequence[str], k: int,
          weights: Sequence[float] | None = None) -> list[str]:  # fmt: skip
    if not items or k <= 0:
        return []
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        p = w / w.sum()
    idx = rng.choice(len(items), size=min(k, len(items)), replace=False, p=p)
    return [items[i] for i in idx]


def _load_split(data: Path, split: str, limit: int) -> _Split:
    folder = data / split
    if not (folder / "frames.npy").is_file():
        raise CtxasrError(str(folder), "no frames.npy: build the set with "
                          "`ctxasr data retriever-set` first")  # fmt: skip
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    examples = read_examples(folder)
    n = min(len(examples), frames.shape[0])
    if limit:
        n = min(n, limit)
    if n == 0:
        raise CtxasrError(str(folder), "holds no examples")
    return _Split(frames[:n], examples[:n])


def train(cfg: TrainConfig, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train (or resume) the run of ``cfg``; export the weights. Returns the dev scores."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ctxasr.a2p.model import A2PModel

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _Batches(Path(cfg.data), cfg)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    model = A2PModel(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.warmup, cfg.steps)
    )
    model, opt, sched = accelerator.prepare(model, opt, sched)
    run = RunState(accelerator, out)
    start = run.resume()
    started, loss_avg = time.perf_counter(), None
    model.train()
    for step in range(start, cfg.steps):
        frames, tokens, labels, weights = (torch.from_numpy(a).to(accelerator.device)
                                           for a in data.step(step))  # fmt: skip
        from ctxasr.a2p.model import pool_frames

        pooled = (
            frames if frames.shape[1] == cfg.model.slots else pool_frames(frames, cfg.model.pool)
        )
        logits = model(pooled, tokens)  # (B, M)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels, weight=weights, reduction="sum"
        ) / weights.sum().clamp(min=1)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if progress is not None:
            progress(step + 1, cfg.steps, loss_avg)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            run.save(step + 1)
    seconds = time.perf_counter() - started
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    scores = evaluate(unwrapped, data)
    if accelerator.is_main_process:
        export(unwrapped, cfg, out, scores, seconds, start, data)
    return scores


def evaluate(model, data: _Batches, distractors: int = 50) -> dict:
    """Held-out scores: per stretch, what was said against hard and random negatives."""
    import torch

    from ctxasr.a2p.model import pool_frames

    rng = np.random.default_rng(12345)
    auc, tp, fp, fn, rare_hit, rare_all, top_hit, top_all = [], 0, 0, 0, 0, 0, 0, 0
    with torch.no_grad():
        for i, ex in enumerate(data.dev.examples):
            said = data.said(ex)
            if not said:
                continue
            spoken = set(said)
            negs = [w for w in dict.fromkeys((*ex.hard, *_draw(rng, data.pool, distractors)))
                    if w not in spoken and data.vocab.get(w)]  # fmt: skip
            terms = said + negs
            frames = torch.from_numpy(np.asarray(data.dev.frames[i], dtype=np.float32))[None]
            if frames.shape[1] != model.config.slots:
                frames = pool_frames(frames, model.config.pool)
            p = torch.sigmoid(model(frames, torch.from_numpy(data.tokens(terms))[None]))[0]
            p = p.numpy()
            pos, neg = p[: len(said)], p[len(said) :]
            if len(neg):
                auc.append(float((pos[:, None] > neg[None, :]).mean()))
            tp += int((pos >= 0.5).sum())
            fn += int((pos < 0.5).sum())
            fp += int((neg >= 0.5).sum())
            rare = [j for j, w in enumerate(said) if w not in data.common]
            rare_all += len(rare)
            rare_hit += sum(int(pos[j] >= 0.5) for j in rare)
            # recall@k of rare words among all scored terms, k = number said + 5
            k = len(said) + 5
            top = set(np.argsort(-p)[:k].tolist())
            top_all += len(rare)
            top_hit += sum(1 for j in rare if j in top)
    return {
        "dev_stretches": len(data.dev.examples),
        "auc": round(float(np.mean(auc)), 4) if auc else None,
        "precision@0.5": round(tp / max(tp + fp, 1), 4),
        "recall@0.5": round(tp / max(tp + fn, 1), 4),
        "rare_recall@0.5": round(rare_hit / max(rare_all, 1), 4),
        "rare_recall@said+5": round(top_hit / max(top_all, 1), 4),
    }


def export(model, cfg: TrainConfig, out: Path, scores: dict, seconds: float, start: int,
           data: _Batches) -> None:  # fmt: skip
    from safetensors.numpy import save_file

    weights = {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(cfg.model.to_json(), indent=2) + "\n")
    n_params = sum(int(v.size) for v in weights.values())
    meta = json.loads((Path(cfg.data) / "meta.json").read_text()) if (
        Path(cfg.data) / "meta.json").is_file() else {}  # fmt: skip
    recipe = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("model",)}
    from ctxasr.a2p.data import HELD_OUT_VOICES

    spoken = meta.get("voices")  # sets of before the engines were wired: espeak-ng and Flite
    voices = (f"{len(spoken)} voices ({', '.join(spoken)}; kept out, so that synth-hard has "
              f"voices it never heard: {', '.join(HELD_OUT_VOICES)})" if spoken
              else "espeak-ng and Flite voices")  # fmt: skip
    card = f"""# A2P retriever for {cfg.model.encoder}

Scores the probability that a context term (its phones) is spoken in a 30 s stretch, from
the frozen speech encoder's frames (Attention2Probability's idea, ctxasr's own network:
``ctxasr.a2p.model``). {n_params:,} parameters.

## Training
- Data: `{cfg.data}` (`ctxasr data retriever-set`): {len(data.train.examples)} training
  stretches, {len(data.dev.examples)} held-out ones (sentences of their own) of public-domain
  sentences (the `text` collection: 16 Gutenberg books, filtered to share no 6-word
  sequence with the LibriSpeech test references) spoken by {voices} and augmented
  (`ctxasr.data.augment`). Set options: `{json.dumps(meta.get("options", {}))}`.
- Terms: words said (rare words drawn {cfg.rare_boost:g}x as often) against sound-alike
  pool words not said, random pool words and other stretches' words.
- Recipe: `{json.dumps(recipe)}`
- Steps {cfg.steps} (this run from step {start}), {seconds / 60:.1f} min of training on
  this machine, finished {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.

## Held-out scores
Per held-out stretch, the words said against its sound-alike negatives and 50 random pool
words: `{json.dumps(scores)}`.

## Limits
Trained on synthetic speech only; it has never heard real recordings. Used in ctxasr as a
re-ranker of the phonetic shortlist (`--retriever hybrid`), not alone.
"""
    (out / CARD_FILE).write_text(card)
