"""JetStream resources the daemon owns (streams, KV bucket) and the publish helpers it uses."""

from __future__ import annotations

from typing import Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue
from nv_eval.protocol import Event, JobSpec, Subjects, encode
from nv_eval.protocol.logsetup import get_logger

log = get_logger("nv_eval.daemon.bus")

EVENTS_DUPLICATE_WINDOW = 300.0  # seconds; contract asks >= 2 min
JOBS_DUPLICATE_WINDOW = 300.0
PUBLISH_TIMEOUT = 5.0


async def ensure_resources(js: JetStreamContext, subjects: Subjects) -> KeyValue:
    """Create the jobs and events streams and the cancel bucket unless they exist (idempotent)."""
    wanted = [
        StreamConfig(
            name=subjects.jobs_stream,
            subjects=[subjects.jobs_all()],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=JOBS_DUPLICATE_WINDOW,
        ),
        StreamConfig(
            name=subjects.events_stream,
            subjects=[subjects.events_all()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
        ),
    ]
    for cfg in wanted:
        try:
            info = await js.stream_info(cfg.name)  # type: ignore[arg-type]
            log.info("stream exists", stream=cfg.name, retention=str(info.config.retention))
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(cfg)
                log.info("stream created", stream=cfg.name)
            except nats.js.errors.BadRequestError as e:  # created concurrently by someone else
                log.info("stream not created", stream=cfg.name, error=str(e))
    try:
        kv = await js.key_value(subjects.cancel_bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            kv = await js.create_key_value(KeyValueConfig(bucket=subjects.cancel_bucket, storage=StorageType.FILE))
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(subjects.cancel_bucket)
        log.info("kv bucket ready", bucket=subjects.cancel_bucket)
    return kv


async def publish_event(js: JetStreamContext, subjects: Subjects, ev: Event, index: int) -> Any:
    kind = type(ev).__struct_config__.tag  # type: ignore[attr-defined]
    return await js.publish(
        subjects.event(ev.invocation_id, index, str(kind)),
        encode(ev),
        timeout=PUBLISH_TIMEOUT,
        headers={"Nats-Msg-Id": ev.msg_id},
    )


def job_msg_id(spec: JobSpec) -> str:
    return f"{spec.job_id}:a{spec.attempt}"


async def publish_job(js: JetStreamContext, subjects: Subjects, spec: JobSpec, executor: str) -> Any:
    return await js.publish(
        subjects.jobs(executor, spec.execution.pool),
        encode(spec),
        timeout=PUBLISH_TIMEOUT,
        headers={"Nats-Msg-Id": job_msg_id(spec)},
    )
