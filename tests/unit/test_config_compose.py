"""Config composition: defaults over built-in groups, user groups, Hydra overrides, typed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from nv_eval.client import ConfigCompositionError, compose_document, compose_run
from nv_eval.protocol import LeptonExecution, LocalExecution, SlurmExecution, VllmDeployment

BASE = """\
defaults:
  - execution: local
  - deployment: none
  - _self_

execution:
  output_dir: ./out

target:
  api_endpoint:
    url: http://localhost:8080/v1/completions
    model_id: m

evaluation:
  tasks:
    - name: arc_challenge
    - name: hellaswag
"""


@pytest.fixture()
def cdir(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "base.yaml").write_text(BASE)
    return d


def test_builtin_groups_and_self(cdir: Path, tmp_path: Path) -> None:
    run = compose_run("base", cdir, cwd=tmp_path)
    assert isinstance(run.config.execution, LocalExecution)
    assert run.config.execution.output_dir == str(tmp_path / "out")  # relative -> client's cwd
    assert run.doc["execution"]["runtime"] == "docker"  # default from the built-in group
    assert [t.name for t in run.tasks] == ["arc_challenge", "hellaswag"]
    assert [j.job_id for j in run.plan("0123456789abcdef")] == ["0123456789abcdef.0", "0123456789abcdef.1"]


def test_config_name_with_extension_and_path_only(cdir: Path) -> None:
    assert compose_document("base.yaml", cdir)[0]["target"]["api_endpoint"]["model_id"] == "m"
    assert compose_document(str(cdir / "base.yaml"))[0]["evaluation"]["tasks"][0]["name"] == "arc_challenge"


def test_overrides_add_delete_force_and_types(cdir: Path) -> None:
    doc, _, _ = compose_document(
        "base",
        cdir,
        [
            "+config.params.limit_samples=10",
            "execution.max_parallel_tasks=3",
            "++execution.network=bridge",
            "++target.api_endpoint.api_key_name=MY_KEY",
            "~execution.output_dir",
            "execution.env_names=[A,B]",
            "execution.cpus=null",
            "+evaluation.params.temperature=0.5",
            "execution.extra_docker_args=[]",
            "+config.params.extra={flag: true}",
        ],
    )
    assert doc["config"]["params"]["limit_samples"] == 10
    assert doc["execution"]["max_parallel_tasks"] == 3
    assert doc["execution"]["network"] == "bridge"
    assert doc["target"]["api_endpoint"]["api_key_name"] == "MY_KEY"
    assert "output_dir" not in doc["execution"]
    assert doc["execution"]["env_names"] == ["A", "B"]
    assert doc["execution"]["cpus"] is None
    assert doc["evaluation"]["params"]["temperature"] == 0.5
    assert doc["config"]["params"]["extra"] == {"flag": True}


def test_group_override_on_command_line(cdir: Path) -> None:
    run = compose_run("base", cdir, ["execution=slurm", "execution.partition=gpu", "deployment=vllm",
                                     "deployment.model_path=/m"])
    assert isinstance(run.config.execution, SlurmExecution) and run.config.execution.partition == "gpu"
    assert isinstance(run.config.deployment, VllmDeployment)
    assert run.plan()[0].deployment_group is not None


def test_user_group_adds_and_overrides_builtin(cdir: Path) -> None:
    (cdir / "execution").mkdir()
    (cdir / "execution" / "local.yaml").write_text("type: local\nruntime: process\noutput_dir: ./mine\n")
    (cdir / "execution" / "cloud.yaml").write_text("type: lepton\nresource_shape: gpu.8xh100\n")
    run = compose_run("base", cdir)
    assert isinstance(run.config.execution, LocalExecution) and run.config.execution.runtime == "process"
    assert "max_parallel_tasks" not in run.doc["execution"]  # the built-in local.yaml was replaced
    run2 = compose_run("base", cdir, ["execution=cloud"])
    assert isinstance(run2.config.execution, LeptonExecution)
    assert run2.config.execution.resource_shape == "gpu.8xh100"


def test_self_first_lets_groups_win(cdir: Path) -> None:
    (cdir / "first.yaml").write_text(BASE.replace("  - _self_\n", "").replace("defaults:\n", "defaults:\n  - _self_\n"))
    (cdir / "execution").mkdir()
    (cdir / "execution" / "local.yaml").write_text("type: local\noutput_dir: /from/group\n")
    assert compose_document("first", cdir)[0]["execution"]["output_dir"] == "/from/group"
    assert compose_document("base", cdir)[0]["execution"]["output_dir"] == "./out"


def test_user_tasks_toml_extends_registry(cdir: Path) -> None:
    (cdir / "tasks.toml").write_text('[tasks.my_mc]\ndescription = "mine"\nendpoint_types = ["completions"]\n')
    run = compose_run("base", cdir, ["evaluation.tasks=[{name: my_mc}]"])
    assert run.tasks[0].name == "my_mc" and run.tasks[0].description == "mine"


def test_slurm_remote_output_dir_stays_relative(cdir: Path) -> None:
    run = compose_run("base", cdir, ["execution=slurm", "+execution.hostname=login1", "execution.output_dir=rel"])
    assert run.config.execution.output_dir == "rel"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["nope=1"], "use +nope=VALUE"),
        (["+execution.output_dir=x"], "already exists"),
        (["~missing.key"], "'missing.key' is not in the config"),
        (["execution=kubernetes"], "no config group option 'kubernetes'; available: lepton, local, slurm"),
        (["a=b=c"], "not a valid override"),
        (["evaluation.tasks=[{name: helaswag}]"], "did you mean hellaswag"),
        (["execution.max_parallel_tasks=0"], "execution.max_parallel_tasks: expected int >= 1, got 0"),
        (["hydra.run.dir=x"], "hydra.* settings cannot be overridden"),
        (["execution.env={HF_TOKEN: x}"], "'execution.env.HF_TOKEN' is not in the config (a mapping merges"),
    ],
)
def test_bad_overrides_are_one_line(cdir: Path, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigCompositionError) as ei:
        compose_run("base", cdir, overrides)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg
    assert ei.value.exit_code == 2
