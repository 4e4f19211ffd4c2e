"""Each real-layout sample in the shared corpus imports as its EXPECTED.md says."""

from __future__ import annotations

import csv
import json

import pytest

from cxm_cli.contacts import consent_status
from cxm_cli.importing import ImportOptions, import_file
from tests.conftest import CORPUS_DIR

pytestmark = pytest.mark.skipif(
    not (CORPUS_DIR / "EXPECTED.md").exists(), reason="shared corpus not present"
)


@pytest.fixture
def load(workspace, db, clock, tmp_path):
    def run(name: str, **options):
        options.setdefault("rejects_path", tmp_path / f"{name}.rejects.csv")
        summary = import_file(
            workspace,
            db,
            CORPUS_DIR / name,
            clock=clock,
            options=ImportOptions(**options),
        )
        rejects = []
        if summary.rejects_path:
            with open(summary.rejects_path, encoding="utf-8") as handle:
                rejects = list(csv.DictReader(handle))
        return summary, rejects

    return run


def by_email(db, email: str) -> dict:
    row = db.execute(
        "SELECT contact_id FROM contact_emails WHERE email = ?", [email]
    ).fetchone()
    assert row, f"no contact with {email}"
    contact = dict(
        next(iter(db.query("SELECT * FROM contacts WHERE id = ?", [row[0]])))
    )
    contact["custom"] = json.loads(contact["custom"])
    return contact


def by_phone(db, phone: str) -> list[dict]:
    return list(
        db.query(
            "SELECT c.* FROM contacts c JOIN contact_phones p ON p.contact_id = c.id"
            " WHERE p.phone = ?",
            [phone],
        )
    )


def phones(db, contact_id: int) -> list[tuple]:
    return [
        (r["phone"], r["extension"], r["is_primary"])
        for r in db.query(
            "SELECT * FROM contact_phones WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
    ]


def emails(db, contact_id: int) -> list[tuple]:
    return [
        (r["email"], r["is_primary"])
        for r in db.query(
            "SELECT * FROM contact_emails WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
    ]


def count(db, sql: str, params=()) -> int:
    return db.execute(sql, params).fetchone()[0]


def test_01_google_contacts(load, db):
    summary, rejects = load("01-google-contacts.csv")

    assert summary.format == "google"
    assert (summary.records, summary.skipped, summary.rejected) == (17, 2, 2)
    assert count(db, "SELECT COUNT(*) FROM contacts") == 11
    assert [r["row"] for r in rejects] == ["7", "13"]
    assert "diego.salazar(at)example.com" in rejects[0]["reason"]

    renata = by_email(db, "renata.okafor@example.com")
    assert renata["display_name"] == "Renata Okafor"
    assert phones(db, renata["id"]) == [("+13125550142", None, 1)]

    tomasz = by_email(db, "tomasz.wisniewski@example.org")
    assert emails(db, tomasz["id"]) == [
        ("tomasz.wisniewski@example.org", 1),
        ("t.wisniewski@example.net", 0),
    ]
    assert phones(db, tomasz["id"]) == [
        ("+14155550107", None, 1),
        ("+14155550108", None, 0),
    ]
    assert tomasz["last_name"] == "Wiśniewski"

    zoe = by_email(db, "zoe.ferrand@example.com")
    assert zoe["custom"]["notes"] == "Gate code 4412\nDog is friendly"
    assert zoe["custom"]["Address 1 - Formatted"].count("\n") == 3

    hoa = by_phone(db, "+13125550177")
    assert [c["display_name"] for c in hoa] == ["Lakeview HOA"]
    assert phones(db, hoa[0]["id"]) == [("+13125550177", "12", 1)]

    mei = by_email(db, "mei.tanaka@example.com")
    assert mei["phone"] == "+61491570156"
    assert not by_phone(db, "+161491570156")

    amara = by_email(db, "amara.nwosu@example.net")
    assert phones(db, amara["id"]) == [("+12025550133", "204", 1)]
    assert by_email(db, "hannah.brandt@example.org")["custom"]["birthday"] == "--04-17"

    carlos = by_phone(db, "+17025550164")
    assert [c["display_name"] for c in carlos] == ["Carlos Peña"]

    tags = {r[0] for r in db.execute("SELECT DISTINCT tag FROM contact_tags")}
    assert tags == {"Leads", "Customers", "Vendors"}


def test_01_merges_are_on_the_timeline(load, db):
    load("01-google-contacts.csv")
    merged = [
        json.loads(r["data"])["row"]
        for r in db.query("SELECT data FROM events WHERE type = 'contact.merged'")
    ]
    assert sorted(merged) == [4, 12]
    assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'lead.created'") == 11


def test_05_outlook_com_export(load, db):
    summary, rejects = load("05-outlook-com-export.csv")

    assert summary.format == "outlook-com" and summary.encoding == "utf-8-sig"
    assert count(db, "SELECT COUNT(*) FROM contacts") == 4
    assert [r["row"] for r in rejects] == ["6"]

    okoro = by_phone(db, "+442079460812")
    assert [c["display_name"] for c in okoro] == ["Okoro"]
    beatriz = by_email(db, "beatriz.lindqvist@example.com")
    assert phones(db, beatriz["id"]) == [("+14155550132", None, 1)]
    femi = by_email(db, "femi.adeyemi@example.org")
    assert [e for e, _ in emails(db, femi["id"])] == [
        "femi.adeyemi@example.org",
        "femi@example.net",
    ]
    assert phones(db, femi["id"]) == [("+19195550144", "3", 1)]
    chloe = by_email(db, "chloe.marchetti@example.com")
    assert chloe["first_name"] == "Chloé"
    assert chloe["custom"]["notes"] == 'Met at home show; "very interested" in solar'


def test_08b_mailchimp_unsubscribed(load, db):
    summary, _ = load("08b-mailchimp-unsubscribed_members_export.csv")
    assert summary.format == "mailchimp" and summary.created == 3
    for email, when in [
        ("renata.okafor@example.com", "2024-02-27T18:03:12.000000Z"),
        ("priya.raman@example.org", "2024-01-09T07:21:45.000000Z"),
        ("old.customer@example.net", "2023-07-15T22:59:59.000000Z"),
    ]:
        contact = by_email(db, email)
        assert consent_status(db, contact["id"], "email") == "opted_out"
        row = db.execute(
            "SELECT changed_at FROM consents WHERE contact_id = ?", [contact["id"]]
        ).fetchone()
        assert row[0] == when


def test_08b_unsubscribed_rows_are_kept_but_are_not_new_leads(load, db):
    summary, _ = load("08b-mailchimp-unsubscribed_members_export.csv")

    assert count(db, "SELECT COUNT(*) FROM contacts") == 3
    assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'lead.created'") == 0
    imported = [
        json.loads(row[0])
        for row in db.execute(
            "SELECT data FROM events WHERE type = 'contact.imported' ORDER BY id"
        )
    ]
    assert len(imported) == 3
    assert all(
        data["suppressed"] is True
        and data["source"] == "mailchimp"
        and data["batch_id"] == summary.batch_id
        for data in imported
    )
    # No lead sequence, no lead stage: nothing may email these people.
    assert count(db, "SELECT COUNT(*) FROM enrollments") == 0
    assert count(db, "SELECT COUNT(*) FROM contact_stages") == 0
    old_customer = by_email(db, "old.customer@example.net")
    assert consent_status(db, old_customer["id"], "email") == "opted_out"


def test_a_normal_file_still_makes_leads_that_enter_sequences(load, db):
    load("01-google-contacts.csv")
    assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'lead.created'") == 11
    assert count(db, "SELECT COUNT(*) FROM enrollments") == 11


@pytest.mark.parametrize("mailchimp_first", [True, False])
def test_opt_out_wins_whichever_file_comes_first(load, db, mailchimp_first):
    files = ["08b-mailchimp-unsubscribed_members_export.csv", "01-google-contacts.csv"]
    for name in files if mailchimp_first else reversed(files):
        load(name)
    load("08b-mailchimp-unsubscribed_members_export.csv")
    load("01-google-contacts.csv")
    for email in ("renata.okafor@example.com", "priya.raman@example.org"):
        assert consent_status(db, by_email(db, email)["id"], "email") == "opted_out"
    assert count(db, "SELECT COUNT(*) FROM contacts") == 12


def test_10_meta_lead_ads_utf16_tab(load, db):
    summary, rejects = load("10-meta-lead-ads-download-utf16-tab.csv")

    assert (summary.format, summary.encoding, summary.delimiter) == (
        "meta-lead-ads",
        "utf-16",
        "tab",
    )
    assert count(db, "SELECT COUNT(*) FROM contacts") == 6
    assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'form.submitted'") == 7
    assert [(r["row"], r["reason"]) for r in rejects] == [
        ("7", "test lead from the Lead Ads testing tool")
    ]

    rosa = by_email(db, "rosa.m@example.com")
    submissions = list(
        db.query(
            "SELECT at FROM events WHERE contact_id = ? AND type = 'form.submitted'"
            " ORDER BY at",
            [rosa["id"]],
        )
    )
    assert [s["at"] for s in submissions] == [
        "2024-03-05T16:03:40.000000Z",
        "2024-03-05T16:09:58.000000Z",
    ]
    created = json.loads(
        db.execute(
            "SELECT data FROM events WHERE contact_id = ? AND type = 'lead.created'",
            [rosa["id"]],
        ).fetchone()[0]
    )
    assert created["created_time"] == "2024-03-05T16:03:40.000000Z"

    kwame = by_phone(db, "+13125550173")
    assert [c["email"] for c in kwame] == [None]
    assert any(
        "kwame.asante@examplecom" in w["warning"] for w in summary.warning_samples
    )
    li = by_phone(db, "+13125550174")
    assert [(c["display_name"], c["email"]) for c in li] == [("LI WEI", None)]
    dave = by_email(db, "dave.k@example.org")
    assert dave["first_name"] == "dave"
    form = json.loads(
        db.execute(
            "SELECT data FROM events WHERE contact_id = ? AND type = 'form.submitted'",
            [dave["id"]],
        ).fetchone()[0]
    )
    assert form["form"] == "AC tune-up quote form"
    assert form["platform"] == "fb" and form["lead_id"] == "1182736450011224"
    assert form["what_service_do_you_need?"] == "new_install"


def test_10_reimport_adds_no_second_form_event(load, db):
    load("10-meta-lead-ads-download-utf16-tab.csv")
    summary, _ = load("10-meta-lead-ads-download-utf16-tab.csv")
    assert (summary.created, summary.updated, summary.unchanged) == (0, 0, 7)
    assert count(db, "SELECT COUNT(*) FROM events WHERE type = 'form.submitted'") == 7


def test_12_square_customers(load, db):
    summary, rejects = load("12-square-customers-export.csv")

    assert summary.format == "square"
    assert count(db, "SELECT COUNT(*) FROM contacts") == 4
    assert [r["row"] for r in rejects] == ["3"]

    marcus = by_email(db, "marcus.bell@example.org")
    assert marcus["phone"] == "+16175550123"
    assert marcus["custom"]["Lifetime Spend"] == 1204.5

    keisha = by_email(db, "keisha.moore@example.com")
    assert keisha["display_name"] == "Keisha Moore"
    assert phones(db, keisha["id"]) == [("+13125550115", None, 1)]
    assert keisha["custom"]["Postal Code"] == "60610"
    assert keisha["custom"]["Blocked from online booking"] == "Yes"
    assert consent_status(db, keisha["id"], "email") == "opted_out"
    assert len(by_phone(db, "+13125550115")) == 1


def test_every_corpus_file_reimports_unchanged(load, db):
    names = sorted(p.name for p in CORPUS_DIR.glob("*.csv"))
    for name in names:
        load(name)
    events = count(db, "SELECT COUNT(*) FROM events")
    for name in names:
        summary, _ = load(name)
        assert summary.created == summary.updated == 0, name
    assert count(db, "SELECT COUNT(*) FROM events") == events
