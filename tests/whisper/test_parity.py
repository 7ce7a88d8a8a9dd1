"""The PyTorch backend against CTranslate2 on real speech: same greedy transcripts.

Both run the packaged tiny.en in float32 on the first 30 s window of each real-speech
fixture. The token sequences must be equal and every token's log-probability close;
the largest difference seen is printed (run with ``-s``) for the record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model

FIXTURES = Path(__file__).parents[1] / "fixtures" / "audio"
EXAMPLE = Path(__file__).parents[2] / "examples" / "linnell-8k.wav"
RECORDINGS = [*sorted(FIXTURES.glob("*.wav")), FIXTURES / "jfk.flac", EXAMPLE]


@pytest.fixture(scope="module")
def backends():
    ctranslate2 = pytest.importorskip("ctranslate2")
    tokenizers = pytest.importorskip("tokenizers")
    from ctxasr.models import packaged_model_path
    from ctxasr.whisper.backend import TorchWhisper, tokens_of
    from ctxasr.whisper.weights import load_whisper

    path = packaged_model_path()
    if path is None:
        pytest.skip("the packaged tiny.en model is not installed")
    reference = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="float32")
    tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    loaded = load_whisper(path)
    return reference, TorchWhisper(loaded, tokens_of(tokenizer, loaded))


def _features(recording: Path) -> np.ndarray:
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    from ctxasr.audio import load_audio

    mel = FeatureExtractor()(load_audio(recording))[..., :-1]
    return np.ascontiguousarray(pad_or_trim(mel)[None], dtype=np.float32)


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.name)
def test_greedy_decoding_matches_ctranslate2(backends, recording):
    import ctranslate2
    import torch

    from ctxasr.whisper.decoding import BeamSearch, SearchOptions

    reference, torch_whisper = backends
    features = _features(recording)
    prompt = [torch_whisper.tokens.sot]  # timestamps on, as faster-whisper decodes
    expected = reference.generate(
        ctranslate2.StorageView.from_array(features), [prompt], beam_size=1,
        return_scores=True, return_logits_vocab=True, return_no_speech_prob=True,
    )[0]  # fmt: skip
    ids = expected.sequences_ids[0]
    # CTranslate2's per-step logits are already filtered: their log-softmax is the
    # log-probability of the token it chose.
    ct2_logprobs = [
        torch.log_softmax(torch.from_numpy(np.asarray(step)).float(), dim=-1)[token].item()
        for step, token in zip(expected.logits[0], ids, strict=False)
    ]
    got = torch_whisper.generate(torch_whisper.encode(features), [prompt], beam_size=1,
                                 return_scores=True, return_no_speech_prob=True)[0]  # fmt: skip
    assert got.sequences_ids[0] == ids

    # Per-token log-probabilities, from the same search the backend runs.
    search = BeamSearch(torch_whisper.model, torch_whisper.tokens, SearchOptions(beam_size=1),
                        torch_whisper._filters(prompt, 1.0, 0, True, [-1], 50))  # fmt: skip
    hyp = search.run(torch_whisper.encode(features), prompt)[0].hypotheses[0]
    assert list(hyp.tokens) == ids
    worst = max(abs(a - b) for a, b in zip(hyp.token_logprobs, ct2_logprobs, strict=True))
    print(f"\n{recording.name}: {len(ids)} tokens, largest log-probability difference {worst:.2e}")
    assert worst < 2e-3
    assert got.scores[0] == pytest.approx(expected.scores[0], abs=1e-3)
    assert got.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-4)
