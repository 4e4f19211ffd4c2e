"""`cxm serve` over real HTTP on loopback: webhooks, events, unsubscribe."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
import requests

from cxm_cli.contacts import consent_status
from cxm_cli.server import serve_in_thread
from cxm_cli.server.twilio_hooks import compute_signature
from cxm_cli.workspace import load_workspace
from tests.support.fixtures import make_contact, write_env

AUTH_TOKEN = "test-auth-token-0123456789"
EVENTS_TOKEN = "events-token-abcdef"


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented scheme, written out independently of cxm's code."""
    signed = url + "".join(key + params[key] for key in sorted(params))
    mac = hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


@pytest.fixture
def served(workspace, clock):
    write_env(
        workspace, {"CXM_SMS_AUTH_TOKEN": AUTH_TOKEN, "CXM_EVENTS_TOKEN": EVENTS_TOKEN}
    )
    configured = load_workspace(workspace.root)
    handle = serve_in_thread(configured, "127.0.0.1", 0, clock=clock)
    yield handle
    handle.stop()


def counts(db) -> tuple[int, int, int]:
    return tuple(
        db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("contacts", "events", "messages")
    )


def inbound_params(sid: str, body: str, sender: str = "+15125550101"):
    return {
        "MessageSid": sid,
        "AccountSid": "AC0000",
        "From": sender,
        "To": "+15555550100",
        "Body": body,
        "NumMedia": "0",
    }


def post_signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN):
    signature = twilio_signature(token, url, params)
    return requests.post(
        url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
    )


def test_signature_matches_twilios_documented_example():
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    as_lists = {key: [value] for key, value in params.items()}
    assert compute_signature("12345", url, as_lists) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signed_inbound_sms_lands_on_the_timeline(served, db, clock, cli):
    contact_id = make_contact(db, clock, first_name="Maria", email="m@example.com")
    url = served.url + "/twilio/sms"

    response = post_signed(url, inbound_params("SM100", "Is Tuesday free?"))

    assert response.status_code == 200
    assert "<Response>" in response.text
    story = cli("timeline", str(contact_id), "--json").json()
    received = [e for e in story["entries"] if e["type"] == "message.received"]
    assert len(received) == 1
    assert received[0]["body"] == "Is Tuesday free?"
    assert received[0]["source"] == "twilio"


def test_forged_or_altered_requests_get_403_and_record_nothing(served, db, clock):
    make_contact(db, clock)
    url = served.url + "/twilio/sms"
    before = counts(db)

    params = inbound_params("SM200", "STOP")
    forged = requests.post(
        url,
        data=params,
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        timeout=10,
    )
    unsigned = requests.post(url, data=params, timeout=10)
    wrong_key = post_signed(url, params, token="someone-elses-token")
    signature = twilio_signature(AUTH_TOKEN, url, params)
    altered = requests.post(
        url,
        data={**params, "Body": "I changed my mind"},
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )
    other_path = requests.post(
        served.url + "/twilio/status",
        data=params,
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )

    assert [
        r.status_code for r in (forged, unsigned, wrong_key, altered, other_path)
    ] == [403] * 5
    assert counts(db) == before
    assert consent_status(db, 1, "sms") is None


def test_replayed_request_records_nothing_new(served, db, clock):
    make_contact(db, clock)
    url = served.url + "/twilio/sms"
    params = inbound_params("SM300", "See you then")

    first = post_signed(url, params)
    after_first = counts(db)
    replay = post_signed(url, params)

    assert first.status_code == replay.status_code == 200
    assert counts(db) == after_first


def test_unknown_number_becomes_a_new_contact(served, db):
    url = served.url + "/twilio/sms"
    response = post_signed(
        url, inbound_params("SM400", "Do you do whitening?", sender="+15125550177")
    )
    assert response.status_code == 200
    contact = next(db.query("SELECT * FROM contacts WHERE phone = '+15125550177'"))
    assert contact["source"] == "inbound_sms"


def test_stop_over_the_webhook_opts_out(served, db, clock):
    contact_id = make_contact(db, clock)
    response = post_signed(
        served.url + "/twilio/sms", inbound_params("SM500", "  Stop. ")
    )
    assert response.status_code == 200
    assert consent_status(db, contact_id, "sms") == "opted_out"


def test_stop_from_a_shared_phone_over_the_webhook_opts_out_both(
    served, db, clock, cli
):
    shared = "+12025550105"
    parent = make_contact(db, clock, email="pat@example.com", phone=shared)
    teen = make_contact(db, clock, email="sam@example.com", phone=shared)
    response = post_signed(
        served.url + "/twilio/sms", inbound_params("SM510", "STOP", sender=shared)
    )
    assert response.status_code == 200
    assert consent_status(db, parent, "sms") == "opted_out"
    assert consent_status(db, teen, "sms") == "opted_out"
    for person in (parent, teen):
        refused = cli("reply", str(person), "--channel", "sms", "--text", "hi")
        assert refused.exit_code != 0 and "opted out" in refused.stderr


def test_status_callbacks_out_of_order_never_move_back(served, db, clock):
    contact_id = make_contact(db, clock)
    from cxm_cli.store import write_transaction

    with write_transaction(db):
        message_id = (
            db["messages"]
            .insert(
                {
                    "contact_id": contact_id,
                    "channel": "sms",
                    "direction": "outbound",
                    "status": "sent",
                    "provider_id": "SMout1",
                    "body": "Hi",
                    "at": "2026-03-02T15:00:00.000000Z",
                }
            )
            .last_pk
        )
    url = served.url + "/twilio/status"

    codes = [
        post_signed(url, {"MessageSid": "SMout1", "MessageStatus": status}).status_code
        for status in ("delivered", "sending", "delivered", "queued")
    ]

    assert codes == [204] * 4
    assert db["messages"].get(message_id)["status"] == "delivered"
    statuses = db.execute(
        "SELECT COUNT(*) FROM events WHERE type = 'message.status'"
    ).fetchone()[0]
    assert statuses == 1


def test_without_an_auth_token_every_webhook_is_refused(workspace, db, clock):
    handle = serve_in_thread(workspace, "127.0.0.1", 0, clock=clock)
    try:
        response = post_signed(
            handle.url + "/twilio/sms", inbound_params("SM600", "hi"), token=""
        )
    finally:
        handle.stop()
    assert response.status_code == 403


def post_event(served, body, token=EVENTS_TOKEN, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(served.url + "/events", json=body, headers=headers, timeout=10)


def test_events_need_the_bearer_token(served, db):
    body = {"type": "form.submitted", "contact": {"email": "new@example.com"}}
    assert post_event(served, body, token=None).status_code == 401
    assert post_event(served, body, token="wrong").status_code == 401
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0


def test_a_website_form_creates_the_contact_once(served, db, cli):
    body = {
        "type": "form.submitted",
        "source": "website",
        "contact": {
            "email": "Jo.Doe@Example.com",
            "phone": "(512) 555-0142",
            "first_name": "Jo",
            "last_name": "Doe",
        },
        "data": {"form": "contact-us", "message": "Do you take new patients?"},
        "idempotency_key": "form-1",
    }

    created = post_event(served, body)
    repeated = post_event(served, body)
    second_form = post_event(
        served, {**body, "idempotency_key": "form-2", "data": {"form": "quote"}}
    )

    assert created.status_code == 201, created.text
    assert created.json()["created_contact"] is True
    assert repeated.status_code == 200 and repeated.json()["duplicate"] is True
    assert second_form.json()["contact_id"] == created.json()["contact_id"]
    assert second_form.json()["created_contact"] is False
    story = cli("timeline", "jo.doe@example.com", "--json").json()
    forms = [e for e in story["entries"] if e["type"] == "form.submitted"]
    assert len(forms) == 2
    assert story["origin"]["source"] == "website"


def test_bad_events_are_refused_with_a_reason(served, db):
    cases = [
        {"type": "form.submitted"},
        {"type": "Not A Type", "contact": {"email": "a@example.com"}},
        {"type": "message.sent", "contact": {"email": "a@example.com"}},
        {"type": "form.submitted", "contact": {"email": "not-an-email"}},
        {"type": "form.submitted", "contact": {"phone": "12"}},
    ]
    for body in cases:
        response = post_event(served, body)
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0


def test_invalid_phones_and_emails_are_refused_or_dropped(served, db):
    fake_phone = post_event(
        served, {"type": "form.submitted", "contact": {"phone": "+1 555 000 0001"}}
    )
    assert fake_phone.status_code == 400
    assert "contact.phone" in fake_phone.json()["error"]
    bad_email = post_event(
        served, {"type": "form.submitted", "contact": {"email": "jo@@example"}}
    )
    assert bad_email.status_code == 400
    assert "contact.email" in bad_email.json()["error"]
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0

    kept = post_event(
        served,
        {
            "type": "form.submitted",
            "contact": {"email": "jo@example.com", "phone": "+1 555 000 0001"},
        },
    )
    assert kept.status_code == 201, kept.text
    assert any("contact.phone dropped" in w for w in kept.json()["warnings"])
    contact = next(db.query("SELECT * FROM contacts"))
    assert (contact["email"], contact["phone"]) == ("jo@example.com", None)
    assert db.execute("SELECT COUNT(*) FROM contact_phones").fetchone()[0] == 0


def test_invoice_amounts_are_numbers_or_refused(served, db, clock):
    contact_id = make_contact(db, clock)
    paid = post_event(
        served,
        {
            "type": "invoice.paid",
            "contact_id": contact_id,
            "data": {"amount": "$1,200.50"},
        },
    )
    assert paid.status_code == 201, paid.text
    data = db.execute("SELECT data FROM events WHERE type = 'invoice.paid'").fetchone()[
        0
    ]
    assert json.loads(data)["amount"] == 1200.5

    refused = post_event(
        served,
        {"type": "invoice.paid", "contact_id": contact_id, "data": {"amount": "abc"}},
    )
    assert refused.status_code == 400
    assert "data.amount" in refused.json()["error"]
    count = "SELECT COUNT(*) FROM events WHERE type = 'invoice.paid'"
    assert db.execute(count).fetchone()[0] == 1


def test_signed_reply_stops_the_follow_up_sequence(served, workspace, db, clock):
    from cxm_cli.inbound import create_minimal_contact
    from cxm_cli.runner import run_once
    from cxm_cli.store import write_transaction

    with write_transaction(db):
        contact_id = create_minimal_contact(
            db,
            clock,
            email="lead@example.com",
            phone="+15125550160",
            first_name="Lee",
            source="facebook",
        )
    run_once(workspace, db, clock)
    sent_before = db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND direction = 'outbound'",
        [contact_id],
    ).fetchone()[0]
    assert sent_before >= 1, "the new-lead sequence sent nothing"

    response = post_signed(
        served.url + "/twilio/sms",
        inbound_params("SM700", "Yes please call me", sender="+15125550160"),
    )
    assert response.status_code == 200

    enrollment = next(
        db.query(
            "SELECT status FROM enrollments "
            "WHERE contact_id = ? AND sequence = 'new-lead'",
            [contact_id],
        )
    )
    assert enrollment["status"] == "exited"
    clock.advance(days=5)
    run_once(workspace, db, clock)
    sent_after = db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ? AND direction = 'outbound'",
        [contact_id],
    ).fetchone()[0]
    assert sent_after == sent_before


def test_cxm_serve_command_answers_on_loopback(workspace):
    import subprocess
    import sys
    import time

    from tests.support.dovecot import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cxm_cli",
            "--workspace",
            str(workspace.root),
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except requests.ConnectionError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200
        assert answer.json()["business"] == "Bright Smile Dental"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_unreadable_appointment_time_is_refused(served, db, clock):
    contact_id = make_contact(db, clock)
    for value in ("garbage", "2026-02-30T10:00Z", 1741186800):
        response = post_event(
            served,
            {
                "type": "appointment.booked",
                "contact_id": contact_id,
                "data": {"starts_at": value},
            },
        )
        assert response.status_code == 400, value
        assert "data.starts_at" in response.json()["error"]
    assert (
        db.execute("SELECT COUNT(*) FROM events WHERE type LIKE 'appoint%'").fetchone()[
            0
        ]
        == 0
    )

    booked = post_event(
        served,
        {
            "type": "appointment.booked",
            "contact_id": contact_id,
            "data": {"starts_at": "2026-03-05T10:00:00+01:00", "ends_at": None},
        },
    )
    assert booked.status_code == 201, booked.text
    data = db.execute("SELECT data FROM events WHERE type = 'appointment.booked'")
    assert json.loads(data.fetchone()[0])["starts_at"] == "2026-03-05T09:00:00.000000Z"


def test_a_contact_id_too_big_for_a_number_is_refused(served, db, clock):
    make_contact(db, clock)
    for raw in ("1e400", "99999999999999999999999", "1.5", "true", '"12abc"'):
        response = requests.post(
            served.url + "/events",
            data='{"type": "form.submitted", "contact_id": ' + raw + "}",
            headers={
                "Authorization": f"Bearer {EVENTS_TOKEN}",
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        assert response.status_code == 400, raw
        assert response.json()["error"] == "contact_id must be a whole number"


def test_a_phone_shared_by_two_contacts_names_nobody(served, db, clock):
    first = make_contact(db, clock, email="a@example.com", phone="+13125550194")
    second = make_contact(db, clock, email="b@example.com", phone="+13125550194")
    events = "SELECT COUNT(*) FROM events WHERE type = 'form.submitted'"

    shared = post_event(
        served, {"type": "form.submitted", "contact": {"phone": "+13125550194"}}
    )

    assert shared.status_code == 400
    error = shared.json()["error"]
    assert "belongs to several contacts" in error and f"{first}, {second}" in error
    assert db.execute(events).fetchone()[0] == 0

    with_email = post_event(
        served,
        {
            "type": "form.submitted",
            "contact": {"phone": "+13125550194", "email": "b@example.com"},
        },
    )
    assert with_email.status_code == 201, with_email.text
    assert with_email.json()["contact_id"] == second
    with_id = post_event(served, {"type": "form.submitted", "contact_id": first})
    assert with_id.status_code == 201 and with_id.json()["contact_id"] == first
    assert db.execute(events).fetchone()[0] == 2


def test_a_form_phone_with_an_extension_keeps_it_and_is_not_textable(served, db, clock):
    from cxm_cli.contacts import get_contact
    from cxm_cli.messaging import ConsentRefused, check_consent

    known = make_contact(db, clock, email="known@example.com", phone=None)
    new = post_event(
        served,
        {"type": "form.submitted", "contact": {"phone": "+1 312 555 0194 ext. 7"}},
    )
    added = post_event(
        served,
        {
            "type": "form.submitted",
            "contact": {"email": "known@example.com", "phone": "312-555-0195 x12"},
        },
    )

    assert new.status_code == 201, new.text
    assert added.status_code == 201 and added.json()["contact_id"] == known
    phones = {
        row["contact_id"]: (row["phone"], row["extension"])
        for row in db.query("SELECT * FROM contact_phones")
    }
    assert phones == {
        new.json()["contact_id"]: ("+13125550194", "7"),
        known: ("+13125550195", "12"),
    }
    for contact_id in phones:
        with pytest.raises(ConsentRefused) as refused:
            check_consent(db, get_contact(db, contact_id), "sms")
        assert refused.value.reason == "no_address"
