"""The runner: works through due steps, once (cron) or for ever (daemon).

Two kinds of lock keep it safe, and they do different jobs:

- **Step claims** (:mod:`cxm_cli.queue`) make double sends impossible: a step
  is claimed with a lease in one write transaction before it runs, so any
  number of runners may work side by side and each step runs once.
- **The runner lease** (a row in ``runner_leases``) only decides who runs
  *unattended*. A daemon (``cxm run``) holds it while it runs and renews it;
  a ``cxm run --once`` from cron that finds it held by a live runner exits at
  once (exit code 0, a note on stderr) instead of piling up behind it. A
  lease whose holder died (its process is gone, or it stopped renewing) is
  taken over. ``--concurrent`` skips the lease for extra workers.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import queue
from cxm_cli.batch_send import SendBatch
from cxm_cli.dispatch import QUEUED, RunSettings, StepResult, process_step
from cxm_cli.rendering import pinned_templates
from cxm_cli.sequences import pinned_sequences
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

LEASE_NAME = "runner"
WAKE_SECONDS = 0.1  # how often the daemon looks for new events


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class RunReport:
    runner_id: str
    results: list[StepResult] = field(default_factory=list)
    busy_with: dict[str, Any] | None = None  # the lease holder when we stood down

    def count(self, outcome: str) -> int:
        return sum(1 for result in self.results if result.outcome == outcome)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return counts


class RunnerBusy(Exception):
    """Another live runner holds the runner lease."""

    def __init__(self, holder: dict[str, Any]):
        super().__init__(f"runner lease held by {holder.get('holder')}")
        self.holder = holder


# ---------------------------------------------------------------- lease


def acquire_lease(db, holder: str, mode: str, *, clock, seconds: float) -> dict | None:
    """Take the runner lease; returns the current holder's row if it is taken."""
    now = clock.now()
    with write_transaction(db):
        row = fetch_one(db, "SELECT * FROM runner_leases WHERE name = ?", [LEASE_NAME])
        if row is not None and row["holder"] != holder and _lease_alive(row, now):
            return row
        db.execute(
            """
            INSERT INTO runner_leases (name, holder, mode, pid, host, acquired_at,
                lease_until)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                mode = excluded.mode, pid = excluded.pid, host = excluded.host,
                acquired_at = excluded.acquired_at, lease_until = excluded.lease_until
            """,
            [
                LEASE_NAME,
                holder,
                mode,
                os.getpid(),
                socket.gethostname(),
                clocks.iso(now),
                clocks.iso(now + timedelta(seconds=seconds)),
            ],
        )
    return None


def _lease_alive(row: dict, now) -> bool:
    if clocks.parse(row["lease_until"]) <= now:
        return False
    if row["host"] == socket.gethostname() and row["pid"]:
        return _pid_alive(int(row["pid"]))  # killed without releasing it?
    return True


def renew_lease(db, holder: str, *, clock, seconds: float) -> bool:
    until = clocks.iso(clock.now() + timedelta(seconds=seconds))
    cursor = db.execute(
        "UPDATE runner_leases SET lease_until = ? WHERE name = ? AND holder = ?",
        [until, LEASE_NAME, holder],
    )
    return cursor.rowcount == 1


def release_lease(db, holder: str) -> None:
    db.execute(
        "DELETE FROM runner_leases WHERE name = ? AND holder = ?", [LEASE_NAME, holder]
    )


def lease_status(db, *, clock) -> dict[str, Any] | None:
    row = fetch_one(db, "SELECT * FROM runner_leases WHERE name = ?", [LEASE_NAME])
    if row is None:
        return None
    row["alive"] = _lease_alive(row, clock.now())
    return row


def recover_dead_claims(db) -> int:
    """Free the claims of runners on this machine whose process is gone.

    A killed runner's claims would otherwise wait out their lease; runner ids
    start with host and pid, so a dead local claimer is recognised at once.
    """
    host = socket.gethostname()
    freed = 0
    claimers = [
        row[0]
        for row in db.execute(
            "SELECT DISTINCT claimed_by FROM due_steps WHERE status = 'claimed'"
        ).fetchall()
    ]
    for claimer in claimers:
        claimer_host, _, rest = str(claimer).partition(":")
        pid_text = rest.partition(":")[0]
        if claimer_host != host or not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with write_transaction(db):
            cursor = db.execute(
                "UPDATE due_steps SET status = 'pending', claimed_by = NULL, "
                "lease_until = NULL WHERE status = 'claimed' AND claimed_by = ?",
                [claimer],
            )
        freed += cursor.rowcount
    if freed:
        log.warning("took back %d steps claimed by runners that died", freed)
    return freed


def runner_alive(runner_id: str) -> bool:
    """Whether the runner with this id may still be running: its process is
    alive, or it runs on another machine (which cannot be asked)."""
    host, _, rest = str(runner_id).partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    return _pid_alive(int(pid_text))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- passes


def run_pass(
    workspace,
    db,
    clock,
    runner_id: str,
    settings: RunSettings,
    *,
    stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[StepResult], None] | None = None,
    report: RunReport | None = None,
) -> RunReport:
    """Claim and run due steps until none is due (or ``stop()`` says so)."""
    report = report or RunReport(runner_id)

    def claim() -> list[dict[str, Any]]:
        return queue.claim_due(
            db,
            runner_id,
            clock=clock,
            limit=settings.batch_size,
            lease_seconds=settings.step_lease_seconds,
        )

    rows = None
    while not stop():
        if rows is None:
            rows = claim()
        if not rows:
            break
        batch = SendBatch(workspace, db, clock, runner_id, settings, claim_next=claim)
        batch.read(rows)
        with pinned_sequences(workspace), pinned_templates(workspace):
            for position, row in enumerate(rows):
                if stop():
                    # Queued sends have recorded nothing yet: hand them back.
                    _unclaim(db, batch.abandon() + rows[position:], runner_id)
                    return report
                result = process_step(
                    workspace, db, clock, row, runner_id, settings, batch=batch
                )
                if result.outcome != QUEUED:
                    batch.touched(result.contact_id)
                    _report(report, result, on_result)
            batch.run(lambda result: _report(report, result, on_result))
        rows = batch.next_rows
    if rows:
        # Claimed with the last batch's records, then told to stop.
        _unclaim(db, rows, runner_id)
    return report


def _report(report: RunReport, result: StepResult, on_result) -> None:
    report.results.append(result)
    if result.failed:
        log.warning(
            "step %s of contact %s failed: %s",
            result.due_step_id,
            result.contact_id,
            result.detail,
        )
    if on_result is not None:
        on_result(result)


def _unclaim(db, rows: list[dict[str, Any]], runner_id: str) -> None:
    """Hand back claimed steps we will not run (stopping), so nobody waits a lease."""
    with write_transaction(db):
        for row in rows:
            db.execute(
                "UPDATE due_steps SET status = 'pending', claimed_by = NULL, "
                "lease_until = NULL WHERE id = ? AND status = 'claimed' "
                "AND claimed_by = ?",
                [row["id"], runner_id],
            )


def run_once(
    workspace,
    db,
    clock,
    *,
    concurrent: bool = False,
    stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[StepResult], None] | None = None,
    settings: RunSettings | None = None,
) -> RunReport:
    """Do what is due now and return; stands down if another runner holds the lease."""
    settings = settings or RunSettings.from_workspace(workspace)
    runner_id = new_runner_id()
    report = RunReport(runner_id)
    if not concurrent:
        holder = acquire_lease(
            db, runner_id, "once", clock=clock, seconds=settings.runner_lease_seconds
        )
        if holder is not None:
            report.busy_with = holder
            return report
    recover_dead_claims(db)
    run_id = _start_run(db, runner_id, "once", clock)
    renewing = _renewing(db, runner_id, clock, settings, stop, concurrent)
    try:
        while True:
            run_pass(
                workspace,
                db,
                clock,
                runner_id,
                settings,
                stop=renewing,
                on_result=on_result,
                report=report,
            )
            # A runner working beside this one (--concurrent) may have died
            # meanwhile: its steps are taken back and done now, not next run.
            if stop() or not recover_dead_claims(db):
                break
        if not stop():
            housekeeping(workspace, db, clock)
    finally:
        _finish_run(db, run_id, report, clock, final=True)
        if not concurrent:
            release_lease(db, runner_id)
    return report


def housekeeping(workspace, db, clock) -> None:
    """Periodic work of other parts that has no event to hang on.

    Timed pipeline rules (no reply / no visit for N days) and queued review
    follow-ups; each is optional and a failure in one never stops the runner.
    """
    import importlib

    jobs = [
        ("cxm_cli.transitions", "check_idle_rules", lambda f: f(db, workspace, clock)),
        (
            "cxm_cli.reviews.deliveries",
            "deliver_pending",
            lambda f: f(workspace, db, clock),
        ),
    ]
    for module_name, function_name, call in jobs:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        function = getattr(module, function_name, None)
        if function is None:
            continue
        try:
            call(function)
        except Exception:  # noqa: BLE001 - another part's failure must not stop us
            log.exception("%s.%s failed", module_name, function_name)


def _renewing(db, runner_id, clock, settings, stop, concurrent):
    """A stop check that also keeps the runner lease fresh during long passes."""
    renew_every = settings.runner_lease_seconds / 3
    state = {"renewed": time.monotonic()}

    def check() -> bool:
        if not concurrent and time.monotonic() - state["renewed"] > renew_every:
            renew_lease(
                db, runner_id, clock=clock, seconds=settings.runner_lease_seconds
            )
            state["renewed"] = time.monotonic()
        return stop()

    return check


def _start_run(db, runner_id: str, mode: str, clock) -> int:
    return db.execute(
        "INSERT INTO runner_runs (runner, mode, pid, started_at, last_pass_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [runner_id, mode, os.getpid(), clocks.now_iso(clock), clocks.now_iso(clock)],
    ).lastrowid


def _finish_run(db, run_id: int, report: RunReport, clock, *, final: bool) -> None:
    deferred = report.count("deferred") + report.count("capped") + report.count("retry")
    db.execute(
        "UPDATE runner_runs SET last_pass_at = ?, finished_at = ?, steps_done = ?, "
        "steps_failed = ?, steps_deferred = ? WHERE id = ?",
        [
            clocks.now_iso(clock),
            clocks.now_iso(clock) if final else None,
            len(report.results) - report.failed - deferred,
            report.failed,
            deferred,
            run_id,
        ],
    )


# ---------------------------------------------------------------- daemon


def run_forever(
    workspace,
    db,
    clock,
    *,
    interval: float = 30.0,
    stop: Callable[[], bool] = lambda: False,
    on_result: Callable[[StepResult], None] | None = None,
    on_standby: Callable[[dict], None] | None = None,
    extra_jobs: list[tuple[float, Callable[[], None]]] | None = None,
    settings: RunSettings | None = None,
    wake_seconds: float = WAKE_SECONDS,
    concurrent: bool = False,
) -> RunReport:
    """The daemon: run due steps as they fall due, until ``stop()``.

    ``concurrent`` works beside the runner that holds the lease (an extra
    worker) instead of standing by until it stops: claims keep each step to
    one runner either way.

    New events are noticed within ``wake_seconds`` through SQLite's
    ``PRAGMA data_version`` (it changes when another connection commits), so a
    new lead's first message leaves within a second of the event, not at the
    next ``interval``. The interval pass (driven by ``schedule``) is the safety
    net; ``extra_jobs`` (seconds, function) run on their own schedules.
    """
    import schedule

    settings = settings or RunSettings.from_workspace(workspace)
    runner_id = new_runner_id()
    report = RunReport(runner_id)
    pause = max(wake_seconds, 1.0)

    def patiently(job, *, until=stop):
        return _retry_while_locked(job, clock=clock, stop=until, pause=pause)

    if not concurrent:
        patiently(
            lambda: _wait_for_lease(
                db, runner_id, clock, settings, stop, on_standby, wake_seconds
            )
        )
    if stop():
        return report

    patiently(lambda: recover_dead_claims(db))
    run_id = patiently(lambda: _start_run(db, runner_id, "daemon", clock))
    scheduler = schedule.Scheduler()
    state = {"pass": True, "version": _data_version(db), "renewed": time.monotonic()}
    state["next_due"] = queue.next_due_at(db)

    def interval_pass() -> None:
        state["pass"] = True
        recover_dead_claims(db)
        housekeeping(workspace, db, clock)

    scheduler.every(max(1.0, interval)).seconds.do(interval_pass)
    for seconds, job in extra_jobs or []:
        scheduler.every(max(1.0, seconds)).seconds.do(_guarded(job))

    def tick() -> None:
        scheduler.run_pending()
        current = _data_version(db)
        if current != state["version"]:
            state["version"] = current
            state["pass"] = True
        next_due = state["next_due"]
        if next_due is not None and clock.now() >= next_due:
            state["pass"] = True

        if state["pass"]:
            before = len(report.results)
            run_pass(
                workspace,
                db,
                clock,
                runner_id,
                settings,
                stop=stop,
                on_result=on_result,
                report=report,
            )
            state["pass"] = False
            state["next_due"] = queue.next_due_at(db)
            if len(report.results) != before:
                _finish_run(db, run_id, report, clock, final=False)

        if concurrent:
            return
        if time.monotonic() - state["renewed"] > settings.runner_lease_seconds / 3:
            if not renew_lease(
                db, runner_id, clock=clock, seconds=settings.runner_lease_seconds
            ):
                # Someone took the lease over (we stalled): claims still keep
                # us from double sends, so take it back rather than stop.
                acquire_lease(
                    db,
                    runner_id,
                    "daemon",
                    clock=clock,
                    seconds=settings.runner_lease_seconds,
                )
            state["renewed"] = time.monotonic()

    try:
        while not stop():
            patiently(tick)
            clock.sleep(wake_seconds)
    finally:
        patiently(
            lambda: _finish_run(db, run_id, report, clock, final=True),
            until=lambda: False,
        )
        patiently(lambda: release_lease(db, runner_id), until=lambda: False)
    return report


def _retry_while_locked(job, *, clock, stop, pause: float):
    """Run ``job``, waiting out another writer that holds the database.

    A large import keeps the write lock for its whole (atomic) batch, possibly
    past the busy timeout. Claims are leased and sends are recorded first, so
    retrying a pass loses nothing; dying would leave the queue unattended.
    """
    while True:
        try:
            return job()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if stop():
                raise
            log.warning("database busy; retrying in %.1fs", pause)
            clock.sleep(pause)


def _wait_for_lease(db, runner_id, clock, settings, stop, on_standby, wake_seconds):
    """Hot standby: a second daemon waits until the lease is free, then takes over."""
    told = False
    while not stop():
        holder = acquire_lease(
            db, runner_id, "daemon", clock=clock, seconds=settings.runner_lease_seconds
        )
        if holder is None:
            return
        if not told and on_standby is not None:
            on_standby(holder)
            told = True
        clock.sleep(max(wake_seconds, 1.0))


def _data_version(db) -> int:
    return db.execute("PRAGMA data_version").fetchone()[0]


def _guarded(job: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - a failed poll must not stop the daemon
            log.exception("background job %s failed", getattr(job, "__name__", job))

    return run
