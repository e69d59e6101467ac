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
    "Question: What color is the sky on a clear day?\nAnswer: The sky is",
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


async def probe_loglikelihood(engine: Any, model_id: str) -> list[str]:
    """Check echo+logprobs on /completions; returns notes (raises EndpointUnusable)."""
    notes: list[str] = []
    no_generated = 0
    for prompt in PROBE_PROMPTS:
        reply = await engine.post("/completions", echo_body(model_id, prompt))
        _, gen = _check_echo(reply, prompt)
        if gen is None:
            no_generated += 1
            continue
        lp = reply["choices"][0]["logprobs"]
        gen_text, gen_lp = lp["tokens"][gen], lp["token_logprobs"][gen]
        if gen_lp is None or not gen_text:
            continue
        # the same token, now echoed as the prompt's last token, must carry the same logprob
        prompt2 = prompt + gen_text
        reply2 = await engine.post("/completions", echo_body(model_id, prompt2))
        idx2, _ = _check_echo(reply2, prompt2)
        lp2 = reply2["choices"][0]["logprobs"]
        last = idx2[-1]
        if lp2["text_offset"][last] != len(prompt) or lp2["tokens"][last] != gen_text:
            notes.append(
                "probe: the generated token re-tokenizes differently when echoed; alignment check skipped for it"
            )
            continue
        echoed_lp = lp2["token_logprobs"][last]
        if echoed_lp is None or abs(float(echoed_lp) - float(gen_lp)) > SHIFT_TOLERANCE:
            raise EndpointUnusable(
                f"echoed prompt logprobs are misaligned with their tokens (token {gen_text!r}: generated logprob "
                f"{float(gen_lp):.4f}, echoed {echoed_lp if echoed_lp is None else round(float(echoed_lp), 4)}); {SHIFT_REMEDY}"
            )
        break
    else:
        notes.append(
            "probe: no generated token followed the echoed probe prompts; the off-by-one alignment check could not run"
        )
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
