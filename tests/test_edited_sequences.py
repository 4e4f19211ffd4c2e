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


def test_a_reworded_step_whose_anchor_was_removed_is_not_guessed(db, workspace, clock):
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

    # The welcome (the last step she had) is gone and the queued text was
    # reworded: where it went cannot be told, so nothing is guessed, and the
    # timeline says why.
    assert [m["subject"] for m in outbound(db, contact_id)] == ["Welcome"]
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "cannot be found" in exited["reason"]


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
            text: Still there?
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

    # Two texts exactly alike: which one was queued cannot be told, so
    # neither is sent, and the timeline says why.
    assert [m["subject"] for m in outbound(db, contact_id)] == ["Welcome"]
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "cannot be found" in exited["reason"]


UNNAMED = """
trigger: go
steps:
  - send: sms
    text: A
  - wait: 1d
  - send: sms
    text: B
  - wait: 1d
  - send: sms
    text: C
"""


def _texts(db, contact_id) -> list[str]:
    return [m["body"] for m in outbound(db, contact_id)]


def _after_a(workspace, db, clock, sequence: str) -> int:
    only_sequences(workspace, flow=sequence)
    contact_id = make_contact(db, clock, email=None, phone="+15125550802")
    emit(db, clock, contact_id, "go")
    run(workspace, db, clock)
    assert _texts(db, contact_id) == ["A"]
    return contact_id


def _days_pass(workspace, db, clock, days: int = 3) -> None:
    for _ in range(days):
        clock.advance(days=1, minutes=1)
        run(workspace, db, clock)


def test_swapped_unnamed_texts_send_none_twice(db, workspace, clock):
    contact_id = _after_a(workspace, db, clock, UNNAMED)
    write_sequence(
        workspace,
        "flow",
        UNNAMED.replace("text: A", "text: X")
        .replace("text: B", "text: A")
        .replace("text: X", "text: B"),
    )

    _days_pass(workspace, db, clock)

    # B is found first in the file now, and A, already sent, comes after it:
    # going on would send A again, so the enrollment ends, saying why.
    assert _texts(db, contact_id) == ["A"]
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "already done" in exited["reason"]


def test_a_sent_step_moved_below_the_queued_one_is_not_sent_again(db, workspace, clock):
    named = UNNAMED.replace(
        "  - send: sms\n    text: A", "  - name: a\n    send: sms\n    text: A"
    ).replace("  - send: sms\n    text: B", "  - name: b\n    send: sms\n    text: B")
    contact_id = _after_a(workspace, db, clock, named)
    write_sequence(
        workspace,
        "flow",
        """
        trigger: go
        steps:
          - name: b
            send: sms
            text: B
          - wait: 1d
          - name: a
            send: sms
            text: A
          - wait: 1d
          - send: sms
            text: C
        """,
    )

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id).count("A") == 1


def test_an_unnamed_text_inserted_above_is_not_run_in_the_queued_ones_place(
    db, workspace, clock
):
    contact_id = _after_a(workspace, db, clock, UNNAMED)
    write_sequence(
        workspace,
        "flow",
        UNNAMED.replace(
            "  - wait: 1d\n  - send: sms\n    text: B",
            "  - send: sms\n    text: X\n  - wait: 1d\n  - send: sms\n    text: B",
            1,
        ),
    )

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id) == ["A", "B", "C"]


def test_a_reworded_unnamed_text_goes_out_with_its_new_words(db, workspace, clock):
    contact_id = _after_a(workspace, db, clock, UNNAMED)
    write_sequence(workspace, "flow", UNNAMED.replace("text: B", "text: B, reworded"))

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id) == ["A", "B, reworded", "C"]


def test_due_says_a_reordered_sequence_ends_the_enrollment(db, workspace, clock):
    from datetime import timedelta

    from cxm_cli.preview import preview_due

    contact_id = _after_a(workspace, db, clock, UNNAMED)
    write_sequence(
        workspace,
        "flow",
        UNNAMED.replace("text: A", "text: X")
        .replace("text: B", "text: A")
        .replace("text: X", "text: B"),
    )

    [row] = preview_due(workspace, db, clock, within=timedelta(days=3))

    assert row["contact_id"] == contact_id
    assert row["why"].startswith("will be cancelled: sequence flow changed")
    assert "already done" in row["why"]


FIVE = """
trigger: go
caps: false
steps:
  - send: sms
    text: A
  - wait: 1h
  - send: sms
    text: B
  - wait: 1h
  - send: sms
    text: C
"""


def _after_a_and_b(workspace, db, clock) -> int:
    contact_id = _after_a(workspace, db, clock, FIVE)
    clock.advance(hours=1, minutes=1)
    run(workspace, db, clock)
    assert _texts(db, contact_id) == ["A", "B"]
    return contact_id


def test_a_step_added_on_top_and_the_queued_one_reworded_sends_nothing_twice(
    db, workspace, clock
):
    contact_id = _after_a_and_b(workspace, db, clock)
    edited = (
        "trigger: go\ncaps: false\nsteps:\n  - send: sms\n    text: Y\n"
        + FIVE.split("steps:\n", 1)[1].replace("text: C", "text: C, typo fixed")
    )
    write_sequence(workspace, "flow", edited)

    _days_pass(workspace, db, clock)

    # C's place moved down one with the new first step: its new wording goes,
    # and B (now where C was) is not sent again.
    assert _texts(db, contact_id) == ["A", "B", "C, typo fixed"]


def test_a_step_removed_above_and_the_queued_one_reworded_is_not_lost(
    db, workspace, clock
):
    contact_id = _after_a_and_b(workspace, db, clock)
    edited = FIVE.replace("  - send: sms\n    text: A\n  - wait: 1h\n", "", 1)
    write_sequence(workspace, "flow", edited.replace("text: C", "text: C, reworded"))

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id) == ["A", "B", "C, reworded"]


def test_a_copy_of_a_sent_step_below_the_queued_one_is_not_sent_again(
    db, workspace, clock
):
    contact_id = _after_a_and_b(workspace, db, clock)
    write_sequence(
        workspace, "flow", FIVE + "  - wait: 1h\n  - send: sms\n    text: B\n"
    )

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id) == ["A", "B", "C"]
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "already done at another place" in exited["reason"]


def test_a_goto_loop_still_sends_its_step_each_time_round(db, workspace, clock):
    only_sequences(
        workspace,
        loop="""
        trigger: go
        steps:
          - name: ping
            send: sms
            text: Ping
          - wait: 1d
          - branch: {tag: stop}
            goto: done
            else: ping
          - name: done
            end: stopped
        """,
    )
    contact_id = make_contact(db, clock, email=None, phone="+15125550803")
    emit(db, clock, contact_id, "go")
    run(workspace, db, clock)
    _days_pass(workspace, db, clock, days=2)

    assert _texts(db, contact_id) == ["Ping", "Ping", "Ping"]


def test_a_step_written_twice_on_purpose_is_sent_twice(db, workspace, clock):
    twice = FIVE.replace("text: C", "text: A")
    contact_id = _after_a(workspace, db, clock, twice)

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id) == ["A", "B", "A"]


def test_a_step_added_on_top_and_a_swap_below_sends_nothing_twice(db, workspace, clock):
    contact_id = _after_a_and_b(workspace, db, clock)
    # B (sent) and C (queued) swap places while a new first step pushes
    # everything down one: C keeps its old index, B now comes after it.
    write_sequence(
        workspace,
        "flow",
        """
        trigger: go
        caps: false
        steps:
          - send: sms
            text: New
          - wait: 1h
          - send: sms
            text: A
          - wait: 1h
          - send: sms
            text: C
          - wait: 1h
          - send: sms
            text: B
        """,
    )

    _days_pass(workspace, db, clock)

    assert _texts(db, contact_id).count("B") == 1
    [exited] = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert "now comes after" in exited["reason"]
