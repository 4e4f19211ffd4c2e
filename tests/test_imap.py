"""Email replies from a real IMAP server (dovecot on loopback)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from cxm_cli.imap import poll_mailbox
from cxm_cli.messaging import send_message
from tests.support import dovecot
from tests.support.fixtures import make_contact, update_settings, write_env

pytestmark = [
    pytest.mark.imap,
    pytest.mark.skipif(not dovecot.available(), reason="dovecot is not installed"),
]

BUSINESS = dovecot.USER


@pytest.fixture
def mailbox():
    server = dovecot.Dovecot().start()
    yield server
    server.stop()


@pytest.fixture
def mail_workspace(workspace, mailbox):
    write_env(
        workspace,
        {"CXM_IMAP_USERNAME": dovecot.USER, "CXM_IMAP_PASSWORD": dovecot.PASSWORD},
    )
    return update_settings(
        workspace,
        {
            "imap.host": "127.0.0.1",
            "imap.port": mailbox.port,
            "imap.security": "none",
            "smtp.from_address": BUSINESS,
        },
    )


def mail(
    sender, subject, body, *, message_id, in_reply_to=None, clock=None, **headers
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = BUSINESS
    message["Subject"] = subject
    message["Message-ID"] = message_id
    if clock is not None:
        message["Date"] = format_datetime(clock.now())
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return bytes(message)


def bounce_report(recipient: str, original_id: str) -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464)."""
    text = f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: {BUSINESS}
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-1@mx.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

This is the mail system. Your message could not be delivered.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon,  2 Mar 2026 16:00:01 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown

--BOUNDARY
Content-Type: text/rfc822-headers

From: {BUSINESS}
To: {recipient}
Subject: Hello
Message-ID: {original_id}

--BOUNDARY--
"""
    return text.replace("\n", "\r\n").encode("ascii")


def types_of(db, contact_id):
    return [
        row["type"]
        for row in db.query(
            "SELECT type FROM events WHERE contact_id = ? ORDER BY id", [contact_id]
        )
    ]


def test_reply_out_of_office_bounce_and_own_copy(mail_workspace, mailbox, db, clock):
    ws = mail_workspace
    maria = make_contact(
        db, clock, first_name="Maria", email="maria@example.com", phone="+15125550101"
    )
    bo = make_contact(
        db, clock, first_name="Bo", email="bo@example.com", phone="+15125550102"
    )
    carl = make_contact(
        db, clock, first_name="Carl", email="carl@example.com", phone="+15125550103"
    )
    to_maria = send_message(ws, db, clock, maria, "email", text="Hi", subject="Hello")
    to_bo = send_message(ws, db, clock, bo, "email", text="Hi", subject="Hello")
    to_carl = send_message(ws, db, clock, carl, "email", text="Hi", subject="Hello")
    clock.advance(hours=1)

    mailbox.append(
        mail(
            "Maria <Maria@Example.com>",
            "Re: Hello",
            "Tuesday works for me.\n\nOn Mon, 2 Mar 2026, Bright Smile wrote:\n> Hi\n",
            message_id="<r1@example.com>",
            in_reply_to=to_maria.provider_id,
            clock=clock,
        )
    )
    mailbox.append(
        mail(
            "bo@example.com",
            "Out of Office: Hello",
            "I am away until Monday.",
            message_id="<ooo1@example.com>",
            in_reply_to=to_bo.provider_id,
            Auto_Submitted="auto-replied",
            clock=clock,
        )
    )
    mailbox.append(bounce_report("carl@example.com", to_carl.provider_id))
    mailbox.append(
        mail(
            BUSINESS,
            "Hello",
            "Hi",
            message_id=to_maria.provider_id,
            clock=clock,
        )
    )
    mailbox.append(
        mail(
            "stranger@example.org",
            "Prices?",
            "How much is a cleaning?",
            message_id="<s1@example.org>",
            clock=clock,
        )
    )

    first = poll_mailbox(ws, db, clock)

    assert (
        first.fetched,
        first.replies,
        first.auto_replies,
        first.bounces,
        first.own_copies,
        first.unmatched,
    ) == (5, 1, 1, 1, 1, 1)

    assert "message.received" in types_of(db, maria)
    reply = next(
        db.query(
            "SELECT * FROM messages WHERE contact_id = ? AND direction = 'inbound'",
            [maria],
        )
    )
    assert reply["body"] == "Tuesday works for me."
    assert reply["thread_id"] == to_maria.provider_id

    assert "message.auto_reply" in types_of(db, bo)
    assert "message.received" not in types_of(db, bo)

    email_row = next(
        db.query("SELECT status FROM contact_emails WHERE email = 'carl@example.com'")
    )
    assert email_row["status"] == "bouncing"
    assert db["messages"].get(to_carl.message_id)["status"] == "bounced"
    assert "message.bounced" in types_of(db, carl)

    inbound = db.execute(
        "SELECT COUNT(*) FROM messages WHERE direction = 'inbound'"
    ).fetchone()[0]
    assert inbound == 2  # the reply and the out-of-office, nothing else

    second = poll_mailbox(ws, db, clock)
    assert second.fetched == 0
    assert (
        db.execute(
            "SELECT COUNT(*) FROM messages WHERE direction = 'inbound'"
        ).fetchone()[0]
        == 2
    )


def test_a_uidvalidity_change_does_not_ingest_again(workspace, mailbox, db, clock):
    write_env(
        workspace,
        {"CXM_IMAP_USERNAME": dovecot.USER, "CXM_IMAP_PASSWORD": dovecot.PASSWORD},
    )
    ws = update_settings(
        workspace,
        {
            "imap.host": "127.0.0.1",
            "imap.port": mailbox.port,
            "imap.security": "none",
            "imap.folder": "Support",
            "smtp.from_address": BUSINESS,
        },
    )
    maria = make_contact(db, clock, email="maria@example.com")
    reply = mail(
        "maria@example.com",
        "Question",
        "Do you open on Saturdays?",
        message_id="<q1@example.com>",
        clock=clock,
    )
    mailbox.append(reply, folder="Support")
    first = poll_mailbox(ws, db, clock)
    assert first.replies == 1
    before = mailbox.uidvalidity("Support")

    mailbox.recreate_folder("Support")
    mailbox.append(reply, folder="Support")
    mailbox.append(
        mail(
            "maria@example.com",
            "Also",
            "And Sundays?",
            message_id="<q2@example.com>",
            clock=clock,
        ),
        folder="Support",
    )
    assert mailbox.uidvalidity("Support") != before

    second = poll_mailbox(ws, db, clock)

    assert second.uidvalidity_changed
    assert (second.already_seen, second.replies) == (1, 1)
    bodies = [
        row["body"]
        for row in db.query(
            "SELECT body FROM messages WHERE contact_id = ? AND direction = 'inbound' "
            "ORDER BY id",
            [maria],
        )
    ]
    assert bodies == ["Do you open on Saturdays?", "And Sundays?"]


def test_wrong_password_is_a_clear_error(workspace, mailbox, db, clock):
    from cxm_cli.errors import ChannelError

    write_env(
        workspace, {"CXM_IMAP_USERNAME": dovecot.USER, "CXM_IMAP_PASSWORD": "wrong"}
    )
    ws = update_settings(
        workspace,
        {"imap.host": "127.0.0.1", "imap.port": mailbox.port, "imap.security": "none"},
    )
    with pytest.raises(ChannelError, match="login"):
        poll_mailbox(ws, db, clock)
