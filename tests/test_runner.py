"""The runner: failures, retries, leases, crash recovery and the CLI around it."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cxm_cli import clock as clocks
from cxm_cli.channels.outbox import read_texts
from cxm_cli.dispatch import RunSettings
from cxm_cli.runner import acquire_lease, run_once
from cxm_cli.steps import step_kind
from cxm_cli.store import write_transaction
from tests.support.engine import (
    emit,
    midday_zone,
    only_sequences,
    outbound,
    run,
    timeline,
)
from tests.support.fixtures import make_contact, update_settings

ONE_TEXT = """
trigger: lead.created
steps:
  - send: sms
    template: {template}
  - send: email
    template: new-lead-email
"""


@pytest.fixture
def missing_variable_template(workspace):
    folder = workspace.templates_dir
    folder.mkdir(exist_ok=True)
    (folder / "needs-company.j2").write_text(
        "---\nchannels: [sms]\n---\nHi, about {{ company }}: call us.\n",
        encoding="utf-8",
    )
    return "needs-company"


def test_run_once_prints_each_step_and_exits_zero(cli, db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    result = cli("run", "--once")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["sent", "sent"]
    assert "2 sent" in result.stderr
    [text] = read_texts(workspace, contact_id)
    assert text["kind"] == "text" and text["body"].startswith("Hi Ana")
    assert len(list(workspace.outbox_dir.rglob("*.eml"))) == 1


def test_missing_template_variable_fails_only_that_contact(
    cli, db, workspace, clock, missing_variable_template
):
    only_sequences(workspace, hello=ONE_TEXT.format(template=missing_variable_template))
    with_company = make_contact(db, clock, email="a@example.com", company="Acme")
    without = make_contact(db, clock, email="b@example.com", phone="+15125550102")
    for contact_id in (with_company, without):
        emit(db, clock, contact_id, "lead.created")

    result = cli("run", "--once")
    assert result.exit_code == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and f"contact {without}" in failed[0]
    assert "company" in failed[0]
    reason = [d for t, d in timeline(db, without) if t == "step.failed"][0]["reason"]
    assert "company" in reason
    # The runner went on: the other contact got both, this one still its email.
    assert len(outbound(db, with_company)) == 2
    assert [m["channel"] for m in outbound(db, without)] == ["email"]


def test_transient_errors_retry_with_backoff_then_send(
    db, workspace, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    sms_provider.fail_next(503, count=2)

    first = run(workspace, db, clock)
    assert [r.outcome for r in first.results] == ["retry"]
    deferrals = [d for t, d in timeline(db, contact_id) if t == "step.deferred"]
    first_retry = clocks.parse(deferrals[0]["until"]) - clock.now()
    assert 30 <= first_retry.total_seconds() <= 60  # base 60s, jitter down to half
    assert "retry 1 of 4" in deferrals[0]["reason"]

    clock.advance(minutes=1)
    assert [r.outcome for r in run(workspace, db, clock).results] == ["retry"]
    clock.advance(minutes=2)
    assert [r.outcome for r in run(workspace, db, clock).results] == ["sent", "sent"]
    assert len(sms_provider.messages) == 1


def test_permanent_error_fails_with_the_providers_reason(
    db, workspace, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    sms_provider.fail_next(400, code=21610, message="Attempt to send to unsubscribed")

    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["failed", "sent"]
    failed = [d for t, d in timeline(db, contact_id) if t == "step.failed"][0]
    assert "21610" in failed["reason"] and "unsubscribed" in failed["reason"]
    consent = db.execute(
        "SELECT status FROM consents WHERE contact_id = ? AND channel = 'sms'",
        [contact_id],
    ).fetchone()
    assert consent == ("opted_out",)


def test_retries_stop_after_the_limit(db, workspace, clock, sms_provider):
    workspace = sms_provider.configure(workspace)
    workspace = update_settings(workspace, {"runner.max_attempts": 3})
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    sms_provider.fail_next(500, count=10)
    outcomes = []
    for _ in range(4):
        outcomes += [r.outcome for r in run(workspace, db, clock).results]
        clock.advance(hours=1)
    assert outcomes == ["retry", "retry", "failed", "sent"]
    failed = [d for t, d in timeline(db, contact_id) if t == "step.failed"][0]
    assert failed["reason"].startswith("gave up after 3 attempts")


@step_kind("test_explode")
def _explode(ctx):
    raise RuntimeError("boom")


def test_a_crashing_step_is_recorded_and_the_runner_goes_on(db, workspace, clock):
    only_sequences(
        workspace,
        bad="""
        trigger: lead.created
        steps:
          - test_explode:
          - add_tag: survived
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["failed", "done"]
    assert "internal error: RuntimeError: boom" in report.results[0].detail


def test_once_exits_at_once_while_a_live_daemon_holds_the_lease(
    cli, db, workspace, clock
):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    # This test process plays the daemon: its pid is alive.
    assert acquire_lease(db, "daemon-1", "daemon", clock=clock, seconds=60) is None

    result = cli("run", "--once")
    assert result.exit_code == 0
    assert "another runner holds the lease" in result.stderr
    assert outbound(db) == []

    # --concurrent works beside it; claims keep both safe.
    assert cli("run", "--once", "--concurrent").exit_code == 0
    assert len(outbound(db)) == 2


def test_a_dead_runners_lease_and_claims_are_taken_over(db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    dead_pid = _dead_pid()
    with write_transaction(db):
        db.execute(
            "INSERT INTO runner_leases VALUES ('runner', 'dead', 'once', ?, ?, ?, ?)",
            [
                dead_pid,
                os.uname().nodename,
                clocks.now_iso(clock),
                "2099-01-01T00:00:00Z",
            ],
        )
        db.execute(
            "UPDATE due_steps SET status = 'claimed', claims = 1, claimed_by = ?, "
            "lease_until = '2099-01-01T00:00:00Z'",
            [f"{os.uname().nodename}:{dead_pid}:abcd"],
        )
    report = run(workspace, db, clock)
    assert report.busy_with is None
    assert [r.outcome for r in report.results] == ["sent", "sent"]


def test_a_reclaimed_step_that_already_sent_is_not_sent_again(db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    step_id = db.execute("SELECT id FROM due_steps").fetchone()[0]
    # A runner sent the text, then died before recording the step as done.
    with write_transaction(db):
        db["messages"].insert(
            {
                "contact_id": contact_id,
                "channel": "sms",
                "direction": "outbound",
                "status": "sent",
                "due_step_id": step_id,
                "at": clocks.now_iso(clock),
            }
        )
        db.execute(
            "UPDATE due_steps SET status = 'claimed', claims = 1, claimed_by = 'x', "
            "lease_until = ?",
            [clocks.now_iso(clock)],
        )
    clock.advance(seconds=1)
    report = run(workspace, db, clock)
    assert report.results[0].outcome == "sent"
    assert "not sent again" in report.results[0].detail
    assert [m["channel"] for m in outbound(db)] == ["sms", "email"]


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_dry_run_renders_and_changes_nothing(cli, db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock, first_name="Ana")
    emit(db, clock, contact_id, "lead.created")
    before = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    result = cli("run", "--dry-run")
    assert result.exit_code == 0
    assert "Hi Ana, thanks for reaching out to Bright Smile Dental" in result.stdout
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before
    assert outbound(db) == []


def test_due_shows_local_time_and_why(cli, db, workspace, clock):
    only_sequences(
        workspace,
        later="""
        trigger: lead.created
        steps:
          - wait: 13h
          - send: sms
            template: nudge-text
          - wait: 1d
          - send: email
            template: nudge-email
        """,
    )
    contact_id = make_contact(db, clock, timezone="America/New_York")
    emit(db, clock, contact_id, "lead.created")
    result = cli("due", "--within", "3d", "--contact", str(contact_id), "--json")
    assert result.exit_code == 0
    rows = result.json()
    # Due at 23:00 New York time: held to 08:00; the email projected a day on.
    assert rows[0]["local_time"] == "Tue 2026-03-03 08:00 EST"
    assert "quiet hours" in rows[0]["why"]
    assert rows[1]["projected"] is True
    assert rows[1]["local_time"] == "Wed 2026-03-04 08:00 EST"


def test_status_reports_queue_and_lease(cli, db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    status = cli("status", "--json").json()
    assert status["queue"]["due_now"] == 1
    assert status["runner_lease"] is None
    cli("run", "--once")
    status = cli("status", "--json").json()
    assert status["queue"]["done"] == 2
    assert status["last_run"]["steps_done"] == 2
    assert cli("status").exit_code == 0


def test_events_emit_creates_the_contact_and_enrols(cli, db, workspace, clock):
    result = cli(
        "events",
        "emit",
        "form.submitted",
        "--email",
        "New.Person@Example.com",
        "--name",
        "New Person",
        "--data",
        "form=contact-us",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    answer = result.json()
    assert answer["created_contact"] is True
    types = [t for t, _ in timeline(db, answer["contact_id"])]
    assert types[0] == "lead.created" and "form.submitted" in types
    assert "sequence.enrolled" in types


def test_events_emit_json_lines_keeps_good_lines_and_names_bad_ones(
    cli, db, workspace, clock
):
    contact_id = make_contact(db, clock)
    lines = "\n".join(
        [
            json.dumps(
                {"type": "invoice.paid", "contact": contact_id, "data": {"amount": 120}}
            ),
            "{not json",
            json.dumps({"type": "appointment.booked", "contact": "nobody@example.com"}),
            json.dumps(
                {
                    "type": "opted_out",
                    "contact": str(contact_id),
                    "data": {"channel": "sms"},
                }
            ),
        ]
    )
    result = cli("events", "emit", "-", input=lines + "\n")
    assert result.exit_code == 1
    assert "line 2: not JSON" in result.stderr
    assert "line 3: no contact with email nobody@example.com" in result.stderr
    paid = [d for t, d in timeline(db, contact_id) if t == "invoice.paid"]
    assert paid == [{"amount": 120}]
    consent = db.execute(
        "SELECT status FROM consents WHERE contact_id = ?", [contact_id]
    ).fetchone()
    assert consent == ("opted_out",)


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    answers: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), json.loads(body)))
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def hook_server():
    handler = type("Hook", (_Hook,), {"received": [], "answers": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_webhook_step_posts_json_and_retries_server_errors(
    db, workspace, clock, hook_server
):
    handler, url = hook_server
    handler.answers.extend([502])
    only_sequences(
        workspace,
        hook=f"""
        trigger: appointment.booked
        steps:
          - webhook: {url}
            payload: {{crm: yes}}
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "appointment.booked", service="cleaning")
    assert [r.outcome for r in run(workspace, db, clock).results] == ["retry"]
    clock.advance(minutes=5)
    assert [r.outcome for r in run(workspace, db, clock).results] == ["done"]
    headers, payload = handler.received[-1]
    assert payload["contact"]["id"] == contact_id
    assert payload["trigger"] == {"service": "cleaning"}
    assert payload["data"] == {"crm": True}
    assert headers["Idempotency-Key"].startswith("step-")


def test_task_emails_staff_and_voicemail_goes_through_the_provider(
    db, workspace, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    workspace = update_settings(workspace, {"staff.email": "desk@example.com"})
    only_sequences(
        workspace,
        callback="""
        trigger: appointment.no_show
        steps:
          - voicemail: https://example.com/missed-you.mp3
          - task: "Call {{ first_name }} about the missed visit"
        """,
    )
    contact_id = make_contact(db, clock, first_name="Ana")
    emit(db, clock, contact_id, "appointment.no_show")
    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["sent", "done"]
    assert (
        "Play>https://example.com/missed-you.mp3<"
        in sms_provider.calls[0].form["Twiml"]
    )
    staff_mail = list(workspace.outbox_dir.rglob("*.eml"))
    assert len(staff_mail) == 1
    text = staff_mail[0].read_text(encoding="utf-8")
    assert "desk@example.com" in text and "Call Ana about the missed visit" in text


def test_settings_come_from_the_runner_section(workspace):
    workspace = update_settings(workspace, {"runner.batch_size": 7})
    assert RunSettings.from_workspace(workspace).batch_size == 7


def _wait_for_outbound(db, contact_id: int, count: int, seconds: float = 10) -> None:
    """Until the contact has ``count`` outbound messages (or time runs out)."""
    for _ in range(int(seconds * 10)):
        if len(outbound(db, contact_id)) == count:
            return
        threading.Event().wait(0.1)


def _daemon(workspace, db, clock, **options):
    """``run_forever`` on a thread (interval one hour): its stop event, the
    results it reports, and the thread, started."""
    from cxm_cli.runner import run_forever

    stop = threading.Event()
    results = []
    thread = threading.Thread(
        target=run_forever,
        kwargs=dict(
            workspace=workspace,
            db=db,
            clock=clock,
            interval=3600,
            stop=stop.is_set,
            on_result=results.append,
            **options,
        ),
        daemon=True,
    )
    thread.start()
    return stop, results, thread


def test_daemon_wakes_on_a_new_event_without_waiting_the_interval(workspace):
    from cxm_cli.clock import SystemClock

    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    clock = SystemClock()
    runner_db = workspace.open_db()
    writer_db = workspace.open_db()
    stop, results, thread = _daemon(workspace, runner_db, clock)
    try:
        contact_id = make_contact(writer_db, clock, timezone=midday_zone())
        emit(writer_db, clock, contact_id, "lead.created")
        _wait_for_outbound(writer_db, contact_id, 2, seconds=30)
        assert [m["channel"] for m in outbound(writer_db, contact_id)] == [
            "sms",
            "email",
        ]
    finally:
        stop.set()
        thread.join(10)
        runner_db.close()
        writer_db.close()
    assert not thread.is_alive()
    assert [r.outcome for r in results] == ["sent", "sent"]


def test_a_concurrent_daemon_works_beside_the_lease_holder(workspace):
    """`cxm run --concurrent` as a daemon is an extra worker, not a standby."""
    from cxm_cli.clock import SystemClock
    from cxm_cli.runner import acquire_lease

    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    clock = SystemClock()
    writer_db = workspace.open_db()
    # This process holds the lease, as a live daemon would.
    assert (
        acquire_lease(writer_db, "holder", "daemon", clock=clock, seconds=600) is None
    )
    contact_id = make_contact(writer_db, clock, timezone=midday_zone())
    emit(writer_db, clock, contact_id, "lead.created")
    runner_db = workspace.open_db()
    standby = []
    stop, results, thread = _daemon(
        workspace, runner_db, clock, on_standby=standby.append, concurrent=True
    )
    try:
        _wait_for_outbound(writer_db, contact_id, 2)
    finally:
        stop.set()
        thread.join(10)
        runner_db.close()
    holder = writer_db.execute("SELECT holder FROM runner_leases").fetchall()
    writer_db.close()

    assert standby == []
    assert [r.outcome for r in results] == ["sent", "sent"]
    assert holder == [("holder",)]  # the lease stayed with its holder


def test_run_once_api_reports_failures_count(db, workspace, clock):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    report = run_once(workspace, db, clock)
    assert report.failed == 0 and report.results == []


def test_daemon_outlasts_a_writer_holding_the_database(workspace):
    """A long import holds the write lock; the daemon waits, then sends."""
    from cxm_cli.clock import SystemClock
    from cxm_cli.runner import run_forever

    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    clock = SystemClock()
    writer_db = workspace.open_db()
    contact_id = make_contact(writer_db, clock, timezone=midday_zone())
    emit(writer_db, clock, contact_id, "lead.created")
    runner_db = workspace.open_db()
    # Shorter than the writer holds the lock, so the pass really hits "locked".
    runner_db.execute("PRAGMA busy_timeout = 200")
    writer_db.execute("BEGIN IMMEDIATE")
    stop = threading.Event()
    results = []
    errors = []

    def daemon():
        try:
            run_forever(
                workspace,
                runner_db,
                clock,
                interval=3600,
                stop=stop.is_set,
                on_result=results.append,
                wake_seconds=0.05,
            )
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    thread = threading.Thread(target=daemon, daemon=True)
    thread.start()
    try:
        threading.Event().wait(1.0)
        assert thread.is_alive() and errors == []
        writer_db.execute("COMMIT")
        _wait_for_outbound(writer_db, contact_id, 2)
    finally:
        stop.set()
        thread.join(10)
        runner_db.close()
        writer_db.close()

    assert errors == []
    assert [r.outcome for r in results] == ["sent", "sent"]


def test_status_tells_a_killed_run_from_a_running_one(workspace, db, clock, cli):
    import socket

    from cxm_cli.preview import engine_status

    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)
    # A run whose process is gone, that got as far as finishing that step.
    dead = f"{socket.gethostname()}:{2**22 + 12345}:dead"
    db.execute(
        "INSERT INTO runner_runs (runner, mode, pid, started_at) "
        "VALUES (?, 'daemon', ?, ?)",
        [dead, 2**22 + 12345, clocks.now_iso(clock)],
    )
    db.execute("UPDATE due_steps SET claimed_by = ? WHERE status = 'done'", [dead])

    last = engine_status(workspace, db, clock)["last_run"]
    shown = cli("status")

    assert last["state"] == "stopped" and last["steps_done"] == 2
    assert "stopped without finishing" in shown.stdout
    assert "(2 done" in shown.stdout


def test_a_concurrent_runner_takes_back_the_steps_of_one_that_died_beside_it(
    db, workspace, clock, monkeypatch
):
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    for index in range(2):
        contact_id = make_contact(
            db, clock, email=f"c{index}@example.com", phone=f"+1512555010{index}"
        )
        emit(db, clock, contact_id, "lead.created")
    dead = f"{os.uname().nodename}:{_dead_pid()}:abcd"
    # Claimed by a runner beside this one that was killed while this one ran.
    with write_transaction(db):
        db.execute(
            "UPDATE due_steps SET status = 'claimed', claims = 1, claimed_by = ?, "
            "lease_until = '2099-01-01T00:00:00Z' WHERE id = (SELECT MAX(id) "
            "FROM due_steps WHERE kind = 'send')",
            [dead],
        )
    import cxm_cli.runner as runner_module

    recovered_at_start = []
    real_recover = runner_module.recover_dead_claims

    def recover_later(db):
        # The first call (at the start of the run) is before the death.
        if not recovered_at_start:
            recovered_at_start.append(True)
            return 0
        return real_recover(db)

    monkeypatch.setattr(runner_module, "recover_dead_claims", recover_later)
    report = run(workspace, db, clock, concurrent=True)

    assert [r.outcome for r in report.results].count("sent") == 4
    left = db.execute("SELECT COUNT(*) FROM due_steps WHERE status = 'claimed'")
    assert left.fetchone()[0] == 0


def test_a_step_deferred_many_times_is_not_taken_for_a_crash_loop(db, workspace, clock):
    # Claims count claims that never finished; a deferral finishes one. A
    # text held night after night must still go out, not fail as "claimed
    # 11 times without finishing".
    only_sequences(workspace, hello=ONE_TEXT.format(template="new-lead-text"))
    clock.set("2026-03-02T08:00:00Z")  # 02:00 in Chicago: quiet hours
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    for _ in range(12):
        with write_transaction(db):
            db.execute(
                "UPDATE due_steps SET due_at = ? WHERE status = 'pending'",
                [clocks.now_iso(clock)],
            )
        [result] = run(workspace, db, clock).results
        assert result.outcome == "deferred"

    clock.set("2026-03-02T15:00:00Z")  # 09:00 in Chicago
    outcomes = [r.outcome for r in run(workspace, db, clock).results]
    assert "failed" not in outcomes and outcomes[0] == "sent"
