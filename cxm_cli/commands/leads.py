"""``cxm leads ...``: importing exports, listing and undoing import batches."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import (
    JSON_OPTION,
    emit,
    print_json,
    say,
    state,
    stdout_is_terminal,
    warn,
)

leads_app = typer.Typer(
    help="Import leads and manage import batches.", no_args_is_help=True
)

# Files smaller than this import too fast for a progress bar to help.
PROGRESS_MIN_BYTES = 1 << 20
WARNINGS_SHOWN = 10


def register(app: typer.Typer) -> None:
    app.add_typer(leads_app, name="leads")


@leads_app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Export file to import, or - for stdin.")],
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Force a layout (see: cxm leads formats)."),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(help="csv, jsonl or vcard (default: from the file)."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding (default: detected).")
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="comma, semicolon, tab, pipe (default: detected)."),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(help="Phone region for numbers without a country code, e.g. DE."),
    ] = None,
    date_format: Annotated[
        str | None,
        typer.Option(help="MDY, DMY, YMD or a pattern like %d.%m.%Y."),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD, repeatable (e.g. 'Handy=phone')."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Source recorded on every imported lead.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag every row (repeatable).")
    ] = None,
    on_conflict: Annotated[
        str,
        typer.Option(help="fill (only empty fields), overwrite, or skip existing."),
    ] = "fill",
    existing_contacts: Annotated[
        bool,
        typer.Option(
            "--existing-contacts",
            "--existing",
            help="The file lists existing customers or contacts, not new leads: "
            "no lead follow-up, pipeline stage or lead count for them.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Where to write rejected rows (default: beside the file)."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Import leads from a CSV, JSON Lines or vCard export (or - for stdin).

    Example: cxm leads import ~/Downloads/contacts.csv --tag spring-promo
    """
    from cxm_cli.importing import ImportOptions, import_file

    s = state(ctx)
    options = ImportOptions(
        format=format,
        input_format=input_format,
        encoding=encoding,
        delimiter=delimiter,
        region=region,
        date_format=date_format,
        mapping=list(mapping or []),
        source=source,
        tags=list(tag or []),
        on_conflict=on_conflict,
        existing=existing_contacts,
        dry_run=dry_run,
        rejects_path=rejects,
    )
    with _progress(file) as progress:
        options.progress = progress
        summary = import_file(s.workspace, s.db, file, clock=s.clock, options=options)

    if as_json:
        print_json(summary.as_dict())
    else:
        rows = [{"outcome": k, "rows": v} for k, v in summary.counts().items()]
        emit(rows, as_json=False, columns=["outcome", "rows"], title=_title(summary))
    _report(summary)


def _title(summary) -> str:
    prefix = "dry run: " if summary.dry_run else f"batch {summary.batch_id}: "
    return f"{prefix}{summary.file} ({summary.format})"


def _report(summary) -> None:
    for note in summary.notes:
        warn(note)
    shown = summary.warning_samples[:WARNINGS_SHOWN]
    for item in shown:
        warn(f"row {item['row']} {item['column']}: {item['warning']}")
    if summary.warnings > len(shown):
        more = summary.warnings - len(shown)
        kept = len(summary.warning_samples)
        where = (
            "see --json"
            if kept == summary.warnings
            else f"--json lists the first {kept} of all {summary.warnings}"
        )
        warn(f"{more} more warning{'' if more == 1 else 's'} ({where})")
    if summary.rejected and summary.rejects_path:
        say(f"{_rows(summary.rejected)} rejected, written to {summary.rejects_path}")
    elif summary.rejected:
        say(f"{_rows(summary.rejected)} would be rejected")
    say(_enrolled_line(summary))
    if summary.dry_run:
        say("dry run: nothing was changed")
    elif summary.batch_id is not None:
        say(f"undo with: cxm leads undo {summary.batch_id}")


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _enrolled_line(summary) -> str:
    """Who this import starts automatic follow-ups for, said every time."""
    count = summary.enrolled
    if summary.dry_run:
        verb = "would be"
    else:
        verb = "was" if count == 1 else "were"
    if not count:
        return f"no contacts {verb} enrolled in follow-up sequences"
    people = "1 contact" if count == 1 else f"{count} contacts"
    each = ", ".join(
        f"{sequence} {count}"
        for sequence, count in summary.enrolled_by_sequence.items()
    )
    return f"{people} {verb} enrolled in follow-up sequences ({each})"


@contextlib.contextmanager
def _progress(file: str):
    """A progress bar on stderr, only on a terminal and for large files."""
    size = 0
    if file != "-":
        with contextlib.suppress(OSError):
            size = Path(file).stat().st_size
    if not stdout_is_terminal() or size < PROGRESS_MIN_BYTES:
        yield None
        return

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cxm_cli.commands._common import stderr_console

    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=size, rows=0)

        def update(done: int, total: int, rows: int) -> None:
            bar.update(task, completed=done, total=total or size, rows=rows)

        yield update


@leads_app.command("formats")
def formats_command(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """List the export layouts cxm recognises (for --format).

    Example: cxm leads formats
    """
    from cxm_cli.importing.formats import layout_rows

    emit(layout_rows(), as_json=as_json, columns=["name", "title", "events"])


@leads_app.command("batches")
def batches_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many recent batches.")] = 50,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List import batches, newest first.

    Example: cxm leads batches --limit 5
    """
    from cxm_cli.importing.batches import list_batches

    rows = list_batches(state(ctx).db, limit=limit)
    emit(
        rows,
        as_json=as_json,
        columns=[
            "id",
            "file",
            "format",
            "status",
            "created",
            "updated",
            "unchanged",
            "rejected",
            "started_at",
        ],
    )


@leads_app.command("undo")
def undo_command(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id (see: cxm leads batches).")],
    keep_blocked: Annotated[
        bool,
        typer.Option(
            help="Undo what nothing depends on; keep and list the rest "
            "(the batch becomes 'partly undone')."
        ),
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Undo an import batch: remove its new contacts, revert its changes.

    Example: cxm leads undo 3
    """
    from cxm_cli.importing.batches import undo_batch

    s = state(ctx)
    result = undo_batch(s.db, batch, clock=s.clock, keep_blocked=keep_blocked)
    data = {
        "batch_id": result.batch_id,
        "status": result.status,
        "removed_contacts": result.removed_contacts,
        "reverted_contacts": result.reverted_contacts,
        "kept": result.kept,
    }
    if as_json:
        print_json(data)
        return
    emit({k: v for k, v in data.items() if k != "kept"}, as_json=False)
    for item in result.kept:
        warn(f"kept contact {item['contact_id']}: {item['reason']}")
