"""`cxm due` agrees with the runner: caps, then send windows, then `when:`."""

from __future__ import annotations

from datetime import timedelta

from cxm_cli import clock as clocks
from cxm_cli.preview import preview_due
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

# Friday 10:00 in Chicago, as in the user trial.
FRIDAY_MORNING = "2026-12-04T16:00:00Z"
# Saturday 08:00 in Chicago: the day cap has lifted and the window is open.
SATURDAY_OPENING = "2026-12-05T14:00:00.000000Z"


def _pending(db, sequence: str) -> dict:
    return next(
        db.query(
            "SELECT * FROM due_steps WHERE sequence = ? AND status = 'pending'",
            [sequence],
        )
    )


def test_due_gives_the_runners_time_for_a_text_it_capped(cli, db, workspace, clock):
    update_settings(workspace, {"caps.sms_per_day": 1})
    only_sequences(workspace, two=TWO_TEXTS)
    clock.set(FRIDAY_MORNING)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    assert cli("run", "--once").exit_code == 0

    rows = cli("due", "--within", "2d", "--json").json()

    [row] = rows
    assert row["send_at"] == _pending(db, "two")["due_at"] == SATURDAY_OPENING
    assert row["local_time"] == "Sat 2026-12-05 08:00 CST"
    assert row["why"].count("cap:") == 1
    assert "quiet hours" not in row["why"]


def test_due_projects_a_capped_text_past_midnight_to_the_opening(db, workspace, clock):
    workspace = update_settings(workspace, {"caps.sms_per_day": 1})
    only_sequences(workspace, two=TWO_TEXTS)
    clock.set(FRIDAY_MORNING)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")

    first, second = preview_due(workspace, db, clock, within=timedelta(days=2))

    assert first["send_at"] == clocks.iso(clock.now())
    assert second["projected"] is True
    assert second["send_at"] == SATURDAY_OPENING
    assert second["why"] == (
        "projected after step 1; cap: 1 sms per day until Sat 00:00 CST; "
        "then quiet hours until Sat 08:00 CST"
    )


def test_due_and_the_runner_agree_on_a_capped_no_show_text(db, workspace, clock):
    # The shipped sequences: the new-lead text uses the day's one text, so the
    # no-show text an hour after the missed appointment waits for Saturday.
    workspace = update_settings(workspace, {"caps.sms_per_day": 1})
    clock.set(FRIDAY_MORNING)
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)
    clock.advance(hours=1)
    emit(db, clock, contact_id, "appointment.no_show")

    previews = preview_due(workspace, db, clock, within=timedelta(days=2))
    clock.advance(hours=1)
    run(workspace, db, clock)

    [text] = [
        p
        for p in previews
        if p["sequence"] == "no-show-recovery" and p["channel"] == "sms"
    ]
    assert text["send_at"] == _pending(db, "no-show-recovery")["due_at"]
    assert text["send_at"] == SATURDAY_OPENING
    assert text["why"].count("cap:") == 1
    assert text["why"].endswith("then quiet hours until Sat 08:00 CST")


BOOKED_AT_THREE = {"starts_at": "2026-03-05T15:00:00Z"}


def test_due_shows_a_step_whose_condition_no_longer_holds(cli, db, workspace, clock):
    # The shipped reminders: the same-day text goes only to who did not confirm.
    contact_id = make_contact(db, clock, timezone="America/New_York")
    emit(db, clock, contact_id, "appointment.booked", **BOOKED_AT_THREE)
    clock.set("2026-03-04T15:00:00Z")
    run(workspace, db, clock)
    emit(db, clock, contact_id, "appointment.confirmed")

    rows = cli("due", "--within", "2d", "--json").json()
    table = cli("due", "--within", "2d")

    [same_day] = rows
    assert same_day["step"] == "same-day (send sms)"
    assert same_day["condition"] == "does not hold"
    assert (
        "will be skipped: its condition (when:) does not hold (checked now"
        in same_day["why"]
    )
    assert "in the send window" not in same_day["why"]
    assert "will be skipped: its condition (when:)" in " ".join(table.stdout.split())
    # The runner, when it gets there, skips it just as shown.
    clock.set("2026-03-05T13:00:00Z")
    run(workspace, db, clock)
    assert len(outbound(db, contact_id)) == 1
    assert "step.skipped" in [kind for kind, _ in timeline(db, contact_id, "step.")]


def test_due_shows_a_step_with_a_holding_condition_as_usual(db, workspace, clock):
    contact_id = make_contact(db, clock, timezone="America/New_York")
    emit(db, clock, contact_id, "appointment.booked", **BOOKED_AT_THREE)

    rows = preview_due(workspace, db, clock, within=timedelta(days=3))

    same_day = rows[-1]
    assert same_day["projected"] is True
    assert same_day["condition"] == "holds"
    assert "will be skipped" not in same_day["why"]
    assert rows[0]["condition"] is None


def test_due_holds_a_step_whose_condition_cannot_be_checked(cli, db, workspace, clock):
    workspace = update_settings(workspace, {"segments.vip.tags": ["vip"]})
    only_sequences(
        workspace,
        vip="""
        trigger: lead.created
        steps:
          - send: sms
            text: hello
            when:
              segment: vip
        """,
    )
    contact_id = make_contact(db, clock, timezone="America/New_York")
    emit(db, clock, contact_id, "lead.created")
    # The segment is renamed in cxm.toml after the contact was enrolled.
    config = workspace.config_path.read_text(encoding="utf-8")
    workspace.config_path.write_text(
        config.replace("[segments.vip]", "[segments.gold]"), encoding="utf-8"
    )

    result = cli("due", "--json")

    assert result.exit_code == 0, result.stderr
    [row] = result.json()
    assert row["condition"] == "cannot be checked"
    assert "held: its condition (when:) cannot be checked: " in row["why"]
    assert "no segment named 'vip'" in row["why"]
