"""`cxm contacts duplicates` and `cxm contacts merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxm_cli.contacts import consent_status
from cxm_cli.errors import CxmError
from cxm_cli.events import record_event
from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.duplicates import (
    email_alias_key,
    find_duplicates,
    merge_contacts,
)


def load(workspace, db, clock, tmp_path: Path, text: str):
    path = tmp_path / "leads.csv"
    path.write_text(text, encoding="utf-8")
    options = ImportOptions(rejects_path=tmp_path / "r.csv")
    return import_file(workspace, db, path, clock=clock, options=options)


def test_email_alias_key():
    assert email_alias_key("Jo.Ann+spam@gmail.com") == "joann@gmail.com"
    assert email_alias_key("jo.ann@googlemail.com") == "joann@gmail.com"
    assert email_alias_key("lena.vogel+offers@example.com") == "lena.vogel@example.com"
    assert email_alias_key("lena.vogel@example.com") == "lena.vogel@example.com"


def test_finds_flagged_alias_and_near_phone_pairs(workspace, db, clock, tmp_path):
    load(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone\n"
        "Daniel Kim,daniel.kim@example.com,(202) 555-0105\n"
        "Sofia Kim,sofia.kim@example.org,(202) 555-0105\n"
        "Jo Ann,jo.ann@gmail.com,\n"
        "Jo Ann,joann+promo@gmail.com,\n"
        "Mia Novak,mia@example.com,(415) 555-0120\n"
        "Mia Novak,mia.novak@example.org,(415) 555-0121\n"
        "Other Person,other@example.com,(415) 555-0129\n",
    )
    pairs = {(r["name_a"], r["name_b"], r["reason"]) for r in find_duplicates(db)}
    assert pairs == {
        ("Daniel Kim", "Sofia Kim", "shared phone, different emails"),
        ("Jo Ann", "Jo Ann", "email aliases of joann@gmail.com"),
        ("Mia Novak", "Mia Novak", "same name, near-identical phone"),
    }


def test_merge_keeps_every_event_identifier_and_opt_out(workspace, db, clock, tmp_path):
    load(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone,Tags\n"
        "Mia Novak,mia@example.com,(415) 555-0120,vip\n"
        "MIA NOVAK,mia.novak@example.org,(415) 555-0121,spring\n",
    )
    record_event(db, 2, "message.received", clock=clock, data={"channel": "sms"})
    db.execute(
        "INSERT INTO consents (contact_id, channel, status, source, changed_at)"
        " VALUES (2, 'email', 'opted_out', 'test', '2026-03-01T00:00:00.000000Z')"
    )
    events_before = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    merged = merge_contacts(db, 1, 2, clock=clock)

    assert merged["display_name"] == "Mia Novak"
    assert db.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 1
    emails = [r[0] for r in db.execute("SELECT email FROM contact_emails ORDER BY id")]
    assert emails == ["mia@example.com", "mia.novak@example.org"]
    phones = {r[0] for r in db.execute("SELECT phone FROM contact_phones")}
    assert phones == {"+14155550120", "+14155550121"}
    assert {r[0] for r in db.execute("SELECT tag FROM contact_tags")} == {
        "vip",
        "spring",
    }
    assert consent_status(db, 1, "email") == "opted_out"
    types = [r[0] for r in db.execute("SELECT type FROM events WHERE contact_id = 1")]
    assert "message.received" in types and types[-1] == "contact.merged"
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events_before + 1
    data = json.loads(
        db.execute("SELECT data FROM events WHERE type = 'contact.merged'").fetchone()[
            0
        ]
    )
    assert data["merged_contact"] == 2 and data["emails"] == ["mia.novak@example.org"]
    assert find_duplicates(db) == []


def test_merge_into_itself_is_refused(db, clock):
    with pytest.raises(CxmError, match="into itself"):
        merge_contacts(db, 1, 1, clock=clock)


def test_cli_duplicates_and_merge(cli, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(
        "Name,Email,Phone\n"
        "Daniel Kim,daniel.kim@example.com,(202) 555-0105\n"
        "Sofia Kim,sofia.kim@example.org,(202) 555-0105\n",
        encoding="utf-8",
    )
    assert cli("leads", "import", str(path)).exit_code == 0
    listed = cli("contacts", "duplicates", "--json").json()
    assert [(r["contact_a"], r["contact_b"]) for r in listed] == [(1, 2)]
    result = cli("contacts", "merge", "daniel.kim@example.com", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["id"] == 1
    assert cli("contacts", "duplicates", "--json").json() == []
