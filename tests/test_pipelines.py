"""Pipelines: configuration, moves, automatic rules, timed rules, the step kind."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest

from cxm_cli import clock as clocks
from cxm_cli.errors import InputError, NotFound
from cxm_cli.events import record_event
from cxm_cli.pipelines import (
    DEFAULT_PIPELINES,
    DEFAULT_RULES,
    ConfigPlaces,
    current_stage,
    move_contact,
    parse_pipeline_config,
    pipeline_config,
    stage_history,
)
from cxm_cli.steps import STEP_KINDS, StepContext
from cxm_cli.transitions import check_idle_rules
from cxm_cli.workspace import TEMPLATE_DIR, load_workspace
from tests.support.contacts import add_contact


def stage_of(db, contact_id, pipeline="sales"):
    row = current_stage(db, contact_id, pipeline)
    return row["stage"] if row else None


def rewrite_config(workspace, old: str, new: str):
    """Edit the workspace's cxm.toml and return the reloaded workspace."""
    text = workspace.config_path.read_text(encoding="utf-8")
    assert old in text, old
    workspace.config_path.write_text(text.replace(old, new, 1), encoding="utf-8")
    reloaded = load_workspace(workspace.root)
    reloaded.open_db().close()  # hooks now see the new configuration
    return reloaded


# --- configuration ---------------------------------------------------------------


def test_new_workspace_has_the_default_service_pipeline(workspace):
    config = pipeline_config(workspace)

    assert config.problems == []
    sales = config.pipeline()
    assert [s.name for s in sales.stages] == [
        "new",
        "contacted",
        "consult booked",
        "proposal sent",
        "active client",
        "follow-up",
        "won",
        "lost",
    ]
    assert [s.kind for s in sales.stages][-2:] == ["won", "lost"]
    assert sales.stage("Consult_Booked").name == "consult booked"


def test_template_and_built_in_defaults_agree():
    text = (TEMPLATE_DIR / "cxm.toml").read_text(encoding="utf-8")
    from_template = parse_pipeline_config(tomllib.loads(text), ConfigPlaces(text))
    built_in = parse_pipeline_config({}, ConfigPlaces(""))

    assert from_template.problems == []
    assert [replace(r, line=None) for r in from_template.rules] == built_in.rules
    assert from_template.pipeline().stages == built_in.pipeline().stages
    assert len(built_in.rules) == len(DEFAULT_RULES)
    assert DEFAULT_PIPELINES[0]["name"] == "sales"


BAD_CONFIG = """
[[pipelines]]
name = "sales"
stages = ["new", "contacted", { name = "won", kind = "won" }]

[[pipelines]]
name = "sales"
stages = ["other"]

[[pipelines]]
name = "referrals"
stages = ["asked", "received", { name = "thanked", kind = "happy" }]

[[pipeline_rules]]
on = "form.submitted"
to = "new"

[[pipeline_rules]]
on = "message.sent"
from = ["new"]
to = "contactd"

[[pipeline_rules]]
on = "message.received"
to = "contacted"
form = ["new"]

[[pipeline_rules]]
on = "no_reply"
to = "contacted"

[[pipeline_rules]]
on = "tag.added"
pipeline = "referrals"
where = { tag = "referral" }
to = "asked"
"""


def test_bad_configuration_is_reported_with_its_line_and_stops_nothing_else():
    text = BAD_CONFIG
    config = parse_pipeline_config(tomllib.loads(text), ConfigPlaces(text))
    lines = text.splitlines()
    messages = [str(p) for p in config.problems]

    def line_of(problem_fragment: str) -> str:
        problem = next(p for p in config.problems if problem_fragment in p.message)
        return lines[problem.line - 1]

    # Two pipelines with one name: the second is ignored, at its name line.
    assert any("[[pipelines]] #2" in m and "already defined" in m for m in messages)
    assert line_of("already defined") == 'name = "sales"'
    assert line_of("already defined") is not None
    # A stage kind that does not exist.
    assert "kind" in line_of("kind must be") or "stages" in line_of("kind must be")
    # A rule naming an unknown stage, pointing at its `to` line.
    assert line_of("unknown stage 'contactd'") == 'to = "contactd"'
    assert any("[[pipeline_rules]] #2" in m for m in messages)
    # A misspelt key is not silently read as "from any stage".
    assert line_of("unknown setting 'form'") == 'form = ["new"]'
    # A timed rule without its number of days.
    assert any("#4" in m and "days" in m for m in messages)
    for problem in config.problems:
        assert str(problem).startswith(f"cxm.toml:{problem.line} ")

    # The valid parts work: two pipelines, rules 1 and 5.
    assert list(config.pipelines) == ["sales", "referrals"]
    assert [s.name for s in config.pipeline("sales").stages] == [
        "new",
        "contacted",
        "won",
    ]
    assert [s.kind for s in config.pipeline("referrals").stages] == [
        "open",
        "open",
        "open",
    ]
    assert [rule.number for rule in config.rules] == [1, 5]


def test_a_workspace_with_bad_rules_still_moves_people_by_the_good_ones(
    workspace, clock, cli
):
    workspace = rewrite_config(
        workspace,
        'on = "message.sent"          # the first message we send\nfrom = ["new"]\n'
        'to = "contacted"',
        'on = "message.sent"\nfrom = ["new"]\nto = "contacterd"',
    )
    db = workspace.open_db()
    contact = add_contact(db, clock)

    record_event(db, contact, "form.submitted", clock=clock, data={"form": "web"})
    record_event(db, contact, "message.sent", clock=clock, data={"channel": "sms"})
    record_event(db, contact, "appointment.booked", clock=clock)

    # The broken rule moved nobody; the rules around it did their job.
    assert [e.data["to"] for e in stage_history(db, contact)] == [
        "new",
        "consult booked",
    ]
    db.close()

    result = cli("pipeline", "list", "--json")
    assert result.exit_code == 0
    problems = result.json()["problems"]
    assert len(problems) == 1
    assert "unknown stage 'contacterd'" in problems[0]
    assert problems[0].startswith("cxm.toml:")

    board = cli("pipeline", "board")
    assert board.exit_code == 0
    assert "contacterd" in board.stderr
    assert "[[pipeline_rules]] #3" in board.stderr  # not eaten as rich markup


def test_a_config_without_pipelines_uses_the_default(tmp_path):
    config = parse_pipeline_config({"business": {"name": "x"}}, ConfigPlaces(""))
    assert config.default_name == "sales"
    assert len(config.rules) == len(DEFAULT_RULES)


def test_unknown_pipeline_is_a_clear_error(workspace):
    with pytest.raises(NotFound, match="no pipeline named 'hiring'"):
        pipeline_config(workspace).pipeline("hiring")


# --- moving by hand --------------------------------------------------------------


def test_move_records_the_stage_change_on_the_timeline(db, workspace, clock):
    contact = add_contact(db, clock)

    first = move_contact(db, workspace, clock, contact, "contacted", by="cli")
    clock.advance(days=2)
    second = move_contact(
        db,
        workspace,
        clock,
        contact,
        "proposal-sent",
        value=2400,
        note="implant plan",
        by="cli",
        reason="sent the plan",
    )

    assert (first.from_stage, first.to_stage, first.changed) == (
        None,
        "contacted",
        True,
    )
    assert (second.from_stage, second.to_stage) == ("contacted", "proposal sent")
    history = stage_history(db, contact)
    assert [e.data for e in history] == [
        {
            "pipeline": "sales",
            "from": None,
            "to": "contacted",
            "by": "cli",
            "reason": None,
        },
        {
            "pipeline": "sales",
            "from": "contacted",
            "to": "proposal sent",
            "by": "cli",
            "reason": "sent the plan",
            "value": 2400.0,
            "note": "implant plan",
        },
    ]
    row = current_stage(db, contact, "sales")
    assert row["stage"] == "proposal sent"
    assert row["value"] == 2400.0
    assert row["entered_at"] == clocks.now_iso(clock)


def test_moving_to_the_same_stage_records_nothing_but_keeps_the_value(
    db, workspace, clock
):
    contact = add_contact(db, clock)
    move_contact(db, workspace, clock, contact, "contacted", value=100)
    clock.advance(days=1)

    again = move_contact(db, workspace, clock, contact, "contacted", value=300)
    later = move_contact(db, workspace, clock, contact, "won")

    assert again.changed is False
    assert len(stage_history(db, contact)) == 2
    assert later.value == 300.0  # the deal value follows the contact


def test_bad_moves_are_refused(db, workspace, clock):
    contact = add_contact(db, clock)
    with pytest.raises(NotFound, match="no stage 'signed'"):
        move_contact(db, workspace, clock, contact, "signed")
    with pytest.raises(NotFound, match="no contact"):
        move_contact(db, workspace, clock, 9999, "new")
    with pytest.raises(InputError, match="negative"):
        move_contact(db, workspace, clock, contact, "new", value=-5)
    assert stage_history(db, contact) == []


def test_cli_move_finds_the_contact_by_email(db, workspace, clock, cli):
    contact = add_contact(db, clock)
    db["contact_emails"].insert(
        {
            "contact_id": contact,
            "email": "ana@example.com",
            "is_primary": 1,
            "created_at": clocks.now_iso(clock),
        }
    )

    result = cli(
        "pipeline",
        "move",
        "ana@example.com",
        "consult booked",
        "--value",
        "900",
        "--note",
        "called in",
        "--json",
    )

    assert result.exit_code == 0, result.stderr
    assert result.json()["to"] == "consult booked"
    assert stage_of(db, contact) == "consult booked"
    assert stage_history(db, contact)[-1].data["reason"] == "called in"

    unknown = cli("pipeline", "move", str(contact), "nowhere")
    assert unknown.exit_code != 0
    assert "no stage 'nowhere'" in unknown.stderr


# --- automatic rules -------------------------------------------------------------


def test_rules_never_move_a_contact_backwards(db, workspace, clock):
    contact = add_contact(db, clock)
    record_event(db, contact, "form.submitted", clock=clock)
    record_event(db, contact, "appointment.booked", clock=clock)
    assert stage_of(db, contact) == "consult booked"

    # A second form and an outbound message would be backwards moves.
    record_event(db, contact, "form.submitted", clock=clock)
    record_event(db, contact, "message.sent", clock=clock, data={"channel": "sms"})

    assert stage_of(db, contact) == "consult booked"
    assert [e.data["to"] for e in stage_history(db, contact)] == [
        "new",
        "consult booked",
    ]


def test_a_rule_may_move_backwards_when_it_says_so(db, workspace, clock):
    contact = add_contact(db, clock)
    move_contact(db, workspace, clock, contact, "lost")

    record_event(db, contact, "invoice.paid", clock=clock, data={"amount": 50})
    assert stage_of(db, contact) == "lost"  # invoice rule has no backwards

    record_event(db, contact, "appointment.booked", clock=clock)
    assert stage_of(db, contact) == "consult booked"
    last = stage_history(db, contact)[-1]
    assert last.data["by"] == "rule:10"
    assert last.data["from"] == "lost"


def test_where_filters_on_event_data(workspace, clock):
    workspace = rewrite_config(
        workspace,
        'on = "invoice.paid"\nto = "active client"',
        'on = "invoice.paid"\nwhere = { currency = ["USD", "CAD"] }\n'
        'to = "active client"',
    )
    db = workspace.open_db()
    contact = add_contact(db, clock)

    record_event(db, contact, "invoice.paid", clock=clock, data={"currency": "EUR"})
    assert stage_of(db, contact) is None
    record_event(db, contact, "invoice.paid", clock=clock, data={"currency": "CAD"})
    assert stage_of(db, contact) == "active client"
    db.close()


def test_a_rule_moved_by_an_imported_event_keeps_the_event_time(db, workspace, clock):
    contact = add_contact(db, clock)
    record_event(db, contact, "form.submitted", clock=clock, at="2025-11-03T10:00:00Z")

    row = current_stage(db, contact, "sales")
    assert row["entered_at"] == "2025-11-03T10:00:00.000000Z"
    assert stage_history(db, contact)[0].at == row["entered_at"]


def test_stage_changes_in_one_pipeline_can_drive_another(workspace, clock):
    workspace = rewrite_config(
        workspace,
        "# --- Segments",
        '[[pipelines]]\nname = "onboarding"\nstages = ["welcome", "set up"]\n\n'
        '[[pipeline_rules]]\non = "stage.changed"\npipeline = "onboarding"\n'
        'where = { pipeline = "sales", to = "won" }\nto = "welcome"\n\n'
        "# --- Segments",
    )
    db = workspace.open_db()
    contact = add_contact(db, clock)

    move_contact(db, workspace, clock, contact, "won")

    assert stage_of(db, contact, "onboarding") == "welcome"
    assert stage_of(db, contact, "sales") == "won"
    db.close()


# --- timed rules -----------------------------------------------------------------


def test_no_reply_moves_a_silent_contact_after_the_wait(db, workspace, clock):
    silent = add_contact(db, clock, "Silent Sam")
    replied = add_contact(db, clock, "Replying Rita")
    for contact in (silent, replied):
        record_event(db, contact, "form.submitted", clock=clock)
        record_event(db, contact, "message.sent", clock=clock, data={"channel": "sms"})
    clock.advance(days=3)
    record_event(db, replied, "message.received", clock=clock, data={"channel": "sms"})

    clock.advance(days=26)
    assert check_idle_rules(db, workspace, clock) == []

    clock.advance(days=2)
    moves = check_idle_rules(db, workspace, clock)

    assert [(m.contact_id, m.from_stage, m.to_stage) for m in moves] == [
        (silent, "contacted", "lost")
    ]
    assert stage_history(db, silent)[-1].data["reason"] == "no reply for 30 days"
    assert stage_of(db, replied) == "contacted"
    assert check_idle_rules(db, workspace, clock) == []  # nothing twice


def test_no_visit_invites_back_once_per_lapse(db, workspace, clock):
    patient = add_contact(db, clock, "Pat Patient")
    booked_again = add_contact(db, clock, "Bea Booked")
    cancelled = add_contact(db, clock, "Cal Cancelled")
    for contact in (patient, booked_again, cancelled):
        record_event(db, contact, "invoice.paid", clock=clock, data={"amount": 90})
        record_event(db, contact, "appointment.completed", clock=clock)
    assert stage_of(db, patient) == "follow-up"
    move_contact(db, workspace, clock, patient, "active client", by="test")
    clock.advance(days=30)
    record_event(db, booked_again, "appointment.booked", clock=clock)
    record_event(db, cancelled, "appointment.booked", clock=clock)
    clock.advance(days=1)
    record_event(db, cancelled, "appointment.cancelled", clock=clock)

    clock.advance(days=148)
    assert check_idle_rules(db, workspace, clock) == []
    clock.advance(days=2)
    moves = check_idle_rules(db, workspace, clock)

    due = list(db.query("SELECT contact_id, data FROM events WHERE type='visit.due'"))
    assert sorted(row["contact_id"] for row in due) == [patient, cancelled]
    # Cancelled came back (follow-up -> active client) and lapsed again.
    assert [(m.contact_id, m.to_stage) for m in moves] == [
        (patient, "follow-up"),
        (cancelled, "follow-up"),
    ]
    # Once per lapse: the next pass records nothing new.
    check_idle_rules(db, workspace, clock)
    assert (
        db.execute("SELECT COUNT(*) FROM events WHERE type='visit.due'").fetchone()[0]
        == 2
    )

    # A new visit starts a new lapse.
    record_event(db, patient, "appointment.completed", clock=clock)
    clock.advance(days=181)
    check_idle_rules(db, workspace, clock)
    assert (
        db.execute(
            "SELECT COUNT(*) FROM events WHERE type='visit.due' AND contact_id=?",
            [patient],
        ).fetchone()[0]
        == 2
    )


# --- the move_stage step kind ----------------------------------------------------


def test_move_stage_step_kind(db, workspace, clock):
    kind = STEP_KINDS["move_stage"]
    assert kind.validate({"kind": "move_stage", "stage": "won"}) == []
    assert kind.validate({"kind": "move_stage"}) == [
        "move_stage needs stage: <stage name>"
    ]
    assert "value" in kind.validate({"stage": "won", "value": "lots"})[0]

    contact = add_contact(db, clock)
    context = StepContext(
        db=db,
        workspace=workspace,
        clock=clock,
        contact={"id": contact},
        enrollment={"id": 1, "sequence": "new-lead"},
        step={"kind": "move_stage", "stage": "proposal sent", "value": 500},
    )
    outcome = kind.run(context)
    assert outcome.status == "done"
    assert stage_of(db, contact) == "proposal sent"
    assert stage_history(db, contact)[-1].data["by"] == "sequence:new-lead"

    context.step = {"kind": "move_stage", "stage": "nowhere"}
    assert kind.run(context).status == "failed"

    context.step = {"kind": "move_stage", "stage": "won"}
    context.dry_run = True
    assert kind.run(context).status == "done"
    assert stage_of(db, contact) == "proposal sent"
