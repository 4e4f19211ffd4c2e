"""``cxm events emit`` checks what it is told before anything is recorded.

A phone that cannot exist is refused (or dropped when an email names the
person), and an invoice's amount is read as money or refused, so lifetime
value adds up and nobody texts +1 555 000 0000.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cxm_cli import clock as clocks
from cxm_cli.board import contact_values
from cxm_cli.errors import InputError
from cxm_cli.event_intake import parse_amount, parse_event_time
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


def test_a_json_line_without_a_type_says_so(cli, db):
    lines = json.dumps({"email": "ok@example.com", "data": {"form": "contact"}})
    result = cli("events", "emit", "-", input=lines)
    assert result.exit_code != 0
    assert "line 1" in result.stderr and "no event type" in result.stderr
    assert "None" not in result.stderr
    assert count(db, "contacts") == 0


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


def stored_data(db, event_type: str) -> dict:
    row = db.execute(
        "SELECT data FROM events WHERE type = ? ORDER BY id DESC LIMIT 1",
        [event_type],
    ).fetchone()
    return json.loads(row[0]) if row else {}


@pytest.mark.parametrize(
    "value, problem",
    [
        ("notadate", "not a"),
        ("2026-02-30T10:00Z", "day is out of range"),
        ("2026-03-05T25:00Z", "not a valid date and time"),
        ("", "not a date and time"),
        ("2026-03-05", "not a date and time"),
    ],
)
def test_an_unreadable_appointment_time_is_refused(cli, db, clock, value, problem):
    contact_id = make_contact(db, clock)

    result = cli(
        "events",
        "emit",
        "appointment.booked",
        "-c",
        str(contact_id),
        "-d",
        f"starts_at={value}",
    )

    assert result.exit_code != 0
    assert "data.starts_at" in result.stderr and problem in result.stderr
    assert count(db, "events WHERE type = 'appointment.booked'") == 0


def test_ends_at_on_any_event_type_is_checked(cli, db, clock):
    contact_id = make_contact(db, clock)
    result = cli(
        "events", "emit", "class.held", "-c", str(contact_id), "-d", "ends_at=soon"
    )
    assert result.exit_code != 0 and "data.ends_at" in result.stderr


def test_appointment_times_are_stored_in_utc(cli, db, clock, workspace):
    contact_id = make_contact(db, clock)

    with_offset = cli(
        "events",
        "emit",
        "appointment.booked",
        "-c",
        str(contact_id),
        "-d",
        "starts_at=2026-03-05T10:00-05:00",
    )
    assert with_offset.exit_code == 0, with_offset.stderr
    assert stored_data(db, "appointment.booked")["starts_at"] == (
        "2026-03-05T15:00:00.000000Z"
    )

    naive = cli(
        "events",
        "emit",
        "appointment.confirmed",
        "-c",
        str(contact_id),
        "-d",
        "starts_at=2026-03-05T09:30",
    )
    assert naive.exit_code == 0, naive.stderr
    local = datetime(2026, 3, 5, 9, 30, tzinfo=ZoneInfo(workspace.timezone))
    assert stored_data(db, "appointment.confirmed")["starts_at"] == clocks.iso(local)


def test_json_lines_name_the_line_with_a_bad_time(cli, db, clock):
    contact_id = make_contact(db, clock)
    lines = [
        {"type": "appointment.booked", "contact": contact_id, "data": {}},
        {
            "type": "appointment.booked",
            "contact": contact_id,
            "data": {"starts_at": "garbage"},
        },
    ]
    result = cli(
        "events", "emit", "-", input="\n".join(json.dumps(x) for x in lines) + "\n"
    )
    assert result.exit_code == 1
    assert "line 2: data.starts_at" in result.stderr
    assert count(db, "events WHERE type = 'appointment.booked'") == 1


def test_a_time_skipped_by_daylight_saving_does_not_exist():
    with pytest.raises(InputError, match="does not exist in America/Chicago"):
        parse_event_time("data.starts_at", "2026-03-08T02:30", "America/Chicago")
    assert parse_event_time(
        "data.starts_at", "2026-03-08T03:30", "America/Chicago"
    ) == ("2026-03-08T08:30:00.000000Z")


def test_a_phone_shared_by_two_contacts_is_refused(cli, db, clock):
    first = make_contact(db, clock, email="a@example.com", phone="+13125550194")
    second = make_contact(db, clock, email="b@example.com", phone="+13125550194")

    result = cli("events", "emit", "form.submitted", "--phone", "+13125550194")

    assert result.exit_code != 0
    assert "belongs to several contacts" in result.stderr
    assert f"{first}, {second}" in result.stderr
    assert count(db, "events WHERE type = 'form.submitted'") == 0


def test_a_phone_with_an_extension_keeps_it_and_is_never_texted(
    cli, db, workspace, clock
):
    from cxm_cli.runner import run_once

    result = cli(
        "events",
        "emit",
        "form.submitted",
        "--phone",
        "312-555-0193 x5",
        "--name",
        "Ext Guy",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    contact_id = result.json()["contact_id"]
    phones = list(
        db.query(
            "SELECT phone, extension FROM contact_phones WHERE contact_id = ?",
            [contact_id],
        )
    )
    assert phones == [{"phone": "+13125550193", "extension": "5"}]

    # The new-lead sequence starts with a text: a switchboard line gets none.
    run_once(workspace, db, clock)
    assert count(db, "messages WHERE channel = 'sms'") == 0
    skipped = db.execute(
        "SELECT COUNT(*) FROM events WHERE contact_id = ? AND type = 'step.skipped'",
        [contact_id],
    ).fetchone()[0]
    assert skipped >= 1


def test_a_new_email_on_a_known_phone_is_a_new_person(cli, db, clock):
    from tests.support.fixtures import make_contact

    xena = make_contact(db, clock, email="xena@example.com", phone="+13125550301")
    no_email = make_contact(db, clock, email=None, phone="+13125550302")

    other = cli(
        "events",
        "emit",
        "form.submitted",
        "--email",
        "other@example.com",
        "--phone",
        "312-555-0301",
        "--name",
        "Other Person",
        "--json",
    )
    same = cli(
        "events",
        "emit",
        "form.submitted",
        "--email",
        "zoe@example.com",
        "--phone",
        "312-555-0302",
        "--json",
    )

    assert other.exit_code == 0, other.stderr
    created = other.json()["contact_id"]
    assert created != xena
    assert db["contacts"].get(created)["email"] == "other@example.com"
    # A phone whose holder has no email is the same person, as on import.
    assert same.exit_code == 0, same.stderr
    assert same.json()["contact_id"] == no_email
