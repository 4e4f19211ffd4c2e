"""What kind of event it is decides what cxm makes of an unknown person.

An opt-out, a bounce or an imported record naming someone cxm has never seen
used to create a new lead, so the new-lead sequence thanked a person who had
just opted out "for getting in touch". NaN and 1e400 in event data were stored
as JSON that SQLite calls invalid, and a payment of -50 was taken as money in.
Each case is checked on ``cxm events emit`` and on ``POST /events``.
"""

from __future__ import annotations

import json

import pytest
import requests

from cxm_cli.contacts import consent_status
from cxm_cli.event_intake import emit_event
from cxm_cli.server import serve_in_thread
from cxm_cli.workspace import load_workspace
from tests.support.fixtures import make_contact, write_env

EVENTS_TOKEN = "events-token-kinds-0123"


@pytest.fixture
def served(workspace, clock):
    write_env(workspace, {"CXM_EVENTS_TOKEN": EVENTS_TOKEN})
    handle = serve_in_thread(
        load_workspace(workspace.root), "127.0.0.1", 0, clock=clock
    )
    yield handle
    handle.stop()


def post_event(served, body):
    return requests.post(
        served.url + "/events",
        json=body,
        headers={"Authorization": f"Bearer {EVENTS_TOKEN}"},
        timeout=10,
    )


def post_raw(served, text: str):
    return requests.post(
        served.url + "/events",
        data=text.encode(),
        headers={
            "Authorization": f"Bearer {EVENTS_TOKEN}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )


def event_types(db, contact_id: int) -> list[str]:
    rows = db.execute(
        "SELECT type FROM events WHERE contact_id = ? ORDER BY id", [contact_id]
    )
    return [row[0] for row in rows]


def enrollments(db, contact_id: int) -> int:
    return db.execute(
        "SELECT COUNT(*) FROM enrollments WHERE contact_id = ?", [contact_id]
    ).fetchone()[0]


def stored_data(db, event_type: str) -> tuple[dict, int]:
    text, valid = db.execute(
        "SELECT data, json_valid(data) FROM events WHERE type = ?", [event_type]
    ).fetchone()
    return json.loads(text), valid


# ------------------------------------------------------ unknown people, not leads


def test_emit_opt_out_of_an_unknown_person_makes_a_contact_not_a_lead(cli, db):
    result = cli(
        "events", "emit", "opted_out", "--email", "oo@example.com",
        "--phone", "512-555-0701", "--data", "channel=sms", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    contact_id = result.json()["contact_id"]
    assert result.json()["created_contact"] is True
    assert event_types(db, contact_id) == ["contact.imported", "opted_out"]
    assert consent_status(db, contact_id, "sms") == "opted_out"
    assert enrollments(db, contact_id) == 0
    origin, _ = stored_data(db, "contact.imported")
    assert origin == {"existing": True, "source": "cli", "event": "opted_out"}


def test_emit_lines_make_leads_only_of_people_reaching_out(cli, db):
    lines = [
        {"type": "contact.imported", "email": "old@example.com", "data": {"n": 1}},
        {"type": "message.bounced", "email": "gone@example.com"},
        {
            "type": "invoice.refunded",
            "email": "paid@example.com",
            "data": {"amount": 5},
        },
        {"type": "opted_in", "phone": "512-555-0702", "data": {"channel": "sms"}},
        {"type": "form.submitted", "email": "new@example.com"},
    ]

    result = cli(
        "events", "emit", "-", "--json",
        input="\n".join(json.dumps(line) for line in lines),
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    ids = [row["contact_id"] for row in result.json()]
    assert all(row["created_contact"] for row in result.json())
    # The imported record is its own origin: one contact.imported, not two.
    assert event_types(db, ids[0]) == ["contact.imported"]
    assert event_types(db, ids[1]) == ["contact.imported", "message.bounced"]
    assert event_types(db, ids[2]) == ["contact.imported", "invoice.refunded"]
    assert event_types(db, ids[3]) == ["contact.imported", "opted_in"]
    assert [enrollments(db, i) for i in ids[:4]] == [0, 0, 0, 0]
    assert "lead.created" in event_types(db, ids[4])
    assert enrollments(db, ids[4]) == 1


def test_post_opt_out_of_an_unknown_person_makes_a_contact_not_a_lead(served, db):
    opt_out = post_event(
        served,
        {
            "type": "opted_out",
            "contact": {"email": "oo@example.com", "phone": "512-555-0701"},
            "data": {"channel": "sms"},
        },
    )
    imported = post_event(
        served, {"type": "contact.imported", "contact": {"email": "old@example.com"}}
    )

    assert opt_out.status_code == 201, opt_out.text
    contact_id = opt_out.json()["contact_id"]
    assert opt_out.json()["created_contact"] is True
    assert event_types(db, contact_id) == ["contact.imported", "opted_out"]
    assert consent_status(db, contact_id, "sms") == "opted_out"
    assert enrollments(db, contact_id) == 0
    assert imported.status_code == 201, imported.text
    assert event_types(db, imported.json()["contact_id"]) == ["contact.imported"]


# ------------------------------------------------------------- NaN and infinity


def test_emit_keeps_nan_and_infinite_data_as_the_text_typed(cli, db, clock):
    contact_id = make_contact(db, clock)

    result = cli(
        "events", "emit", "note.added", "--contact", str(contact_id),
        "--data", "a=NaN", "--data", "b=Infinity", "--data", "c=1e400",
        "--data", "d=-Infinity", "--data", "e=1.5",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    data, valid = stored_data(db, "note.added")
    assert valid == 1
    assert data == {
        "a": "NaN",
        "b": "Infinity",
        "c": "1e400",
        "d": "-Infinity",
        "e": 1.5,
    }


def test_emit_lines_with_nan_store_valid_json(cli, db, clock):
    contact_id = make_contact(db, clock)
    line = (
        '{"type": "note.added", "contact_id": ID, '
        '"data": {"a": NaN, "c": 1e400, "list": [-Infinity, 2]}}'
    ).replace("ID", str(contact_id))

    result = cli("events", "emit", "-", input=line + "\n")

    assert result.exit_code == 0, result.stderr
    data, valid = stored_data(db, "note.added")
    assert valid == 1
    assert data == {"a": "NaN", "c": "1e400", "list": ["-Infinity", 2]}


def test_emit_event_called_with_a_nan_float_stores_valid_json(workspace, db, clock):
    contact_id = make_contact(db, clock)

    emit_event(
        workspace,
        db,
        clock,
        "note.added",
        contact=str(contact_id),
        data={"a": float("nan"), "b": [float("inf")]},
    )

    data, valid = stored_data(db, "note.added")
    assert valid == 1
    assert data == {"a": "nan", "b": ["inf"]}


def test_post_with_nan_stores_valid_json(served, db, clock):
    contact_id = make_contact(db, clock)
    body = (
        '{"type": "note.added", "contact_id": ID, '
        '"data": {"a": NaN, "b": Infinity, "c": 1e400}}'
    ).replace("ID", str(contact_id))

    response = post_raw(served, body)

    assert response.status_code == 201, response.text
    data, valid = stored_data(db, "note.added")
    assert valid == 1
    assert data == {"a": "NaN", "b": "Infinity", "c": "1e400"}


# ------------------------------------------------------- payments of zero or less


@pytest.mark.parametrize("amount", ["-50", "0", "(50)", "$-1,200"])
def test_emit_refuses_a_payment_of_zero_or_less(cli, db, clock, amount):
    contact_id = make_contact(db, clock)

    result = cli(
        "events", "emit", "invoice.paid", "--contact", str(contact_id),
        "--data", f"amount={amount}",
    )  # fmt: skip

    assert result.exit_code != 0
    assert "data.amount" in result.stderr
    assert "invoice.refunded" in result.stderr
    assert "invoice.paid" not in event_types(db, contact_id)


def test_emit_lines_refuse_a_negative_payment_but_take_a_refund(cli, db, clock):
    contact_id = make_contact(db, clock)
    lines = [
        {"type": "invoice.paid", "contact_id": contact_id, "data": {"amount": -50}},
        {"type": "invoice.refunded", "contact_id": contact_id, "data": {"amount": 50}},
    ]

    result = cli("events", "emit", "-", input="\n".join(map(json.dumps, lines)))

    assert result.exit_code == 1
    assert "line 1: data.amount" in result.stderr
    assert "invoice.refunded" in result.stderr
    assert event_types(db, contact_id)[-1:] == ["invoice.refunded"]
    assert "invoice.paid" not in event_types(db, contact_id)


def test_post_refuses_a_negative_payment_but_takes_a_refund(served, db, clock):
    contact_id = make_contact(db, clock)

    paid = post_event(
        served,
        {"type": "invoice.paid", "contact_id": contact_id, "data": {"amount": -50}},
    )
    refunded = post_event(
        served,
        {"type": "invoice.refunded", "contact_id": contact_id, "data": {"amount": 50}},
    )

    assert paid.status_code == 400
    assert "data.amount" in paid.json()["error"]
    assert "invoice.refunded" in paid.json()["error"]
    assert refunded.status_code == 201, refunded.text
    data, _ = stored_data(db, "invoice.refunded")
    assert data["amount"] == 50
    assert "invoice.paid" not in event_types(db, contact_id)


@pytest.mark.parametrize("amount", ["-5", "0"])
def test_emit_refuses_a_refund_of_zero_or_less(cli, db, clock, amount):
    contact_id = make_contact(db, clock)
    result = cli(
        "events",
        "emit",
        "invoice.refunded",
        "--contact",
        str(contact_id),
        "--data",
        f"amount={amount}",
    )
    assert result.exit_code != 0
    assert "data.amount" in result.stderr and "above 0" in result.stderr
