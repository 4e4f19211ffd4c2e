"""``cxm audit``: where a business loses people, from its timeline or raw exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import (
    JSON_OPTION,
    print_json,
    say,
    state,
    stdout_console,
    stdout_is_terminal,
    warn,
)
from cxm_cli.errors import InputError
from cxm_cli.outfiles import check_writable, write_text_file

OUT_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
}
WARNINGS_SHOWN = 20


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)


def _files(help_text: str):
    return typer.Option(help=help_text, show_default=False, metavar="FILE")


def audit(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Start of the period: 2026-01-01, a date-time, or 90d ago."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="End of the period, that day included (default: now)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write the report to FILE (.md, .html, .json)."
        ),
    ] = None,
    leads: Annotated[
        list[Path] | None, _files("Leads export to audit instead of the workspace.")
    ] = None,
    messages: Annotated[
        list[Path] | None, _files("Messages CSV: contact, direction, channel, ...")
    ] = None,
    appointments: Annotated[
        list[Path] | None, _files("Appointments CSV: contact, start, status.")
    ] = None,
    invoices: Annotated[
        list[Path] | None, _files("Invoices CSV: contact, amount, paid date.")
    ] = None,
    reviews: Annotated[
        list[Path] | None, _files("Public reviews export (as cxm reviews import).")
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD for the leads files (repeatable)."),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="Force the leads layout.")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Encoding of the leads files.")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="Delimiter of the leads files.")
    ] = None,
    date_format: Annotated[
        str | None, typer.Option(help="MDY, DMY, YMD or a pattern, for leads files.")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(help="Phone region for numbers without a country code."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Source recorded on leads without one.")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            help="Business time zone (default: the workspace's; UTC for exports)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Business name on a report of exports.")
    ] = None,
    lapsed_days: Annotated[
        int | None, typer.Option(help="Days without a visit before a customer lapses.")
    ] = None,
    reminder_hours: Annotated[
        int | None, typer.Option(help="Hours before an appointment a reminder counts.")
    ] = None,
    top: Annotated[
        int | None, typer.Option(help="How many findings to rank (default 5).")
    ] = None,
    keep_workspace: Annotated[
        Path | None,
        typer.Option(help="Import the exports into this new workspace and keep it."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Audit speed to lead, follow-up, funnel, appointments, reviews and retention.

    Example: cxm audit --since 2026-01-01 --until 2026-03-31 --out audit.html
    """
    from cxm_cli.audit.sources import (
        AuditRequest,
        ExportFiles,
        audit_exports,
        audit_workspace,
    )

    kind = _out_kind(out)
    if out is not None:
        check_writable(out)
    s = state(ctx)
    request = AuditRequest(
        since=since,
        until=until,
        timezone=timezone,
        lapsed_days=lapsed_days,
        reminder_hours=reminder_hours,
        top=top,
    )
    files = ExportFiles(
        leads=list(leads or []),
        messages=list(messages or []),
        appointments=list(appointments or []),
        invoices=list(invoices or []),
        reviews=list(reviews or []),
        lead_format=format,
        encoding=encoding,
        delimiter=delimiter,
        date_format=date_format,
        mapping=list(mapping or []),
        source=source,
        region=region,
    )
    # An audit of exports may run outside any workspace; the check still
    # finds one around the output path.
    workspace_root = None if files.given() else s.workspace.root
    if out is not None:
        check_writable(out, workspace_root=workspace_root)
    if files.given():
        report, warnings = audit_exports(
            files, request, clock=s.clock, business_name=name, keep=keep_workspace
        )
    else:
        if keep_workspace is not None:
            raise InputError("--keep-workspace only applies to an audit of exports")
        report, warnings = (
            audit_workspace(s.workspace, s.db, request, clock=s.clock),
            [],
        )

    for message in warnings[:WARNINGS_SHOWN]:
        warn(message)
    if len(warnings) > WARNINGS_SHOWN:
        warn(f"{len(warnings) - WARNINGS_SHOWN} more warnings (see --json)")
    _output(report, out, kind, as_json, workspace_root)


def _out_kind(out: Path | None) -> str | None:
    if out is None:
        return None
    kind = OUT_KINDS.get(out.suffix.lower())
    if kind is None:
        raise InputError(
            f"--out {out}: cannot tell the format from {out.suffix or 'no suffix'!r}",
            hint="name the file .md, .html or .json",
        )
    return kind


def _output(
    report: dict,
    out: Path | None,
    kind: str | None,
    as_json: bool,
    workspace_root: Path | None = None,
) -> None:
    from cxm_cli.audit.render_html import render_html
    from cxm_cli.audit.render_md import render_markdown
    from cxm_cli.audit.render_terminal import print_audit

    if out is not None:
        if kind == "html":
            text = render_html(report)
        elif kind == "markdown":
            text = render_markdown(report)
        else:
            import json

            text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        write_text_file(out, text, workspace_root=workspace_root)
        say(f"wrote {out} ({len(report['findings'])} findings)")

    if as_json:
        print_json(report)
    elif out is None and stdout_is_terminal():
        print_audit(report, stdout_console())
    elif out is None:
        typer.echo(render_markdown(report), nl=False)
