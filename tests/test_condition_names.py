"""Names a sequence's conditions and exits rely on (segments, stages, step
names, inline texts) are checked before anything runs, and a condition that
cannot be checked at run time fails only its own step."""

from __future__ import annotations

import pytest

from cxm_cli.errors import ConfigError
from tests.support.engine import emit, only_sequences, outbound, run, timeline
from tests.support.fixtures import make_contact

GOOD = """
name: hello
trigger: lead.created
steps:
  - send: sms
    text: "Hi {{ first_name }}"
"""


def _validate(cli, workspace, text: str) -> str:
    only_sequences(workspace, checked=text, hello=GOOD)
    result = cli("sequences", "validate")
    assert result.exit_code == 1, result.stdout
    return result.stdout


def test_an_unknown_segment_in_a_condition_is_a_problem(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - when: {segment: returning-clinet}
            send: sms
            text: hi
        """,
    )
    assert "checked.yaml:3: segment: no segment named 'returning-clinet'" in out
    assert "did you mean 'returning-client'" in out


def test_unknown_stages_in_conditions_and_exit_rules_are_problems(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        exit:
          - stage: [wonn, lost]
        steps:
          - when: {any: [{tag: vip}, {stage: bookedd}]}
            send: sms
            text: hi
        """,
    )
    assert "checked.yaml:3: stage: 'wonn' (did you mean 'won'?) is not a stage" in out
    assert "checked.yaml:5: stage: 'bookedd' is not a stage" in out


def test_a_stage_of_a_pipeline_that_does_not_exist_is_a_problem(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: {event: lead.created, when: {stage: won, pipeline: salez}}
        steps:
          - send: sms
            text: hi
        """,
    )
    assert "pipeline: no pipeline named 'salez'" in out


def test_an_inline_text_with_broken_template_syntax_is_a_problem(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - send: email
            subject: "Hello {{ first_name }"
            text: "hi {{ first_name"
        """,
    )
    assert "text: template syntax error" in out
    assert "subject: template syntax error" in out


@pytest.mark.parametrize("word", ["no", "Yes", "off"])
def test_a_step_name_yaml_reads_as_true_or_false_asks_for_quotes(cli, workspace, word):
    out = _validate(
        cli,
        workspace,
        f"""
        trigger: lead.created
        steps:
          - branch: {{tag: vip}}
            goto: {word}
          - send: sms
            text: hi
          - name: {word}
            send: sms
            text: bye
        """,
    )
    assert "goto: YAML reads yes, no, on and off as true or false" in out
    assert "name: YAML reads yes, no, on and off as true or false" in out


def test_a_sequence_naming_an_unknown_segment_waits_and_others_still_send(
    workspace, db, clock
):
    checked = """
    trigger: vip.arrived
    steps:
      - when: {segment: %s}
        send: sms
        text: hi
    """
    only_sequences(workspace, checked=checked % "returning-client", hello=GOOD)
    waiting = make_contact(
        db, clock, first_name="Wes", email=None, phone="+15125550101"
    )
    greeted = make_contact(
        db, clock, first_name="Gia", email=None, phone="+15125550102"
    )
    emit(db, clock, waiting, "vip.arrived")
    emit(db, clock, greeted, "lead.created")
    # Edited after the contact joined: the segment's name now has a typo.
    only_sequences(workspace, checked=checked % "no-such-segment", hello=GOOD)

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {waiting: "deferred", greeted: "sent"}
    assert [m["body"] for m in outbound(db, greeted)] == ["Hi Gia"]
    deferred = [d for t, d in timeline(db, waiting) if t == "step.deferred"]
    assert "checked.yaml has problems" in deferred[0]["reason"]


def test_a_condition_that_cannot_be_checked_fails_only_its_step(
    workspace, db, clock, monkeypatch
):
    # A segment that broke after the sequences were checked (cxm.toml edited
    # under a running daemon): that contact's step fails with the reason, and
    # the run goes on with everyone else.
    only_sequences(
        workspace,
        checked="""
        trigger: vip.arrived
        steps:
          - when: {segment: returning-client}
            send: sms
            text: hi
        """,
        hello=GOOD,
    )
    import cxm_cli.segments as segments

    def broken(*args, **kwargs):
        raise ConfigError("segment 'returning-client' cannot be used: bad rule")

    monkeypatch.setattr(segments, "contact_in_segment", broken)
    failing = make_contact(
        db, clock, first_name="Fay", email=None, phone="+15125550103"
    )
    greeted = make_contact(
        db, clock, first_name="Gia", email=None, phone="+15125550104"
    )
    emit(db, clock, failing, "vip.arrived")
    emit(db, clock, greeted, "lead.created")

    report = run(workspace, db, clock)

    outcomes = {r.contact_id: r.outcome for r in report.results}
    assert outcomes == {failing: "failed", greeted: "sent"}
    failed = [d for t, d in timeline(db, failing) if t == "step.failed"]
    assert "its condition (when:) cannot be checked" in failed[0]["reason"]
    assert "bad rule" in failed[0]["reason"]
    assert outbound(db, failing) == []


def test_an_exit_rule_that_cannot_be_checked_does_not_lose_the_event(
    workspace, db, clock, monkeypatch
):
    only_sequences(
        workspace,
        hello="""
        trigger: lead.created
        exit:
          - event: note.added
            when: {segment: returning-client}
        steps:
          - wait: 1d
          - send: sms
            text: hi
        """,
    )
    import cxm_cli.segments as segments

    def broken(*args, **kwargs):
        raise ConfigError("segment 'returning-client' cannot be used: bad rule")

    monkeypatch.setattr(segments, "contact_in_segment", broken)
    contact_id = make_contact(
        db, clock, first_name="Ned", email=None, phone="+15125550105"
    )
    emit(db, clock, contact_id, "lead.created")

    emit(db, clock, contact_id, "note.added", text="called")

    assert "note.added" in [t for t, _ in timeline(db, contact_id)]
    [enrollment] = db.query("SELECT status FROM enrollments")
    assert enrollment["status"] == "active"


def test_a_misspelt_channel_in_an_exit_rule_is_a_problem(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        exit:
          - replied: smss
          - opted_out: [sms, emial]
        steps:
          - send: sms
            text: hi
        """,
    )
    assert (
        "checked.yaml:3: replied: unknown channel 'smss' (did you mean 'sms'?)" in out
    )
    assert "opted_out: unknown channel 'emial' (did you mean 'email'?)" in out


def test_move_stage_steps_and_task_texts_are_checked(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - move_stage: wonn
          - kind: move_stage
            stage: won
            pipeline: salez
          - task: "Call {{ first_name"
          - task: ok
            details: "x {% if %}"
          - move_stage: Won
        """,
    )
    assert "checked.yaml:3: stage: pipeline 'sales' has no stage 'wonn'" in out
    assert "did you mean 'won'" in out
    assert "checked.yaml:6: pipeline: " in out and "salez" in out
    assert "task: template syntax error" in out
    assert "details: template syntax error" in out
    # A stage named in another case is the same stage for a move.
    assert "'Won'" not in out


def test_every_unknown_stage_of_a_list_is_named(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        exit:
          - stage: [wonn, losst, won]
        steps:
          - when: {stage: Won}
            send: sms
            text: hi
        """,
    )
    assert "'wonn' (did you mean 'won'?) and 'losst' (did you mean 'lost'?)" in out
    assert "are not a stage of any pipeline" in out
    assert "'Won' (did you mean 'won'?) is not a stage" in out


def test_a_yes_goto_is_reported_once_with_its_own_word(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - branch: {tag: vip}
            goto: yes
          - name: "yes"
            send: sms
            text: hi
        """,
    )
    assert 'goto: "yes"' in out
    assert "no step named True" not in out


def test_unknown_filters_and_bad_staff_addresses_are_problems(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - send: sms
            text: "Hi {{ first_name | upperr }}"
          - task: "Call {{ first_name | nosuchfilter }}"
            to: not-an-email
          - send: sms
            text: "See you {{ starts_at | when }}"
        """,
    )
    assert (
        "checked.yaml:4: text: template error on its line 1: No filter named 'upperr'"
        in out
    )
    assert "No filter named 'nosuchfilter'" in out
    assert "to: 'not-an-email' is not an email address" in out
    assert "when" not in out.split("nosuchfilter")[1]


def test_a_stage_condition_that_is_not_a_name_is_reported_once(cli, workspace):
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - when: {stage: {in: [won]}}
            send: sms
            text: hi
        """,
    )
    assert out.count("stage:") == 1


def test_a_template_file_with_an_unknown_filter_is_a_problem(cli, workspace):
    folder = workspace.root / "templates"
    folder.mkdir(exist_ok=True)
    (folder / "shout.j2").write_text(
        "---\nchannels: [sms]\n---\nHi {{ first_name | shoutt }}\n", encoding="utf-8"
    )
    out = _validate(
        cli,
        workspace,
        """
        trigger: lead.created
        steps:
          - send: sms
            template: shout
        """,
    )
    assert "template: 'shout'" in out and "No filter named 'shoutt'" in out


def test_an_unknown_jinja_test_fails_its_step_without_a_crash(
    workspace, db, clock, caplog
):
    only_sequences(
        workspace,
        hello="""
        trigger: lead.created
        steps:
          - send: sms
            text: "{% if first_name is divisible_byy 3 %}x{% endif %}y"
        """,
    )
    contact_id = make_contact(db, clock, email=None, phone="+15125550106")
    emit(db, clock, contact_id, "lead.created")

    [result] = run(workspace, db, clock).results

    assert result.outcome == "failed"
    assert "divisible_byy" in result.detail
    assert "crashed" not in caplog.text
