"""Property tests: no message ever reaches anyone outside their quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxm_cli import clock as clocks
from cxm_cli.queue import next_due_at
from cxm_cli.runner import run_once
from cxm_cli.sendwindow import SendWindow, window_for
from cxm_cli.store import write_transaction
from tests.support.engine import emit, only_sequences, outbound
from tests.support.fixtures import make_contact

ZONES = sorted(
    name for name in available_timezones() if "/" in name and not name.startswith("Etc")
)
moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)
).map(lambda naive: naive.replace(tzinfo=UTC))


@settings(max_examples=400, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start_minute=st.integers(0, 23 * 60),
    length_minutes=st.integers(30, 23 * 60),
    moment=moments,
)
def test_next_opening_is_inside_the_window_and_never_earlier(
    zone, start_minute, length_minutes, moment
):
    start = time(start_minute // 60, start_minute % 60)
    end_minute = (start_minute + length_minutes) % (24 * 60)
    end = time(end_minute // 60, end_minute % 60)
    window = SendWindow(start=start, end=end, zones=(ZoneInfo(zone),), rule="test")

    opening = window.next_open(moment)

    assert opening >= moment
    assert window.allows(opening)
    if window.allows(moment):
        assert opening == moment
    # Never more than a day (and a daylight-saving hour) away.
    assert opening - moment <= timedelta(hours=25)


@settings(max_examples=200, deadline=None)
@given(
    zones=st.lists(
        st.sampled_from(ZONES[:40] + ["America/New_York"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    moment=moments,
)
def test_several_candidate_zones_open_together_when_they_can(zones, moment):
    window = SendWindow(
        start=time(8), end=time(21), zones=tuple(ZoneInfo(z) for z in zones), rule="t"
    )
    opening = window.next_open(moment)
    assert opening >= moment
    offsets = {ZoneInfo(z).utcoffset(opening.replace(tzinfo=None)) for z in zones}
    spread = max(offsets) - min(offsets)
    if spread <= timedelta(hours=12):
        assert window.allows(opening)


SCHEDULED = """
trigger: lead.created
reenroll: always
caps: false
steps:
  - wait: until send_at
  - send: sms
    text: "Hello from the property test"
"""


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    zone=st.sampled_from(ZONES),
    florida=st.booleans(),
    enrolled=moments,
    due_after_minutes=st.integers(0, 3 * 24 * 60),
    polls=st.lists(st.integers(1, 6 * 60), min_size=1, max_size=40),
)
def test_the_runner_never_sends_outside_quiet_hours(
    db, workspace, clock, zone, florida, enrolled, due_after_minutes, polls
):
    only_sequences(workspace, scheduled=SCHEDULED)
    clock.set(enrolled)
    contact_id = make_contact(db, clock, email=None, timezone=zone)
    if florida:
        with write_transaction(db):
            db["contacts"].update(contact_id, {"region": "FL"})
    send_at = clocks.iso(enrolled + timedelta(minutes=due_after_minutes))
    emit(db, clock, contact_id, "lead.created", send_at=send_at)

    # The runner polls at random moments, then (like the daemon) at each due time.
    for minutes in polls:
        run_once(workspace, db, clock)
        if outbound(db, contact_id):
            break
        clock.advance(minutes=minutes)
    for _ in range(10):
        if outbound(db, contact_id):
            break
        clock.set(max(clock.now(), next_due_at(db)))
        run_once(workspace, db, clock)

    messages = outbound(db, contact_id)
    assert len(messages) == 1, "the message was dropped instead of deferred"
    sent_at = clocks.parse(messages[0]["at"])
    assert sent_at >= clocks.parse(send_at)
    contact = {"timezone": zone, "region": "FL" if florida else None}
    window = window_for(workspace, contact)
    assert window.allows(sent_at), (
        f"sent at {sent_at.astimezone(ZoneInfo(zone))} outside {window.describe()}"
    )
    local = sent_at.astimezone(ZoneInfo(zone)).time()
    assert time(8) <= local < (time(20) if florida else time(21))
