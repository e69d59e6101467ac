"""The ``nv-eval`` command line: a click group whose commands are imported on demand.

Start-up stays fast because nothing heavy (nats-py, hydra, rich) is imported before a
command needs it. Every error is one line on stderr with a documented exit code
(0 ok, 1 job failure, 2 usage/config, 3 daemon/bus unreachable, 4 not found).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from ._errors import EXIT_FAILED, EXIT_USAGE, NvEvalError

COMMANDS: dict[str, str] = {
    "ls": "nv_eval.client.commands.ls:ls",
    "run": "nv_eval.client.commands.run:run",
    "status": "nv_eval.client.commands.status:status",
    "logs": "nv_eval.client.commands.logs:logs",
    "kill": "nv_eval.client.commands.kill:kill",
    "resume": "nv_eval.client.commands.resume:resume",
    "export": "nv_eval.client.commands.export:export",
    "daemon": "nv_eval.client.commands.daemon:daemon",
    "agent": "nv_eval.client.commands.agent:agent",
}
OPTIONAL_COMMANDS: dict[str, str] = {"images": "nv_eval.client.commands.images:images"}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command runs."""

    broken: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(COMMANDS)
        for name, target in OPTIONAL_COMMANDS.items():
            if importlib.util.find_spec(target.split(":")[0]) is not None:
                names.append(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name) or OPTIONAL_COMMANDS.get(cmd_name)
        if target is None:
            return None
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            if cmd_name in OPTIONAL_COMMANDS:  # an optional plugin command must never break the CLI
                if getattr(e, "name", None) != mod_name:
                    self.broken[cmd_name] = f"{type(e).__name__}: {e}"
                return None
            raise
        cmd = getattr(mod, attr, None)
        return cmd if isinstance(cmd, click.Command) else None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            if name in self.broken:
                raise NvEvalError(f"command {name!r} is not available: {self.broken[name]}")
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; commands: {', '.join(self.list_commands(ctx))}"
            raise click.UsageError(f"no such command {name!r}{hint}")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="nv-eval")
def cli() -> None:
    """nv-eval: run LLM evaluations on your infrastructure (local, Slurm, Lepton, custom)."""


def _err(message: str) -> None:
    sys.stderr.write(f"nv-eval: error: {' '.join(message.split())}\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every failure into one line and an exit code."""
    code = run_cli(argv)
    sys.stdout.flush()
    raise SystemExit(code)


def run_cli(argv: list[str] | None = None) -> int:
    try:
        rv: Any = cli.main(args=argv, prog_name="nv-eval", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except NvEvalError as e:
        _err(str(e))
        return e.exit_code
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # type: ignore[misc]
        sys.stdout.write((e.ctx.get_help() if e.ctx else "") + "\n")
        return EXIT_USAGE
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "nv-eval"
        _err(e.format_message() if cmd == "nv-eval" else f"{cmd}: {e.format_message()}")
        return EXIT_USAGE
    except click.ClickException as e:
        _err(e.format_message())
        return e.exit_code or EXIT_FAILED
    except click.exceptions.Abort:
        _err("aborted")
        return 130
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get("NV_EVAL_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {e} (set NV_EVAL_DEBUG=1 for details)")
        return EXIT_FAILED


if __name__ == "__main__":
    main()
