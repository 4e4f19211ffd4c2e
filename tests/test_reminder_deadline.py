"""A message timed before an event never goes out at or after the event.

The shipped appointment-reminder texts "see you soon" two hours before
starts_at. When quiet hours (or a cap) would hold it until after the
appointment began, or it comes up only after that, the runner skips it with
the reason on the timeline, and ``cxm due`` says so beforehand. A message
timed after an event (``until visited_at + 1d``) has no such deadline.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.preview import preview_due
from tests.support.engine import emit, only_sequences, outbound, run_until, timeline
from tests.support.fixtures import make_contact

LONDON = ZoneInfo("Europe/London")

VISIT_FOLLOW_UP = """
trigger: visit.completed
caps: false
steps:
  - wait: until visited_at + 1d
  - name: follow-up
    send: sms
    text: how was your visit?
"""


def sent_at(db, contact_id):
    """(first words, London time) of every text the contact was sent."""
    return [
        (
            " ".join(message["body"].split()[:3]),
            clocks.parse(message["at"]).astimezone(LONDON).strftime("%a %d %H:%M"),
        )
        for message in outbound(db, contact_id)
    ]


def last_why(row):
    """What a ``cxm due`` row says last, after how its due time was worked out."""
    return row["why"].rsplit("; ", 1)[-1]


def skipped(db, contact_id):
    return [
        (data["label"], data["reason"])
        for kind, data in timeline(db, contact_id, "step.")
        if kind == "step.skipped"
    ]


def test_a_late_night_booking_for_within_the_hour_gets_no_text_next_morning(
    db, workspace, clock
):
    clock.set("2026-03-06T22:15:00Z")  # Friday 22:15 in London: quiet hours
    contact_id = make_contact(db, clock, timezone="Europe/London")
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-06T23:15:00Z")
    too_late = (
        "quiet hours last until Sat 08:00 GMT, after starts_at (Fri 23:15 GMT): "
        "too late for this message"
    )

    [due] = preview_due(workspace, db, clock, within=timedelta(days=1))
    run_until(workspace, db, clock, "2026-03-07T10:00:00Z")

    assert due["step"] == "same-day (send sms)"
    assert last_why(due) == f"will be skipped: {too_late}"
    assert outbound(db, contact_id) == []
    assert skipped(db, contact_id)[-1] == ("same-day", too_late)


def test_a_reminder_held_by_quiet_hours_still_goes_when_they_end_before_it(
    db, workspace, clock
):
    clock.set("2026-03-05T12:00:00Z")  # Thursday noon in London
    contact_id = make_contact(db, clock, timezone="Europe/London")
    # Saturday 09:30: the two-hour text falls at 07:30, held until 08:00.
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-07T09:30:00Z")

    run_until(workspace, db, clock, "2026-03-07T12:00:00Z")

    assert [at for _, at in sent_at(db, contact_id)] == ["Fri 06 09:30", "Sat 07 08:00"]
    assert sent_at(db, contact_id)[1][0] == "See you soon"
    assert skipped(db, contact_id) == []


def test_an_early_appointment_gets_the_day_before_text_but_not_see_you_soon(
    db, workspace, clock
):
    clock.set("2026-03-05T12:00:00Z")  # Thursday noon in London
    contact_id = make_contact(db, clock, timezone="Europe/London")
    # Saturday 07:00: the day-before text waits for 08:00 Friday, in time;
    # the two-hour one (05:00) would wait past the appointment.
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-07T07:00:00Z")
    too_late = (
        "quiet hours last until Sat 08:00 GMT, after starts_at (Sat 07:00 GMT): "
        "too late for this message"
    )

    rows = preview_due(workspace, db, clock, within=timedelta(days=2))
    run_until(workspace, db, clock, "2026-03-07T12:00:00Z")

    assert [last_why(row) for row in rows] == [
        "quiet hours until Fri 08:00 GMT",
        f"will be skipped: {too_late}",
    ]
    assert [at for _, at in sent_at(db, contact_id)] == ["Fri 06 08:00"]
    assert skipped(db, contact_id) == [("same-day", too_late)]


def test_a_reminder_the_runner_reaches_only_after_the_appointment_is_skipped(
    db, workspace, clock
):
    clock.set("2026-03-06T12:00:00Z")  # Friday noon in London
    contact_id = make_contact(db, clock, timezone="Europe/London")
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-06T13:00:00Z")
    # The runner was down for an hour and a half.
    clock.advance(minutes=90)

    [due] = preview_due(workspace, db, clock)
    run_until(workspace, db, clock, "2026-03-06T15:00:00Z")

    passed = "starts_at (Fri 13:00 GMT) has passed: too late for this message"
    assert last_why(due) == f"will be skipped: {passed}"
    assert outbound(db, contact_id) == []
    assert skipped(db, contact_id)[-1] == ("same-day", passed)


def test_a_follow_up_after_a_visit_still_goes_after_quiet_hours(db, workspace, clock):
    only_sequences(workspace, follow_up=VISIT_FOLLOW_UP)
    clock.set("2026-03-05T22:00:00Z")  # Thursday 22:00 in London
    contact_id = make_contact(db, clock, timezone="Europe/London")
    # A day later is Friday 22:00, in quiet hours: it goes at 08:00 Saturday.
    emit(db, clock, contact_id, "visit.completed", visited_at="2026-03-05T22:00:00Z")

    rows = preview_due(workspace, db, clock, within=timedelta(days=2))
    run_until(workspace, db, clock, "2026-03-07T12:00:00Z")

    assert [last_why(row) for row in rows] == ["quiet hours until Sat 08:00 GMT"]
    assert sent_at(db, contact_id) == [("how was your", "Sat 07 08:00")]
    assert skipped(db, contact_id) == []
