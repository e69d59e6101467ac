"""nv-eval daemon: plans invocations, dispatches jobs, folds events into state.

Public API::

    from nv_eval.daemon import Settings, serve
    async with anyio.create_task_group() as tg:
        ready = await tg.start(serve, Settings(nats_url=..., data_dir=...))

Command line: ``python -m nv_eval.daemon --nats-url URL --data-dir DIR [--prefix nveval]
[--heartbeat-timeout 30] [--http-port 0]``.
"""

from ._engine import daemon_msg_id
from ._service import Ready, serve
from ._settings import Settings
from ._store import invocation_state

__all__ = ["Ready", "Settings", "daemon_msg_id", "invocation_state", "serve"]
