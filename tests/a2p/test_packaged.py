"""The packaged A2P weights load offline and listen to real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctxasr.a2p.scorer import A2PScorer, packaged_weights_dir

CLIP = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"


def test_packaged_weights_load_with_their_card() -> None:
    folder = packaged_weights_dir()
    assert (folder / "MODEL_CARD.md").is_file()
    scorer = A2PScorer.load()
    assert scorer.encoder_dim == 384 and "tiny.en" in scorer.encoder


@pytest.mark.model
def test_a_spoken_word_outscores_unrelated_distractors() -> None:
    from ctxasr.a2p.data import encode_stretch, load_encoder
    from ctxasr.audio import load_audio
    from ctxasr.context.phonetic import Pronouncer

    scorer = A2PScorer.load()
    frames = encode_stretch(load_encoder(2), load_audio(CLIP))
    terms = ["apostle", "gospel", "zanzibar", "kubernetes", "photosynthesis", "xylophone"]
    table = scorer.term_table([p[0] for p in Pronouncer(g2p=False).terms(terms, 1)])
    probs = scorer.score(scorer.listen(frames), table, np.arange(len(terms)))
    assert probs[:2].min() > probs[2:].max(), probs
