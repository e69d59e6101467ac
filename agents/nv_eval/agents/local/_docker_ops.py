"""Small aiodocker operations used by the Docker runtime, each bounded in time.

Images: the local image is used when present; a pull happens only when it is absent, and a
pull failure names the image and the reason. Containers: create+start, force-remove
(idempotent), last log lines. Networks: per-invocation bridge networks, labelled.
"""

from __future__ import annotations

from typing import Any

import aiodocker
import anyio
from aiodocker.containers import DockerContainer

from .._runtime import JobFailed
from ._docker_spec import LABEL_INVOCATION, LABEL_ROLE, ContainerSpec, create_config

API_TIMEOUT = 30.0
PULL_TIMEOUT = 1800.0


async def ensure_image(docker: aiodocker.Docker, image: str) -> bool:
    """Make ``image`` available locally; returns True when it had to be pulled."""
    try:
        with anyio.fail_after(API_TIMEOUT):
            await docker.images.inspect(image)
        return False
    except aiodocker.DockerError as e:
        if e.status != 404:
            raise JobFailed(f"image {image}: cannot inspect it: {e.message}", failure_kind="infrastructure") from None
    try:
        with anyio.fail_after(PULL_TIMEOUT):
            await docker.images.pull(image)
    except aiodocker.DockerError as e:
        raise JobFailed(
            f"image {image} is not present locally and pulling it failed: {e.message}"
            + (" (build it with `nv-eval images build`)" if image.startswith("nv-eval/") else ""),
            failure_kind="infrastructure",
        ) from None
    except TimeoutError:
        raise JobFailed(f"image {image}: pull did not finish within {PULL_TIMEOUT:g}s", "infrastructure") from None
    return True


async def remove_container(docker: aiodocker.Docker, ref: str) -> bool:
    """Force-remove a container by id or name; True if it existed."""
    try:
        with anyio.fail_after(API_TIMEOUT):
            c = await docker.containers.get(ref)
            await c.delete(force=True, v=True)
        return True
    except aiodocker.DockerError as e:
        if e.status in (404, 409):  # gone, or removal already in progress
            return False
        raise


async def create_and_start(docker: aiodocker.Docker, spec: ContainerSpec) -> tuple[DockerContainer, list[str]]:
    """Create and start ``spec`` (a stale container with the same name is removed first)."""
    config, missing = create_config(spec)
    await remove_container(docker, spec.name)
    try:
        with anyio.fail_after(API_TIMEOUT):
            container = await docker.containers.create(config=config, name=spec.name)
    except aiodocker.DockerError as e:
        raise JobFailed(f"cannot create container {spec.name} from {spec.image}: {e.message}", "infrastructure") from None
    try:
        with anyio.fail_after(API_TIMEOUT):
            await container.start()
    except aiodocker.DockerError as e:
        await remove_container(docker, container.id)
        raise JobFailed(f"cannot start container {spec.name}: {e.message}", "infrastructure") from None
    return container, missing


async def last_logs(docker: aiodocker.Docker, ref: str, n: int = 20) -> list[str]:
    try:
        with anyio.fail_after(API_TIMEOUT):
            c = await docker.containers.get(ref)
            chunks = await c.log(stdout=True, stderr=True, tail=n)
    except (aiodocker.DockerError, TimeoutError):
        return []
    return [ln for ln in "".join(chunks).splitlines() if ln.strip()][-n:]


async def ensure_network(docker: aiodocker.Docker, name: str, invocation_id: str) -> None:
    """Create the per-invocation bridge network (labelled) unless it exists."""
    with anyio.fail_after(API_TIMEOUT):
        try:
            await docker.networks.get(name)
            return
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise
        try:
            await docker.networks.create(
                {"Name": name, "Driver": "bridge", "CheckDuplicate": True,
                 "Labels": {LABEL_INVOCATION: invocation_id, LABEL_ROLE: "network"}}  # fmt: skip
            )
        except aiodocker.DockerError as e:
            if e.status != 409:  # created concurrently by another job
                raise


async def remove_network_if_unused(docker: aiodocker.Docker, name: str) -> bool:
    try:
        with anyio.fail_after(API_TIMEOUT):
            net = await docker.networks.get(name)
            info: dict[str, Any] = await net.show()
            if info.get("Containers"):
                return False
            await net.delete()
        return True
    except aiodocker.DockerError:
        return False


async def container_ip(docker: aiodocker.Docker, ref: str, network: str) -> str | None:
    with anyio.fail_after(API_TIMEOUT):
        info = await (await docker.containers.get(ref)).show()
    nets = info.get("NetworkSettings", {}).get("Networks", {}) or {}
    ip = (nets.get(network) or {}).get("IPAddress")
    return str(ip) if ip else None
