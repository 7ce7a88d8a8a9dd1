"""SpeechLLM's decoding: padding does not change a transcript, the score hook steers it,
beam search of one beam is greedy; a real encoder plugs into MoSE."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ctxasr.speechllm import search
from ctxasr.speechllm.config import LoRAConfig, ModelConfig
from ctxasr.speechllm.interfaces import SpeechEncoder, load_encoder
from ctxasr.speechllm.model import SpeechLLM, batch_frames

CONTEXTS = [["quilter", "gospel"], [], ["zanzibar"]]


@pytest.fixture(scope="module")
def model() -> SpeechLLM:
    torch.manual_seed(0)
    m = SpeechLLM(ModelConfig(encoders=("random:32:25",), llm="tiny-random",
                              lora=LoRAConfig(r=4, dropout=0.0)))  # fmt: skip
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def speech(model: SpeechLLM) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return model.encode_speech([rng.standard_normal(n).astype(np.float32)
                                for n in (40_000, 8_000, 24_000)])  # fmt: skip


def test_a_batch_decodes_as_each_utterance_alone(model: SpeechLLM, speech) -> None:
    together = model.generate(*batch_frames(speech), CONTEXTS, max_new_tokens=8)
    alone = [model.generate(*batch_frames([s]), [c], max_new_tokens=8)[0]
             for s, c in zip(speech, CONTEXTS)]  # fmt: skip
    assert together == alone


def test_one_beam_is_greedy(model: SpeechLLM, speech) -> None:
    x, mask = batch_frames(speech)
    prefixes = model.prefix(x, mask, CONTEXTS)
    for p in prefixes:
        args = {"eos": model.eos, "max_new_tokens": 8, "banned": model.special}
        greedy = search.greedy(model.lm, model.embed, p[None], torch.ones(1, len(p)), **args)
        assert search.beam_search(model.lm, model.embed, p[None], beam_size=1, **args) == greedy[0]
    beams = model.generate(x, mask, CONTEXTS, max_new_tokens=6, beam_size=4)
    assert len(beams) == 3 and all(isinstance(b, str) for b in beams)


class Bonus:
    """Pushes one word's tokens, in order: what a context graph's fusion would do."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens, self.seen = tokens, []

    def adjust(self, tokens, logp):
        self.seen.append(list(tokens))
        i = len(tokens)
        if i < len(self.tokens):
            logp[self.tokens[i]] += 100.0


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_score_hook_steers_decoding(model: SpeechLLM, speech, beam_size: int) -> None:
    word = model.tokenizer(" photosynthesis", add_special_tokens=False).input_ids
    hook = Bonus(word)
    x, mask = batch_frames(speech[:1])
    out = model.generate(x, mask, CONTEXTS[:1], max_new_tokens=len(word) + 2,
                         beam_size=beam_size, hook=hook)  # fmt: skip
    assert out[0].startswith("photosynthesis"), out
    assert hook.seen[0] == [] and hook.seen[1] == word[:1]


def test_the_loss_counts_only_the_target(model: SpeechLLM, speech) -> None:
    x, mask = batch_frames(speech[:1])
    with torch.no_grad():
        short = model(x, mask, [["quilter"]], ["hello"])
        other = model(x, mask, [["quilter"]], ["hello world"])
    assert torch.isfinite(short) and short.item() != other.item()
    n = len(model.target_ids("hello"))
    assert n == len(model.tokenizer("hello", add_special_tokens=False).input_ids) + 1  # + eos


def test_a_real_encoder_joins_a_random_one_in_mose() -> None:
    whisper = load_encoder("whisper:tiny.en")
    assert isinstance(whisper, SpeechEncoder)
    m = SpeechLLM(ModelConfig(encoders=("whisper:tiny.en", "random:32:25"), llm="tiny-random"))
    frames = m.encode_speech([np.zeros(16_000, dtype=np.float32)])[0]
    assert frames.shape == (25, whisper.dim + 32)  # 1 s at the lower 25 fps
    x, mask = batch_frames([frames])
    with torch.no_grad():
        assert torch.isfinite(m(x, mask, [["quilter"]], ["hello"]))
