"""Reminders for appointments whose time has passed, or nearly has.

The shipped appointment-reminder waits ``until starts_at - 24h`` and ``until
starts_at - 2h``. A booking recorded late (or imported from a calendar export)
must not get "a reminder of your appointment" after it, nor both texts back to
back: a missed reminder is skipped with a reason on the timeline, and only the
last one before the appointment still goes out late.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.importing import ImportOptions, import_file
from tests.support.engine import emit, outbound, run_until, timeline
from tests.support.fixtures import make_contact

CHICAGO = ZoneInfo("America/Chicago")
IMPORTS = Path(__file__).parent / "fixtures" / "imports"


def texts(db, contact_id):
    """(first words of the text, local time in Chicago) of every message."""
    return [
        (
            " ".join(message["body"].split()[:3]),
            clocks.parse(message["at"]).astimezone(CHICAGO).strftime("%a %d %H:%M"),
        )
        for message in outbound(db, contact_id)
    ]


def skipped(db, contact_id):
    return [
        (data["label"], data["reason"])
        for kind, data in timeline(db, contact_id, "step.")
        if kind == "step.skipped"
    ]


def enrollment_of(db, contact_id):
    rows = db.query(
        "SELECT status, end_reason FROM enrollments "
        "WHERE contact_id = ? AND sequence = 'appointment-reminder'",
        [contact_id],
    )
    return [(row["status"], row["end_reason"]) for row in rows]


def test_a_booking_three_days_past_sends_nothing(db, workspace, clock):
    clock.set("2026-03-05T15:00:00Z")  # Thursday 09:00 CST
    contact_id = make_contact(db, clock, timezone="America/Chicago")

    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-02T17:00:00Z")
    run_until(workspace, db, clock, "2026-03-06T15:00:00Z")

    assert outbound(db, contact_id) == []
    assert skipped(db, contact_id) == [
        (
            "reminder",
            "its time (24h before starts_at) passed before it could go out; "
            "starts_at has passed",
        ),
        (
            "same-day",
            "its time (2h before starts_at) passed before it could go out; "
            "starts_at has passed",
        ),
    ]
    assert enrollment_of(db, contact_id) == [("completed", "all steps done")]


def test_a_booking_one_hour_ahead_gets_only_the_see_you_soon_text(db, workspace, clock):
    clock.set("2026-03-02T15:00:00Z")  # Monday 09:00 CST
    contact_id = make_contact(db, clock, timezone="America/Chicago")

    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-02T16:00:00Z")
    run_until(workspace, db, clock, "2026-03-03T15:00:00Z")

    assert texts(db, contact_id) == [("See you soon", "Mon 02 09:00")]
    assert skipped(db, contact_id) == [
        (
            "reminder",
            "its time (24h before starts_at) passed before it could go out; "
            "a later step timed on starts_at goes instead",
        )
    ]


def test_a_booking_three_days_ahead_still_gets_both_texts_on_time(db, workspace, clock):
    clock.set("2026-03-02T15:00:00Z")  # Monday 09:00 CST
    contact_id = make_contact(db, clock, timezone="America/Chicago")

    # Thursday 11:00 CST
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-05T17:00:00Z")
    run_until(workspace, db, clock, "2026-03-06T15:00:00Z")

    assert [at for _, at in texts(db, contact_id)] == ["Wed 04 11:00", "Thu 05 09:00"]
    assert texts(db, contact_id)[1][0] == "See you soon"
    assert skipped(db, contact_id) == []
    assert enrollment_of(db, contact_id) == [("completed", "all steps done")]


def test_a_reminder_a_few_minutes_late_still_goes_out(db, workspace, clock):
    clock.set("2026-03-02T17:10:00Z")  # 23h50m ahead: within the grace period
    contact_id = make_contact(db, clock, timezone="America/Chicago")

    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-03T17:00:00Z")
    run_until(workspace, db, clock, "2026-03-03T18:00:00Z", step_minutes=5)

    assert [at for _, at in texts(db, contact_id)] == ["Mon 02 11:10", "Tue 03 09:00"]
    assert skipped(db, contact_id) == []


def test_an_imported_calendar_export_of_past_bookings_sends_nothing(
    db, workspace, clock, tmp_path
):
    # The Calendly export's bookings are from 2024; the clock is in 2026.
    import_file(
        workspace,
        db,
        IMPORTS / "calendly.csv",
        clock=clock,
        options=ImportOptions(rejects_path=tmp_path / "rejects.csv"),
    )
    run_until(workspace, db, clock, "2026-03-03T15:00:00Z")

    assert outbound(db) == []
    reasons = [
        reason
        for row in db.query("SELECT id FROM contacts")
        for _, reason in skipped(db, row["id"])
    ]
    assert reasons and all(r.endswith("starts_at has passed") for r in reasons)
