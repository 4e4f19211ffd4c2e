"""``cxm contacts list`` and ``cxm contacts segments``: filtered listings."""

from __future__ import annotations

from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, state, warn
from cxm_cli.commands.contacts import contacts_app
from cxm_cli.segments import contacts_in_segment, list_contacts, segment_config


def register(app: typer.Typer) -> None:
    contacts_app.command("list")(list_command)
    contacts_app.command("segments")(segments_command)


def list_command(
    ctx: typer.Context,
    segment: Annotated[
        str | None, typer.Option("--segment", "-s", help="Only this segment.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="Only contacts with this tag (repeatable)."),
    ] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="Only contacts in this stage.")
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", "-p", help="Pipeline for --stage and the column."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many contacts.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List contacts, filtered by segment, tags and pipeline stage.

    Example: cxm contacts list --segment lapsed-6-months --tag vip
    """
    st = state(ctx)
    for problem in segment_config(st.workspace).problems:
        warn(str(problem))
    rows = list_contacts(
        st.db,
        st.workspace,
        segment=segment,
        tags=tag,
        stage=stage,
        pipeline=pipeline,
        limit=limit,
        clock=st.clock,
    )
    emit(
        rows,
        as_json=as_json,
        columns=["id", "name", "email", "phone", "source", "stage", "tags"],
    )


def segments_command(
    ctx: typer.Context,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the segments defined in cxm.toml with how many contacts are in each.

    Example: cxm contacts segments
    """
    st = state(ctx)
    config = segment_config(st.workspace)
    for problem in config.problems:
        warn(str(problem))
    rows = [
        {
            "segment": name,
            "contacts": len(
                contacts_in_segment(st.db, st.workspace, name, clock=st.clock)
            ),
            "description": segment.description,
        }
        for name, segment in sorted(config.segments.items())
    ]
    emit(rows, as_json=as_json, columns=["segment", "contacts", "description"])
