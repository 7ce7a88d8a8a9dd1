"""``CTCAligner``: CTC between projected speech and the LM's token embeddings."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ctxasr.speechllm.align import CTCAligner


def test_it_aligns_frames_with_their_tokens() -> None:
    """A linear map from toy "speech" learns to spell a token sequence in the table's space:
    the greedy path reads back the target, repeats and all."""
    # Two toy utterances are a rough landscape for CTC: some draws settle with one token
    # emitted on a silent frame. The seed is fixed; a different one may need more steps.
    torch.manual_seed(1)
    V, H, D = 12, 16, 10
    table = torch.randn(V, H)  # the frozen embeddings
    targets = [[3, 7, 7, 2], [5, 1]]
    # each utterance's frames: two frames per token, a silent frame between tokens
    inputs, masks = torch.zeros(2, 13, D), torch.zeros(2, 13, dtype=torch.bool)
    codes = torch.randn(V + 1, D)  # the "sound" of each token, and of silence
    for b, ids in enumerate(targets):
        frames = [codes[V]] + [f for t in ids for f in (codes[t], codes[t], codes[V])]
        inputs[b, : len(frames)] = torch.stack(frames)
        masks[b, : len(frames)] = True
    project, aligner = torch.nn.Linear(D, H), CTCAligner(H)
    opt = torch.optim.Adam([*project.parameters(), *aligner.parameters()], lr=0.02)
    first = None
    for _ in range(300):
        loss = aligner(project(inputs), masks, table, targets)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    assert aligner.greedy(project(inputs), masks, table) == targets
    logp = aligner.logits(project(inputs), table)
    assert logp.shape == (2, 13, V + 1)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 13), atol=1e-5)


def test_a_target_longer_than_its_frames_adds_nothing() -> None:
    aligner, table = CTCAligner(4), torch.randn(6, 4)
    speech = torch.randn(1, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = aligner(speech, mask, table, [[1, 2, 3, 4]])  # 4 tokens, 2 frames: impossible
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(speech.grad).all()
