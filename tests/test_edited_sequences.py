"""A sequence edited while contacts are in it: a queued step keeps its place.

The queue row of a step remembers what the step is (kind, channel, template,
name). Steps inserted or removed above it move it; the runner finds it again
by what it is, and never runs whatever step now sits at its old position.
"""

from __future__ import annotations

from tests.support.engine import (
    emit,
    only_sequences,
    outbound,
    run,
    timeline,
    write_sequence,
)
from tests.support.fixtures import make_contact

BEFORE = """
trigger: go
steps:
  - name: welcome
    send: email
    subject: Welcome
    text: Welcome aboard
  - wait: 1d
  - send: sms
    text: Still there?
"""


def _joined_and_welcomed(workspace, db, clock) -> int:
    only_sequences(workspace, flow=BEFORE)
    contact_id = make_contact(db, clock, email="uma@example.com", phone="+15125550801")
    emit(db, clock, contact_id, "go")
    run(workspace, db, clock)
    assert [m["subject"] for m in outbound(db, contact_id)] == ["Welcome"]
    return contact_id


def test_a_step_inserted_above_does_not_send_the_welcome_again(db, workspace, clock):
    contact_id = _joined_and_welcomed(workspace, db, clock)
    write_sequence(
        workspace,
        "flow",
        """
        trigger: go
        steps:
          - send: email
            subject: Hello
            text: A new first step
          - name: welcome
            send: email
            subject: Welcome
            text: Welcome aboard
          - wait: 1d
          - send: sms
            text: Still there?
        """,
    )

    clock.advance(days=1, minutes=1)
    report = run(workspace, db, clock)

    assert [r.outcome for r in report.results] == ["sent"]
    sent = outbound(db, contact_id)
    assert [(m["channel"], m["body"]) for m in sent] == [
        ("email", "Welcome aboard"),
        ("sms", "Still there?"),
    ]


def test_a_step_removed_above_does_not_skip_the_queued_one(db, workspace, clock):
    contact_id = _joined_and_welcomed(workspace, db, clock)
    write_sequence(
        workspace,
        "flow",
        """
        trigger: go
        steps:
          - wait: 1d
          - send: sms
            text: Still there, {{ first_name }}?
        """,
    )

    clock.advance(days=1, minutes=1)
    run(workspace, db, clock)

    # The queued text is the one step of its kind and channel: it is found
    # at its new position, with its new wording.
    assert [m["body"] for m in outbound(db, contact_id)][-1] == "Still there, Ana?"


def test_a_queued_step_that_cannot_be_told_apart_ends_the_enrollment(
    db, workspace, clock
):
    contact_id = _joined_and_welcomed(workspace, db, clock)
    write_sequence(
        workspace,
        "flow",
        """
        trigger: go
        steps:
          - send: sms
            text: A text on top
          - name: welcome
            send: email
            subject: Welcome
            text: Welcome aboard
          - wait: 1d
          - send: sms
            text: Still there?
        """,
    )

    clock.advance(days=1, minutes=1)
    run(workspace, db, clock)

    # Two unnamed texts: which one was queued cannot be told, so neither is
    # sent, and the timeline says why.
    assert [m["subject"] for m in outbound(db, contact_id)] == ["Welcome"]
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "cannot be found" in exited["reason"]
