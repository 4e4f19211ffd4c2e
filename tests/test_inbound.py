"""Recording inbound messages: idempotency, keywords, flags, statuses."""

from __future__ import annotations

import json

import pytest

from cxm_cli.contacts import consent_status
from cxm_cli.inbound import (
    create_minimal_contact,
    reads_like_opt_out,
    record_inbound,
    record_status,
    sms_keyword,
)
from cxm_cli.store import write_transaction


def make_contact(db, clock, *, email="maria@example.com", phone="+15125550101"):
    with write_transaction(db):
        return create_minimal_contact(
            db,
            clock,
            email=email,
            phone=phone,
            first_name="Maria",
            last_name="Gonzalez",
            source="facebook",
        )


def event_types(db, contact_id):
    return [
        row["type"]
        for row in db.query(
            "SELECT type FROM events WHERE contact_id = ? ORDER BY id", [contact_id]
        )
    ]


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop",
        " Stop ",
        "STOP.",
        "stop!!",
        "'Stop'",
        "StopAll",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
        "REVOKE",
        "optout",
        "ＳＴＯＰ",
        "\tstop\n",
        "🛑 stop",
    ],
)
def test_every_spelling_of_an_opt_out_keyword_is_recognised(text):
    assert sms_keyword(text)[0] == "opt_out"


@pytest.mark.parametrize(
    "text", ["stop by tomorrow?", "please stop texting me", "don't stop", "stopp", ""]
)
def test_sentences_are_not_keywords(text):
    assert sms_keyword(text) is None


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("please stop texting me", True),
        ("Do not text this number again", True),
        ("wrong number", True),
        ("STOP STOP", True),
        ("remove me from your list", True),
        ("Can I stop by on Tuesday at 3?", False),
        ("Yes, Tuesday works", False),
    ],
)
def test_opt_out_like_texts_are_flagged(text, flagged):
    assert reads_like_opt_out(text) is flagged


def test_recorded_reply_is_on_the_timeline_once_per_provider_id(workspace, db, clock):
    contact_id = make_contact(db, clock)

    first = record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="Is Tuesday free?",
        address="(512) 555-0101",
        provider_id="SM1",
        source="twilio",
    )
    again = record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="Is Tuesday free?",
        address="(512) 555-0101",
        provider_id="SM1",
        source="twilio",
    )

    assert first.contact_id == contact_id and not first.duplicate
    assert again.duplicate and again.message_id == first.message_id
    assert event_types(db, contact_id).count("message.received") == 1
    row = next(db.query("SELECT * FROM messages WHERE id = ?", [first.message_id]))
    assert row["direction"] == "inbound" and row["address"] == "+15125550101"
    assert row["body"] == "Is Tuesday free?"


def test_stop_opts_out_and_start_opts_back_in(workspace, db, clock):
    contact_id = make_contact(db, clock)

    stop = record_inbound(
        workspace, db, clock, channel="sms", text="Stop!", contact_id=contact_id
    )
    assert stop.kind == "opt_out" and stop.keyword == "STOP"
    assert consent_status(db, contact_id, "sms") == "opted_out"
    opted = next(db.query("SELECT * FROM events WHERE type = 'opted_out'"))
    assert opted["source"] == "sms_keyword"
    assert json.loads(opted["data"])["keyword"] == "STOP"

    clock.advance(minutes=5)
    start = record_inbound(
        workspace, db, clock, channel="sms", text="unstop", contact_id=contact_id
    )
    assert start.kind == "opt_in"
    assert consent_status(db, contact_id, "sms") == "opted_in"


def test_yes_from_someone_who_never_opted_out_is_an_ordinary_reply(
    workspace, db, clock
):
    contact_id = make_contact(db, clock)
    result = record_inbound(
        workspace, db, clock, channel="sms", text="YES", contact_id=contact_id
    )
    assert result.kind == "reply"
    assert consent_status(db, contact_id, "sms") is None


def test_unknown_sender_becomes_a_contact_only_when_asked(workspace, db, clock):
    from cxm_cli.errors import NotFound

    with pytest.raises(NotFound):
        record_inbound(
            workspace, db, clock, channel="sms", text="hi", address="+15125550199"
        )
    result = record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="hi",
        address="+15125550199",
        create_contact=True,
    )
    assert result.created_contact
    types = event_types(db, result.contact_id)
    assert types[0] == "lead.created" and "message.received" in types


def test_status_callbacks_never_move_a_status_backwards(workspace, db, clock):
    contact_id = make_contact(db, clock)
    with write_transaction(db):
        message_id = (
            db["messages"]
            .insert(
                {
                    "contact_id": contact_id,
                    "channel": "sms",
                    "direction": "outbound",
                    "address": "+15125550101",
                    "body": "Hi",
                    "status": "sent",
                    "provider_id": "SMout",
                    "at": "2026-03-02T15:00:00.000000Z",
                }
            )
            .last_pk
        )

    outcomes = [
        record_status(db, clock, channel="sms", provider_id="SMout", status=s)[
            "outcome"
        ]
        for s in ("delivered", "sent", "queued", "delivered")
    ]

    assert outcomes == ["updated", "ignored", "ignored", "ignored"]
    status = db["messages"].get(message_id)["status"]
    assert status == "delivered"
    assert event_types(db, contact_id).count("message.status") == 1


def test_provider_unsubscribed_error_opts_out(workspace, db, clock):
    contact_id = make_contact(db, clock)
    with write_transaction(db):
        db["messages"].insert(
            {
                "contact_id": contact_id,
                "channel": "sms",
                "direction": "outbound",
                "status": "sent",
                "provider_id": "SMx",
                "at": "2026-03-02T15:00:00Z",
            }
        )
    record_status(
        db,
        clock,
        channel="sms",
        provider_id="SMx",
        status="failed",
        error_code="21610",
    )
    assert consent_status(db, contact_id, "sms") == "opted_out"


def test_cli_record_and_timeline(cli, workspace, db, clock):
    contact_id = make_contact(db, clock)
    clock.advance(minutes=3)

    recorded = cli(
        "inbox",
        "record",
        "--contact",
        "maria@example.com",
        "--channel",
        "sms",
        "--text",
        "Yes, Tuesday works",
        "--json",
    )
    assert recorded.exit_code == 0, recorded.stderr
    assert recorded.json()["contact_id"] == contact_id

    from_stdin = cli(
        "inbox",
        "record",
        "-",
        "--json",
        input=json.dumps(
            [
                {
                    "contact": str(contact_id),
                    "channel": "email",
                    "subject": "Question",
                    "text": "Do you take insurance?",
                }
            ]
        ),
    )
    assert from_stdin.exit_code == 0, from_stdin.stderr

    story = cli("timeline", "+1 512 555 0101", "--json").json()
    assert story["origin"]["source"] == "facebook"
    types = [entry["type"] for entry in story["entries"]]
    assert types[0] == "lead.created"
    received = [e for e in story["entries"] if e["type"] == "message.received"]
    assert [e["channel"] for e in received] == ["sms", "email"]
    assert received[0]["direction"] == "inbound"
    assert "Tuesday works" in received[0]["summary"]

    only_email = cli("timeline", str(contact_id), "--channel", "email", "--json")
    assert [e["channel"] for e in only_email.json()["entries"]] == ["email"]

    table = cli("timeline", str(contact_id))
    assert table.exit_code == 0
    assert "Do you take insurance?" in table.stdout
    assert "Maria Gonzalez" in table.stderr


def test_cli_record_refuses_bad_input_clearly(cli):
    missing = cli("inbox", "record", "--text", "hello")
    assert missing.exit_code != 0 and "--contact" in missing.stderr
    broken = cli("inbox", "record", "-", input="{not json")
    assert broken.exit_code != 0 and "stdin" in broken.stderr
    nobody = cli("inbox", "record", "--contact", "99", "--text", "hi")
    assert nobody.exit_code != 0 and "no contact" in nobody.stderr


def test_help_gets_the_configured_reply(workspace, db, clock):
    contact_id = make_contact(db, clock)
    result = record_inbound(
        workspace, db, clock, channel="sms", text="help?", contact_id=contact_id
    )
    assert result.kind == "help" and "sent the help reply" in result.actions
    body = db.execute(
        "SELECT body FROM messages WHERE contact_id = ? AND direction = 'outbound'",
        [contact_id],
    ).fetchone()[0]
    assert body.startswith("Bright Smile Dental:") and "STOP" in body


def test_stop_leaves_no_text_to_go_out(workspace, db, clock):
    from cxm_cli.runner import run_once

    contact_id = make_contact(db, clock)  # enrolled in new-lead by lead.created
    run_once(workspace, db, clock)
    clock.advance(minutes=1)
    record_inbound(
        workspace, db, clock, channel="sms", text="STOP", contact_id=contact_id
    )

    clock.advance(days=5)
    run_once(workspace, db, clock)
    late_sms = db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND channel = 'sms' "
        "AND direction = 'outbound' AND at > '2026-03-02T15:01:00'",
        [contact_id],
    ).fetchone()[0]
    assert late_sms == 0
