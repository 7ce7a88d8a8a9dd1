"""Decoder verification calibration: how much a prompt-free forced decode penalises
the second-pass changes that bring true terms in, against those that bring distractors.

Runs ctxasr (phonetic retriever at a loose threshold, so distractors get picked, verify on
with an unbounded margin, so every change is kept but its log-probability difference is
recorded) on real-speech and real-speech-2 with N=1,000 distractors, and appends one JSON
line per pick (term, true rare word or not, phonetic score, verify delta) to
``bench/work/verify_calibration.jsonl``. Usage::

    python bench/verify_calibration.py real,real2 0.7 phonetic
"""

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biasing_report import DATA, real_items, with_lists

from ctxasr import TranscribeOptions, Transcriber
from ctxasr.context.retrieval import PhoneticOptions
from ctxasr.data.biasing import WordPool, read_word_pool
from ctxasr.eval.manifest import EvalItem


def real2(folder):
    out = []
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        r = json.loads(line)
        text = r.get("text_normalized") or r["text"]
        text = re.sub(r"<[^>]*>|\[[^\]]*\]", " ", text)
        out.append(
            EvalItem(r["id"], folder / r["audio"], " ".join(text.split()), duration=r["duration"])
        )
    return out


sets = sys.argv[1].split(",")
thr = float(sys.argv[2]) if len(sys.argv) > 2 else 0.7
retr = sys.argv[3] if len(sys.argv) > 3 else "phonetic"
pool = WordPool(read_word_pool(DATA / "librispeech-biasing/words/all_rare_words.txt"))
opts = TranscribeOptions(
    retriever=retr, verify=True, verify_margin=1e9, retrieval=PhoneticOptions(threshold=thr)
)
t = Transcriber(options=opts)
with open(Path(__file__).resolve().parent / "work" / "verify_calibration.jsonl", "a") as out:
    for s in sets:
        items = real_items(DATA / "real-speech") if s == "real" else real2(DATA / "real-speech-2")
        for it in with_lists(items, pool, 1000):
            t0 = time.perf_counter()
            r = t.transcribe(it.audio, it.context)
            rare = {w.lower() for w in it.rare_words}
            for p in r.picks:
                out.writelines(
                    json.dumps(
                        {
                            "set": s,
                            "id": it.id,
                            "term": e.term,
                            "true": e.term.lower() in rare,
                            "in_text": e.in_text,
                            "score": e.score,
                            "verify": e.verify,
                            "span": e.span,
                        }
                    )
                    + "\n"
                    for e in p.selected
                )
            out.write(
                json.dumps(
                    {
                        "set": s,
                        "id": it.id,
                        "text": r.text,
                        "ref": it.text,
                        "rare": sorted(rare),
                        "secs": time.perf_counter() - t0,
                    }
                )
                + "\n"
            )
            out.flush()
