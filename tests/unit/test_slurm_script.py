"""Slurm script generation: sbatch fields, container runtimes, secrets by name, injection.

Injection tests do not only compare text: the generated script goes through ``bash -n``
and a harmless one (the harness replaced by /bin/echo) is actually run, then we check that
no injected command ran and the hostile strings arrived literally.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from nv_eval.agents.slurm import ScriptError, SlurmExecutor, render_script
from nv_eval.agents.slurm._conn import with_secrets
from nv_eval.agents.slurm._script import Paths, check_script, sbatch_argv

from tests._support.slurm import slurm_job

HOSTILE = [
    "x'; touch {m}/q1; echo '",
    'x"; touch {m}/q2; echo "',
    "$(touch {m}/q3)",
    "`touch {m}/q4`",
    "a\ntouch {m}/q5\n",
    "${{IFS}}$(touch${{IFS}}{m}/q6)",
    "\\'; touch {m}/q7 #",
]


def _bash_n(text: str, tmp: Path) -> None:
    p = tmp / "check.sh"
    p.write_text(text)
    r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr


def test_all_fields_become_validated_directives(tmp_path: Path) -> None:
    job = slurm_job(
        tmp_path,
        partition="gpu",
        nodes=2,
        gpus_per_node=8,
        time_limit="04:00:00",
        account="proj_a",
        qos="high",
        constraint="h100&ib",
        exclusive=True,
        cpus_per_task=16,
        mem="64G",
        sbatch_extra_flags=["--gres=gpu:8", "--reservation=r1"],
        env_setup=["module load cuda/12.4"],
        env={"HF_HOME": "/scratch/hf"},
        env_names=["HF_TOKEN"],
        api_key_name="MY_API_KEY",
    )
    text = render_script(job)
    check_script(text)
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=04:00:00",
        "#SBATCH --account=proj_a",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=h100&ib",
        "#SBATCH --exclusive",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=64G",
        "#SBATCH --gres=gpu:8",
        "#SBATCH --reservation=r1",
        "#SBATCH --export=ALL,HF_TOKEN,MY_API_KEY",
        "#SBATCH --no-requeue",
        "module load cuda/12.4",
        "export HF_HOME=/scratch/hf",
    ]:
        assert line in text.splitlines(), line
    assert "--api-key-env MY_API_KEY" in text
    _bash_n(text, tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partition", "gpu --wrap=id"),
        ("partition", "gpu\n#SBATCH --wrap=id"),
        ("account", "a'b"),
        ("qos", "$(id)"),
        ("time_limit", "4 hours"),
        ("mem", "64G; id"),
        ("sbatch_extra_flags", ["--comment=$(id)"]),
        ("sbatch_extra_flags", ["--gres=gpu:8\n#SBATCH --wrap=id"]),
        ("sbatch_extra_flags", ["--comment=a b"]),
        ("sbatch_extra_flags", ["gres=gpu:8"]),
        ("sbatch_extra_flags", ["--output=/tmp/x"]),
        ("sbatch_extra_flags", ["--wrap=id"]),
        ("env_setup", ["module load x\nid"]),
        ("env", {"BAD NAME": "v"}),
        ("env_names", ["X;id"]),
    ],
)
def test_unsafe_values_are_refused_with_the_field_named(tmp_path: Path, field: str, value: object) -> None:
    job = slurm_job(tmp_path, **{field: value})
    with pytest.raises(ScriptError) as e:
        render_script(job)
    assert "\n" not in str(e.value)
    assert field.split("_")[0] in str(e.value) or "environment variable" in str(e.value)


def test_secret_values_never_reach_script_or_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_KEY", "sk-very-secret-123")
    job = slurm_job(tmp_path, env_names=["MY_API_KEY"], api_key_name="MY_API_KEY")
    text = render_script(job)
    dry = SlurmExecutor().describe([job])
    assert "sk-very-secret-123" not in text and "sk-very-secret-123" not in dry
    assert '${MY_API_KEY:?' in text
    assert "set -x" not in text and "set -o xtrace" not in text


def test_with_secrets_passes_values_on_stdin_only(tmp_path: Path) -> None:
    argv, stdin = with_secrets(["printenv", "K1", "K2"], {"K1": "v1 $(id)", "K2": "line1\nline2"})
    assert "v1" not in " ".join(argv) and "line1" not in " ".join(argv)
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=10, env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "v1 $(id)\nline1\nline2\n"


def test_hostile_strings_are_inert_when_the_script_runs(tmp_path: Path) -> None:
    marker = tmp_path / "markers"
    marker.mkdir()
    hostile = [h.format(m=marker) for h in HOSTILE]
    env = {f"E{i}": h for i, h in enumerate(hostile)}
    out_dir = tmp_path / "out"
    job = slurm_job(
        tmp_path,
        task=hostile[0],
        model_id=hostile[2],
        endpoint_url="http://127.0.0.1:9/v1?x=$(touch " + str(marker) + "/url)",
        harness_command='/usr/bin/printf "%s\\n"',
        env=env,
        output_dir=str(out_dir),
    )
    task_dir = tmp_path / "task dir 'with' $(quotes)"
    text = render_script(job, str(task_dir))
    check_script(text)
    _bash_n(text, tmp_path)
    (task_dir / "logs").mkdir(parents=True)
    script = tmp_path / "job.sh"
    script.write_text(text)
    # print every hostile env value from inside the job too
    env_dump = "".join(f'printf "%s\\n" "${k}"\n' for k in env)
    script.write_text(text.replace('exit "$rc"\n', env_dump + 'exit "$rc"\n'))
    r = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "77"},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert list(marker.iterdir()) == [], "an injected command ran"
    stdout = (task_dir / "logs" / "stdout.log").read_text()
    argv = stdout.splitlines()
    assert "--task" in argv and hostile[0].splitlines()[0] in argv
    assert hostile[2] in argv
    assert (task_dir / "logs" / "exit_code.77").read_text().strip() == "0"
    for h in hostile:
        assert h in r.stdout


def test_job_name_is_sanitized_and_output_is_an_argv(tmp_path: Path) -> None:
    job = slurm_job(tmp_path, task="a b;$(id)")
    text = render_script(job)
    name = next(ln for ln in text.splitlines() if ln.startswith("#SBATCH --job-name="))
    assert name.endswith("a_b___id_")
    paths = Paths("/x/it's dir")
    argv = sbatch_argv(paths)
    assert shlex.split(shlex.join(argv)) == argv


def test_container_runtimes_text(tmp_path: Path) -> None:
    pyxis = render_script(slurm_job(tmp_path, container_runtime="pyxis", container_image="nvcr.io/nv/eval:1"))
    td = str(tmp_path)
    assert "srun --ntasks=1 --container-image=nvcr.io/nv/eval:1 --container-mounts=" + td in pyxis
    assert "--no-container-mount-home nv-eval-harness run --task arc_easy" in pyxis
    app = render_script(slurm_job(tmp_path, container_runtime="apptainer", container_image="/img/eval.sif", gpus_per_node=1))
    assert "srun --ntasks=1 apptainer exec --nv --bind " in app and " /img/eval.sif nv-eval-harness run" in app
    dock = render_script(slurm_job(tmp_path, container_runtime="docker", container_image="ev:1", env_names=["TOK"]))
    assert 'docker run --rm --name "nveval-${SLURM_JOB_ID}" --network host -v ' in dock
    assert "-e TOK ev:1 nv-eval-harness run" in dock
    assert "trap 'docker rm -f \"nveval-${SLURM_JOB_ID}\"" in dock
    none = render_script(slurm_job(tmp_path, harness_command="/opt/venv/bin/nv-eval-harness"))
    assert "\n/opt/venv/bin/nv-eval-harness run --task arc_easy" in none
    for t in (pyxis, app, dock, none):
        _bash_n(t, tmp_path)


def test_invocation_placement_dry_run_shows_one_allocation_and_every_task(tmp_path: Path) -> None:
    from nv_eval.agents.slurm._alloc import task_script, worker_script

    first = slurm_job(tmp_path, task="arc_easy", placement="invocation", task_concurrency="parallel")
    jobs = [
        first,
        slurm_job(tmp_path, task="gsm8k", index=1, invocation_id=first.invocation_id, placement="invocation",
                  task_concurrency="parallel"),  # fmt: skip
    ]
    dry = SlurmExecutor().describe(jobs)
    assert dry.count("#!/bin/bash\n#SBATCH") == 1  # one allocation script
    assert "queue/0.sh" in dry and "queue/1.sh" in dry
    assert "PAR=1" in dry
    w = worker_script(first)
    check_script(w)
    _bash_n(w, tmp_path)
    _bash_n(task_script(jobs[1]), tmp_path)
    assert "#SBATCH" not in task_script(jobs[1])
