"""MMLU end to end in generative mode against a real aiohttp server that always answers
"Answer: B": per-subject acc equals the share of gold B in the data, groups and the overall
figure are size-weighted like lm-eval, with its pooled stderr."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from nv_eval.harness._data import MMLU, load
from nv_eval.harness._mmlu_subjects import MMLU_GROUPS, MMLU_SUBJECTS

HARNESS = str(Path(sys.executable).parent / "nv-eval-harness")
MODEL = "always-b"


@pytest.fixture()
def always_b() -> Iterator[str]:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def chat(_: web.Request) -> web.Response:
        msg = {"role": "assistant", "content": "The correct option is this one.\nAnswer: B"}
        return web.json_response(
            {"choices": [{"index": 0, "message": msg}], "usage": {"prompt_tokens": 100, "completion_tokens": 9}}
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def stderr(xs: list[float]) -> float:
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))


def test_mmlu_aggregation(always_b: str, tmp_path: Path) -> None:
    limit = 3
    p = subprocess.run(
        [HARNESS, "run", "--task", "mmlu", "--model-id", MODEL, "--endpoint-url", always_b, "--endpoint-type", "chat",
         "--output-dir", str(tmp_path), "--params-json", json.dumps({"limit_samples": limit, "num_fewshot": 1})],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["mode"] == "generative" and res["n_samples"] == 57 * limit and res["num_fewshot"] == 1
    assert set(res["subtasks"]) == set(MMLU_SUBJECTS) and set(res["groups"]) == set(MMLU_GROUPS)
    per: dict[str, list[float]] = {}
    for subject in MMLU_SUBJECTS:
        rows = load(f"{MMLU}/{subject}", "test", None)[:limit]
        per[subject] = [float(r["answer"] == 1) for r in rows]
        assert res["subtasks"][subject]["acc"]["value"] == pytest.approx(sum(per[subject]) / limit)
    for g, members in MMLU_GROUPS.items():
        xs = [x for s in members for x in per[s]]
        assert res["groups"][g]["acc"]["value"] == pytest.approx(sum(xs) / len(xs))
    everything = [x for xs in per.values() for x in xs]
    assert res["metrics"]["acc"]["value"] == pytest.approx(sum(everything) / len(everything))
    # pooled stderr of equal-size subtasks of a size-weighted group is close to the flat stderr
    assert res["metrics"]["acc"]["stderr"] == pytest.approx(stderr(everything), rel=0.05)
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(s["prediction"] == "B" for s in samples)
    first = samples[0]["prompt"]
    assert [m["role"] for m in first] == ["user", "assistant", "user"] and first[1]["content"].startswith("Answer: ")
    assert res["usage"]["completion_tokens"] >= 9 * 57 * limit
