"""The speech LLM's prompt as token ids around the two spans filled with embeddings.

The prompt is rendered once as text with two markers, one where the keywords go and
one where the speech goes, then cut at the markers and each piece tokenized on its own.
With a chat template (SmolLM2-Instruct has one) the prompt and the speech are the user's
turn and the target is the assistant's answer; without one the layout is plain:
``"{prompt}\\n" [speech] "\\n"``. The target follows the last piece directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxasr.speechllm.config import ModelConfig

# Stand-ins cut out again before tokenizing; no tokenizer ever sees them.
_KEYWORDS = "\x00KEYWORDS\x00"
_SPEECH = "\x00SPEECH\x00"


@dataclass(frozen=True)
class PromptIds:
    head: list[int]  # up to and including <|startofcontext|>
    middle: list[int]  # from <|endofcontext|> to the speech
    tail: list[int]  # after the speech, up to where the target starts
    head_no_context: list[int]  # ``prompt_no_context`` up to the speech


def render(tokenizer, prompt: str) -> str:
    """The whole prompt as text, with ``_SPEECH`` where the speech embeddings go."""
    if getattr(tokenizer, "chat_template", None):
        turn = [{"role": "user", "content": prompt + _SPEECH}]
        return tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    return f"{prompt}\n{_SPEECH}\n"


def prompt_ids(tokenizer, config: ModelConfig) -> PromptIds:
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids if text else []

    before, after = render(tokenizer, config.prompt.replace("{keywords}", _KEYWORDS)).split(_SPEECH)
    head, middle = before.split(_KEYWORDS)
    plain, tail = render(tokenizer, config.prompt_no_context).split(_SPEECH)
    assert tail == after, "the turn after the speech does not depend on the prompt"
    return PromptIds(ids(head), ids(middle), ids(tail), ids(plain))
