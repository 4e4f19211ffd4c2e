"""A contact's timeline: origin, forms, messages both ways, statuses, consent."""

from __future__ import annotations

from cxm_cli.events import record_event
from cxm_cli.inbound import create_minimal_contact, record_inbound, record_status
from cxm_cli.messaging import send_message
from cxm_cli.store import write_transaction
from cxm_cli.timeline import parse_duration, parse_since


def story_of_a_lead(workspace, db, clock) -> int:
    with write_transaction(db):
        contact_id = create_minimal_contact(
            db,
            clock,
            email="maria@example.com",
            phone="+15125550101",
            first_name="Maria",
            last_name="Gonzalez",
            source="facebook-lead-ads",
        )
        record_event(
            db,
            contact_id,
            "form.submitted",
            clock=clock,
            data={"form": "free-consult", "service": "whitening"},
            source="web",
        )
    clock.advance(minutes=2)
    sms = send_message(
        workspace,
        db,
        clock,
        contact_id,
        "sms",
        text="Hi Maria, thanks for reaching out!",
    )
    record_status(
        db, clock, channel="sms", provider_id=sms.provider_id, status="delivered"
    )
    email = send_message(
        workspace,
        db,
        clock,
        contact_id,
        "email",
        text="Your consult",
        subject="Your free consult",
    )
    clock.advance(hours=3)
    record_inbound(
        workspace,
        db,
        clock,
        channel="email",
        contact_id=contact_id,
        text="Can I come Friday?",
        subject="Re: Your free consult",
        provider_id="<maria-1@example.com>",
        thread_id=email.provider_id,
    )
    clock.advance(days=1)
    record_inbound(
        workspace, db, clock, channel="sms", contact_id=contact_id, text="STOP"
    )
    return contact_id


def test_timeline_tells_the_whole_story_oldest_first(workspace, db, clock, cli):
    contact_id = story_of_a_lead(workspace, db, clock)

    result = cli("timeline", "maria@example.com", "--json")

    assert result.exit_code == 0, result.stderr
    story = result.json()
    assert story["origin"]["source"] == "facebook-lead-ads"
    assert story["origin"]["first_event"] == "lead.created"
    entries = story["entries"]
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    types = [e["type"] for e in entries]
    for expected in (
        "lead.created",
        "form.submitted",
        "message.sent",
        "message.status",
        "message.received",
        "opted_out",
    ):
        assert expected in types, expected
    assert (
        types.index("lead.created")
        < types.index("form.submitted")
        < types.index("message.sent")
        < types.index("message.received")
        < types.index("opted_out")
    )

    sent_sms = next(
        e for e in entries if e["type"] == "message.sent" and e["channel"] == "sms"
    )
    assert sent_sms["status"] == "delivered" and sent_sms["direction"] == "outbound"
    sent_email = next(
        e for e in entries if e["type"] == "message.sent" and e["channel"] == "email"
    )
    reply = next(
        e
        for e in entries
        if e["type"] == "message.received" and e["channel"] == "email"
    )
    assert reply["thread"] == sent_email["thread"]
    stop = next(e for e in entries if e["type"] == "opted_out")
    assert "STOP" in stop["summary"] and stop["channel"] == "sms"
    assert story["contact"]["id"] == contact_id


def test_a_message_that_never_went_out_is_not_shown_as_sent(workspace, db, clock, cli):
    contact_id = story_of_a_lead(workspace, db, clock)
    with write_transaction(db):
        for status, error in (("failed", "invalid number"), ("sending", None)):
            db.execute(
                "INSERT INTO messages (contact_id, channel, direction, address, "
                "body, status, error, at) VALUES (?, 'sms', 'outbound', "
                "'+15125550101', 'Hello', ?, ?, ?)",
                [contact_id, status, error, "2026-03-02T16:00:00.000000Z"],
            )

    result = cli("timeline", str(contact_id), "--json")

    assert result.exit_code == 0, result.stderr
    unsent = {e["status"]: e for e in result.json()["entries"] if e["event_id"] is None}
    assert unsent["failed"]["type"] == "message.failed"
    assert "invalid number" in unsent["failed"]["summary"]
    assert unsent["sending"]["type"] == "message.sending"


def test_since_and_channel_filters(workspace, db, clock, cli):
    contact_id = story_of_a_lead(workspace, db, clock)

    recent = cli("timeline", str(contact_id), "--since", "2h", "--json").json()
    assert [
        e["type"] for e in recent["entries"] if e["type"].startswith("message")
    ] == ["message.received"]
    emails = cli("timeline", str(contact_id), "--channel", "email", "--json").json()
    assert {e["channel"] for e in emails["entries"]} == {"email"}
    dated = cli("timeline", str(contact_id), "--since", "2026-03-03", "--json").json()
    assert all(e["at"] >= "2026-03-03" for e in dated["entries"])


def test_readable_table(workspace, db, clock, cli):
    story_of_a_lead(workspace, db, clock)
    table = cli("timeline", "+1 (512) 555-0101")
    assert table.exit_code == 0
    assert "Maria Gonzalez" in table.stderr and "facebook-lead-ads" in table.stderr
    assert "Can I come Friday?" in table.stdout
    assert "opted out of sms by texting STOP" in table.stdout


def test_unknown_contact_and_bad_since_are_clear(workspace, db, clock, cli):
    story_of_a_lead(workspace, db, clock)
    missing = cli("timeline", "nobody@example.com")
    assert missing.exit_code != 0 and "no contact" in missing.stderr
    bad = cli("timeline", "maria@example.com", "--since", "last tuesday")
    assert bad.exit_code != 0 and "--since" in bad.stderr


def test_durations(clock):
    assert parse_duration("1d12h").total_seconds() == 36 * 3600
    assert parse_since("30m", clock) == "2026-03-02T14:30:00.000000Z"


def test_merges_and_suppression_imports_read_as_words(workspace, db, clock, cli):
    contact_id = create_minimal_contact(
        db, clock, email="renata@example.com", source="web"
    )
    record_event(
        db,
        contact_id,
        "contact.merged",
        clock=clock,
        data={
            "file": "/tmp/x/leads.csv",
            "row": 4,
            "batch_id": 1,
            "fields": [],
            "emails": ["r.okafor@example.net"],
            "phones": [],
            "tags": [],
        },
    )
    record_event(
        db,
        contact_id,
        "contact.imported",
        clock=clock,
        data={"source": "mailchimp", "suppressed": True},
    )

    table = cli("timeline", str(contact_id))

    assert "merged with leads.csv row 4 (added 1 emails)" in table.stdout
    assert "imported from mailchimp as a suppression record" in table.stdout
    assert "batch_id=" not in table.stdout


def test_a_step_that_sends_nothing_reads_as_a_sentence(cli, db, workspace, clock):
    from tests.support.engine import emit, only_sequences, run
    from tests.support.fixtures import make_contact

    only_sequences(
        workspace,
        tagger="""
        trigger: lead.created
        steps:
          - name: mark
            add_tag: warm
        """,
    )
    contact_id = make_contact(db, clock)
    emit(db, clock, contact_id, "lead.created")
    run(workspace, db, clock)

    result = cli("timeline", str(contact_id), "--json")

    [done] = [row for row in result.json()["entries"] if row["type"] == "step.done"]
    assert done["summary"].startswith("tagger step 1 (mark) done")
    assert "enrollment_id=" not in done["summary"]
