"""The numpy scorer computes the torch model's network."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ctxasr.a2p.config import A2PConfig
from ctxasr.a2p.model import A2PModel, pool_frames
from ctxasr.a2p.scorer import A2PScorer


def _random_model(config: A2PConfig, seed: int = 0) -> A2PModel:
    torch.manual_seed(seed)
    model = A2PModel(config)
    with torch.no_grad():
        for p in model.parameters():  # not the init's zeros and ones: every weight matters
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("order", [False, True])
def test_numpy_matches_torch(order: bool) -> None:
    config = A2PConfig(order=order)
    model = _random_model(config)
    scorer = A2PScorer(config, {k: v.numpy() for k, v in model.state_dict().items()})
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((config.frames, config.encoder_dim)).astype(np.float32)
    prons = [
        [
            [int(p) for p in rng.integers(0, 39, size=rng.integers(1, 6))]
            for _ in range(rng.integers(1, 4))
        ]
        for _ in range(150)
    ] + [[list(range(39))]]  # longer than max_tokens: cut
    table = scorer.term_table(prons)
    ids = rng.permutation(len(table))
    got = scorer.score(scorer.listen(frames), table, ids)
    with torch.no_grad():
        pooled = pool_frames(torch.from_numpy(frames)[None], config.pool)
        tokens = torch.from_numpy(table.tokens[ids].astype(np.int64))[None]
        want = torch.sigmoid(model(pooled, tokens))[0].numpy()
    assert got.shape == (len(ids),)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert 0 < got.min() and got.max() < 1 and got.std() > 1e-3


@pytest.mark.parametrize("order", [False, True])
def test_loader_takes_what_the_model_saves(tmp_path, order: bool) -> None:
    import json

    from safetensors.numpy import save_file

    config = A2PConfig(order=order)
    model = _random_model(config)
    save_file({k: v.numpy().copy() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    scorer = A2PScorer.load(tmp_path)
    assert scorer.config == config
