"""The engine: waits, windows, caps, enrolment, exits, groups, keywords."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from cxm_cli import clock as clocks
from cxm_cli.caps import check_caps
from cxm_cli.clock import FakeClock
from cxm_cli.contacts import add_tag, get_contact, set_consent
from cxm_cli.sendwindow import contact_zones, window_for
from cxm_cli.store import write_transaction
from cxm_cli.waits import Calendar, parse_duration, parse_wait, wait_until
from tests.support.engine import emit, only_sequences, outbound, run, timeline
from tests.support.fixtures import make_contact, update_settings

CHICAGO = ZoneInfo("America/Chicago")


def utc(text: str) -> datetime:
    return clocks.parse(text)


# ---------------------------------------------------------------- waits


@pytest.mark.parametrize(
    ("text", "days", "seconds"),
    [
        ("30m", 0, 1800),
        ("2h", 0, 7200),
        ("1d", 1, 0),
        ("1d 12h", 1, 43200),
        ("2 hours", 0, 7200),
        ("1w", 7, 0),
        ("90 minutes", 0, 5400),
    ],
)
def test_durations(text, days, seconds):
    duration = parse_duration(text)
    assert duration.days == days and duration.elapsed.total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "3", "1 fortnight", "d1", "1d x", True, None])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_day_keeps_the_wall_clock_time_across_daylight_saving():
    # Saturday 7 March 2026, 10:00 in Chicago (CST); the clocks go forward
    # early on Sunday the 8th.
    start = utc("2026-03-07T16:00:00Z")
    end, _ = wait_until(parse_wait("1d"), start, CHICAGO, Calendar())
    assert end.astimezone(CHICAGO).strftime("%d %H:%M %Z") == "08 10:00 CDT"
    assert end == utc("2026-03-08T15:00:00Z")
    # Elapsed hours do not: 24h later is 11:00 local.
    end, _ = wait_until(parse_wait("24h"), start, CHICAGO, Calendar())
    assert end.astimezone(CHICAGO).hour == 11


def test_business_days_skip_weekends_and_holidays():
    calendar = Calendar(holidays=frozenset({date(2026, 3, 9)}))
    friday = utc("2026-03-06T16:00:00Z")  # Friday 10:00 CST
    end, _ = wait_until(
        parse_wait("2 business days at 09:00"), friday, CHICAGO, calendar
    )
    # Monday the 9th is a holiday: Tuesday, Wednesday.
    assert end.astimezone(CHICAGO).strftime("%a %d %H:%M") == "Wed 11 09:00"


def test_until_a_time_of_day_and_until_event_data():
    monday_evening = utc("2026-03-02T23:30:00Z")  # 17:30 CST
    end, _ = wait_until(parse_wait("until 09:00"), monday_evening, CHICAGO, Calendar())
    assert end == utc("2026-03-03T15:00:00Z")

    data = {"starts_at": "2026-03-05T16:00:00Z"}
    end, _ = wait_until(
        parse_wait("until starts_at - 24h"), monday_evening, CHICAGO, Calendar(), data
    )
    assert end == utc("2026-03-04T16:00:00Z")
    # Already past: go on now rather than never.
    late = utc("2026-03-05T10:00:00Z")
    end, note = wait_until(
        parse_wait("until starts_at - 24h"), late, CHICAGO, Calendar(), data
    )
    assert end == late and "passed" in note
    with pytest.raises(ValueError, match="starts_at"):
        wait_until(parse_wait("until starts_at - 24h"), late, CHICAGO, Calendar(), {})


# ---------------------------------------------------------------- send windows


def test_zone_comes_from_contact_then_phone_then_workspace(workspace):
    zones, source = contact_zones(workspace, {"timezone": "Europe/Paris"})
    assert [z.key for z in zones] == ["Europe/Paris"] and source == "contact"
    zones, source = contact_zones(workspace, {"phone": "+12125550100"})
    assert [z.key for z in zones] == ["America/New_York"] and source == "phone number"
    zones, source = contact_zones(workspace, {"phone": None})
    assert [z.key for z in zones] == [workspace.timezone] and source == "workspace"


def test_night_moves_to_the_next_opening_in_the_contacts_zone(workspace):
    window = window_for(workspace, {"timezone": "America/Los_Angeles"})
    late = utc("2026-03-03T06:00:00Z")  # 22:00 in Los Angeles
    assert not window.allows(late)
    opening = window.next_open(late)
    assert opening == utc("2026-03-03T16:00:00Z")  # 08:00 PST
    assert window.allows(opening)


def test_florida_contacts_get_eight_to_eight(workspace):
    florida = window_for(workspace, {"timezone": "America/New_York", "region": "FL"})
    elsewhere = window_for(workspace, {"timezone": "America/New_York", "region": "NY"})
    half_past_eight_pm = utc("2026-03-03T01:30:00Z")  # 20:30 EST
    assert elsewhere.allows(half_past_eight_pm)
    assert not florida.allows(half_past_eight_pm)


# ---------------------------------------------------------------- caps


def _record_sms(db, contact_id: int, at: str) -> None:
    with write_transaction(db):
        db["messages"].insert(
            {
                "contact_id": contact_id,
                "channel": "sms",
                "direction": "outbound",
                "status": "sent",
                "at": at,
            }
        )


def test_one_text_a_day_per_contact_lifts_at_local_midnight(db, workspace, clock):
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    contact = get_contact(db, contact_id)
    _record_sms(db, contact_id, "2026-03-02T15:00:00.000000Z")
    decision = check_caps(db, workspace, contact, "sms", clock=clock)
    assert not decision.allowed
    assert decision.until == utc("2026-03-03T06:00:00Z")  # midnight CST
    assert check_caps(db, workspace, contact, "sms", clock=clock, exempt=True).allowed


def test_florida_limit_of_three_applies_even_to_exempt_steps(db, workspace, clock):
    contact_id = make_contact(db, clock, timezone="America/New_York")
    with write_transaction(db):
        db["contacts"].update(contact_id, {"region": "FL"})
    for hour in (10, 11, 12):
        _record_sms(db, contact_id, f"2026-03-02T{hour}:00:00.000000Z")
    decision = check_caps(
        db, workspace, get_contact(db, contact_id), "sms", clock=clock, exempt=True
    )
    assert not decision.allowed and "Florida" in decision.reason
    assert decision.until == utc("2026-03-03T10:00:00Z")


# ---------------------------------------------------------------- enrolment

SIMPLE = """
name: simple
trigger:
  event: lead.created
  when:
    source: [facebook, web]
steps:
  - send: sms
    template: new-lead-text
  - wait: 1d
  - send: sms
    template: nudge-text
"""


def test_lead_enrols_once_and_first_step_is_due_at_enrolment(db, workspace, clock):
    only_sequences(workspace, simple=SIMPLE)
    contact_id = make_contact(db, clock)
    # The lead is from last year: the follow-up still starts now.
    with write_transaction(db):
        from cxm_cli.events import record_event

        record_event(
            db,
            contact_id,
            "lead.created",
            clock=clock,
            data={"source": "web"},
            at="2025-01-01T00:00:00Z",
        )
    emit(db, clock, contact_id, "lead.created", source="web")
    rows = list(db.query("SELECT * FROM due_steps"))
    assert len(rows) == 1 and rows[0]["due_at"] == clocks.now_iso(clock)
    # Still in it: the second lead.created changes nothing.
    assert [t for t, _ in timeline(db, contact_id, "sequence.")] == [
        "sequence.enrolled"
    ]


def test_trigger_filter_on_source(db, workspace, clock):
    only_sequences(workspace, simple=SIMPLE)
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="walk-in")
    assert list(db.query("SELECT * FROM enrollments")) == []


def test_cool_down_allows_enrolling_again_later(db, workspace, clock):
    only_sequences(
        workspace,
        again=SIMPLE.replace("name: simple", "name: again\nreenroll: 7d"),
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    with write_transaction(db):
        db.execute("UPDATE enrollments SET status = 'completed'")
    clock.advance(days=3)
    emit(db, clock, contact_id, "lead.created", source="web")
    clock.advance(days=5)
    emit(db, clock, contact_id, "lead.created", source="web")
    assert db.execute("SELECT COUNT(*) FROM enrollments").fetchone()[0] == 2
    skipped = [d for t, d in timeline(db, contact_id) if t == "sequence.skipped"]
    assert len(skipped) == 1 and "cool-down" in skipped[0]["reason"]


def test_a_reply_stops_the_follow_up(db, workspace, clock):
    only_sequences(
        workspace, simple=SIMPLE.replace("steps:", "exit: [replied]\nsteps:")
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    run(workspace, db, clock)
    assert len(outbound(db)) == 1

    clock.advance(hours=2)
    emit(db, clock, contact_id, "message.received", channel="sms", text="yes please")
    clock.advance(days=3)
    report = run(workspace, db, clock)
    assert report.results == []
    assert len(outbound(db)) == 1
    events = timeline(db, contact_id)
    assert ("step.cancelled", events[-2][1]) in events
    exited = [d for t, d in events if t == "sequence.exited"]
    assert exited[0]["reason"] == "replied"


def test_higher_priority_pre_empts_and_lower_is_refused(db, workspace, clock):
    only_sequences(
        workspace,
        nurture=SIMPLE.replace("name: simple", "name: nurture\ngroup: g\npriority: 1"),
        recovery="""
        trigger: appointment.no_show
        group: g
        priority: 5
        steps:
          - send: sms
            template: no-show-recovery
        """,
        promo="""
        trigger: tag.added
        group: g
        priority: 0
        steps:
          - send: sms
            template: nudge-text
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    emit(db, clock, contact_id, "appointment.no_show")
    with write_transaction(db):
        add_tag(db, contact_id, "promo", clock=clock)

    statuses = {
        row["sequence"]: (row["status"], row["end_reason"])
        for row in db.query("SELECT * FROM enrollments")
    }
    assert statuses["nurture"] == ("exited", "pre-empted by recovery (priority 5)")
    assert statuses["recovery"] == ("active", None)
    assert "promo" not in statuses
    skipped = [d for t, d in timeline(db, contact_id) if t == "sequence.skipped"]
    assert "busy with recovery" in skipped[0]["reason"]


def test_keyword_reply_records_the_event_and_it_triggers(db, workspace, clock):
    only_sequences(
        workspace,
        reminder="""
        trigger: appointment.booked
        caps: false
        steps:
          - send: sms
            template: appointment-reminder
            keywords: {C: appointment.confirmed, R: appointment.reschedule_requested}
            keywords_window: 1d
        """,
        rebook="""
        trigger: appointment.reschedule_requested
        steps:
          - send: sms
            text: "Pick a new time: https://example.com/book"
            caps: false
        """,
    )
    contact_id = make_contact(db, clock)
    emit(
        db,
        clock,
        contact_id,
        "appointment.booked",
        appointment_id="A1",
        starts_at="2026-03-04T16:00:00Z",
    )
    run(workspace, db, clock)
    clock.advance(minutes=10)
    emit(db, clock, contact_id, "message.received", channel="sms", text=" r. ")
    run(workspace, db, clock)

    requested = [
        d
        for t, d in timeline(db, contact_id)
        if t == "appointment.reschedule_requested"
    ]
    assert requested and requested[0]["appointment_id"] == "A1"
    assert requested[0]["keyword"] == "R"
    bodies = [m["body"] for m in outbound(db)]
    assert bodies[-1] == "Pick a new time: https://example.com/book"

    # The offer was answered, and expired offers answer nothing.
    clock.advance(days=2)
    emit(db, clock, contact_id, "message.received", channel="sms", text="C")
    assert not [t for t, _ in timeline(db, contact_id) if t == "appointment.confirmed"]


def test_opted_out_step_is_skipped_and_the_email_still_goes(db, workspace, clock):
    only_sequences(
        workspace,
        both="""
        trigger: lead.created
        steps:
          - send: sms
            template: new-lead-text
          - send: email
            template: new-lead-email
        """,
    )
    contact_id = make_contact(db, clock)
    with write_transaction(db):
        set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="test")
    emit(db, clock, contact_id, "lead.created")
    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["skipped", "sent"]
    assert [m["channel"] for m in outbound(db)] == ["email"]
    skipped = [d for t, d in timeline(db, contact_id) if t == "step.skipped"]
    assert skipped[0]["reason"] == "opted out of sms"


def test_step_due_at_night_is_deferred_not_dropped(db, workspace, clock):
    only_sequences(workspace, simple=SIMPLE)
    clock.set("2026-03-03T04:00:00Z")  # 22:00 in Chicago
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created", source="web")
    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["deferred"]
    deferred = [d for t, d in timeline(db, contact_id) if t == "step.deferred"]
    assert deferred[0]["until"] == "2026-03-03T14:00:00.000000Z"
    assert deferred[0]["local_until"] == "2026-03-03 08:00 CST"
    assert "quiet hours" in deferred[0]["reason"]

    clock.set("2026-03-03T14:00:00Z")
    report = run(workspace, db, clock)
    assert [r.outcome for r in report.results] == ["sent"]


def test_cancel_pending_steps_on_opt_out_keeps_the_chain(db, workspace, clock):
    from cxm_cli.engine import cancel_pending_steps

    only_sequences(
        workspace,
        mixed="""
        trigger: lead.created
        steps:
          - wait: 1h
          - send: sms
            template: nudge-text
          - send: email
            template: nudge-email
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    with write_transaction(db):
        skipped = cancel_pending_steps(
            db, contact_id, channel="sms", clock=clock, reason="opted out by STOP"
        )
    assert skipped == 1
    row = db.execute(
        "SELECT kind, due_at, status FROM due_steps WHERE status = 'pending'"
    ).fetchone()
    assert row == ("send", "2026-03-02T16:00:00.000000Z", "pending")


def test_workspace_quiet_hours_are_configurable(db, workspace, clock):
    workspace = update_settings(
        workspace, {"quiet_hours.start": "10:00", "quiet_hours.end": "18:00"}
    )
    window = window_for(workspace, {"timezone": "America/Chicago"})
    assert not window.allows(datetime(2026, 3, 2, 15, 30, tzinfo=UTC))  # 09:30 CST
    assert window.allows(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))


def test_fake_clock_is_the_only_clock(db, workspace):
    only_sequences(workspace, simple=SIMPLE)
    clock = FakeClock("2030-01-01T12:00:00Z")
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    row = db.execute("SELECT enrolled_at FROM enrollments").fetchone()
    assert row[0] == "2030-01-01T12:00:00.000000Z"


def test_an_sms_sender_sends_about_one_text_a_second(
    db, workspace, clock, sms_provider
):
    from cxm_cli.caps import rate_limit_for

    assert rate_limit_for(workspace, "sms") is None  # the outbox is not limited
    workspace = sms_provider.configure(workspace)
    assert rate_limit_for(workspace, "sms") == (f"sms:{sms_provider.from_number}", 1.0)
    only_sequences(
        workspace,
        hello="""
        trigger: lead.created
        steps:
          - send: sms
            template: new-lead-text
        """,
    )
    for index in range(3):
        contact_id = make_contact(
            db, clock, email=f"r{index}@example.com", phone=f"+1512555020{index}"
        )
        emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)
    times = [clocks.parse(m["at"]) for m in outbound(db)]
    gaps = [(times[i + 1] - times[i]).total_seconds() for i in range(len(times) - 1)]
    assert len(sms_provider.messages) == 3
    assert gaps == [1.0, 1.0]


def test_a_rolling_cap_lifts_at_the_moment_it_names(db, workspace, clock):
    # Three texts in a rolling week: the fourth may go exactly a week after
    # the first, the time the deferral named, not on a later pass.
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    contact = get_contact(db, contact_id)
    clock.set("2026-03-02T15:00:00Z")
    for day in ("2026-02-24", "2026-02-26", "2026-02-28"):
        _record_sms(db, contact_id, f"{day}T16:00:00.000000Z")
    decision = check_caps(db, workspace, contact, "sms", clock=clock)
    assert not decision.allowed
    assert decision.until == utc("2026-03-03T16:00:00Z")

    clock.set("2026-03-03T16:00:00Z")
    assert check_caps(db, workspace, contact, "sms", clock=clock).allowed
