"""`cxm due` says why once, in the runner's order, and as the runner will act."""

from __future__ import annotations

from datetime import timedelta

from cxm_cli.preview import preview_due
from cxm_cli.store import write_transaction
from tests.support.engine import emit, only_sequences, outbound, run, timeline
from tests.support.fixtures import make_contact, update_settings

TWO_TEXTS = """
trigger: lead.created
steps:
  - send: sms
    text: first
  - send: sms
    text: second
"""

# Friday 10:00 in Chicago.
FRIDAY_MORNING = "2026-12-04T16:00:00Z"


def _pending(db) -> dict:
    return next(db.query("SELECT * FROM due_steps WHERE status = 'pending'"))


BOOKING_THANKS = """
trigger: appointment.booked
caps: false
steps:
  - send: sms
    text: thanks for booking
  - wait: until starts_at - 24h
  - name: reminder
    send: sms
    text: see you tomorrow
  - wait: until starts_at - 2h
  - name: same-day
    send: sms
    text: see you soon
"""


def test_due_shows_a_reminder_after_a_missed_wait_as_skipped(cli, db, workspace, clock):
    only_sequences(workspace, booking=BOOKING_THANKS)
    clock.set("2026-03-02T15:00:00Z")  # Monday 09:00 CST
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    # Booked one hour ahead: the day-before reminder's time has long passed.
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-02T16:00:00Z")

    rows = cli("due", "--within", "1d", "--json").json()
    run(workspace, db, clock)

    thanks, reminder, same_day = rows
    reason = (
        "its time (24h before starts_at) passed before it could go out; "
        "a later step timed on starts_at goes instead"
    )
    assert reminder["step"] == "reminder (send sms)"
    assert reminder["why"] == f"projected after step 1; will be skipped: {reason}"
    assert reminder["condition"] is None
    assert same_day["why"] == "projected after step 1; in the send window"
    assert thanks["send_at"] == reminder["send_at"] == same_day["send_at"]
    # The runner skips it for the reason shown and sends the later one.
    skipped = [d for kind, d in timeline(db, contact_id) if kind == "step.skipped"]
    assert [data["reason"] for data in skipped] == [reason]
    run(workspace, db, clock)
    assert [m["body"] for m in outbound(db, contact_id)] == [
        "thanks for booking",
        "see you soon",
    ]


def test_due_does_not_say_both_quiet_hours_and_in_the_send_window(db, workspace, clock):
    only_sequences(workspace, two=TWO_TEXTS)
    clock.set("2026-12-04T05:00:00Z")  # Thursday 23:00 in Chicago
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)  # puts the first text back to 08:00

    first, _ = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert first["why"] == "quiet hours until Fri 08:00 CST"
    assert first["local_time"] == "Fri 2026-12-04 08:00 CST"


FOUR_TEXTS = """
trigger: lead.created
caps: false
steps:
  - send: sms
    text: a
  - send: sms
    text: b
  - send: sms
    text: c
  - send: sms
    text: d
"""


def test_due_names_a_legal_cap_the_runner_met_once(db, workspace, clock):
    only_sequences(workspace, four=FOUR_TEXTS)
    clock.set(FRIDAY_MORNING)
    contact_id = make_contact(db, clock, timezone="America/New_York")
    with write_transaction(db):
        db.execute("UPDATE contacts SET region = 'FL' WHERE id = ?", [contact_id])
    emit(db, clock, contact_id, "lead.created")
    for _ in range(4):
        run(workspace, db, clock)
        clock.advance(minutes=1)

    [fourth] = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert _pending(db)["note"] == "cap: Florida: 3 texts or calls per 24 hours"
    assert fourth["why"] == (
        "cap: Florida: 3 texts or calls per 24 hours until Sat 11:00 EST"
    )
    assert fourth["local_time"] == "Sat 2026-12-05 11:00 EST"


DAILY_TEXTS = """
trigger: lead.created
steps:
  - send: sms
    text: a
  - wait: 1d
  - send: sms
    text: b
  - wait: 1d
  - send: sms
    text: c
  - wait: 1d
  - send: sms
    text: d
"""


def test_due_names_a_rolling_cap_once_when_it_lifts(db, workspace, clock):
    workspace = update_settings(
        workspace, {"caps.sms_per_day": 5, "caps.sms_per_week": 3}
    )
    only_sequences(workspace, daily=DAILY_TEXTS)
    clock.set("2026-12-04T21:47:00Z")  # Friday 15:47 in Chicago
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)

    *_, fourth = preview_due(workspace, db, clock, within=timedelta(days=9))

    assert fourth["why"] == (
        "projected after step 3; cap: 3 sms per week until Fri 15:47 CST"
    )
    assert fourth["local_time"] == "Fri 2026-12-11 15:47 CST"


TEXT_THEN_EMAIL = """
trigger: lead.created
steps:
  - send: sms
    text: first
  - send: email
    subject: hello
    text: second
"""


def _capped_then_edited_to_email(db, workspace, clock) -> dict:
    """A text capped to Saturday whose step is now an email; the row was
    queued before rows remembered their step, so it finds it by position."""
    workspace = update_settings(workspace, {"caps.sms_per_day": 1})
    only_sequences(workspace, two=TWO_TEXTS)
    clock.set(FRIDAY_MORNING)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)
    only_sequences(workspace, two=TEXT_THEN_EMAIL)
    row = _pending(db)
    with write_transaction(db):
        db.execute("UPDATE due_steps SET step_key = NULL WHERE id = ?", [row["id"]])
    return {**row, "contact_id": contact_id}


def test_due_drops_a_cap_note_of_another_channel(db, workspace, clock):
    row = _capped_then_edited_to_email(db, workspace, clock)

    [email] = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert row["note"] == "cap: 1 sms per day"
    assert email["channel"] == "email"
    assert email["why"] == "in the send window"


def test_due_drops_a_retry_note_of_another_channel(db, workspace, clock):
    row = _capped_then_edited_to_email(db, workspace, clock)
    with write_transaction(db):
        db.execute(
            "UPDATE due_steps SET note = 'retry 1 of 4' WHERE id = ?", [row["id"]]
        )
        db["messages"].insert(
            {
                "contact_id": row["contact_id"],
                "channel": "sms",
                "direction": "outbound",
                "status": "failed",
                "due_step_id": row["id"],
                "at": row["created_at"],
            }
        )

    [email] = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert email["why"] == "in the send window"


def test_due_keeps_a_retry_note_of_the_same_step(db, workspace, clock):
    only_sequences(workspace, two=TWO_TEXTS)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    with write_transaction(db):
        db.execute("UPDATE due_steps SET note = 'retry 1 of 4'")

    first, _ = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert first["why"] == "retry 1 of 4; in the send window"


BROKEN = (
    TWO_TEXTS
    + """
  - frobnicate: 1
"""
)


def test_due_says_a_deleted_sequence_cancels_its_step(db, workspace, clock):
    only_sequences(workspace, two=TWO_TEXTS)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    only_sequences(workspace, two=BROKEN)
    run(workspace, db, clock)  # holds the step: the file has problems
    held = preview_due(workspace, db, clock, within=timedelta(days=1))
    only_sequences(workspace)

    [cancelled] = preview_due(workspace, db, clock, within=timedelta(days=1))

    assert _pending(db)["note"].startswith("two.yaml has problems")
    assert [row["why"] for row in held] == [
        "held: two.yaml has problems (see cxm sequences validate)"
    ]
    assert cancelled["why"] == "will be cancelled: sequence two no longer exists"
    clock.set(cancelled["send_at"])
    run(workspace, db, clock)
    [(status, reason)] = db.execute(
        "SELECT status, end_reason FROM enrollments WHERE contact_id = ?",
        [contact_id],
    ).fetchall()
    assert (status, reason) == ("exited", "sequence two no longer exists")


TEXT_THEN_TASK = """
trigger: lead.created
steps:
  - send: sms
    text: first
  - task: Call them
"""


def test_due_ends_a_task_steps_reason_without_a_bare_separator(db, workspace, clock):
    only_sequences(workspace, task=TEXT_THEN_TASK)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")

    _, task = preview_due(workspace, db, clock, within=timedelta(days=1))

    assert task["kind"] == "task"
    assert task["why"] == "projected after step 1"


def test_due_says_a_step_whose_condition_cannot_be_checked_will_fail(
    db, workspace, clock, monkeypatch
):
    # The file is fine (the segment exists); checking it breaks now. The
    # runner fails such a step, so the preview says so rather than "held".
    import cxm_cli.segments as segments
    from cxm_cli.errors import ConfigError

    clock.set(FRIDAY_MORNING)
    only_sequences(
        workspace,
        vip="""
        trigger: lead.created
        steps:
          - when: {segment: returning-client}
            send: sms
            text: hi
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")

    def broken(*args, **kwargs):
        raise ConfigError("segment 'returning-client' cannot be used: bad rule")

    monkeypatch.setattr(segments, "contact_in_segment", broken)

    [row] = preview_due(workspace, db, clock, within=timedelta(days=1))
    assert "will fail: its condition (when:) cannot be checked" in row["why"]
    [result] = run(workspace, db, clock).results
    assert result.outcome == "failed"
