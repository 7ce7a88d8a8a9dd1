"""UNIQUE page-sparse attention against dense SDPA: the time and the fidelity of one decode
step's attention at cache lengths of 4k to 128k tokens (``ctxasr.attention.unique``).

Shapes are SmolLM2-135M's: 9 query heads, 3 kv heads, head dim 64, batch 1, 2 torch
threads. Each row times ``STEPS`` consecutive decode steps per layer, dense and UNIQUE side
by side in one loop (alternating which goes first), after a warm-up; the times are medians
over every step and repeat. Dense is ``scaled_dot_product_attention`` with the query heads
packed onto their kv heads (what transformers does when decoding: no copy of the cache).
A UNIQUE step includes appending the new key to the page summaries; building them for the
prompt (the prefill) is not timed. Fidelity: the cosine similarity and the relative L2
error of the step's output (all heads, 9 x 64 values) against dense attention, and the
worst single head's cosine.

Keys, values and queries:

* ``smollm2``: SmolLM2-135M-Instruct's own, captured at layers ``LAYERS`` while it reads a
  public-domain book (Gibbon's *Decline and Fall*, ``/work/shared/data/text/books``). Its
  context is 8k tokens, so the book is encoded in consecutive passages of ``PASSAGE``
  tokens, each behind the same ``SINK`` first tokens of the book. A cache of ``n`` tokens
  is those sink tokens once, then the passages without them, the first one trimmed at its
  start to make ``n`` exactly; the queries are the last ``STEPS`` positions of the last
  passage. At 4k this is one real context. Beyond, two things are made up. (1) Passages
  were encoded apart: a query never attended to earlier passages when it was computed.
  (2) Positions: the query's passage keeps the positions it was encoded at, and every
  earlier passage is moved (its keys rotated by RoPE) to where the passage just before it
  would be, 4k to 8k tokens back: within the distances the model was trained on. Keeping
  every passage at its own positions would make the end of each one look as recent as
  the query's own (attention spreads over all their ends: 4-5% of it stays in the
  query's passage at 64k, against 67-100% in a real 4k context); moving them to their
  true distances, past the 8k the model knows, is worse (under 1% stays: RoPE
  extrapolation). Moved back one passage, 42-77% stays, and the share of the first
  tokens (the sinks) is close to the real context's. This is real key structure, not a
  real 64k context, which this model cannot read.
* ``gaussian``: i.i.d. standard normal queries, keys and values: attention is almost
  flat, the worst case for any sparse attention.

The captured tensors are kept in ``bench/work/sparse_attention/`` (float16), so only the
first run pays for encoding (about 10 s a passage on two idle cores; 17 passages for 64k,
33 for 128k).

Usage::

    python bench/sparse_attention.py [--quick] [--lengths 4096 16384 65536 131072]
        [--top-k 64] [--repeats 15] [--threads 2]

The script runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set (it starts
itself again with it). With OpenMP's default, worker threads spin after every parallel
operation; on cores shared with other work every following operation then waits for a
time slice (about 12 ms here): once for dense attention's single operation, dozens of
times for UNIQUE's small ones (90-150 ms a step instead of 2-3). Passive workers cost
UNIQUE a little on an idle machine (each wake-up) and nothing to dense attention. The
report records the setting and the load average.

``--quick``: only 64k, no sweep of k, nothing written; its last line is
``speedup@64k: X.XX cosine: 0.YYYY`` (the SmolLM2 row). The full run writes
``bench/results/sparse_attention.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ctxasr.attention.unique import PageSparseOptions, PageSummaries, page_sparse_attention

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BOOK = ROOT.parent / "shared" / "data" / "text" / "books" / "gibbon-decline-and-fall-vol1.txt"
WORK = HERE / "work" / "sparse_attention"
RESULTS = HERE / "results"
LLM = "smollm2-135m-instruct"
LAYERS = (3, 10, 17, 24)  # of 30: early, middle and late attention
PASSAGE = 4096  # tokens per encoded passage, half of SmolLM2's context
SINK = 4  # the book's first tokens, ahead of every passage
STEPS = 8  # decode steps per layer and row
WARMUP = 3
HQ, HKV, D = 9, 3, 64
ROPE_THETA = 100_000.0  # SmolLM2's


def passages_needed(n: int) -> int:
    return math.ceil((n - SINK) / (PASSAGE - SINK))


def capture(count: int, book: Path) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` passages' keys and values ``(HKV, PASSAGE, D)`` and last
    ``STEPS`` queries ``(HQ, STEPS, D)`` at every layer of ``LAYERS``, from the cache folder
    or encoded now (and saved there)."""
    from safetensors.torch import load_file, save_file

    folder = WORK / f"{LLM}-{book.stem}-p{PASSAGE}-s{SINK}-l{'.'.join(map(str, LAYERS))}"
    paths = [folder / f"passage-{j:03d}.safetensors" for j in range(count)]
    missing = [j for j, p in enumerate(paths) if not p.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        for j, tensors in _encode(missing, book):
            save_file(tensors, str(paths[j]))
    return [load_file(str(p)) for p in paths]


def _encode(indices: list[int], book: Path):
    """Yield ``(j, tensors)`` for passage ``j`` of ``indices``, two passages a batch."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from ctxasr.speechllm.llm import load_llm

    model, tokenizer = load_llm(LLM)
    model.model.layers = model.model.layers[: max(LAYERS) + 1]  # nothing deeper is read
    ids = tokenizer(book.read_text(encoding="utf-8"), return_tensors="pt").input_ids[0]
    text = PASSAGE - SINK
    if len(ids) < SINK + (max(indices) + 1) * text:
        sys.exit(f"{book} has {len(ids)} tokens: too few for {max(indices) + 1} passages")
    seen: dict[int, tuple[torch.Tensor, ...]] = {}

    def record(module, query, key, value, attention_mask, **kwargs):
        if module.layer_idx in LAYERS:
            seen[module.layer_idx] = (query[:, :, -STEPS:], key, value)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("bench-capture", record)
    AttentionMaskInterface.register("bench-capture", sdpa_mask)
    model.set_attn_implementation("bench-capture")
    for start in range(0, len(indices), 2):
        batch = indices[start : start + 2]
        began = time.perf_counter()
        x = torch.stack([torch.cat([ids[:SINK], ids[SINK + j * text : SINK + (j + 1) * text]])
                         for j in batch])  # fmt: skip
        with torch.inference_mode():
            model.model(input_ids=x, use_cache=False)
        for row, j in enumerate(batch):
            yield j, {f"{name}.{layer}": t[row].half().contiguous()
                      for layer, qkv in seen.items() for name, t in zip("qkv", qkv)}  # fmt: skip
        print(f"  encoded passages {batch} in {time.perf_counter() - began:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip


def real_cache(passages: list[dict[str, torch.Tensor]], n: int, layer: int):
    """``(q (1, HQ, STEPS, D), k, v (1, HKV, n, D))`` float32 for a cache of ``n`` tokens:
    the sink tokens, earlier passages moved (RoPE) to the place of the passage just before
    the query's, then the query's own passage as it was encoded."""
    last = passages_needed(n) - 1
    trim = SINK + (last + 1) * (PASSAGE - SINK) - n  # from the start of the first passage
    ks, vs = [passages[0][f"k.{layer}"][:, :SINK]], [passages[0][f"v.{layer}"][:, :SINK]]
    for j in range(last + 1):
        start = SINK + (trim if j == 0 else 0)  # the first position of it kept
        k = passages[j][f"k.{layer}"][:, start:].float()
        ks.append(k if j == last else rope_shift(k, -(PASSAGE - SINK)))
        vs.append(passages[j][f"v.{layer}"][:, start:])
    k, v = torch.cat([x.float() for x in ks], dim=1)[None], torch.cat(vs, dim=1)[None].float()
    assert k.shape == (1, HKV, n, D), k.shape
    return passages[last][f"q.{layer}"][None].float(), k, v


def rope_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """RoPE-rotated vectors ``x (..., D)`` moved ``shift`` positions on: one more rotation
    by ``shift`` times each frequency (transformers' Llama layout: channel ``i`` pairs with
    ``i + D/2``)."""
    freq = ROPE_THETA ** -(torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    angle = shift * freq
    cos, sin = angle.cos().float().repeat(2), angle.sin().float().repeat(2)  # (D,)
    half = torch.cat([-x[..., D // 2 :], x[..., : D // 2]], dim=-1)
    return x * cos + half * sin


def gaussian_cache(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, HQ, STEPS, D, generator=g), torch.randn(1, HKV, n, D, generator=g),
            torch.randn(1, HKV, n, D, generator=g))  # fmt: skip


def dense_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Decoding attention as transformers' SDPA does it: ``(1, HQ, 1, D)``."""
    return F.scaled_dot_product_attention(q.view(1, HKV, HQ // HKV, D), k, v).view(1, HQ, 1, D)


@dataclasses.dataclass
class Measured:
    dense: list[float] = dataclasses.field(default_factory=list)  # seconds per step
    unique: list[float] = dataclasses.field(default_factory=list)
    cosine: list[float] = dataclasses.field(default_factory=list)  # per step, all heads
    head_cosine: list[float] = dataclasses.field(default_factory=list)  # per step and head
    rel_l2: list[float] = dataclasses.field(default_factory=list)

    def add(self, other: Measured) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).extend(getattr(other, field.name))

    @property
    def speedup(self) -> float:
        return statistics.median(self.dense) / statistics.median(self.unique)


def measure(q, k, v, options: PageSparseOptions, repeats: int) -> Measured:
    """``STEPS`` decode steps over the cache ``k``, ``v``: query ``i`` sees the first
    ``n - STEPS + 1 + i`` keys (its own the last)."""
    out, n = Measured(), k.shape[2]
    base = PageSummaries(options.page_size)
    base.append(k[:, :, : n - STEPS])  # the prefill's summaries
    for i in range(STEPS):
        length = n - STEPS + 1 + i
        # A fresh contiguous cache each step, as a DynamicCache holds it.
        ki, vi = k[:, :, :length].contiguous(), v[:, :, :length].contiguous()
        qi = q[:, :, i : i + 1].contiguous()

        def unique(summaries: PageSummaries, qi=qi, ki=ki, vi=vi, length=length):
            summaries.append(ki[:, :, length - 1 : length])
            return page_sparse_attention(qi, ki, vi, summaries, options)

        for r in range(WARMUP + repeats):
            summaries = copy.deepcopy(base)
            times = {}
            for name in ("dense", "unique") if r % 2 else ("unique", "dense"):
                began = time.perf_counter()
                dense_step(qi, ki, vi) if name == "dense" else unique(summaries)
                times[name] = time.perf_counter() - began
            if r >= WARMUP:
                out.dense.append(times["dense"])
                out.unique.append(times["unique"])
        exact = dense_step(qi, ki, vi).flatten(1, 2)  # (1, HQ*D)
        approx = unique(base).flatten(1, 2)  # (base now summarises the step's cache)
        out.cosine.append(float(F.cosine_similarity(approx.flatten(), exact.flatten(), dim=0)))
        out.head_cosine.extend(F.cosine_similarity(approx[0].view(HQ, D), exact[0].view(HQ, D),
                                                   dim=-1).tolist())  # fmt: skip
        out.rel_l2.append(float((approx - exact).norm() / exact.norm()))
    return out


def run_row(kind: str, n: int, options: PageSparseOptions, repeats: int, passages) -> Measured:
    total = Measured()
    for index, layer in enumerate(LAYERS):
        q, k, v = real_cache(passages, n, layer) if kind == "smollm2" else gaussian_cache(n, index)
        total.add(measure(q, k, v, options, repeats))
    return total


def cells(m: Measured) -> list[str]:
    return [f"{statistics.median(m.dense) * 1e3:.2f}", f"{statistics.median(m.unique) * 1e3:.2f}",
            f"{m.speedup:.2f}x", f"{statistics.mean(m.cosine):.4f}", f"{min(m.cosine):.4f}",
            f"{min(m.head_cosine):.4f}", f"{statistics.mean(m.rel_l2):.4f}"]  # fmt: skip


HEADER = (
    "| keys | cache tokens | pages | dense ms | UNIQUE ms | speed-up | cosine mean | cosine min "
    "| worst head cosine | rel. L2 mean |\n" + "|---" * 10 + "|"
)


def main() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:  # read when OpenMP loads: start again with it
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64k only, no sweep, no file")
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384, 65536, 131072])
    parser.add_argument("--top-k", type=int, default=PageSparseOptions().top_k)
    parser.add_argument("--sweep", nargs="+", type=int, default=[8, 16, 32, 64, 128],
                        help="values of top_k tried at 64k (full run)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--book", type=Path, default=BOOK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started, load = time.perf_counter(), os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    lengths = [65536] if args.quick else args.lengths
    options = PageSparseOptions(top_k=args.top_k)
    passages = capture(max(passages_needed(n) for n in lengths), args.book)
    rows, measured = [], {}
    for kind in ("smollm2", "gaussian"):
        for n in lengths:
            m = measured[kind, n] = run_row(kind, n, options, args.repeats, passages)
            pages = math.ceil(n / options.page_size)
            rows.append(f"| {kind} | {n:,} | {pages:,} | " + " | ".join(cells(m)) + " |")
            print(rows[-1], flush=True)
    sweep = []
    if not args.quick and 65536 in lengths:
        tried = [PageSparseOptions(top_k=k) for k in args.sweep]
        tried.append(dataclasses.replace(options, share_pages=False))
        for o in tried:
            m = run_row("smollm2", 65536, o, max(3, args.repeats // 3), passages)
            label = f"{o.top_k}" + ("" if o.share_pages else ", per query head")
            sweep.append(f"| {label} | {o.kept_pages * o.page_size:,} | " + " | ".join(cells(m))
                         + " |")  # fmt: skip
            print(sweep[-1], flush=True)
    summary = measured.get(("smollm2", 65536))
    loads = (load, os.getloadavg()[0])
    text = report(args, options, rows, sweep, time.perf_counter() - started, loads, summary)
    print(text)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sparse_attention.md").write_text(text, encoding="utf-8")
    if summary is not None:
        print(f"speedup@64k: {summary.speedup:.2f} cosine: {statistics.mean(summary.cosine):.4f}")


def report(args, options: PageSparseOptions, rows: list[str], sweep: list[str],
           seconds: float, loads: tuple[float, float], at64k: Measured | None) -> str:  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    o = options
    verdict = ""
    if at64k is not None:
        speedup, cosine = at64k.speedup, statistics.mean(at64k.cosine)
        verdict = (f" Measured (smollm2 keys): {speedup:.2f}x, target "
                   f"{'met' if speedup >= 4 else 'missed'}; cosine {cosine:.4f}, target "
                   f"{'met' if cosine >= 0.99 else 'missed'}.")  # fmt: skip
    text = (
        "# UNIQUE page-sparse attention vs dense SDPA: one decode step\n\n"
        f"{datetime.date.today().isoformat()}; machine: {platform.machine()}, "
        f"{args.threads} torch threads, torch {torch.__version__}, Python "
        f"{platform.python_version()}; code: {commit} (plus the working tree). Command: "
        f"`{' '.join(['python', 'bench/sparse_attention.py', *sys.argv[1:]])}` "
        f"({seconds / 60:.1f} min), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}. "
        f"Load average {loads[0]:.2f} at the start, {loads[1]:.2f} at the end (other work "
        "on the two cores: it slows every row, UNIQUE's many small operations more than "
        "dense attention's one).\n\n"
        f"Options: page size {o.page_size}, top_k {o.top_k}, {o.sink_pages} sink page(s), "
        f"{o.recent_pages} recent pages, std weight {o.std_weight}, pages shared by a kv "
        f"head's query heads: {o.share_pages} -- {o.kept_pages * o.page_size:,} tokens "
        "attended per step. SmolLM2-135M's shapes (9 query heads, 3 kv heads, head dim "
        f"64), batch 1. Each row: layers {', '.join(map(str, LAYERS))} x {STEPS} decode "
        f"steps, {args.repeats} timed repeats each after {WARMUP} warm-up; times are "
        "medians, dense and UNIQUE timed side by side. smollm2: the model's own keys over "
        "passages of a book (beyond 4k, passages encoded apart and concatenated: see the "
        "script's docstring); gaussian: i.i.d. normal, the worst case.\n\n"
        "Targets (the issue): at 64k, UNIQUE at least 4x faster than dense with cosine "
        f"similarity at least 0.99 at the default k.{verdict}\n\n"
        "While the cache has no more pages than a step keeps (up to "
        f"{o.kept_pages * o.page_size:,} tokens), UNIQUE is dense attention, exact (its time "
        "includes the page summaries' update). With i.i.d. keys "
        "the dense output is an average of nearly all values, close to 0, so its relative "
        "L2 error exceeds 1.\n\n" + HEADER + "\n" + "\n".join(rows)
    )
    if sweep:
        text += (
            "\n\n## top_k at 64k (smollm2 keys)\n\nFewer repeats than above "
            f"({max(3, args.repeats // 3)} per step).\n\n"
            + HEADER.replace("| keys | cache tokens | pages |", "| top_k | tokens attended |")
            .replace("|---|---|---|---|", "|---|---|---|", 1)
            + "\n" + "\n".join(sweep)
        )  # fmt: skip
    return text + "\n"


if __name__ == "__main__":
    main()
