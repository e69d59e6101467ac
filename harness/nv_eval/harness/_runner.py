"""One harness run: load the task, probe the endpoint, send every request through the request
engine, score (loglikelihood or generative), and write results.json, samples.jsonl and progress."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from nv_eval.protocol.config import TaskParams
from nv_eval.protocol.results import Metric, Results, Timings, Usage

from . import _metrics, _probe
from ._engine import EndpointError, EngineConfig, RequestEngine
from ._errors import BadInput, EndpointUnusable, HarnessError
from ._loglik import ReplyShapeError, Scored, continuation_logprob, echo_body
from ._mmlu_subjects import MMLU_GROUPS
from ._progress import Progress
from ._prompts import (
    GSM8K_FLEXIBLE,
    GSM8K_STRICT,
    GSM8K_UNTIL,
    LETTERS,
    cut_at_stop,
    extract_letter,
    gsm8k_normalize,
    regex_filter,
)
from ._tasks import GenItem, McItem, TaskData, load_task

HARNESS = "nv-eval-harness"
DEFAULT_SEED = 1234  # lm-eval's fewshot_random_seed
DEFAULT_MC_GEN_TOKENS = 64
DEFAULT_GSM8K_GEN_TOKENS = 256  # lm-eval's max_gen_toks default


def harness_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("nv-eval-harness", "nv-eval"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "0+unknown"


def log(msg: str) -> None:
    print(f"nv-eval-harness: {msg}", file=sys.stderr, flush=True)


@dataclass
class RunArgs:
    task: str
    model_id: str
    endpoint_url: str
    endpoint_type: str
    output_dir: str
    cache_dir: str | None = None
    data_dir: str | None = None
    api_key_env: str | None = None
    params_json: str | None = None
    task_file: str | None = None


def _ensure_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"--output-dir {path}: cannot create ({e.strerror})") from None
    return out


def parse_params(text: str | None) -> TaskParams:
    if not text:
        return TaskParams()
    try:
        return msgspec.json.decode(text.encode(), type=TaskParams)
    except msgspec.ValidationError as e:
        raise BadInput(f"--params-json: {str(e).splitlines()[0]}") from None
    except msgspec.DecodeError as e:
        raise BadInput(f"--params-json: not valid JSON ({str(e).splitlines()[0]})") from None


def base_url(url: str) -> str:
    u = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if u.endswith(suffix):
            return u[: -len(suffix)]
    return u


def resolved_config(args: RunArgs, p: TaskParams, kind: str, mode: str) -> dict[str, Any]:
    gen_default = DEFAULT_GSM8K_GEN_TOKENS if kind == "gen" else DEFAULT_MC_GEN_TOKENS
    return {
        "task": args.task,
        "task_file": args.task_file,
        "endpoint_type": args.endpoint_type,
        "mode": mode,
        "limit_samples": p.limit_samples,
        "parallelism": p.parallelism or 16,
        "request_timeout": p.request_timeout or 120.0,
        "max_retries": 5 if p.max_retries is None else p.max_retries,
        "temperature": 0.0 if p.temperature is None else p.temperature,
        "top_p": p.top_p,
        "max_new_tokens": p.max_new_tokens or gen_default,
        "num_fewshot": p.num_fewshot or 0,
        "seed": DEFAULT_SEED if p.seed is None else p.seed,
        "system_prompt": p.system_prompt,
        "api_key_env": args.api_key_env,  # the variable's name only
        "data_dir": args.data_dir,
        "extra": dict(p.extra),
    }


def _gen_body(
    model: str,
    cfg: dict[str, Any],
    chat: bool,
    prompt: str | None,
    messages: list[dict[str, str]] | None,
    stop: list[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": cfg["max_new_tokens"], "temperature": cfg["temperature"]}
    if cfg["top_p"] is not None:
        body["top_p"] = cfg["top_p"]
    if stop:
        body["stop"] = stop
    if chat:
        body["messages"] = messages
    else:
        body["prompt"] = prompt
    return body


def _reply_text(reply: dict[str, Any], chat: bool) -> str:
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointUnusable("endpoint reply has no choices[0] text") from None
    return text if isinstance(text, str) else ""


def _mc_requests(data: TaskData, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in data.mc:
        for context, cont in item.requests:
            yield "/completions", echo_body(model, context + cont)


async def run(args: RunArgs) -> Path:
    started = time.time()
    params = parse_params(args.params_json)
    if args.endpoint_type not in ("completions", "chat"):
        raise BadInput(f"--endpoint-type {args.endpoint_type!r}: expected completions or chat")
    api_key = None
    if args.api_key_env:
        import os

        api_key = os.environ.get(args.api_key_env)
        if api_key is None:
            raise BadInput(f"--api-key-env {args.api_key_env}: environment variable is not set")
    chat = args.endpoint_type == "chat"
    seed = DEFAULT_SEED if params.seed is None else params.seed
    data = load_task(
        args.task,
        args.data_dir,
        args.task_file,
        params.num_fewshot or 0,
        seed,
        params.system_prompt,
        params.limit_samples,
    )
    mode = "generative" if (chat or data.kind == "gen") else "loglikelihood"
    cfg = resolved_config(args, params, data.kind, mode)
    out = _ensure_dir(args.output_dir)
    n_items = len(data.mc) + len(data.gen)
    log(f"task {data.name}: {n_items} questions, mode {mode}, {cfg['num_fewshot']}-shot")
    notes: list[str] = []
    if (
        cfg["num_fewshot"]
        and args.task in ("arc_challenge", "arc_easy", "hellaswag", "winogrande", "gsm8k")
        and not args.task_file
    ):
        notes.append(
            "few-shot examples drawn from the evaluated split with the evaluated item removed (lm-eval uses the train split, not available offline)"
        )

    base = base_url(args.endpoint_url)
    await _probe.check_models(base + "/models", args.model_id, api_key, min(cfg["request_timeout"], 30.0))
    engine_cfg = EngineConfig(
        parallelism=cfg["parallelism"], request_timeout=cfg["request_timeout"], max_retries=cfg["max_retries"]
    )
    cache_dir = args.cache_dir or str(out / "cache")
    progress = Progress(out / "progress.jsonl")
    try:
        async with RequestEngine(base, api_key, engine_cfg, cache_dir=cache_dir, on_progress=progress.update) as engine:
            try:
                if mode == "loglikelihood":
                    notes += await _probe.probe_loglikelihood(engine, args.model_id)
                elif chat:
                    notes += await _probe.probe_chat(engine, args.model_id)
                else:
                    notes += await _probe.probe_completions_text(engine, args.model_id)
            except EndpointError as e:
                raise EndpointUnusable(
                    f"endpoint probe failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
            log(f"endpoint probe passed ({base}, model {args.model_id})")
            try:
                if mode == "loglikelihood":
                    metrics, subtasks, groups, samples, more = await _score_loglik(engine, data, args.model_id)
                elif data.kind == "gen":
                    metrics, subtasks, groups, samples, more = await _score_gsm8k(
                        engine, data, args.model_id, cfg, chat
                    )
                else:
                    metrics, subtasks, groups, samples, more = await _score_mc_generative(
                        engine, data, args.model_id, cfg
                    )
            except EndpointError as e:
                raise HarnessError(
                    f"endpoint failed during scoring: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from None
            notes += more
            stats = engine.stats
    finally:
        progress.close()

    samples_path = out / "samples.jsonl"
    with samples_path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    finished = time.time()
    timings = Timings(
        started_at=started,
        finished_at=finished,
        duration_s=finished - started,
        request_phase_s=getattr(stats, "request_phase_s", None),
        **_latency(getattr(stats, "latencies", None)),
    )
    pt, ct = int(getattr(stats, "prompt_tokens", 0)), int(getattr(stats, "completion_tokens", 0))
    usage = Usage(
        requests=int(getattr(stats, "requests", 0)), cached_requests=int(getattr(stats, "cached_requests", 0)),
        prompt_tokens=pt, completion_tokens=ct, total_tokens=pt + ct, retries=int(getattr(stats, "retries", 0)),
    )  # fmt: skip
    results = Results(
        task=data.name, metrics=metrics, n_samples=n_items, mode=mode, model_id=args.model_id,
        endpoint_url=args.endpoint_url, endpoint_type=args.endpoint_type, harness=HARNESS,
        harness_version=harness_version(), num_fewshot=cfg["num_fewshot"], subtasks=subtasks, groups=groups,
        config=cfg, timings=timings, usage=usage, notes=notes,
    )  # fmt: skip
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2))
    tmp.replace(path)
    summary = ", ".join(f"{k}={m.value:.4f}" for k, m in metrics.items())
    log(f"{data.name}: {summary} (n={n_items})")
    progress.done(path)
    return path


def _latency(lat: Any) -> dict[str, float | None]:
    """Mean/p50/p95 from the engine's latency record (``LatencyStats``) or a plain list."""
    if lat is None:
        return {}
    if hasattr(lat, "percentile"):
        if not getattr(lat, "count", 0):
            return {}
        return {"latency_mean_s": lat.mean_s, "latency_p50_s": lat.percentile(50), "latency_p95_s": lat.percentile(95)}
    xs = sorted(float(x) for x in lat)
    if not xs:
        return {}
    return {
        "latency_mean_s": statistics.fmean(xs),
        "latency_p50_s": xs[len(xs) // 2],
        "latency_p95_s": xs[min(len(xs) - 1, int(0.95 * len(xs)))],
    }


Scores = tuple[
    dict[str, Metric], dict[str, dict[str, Metric]], dict[str, dict[str, Metric]], list[dict[str, Any]], list[str]
]


def _argmax(xs: list[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


async def _score_loglik(engine: Any, data: TaskData, model: str) -> Scores:
    total = sum(len(it.requests) for it in data.mc)
    owner: list[tuple[int, int]] = [(k, j) for k, it in enumerate(data.mc) for j in range(len(it.requests))]
    scored: list[Scored | None] = [None] * total
    async for idx, reply in engine.map(_mc_requests(data, model), total=total):
        k, j = owner[idx]
        context, cont = data.mc[k].requests[j]
        try:
            scored[idx] = continuation_logprob(reply, len(context) + len(cont), len(context))
        except ReplyShapeError as e:
            raise EndpointUnusable(f"unusable echo reply for item {data.mc[k].id}: {e}; {_probe.ECHO_REMEDY}") from None
    per_metric: dict[str, list[float]] = {m: [] for m in data.metrics}
    by_subtask: dict[str, dict[str, list[float]]] = {}
    samples: list[dict[str, Any]] = []
    no_gen = straddle = 0
    pos = 0
    for item in data.mc:
        got = scored[pos : pos + len(item.requests)]
        pos += len(item.requests)
        lls = [s.logprob for s in got if s is not None]
        no_gen += sum(1 for s in got if s is not None and not s.generated)
        straddle += sum(1 for s in got if s is not None and s.straddles)
        pred = _argmax(lls)
        pred_norm = _argmax([ll / len(c) for ll, c in zip(lls, item.choice_texts, strict=True)])
        vals = {"acc": float(pred == item.gold), "acc_norm": float(pred_norm == item.gold)}
        for m in data.metrics:
            per_metric[m].append(vals[m])
            if item.subtask:
                by_subtask.setdefault(item.subtask, {x: [] for x in data.metrics})[m].append(vals[m])
        contexts = [c for c, _ in item.requests]
        samples.append({
            "id": item.id, **({"subtask": item.subtask} if item.subtask else {}),
            "prompt": contexts[0] if len(set(contexts)) == 1 else contexts,
            "choices": [c for _, c in item.requests], "logprobs": lls,
            "greedy": [s.greedy for s in got if s is not None],
            "prediction": pred, "prediction_norm": pred_norm, "gold": item.gold,
            "correct": pred == item.gold, **{m: vals[m] for m in data.metrics},
        })  # fmt: skip
    notes: list[str] = []
    if no_gen:
        notes.append(
            f"{no_gen} of {total} echo replies held no generated token after the prompt; scored by text_offset"
        )
    if straddle:
        notes.append(
            f"{straddle} of {total} continuations began inside a token spanning the context boundary; that token was counted"
        )
    metrics, subtasks, groups = _aggregate(data, per_metric, by_subtask)
    return metrics, subtasks, groups, samples, notes


def _aggregate(
    data: TaskData, per_metric: dict[str, list[float]], by_subtask: dict[str, dict[str, list[float]]]
) -> tuple[dict[str, Metric], dict[str, dict[str, Metric]], dict[str, dict[str, Metric]]]:
    if not data.subtasks:
        return {m: _metrics.metric(v) for m, v in per_metric.items()}, {}, {}
    subtasks = {s: {m: _metrics.metric(v) for m, v in by_subtask[s].items()} for s in data.subtasks if s in by_subtask}
    groups: dict[str, dict[str, Metric]] = {}
    sizes: dict[str, int] = {}
    for g, members in MMLU_GROUPS.items():
        parts = [(subtasks[s]["acc"], len(by_subtask[s]["acc"])) for s in members if s in subtasks]
        if parts:
            groups[g] = {"acc": _metrics.weighted_group(parts)}
            sizes[g] = sum(n for _, n in parts)
    overall = _metrics.weighted_group([(groups[g]["acc"], sizes[g]) for g in groups])
    return {"acc": overall}, subtasks, groups


async def _score_mc_generative(engine: Any, data: TaskData, model: str, cfg: dict[str, Any]) -> Scores:
    items: list[McItem] = data.mc
    texts: list[str] = [""] * len(items)
    reqs = (("/chat/completions", _gen_body(model, cfg, True, None, it.messages, None)) for it in items)
    async for idx, reply in engine.map(reqs, total=len(items)):
        texts[idx] = _reply_text(reply, True)
    acc: list[float] = []
    by_subtask: dict[str, dict[str, list[float]]] = {}
    samples: list[dict[str, Any]] = []
    unparsed = 0
    for item, text in zip(items, texts, strict=True):
        pred = extract_letter(text, item.options)
        unparsed += pred is None
        ok = float(pred == item.gold)
        acc.append(ok)
        if item.subtask:
            by_subtask.setdefault(item.subtask, {"acc": []})["acc"].append(ok)
        samples.append({
            "id": item.id, **({"subtask": item.subtask} if item.subtask else {}),
            "prompt": item.messages, "choices": item.options, "response": text,
            "prediction": None if pred is None else LETTERS[pred], "gold": LETTERS[item.gold], "correct": bool(ok),
        })  # fmt: skip
    notes = [f"{unparsed} of {len(items)} replies had no recognizable answer letter (scored wrong)"] if unparsed else []
    gen_data = TaskData(data.name, "mc", ("acc",), subtasks=data.subtasks)
    metrics, subtasks, groups = _aggregate(gen_data, {"acc": acc}, by_subtask)
    return metrics, subtasks, groups, samples, notes


async def _score_gsm8k(engine: Any, data: TaskData, model: str, cfg: dict[str, Any], chat: bool) -> Scores:
    items: list[GenItem] = data.gen
    texts: list[str] = [""] * len(items)
    path = "/chat/completions" if chat else "/completions"
    reqs = ((path, _gen_body(model, cfg, chat, it.prompt, it.messages, GSM8K_UNTIL)) for it in items)
    async for idx, reply in engine.map(reqs, total=len(items)):
        texts[idx] = cut_at_stop(_reply_text(reply, chat), GSM8K_UNTIL)
    strict: list[float] = []
    flexible: list[float] = []
    samples: list[dict[str, Any]] = []
    for item, text in zip(items, texts, strict=True):
        ref = gsm8k_normalize(item.reference)
        ps = regex_filter(text, GSM8K_STRICT, 0)
        pf = regex_filter(text, GSM8K_FLEXIBLE, -1)
        s_ok, f_ok = float(gsm8k_normalize(ps) == ref), float(gsm8k_normalize(pf) == ref)
        strict.append(s_ok)
        flexible.append(f_ok)
        samples.append({
            "id": item.id, "prompt": item.messages if chat else item.prompt, "choices": None, "response": text,
            "prediction": {"strict": ps, "flexible": pf}, "gold": ref, "correct": bool(f_ok),
            "exact_match_strict": s_ok, "exact_match_flexible": f_ok,
        })  # fmt: skip
    metrics = {"exact_match_strict": _metrics.metric(strict), "exact_match_flexible": _metrics.metric(flexible)}
    return metrics, {}, {}, samples, []
