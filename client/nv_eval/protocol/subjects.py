"""Every NATS subject, stream and bucket name used by nv-eval, built in one place."""

from __future__ import annotations

import msgspec

DEFAULT_PREFIX = "nveval"

API_VERBS = ("run", "status", "kill", "resume", "list_runs", "list_tasks", "events")
EVENT_KINDS = ("status", "progress", "log", "result", "deployment")


class Subjects(msgspec.Struct, frozen=True):
    """Subject builder for one bus prefix (default ``nveval``)."""

    prefix: str = DEFAULT_PREFIX

    # request/reply API served by the daemon (a NATS micro service)
    def api(self, verb: str) -> str:
        return f"{self.prefix}.api.{verb}"

    # JetStream work queue of jobs for one executor pool
    def jobs(self, executor: str, pool: str = "default") -> str:
        return f"{self.prefix}.jobs.{executor}.{pool}"

    def jobs_all(self) -> str:
        return f"{self.prefix}.jobs.>"

    # JetStream event stream
    def event(self, invocation_id: str, job_index: int | str, kind: str) -> str:
        return f"{self.prefix}.events.{invocation_id}.{job_index}.{kind}"

    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    def events_of_invocation(self, invocation_id: str) -> str:
        return f"{self.prefix}.events.{invocation_id}.>"

    def events_of_job(self, invocation_id: str, job_index: int | str) -> str:
        return f"{self.prefix}.events.{invocation_id}.{job_index}.*"

    # request/reply control of one agent (cancel, re-attach)
    def control(self, agent_id: str) -> str:
        return f"{self.prefix}.control.{agent_id}"

    # plain pub/sub heartbeats
    def heartbeat(self, agent_id: str) -> str:
        return f"{self.prefix}.agents.{agent_id}.heartbeat"

    def heartbeats_all(self) -> str:
        return f"{self.prefix}.agents.*.heartbeat"

    # JetStream resources
    @property
    def jobs_stream(self) -> str:
        return f"{self.prefix.upper()}_JOBS"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def cancel_bucket(self) -> str:
        """KV bucket: key = job id (``<inv>.<n>``) -> cancelled marker, read by agents before starting a job."""
        return f"{self.prefix}_cancels"

    def jobs_consumer(self, executor: str, pool: str = "default") -> str:
        return f"agents_{executor}_{pool}"
