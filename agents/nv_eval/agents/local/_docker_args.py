"""Map ``execution.extra_docker_args`` (docker CLI flags) and resource settings onto a create config.

Supported flags: ``--shm-size``, ``--ulimit``, ``-e/--env NAME`` (passed through by name) or
``NAME=VALUE`` (non-secret), ``-v/--volume``, ``--cpus``, ``-m/--memory``, ``--gpus``,
``--pids-limit``, ``--add-host``, ``--ipc``, ``--cap-add``, ``--privileged``, ``--user``,
``--network``. Anything else is rejected with a one-line error naming the flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class DockerArgsError(ValueError):
    """A docker flag this runtime cannot map (message names the flag)."""


def parse_size(text: str, what: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not m:
        raise DockerArgsError(f"{what}: expected a size like 512m or 8g, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def gpu_requests(gpus: int | list[str] | str | None) -> list[dict[str, Any]]:
    """Docker device requests for ``gpus`` (``all``, a count, or device ids)."""
    if gpus is None:
        return []
    req: dict[str, Any] = {"Driver": "nvidia", "Capabilities": [["gpu"]]}
    if gpus == "all":
        req["Count"] = -1
    elif isinstance(gpus, int):
        req["Count"] = gpus
    elif isinstance(gpus, str):
        if gpus.startswith("device="):
            req["DeviceIDs"] = gpus.split("=", 1)[1].strip("\"'").split(",")
        elif gpus.isdigit():
            req["Count"] = int(gpus)
        else:
            raise DockerArgsError(f"--gpus: expected all, a count or device=IDS, got {gpus!r}")
    else:
        req["DeviceIDs"] = [str(g) for g in gpus]
    return [req]


@dataclass
class ContainerExtras:
    """What the flags add to a container: host config keys, env names/values, binds, network."""

    host_config: dict[str, Any] = field(default_factory=dict)
    env_names: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    binds: list[str] = field(default_factory=list)
    network: str | None = None
    user: str | None = None


def parse_docker_args(args: list[str]) -> ContainerExtras:
    out = ContainerExtras()
    hc = out.host_config
    i = 0

    def value(flag: str) -> str:
        nonlocal i
        if "=" in args[i] and args[i].startswith("--"):
            return args[i].split("=", 1)[1]
        if i + 1 >= len(args):
            raise DockerArgsError(f"extra_docker_args: {flag} needs a value")
        i += 1
        return args[i]

    while i < len(args):
        raw = args[i]
        flag = raw.split("=", 1)[0] if raw.startswith("--") else raw
        if flag == "--shm-size":
            hc["ShmSize"] = parse_size(value(flag), "--shm-size")
        elif flag == "--ulimit":
            v = value(flag)
            m = re.fullmatch(r"([a-z]+)=(-?\d+)(?::(-?\d+))?", v)
            if not m:
                raise DockerArgsError(f"--ulimit: expected NAME=SOFT[:HARD], got {v!r}")
            soft = int(m.group(2))
            hc.setdefault("Ulimits", []).append({"Name": m.group(1), "Soft": soft, "Hard": int(m.group(3) or soft)})
        elif flag in ("-e", "--env"):
            v = value(flag)
            if "=" in v:
                k, val = v.split("=", 1)
                out.env[k] = val
            else:
                out.env_names.append(v)
        elif flag in ("-v", "--volume"):
            v = value(flag)
            if ":" not in v:
                raise DockerArgsError(f"-v: expected HOST_PATH:CONTAINER_PATH[:ro], got {v!r}")
            out.binds.append(v)
        elif flag == "--cpus":
            v = value(flag)
            try:
                hc["NanoCpus"] = int(float(v) * 1e9)
            except ValueError:
                raise DockerArgsError(f"--cpus: expected a number, got {v!r}") from None
        elif flag in ("-m", "--memory"):
            hc["Memory"] = parse_size(value(flag), "--memory")
        elif flag == "--gpus":
            hc["DeviceRequests"] = gpu_requests(value(flag))
        elif flag == "--pids-limit":
            hc["PidsLimit"] = int(value(flag))
        elif flag == "--add-host":
            hc.setdefault("ExtraHosts", []).append(value(flag))
        elif flag == "--ipc":
            hc["IpcMode"] = value(flag)
        elif flag == "--cap-add":
            hc.setdefault("CapAdd", []).append(value(flag))
        elif flag == "--privileged":
            hc["Privileged"] = True
        elif flag in ("-u", "--user"):
            out.user = value(flag)
        elif flag in ("--network", "--net"):
            out.network = value(flag)
        else:
            raise DockerArgsError(
                f"extra_docker_args: unsupported flag {flag!r} (supported: --shm-size, --ulimit, -e, -v, --cpus, "
                "--memory, --gpus, --pids-limit, --add-host, --ipc, --cap-add, --privileged, --user, --network)"
            )
        i += 1
    return out
