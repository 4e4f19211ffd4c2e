"""``cxm run``, ``cxm due``, ``cxm status``: the runner and a view of its queue."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from typing import Annotated

import typer

from cxm_cli.commands._common import JSON_OPTION, emit, print_json, say, state, warn
from cxm_cli.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("due")(due_command)
    app.command("status")(status_command)


@contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM set a flag; the runner finishes the step it is on, then stops."""
    flag = {"stop": False}

    def handler(signum, frame):
        flag["stop"] = True
        say(f"stopping after the current step ({signal.Signals(signum).name})")

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:
            pass  # not the main thread (tests): no signal handling needed
    try:
        yield lambda: flag["stop"]
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _print_result(result, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(
            f"{result.outcome}\tcontact {result.contact_id}\t{result.sequence}\t"
            f"{result.step}\t{result.detail}\n"
        )
    sys.stdout.flush()


def run_command(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Do what is due now, then exit (for cron).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Render what is due now; send and change nothing."
        ),
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Also serve webhooks and POST /events (cxm serve)."
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(help="Seconds between full passes (new events wake it at once)."),
    ] = 30.0,
    concurrent: Annotated[
        bool,
        typer.Option(
            "--concurrent",
            help="Run even if another runner holds the lease (extra worker).",
        ),
    ] = False,
    host: Annotated[str | None, typer.Option(help="--serve address.")] = None,
    port: Annotated[int | None, typer.Option(help="--serve port.")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
):
    """Send due follow-ups: a daemon, or once for cron (exit 1 if a step failed).

    Example: cxm run --once
    """
    from cxm_cli.runner import run_forever, run_once

    app_state = state(ctx)
    workspace, db, clock = app_state.workspace, app_state.db, app_state.clock
    _warn_about_sequences(workspace)

    if dry_run:
        _dry_run(workspace, db, clock, as_json=as_json)
        return

    if once:
        with _stop_on_signals() as stop:
            report = run_once(
                workspace,
                db,
                clock,
                concurrent=concurrent,
                stop=stop,
                on_result=None
                if as_json
                else lambda r: _print_result(r, as_json=False),
            )
        if report.busy_with is not None:
            holder = report.busy_with
            say(
                f"another runner holds the lease ({holder['mode']}, "
                f"pid {holder['pid']} "
                f"on {holder['host']}, until {holder['lease_until']}); exiting"
            )
            if as_json:
                print_json({"busy": True, "holder": holder, "results": []})
            return
        if as_json:
            print_json(
                {
                    "busy": False,
                    "summary": report.summary(),
                    "results": [r.as_dict() for r in report.results],
                }
            )
        _say_summary(report)
        if report.failed:
            raise typer.Exit(1)
        return

    server = _start_server(workspace, clock, host, port) if serve else None
    jobs = _mailbox_job(workspace, db, clock)
    say(f"cxm runner started on {workspace.root} (Ctrl-C stops after the current step)")
    try:
        with _stop_on_signals() as stop:
            report = run_forever(
                workspace,
                db,
                clock,
                interval=interval,
                stop=stop,
                on_result=lambda r: _print_result(r, as_json=as_json),
                on_standby=lambda holder: say(
                    f"standing by: {holder['mode']} runner pid {holder['pid']} holds "
                    "the lease; taking over when it stops"
                ),
                extra_jobs=jobs,
                concurrent=concurrent,
            )
    finally:
        if server is not None:
            server.stop()
    _say_summary(report)


def _say_summary(report) -> None:
    summary = report.summary()
    if not summary:
        say("nothing was due")
        return
    say(", ".join(f"{count} {outcome}" for outcome, count in sorted(summary.items())))


def _warn_about_sequences(workspace) -> None:
    from cxm_cli.sequences import load_sequences

    problems = load_sequences(workspace).invalid
    for file_name, count in sorted(problems.items()):
        warn(
            f"sequences/{file_name} has {count} problem(s) and enrols nobody; "
            "see `cxm sequences validate`"
        )


def _start_server(workspace, clock, host, port):
    try:
        from cxm_cli.server import serve_in_thread
    except ImportError as exc:
        raise InputError("--serve needs the web service (cxm_cli.server)") from exc
    handle = serve_in_thread(
        workspace,
        host or str(workspace.setting("server.host", "127.0.0.1")),
        int(port if port is not None else workspace.setting("server.port", 8025)),
        clock=clock,
    )
    say(f"serving on {handle.url}")
    return handle


def _mailbox_job(workspace, db, clock):
    """Poll the IMAP mailbox on its own schedule when one is configured."""
    try:
        from cxm_cli.imap import imap_settings, poll_mailbox
    except ImportError:
        return []
    if imap_settings(workspace) is None:
        return []
    minutes = float(workspace.setting("imap.poll_minutes", 5) or 5)

    def poll() -> None:
        poll_mailbox(workspace, db, clock)

    say(f"polling the mailbox every {minutes:g} min")
    return [(minutes * 60, poll)]


def _dry_run(workspace, db, clock, *, as_json: bool) -> None:
    from cxm_cli.preview import preview_due

    rows = preview_due(workspace, db, clock, render=True, project=False)
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("nothing is due now")
        return
    for row in rows:
        sys.stdout.write(
            f"--- contact {row['contact_id']} {row['contact']} | {row['sequence']} "
            f"step {row['step']} | {row['local_time']}\n"
        )
        if row.get("would"):
            sys.stdout.write(f"would {row['would']}\n")
        if row.get("to"):
            sys.stdout.write(f"to: {row['to']}\n")
        if row.get("subject"):
            sys.stdout.write(f"subject: {row['subject']}\n")
        if row.get("body"):
            sys.stdout.write(row["body"].rstrip("\n") + "\n")
        sys.stdout.write(f"why: {row['why']}\n")
    say(f"{len(rows)} step(s) due; dry run: nothing sent or changed")


def due_command(
    ctx: typer.Context,
    within: Annotated[
        str, typer.Option(help="How far ahead to look, e.g. 2h, 3d.")
    ] = "1d",
    contact: Annotated[
        str | None, typer.Option("--contact", "-c", help="Contact id, email or phone.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
):
    """Preview what will go out, when in the contact's local time, and why.

    Example: cxm due --within 3d --contact ana@example.com
    """
    from cxm_cli.contacts import find_contact
    from cxm_cli.preview import preview_due
    from cxm_cli.waits import parse_timedelta

    app_state = state(ctx)
    try:
        horizon = parse_timedelta(within)
    except ValueError as exc:
        raise InputError(f"--within: {exc}") from exc
    contact_id = None
    if contact:
        contact_id = find_contact(
            app_state.db, contact, region=app_state.workspace.phone_region
        )["id"]
    rows = preview_due(
        app_state.workspace,
        app_state.db,
        app_state.clock,
        within=horizon,
        contact_id=contact_id,
    )
    emit(
        rows,
        as_json=as_json,
        columns=["local_time", "contact_id", "contact", "sequence", "step", "why"],
        headers=["when (local)", "id", "contact", "sequence", "step", "why"],
    )


def status_command(ctx: typer.Context, as_json: Annotated[bool, JSON_OPTION] = False):
    """Show queue depth, failures, enrollments, the last run and the runner lease.

    Example: cxm status --json
    """
    from cxm_cli.preview import engine_status

    app_state = state(ctx)
    status = engine_status(app_state.workspace, app_state.db, app_state.clock)
    if as_json:
        print_json(status)
        return
    queue = status["queue"]
    lease = status["runner_lease"]
    last = status["last_run"]
    rows = {
        "due now": queue.get("due_now", 0),
        "scheduled later": queue.get("scheduled", 0),
        "running (claimed)": queue.get("claimed", 0),
        "claims past their lease": queue.get("lease_expired", 0),
        "failed steps (all time)": queue.get("failed", 0),
        "failed steps (last 24h)": status["failed_last_24h"],
        "active enrollments": status["enrollments"]["active"],
        "last run": (
            f"{last['mode']} {last['started_at']} -> "
            f"{last['finished_at'] or _unfinished(last)}"
            f" ({last['steps_done']} done, {last['steps_failed']} failed)"
            if last
            else "never"
        ),
        "runner lease": (
            f"{lease['mode']} pid {lease['pid']} on {lease['host']} until "
            f"{lease['lease_until']} ({'alive' if lease['alive'] else 'stale'})"
            if lease
            else "free"
        ),
        "sequences": ", ".join(status["sequences"]["active"]) or "none",
        "sequence files with problems": ", ".join(status["sequences"]["with_problems"])
        or "none",
    }
    unsent_tasks = status["sequences"]["tasks_without_staff"]
    if unsent_tasks:
        rows["staff tasks with no address"] = (
            f"{', '.join(unsent_tasks)}: set [staff] email in cxm.toml"
        )
    emit(rows, as_json=False)


def _unfinished(run: dict) -> str:
    if run.get("state") == "stopped":
        return "stopped without finishing (killed?)"
    return "running"
