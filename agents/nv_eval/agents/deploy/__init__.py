"""Model deployments as containers: what to run for each ``deployment.type``.

:func:`deployment_spec` turns a job's deployment config into a :class:`DeploymentSpec`
(image, command, env, env names, port, health path, mounts, GPUs). Runtimes (Docker here;
Slurm/Lepton may reuse the commands) decide where it runs. Shared, refcounted deployment
containers per ``deployment_group`` live in :mod:`nv_eval.agents.deploy._docker_shared`.
"""

from __future__ import annotations

from .specs import DEFAULT_IMAGES, DeploymentSpec, deployment_spec, deployment_type, group_of

__all__ = ["DEFAULT_IMAGES", "DeploymentSpec", "deployment_spec", "deployment_type", "group_of"]
