"""The command-line edge: global options, command groups, and error handling.

Commands live in ``cxm_cli/commands/``, one module per group, each registering
itself on the root app. They stay thin: parse options, call one core function,
print the result. Problems a user can fix arrive here as ``CxmError`` and leave
as one red line and a non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from cxm_cli.commands import COMMAND_MODULES
from cxm_cli.commands._common import State, stderr_console
from cxm_cli.errors import CxmError


class CxmGroup(TyperGroup):
    """Typer group that turns ``CxmError`` into a message and an exit code."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                from cxm_cli.store import is_disk_trouble, storage_error

                if is_disk_trouble(exc):
                    self._report(ctx, storage_error(exc), cause=exc)
                raise
            # Another process held the write lock past the busy timeout.
            busy = CxmError(
                "the workspace database stayed busy (another cxm process, such "
                "as a large import, holds it)",
                hint="try again when it has finished",
            )
            self._report(ctx, busy, cause=exc)
        except CxmError as exc:
            self._report(ctx, exc, cause=exc)
        except BrokenPipeError:
            # The reader stopped early (`cxm contacts list | head`): it has
            # what it wanted. Point stdout at nothing so the flush at exit
            # cannot fail again, and end quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None

    @staticmethod
    def _report(ctx: typer.Context, error: CxmError, *, cause: BaseException):
        state = ctx.obj if isinstance(ctx.obj, State) else None
        if state is not None and state.debug:
            raise cause
        console = stderr_console()
        console.print(f"[red]error:[/red] {escape(error.message)}", highlight=False)
        if error.hint:
            console.print(f"  hint: {escape(error.hint)}", highlight=False)
        raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    cls=CxmGroup,
    help="cxm: leads in, follow-ups out, one timeline per person.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Workspace folder (default: $CXM_WORKSPACE, else the current one).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug logs.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")
    ] = False,
) -> None:
    """cxm: leads in, follow-ups out, one timeline per person."""
    if isinstance(ctx.obj, State):
        # Tests hand in a prepared state (a fake clock); keep it, add options.
        ctx.obj.workspace_path = workspace or ctx.obj.workspace_path
        ctx.obj.debug = debug or ctx.obj.debug
    else:
        ctx.obj = State(workspace_path=workspace, debug=debug)
    configure_logging(debug=debug, verbose=verbose)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the moment of logging.

    Test runners swap ``sys.stderr`` per invocation; a handler holding the
    stream it was created with would write to a closed file.
    """

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(*, debug: bool, verbose: bool) -> None:
    # Commands tell people what happened themselves; log records are for
    # operators who ask for them with --verbose or --debug.
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR
    package_logger = logging.getLogger("cxm_cli")
    package_logger.setLevel(level)
    if not any(isinstance(h, _CurrentStderrHandler) for h in package_logger.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        package_logger.addHandler(handler)


for module in COMMAND_MODULES:
    module.register(app)


def main() -> int:
    try:
        app()
    except KeyboardInterrupt:
        stderr_console().print("[red]interrupted[/red]")
        return 130
    return 0
