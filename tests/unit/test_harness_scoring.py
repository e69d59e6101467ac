"""Scoring building blocks: continuation located by text_offset (with and without a generated
token after the echo), lm-eval's stderr and size-weighted group aggregation, --data-dir copies."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from nv_eval.harness import continuation_logprob, load_task, mean_stderr, pooled_sample_stderr
from nv_eval.harness._data import ARC_EASY, data_root
from nv_eval.harness._loglik import ReplyShapeError
from nv_eval.harness._metrics import weighted_group
from nv_eval.protocol.results import Metric

PROMPT = "Question: Sky?\nAnswer: blue"  # context "Question: Sky?\nAnswer:" + continuation " blue"
CTX = len("Question: Sky?\nAnswer:")


def reply(tokens: list[str], lps: list[float | None], generated: str | None) -> dict:
    offs, pos = [], 0
    for t in tokens:
        offs.append(pos)
        pos += len(t)
    if generated is not None:
        tokens, lps, offs = tokens + [generated], lps + [-0.5], offs + [pos]
    tops = [None if v is None else {"x": 0.0} for v in lps]
    text = "".join(tokens)
    return {
        "choices": [
            {
                "text": text,
                "logprobs": {"tokens": tokens, "text_offset": offs, "token_logprobs": lps, "top_logprobs": tops},
            }
        ]
    }


TOKS = ["Question", ":", " Sky", "?", "\n", "Answer", ":", " blue"]
LPS: list[float | None] = [None, -1.0, -2.0, -3.0, -0.5, -1.5, -0.1, -2.25]


@pytest.mark.parametrize("generated", [".", None])
def test_continuation_by_text_offset(generated: str | None) -> None:
    s = continuation_logprob(reply(TOKS, LPS, generated), len(PROMPT), CTX)
    assert s.logprob == -2.25 and s.n_tokens == 1 and s.generated == (generated is not None)


def test_multi_token_continuation_and_straddle() -> None:
    toks = ["Question", ":", " Sky", "?", "\n", "Answer", ": b", "lue"]  # ": b" spans the boundary
    s = continuation_logprob(reply(toks, [None, -1.0, -2.0, -3.0, -0.5, -1.5, -0.7, -0.3], None), len(PROMPT), CTX)
    assert s.logprob == pytest.approx(-1.0) and s.straddles and s.n_tokens == 2


def test_reply_without_logprobs_is_rejected() -> None:
    with pytest.raises(ReplyShapeError):
        continuation_logprob({"choices": [{"text": " x", "logprobs": None}]}, len(PROMPT), CTX)
    lps = list(LPS)
    lps[-1] = None
    with pytest.raises(ReplyShapeError, match="no logprob"):
        continuation_logprob(reply(TOKS, lps, None), len(PROMPT), CTX)


def test_mean_stderr_like_lm_eval() -> None:
    xs = [1.0, 0.0, 0.0, 1.0, 1.0]
    mu = 0.6
    assert mean_stderr(xs) == pytest.approx(math.sqrt(sum((x - mu) ** 2 for x in xs) / 4) / math.sqrt(5))
    assert mean_stderr([1.0]) is None


def test_weighted_group_and_pooled_stderr() -> None:
    a = [1.0, 0.0, 1.0, 1.0]
    b = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    ma = Metric(value=sum(a) / 4, stderr=mean_stderr(a))
    mb = Metric(value=sum(b) / 6, stderr=mean_stderr(b))
    g = weighted_group([(ma, 4), (mb, 6)])
    assert g.value == pytest.approx(5 / 10)  # size-weighted = mean over all items
    want = math.sqrt((3 * ma.stderr**2 * 4 + 5 * mb.stderr**2 * 6) / (10 - 2) / 10)
    assert g.stderr == pytest.approx(want) == pytest.approx(pooled_sample_stderr([ma.stderr, mb.stderr], [4, 6]))


def test_data_dir_copy(tmp_path: Path) -> None:
    src = data_root(None) / ARC_EASY / "validation"
    shutil.copytree(src, tmp_path / ARC_EASY / "validation")
    mine = load_task("arc_easy", str(tmp_path), None, 0, 1234, None, 3)
    bundled = load_task("arc_easy", None, None, 0, 1234, None, 3)
    assert [i.requests for i in mine.mc] == [i.requests for i in bundled.mc]


def test_user_task_file(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(
        '{"question": "2+2?", "choices": ["3", "4"], "answer": "B"}\n{"id": "q2", "question": "Sky?", "choices": ["blue", "red"], "answer": "blue"}\n'
    )
    data = load_task("mine", None, str(f), 0, 1234, None, None)
    assert [i.gold for i in data.mc] == [1, 0] and data.mc[1].id == "q2"
    assert data.mc[0].requests == [("Question: 2+2?\nAnswer:", " 3"), ("Question: 2+2?\nAnswer:", " 4")]
