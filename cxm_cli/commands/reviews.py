"""``cxm reviews ...``: ask for reviews, import them, and show what they bring."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn
from cxm_cli.errors import InputError
from cxm_cli.outfiles import check_writable, write_text_file

reviews_app = typer.Typer(
    help="Review requests (no gating), imports, the dashboard and the audit trail.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(reviews_app, name="reviews")


@reviews_app.command("request")
def request(
    ctx: typer.Context,
    contact: Annotated[
        str | None, typer.Argument(help="Contact id, email or phone.")
    ] = None,
    segment: Annotated[
        str | None, typer.Option(help="Ask every contact in this segment.")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="sms or email (default: reviews.channels).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show who would be asked; send nothing.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Ask a contact, or everyone in a segment, for a review.

    Example: cxm reviews request 42 --channel sms
    """
    from cxm_cli.reviews.commands import request_reviews

    if (contact is None) == (segment is None):
        raise InputError("name a CONTACT or a --segment (one of them)")
    if channel is not None and channel not in ("sms", "email"):
        raise InputError(f"--channel must be sms or email, not {channel!r}")
    s = state(ctx)
    outcomes = request_reviews(
        s.workspace,
        s.db,
        s.clock,
        contact=contact,
        segment=segment,
        channel=channel,
        dry_run=dry_run,
    )
    rows = [outcome.as_dict() for outcome in outcomes]
    emit(
        rows,
        as_json=as_json,
        columns=["contact_id", "status", "channel", "platforms", "reason"],
    )
    asked = sum(1 for o in outcomes if o.status in ("sent", "would_send"))
    say(f"{asked} of {len(outcomes)} asked" + (" (dry run)" if dry_run else ""))
    if contact is not None and outcomes and outcomes[0].status == "failed":
        raise typer.Exit(1)


@reviews_app.command("send-due")
def send_due(
    ctx: typer.Context,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Send guarded requests whose delay has passed, and queued thank-yous.

    Example: cxm reviews send-due
    """
    from cxm_cli.reviews.deliveries import deliver_pending
    from cxm_cli.reviews.requests import send_due_requests

    s = state(ctx)
    outcomes = send_due_requests(s.workspace, s.db, s.clock)
    delivered = deliver_pending(s.workspace, s.db, s.clock)
    data = {
        "requests": [outcome.as_dict() for outcome in outcomes],
        "deliveries": [
            {"id": d.id, "kind": d.kind, "status": d.status, "error": d.error}
            for d in delivered
        ],
    }
    if as_json:
        print_json(data)
        return
    emit(
        data["requests"],
        as_json=False,
        columns=["contact_id", "request_id", "status", "channel", "reason"],
    )
    say(f"{len(outcomes)} guarded requests handled, {len(delivered)} deliveries")


@reviews_app.command("import")
def import_file(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="CSV or Google Business Profile JSON.")],
    platform: Annotated[
        str | None,
        typer.Option(help="Platform of every row, when the file has no such column."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="The file's encoding, if detection is wrong.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and match; store nothing.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Import public reviews from a platform export (matched to contacts).

    Example: cxm reviews import google-reviews.json
    """
    from cxm_cli.reviews.importing import import_reviews

    s = state(ctx)
    summary = import_reviews(
        s.workspace,
        s.db,
        s.clock,
        file,
        platform=platform,
        encoding=encoding,
        dry_run=dry_run,
    )
    emit(summary.as_dict(), as_json=as_json)
    for note in summary.unmatched_notes[:10]:
        say(f"kept unmatched: {note}")


@reviews_app.command("report")
def report(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only from this date (YYYY-MM-DD).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write an HTML report with charts.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show requests, answer rate, ratings by month and platform, and the trend.

    Example: cxm reviews report --out reviews.html
    """
    from cxm_cli.reviews.report import build_report, render_html, terminal_chart

    s = state(ctx)
    if out is not None:
        check_writable(out, workspace_root=s.workspace.root)
    data = build_report(s.workspace, s.db, s.clock, since=_since(since))
    if out is not None:
        write_text_file(out, render_html(data), workspace_root=s.workspace.root)
        say(f"wrote {out}")
    if as_json:
        print_json(data)
    elif out is None:
        sys.stdout.write(terminal_chart(data))


@reviews_app.command("audit-trail")
def audit_trail(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="Only from this date (YYYY-MM-DD).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the trail as CSV.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Export who was asked, when, how, and what they were offered.

    Example: cxm reviews audit-trail --out review-trail.csv
    """
    from cxm_cli.reviews.trail import trail_csv, trail_rows, trail_summary

    s = state(ctx)
    if out is not None:
        check_writable(out, workspace_root=s.workspace.root)
    rows = trail_rows(s.db, since=_since(since))
    summary = trail_summary(rows)
    if out is not None:
        write_text_file(out, trail_csv(rows), workspace_root=s.workspace.root)
        say(f"wrote {len(rows)} rows to {out}")
    if as_json:
        print_json({"summary": summary, "requests": rows})
        return
    if out is None:
        emit(
            rows,
            as_json=False,
            columns=[
                "request_id",
                "contact",
                "status",
                "asked_at",
                "channel",
                "offered_public_links",
                "rating",
                "public_links_after_answer",
                "reason_not_sent",
            ],
        )
    say(
        f"{summary['asked']} asked, {summary['asked_without_public_links']} without "
        f"public links; {summary['answered']} answered, "
        f"{summary['public_links_offered_after_answer']} offered the public links "
        f"after answering; decisions by score: {summary['decisions_by_score']}"
    )
    if summary["answers_still_waiting_for_links"]:
        warn(
            f"{summary['answers_still_waiting_for_links']} answers still wait for "
            "their thank-you text: run `cxm reviews send-due`"
        )


@reviews_app.command("platforms")
def platforms(
    ctx: typer.Context,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the review platforms, the links they build, and any refused.

    Example: cxm reviews platforms
    """
    from cxm_cli.reviews.commands import platform_rows

    s = state(ctx)
    rows, notes, rotation = platform_rows(s.workspace)
    emit(rows, as_json=as_json, columns=["key", "name", "kind", "status", "url"])
    say(f"rotation: {rotation}")
    for note in notes:
        warn(note)


def _since(text: str | None) -> str | None:
    if text is None:
        return None
    from cxm_cli import clock as clocks

    try:
        return clocks.iso(clocks.parse(text))
    except ValueError:
        raise InputError(f"--since {text!r} is not a date (use YYYY-MM-DD)") from None
