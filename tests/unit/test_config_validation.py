"""validate_run_config: one-line errors naming the field, the variant's valid keys and the value given."""

from __future__ import annotations

import pytest
from nv_eval.protocol import ConfigError, SlurmExecution, validate_run_config


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # unknown key under a tagged union: the variant named by `type`, not the first one
        ({"execution": {"type": "slurm", "nodse": 1}}, "execution.nodse: unknown key; did you mean 'nodes'?"),
        ({"execution": {"type": "lepton", "partition": "x"}}, "valid keys: output_dir, pool, max_redispatch, resource_shape"),
        ({"deployment": {"type": "llamacpp", "n_ctxx": 1}}, "deployment.n_ctxx: unknown key; did you mean 'n_ctx'?"),
        ({"evaluation": {"tasks": [{"name": "a", "deployment": {"type": "llamacpp", "n_thread": 2}}]}},
         "evaluation.tasks[0].deployment.n_thread: unknown key; did you mean 'n_threads'?"),
        # the value given is shown
        ({"execution": {"type": "slurm", "nodes": 0}}, "execution.nodes: expected int >= 1, got 0"),
        ({"execution": {"type": "slurm", "nodes": "many"}}, "execution.nodes: expected int, got 'many'"),
        ({"execution": {"type": "local", "runtime": "podman"}}, "execution.runtime: expected one of docker, process; got 'podman'"),
        ({"target": {"api_endpoint": {"type": "embeddings"}}}, "expected one of chat, completions; got 'embeddings'"),
        ({"deployment": {"type": "vlm"}}, "deployment.type: got 'vlm'; expected one of none, vllm"),
        ({"execution": "local"}, "execution: expected a mapping, got 'local'"),
        ({"evaluation": {"tasks": [{"params": {}}]}}, "evaluation.tasks[0].name: required field is missing"),
        ({"bogus": 1}, "bogus: unknown key; valid keys: execution, deployment, target, evaluation, config"),
    ],
)
def test_messages(doc: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate_run_config(doc)
    assert expected in str(ei.value)
    assert "\n" not in str(ei.value)


def test_secret_in_name_field_is_rejected_without_echo() -> None:
    with pytest.raises(ConfigError) as ei:
        validate_run_config({"target": {"api_endpoint": {"api_key_name": "sk-live-abc123"}}})
    assert "NAME of an environment variable" in str(ei.value)
    assert "sk-live" not in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        validate_run_config({"execution": {"type": "slurm", "env_names": ["OK", "hf_xyz-123"]}})
    assert "execution.env_names[1]" in str(ei.value) and "hf_xyz" not in str(ei.value)


def test_valid_variant() -> None:
    cfg = validate_run_config({"execution": {"type": "slurm", "partition": "gpu", "nodes": 2}})
    assert isinstance(cfg.execution, SlurmExecution) and cfg.execution.nodes == 2
