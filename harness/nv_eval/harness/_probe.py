"""Endpoint probe run before any scoring: the endpoint answers, the model id exists, and for
loglikelihood scoring the echoed prompt logprobs cover the whole prompt, line up with its tokens
(off-by-one shift check by comparing a generated token's logprob with its echoed logprob) and the
reply shape is understood. Refusals raise ``EndpointUnusable`` naming the remedy; corrections and
observations are returned as notes for ``Results.notes``."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ._errors import EndpointUnusable
from ._loglik import ReplyShapeError, echo_body, logprobs_of

# prompts whose next token is a plain word for most models (the second is a fallback when the
# first one's most likely next token is end-of-text and no generated token comes back)
PROBE_PROMPTS = (
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is",
    "one, two, three, four, five, six, seven, eight, nine, ten. one, two, three, four, five, six, seven, eight,",
)
SHIFT_TOLERANCE = 1e-3
ECHO_REMEDY = (
    "use a server that supports echo+logprobs on /v1/completions (vLLM, llama.cpp server, TGI) "
    "or score generatively with --endpoint-type chat"
)
SHIFT_REMEDY = (
    "for a model without a BOS token on llama_cpp.server start it with "
    "--kv_overrides tokenizer.ggml.add_bos_token=bool:true, or score generatively with --endpoint-type chat"
)


async def check_models(models_url: str, model_id: str, api_key: str | None, timeout: float) -> None:
    """GET /v1/models: the endpoint answers and lists ``model_id``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    last = ""
    for attempt in range(3):
        try:
            async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                async with s.get(models_url) as r:
                    if r.status in (401, 403):
                        raise EndpointUnusable(
                            f"endpoint {models_url} refused the credentials (HTTP {r.status}); check --api-key-env"
                        )
                    if r.status >= 400:
                        last = f"HTTP {r.status}"
                        if r.status < 500:
                            break
                    else:
                        data = await r.json(content_type=None)
                        ids = [m.get("id") for m in (data or {}).get("data", []) if isinstance(m, dict)]
                        if model_id not in ids:
                            raise EndpointUnusable(
                                f"model {model_id!r} not served by {models_url}; available: {', '.join(map(str, ids)) or 'none'}"
                            )
                        return
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            last = type(e).__name__ + (f": {e}" if str(e) else "")
        await asyncio.sleep(0.5 * (attempt + 1))
    raise EndpointUnusable(f"endpoint {models_url} unusable ({last.splitlines()[0] if last else 'no answer'})")


def _prompt_tokens(lp: dict[str, Any], prompt: str) -> tuple[list[int], int | None]:
    """Indices of echoed prompt tokens, and the index of the generated token (if any)."""
    offsets = lp["text_offset"]
    prompt_idx = [i for i, off in enumerate(offsets) if off < len(prompt)]
    gen = next((i for i, off in enumerate(offsets) if off >= len(prompt)), None)
    return prompt_idx, gen


def _check_echo(reply: dict[str, Any], prompt: str) -> tuple[list[int], int | None]:
    try:
        lp = logprobs_of(reply)
    except ReplyShapeError as e:
        raise EndpointUnusable(f"endpoint returns no prompt logprobs with echo=true ({e}); {ECHO_REMEDY}") from None
    text = reply["choices"][0].get("text")
    offsets = lp["text_offset"]
    tokens, values = lp["tokens"], lp["token_logprobs"]
    if isinstance(text, str) and not text.startswith(prompt):
        raise EndpointUnusable(
            f"endpoint ignores echo=true (the reply text does not start with the prompt); {ECHO_REMEDY}"
        )
    if not offsets or offsets[0] != 0:
        raise EndpointUnusable(f"endpoint ignores echo=true (no echoed token at offset 0); {ECHO_REMEDY}")
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
        raise EndpointUnusable(f"echoed text_offset values are not increasing; {ECHO_REMEDY}")
    prompt_idx, gen = _prompt_tokens(lp, prompt)
    echoed = "".join(tokens[i] for i in prompt_idx)
    if echoed != prompt:
        raise EndpointUnusable(
            f"echoed tokens do not reproduce the prompt ({len(echoed)} of {len(prompt)} characters); {ECHO_REMEDY}"
        )
    present = sum(1 for i in prompt_idx if values[i] is not None)
    if present not in (len(prompt_idx), len(prompt_idx) - 1) or any(values[i] is None for i in prompt_idx[1:]):
        raise EndpointUnusable(
            f"echoed prompt logprobs are missing for {len(prompt_idx) - present} of {len(prompt_idx)} tokens; {ECHO_REMEDY}"
        )
    return prompt_idx, gen


def alignment_votes(lp: dict[str, Any], prompt_idx: list[int]) -> tuple[int, int]:
    """(aligned, shifted): echoed positions whose top-1 token is the token itself, or the next token.

    On a repetitive prompt a working endpoint's top-1 at position i is mostly token i; an endpoint
    whose echoed logprobs are shifted by one reports the distribution that predicts token i+1."""
    tokens, tops = lp["tokens"], lp.get("top_logprobs") or []
    aligned = shifted = 0
    for i in prompt_idx[1:-1]:
        top = tops[i] if i < len(tops) else None
        if not top:
            continue
        best = max(top.items(), key=lambda kv: kv[1])[0]
        aligned += best == tokens[i]
        shifted += best == tokens[i + 1]
    return aligned, shifted


async def probe_loglikelihood(engine: Any, model_id: str) -> list[str]:
    """Check echo+logprobs on /completions; returns notes (raises EndpointUnusable)."""
    notes: list[str] = []
    no_generated = 0
    compared = False
    aligned = shifted = 0
    for prompt in PROBE_PROMPTS:
        reply = await engine.post("/completions", echo_body(model_id, prompt))
        idx, gen = _check_echo(reply, prompt)
        lp = reply["choices"][0]["logprobs"]
        a, s = alignment_votes(lp, idx)
        aligned, shifted = aligned + a, shifted + s
        if gen is None:
            no_generated += 1
            continue
        gen_text, gen_lp = lp["tokens"][gen], lp["token_logprobs"][gen]
        if compared or gen_lp is None or not gen_text:
            continue
        # the same token, now echoed as the prompt's last token, must carry the same logprob
        prompt2 = prompt + gen_text
        reply2 = await engine.post("/completions", echo_body(model_id, prompt2))
        idx2, _ = _check_echo(reply2, prompt2)
        lp2 = reply2["choices"][0]["logprobs"]
        last = idx2[-1]
        if lp2["text_offset"][last] != len(prompt) or lp2["tokens"][last] != gen_text:
            continue
        echoed_lp = lp2["token_logprobs"][last]
        if echoed_lp is None or abs(float(echoed_lp) - float(gen_lp)) > SHIFT_TOLERANCE:
            shown = "none" if echoed_lp is None else f"{float(echoed_lp):.4f}"
            raise EndpointUnusable(
                f"echoed prompt logprobs do not match generation (token {gen_text!r}: generated logprob "
                f"{float(gen_lp):.4f}, echoed {shown}); {SHIFT_REMEDY}"
            )
        compared = True
    if shifted > aligned:
        raise EndpointUnusable(
            f"echoed prompt logprobs are shifted by one token ({shifted} positions predict the next token, "
            f"{aligned} their own); {SHIFT_REMEDY}"
        )
    if not compared:
        notes.append("probe: no generated token to compare with its echo; alignment checked by top-1 votes only")
    if no_generated:
        notes.append(
            "endpoint may reply with no generated token after the echoed prompt; continuations are located by text_offset"
        )
    return notes


async def probe_chat(engine: Any, model_id: str) -> list[str]:
    reply = await engine.post(
        "/chat/completions",
        {
            "model": model_id,
            "messages": [{"role": "user", "content": "Reply with the letter A."}],
            "max_tokens": 2,
            "temperature": 0,
        },
    )
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointUnusable(
            "chat endpoint reply has no choices[0].message.content; is it an OpenAI-compatible /v1/chat/completions?"
        ) from None
    if content is not None and not isinstance(content, str):
        raise EndpointUnusable("chat endpoint reply content is not text")
    return []


async def probe_completions_text(engine: Any, model_id: str) -> list[str]:
    reply = await engine.post(
        "/completions", {"model": model_id, "prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0}
    )
    try:
        text = reply["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointUnusable(
            "completions endpoint reply has no choices[0].text; is it an OpenAI-compatible /v1/completions?"
        ) from None
    if not isinstance(text, str):
        raise EndpointUnusable("completions endpoint reply text is not a string")
    return []
