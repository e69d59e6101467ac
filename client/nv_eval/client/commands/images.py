"""``nv-eval images build``: build the harness and llama.cpp images on this machine, no registry needed.

Runs ``harness/image/build.py`` (next to the installed harness sources) with the current
interpreter and streams its progress lines. ``nv-eval images ls`` lists nv-eval's images.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click


def build_script() -> Path:
    """``harness/image/build.py`` of the source tree the harness package is installed from."""
    import importlib.util

    spec = importlib.util.find_spec("nv_eval.harness")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("the nv_eval.harness package is not installed (pip install -e .)")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    script = pkg.parent.parent / "image" / "build.py"
    if not script.exists():
        raise click.ClickException(f"{script} not found: image builds need a source checkout (pip install -e .)")
    return script


@click.group()
def images() -> None:
    """Build and list nv-eval's container images."""


@images.command("build")
@click.option("--harness", "harness", is_flag=True, help="build nv-eval/harness:latest (default)")
@click.option("--llamacpp", is_flag=True, help="build nv-eval/llamacpp:latest (llama.cpp server + SmolLM2)")
@click.option("--force", is_flag=True, help="rebuild every layer")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="give up after SECONDS")
def build(harness: bool, llamacpp: bool, force: bool, timeout: float) -> None:
    """Build images without any registry: a rootfs of the host's python3.11 via `docker import`,
    then layers from Dockerfiles with the legacy builder. Unchanged layers are reused."""
    args = [sys.executable, str(build_script())]
    if harness or not llamacpp:
        args.append("--harness")
    if llamacpp:
        args.append("--llamacpp")
    if force:
        args.append("--force")
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            click.echo(line.rstrip("\n"))
            if time.monotonic() - t0 > timeout:
                proc.kill()
                raise click.ClickException(f"image build did not finish within {timeout:g}s")
        rc = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if rc != 0:
        raise click.ClickException(f"image build failed (exit {rc}); see the lines above")


@images.command("ls")
def ls_images() -> None:
    """List nv-eval's local images."""
    p = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.CreatedSince}}",
                        "--filter", "reference=nv-eval/*"], capture_output=True, text=True, timeout=60)  # fmt: skip
    if p.returncode != 0:
        raise click.ClickException(f"docker images failed: {p.stderr.strip()}")
    click.echo(p.stdout.rstrip() or "no nv-eval images (run: nv-eval images build)")
