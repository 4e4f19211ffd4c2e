"""Sequence files: the shipped ones are clean, and every problem has a line."""

from __future__ import annotations

from cxm_cli.sequences import load_sequences
from tests.support.engine import (
    emit,
    only_sequences,
    outbound,
    run,
    timeline,
    write_sequence,
)
from tests.support.fixtures import make_contact

GOOD = """
name: follow-up
trigger: lead.created
steps:
  - send: sms
    template: new-lead-text
"""


def test_shipped_sequences_validate_clean(cli):
    result = cli("sequences", "validate")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_shipped_sequences_are_listed(cli):
    result = cli("sequences", "list", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in result.json()}
    assert {"new-lead", "appointment-reminder", "no-show-recovery"} <= set(rows)
    new_lead = rows["new-lead"]
    assert new_lead["trigger"] == "lead.created"
    assert new_lead["status"] == "ok"
    assert "replied" in new_lead["exits"] and "booked" in new_lead["exits"]
    assert rows["no-show-recovery"]["group"] == "nurture (50)"


def test_unknown_template_names_file_and_line_and_fails(cli, workspace):
    only_sequences(
        workspace,
        follow_up="""
        name: follow-up
        trigger: lead.created
        steps:
          - send: sms
            template: new-lead-text
          - wait: 1d
          - send: sms
            template: nudge-txt
        """,
    )
    result = cli("sequences", "validate")
    assert result.exit_code == 1
    assert "follow-up.yaml:8: template: unknown template 'nudge-txt'" in result.stdout
    assert "did you mean 'nudge-text'" in result.stdout


def test_every_problem_of_a_file_is_reported_with_its_line(cli, workspace):
    only_sequences(
        workspace,
        other=GOOD.replace("follow-up", "other"),
        broken="""
        name: broken
        trigger:
          event: lead.created
          when:
            tagz: [vip]
        reenrol: never
        exit:
          - replyed
        steps:
          - send: fax
            template: new-lead-text
          - wait: 3 fortnights
          - sned: sms
          - send: sms
            tempalte: new-lead-text
          - switch: no-such-sequence
          - branch: {has: phone}
            goto: nowhere
        """,
    )
    result = cli("sequences", "validate", "--json")
    assert result.exit_code == 1
    problems = {(p["line"], p["message"]) for p in result.json()["problems"]}
    files = {p["file"] for p in result.json()["problems"]}
    assert files == {"broken.yaml"}

    def has(line: int, *words: str) -> bool:
        return any(
            found_line == line and all(word in message for word in words)
            for found_line, message in problems
        )

    assert has(5, "tagz", "unknown condition", "did you mean 'tag'")
    assert has(6, "reenrol", "unknown field", "did you mean 'reenroll'")
    assert has(8, "replyed", "did you mean 'replied'")
    assert has(10, "send", "unknown channel 'fax'")
    assert has(12, "wait", "3 fortnights")
    assert has(13, "sned", "unknown step kind", "did you mean 'send'")
    assert has(15, "tempalte", "unknown field", "did you mean 'template'")
    assert has(16, "switch", "no sequence named 'no-such-sequence'")
    assert has(18, "goto", "no step named 'nowhere'")


def test_yaml_syntax_error_has_a_line(cli, workspace):
    only_sequences(workspace, bad="name: bad\nsteps:\n  - send: [sms\n  - wait: 1d\n")
    result = cli("sequences", "validate")
    assert result.exit_code == 1
    assert "bad.yaml:4: not valid YAML" in result.stdout


def test_loop_back_without_wait_is_refused(workspace):
    only_sequences(
        workspace,
        loop="""
        trigger: lead.created
        steps:
          - name: top
            add_tag: x
          - goto: top
        """,
    )
    problems = load_sequences(workspace).problems
    assert [p.line for p in problems] == [5]
    assert "would loop at once" in problems[0].message


def test_keyword_letters_stay_text_and_times_stay_times(workspace):
    only_sequences(
        workspace,
        reminder="""
        trigger: appointment.booked
        steps:
          - wait: until 9:30
          - send: sms
            template: appointment-reminder
            keywords: {Y: appointment.confirmed, N: appointment.cancelled}
        """,
    )
    result = load_sequences(workspace)
    assert result.problems == []
    step = result.sequences["reminder"].steps[1]
    assert step.spec["keywords"] == {
        "Y": "appointment.confirmed",
        "N": "appointment.cancelled",
    }


def test_a_broken_sequence_enrols_nobody_while_others_still_run(db, workspace, clock):
    only_sequences(
        workspace,
        good=GOOD.replace("follow-up", "good"),
        broken=GOOD.replace("follow-up", "broken").replace("new-lead-text", "nope"),
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    enrolled = [
        row["sequence"]
        for row in db.query("SELECT sequence FROM enrollments ORDER BY id")
    ]
    assert enrolled == ["good"]


def test_other_parts_step_kinds_validate_through_the_registry(workspace):
    write_sequence(
        workspace,
        "mover",
        """
        trigger: lead.created
        steps:
          - move_stage:
        """,
    )
    problems = [p for p in load_sequences(workspace).problems if p.file == "mover.yaml"]
    assert problems and problems[0].line == 3
    assert "stage" in problems[0].message


def test_typo_in_event_type_is_caught_but_custom_types_are_fine(workspace):
    only_sequences(
        workspace,
        typo=GOOD.replace("follow-up", "typo").replace(
            "lead.created", "appointment.boked"
        ),
        custom=GOOD.replace("follow-up", "custom").replace(
            "lead.created", "quote.requested"
        ),
    )
    problems = load_sequences(workspace).problems
    assert [(p.file, p.line) for p in problems] == [("typo.yaml", 2)]
    assert "did you mean 'appointment.booked'" in problems[0].message


STRAY_NEW_LEAD = """
name: new-lead
steps:
  - wait: 1d
"""


def test_two_files_with_one_name_are_both_reported_naming_each_other(cli, workspace):
    write_sequence(workspace, "broken", STRAY_NEW_LEAD)

    result = cli("sequences", "validate")

    assert result.exit_code == 1
    folder = workspace.sequences_dir
    lines = result.stdout.splitlines()
    assert any(
        line.startswith(f"{folder / 'broken.yaml'}:1: name: 'new-lead'")
        and "new-lead.yaml" in line
        for line in lines
    ), result.stdout
    assert any(
        line.startswith(f"{folder / 'new-lead.yaml'}:5: name: 'new-lead'")
        and "broken.yaml" in line
        for line in lines
    ), result.stdout
    listed = {
        row["file"]: row["status"] for row in cli("sequences", "list", "--json").json()
    }
    assert "problem" in listed["broken.yaml"]
    assert "problem" in listed["new-lead.yaml"]


def test_a_stray_file_with_a_taken_name_enrols_and_runs_nothing(db, workspace, clock):
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created", source="web")
    queued = list(db.query("SELECT * FROM due_steps WHERE status = 'pending'"))
    assert [row["sequence"] for row in queued] == ["new-lead"]
    write_sequence(workspace, "broken", STRAY_NEW_LEAD)

    sequence_set = load_sequences(workspace)
    assert "new-lead" not in sequence_set.active
    assert {"broken.yaml", "new-lead.yaml"} <= set(sequence_set.invalid)
    newcomer = make_contact(db, clock, first_name="Bea", email="bea@example.com")
    emit(db, clock, newcomer, "lead.created", source="web")
    run(workspace, db, clock)

    assert (
        list(db.query("SELECT * FROM enrollments WHERE contact_id = ?", [newcomer]))
        == []
    )
    assert outbound(db) == []
    row = db.execute("SELECT status FROM due_steps WHERE id = ?", [queued[0]["id"]])
    assert row.fetchone()[0] == "pending"
    assert ("step.deferred", "new-lead") in [
        (kind, data.get("sequence")) for kind, data in timeline(db, contact_id, "step.")
    ]
