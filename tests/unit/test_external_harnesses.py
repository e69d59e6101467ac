"""External harness adapters: commands built from a job, parsers on recorded output files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from nv_eval.agents.external import external_command, parse_external_results
from nv_eval.protocol import EndpointSpec, JobSpec, LocalExecution, TaskEntry, TaskParams

DATA = Path(__file__).resolve().parents[1] / "data" / "external"


def _job(harness: str, task: str, etype: str = "completions", **params: object) -> JobSpec:
    return JobSpec(
        job_id="0123456789abcdef.0", invocation_id="0123456789abcdef", index=0,
        task=TaskEntry(name=task, harness=harness, image="example/harness:1", harness_task=task),  # type: ignore[arg-type]
        params=TaskParams(**params),  # type: ignore[arg-type]
        endpoint=EndpointSpec(url="http://127.0.0.1:8000/v1/completions", model_id="smollm2-135m-instruct",
                              type=etype, api_key_name="MY_API_KEY"),  # type: ignore[arg-type]
        execution=LocalExecution(), invocation_dir="/tmp/x", task_dir="/tmp/x/t",
    )  # fmt: skip


def test_lm_eval_command_completions() -> None:
    job = _job("lm-eval", "arc_challenge", limit_samples=10, num_fewshot=0, parallelism=2, temperature=0.0)
    cmd = external_command(job, endpoint_url="http://m:8000/v1/completions", output_dir="/work/output")
    assert cmd[:2] == ["sh", "-c"]
    script = cmd[2]
    assert script.startswith('OPENAI_API_KEY="${MY_API_KEY}" exec lm_eval --model local-completions ')
    assert "--model_args model=smollm2-135m-instruct,base_url=http://m:8000/v1/completions," in script
    assert "num_concurrent=2" in script and "--tasks arc_challenge" in script
    assert "--limit 10" in script and "--num_fewshot 0" in script and "--gen_kwargs temperature=0.0" in script
    assert "--output_path /work/output --log_samples" in script


def test_lm_eval_command_chat_without_key() -> None:
    job = _job("lm-eval", "gsm8k", etype="chat", max_new_tokens=256)
    job.endpoint.api_key_name = None
    cmd = external_command(job, endpoint_url="http://m/v1/chat/completions", output_dir="/o")
    assert cmd[0] == "lm_eval" and cmd[cmd.index("--model") + 1] == "local-chat-completions"
    assert "--apply_chat_template" in cmd and cmd[cmd.index("--gen_kwargs") + 1] == "max_gen_toks=256"


def test_lm_eval_rejects_a_key_name_that_is_not_a_name() -> None:
    job = _job("lm-eval", "arc_challenge")
    job.endpoint.api_key_name = "sk-123 ; rm"
    with pytest.raises(ValueError, match="api_key_name"):
        external_command(job, endpoint_url="http://m/v1/completions", output_dir="/o")


def test_parse_lm_eval_single_task(tmp_path: Path) -> None:
    shutil.copytree(DATA / "lm_eval", tmp_path, dirs_exist_ok=True)
    res = parse_external_results(_job("lm-eval", "arc_challenge"), tmp_path)
    assert res.harness == "lm-evaluation-harness" and res.harness_version == "0.4.8"
    assert res.metrics["acc"].value == 0.4 and res.metrics["acc"].stderr == pytest.approx(0.1633, abs=1e-4)
    assert res.metrics["acc_norm"].value == 0.3
    assert res.n_samples == 10 and res.num_fewshot == 0
    assert res.endpoint_url == "http://127.0.0.1:8000/v1/completions"
    assert res.timings.duration_s == 42.5


def test_parse_lm_eval_group_with_subtasks(tmp_path: Path) -> None:
    shutil.copytree(DATA / "lm_eval_mmlu", tmp_path, dirs_exist_ok=True)
    res = parse_external_results(_job("lm-eval", "mmlu", etype="chat"), tmp_path)
    assert res.metrics["acc"].value == 0.68
    assert res.groups["mmlu_stem"]["acc"].stderr is None  # "N/A"
    assert res.subtasks["mmlu_formal_logic"]["acc"].value == 0.5
    assert res.n_samples == 226
    assert res.mode == "generative"


def test_parse_lm_eval_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no results_"):
        parse_external_results(_job("lm-eval", "arc_challenge"), tmp_path)


def test_nemo_evaluator_command() -> None:
    job = _job("nemo-evaluator", "ifeval", etype="chat", limit_samples=20, parallelism=4, extra={"n_samples": 3})
    cmd = external_command(job, endpoint_url="http://m/v1/chat/completions", output_dir="/work/output")
    assert cmd[:4] == ["nemo-evaluator", "run_eval", "--eval_type", "ifeval"]
    assert cmd[cmd.index("--model_type") + 1] == "chat"
    assert cmd[cmd.index("--api_key_name") + 1] == "MY_API_KEY"
    assert cmd[cmd.index("--overrides") + 1] == (
        "config.params.limit_samples=20,config.params.parallelism=4,config.params.extra.n_samples=3"
    )


def test_parse_nemo_evaluator(tmp_path: Path) -> None:
    shutil.copy(DATA / "nemo_evaluator" / "results.yml", tmp_path / "results.yml")
    res = parse_external_results(_job("nemo-evaluator", "ifeval", etype="chat", limit_samples=20), tmp_path)
    assert res.harness == "nemo-evaluator" and res.harness_version == "3f2a1c9"
    assert res.metrics["prompt_level_strict_acc"].value == 0.75
    assert res.metrics["inst_level_loose_acc"].stderr == 0.0412
    assert res.n_samples == 20 and res.endpoint_url == "http://localhost:8080/v1/chat/completions"


def test_parse_nemo_evaluator_group(tmp_path: Path) -> None:
    shutil.copy(DATA / "nemo_evaluator_mmlu" / "results.yml", tmp_path / "results.yml")
    res = parse_external_results(_job("nemo-evaluator", "mmlu_pro", etype="chat"), tmp_path)
    assert res.metrics["score.micro"].value == 0.441 and res.metrics["score.macro"].value == 0.452
    assert res.n_samples == 12032
    assert res.subtasks["mmlu_pro_law"]["score"].value == 0.25
