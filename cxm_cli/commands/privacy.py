"""``cxm contacts show | export-data | erase``: one person, their data, erasure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn
from cxm_cli.commands.contacts import contacts_app
from cxm_cli.errors import InputError
from cxm_cli.outfiles import check_writable, write_text_file


def register(app: typer.Typer) -> None:
    contacts_app.command("show")(show)
    contacts_app.command("export-data")(export_data)
    contacts_app.command("erase")(erase)


def show(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Summarise a person on one screen: addresses, consent, activity, stage.

    Example: cxm contacts show maria@example.com
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.privacy import contact_summary

    s = state(ctx)
    person = resolve_contact(s.workspace, s.db, contact)
    summary = contact_summary(s.db, person["id"])
    if as_json:
        print_json(summary)
        return
    emit(_flatten(summary), as_json=False, title=f"contact {summary['id']}")


def _flatten(summary: dict) -> dict:
    """Nested parts as short readable strings for the table view."""
    flat = dict(summary)
    flat["emails"] = ", ".join(
        e["email"] + ("" if e["status"] == "ok" else f" ({e['status']})")
        for e in summary["emails"]
    )
    flat["phones"] = ", ".join(
        p["phone"]
        + (f" x{p['extension']}" if p.get("extension") else "")
        + (f" ({p['kind']})" if p["kind"] else "")
        for p in summary["phones"]
    )
    flat["consent"] = (
        ", ".join(
            f"{channel}: {info['status']}"
            for channel, info in summary["consent"].items()
        )
        or "no opt-out recorded"
    )
    messages = summary["messages"]
    flat["messages"] = f"{messages['sent']} sent, {messages['received']} received" + (
        f", last reply {messages['last_received_at']}"
        if messages["last_received_at"]
        else ""
    )
    if "stages" in summary:
        flat["stages"] = ", ".join(
            f"{row.get('pipeline')}: {row.get('stage')}" for row in summary["stages"]
        )
    flat["custom"] = ", ".join(f"{k}={v}" for k, v in summary["custom"].items())
    return flat


def export_data(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout."),
    ] = None,
) -> None:
    """Write everything held about a person as JSON (a data access request).

    Example: cxm contacts export-data maria@example.com -o maria.json
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.privacy import export_data as export

    s = state(ctx)
    if output is not None:
        check_writable(output, "--output", s.workspace.root)
    person = resolve_contact(s.workspace, s.db, contact)
    data = export(s.workspace, s.db, person["id"], clock=s.clock)
    if output is None:
        print_json(data)
        return
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    write_text_file(output, text + "\n", "--output", s.workspace.root)
    say(f"wrote everything held about contact {person['id']} to {output}")


def erase(
    ctx: typer.Context,
    contact: Annotated[str, typer.Argument(help="Contact id, email or phone.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Erase a person for good, keeping only a hash so they are never messaged.

    Example: cxm contacts erase maria@example.com --yes
    """
    from cxm_cli.inbound import resolve_contact
    from cxm_cli.privacy import erase_contact
    from cxm_cli.timeline import contact_name

    s = state(ctx)
    person = resolve_contact(s.workspace, s.db, contact)
    if not yes:
        if not typer.get_text_stream("stdin").isatty():
            raise InputError("erasing needs --yes when not run at a terminal")
        typer.confirm(
            f"Erase {contact_name(person)} (#{person['id']}) and everything about "
            "them? This cannot be undone",
            abort=True,
            err=True,
        )
    result = erase_contact(s.workspace, s.db, person["id"], clock=s.clock)
    for note in result.notes:
        warn(note)
    if as_json:
        print_json(result.as_dict())
        return
    say(
        f"erased contact {person['id']}: {result.rows_deleted} rows, "
        f"{result.files_deleted} outbox files, {result.outbox_lines_removed} "
        f"outbox text lines, {result.values_scrubbed} mentions "
        f"scrubbed; {result.suppressed} addresses kept only as hashes"
    )
