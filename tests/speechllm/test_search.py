"""Joint CTC/attention decoding: the CTC prefix scores against brute force over every
frame path, and the search ending where the frames say."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxasr.speechllm import search
from ctxasr.speechllm.config import ModelConfig
from ctxasr.speechllm.model import SpeechLLM


def _collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    return tuple(t for i, t in enumerate(path) if t != blank and (i == 0 or t != path[i - 1]))


def _brute(logp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every labelling's probability, summed over the frame paths that collapse to it."""
    T, V1 = logp.shape
    p = logp.double().exp()
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V1), repeat=T):
        label = _collapse(path, V1 - 1)
        out[label] = out.get(label, 0.0) + math.prod(float(p[t, s]) for t, s in enumerate(path))
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), T=st.integers(1, 5),
       prefix=st.lists(st.integers(0, 2), min_size=1, max_size=4))  # fmt: skip
def test_prefix_scores_match_brute_force(seed: int, T: int, prefix: list[int]) -> None:
    # float64: the brute force sums whole paths, which needs rows summing to 1 closely
    noise = torch.randn(T, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logp = torch.log_softmax(2 * noise, -1)
    scorer = search.CTCPrefixScorer(logp)  # tokens 0-2, blank 3
    labelled = _brute(logp)
    r_n, r_b = scorer.initial()
    last = torch.tensor([-1])
    for i, token in enumerate(prefix):
        psi, new_n, new_b = scorer.extend(r_n, r_b, last, torch.tensor([0, 1, 2]))
        h = tuple(prefix[: i + 1])
        want = sum(p for label, p in labelled.items() if label[: len(h)] == h)
        got = float(psi[0, token].exp())
        assert got == pytest.approx(want, rel=1e-9, abs=1e-300)
        r_n, r_b, last = new_n[:, token], new_b[:, token], torch.tensor([token])
        exact = float(scorer.final(r_n, r_b).exp()[0])
        assert exact == pytest.approx(labelled.get(h, 0.0), rel=1e-9, abs=1e-300)


def test_the_full_sequence_score_is_ctc_loss() -> None:
    torch.manual_seed(1)
    logp = torch.log_softmax(torch.randn(60, 11), -1)
    target = [3, 3, 7, 1, 0, 9, 9, 2]
    scorer = search.CTCPrefixScorer(logp)
    r_n, r_b = scorer.initial()
    last = -1
    for token in target:
        _, new_n, new_b = scorer.extend(r_n, r_b, torch.tensor([last]), torch.tensor([token]))
        r_n, r_b, last = new_n[:, 0], new_b[:, 0], token
    loss = torch.nn.functional.ctc_loss(logp.double()[:, None], torch.tensor([target]),
                                        [60], [len(target)], blank=10, reduction="sum")  # fmt: skip
    assert float(scorer.final(r_n, r_b)[0]) == pytest.approx(-float(loss), rel=1e-9)


def test_vocabulary_is_what_frames_favour() -> None:
    logp = torch.full((3, 6), math.log(1e-4))
    logp[0, 2], logp[1, 5], logp[2, 4] = 0.0, 0.0, math.log(0.5)  # 5 is the blank
    assert search.CTCPrefixScorer(logp).vocabulary().tolist() == [2, 4]


@pytest.fixture(scope="module")
def model() -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM(ModelConfig(encoders=("random:32:25",), llm="tiny-random")).eval()


def _frames(tokens: list[int], vocab: int, repeat: int = 3) -> torch.Tensor:
    """Frame log-probabilities that say ``tokens``, each for ``repeat`` frames, then blanks."""
    T = repeat * len(tokens) + 4
    logp = torch.full((T, vocab + 1), -20.0)
    logp[:, vocab] = 0.0
    for i, t in enumerate(tokens):
        logp[i * repeat : (i + 1) * repeat, t], logp[i * repeat : (i + 1) * repeat, vocab] = (
            0.0,
            -20,
        )
    return torch.log_softmax(logp, -1)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_frames_pull_the_search_and_end_it(model: SpeechLLM, beam_size: int) -> None:
    said = model.tokenizer(" mister quilter", add_special_tokens=False).input_ids
    vocab = model.token_table().shape[0]
    prompt = model.embed(torch.tensor([[1, 2, 3]]))
    args = {"eos": model.eos, "max_new_tokens": 12, "banned": model.special,
            "beam_size": beam_size}  # fmt: skip
    alone = search.beam_search(model.lm, model.embed, prompt, **args)
    assert alone != said  # a random LM says something else
    scorer = search.CTCPrefixScorer(_frames(said, vocab))
    joint = search.beam_search(model.lm, model.embed, prompt, ctc=scorer, ctc_weight=0.8, **args)
    assert joint == said


def test_generate_uses_the_ctc_head(model: SpeechLLM, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    speech = model.encode_speech([rng.standard_normal(n).astype(np.float32)
                                  for n in (16_000, 9_000)])  # fmt: skip
    from ctxasr.speechllm.model import batch_frames

    x, mask = batch_frames(speech)
    plain = model.generate(x, mask, [["quilter"], []], max_new_tokens=6)
    assert model.generate(x, mask, [["quilter"], []], 6, ctc_weight=0.5) == plain  # no head
    scored: list[int] = []  # frames per utterance the joint search was given

    class Counting(search.CTCPrefixScorer):
        def __init__(self, logp: torch.Tensor) -> None:
            scored.append(len(logp))
            super().__init__(logp)

    monkeypatch.setattr(search, "CTCPrefixScorer", Counting)
    try:
        model.add_ctc()
        joint = model.generate(x, mask, [["quilter"], []], 6, ctc_weight=0.5)
        frames = model.project(x, mask)[1].sum(1).tolist()  # projected frames per utterance
        assert scored == frames and frames[0] > frames[1]  # each searched with its own
        alone = [model.generate(*batch_frames([s]), [c], 6, ctc_weight=0.5)[0]
                 for s, c in zip(speech, [["quilter"], []])]  # fmt: skip
        assert joint == alone and all(isinstance(t, str) for t in joint)
    finally:
        model.ctc = None
