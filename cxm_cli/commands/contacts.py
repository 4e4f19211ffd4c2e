"""``cxm contacts ...``: looking at, merging, exporting and erasing people.

Other command modules add their own ``contacts`` commands to ``contacts_app``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state
from cxm_cli.outfiles import open_for_writing

contacts_app = typer.Typer(
    help="Look at, merge, export and erase contacts.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(contacts_app, name="contacts")


@contacts_app.command("duplicates")
def duplicates_command(
    ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False
) -> None:
    """List contacts that are probably the same person but were not merged.

    Example: cxm contacts duplicates
    """
    from cxm_cli.importing.duplicates import find_duplicates

    rows = find_duplicates(state(ctx).db)
    emit(
        rows,
        as_json=as_json,
        columns=["contact_a", "name_a", "contact_b", "name_b", "reason"],
    )
    if not as_json:
        say(f"{len(rows)} likely duplicates; merge one with: cxm contacts merge A B")


@contacts_app.command("merge")
def merge_command(
    ctx: typer.Context,
    keep: Annotated[str, typer.Argument(help="Contact to keep (id, email or phone).")],
    other: Annotated[str, typer.Argument(help="Contact merged into it, then removed.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Merge contact B into contact A, keeping every event and identifier.

    Example: cxm contacts merge 12 31
    """
    from cxm_cli.contacts import find_contact
    from cxm_cli.importing.duplicates import merge_contacts

    s = state(ctx)
    region = s.workspace.phone_region
    keep_id = find_contact(s.db, keep, region=region)["id"]
    other_id = find_contact(s.db, other, region=region)["id"]
    merged = merge_contacts(s.db, keep_id, other_id, clock=s.clock)
    shown = {
        k: merged[k]
        for k in ("id", "display_name", "email", "phone", "company")
        if k in merged
    }
    if as_json:
        print_json(merged)
    else:
        emit(shown, as_json=False)
        say(f"merged contact {other_id} into {keep_id}")


@contacts_app.command("export")
def export_command(
    ctx: typer.Context,
    format: Annotated[
        str, typer.Option("--format", "-f", help="csv or jsonl.")
    ] = "csv",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default: stdout)."),
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Only contacts with this tag.")
    ] = None,
) -> None:
    """Export contacts to CSV or JSON Lines (re-importable, spreadsheet-safe).

    Example: cxm contacts export --format csv -o contacts.csv
    """
    from cxm_cli.importing.export import export_contacts

    s = state(ctx)
    if output is None:
        count = export_contacts(s.db, sys.stdout, format=format, tag=tag)
    else:
        with open_for_writing(output, "--output", s.workspace.root) as handle:
            count = export_contacts(s.db, handle, format=format, tag=tag)
    say(f"exported {count} contacts" + (f" to {output}" if output else ""))
