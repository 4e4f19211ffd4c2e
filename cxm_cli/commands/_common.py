"""What every command shares: the state object and output helpers.

stdout carries data (a table on a terminal, plain tab-separated lines when
piped, JSON with ``--json``); everything meant for a person goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cxm_cli.clock import SystemClock

UNBROKEN_COLUMNS = {"id", "phone"}

JSON_OPTION = typer.Option("--json", help="Print machine-readable JSON on stdout.")


@dataclass
class State:
    workspace_path: Path | None = None
    debug: bool = False
    clock: Any = field(default_factory=SystemClock)
    _workspace: Any = None
    _db: Any = None

    @property
    def workspace(self):
        if self._workspace is None:
            from cxm_cli.workspace import find_workspace

            self._workspace = find_workspace(self.workspace_path)
        return self._workspace

    @property
    def db(self):
        if self._db is None:
            self._db = self.workspace.open_db()
        return self._db


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def stdout_console() -> Console:
    return Console(file=sys.stdout, soft_wrap=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


def say(message: str) -> None:
    """A message for the person at the terminal (stderr)."""
    stderr_console().print(escape(message), highlight=False)


def warn(message: str) -> None:
    stderr_console().print(
        f"[yellow]warning:[/yellow] {escape(message)}", highlight=False
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    sys.stdout.write("\n")


def print_rows(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    headers: Sequence[str] | None = None,
) -> None:
    """A rich table on a terminal; tab-separated text with a header otherwise."""
    rows = list(rows)
    headers = list(headers or columns)
    if stdout_is_terminal():
        table = Table(title=title, show_lines=False)
        for column, header in zip(columns, headers, strict=True):
            # A phone number cut in two is misread; let other columns fold.
            keep_whole = column in UNBROKEN_COLUMNS
            table.add_column(header, overflow="fold", no_wrap=keep_whole)
        for row in rows:
            table.add_row(*[_cell(row.get(column)) for column in columns])
        stdout_console().print(table)
        return

    out = sys.stdout
    if title:
        # Piped output stays pure tab-separated data; the title is for people.
        say(title)
    out.write("\t".join(headers) + "\n")
    for row in rows:
        out.write(
            "\t".join(
                _cell(row.get(c)).replace("\t", " ").replace("\n", " ") for c in columns
            )
            + "\n"
        )


def emit(
    data: Any,
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    headers: Sequence[str] | None = None,
) -> None:
    """Print a list of rows (or one dict) as JSON or as a table."""
    if as_json:
        print_json(data)
        return
    if isinstance(data, dict):
        rows = [{"field": k, "value": v} for k, v in data.items()]
        print_rows(rows, ["field", "value"], title=title)
        return
    print_rows(
        data,
        columns or (list(data[0].keys()) if data else []),
        title=title,
        headers=headers,
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
