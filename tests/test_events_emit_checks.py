"""``cxm events emit`` checks what it is told before anything is recorded.

A phone that cannot exist is refused (or dropped when an email names the
person), and an invoice's amount is read as money or refused, so lifetime
value adds up and nobody texts +1 555 000 0000.
"""

from __future__ import annotations

import json

import pytest

from cxm_cli.board import contact_values
from cxm_cli.errors import InputError
from cxm_cli.event_intake import parse_amount
from tests.support.fixtures import make_contact


def count(db, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_an_invalid_phone_alone_is_refused(cli, db):
    result = cli("events", "emit", "form.submitted", "--phone", "+1 555 000 0000")
    assert result.exit_code != 0
    assert "phone" in result.stderr and "not a valid phone number" in result.stderr
    assert count(db, "contacts") == 0


def test_an_invalid_email_alone_is_refused(cli, db):
    result = cli("events", "emit", "form.submitted", "--email", "jo@@example")
    assert result.exit_code != 0
    assert "email" in result.stderr
    assert count(db, "contacts") == 0


def test_an_invalid_phone_next_to_an_email_is_dropped_with_a_warning(cli, db):
    result = cli(
        "events",
        "emit",
        "form.submitted",
        "--email",
        "jo@example.com",
        "--phone",
        "+1 555 000 0000",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert "phone dropped" in result.stderr
    assert result.json()["created_contact"] is True
    contact = next(db.query("SELECT email, phone FROM contacts"))
    assert contact == {"email": "jo@example.com", "phone": None}
    assert count(db, "contact_phones") == 0


def test_an_invalid_email_next_to_a_phone_is_dropped_with_a_warning(cli, db):
    result = cli(
        "events",
        "emit",
        "form.submitted",
        "--email",
        "n/a",
        "--phone",
        "(512) 555-0142",
    )
    assert result.exit_code == 0, result.stderr
    assert "email dropped" in result.stderr
    contact = next(db.query("SELECT email, phone FROM contacts"))
    assert contact == {"email": None, "phone": "+15125550142"}


def test_json_lines_name_the_line_with_a_bad_phone(cli, db):
    lines = "\n".join(
        json.dumps(item)
        for item in (
            {"type": "form.submitted", "email": "ok@example.com"},
            {"type": "form.submitted", "phone": "+1 555 000 0001"},
        )
    )
    result = cli("events", "emit", "-", input=lines)
    assert result.exit_code != 0
    assert "line 2" in result.stderr and "phone" in result.stderr
    assert count(db, "contacts") == 1


@pytest.mark.parametrize(
    ("text", "amount"),
    [("$180.00", 180), ("1,204.50", 1204.5), ("180", 180), ("USD 99.90", 99.9)],
)
def test_invoice_amount_text_is_stored_as_a_number(cli, db, clock, text, amount):
    contact_id = make_contact(db, clock)
    result = cli(
        "events",
        "emit",
        "invoice.paid",
        "--contact",
        str(contact_id),
        "--data",
        f"amount={text}",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(
        db.execute("SELECT data FROM events WHERE type = 'invoice.paid'").fetchone()[0]
    )
    assert data["amount"] == amount
    assert contact_values(db, contact_id)["lifetime_value"] == amount


def test_a_non_numeric_amount_is_refused(cli, db, clock):
    contact_id = make_contact(db, clock)
    result = cli(
        "events", "emit", "invoice.paid", "-c", str(contact_id), "-d", "amount=abc"
    )
    assert result.exit_code != 0
    assert "data.amount" in result.stderr
    assert count(db, "events WHERE type = 'invoice.paid'") == 0


def test_amount_text_from_json_lines(cli, db, clock):
    contact_id = make_contact(db, clock)
    lines = "\n".join(
        json.dumps({"type": kind, "contact": contact_id, "data": {"amount": amount}})
        for kind, amount in (
            ("invoice.paid", "$1,200.50"),
            ("invoice.refunded", "$200.50"),
            ("invoice.paid", "lots"),
        )
    )
    result = cli("events", "emit", "-", input=lines)
    assert result.exit_code != 0
    assert "line 3" in result.stderr and "data.amount" in result.stderr
    amounts = [
        json.loads(row["data"])["amount"]
        for row in db.query(
            "SELECT data FROM events WHERE type LIKE 'invoice.%' ORDER BY id"
        )
    ]
    assert amounts == [1200.5, 200.5]
    assert contact_values(db, contact_id)["lifetime_value"] == 1200.5


@pytest.mark.parametrize("value", ["abc", "12 apples", "", "$", True, float("nan")])
def test_parse_amount_refuses_what_is_not_money(value):
    with pytest.raises(InputError, match="data.amount"):
        parse_amount(value)


def test_parse_amount_reads_money_as_people_write_it():
    assert parse_amount("1.204,50 €") == (1204.5, None)
    assert parse_amount("($5.00)") == (-5, None)
    assert parse_amount("250 cad") == (250, "CAD")
    assert parse_amount(99.999) == (100, None)


def test_an_emitted_opt_out_cancels_the_queued_texts(cli, db, clock):
    from cxm_cli.inbound import create_minimal_contact
    from cxm_cli.store import write_transaction

    with write_transaction(db):
        contact_id = create_minimal_contact(
            db, clock, email="ana@example.com", phone="+15125550101", source="web"
        )
    pending = (
        "SELECT COUNT(*) FROM due_steps WHERE contact_id = ? AND status = 'pending' "
        "AND step_label = 'first-text'"
    )
    assert db.execute(pending, [contact_id]).fetchone()[0] == 1

    result = cli(
        "events", "emit", "opted_out", "-c", str(contact_id), "-d", "channel=sms"
    )
    assert result.exit_code == 0, result.stderr
    assert db.execute(pending, [contact_id]).fetchone()[0] == 0
