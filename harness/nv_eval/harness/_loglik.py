"""Reading loglikelihoods out of ``/v1/completions`` echo replies: the continuation's tokens are
located by ``text_offset`` against the prompt text, never by position (robust to replies without a
generated token after the echoed prompt, and to a BOS token the server does not echo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ReplyShapeError(ValueError):
    """An echo reply that cannot be scored (no logprobs, offsets not covering the prompt)."""


@dataclass(frozen=True)
class Scored:
    logprob: float
    greedy: bool  # every continuation token was the top-1 token
    n_tokens: int
    straddles: bool  # a token spans the context/continuation boundary (counted to the continuation)
    generated: bool  # the reply held a generated token after the echoed prompt


def echo_body(model: str, prompt: str) -> dict[str, Any]:
    """The request for the loglikelihood of ``prompt``'s tokens (lm-eval's local-completions shape)."""
    return {"model": model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}


def logprobs_of(reply: dict[str, Any]) -> dict[str, Any]:
    try:
        lp = reply["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ReplyShapeError("reply has no choices[0].logprobs") from None
    if (
        not isinstance(lp, dict)
        or not lp.get("tokens")
        or lp.get("text_offset") is None
        or lp.get("token_logprobs") is None
    ):
        raise ReplyShapeError("reply has no tokens/text_offset/token_logprobs")
    return lp


def continuation_logprob(reply: dict[str, Any], prompt_len: int, cont_start: int) -> Scored:
    """Sum of the logprobs of the tokens covering ``[cont_start, prompt_len)`` of the prompt."""
    lp = logprobs_of(reply)
    offsets: list[int] = lp["text_offset"]
    tokens: list[str] = lp["tokens"]
    values: list[float | None] = lp["token_logprobs"]
    tops: list[dict[str, float] | None] = lp.get("top_logprobs") or [None] * len(tokens)
    if not (len(offsets) == len(tokens) == len(values)):
        raise ReplyShapeError("tokens, text_offset and token_logprobs differ in length")
    total = 0.0
    n = 0
    greedy = True
    straddles = False
    generated = False
    for i, off in enumerate(offsets):
        if off >= prompt_len:
            generated = True
            break
        end = offsets[i + 1] if i + 1 < len(offsets) else prompt_len
        end = min(max(end, off + 1), prompt_len)
        if end <= cont_start:
            continue
        if off < cont_start:
            straddles = True
        value = values[i]
        if value is None:
            raise ReplyShapeError(f"no logprob for continuation token at offset {off}")
        total += float(value)
        n += 1
        top = tops[i] if i < len(tops) else None
        if top:
            greedy = greedy and float(value) >= max(top.values()) - 1e-6
    if n == 0:
        raise ReplyShapeError("no echoed token covers the continuation (endpoint ignores echo?)")
    return Scored(total, greedy, n, straddles, generated)
