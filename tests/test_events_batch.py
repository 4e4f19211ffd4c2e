"""Recording many events at once leaves the database as one by one would.

An import records its new leads' ``lead.created`` together
(:func:`cxm_cli.events.record_events`) and the engine, pipeline and review
hooks take them in one go. These tests record the same events both ways into
two identical workspaces and compare everything the hooks wrote.
"""

from __future__ import annotations

import json

import pytest

from cxm_cli import events as events_module
from cxm_cli.events import NewEvent, on_event, record_event, record_events
from cxm_cli.store import write_transaction
from cxm_cli.workspace import init_workspace, load_workspace
from tests.support.contacts import add_contact
from tests.support.engine import only_sequences

SEQUENCES = {
    # The nurture every new lead gets, unless something stops it.
    "nurture": """\
name: nurture
trigger: lead.created
reenroll: never
group: nurture
priority: 10
exit:
  - stage: [lost]
steps:
  - send: sms
    template: new-lead-text
  - wait: 1d
  - send: email
    template: new-lead-email
""",
    # Busy contacts: a higher priority in the group refuses the nurture.
    "recovery": """\
name: recovery
trigger: setup.recovery
group: nurture
priority: 50
steps:
  - wait: 2d
  - send: sms
    template: new-lead-text
""",
    # A lower priority in the group is pre-empted by the nurture.
    "old-drip": """\
name: old-drip
trigger: setup.old
group: nurture
priority: 5
steps:
  - wait: 3d
  - send: sms
    template: new-lead-text
""",
    # A filtered trigger, and a first step that waits (per-contact zones).
    "vip": """\
name: vip
trigger:
  event: lead.created
  when:
    source: [referral]
steps:
  - wait: 1d at 10:00
  - send: email
    template: new-lead-email
""",
}


def _workspace(root, clock):
    init_workspace(root, business_name="Bright Smile Dental")
    workspace = load_workspace(root)
    only_sequences(workspace, **SEQUENCES)
    db = workspace.open_db()
    zones = ["America/Chicago", "Europe/Berlin", None]
    for number in range(30):
        source = "referral" if number % 4 == 0 else "web"
        contact_id = add_contact(db, clock, name=f"Lead {number}", source=source)
        db.execute(
            "UPDATE contacts SET phone = ?, email = ?, timezone = ? WHERE id = ?",
            [
                f"+1512555{number:04d}",
                f"lead{number}@example.com",
                zones[number % 3],
                contact_id,
            ],
        )
        with write_transaction(db):
            if number % 5 == 1:
                record_event(db, contact_id, "setup.recovery", clock=clock)
            elif number % 5 == 2:
                record_event(db, contact_id, "setup.old", clock=clock)
            elif number % 5 == 3:
                # Enrolled before and finished: "reenroll: never" refuses.
                record_event(db, contact_id, "lead.created", clock=clock)
                db.execute(
                    "UPDATE enrollments SET status = 'completed' "
                    "WHERE contact_id = ? AND sequence = 'nurture'",
                    [contact_id],
                )
                db.execute(
                    "UPDATE due_steps SET status = 'done' WHERE contact_id = ?",
                    [contact_id],
                )
    return workspace, db


def _dump(db) -> dict:
    def rows(sql):
        return [list(row) for row in db.execute(sql).fetchall()]

    timeline = []
    for contact_id, type_, at, data, source in rows(
        "SELECT contact_id, type, at, data, source FROM events ORDER BY contact_id, id"
    ):
        # Ids differ with the order rows were written in; what they point
        # at is compared through the other tables.
        data = {
            key: value
            for key, value in json.loads(data).items()
            if key not in ("enrollment_id", "due_step_id", "event_id")
        }
        timeline.append([contact_id, type_, at, data, source])
    return {
        "timeline": timeline,
        "enrollments": rows(
            "SELECT contact_id, sequence, sequence_group, priority, status, "
            "trigger_type, trigger_data, enrolled_at, ended_at, end_reason "
            "FROM enrollments ORDER BY contact_id, id"
        ),
        "due_steps": rows(
            "SELECT contact_id, sequence, step_index, step_label, kind, due_at, "
            "status, note, last_error FROM due_steps ORDER BY contact_id, id"
        ),
        "stages": rows("SELECT * FROM contact_stages ORDER BY contact_id"),
    }


def test_many_lead_events_match_one_by_one(tmp_path, clock):
    one_by_one, db_one = _workspace(tmp_path / "one", clock)
    together, db_many = _workspace(tmp_path / "many", clock)
    contact_ids = [row[0] for row in db_one.execute("SELECT id FROM contacts")]
    clock.advance(minutes=5)

    with write_transaction(db_one):
        for contact_id in contact_ids:
            record_event(
                db_one, contact_id, "lead.created", clock=clock, data={"source": "x"}
            )
    with write_transaction(db_many):
        recorded = record_events(
            db_many,
            [
                NewEvent(contact_id, "lead.created", {"source": "x"})
                for contact_id in contact_ids
            ],
            clock=clock,
        )

    expected, actual = _dump(db_one), _dump(db_many)
    assert actual == expected
    # The cases this is about all happened.
    types = {row[1] for row in actual["timeline"]}
    assert {"sequence.enrolled", "sequence.skipped", "sequence.exited"} <= types
    assert {"stage.changed", "step.cancelled"} <= types
    assert any(row[1] == "vip" for row in actual["enrollments"])
    # The returned events carry the ids they were stored under.
    for event in recorded:
        stored = db_many.execute(
            "SELECT contact_id, type FROM events WHERE id = ?", [event.id]
        ).fetchone()
        assert tuple(stored) == (event.contact_id, "lead.created")


def test_a_contact_named_twice_is_recorded_one_event_at_a_time(workspace, db, clock):
    contact_id = add_contact(db, clock)
    seen: list[tuple[str, int]] = []

    @on_event("test-order")
    def remember(db, event, clock):
        seen.append((event.type, event.id))

    try:
        with write_transaction(db):
            recorded = record_events(
                db,
                [
                    NewEvent(contact_id, "form.submitted", {"form": "a"}),
                    NewEvent(contact_id, "tag.added", {"tag": "b"}),
                ],
                clock=clock,
            )
    finally:
        events_module._HOOKS[:] = [
            (name, hook) for name, hook in events_module._HOOKS if name != "test-order"
        ]

    # Each event's hooks ran before the next event was recorded.
    assert [event.id for event in recorded] == sorted(event.id for event in recorded)
    assert [type_ for type_, _ in seen if type_ in ("form.submitted", "tag.added")] == [
        "form.submitted",
        "tag.added",
    ]


def test_a_hook_without_a_many_events_form_sees_every_event(workspace, db, clock):
    contact_ids = [add_contact(db, clock, name=f"P{n}") for n in range(3)]
    seen: list[int] = []

    @on_event("test-plain")
    def remember(db, event, clock):
        if event.type == "visit.due":
            seen.append(event.contact_id)

    try:
        with write_transaction(db):
            record_events(
                db,
                [NewEvent(contact_id, "visit.due") for contact_id in contact_ids],
                clock=clock,
            )
    finally:
        events_module._HOOKS[:] = [
            (name, hook) for name, hook in events_module._HOOKS if name != "test-plain"
        ]
    assert seen == contact_ids


def test_a_many_events_form_needs_its_hook():
    with pytest.raises(ValueError, match="no hook named"):

        @events_module.on_events("no-such-hook")
        def orphan(db, events, clock):
            pass
