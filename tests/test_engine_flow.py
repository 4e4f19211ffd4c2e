"""A week of follow-ups, driven by a fake clock across a daylight-saving change.

Four leads arrive on Friday 6 March 2026 at 21:30 in Chicago (quiet hours);
the US clocks go forward early on Sunday 8 March. Every message and its time
is checked: the branch, a reply that stops one lead's follow-up, a no-show
whose exit rule switches to a recovery sequence (held back a day by the
one-text-a-day cap), and a switch step.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from cxm_cli import clock as clocks
from cxm_cli.contacts import add_tag
from cxm_cli.store import write_transaction
from tests.support.engine import emit, only_sequences, outbound, run_until, timeline
from tests.support.fixtures import make_contact, update_settings

CHICAGO = ZoneInfo("America/Chicago")

NURTURE = """
name: nurture
trigger: lead.created
group: nurture
priority: 10
exit:
  - replied
  - event: appointment.no_show
    switch_to: recovery
steps:
  - name: hello
    send: sms
    template: new-lead-text
  - wait: 1d
  - branch:
      tags_any: [hot]
    goto: hot
  - send: email
    template: nudge-email
  - wait: 2 business days at 10:00
  - send: sms
    template: still-interested
  - end: nurture finished
  - name: hot
    send: sms
    template: nudge-text
  - switch: vip
"""

RECOVERY = """
name: recovery
group: nurture
priority: 50
exit: [booked]
steps:
  - wait: 1h
  - send: sms
    template: no-show-recovery
"""

VIP = """
name: vip
steps:
  - add_tag: vip
  - send: email
    template: new-lead-email
"""


def sent(db, contact_id):
    """(template, local time in Chicago) of every message to the contact."""
    return [
        (
            message["template"],
            clocks.parse(message["at"]).astimezone(CHICAGO).strftime("%a %d %H:%M %Z"),
        )
        for message in outbound(db, contact_id)
    ]


def test_a_week_of_follow_ups_across_daylight_saving(db, workspace, clock):
    only_sequences(workspace, nurture=NURTURE, recovery=RECOVERY, vip=VIP)
    clock.set("2026-03-07T03:30:00Z")  # Friday 21:30 CST
    plain, hot, replier, no_show = (
        make_contact(
            db,
            clock,
            email=f"{name}@example.com",
            phone=f"+1512555010{index}",
            timezone="America/Chicago",
        )
        for index, name in enumerate(["plain", "hot", "replier", "noshow"])
    )
    with write_transaction(db):
        add_tag(db, hot, "hot", clock=clock)
    for contact_id in (plain, hot, replier, no_show):
        emit(db, clock, contact_id, "lead.created", source="web")

    run_until(workspace, db, clock, "2026-03-07T16:00:00Z")  # Sat 10:00 CST
    emit(db, clock, replier, "message.received", channel="sms", text="Call me")
    run_until(workspace, db, clock, "2026-03-08T00:00:00Z")  # Sat 18:00 CST
    emit(db, clock, no_show, "appointment.no_show")
    run_until(workspace, db, clock, "2026-03-12T00:00:00Z")

    # Night-time leads wait for 08:00; "1d" keeps 08:00 across the change.
    assert sent(db, plain) == [
        ("new-lead-text", "Sat 07 08:00 CST"),
        ("nudge-email", "Sun 08 08:00 CDT"),
        ("still-interested", "Tue 10 10:00 CDT"),
    ]
    assert sent(db, hot) == [
        ("new-lead-text", "Sat 07 08:00 CST"),
        ("nudge-text", "Sun 08 08:00 CDT"),
        ("new-lead-email", "Sun 08 08:00 CDT"),
    ]
    assert sent(db, replier) == [("new-lead-text", "Sat 07 08:00 CST")]
    # The no-show's recovery text was due at 19:00 but had a text that day.
    assert sent(db, no_show) == [
        ("new-lead-text", "Sat 07 08:00 CST"),
        ("no-show-recovery", "Sun 08 08:00 CDT"),
    ]

    statuses = {
        (row["contact_id"], row["sequence"]): (row["status"], row["end_reason"])
        for row in db.query("SELECT * FROM enrollments")
    }
    assert statuses[(plain, "nurture")] == ("completed", "nurture finished")
    assert statuses[(hot, "nurture")] == ("exited", "switched to vip")
    assert statuses[(hot, "vip")] == ("completed", "all steps done")
    assert statuses[(replier, "nurture")] == ("exited", "replied")
    assert statuses[(no_show, "nurture")] == (
        "exited",
        "event appointment.no_show; switching to recovery",
    )
    assert statuses[(no_show, "recovery")] == ("completed", "all steps done")

    # Why, for every step: the timeline explains each decision.
    plain_steps = [
        (t, d.get("label") or d.get("kind")) for t, d in timeline(db, plain, "step.")
    ]
    assert plain_steps[0] == ("step.deferred", "hello")
    assert ("step.done", "branch") in plain_steps
    capped = [d for t, d in timeline(db, no_show) if t == "step.capped"]
    assert capped and capped[0]["reason"] == "cap: 1 sms per day"
    assert capped[0]["local_until"] == "2026-03-08 08:00 CDT"
    cancelled = [d for t, d in timeline(db, replier) if t == "step.cancelled"]
    assert cancelled[0]["reason"] == "replied"
    assert "vip" in [
        row["tag"]
        for row in db.query("SELECT tag FROM contact_tags WHERE contact_id = ?", [hot])
    ]


def test_shipped_reminder_confirms_by_keyword_and_skips_the_second_reminder(
    db, workspace, clock
):
    # The shipped sequences, as `cxm init` copied them.
    clock.set("2026-03-02T15:00:00Z")  # Monday 09:00 CST
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(
        db,
        clock,
        contact_id,
        "appointment.booked",
        appointment_id="A7",
        starts_at="2026-03-04T17:00:00Z",
    )  # Wednesday 11:00 CST
    run_until(workspace, db, clock, "2026-03-03T17:30:00Z")
    assert sent(db, contact_id) == [("appointment-reminder", "Tue 03 11:00 CST")]

    emit(db, clock, contact_id, "message.received", channel="sms", text="c")
    run_until(workspace, db, clock, "2026-03-05T00:00:00Z")
    assert sent(db, contact_id) == [("appointment-reminder", "Tue 03 11:00 CST")]
    confirmed = [d for t, d in timeline(db, contact_id) if t == "appointment.confirmed"]
    assert confirmed[0]["appointment_id"] == "A7"
    skipped = [d for t, d in timeline(db, contact_id) if t == "step.skipped"]
    assert skipped[0]["label"] == "same-day"


def test_shipped_reminder_r_answer_sends_the_rebooking_text(db, workspace, clock):
    clock.set("2026-03-02T15:00:00Z")
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-04T17:00:00Z")
    run_until(workspace, db, clock, "2026-03-03T17:30:00Z")
    emit(db, clock, contact_id, "message.received", channel="sms", text="R")
    run_until(workspace, db, clock, "2026-03-03T18:00:00Z")
    bodies = [m["body"] for m in outbound(db, contact_id)]
    assert bodies[-1].startswith("No problem!")
    task = [
        (t, d) for t, d in timeline(db, contact_id, "step.") if d.get("kind") == "task"
    ]
    # No staff address in a fresh workspace: the task fails, saying why, so
    # the promised call shows up among the failures.
    assert task[0][0] == "step.failed"
    assert task[0][1]["reason"].startswith("no staff address")
    # The reminder sequence ended with the R answer: no "see you soon" text.
    run_until(workspace, db, clock, "2026-03-04T17:00:00Z")
    assert outbound(db, contact_id)[-1]["body"] == bodies[-1]
    ended = [d for t, d in timeline(db, contact_id) if t == "sequence.exited"]
    assert any("appointment.reschedule_requested" in d["reason"] for d in ended)


def test_shipped_new_lead_nudges_by_email_when_no_phone_can_take_a_text(
    db, workspace, clock
):
    from cxm_cli.contacts import set_consent
    from cxm_cli.runner import run_once

    clock.set("2026-03-02T15:00:00Z")  # Monday 09:00 CST
    switchboard, opted_out, textable = (
        make_contact(
            db,
            clock,
            email=f"{name}@example.com",
            phone=f"+1312555019{index}",
            timezone="America/Chicago",
        )
        for index, name in enumerate(["switchboard", "optedout", "textable"])
    )
    with write_transaction(db):
        # The only phone is a switchboard line, as "312-555-0190 x5" is stored.
        db.execute(
            "UPDATE contact_phones SET extension = '5' WHERE contact_id = ?",
            [switchboard],
        )
        set_consent(db, opted_out, "sms", "opted_out", clock=clock, source="form")
    for contact_id in (switchboard, opted_out, textable):
        emit(db, clock, contact_id, "lead.created", source="web")

    run_once(workspace, db, clock)
    clock.set("2026-03-03T15:05:00Z")  # a day later, Tuesday 09:05 CST
    run_once(workspace, db, clock)

    def templates(contact_id):
        return [(m["channel"], m["template"]) for m in outbound(db, contact_id)]

    for contact_id in (switchboard, opted_out):
        assert templates(contact_id) == [
            ("email", "new-lead-email"),
            ("email", "nudge-email"),
        ]
    assert templates(textable) == [
        ("sms", "new-lead-text"),
        ("email", "new-lead-email"),
        ("sms", "nudge-text"),
    ]


def test_has_means_a_message_could_go_there(db, workspace, clock):
    from cxm_cli.conditions import ConditionContext, evaluate
    from cxm_cli.contacts import get_contact, set_consent

    plain, bouncing, no_email_consent, fax_only = (
        make_contact(db, clock, email=f"{name}@example.com", phone=f"+1512555020{i}")
        for i, name in enumerate(["plain", "bouncing", "noemail", "fax"])
    )
    with write_transaction(db):
        db.execute(
            "UPDATE contact_emails SET status = 'bouncing' WHERE contact_id = ?",
            [bouncing],
        )
        set_consent(
            db, no_email_consent, "email", "opted_out", clock=clock, source="staff"
        )
        db.execute(
            "UPDATE contact_phones SET kind = 'fax' WHERE contact_id = ?", [fax_only]
        )

    def holds(contact_id, condition):
        contact = get_contact(db, contact_id)
        return evaluate(condition, ConditionContext(db, workspace, contact))

    assert holds(plain, {"has": ["phone", "email"]})
    assert not holds(bouncing, {"has": "email"}) and holds(bouncing, {"has": "phone"})
    assert not holds(no_email_consent, {"has": "email"})
    assert not holds(fax_only, {"has": "phone"}) and holds(fax_only, {"has": "email"})


def test_a_confirmed_reminder_still_takes_an_r_but_not_a_second_c(db, workspace, clock):
    clock.set("2026-03-02T15:00:00Z")
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(db, clock, contact_id, "appointment.booked", starts_at="2026-03-04T17:00:00Z")
    run_until(workspace, db, clock, "2026-03-03T17:30:00Z")

    emit(db, clock, contact_id, "message.received", channel="sms", text="C")
    emit(db, clock, contact_id, "message.received", channel="sms", text="c!")
    clock.advance(hours=1)
    emit(db, clock, contact_id, "message.received", channel="sms", text="R")

    kinds = [t for t, _ in timeline(db, contact_id)]
    assert kinds.count("appointment.confirmed") == 1
    assert kinds.count("appointment.reschedule_requested") == 1
    run_until(workspace, db, clock, "2026-03-03T19:00:00Z")
    assert outbound(db, contact_id)[-1]["body"].startswith("No problem!")


def test_status_and_validate_warn_of_staff_tasks_with_no_address(cli, workspace):
    # A new workspace has no [staff] email, and the shipped sequences hand
    # some work to staff: both commands say so before a promised call is lost.
    validated = cli("sequences", "validate")
    assert validated.exit_code == 0
    assert "reschedule-request" in validated.stderr
    assert "[staff] email is not set" in validated.stderr

    status = cli("status", "--json")
    unsent = status.json()["sequences"]["tasks_without_staff"]
    assert "reschedule-request" in unsent

    workspace = update_settings(workspace, {"staff.email": "desk@example.com"})
    assert "[staff] email" not in cli("sequences", "validate").stderr
    assert cli("status", "--json").json()["sequences"]["tasks_without_staff"] == []


def test_the_reschedule_task_tells_staff_which_appointment(db, workspace, clock):
    from email import message_from_bytes, policy

    workspace = update_settings(workspace, {"staff.email": "desk@example.com"})
    clock.set("2026-03-02T15:00:00Z")
    contact_id = make_contact(db, clock, timezone="America/Chicago")
    emit(
        db,
        clock,
        contact_id,
        "appointment.booked",
        starts_at="2026-03-04T17:00:00Z",
        appointment_id="A7",
    )
    run_until(workspace, db, clock, "2026-03-03T17:30:00Z")
    emit(db, clock, contact_id, "message.received", channel="sms", text="R")
    run_until(workspace, db, clock, "2026-03-03T18:00:00Z")

    mails = [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in workspace.outbox_dir.rglob("*.eml")
    ]
    [task] = [mail for mail in mails if "Reschedule" in str(mail["Subject"])]
    body = task.get_body(preferencelist=("plain",)).get_content()
    assert "Wed, Mar 4 at 11:00 AM" in body
    assert "booking A7" in body
