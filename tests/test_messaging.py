"""The one send path: consent checks, records before sending, failures, events."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cxm_cli.channels.outbox import contact_files, read_texts
from cxm_cli.contacts import get_contact, identifier_hash, is_opted_out, set_consent
from cxm_cli.errors import ChannelError, ConfigError, InputError, TemplateError
from cxm_cli.events import events_for
from cxm_cli.messaging import (
    ConsentRefused,
    drop_voicemail,
    pick_address,
    send_message,
)
from cxm_cli.outbound import _DECORATORS
from cxm_cli.store import fetch_one
from tests.support.fixtures import make_contact, update_settings


def _messages(db, contact_id):
    return list(
        db.query(
            "SELECT * FROM messages WHERE contact_id = ? ORDER BY id", [contact_id]
        )
    )


def test_first_step_goes_through_smtp_to_a_real_server(
    workspace, db, clock, smtp_server
):
    workspace = smtp_server.configure(workspace)
    contact_id = make_contact(db, clock, first_name="Ana", email="ana@example.com")

    sent = send_message(
        workspace,
        db,
        clock,
        contact_id,
        "email",
        template="new-lead-email",
        due_step_id=7,
    )

    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert mail.rcpt_tos == ["ana@example.com"]
    assert mail.message["To"] == "ana@example.com"
    assert mail.message["Subject"] == (
        "Thanks for getting in touch with Bright Smile Dental"
    )
    assert "Hi Ana," in mail.body_text()
    assert "Bright Smile Dental" in mail.message["From"]
    assert mail.message["Message-ID"] == sent.provider_id
    assert sent.provider_id.startswith("<") and sent.provider_id.endswith(">")

    row = _messages(db, contact_id)[0]
    assert row["status"] == "sent"
    assert row["provider_id"] == sent.provider_id
    assert row["direction"] == "outbound"
    assert row["template"] == "new-lead-email"
    assert row["due_step_id"] == 7
    assert row["address"] == "ana@example.com"

    [event] = events_for(db, contact_id, types=["message.sent"])
    assert event.data == {
        "message_id": sent.message_id,
        "channel": "email",
        "template": "new-lead-email",
        "due_step_id": 7,
        "automated": True,
    }
    assert row["event_id"] == event.id


def test_text_goes_through_twilio_api_to_a_local_server(
    workspace, db, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    contact_id = make_contact(db, clock, first_name="Ben", phone="+15125550142")

    sent = send_message(
        workspace, db, clock, contact_id, "sms", template="new-lead-text"
    )

    [request] = sms_provider.requests
    assert request.path == (
        f"/2010-04-01/Accounts/{sms_provider.account_sid}/Messages.json"
    )
    assert (request.username, request.password) == (
        sms_provider.account_sid,
        sms_provider.auth_token,
    )
    assert request.form["To"] == "+15125550142"
    assert request.form["From"] == sms_provider.from_number
    assert request.form["Body"].startswith("Hi Ben, thanks for reaching out")
    assert sent.provider_id == request.sid
    assert _messages(db, contact_id)[0]["provider_id"] == request.sid


def test_outbox_writes_an_eml_per_email_and_a_line_per_text(workspace, db, clock):
    contact_id = make_contact(db, clock, first_name="Cleo")

    email = send_message(
        workspace, db, clock, contact_id, "email", template="nudge-email"
    )
    text = send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")
    again = send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    emls = contact_files(workspace, contact_id)
    assert [path.suffix for path in emls] == [".eml"]
    assert "Message-ID: " + email.provider_id in emls[0].read_text()
    assert "Subject: Quick follow-up from Bright Smile Dental" in emls[0].read_text()
    lines = (emls[0].parent / "texts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records == read_texts(workspace, contact_id)
    assert [r["message_id"] for r in records] == [text.message_id, again.message_id]
    assert [r["provider_id"] for r in records] == [text.provider_id, again.provider_id]
    assert all(r["to"] == "+15125550101" for r in records)
    assert records[0]["body"].startswith("Hi Cleo, just checking in")
    assert not list(workspace.outbox_dir.rglob(".*.tmp"))


def test_free_text_reply_renders_with_fallbacks_and_default_subject(
    workspace, db, clock
):
    contact_id = make_contact(db, clock, first_name="  ")

    sent = send_message(
        workspace,
        db,
        clock,
        contact_id,
        "email",
        text="Hi {{ first_name }}, see you Tuesday.",
        source="cli",
        automated=False,
    )

    row = _messages(db, contact_id)[0]
    assert row["body"] == "Hi there, see you Tuesday."
    assert row["subject"] == "A message from Bright Smile Dental"
    assert row["template"] is None
    [event] = events_for(db, contact_id, types=["message.sent"])
    assert event.source == "cli" and event.data["automated"] is False
    assert sent.status == "sent"


@pytest.mark.parametrize(
    ("setup", "channel", "reason"),
    [
        ("opted_out_sms", "sms", "opted_out"),
        ("opted_out_email", "email", "opted_out"),
        ("suppressed_phone", "sms", "suppressed"),
        ("suppressed_email", "email", "suppressed"),
        ("bouncing", "email", "bouncing"),
        ("no_email", "email", "no_address"),
    ],
)
def test_refuses_people_who_may_not_be_messaged(
    workspace, db, clock, setup, channel, reason
):
    contact_id = make_contact(
        db, clock, email=None if setup == "no_email" else "dee@example.com"
    )
    if setup.startswith("opted_out"):
        set_consent(db, contact_id, channel, "opted_out", clock=clock, source="test")
    elif setup.startswith("suppressed"):
        value = "+15125550101" if channel == "sms" else "dee@example.com"
        db["suppressions"].insert(
            {
                "identifier_hash": identifier_hash(value),
                "reason": "erased",
                "created_at": "2026-01-01T00:00:00.000000Z",
            }
        )
    elif setup == "bouncing":
        db.execute("UPDATE contact_emails SET status = 'bouncing'")

    with pytest.raises(ConsentRefused) as refused:
        send_message(
            workspace, db, clock, contact_id, channel, template="still-interested"
        )

    assert refused.value.reason == reason
    assert _messages(db, contact_id) == []
    assert contact_files(workspace, contact_id) == []
    assert read_texts(workspace, contact_id) == []


def test_never_texts_a_fax_number(workspace, db, clock):
    fax_only = make_contact(db, clock, phone="+15125550190", phone_kind="fax")
    with pytest.raises(ConsentRefused, match="no phone that can take texts"):
        send_message(workspace, db, clock, fax_only, "sms", template="nudge-text")

    mixed = make_contact(
        db,
        clock,
        email="eve@example.com",
        phone="+15125550191",
        phone_kind="fax",
        extra_phones=[("+15125550192", "mobile")],
    )
    sent = send_message(workspace, db, clock, mixed, "sms", template="nudge-text")
    assert sent.address == "+15125550192"


def _phones(db, clock, contact_id, *rows):
    """Give a contact phone rows: (phone, kind, extension, is_primary), oldest
    first; its main phone becomes the primary one."""
    from cxm_cli.clock import iso

    db.execute("DELETE FROM contact_phones WHERE contact_id = ?", [contact_id])
    for age, (phone, kind, extension, primary) in enumerate(rows):
        created = iso(clock.now() - timedelta(days=len(rows) - age))
        db.execute(
            "INSERT INTO contact_phones (contact_id, phone, extension, kind,"
            " is_primary, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [contact_id, phone, extension, kind, primary, created],
        )
        if primary:
            db.execute(
                "UPDATE contacts SET phone = ? WHERE id = ?", [phone, contact_id]
            )
    db.conn.commit()


def test_a_text_goes_to_a_mobile_before_the_primary_work_line(workspace, db, clock):
    # Corpus 01, Nadia Haddad: the work landline is primary, the mobile is not.
    nadia = make_contact(db, clock, first_name="Nadia", email="nadia@example.com")
    _phones(
        db,
        clock,
        nadia,
        ("+16175550190", "work", None, 1),
        ("+16175550191", "mobile", None, 0),
    )
    assert pick_address(db, get_contact(db, nadia), "sms") == "+16175550191"
    sent = send_message(workspace, db, clock, nadia, "sms", template="nudge-text")
    assert sent.address == "+16175550191"

    # No mobile: the primary, then the oldest of the rest.
    _phones(
        db,
        clock,
        nadia,
        ("+16175550192", "home", None, 0),
        ("+16175550190", "work", None, 1),
    )
    assert pick_address(db, get_contact(db, nadia), "sms") == "+16175550190"
    _phones(
        db,
        clock,
        nadia,
        ("+16175550192", "home", None, 0),
        ("+16175550193", None, None, 0),
    )
    assert pick_address(db, get_contact(db, nadia), "sms") == "+16175550192"


def test_never_texts_a_number_with_an_extension(workspace, db, clock, sms_provider):
    workspace = sms_provider.configure(workspace)
    office = make_contact(db, clock, first_name="Omar", email="omar@example.com")
    _phones(
        db,
        clock,
        office,
        ("+13125550204", "work", "204", 1),
        ("+13125550205", "home", None, 0),
    )
    sent = send_message(workspace, db, clock, office, "sms", template="nudge-text")
    assert sent.address == "+13125550205"

    # A switchboard line and a fax only: no phone that can take a text, and
    # no voicemail is dropped on either.
    _phones(
        db,
        clock,
        office,
        ("+13125550204", "work", "ext. 12", 1),
        ("+13125550206", "fax", None, 0),
    )
    assert pick_address(db, get_contact(db, office), "sms") is None
    with pytest.raises(ConsentRefused, match="no phone that can take texts") as info:
        send_message(workspace, db, clock, office, "sms", template="nudge-text")
    assert info.value.reason == "no_address"
    with pytest.raises(ConsentRefused, match="no phone that can take texts"):
        drop_voicemail(workspace, db, clock, office, "https://example.test/vm.mp3")
    assert [text.form["To"] for text in sms_provider.messages] == ["+13125550205"]
    assert sms_provider.calls == []
    assert [m["address"] for m in _messages(db, office)] == ["+13125550205"]


def test_missing_variable_fails_before_anything_is_recorded(workspace, db, clock):
    workspace.templates_dir.mkdir()
    (workspace.templates_dir / "needs-service.j2").write_text(
        "---\nchannels: [sms]\n---\nYour {{ service }} is booked.\n"
    )
    contact_id = make_contact(db, clock)

    with pytest.raises(TemplateError, match="needs-service.*service"):
        send_message(workspace, db, clock, contact_id, "sms", template="needs-service")

    assert _messages(db, contact_id) == []
    sent = send_message(
        workspace,
        db,
        clock,
        contact_id,
        "sms",
        template="needs-service",
        extra={"service": "cleaning"},
    )
    assert sent.rendered.body == "Your cleaning is booked."


def test_dry_run_renders_but_records_and_sends_nothing(workspace, db, clock):
    contact_id = make_contact(db, clock, first_name="Fay")

    result = send_message(
        workspace, db, clock, contact_id, "sms", template="new-lead-text", dry_run=True
    )

    assert result.status == "dry_run" and result.message_id is None
    assert result.rendered.body.startswith("Hi Fay,")
    assert result.rendered.sms.encoding == "GSM-7"
    assert _messages(db, contact_id) == []
    assert not workspace.outbox_dir.exists() or not any(workspace.outbox_dir.iterdir())


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [(429, 20429, True), (500, None, True), (503, None, True), (400, 21211, False)],
)
def test_provider_failure_marks_the_message_failed(
    workspace, db, clock, sms_provider, status, code, transient
):
    workspace = sms_provider.configure(workspace)
    contact_id = make_contact(db, clock)
    sms_provider.fail_next(status, code=code, message="The 'To' number is not valid")

    with pytest.raises(ChannelError) as failure:
        send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    assert failure.value.transient is transient
    assert failure.value.opt_out is False
    row = _messages(db, contact_id)[0]
    assert row["status"] == "failed"
    assert str(status) in row["error"]
    assert events_for(db, contact_id, types=["message.sent"]) == []
    assert not is_opted_out(db, contact_id, "sms")


def test_unsubscribed_recipient_opts_the_contact_out(
    workspace, db, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    contact_id = make_contact(db, clock)
    sms_provider.fail_next(
        400, code=21610, message="Attempt to send to unsubscribed recipient"
    )

    with pytest.raises(ChannelError) as failure:
        send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    assert failure.value.opt_out and not failure.value.transient
    assert failure.value.provider_code == "21610"
    assert is_opted_out(db, contact_id, "sms")
    [event] = events_for(db, contact_id, types=["opted_out"])
    assert event.source == "provider" and event.data["channel"] == "sms"
    with pytest.raises(ConsentRefused):
        send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")
    assert len(sms_provider.requests) == 1


def test_unsubscribed_recipient_opts_out_everyone_on_that_number(
    workspace, db, clock, sms_provider
):
    workspace = sms_provider.configure(workspace)
    daniel = make_contact(db, clock, first_name="Daniel", email="daniel@example.com")
    sofia = make_contact(db, clock, first_name="Sofia", email="sofia@example.com")
    sms_provider.fail_next(400, code=21610, message="unsubscribed recipient")

    with pytest.raises(ChannelError):
        send_message(workspace, db, clock, daniel, "sms", template="nudge-text")

    assert is_opted_out(db, daniel, "sms")
    assert is_opted_out(db, sofia, "sms")
    with pytest.raises(ConsentRefused):
        send_message(workspace, db, clock, sofia, "sms", template="nudge-text")
    assert len(sms_provider.requests) == 1


@pytest.mark.parametrize(("code", "transient"), [(451, True), (550, False)])
def test_smtp_answers_are_classified(
    workspace, db, clock, smtp_server, code, transient
):
    workspace = smtp_server.configure(workspace)
    contact_id = make_contact(db, clock)
    smtp_server.fail_next(code)

    with pytest.raises(ChannelError) as failure:
        send_message(workspace, db, clock, contact_id, "email", template="nudge-email")

    assert failure.value.transient is transient
    assert failure.value.provider_code == str(code)
    assert _messages(db, contact_id)[0]["status"] == "failed"
    assert smtp_server.messages == []


def test_message_row_is_committed_before_the_provider_is_called(
    workspace, db, clock, monkeypatch
):
    import sqlite3

    from cxm_cli import messaging
    from cxm_cli.channels import SendResult

    seen = {}

    class Peeking:
        def send(self, message):
            # A second connection sees the row only if it was committed.
            other = sqlite3.connect(workspace.db_path)
            seen["rows"] = other.execute("SELECT status FROM messages").fetchall()
            other.close()
            seen["in_transaction"] = db.conn.in_transaction
            return SendResult(provider_id="P-1")

    monkeypatch.setattr(messaging, "get_channel", lambda ws, kind: Peeking())
    contact_id = make_contact(db, clock)

    send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    assert seen == {"rows": [("sending",)], "in_transaction": False}
    assert _messages(db, contact_id)[0]["status"] == "sent"


def test_refuses_to_send_inside_an_open_transaction(workspace, db, clock):
    contact_id = make_contact(db, clock)
    db.execute("BEGIN")
    try:
        with pytest.raises(RuntimeError, match="outside a transaction"):
            send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")
    finally:
        db.execute("ROLLBACK")


def test_decorators_touch_the_message_before_it_leaves(
    workspace, db, clock, smtp_server, monkeypatch
):
    workspace = smtp_server.configure(workspace)
    calls = []

    def add_header(ws, database, message, contact, message_id):
        calls.append((contact["id"], message_id))
        message.headers["List-Unsubscribe"] = f"<https://example.test/u/{message_id}>"

    monkeypatch.setitem(_DECORATORS, "test-header", add_header)
    contact_id = make_contact(db, clock)

    sent = send_message(
        workspace, db, clock, contact_id, "email", template="nudge-email"
    )

    assert calls == [(contact_id, sent.message_id)]
    header = smtp_server.messages[0].message["List-Unsubscribe"]
    assert header == f"<https://example.test/u/{sent.message_id}>"


def test_misconfigured_channel_records_nothing(workspace, db, clock):
    workspace = update_settings(workspace, {"channels.sms": "twilio"})
    contact_id = make_contact(db, clock)

    with pytest.raises(ConfigError, match="CXM_SMS_ACCOUNT_SID"):
        send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    assert _messages(db, contact_id) == []


def test_unknown_channel_and_bad_arguments_are_refused(workspace, db, clock):
    contact_id = make_contact(db, clock)
    with pytest.raises(InputError, match="unknown channel"):
        send_message(workspace, db, clock, contact_id, "fax", text="hello")
    with pytest.raises(InputError, match="not both"):
        send_message(workspace, db, clock, contact_id, "sms")
    assert fetch_one(db, "SELECT COUNT(*) AS n FROM messages")["n"] == 0


def test_opt_out_recorded_while_rendering_still_stops_the_send(
    workspace, db, clock, monkeypatch
):
    from cxm_cli import messaging

    contact_id = make_contact(db, clock)
    real_render = messaging.render_for

    def render_then_stop_arrives(*args, **kwargs):
        rendered = real_render(*args, **kwargs)
        set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="inbound")
        return rendered

    monkeypatch.setattr(messaging, "render_for", render_then_stop_arrives)

    with pytest.raises(ConsentRefused, match="opted out"):
        send_message(workspace, db, clock, contact_id, "sms", template="nudge-text")

    assert _messages(db, contact_id) == []
    assert contact_files(workspace, contact_id) == []
    assert read_texts(workspace, contact_id) == []


def test_voicemail_drop_goes_through_the_same_checks(
    workspace, db, clock, sms_provider
):
    from cxm_cli.messaging import drop_voicemail

    workspace = sms_provider.configure(workspace)
    contact_id = make_contact(db, clock)

    sent = drop_voicemail(
        workspace, db, clock, contact_id, "https://example.test/vm.mp3", due_step_id=4
    )

    [call] = sms_provider.calls
    assert call.form["To"] == "+15125550101"
    row = _messages(db, contact_id)[0]
    assert (row["channel"], row["status"], row["provider_id"]) == (
        "voicemail",
        "sent",
        sent.provider_id,
    )
    [event] = events_for(db, contact_id, types=["message.sent"])
    assert event.data["channel"] == "voicemail" and event.data["due_step_id"] == 4

    set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="test")
    with pytest.raises(ConsentRefused):
        drop_voicemail(workspace, db, clock, contact_id, "https://example.test/vm.mp3")
    assert len(sms_provider.calls) == 1


def test_a_number_one_holder_opted_out_of_is_texted_for_no_one(
    workspace, db, clock, sms_provider
):
    # Finding 7: Ann said "do not text" on an import; Zed has her number.
    workspace = sms_provider.configure(workspace)
    ann = make_contact(db, clock, first_name="Ann", email="ann@example.com")
    zed = make_contact(db, clock, first_name="Zed", email="zed@example.com")
    set_consent(db, ann, "sms", "opted_out", clock=clock, source="import")

    with pytest.raises(ConsentRefused) as refused:
        send_message(workspace, db, clock, zed, "sms", template="nudge-text")
    assert refused.value.reason == "number_opted_out"
    assert str(refused.value) == (
        f"this number opted out of texts (shared with contact {ann})"
    )
    with pytest.raises(ConsentRefused, match="this number opted out of texts"):
        drop_voicemail(workspace, db, clock, zed, "https://example.test/vm.mp3")
    assert sms_provider.requests == [] and sms_provider.calls == []
    assert _messages(db, zed) == []
    # Zed's own consent is untouched, and email still reaches him.
    assert not is_opted_out(db, zed, "sms")
    assert send_message(workspace, db, clock, zed, "email", template="still-interested")

    # Zed's other, unshared mobile is texted instead of the shared number.
    _phones(
        db,
        clock,
        zed,
        ("+15125550101", "mobile", None, 1),
        ("+15125550177", "home", None, 0),
    )
    with pytest.raises(ConsentRefused, match=f"shared with contact {ann}"):
        send_message(workspace, db, clock, zed, "sms", template="nudge-text")
    _phones(db, clock, zed, ("+15125550177", "mobile", None, 1))
    sent = send_message(workspace, db, clock, zed, "sms", template="nudge-text")
    assert sent.address == "+15125550177"

    # Ann opting back in frees the number.
    _phones(db, clock, zed, ("+15125550101", "mobile", None, 1))
    set_consent(db, ann, "sms", "opted_in", clock=clock, source="test")
    sent = send_message(workspace, db, clock, zed, "sms", template="nudge-text")
    assert sent.address == "+15125550101"


def test_an_opt_out_on_an_extension_does_not_block_the_main_line(workspace, db, clock):
    # Someone reached at the number's extension 12 never held the line itself.
    office = make_contact(db, clock, first_name="Omar", email="omar@example.com")
    _phones(db, clock, office, ("+15125550101", "work", "12", 1))
    set_consent(db, office, "sms", "opted_out", clock=clock, source="import")
    owner = make_contact(db, clock, first_name="Ana", email="ana@example.com")

    sent = send_message(workspace, db, clock, owner, "sms", template="nudge-text")

    assert sent.address == "+15125550101"
