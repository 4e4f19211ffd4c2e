"""A client's whole journey through the default pipeline, driven only by events.

Form, first text (sent by the runner), reply, booking, completed consult,
payment, a second visit, six months of silence, and the booking that the
reactivation sequence brought. Each step checks the stage, its history and
the sequences that fired, through the real engine and runner.
"""

from __future__ import annotations

import shutil

from cxm_cli.events import record_event
from cxm_cli.pipelines import current_stage, stage_history
from cxm_cli.runner import run_once
from cxm_cli.workspace import SHIPPED_SEQUENCES_DIR
from tests.support.fixtures import make_contact

NEW_LEAD = """
name: new-lead
# The pipeline rules run before the engine's triggers, so the stage the form
# caused is already there to filter on.
trigger:
  event: form.submitted
  when: {stage: new}
exit: [replied, booked, opted_out]
steps:
  - send: sms
    text: "Hi {{ first_name }}, thanks for reaching out! When suits you?"
  - wait: 1d
  - send: sms
    text: "Hi {{ first_name }}, still happy to help. Reply any time."
"""

# Triggered by the pipeline's own move: stage rules feed the engine.
CONSULT_PREP = """
name: consult-prep
trigger:
  event: stage.changed
  when: {event.to: consult booked}
steps:
  - add_tag: consult-prep
"""


def enrollments(db, contact_id):
    return [
        (row["sequence"], row["status"], row["end_reason"])
        for row in db.query(
            "SELECT * FROM enrollments WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
    ]


def test_default_pipeline_journey_driven_by_events(workspace, db, clock):
    for path in workspace.sequences_dir.iterdir():
        path.unlink()
    (workspace.sequences_dir / "new-lead.yaml").write_text(NEW_LEAD)
    (workspace.sequences_dir / "consult-prep.yaml").write_text(CONSULT_PREP)
    shutil.copyfile(
        SHIPPED_SEQUENCES_DIR / "lapsed-reactivation.yaml",
        workspace.sequences_dir / "lapsed-reactivation.yaml",
    )
    ana = make_contact(db, clock, first_name="Ana", email="ana@example.com")

    def stage():
        return current_stage(db, ana, "sales")["stage"]

    def moves():
        return [
            (e.data["from"], e.data["to"], e.data["by"]) for e in stage_history(db, ana)
        ]

    # A web form: she is a new lead and the new-lead sequence starts.
    record_event(db, ana, "form.submitted", clock=clock, data={"form": "website"})
    assert stage() == "new"
    assert enrollments(db, ana) == [("new-lead", "active", None)]

    # The runner sends the first text: message.sent moves her to contacted.
    run_once(workspace, db, clock)
    sent = list(db.query("SELECT * FROM messages WHERE contact_id = ?", [ana]))
    assert [(m["channel"], m["direction"]) for m in sent] == [("sms", "outbound")]
    assert stage() == "contacted"

    # She replies: the nurture stops; her stage stays where it is.
    clock.advance(hours=2)
    record_event(db, ana, "message.received", clock=clock, data={"channel": "sms"})
    assert stage() == "contacted"
    assert enrollments(db, ana) == [("new-lead", "exited", "replied")]

    # She books a consult: the stage moves, and that move starts consult-prep.
    clock.advance(days=1)
    record_event(
        db, ana, "appointment.booked", clock=clock, data={"service": "consult"}
    )
    assert stage() == "consult booked"
    assert [e[0] for e in enrollments(db, ana)] == ["new-lead", "consult-prep"]
    run_once(workspace, db, clock)
    tags = [r["tag"] for r in db.query("SELECT tag FROM contact_tags")]
    assert tags == ["consult-prep"]

    # The consult takes place, then she pays: proposal sent, active client.
    clock.advance(days=6)
    record_event(db, ana, "appointment.completed", clock=clock)
    assert stage() == "proposal sent"
    clock.advance(days=3)
    record_event(db, ana, "invoice.paid", clock=clock, data={"amount": 1800})
    assert stage() == "active client"

    # The treatment visit: follow-up.
    clock.advance(days=14)
    record_event(db, ana, "appointment.completed", clock=clock)
    assert stage() == "follow-up"

    # Six months of silence: the runner's pass finds her visit is due.
    clock.advance(days=181)
    run_once(workspace, db, clock)
    due = list(db.query("SELECT * FROM events WHERE type = 'visit.due'"))
    assert [row["contact_id"] for row in due] == [ana]
    assert enrollments(db, ana)[-1] == ("lapsed-reactivation", "active", None)
    run_once(workspace, db, clock)
    invitation = db.execute(
        "SELECT channel, subject FROM messages WHERE contact_id = ? ORDER BY id DESC",
        [ana],
    ).fetchone()
    assert invitation[0] == "email"
    assert "next visit" in invitation[1]

    # She books again: back to active client, and the invitations stop.
    clock.advance(days=1)
    record_event(db, ana, "appointment.booked", clock=clock)
    assert stage() == "active client"
    assert enrollments(db, ana)[-1][:2] == ("lapsed-reactivation", "exited")

    # The whole history, each move with the rule that made it.
    assert moves() == [
        (None, "new", "rule:2"),
        ("new", "contacted", "rule:3"),
        ("contacted", "consult booked", "rule:5"),
        ("consult booked", "proposal sent", "rule:6"),
        ("proposal sent", "active client", "rule:7"),
        ("active client", "follow-up", "rule:8"),
        ("follow-up", "active client", "rule:9"),
    ]
    assert enrollments(db, ana) == [
        ("new-lead", "exited", "replied"),
        ("consult-prep", "completed", "all steps done"),
        ("lapsed-reactivation", "exited", "booked"),
    ]
