"""Transcribe a manifest under several context conditions and score each one.

A *condition* decides which context each utterance gets: ``none`` (no context),
``context`` (the manifest's own list, e.g. the benchmark's rare words plus N
distractors, and its document, if any) or ``oracle`` (only the utterance's true rare
words). The recognizer is any function from (audio, terms, document) to (text, terms
used), so the same scoring serves ctxasr and the baselines it is compared with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ctxasr.errors import CtxasrError
from ctxasr.eval.manifest import EvalItem, rare_words_of
from ctxasr.eval.score import BiasingScores, ErrorCounts, Normalization, score_text

CONDITIONS = ("none", "context", "oracle")

# (audio path, context terms, document or None) -> (transcript text, the terms used)
Recognizer = Callable[[Path, Sequence[str], str | None], tuple[str, Sequence[str]]]
# (audio seconds done, audio seconds in all)
EvalProgress = Callable[[float, float], None]


@dataclass(frozen=True)
class Prediction:
    """One utterance's result under one condition."""

    id: str
    condition: str
    pred_text: str
    context_used: tuple[str, ...]
    seconds: float  # processing time
    duration: float  # audio seconds


@dataclass(frozen=True)
class ConditionResult:
    """Scores of one condition over the whole manifest."""

    condition: str
    scores: BiasingScores
    audio_seconds: float
    processing_seconds: float

    @property
    def rtfx(self) -> float:
        """Audio seconds transcribed per processing second (higher is faster)."""
        return self.audio_seconds / self.processing_seconds if self.processing_seconds else 0.0


@dataclass(frozen=True)
class EvalReport:
    """Everything one evaluation produced."""

    system: str
    normalize: Normalization
    results: tuple[ConditionResult, ...]
    predictions: tuple[Prediction, ...]


def context_for(item: EvalItem, condition: str) -> tuple[str, ...]:
    """The terms an utterance gets under ``condition``."""
    if condition == "none":
        return ()
    if condition == "context":
        return item.context
    if condition == "oracle":
        return tuple(sorted(rare_words(item)))
    raise CtxasrError(
        "condition", f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}"
    )


def document_for(item: EvalItem, condition: str) -> str | None:
    """The document an utterance gets under ``condition``: its own under ``context``."""
    return item.context_text if condition == "context" else None


def rare_words(item: EvalItem) -> frozenset[str]:
    """The utterance's biasing targets: the manifest's, or its words outside the 5k list."""
    return item.rare_words if item.rare_words is not None else rare_words_of(item.text)


def evaluate(
    items: Sequence[EvalItem],
    recognize: Recognizer,
    *,
    system: str,
    conditions: Sequence[str] = ("none", "context"),
    normalize: Normalization = "whisper",
    durations: dict[str, float] | None = None,
    progress: EvalProgress | None = None,
) -> EvalReport:
    """Run ``recognize`` on every item under every condition and score the results.

    ``durations`` (audio seconds by item id) lets progress be reported in audio time;
    without it the manifest's durations are used.
    """
    if items:
        for condition in conditions:
            context_for(items[0], condition)  # an unknown name fails before any work
    durations = durations or {i.id: i.duration or 0.0 for i in items}
    total = sum(durations.values()) * len(conditions)
    done = 0.0
    predictions: list[Prediction] = []
    results: list[ConditionResult] = []
    for condition in conditions:
        scores, audio_s, busy_s = BiasingScores(), 0.0, 0.0
        for item in items:
            terms, document = context_for(item, condition), document_for(item, condition)
            start = time.perf_counter()
            text, used = recognize(item.audio, terms, document)
            seconds = time.perf_counter() - start
            duration = durations.get(item.id, 0.0)
            predictions.append(Prediction(item.id, condition, text, tuple(used), seconds, duration))
            scores += score_text(item.text, text, rare_words(item), normalize=normalize)
            audio_s, busy_s = audio_s + duration, busy_s + seconds
            done += duration
            if progress is not None:
                progress(done, total)
        results.append(ConditionResult(condition, scores, audio_s, busy_s))
    return EvalReport(system, normalize, tuple(results), tuple(predictions))


def metrics_dict(report: EvalReport) -> dict:
    """The JSON form of a report's scores."""

    def counts(c: ErrorCounts) -> dict:
        return {"error_rate": c.error_rate, **asdict(c)}

    return {
        "system": report.system,
        "normalization": report.normalize,
        "conditions": {
            r.condition: {
                "wer": counts(r.scores.wer),
                "u_wer": counts(r.scores.u_wer),
                "b_wer": counts(r.scores.b_wer),
                "audio_seconds": r.audio_seconds,
                "processing_seconds": r.processing_seconds,
                "rtfx": r.rtfx,
            }
            for r in report.results
        },
    }


def markdown_table(reports: Sequence[EvalReport]) -> str:
    """One row per (system, condition): WER, U-WER, B-WER (percent) and RTFx."""
    lines = [
        "| system | condition | WER | U-WER | B-WER | biased words | RTFx |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for r in report.results:
            s = r.scores
            lines.append(
                f"| {report.system} | {r.condition} | {s.wer.error_rate:.2f} | {s.u_wer.error_rate:.2f} "
                f"| {s.b_wer.error_rate:.2f} | {s.b_wer.ref_words} | {r.rtfx:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot(reports: Sequence[EvalReport], path: Path, title: str) -> None:
    """Grouped bars: WER, U-WER and B-WER for each (system, condition)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    labels, rows = [], []
    for report in reports:
        for r in report.results:
            labels.append(f"{report.system}\n{r.condition}" if len(reports) > 1 else r.condition)
            rows.append(
                (r.scores.wer.error_rate, r.scores.u_wer.error_rate, r.scores.b_wer.error_rate)
            )
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(labels) + 2), 4))
    width = 0.27
    for k, name in enumerate(("WER", "U-WER", "B-WER")):
        xs = [i + (k - 1) * width for i in range(len(labels))]
        ax.bar(xs, [row[k] for row in rows], width, label=name)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("error rate (%)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    report: EvalReport, items: Sequence[EvalItem], outdir: Path, title: str
) -> dict[str, Path]:
    """Write predictions.jsonl, metrics.json, report.md and plot.png into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    by_id = {i.id: i for i in items}
    paths = {
        name: outdir / name
        for name in ("predictions.jsonl", "metrics.json", "report.md", "plot.png")
    }
    with paths["predictions.jsonl"].open("w", encoding="utf-8") as f:
        for p in report.predictions:
            item = by_id[p.id]
            row = {
                "id": p.id,
                "audio_filepath": str(item.audio),
                "text": item.text,
                **dict(item.extra),
                "condition": p.condition,
                "context_used": list(p.context_used),
                "rare_words": sorted(rare_words(item)),
                "pred_text": p.pred_text,
                "duration": p.duration,
                "seconds": p.seconds,
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    paths["metrics.json"].write_text(json.dumps(metrics_dict(report), indent=2) + "\n")
    paths["report.md"].write_text(
        f"# {title}\n\nSystem: {report.system}. Utterances: {len(items)}. "
        f"Normalisation: {report.normalize}. Error rates in percent; RTFx = audio seconds "
        "per processing second.\n\n" + markdown_table([report])
    )
    plot([report], paths["plot.png"], title)
    return paths
