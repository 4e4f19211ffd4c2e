"""One fixture per export layout (tests/fixtures/imports, invented people).

Each test imports the fixture into a fresh workspace and checks every contact
it should make (names, emails, phones with extension, kind and primary flag,
tags, consent), every merge and every reject with its reason.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.formats import detect_layout, get_layout, role_for

FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def snapshot(db) -> list[dict]:
    people = []
    for contact in db.query("SELECT * FROM contacts ORDER BY id"):
        cid = contact["id"]
        people.append(
            {
                "name": contact["display_name"],
                "emails": [
                    r["email"]
                    for r in db.query(
                        "SELECT email FROM contact_emails WHERE contact_id = ?"
                        " ORDER BY is_primary DESC, id",
                        [cid],
                    )
                ],
                "phones": [
                    (r["phone"], r["extension"], r["kind"], r["is_primary"])
                    for r in db.query(
                        "SELECT * FROM contact_phones WHERE contact_id = ? ORDER BY id",
                        [cid],
                    )
                ],
                "tags": sorted(
                    r["tag"]
                    for r in db.query(
                        "SELECT tag FROM contact_tags WHERE contact_id = ?", [cid]
                    )
                ),
                "consent": {
                    r["channel"]: r["status"]
                    for r in db.query(
                        "SELECT * FROM consents WHERE contact_id = ?", [cid]
                    )
                },
            }
        )
    return people


def person(name, emails=(), phones=(), tags=(), consent=None) -> dict:
    return {
        "name": name,
        "emails": list(emails),
        "phones": [tuple(p) for p in phones],
        "tags": sorted(tags),
        "consent": consent or {},
    }


@pytest.fixture
def load(workspace, db, clock, tmp_path):
    def run(name: str, **options):
        options.setdefault("rejects_path", tmp_path / "rejects.csv")
        summary = import_file(
            workspace,
            db,
            FIXTURES / name,
            clock=clock,
            options=ImportOptions(**options),
        )
        rejects = []
        if summary.rejects_path:
            with open(summary.rejects_path, encoding="utf-8") as handle:
                rejects = [
                    (int(r["row"]), r["column"], r["reason"])
                    for r in csv.DictReader(handle)
                ]
        return summary, rejects

    return run


def events(db, type_: str) -> list[dict]:
    return [
        {**row, "data": json.loads(row["data"])}
        for row in db.query(
            "SELECT * FROM events WHERE type = ? ORDER BY at, id", [type_]
        )
    ]


def custom_of(db, email: str) -> dict:
    row = db.execute(
        "SELECT c.custom FROM contacts c JOIN contact_emails e ON e.contact_id = c.id"
        " WHERE e.email = ?",
        [email],
    ).fetchone()
    return json.loads(row[0])


def flagged(db) -> list[str]:
    return [r["reason"] for r in db.query("SELECT reason FROM likely_duplicates")]


def test_google_legacy_utf16(load, db):
    summary, rejects = load("google-legacy-utf16.csv")
    assert (summary.format, summary.encoding) == ("google-legacy", "utf-16")
    assert snapshot(db) == [
        person(
            "Иван Петров",
            ["ivan.petrov@example.com"],
            [("+13125550140", None, "mobile", 1)],
            ["Clients"],
        ),
        person(
            "Marta Nowak",
            [],
            [("+13125550141", None, "fax", 0), ("+13125550142", None, "mobile", 1)],
        ),
    ]
    assert db.execute("SELECT phone FROM contacts WHERE id = 2").fetchone()[0] == (
        "+13125550142"
    )
    assert [
        json.loads(e["data"])["row"]
        for e in db.query("SELECT data FROM events WHERE type = 'contact.merged'")
    ] == [3]
    assert rejects == [(4, "", "no email or phone")]


def test_outlook_desktop_cp1252_quoted(load, db):
    summary, rejects = load("outlook-desktop-cp1252.csv")
    assert (summary.format, summary.encoding) == ("outlook", "cp1252")
    assert snapshot(db) == [
        person(
            "José Núñez",
            ["jose.nunez@example.com"],
            [("+13125550144", None, "fax", 0), ("+13125550143", None, "mobile", 1)],
            ["Clients", "VIP"],
        ),
        person("Renée Lefèvre", [], [("+13125550145", None, "work", 1)]),
    ]
    jose = custom_of(db, "jose.nunez@example.com")
    assert jose["birthday"] == "1990-04-17"
    assert "Anniversary" not in jose and "Gender" not in jose  # 0/0/00, defaults
    assert "Exchange directory name" in summary.warning_samples[0]["warning"]
    assert rejects == [
        (
            3,
            "E-mail Address",
            "no usable email or phone: an Exchange directory name, not an email",
        )
    ]


def test_outlook_com_shared_phone_different_emails_stays_two(load, db):
    summary, _ = load("outlook-com.csv")
    assert summary.format == "outlook-com"
    assert snapshot(db) == [
        person(
            "Sven Berg",
            ["sven.berg@example.org"],
            [("+14155550147", None, "mobile", 1), ("+14155550146", None, "fax", 0)],
        ),
        person(
            "Sven Berg", ["sven@example.net"], [("+14155550147", None, "mobile", 1)]
        ),
    ]
    assert flagged(db) == ["shared phone, different emails"]


def test_mailchimp_subscribed_and_cleaned(load, db):
    summary, _ = load("mailchimp-subscribed.csv")
    assert summary.format == "mailchimp"
    assert snapshot(db) == [
        person(
            "Olivia Hart",
            ["olivia.hart@example.co.uk"],
            [("+442079460301", None, None, 1)],  # national number, CC=GB
            ["Blog", "VIP"],
            {"email": "opted_in"},
        ),
        person(
            "Sam Reed", ["sam.reed@example.com"], [], ["Blog"], {"email": "opted_in"}
        ),
    ]
    assert custom_of(db, "olivia.hart@example.co.uk")["birthday"] == "--04-17"
    assert any("scientific notation" in w["warning"] for w in summary.warning_samples)

    assert len(events(db, "lead.created")) == 2

    summary, _ = load("mailchimp-cleaned.csv")
    status = db.execute(
        "SELECT status FROM contact_emails WHERE email = 'gone.away@example.net'"
    ).fetchone()[0]
    assert status == "bouncing"
    # A bounce list is kept, but its people are no new leads.
    assert summary.created == 1 and len(events(db, "lead.created")) == 2
    assert [e["data"]["suppressed"] for e in events(db, "contact.imported")] == [True]


def test_hubspot(load, db):
    summary, rejects = load("hubspot.csv")
    assert summary.format == "hubspot"
    assert snapshot(db) == [
        person(
            "Nina Park", ["nina.park@example.com"], [("+16175550150", None, None, 1)]
        ),
        person(
            "Omar Haddad", ["omar.haddad@example.org"], [("+16175550151", "9", None, 1)]
        ),
    ]
    created = [e["data"]["created_time"] for e in events(db, "lead.created")]
    # "2024-03-05 14:30" in the workspace's zone (America/Chicago).
    assert created == ["2024-03-05T20:30:00.000000Z", "2024-03-06T14:05:00.000000Z"]
    assert [r[0] for r in rejects] == [3]
    assert "placeholder" in rejects[0][2]


def test_gohighlevel(load, db):
    summary, _ = load("gohighlevel.csv")
    assert summary.format == "gohighlevel"
    assert snapshot(db) == [
        person(
            "Priya Shah",
            ["priya.shah@example.com"],
            [("+13125550152", None, None, 1)],
            ["lead", "spring promo"],
        ),
        person("Tom Reyes", [], [("+442079460302", None, None, 1)], ["customer"]),
    ]
    created = events(db, "lead.created")[0]["data"]["created_time"]
    assert created == "2026-06-08T17:28:39.000000Z"


def test_meta_lead_ads(load, db):
    summary, rejects = load("meta-lead-ads.csv")
    assert summary.format == "meta-lead-ads"
    assert snapshot(db) == [
        person(
            "Ama Owusu", ["ama.owusu@example.com"], [("+13125550153", None, None, 1)]
        )
    ]
    forms = events(db, "form.submitted")
    assert [f["data"]["when_is_best_to_call?"] for f in forms] == [
        "mornings",
        "evenings",
    ]
    assert (
        forms[0]["data"]["platform"] == "ig" and forms[0]["data"]["campaign_id"] == "13"
    )
    assert custom_of(db, "ama.owusu@example.com") == {
        "when_is_best_to_call?": "mornings"
    }
    assert rejects == [
        (2, "when_is_best_to_call?", "test lead from the Lead Ads testing tool")
    ]


def test_square(load, db):
    summary, rejects = load("square.csv")
    assert summary.format == "square"
    assert snapshot(db) == [
        person(
            "Lena Vogel",
            ["lena.vogel@example.com"],
            [("+13125550154", None, None, 1)],
            consent={"email": "opted_out"},
        ),
        # A +tag is a different address: a second contact, listed as a duplicate.
        person(
            "Lena Vogel",
            ["lena.vogel+offers@example.com"],
            consent={"email": "opted_in"},
        ),
    ]
    assert custom_of(db, "lena.vogel@example.com")["Lifetime Spend"] == 1050.0
    assert custom_of(db, "lena.vogel@example.com")["Postal Code"] == "60614"
    assert rejects == [(3, "", "no email or phone")]
    # An email opt-out column on a customer list does not make a row a
    # suppression record: both are leads (the opted-out one may get texts).
    assert len(events(db, "lead.created")) == 2
    assert events(db, "contact.imported") == []


def test_shopify_and_legacy(load, db):
    summary, _ = load("shopify.csv")
    assert summary.format == "shopify"
    load("shopify-legacy.csv")
    assert snapshot(db) == [
        # A German national number read with the row's country code.
        person(
            "Jonas Weber",
            ["jonas.weber@example.de"],
            [("+4930901820", None, None, 1)],
            ["vip", "wholesale"],
            {"email": "opted_in"},
        ),
        person(
            "Ella Stone",
            ["ella.stone@example.com"],
            [("+13125550155", None, None, 1)],
            consent={"sms": "opted_in"},  # "no" email marketing is not an opt-out
        ),
        person(
            "Rita Moreau",
            ["rita.moreau@example.fr"],
            [("+33199001234", None, None, 1)],
            consent={"email": "opted_in"},
        ),
    ]
    assert custom_of(db, "jonas.weber@example.de")["Total Spent"] == 120.5
    assert custom_of(db, "jonas.weber@example.de")["Customer ID"] == "7001"


def test_calendly_bookings_become_events(load, db):
    summary, _ = load("calendly.csv")
    assert summary.format == "calendly"
    assert snapshot(db) == [
        person(
            "Hugo Lambert",
            ["hugo.lambert@example.com"],
            [("+12025550156", None, "mobile", 1)],
            consent={"email": "opted_in"},
        )
    ]
    booked = events(db, "appointment.booked")
    assert [(b["data"]["service"], b["data"]["starts_at"]) for b in booked] == [
        ("Free consultation", "2024-03-12T14:00:00.000000Z"),  # 10:00 New York
        ("Follow-up", "2024-04-02T13:00:00.000000Z"),
    ]
    assert [
        c["data"]["appointment_id"] for c in events(db, "appointment.cancelled")
    ] == ["inv-002"]
    assert custom_of(db, "hugo.lambert@example.com") == {
        "What would you like to discuss?": "Whitening"
    }


def test_acuity(load, db):
    summary, _ = load("acuity.csv")
    assert summary.format == "acuity"
    assert snapshot(db) == [
        person(
            "Freya Hall",
            ["freya.hall@example.co.uk"],
            [("+442079460303", None, None, 1)],
        )
    ]
    booked = events(db, "appointment.booked")
    assert [(b["data"]["service"], b["data"]["starts_at"]) for b in booked] == [
        ("Deep clean", "2020-12-02T09:00:00.000000Z"),  # 9:00 am London
        ("Check-up", "2020-12-09T14:30:00.000000Z"),
    ]


def test_typeform_partial_response_is_a_contact_without_a_submission(load, db):
    summary, _ = load("typeform.csv")
    assert summary.format == "typeform"
    assert snapshot(db) == [
        person(
            "Kenji Mori", ["kenji.mori@example.com"], [("+14155550157", None, None, 1)]
        ),
        person("Lara", ["lara@example.org"]),
    ]
    forms = events(db, "form.submitted")
    assert len(forms) == 1 and forms[0]["at"] == "2024-03-05T14:03:00.000000Z"
    assert forms[0]["data"]["Which service are you interested in?"] == "Implants"


def test_google_forms(load, db):
    summary, rejects = load("google-forms.csv")
    assert summary.format == "google-forms"
    assert snapshot(db) == [
        person(
            "Wes Turner", ["wes.turner@example.com"], [("+17735550158", None, None, 1)]
        )
    ]
    forms = events(db, "form.submitted")
    assert forms[0]["at"] == "2024-03-05T15:14:27.000000Z"  # 9:14 AM GMT-6
    assert forms[0]["data"]["What can we help with?"] == "Cleaning, Whitening"
    assert [r[0] for r in rejects] == [2]


def test_zoho_opt_out(load, db):
    summary, _ = load("zoho-leads.csv")
    assert summary.format == "zoho"
    assert snapshot(db) == [
        person(
            "Iris Fox",
            ["iris.fox@example.com"],
            [("+19195550159", None, "mobile", 1)],
            consent={"email": "opted_out"},
        ),
        person("Ben Cole", ["ben.cole@example.com"], [("+19195550160", None, None, 1)]),
    ]
    assert custom_of(db, "iris.fox@example.com")["Record Id"] == "5725767000000123001"


def test_salesforce_uppercase_headers(load, db):
    summary, _ = load("salesforce-leads.csv")
    assert summary.format == "salesforce"
    assert snapshot(db) == [
        person(
            "Mila Novak",
            ["mila.novak@example.com"],
            [("+13125550161", None, None, 1)],
            consent={"email": "opted_out"},
        ),
        person(None, ["web.lead@example.org"]),  # "[not provided]" is no name
    ]
    created = [e["data"]["created_time"] for e in events(db, "lead.created")]
    assert created == ["2024-03-05T15:14:27.000000Z", "2024-03-06T08:00:00.000000Z"]


def test_excel_semicolon_windows_1252_with_region(load, db):
    summary, _ = load("excel-semicolon-cp1252.csv", region="DE")
    assert (summary.encoding, summary.delimiter) == ("cp1252", "semicolon")
    assert snapshot(db) == [
        person(
            "Jürgen Müller",
            ["juergen.mueller@example.de"],
            [("+4930901820", None, None, 1)],
        ),
        person(
            "Käthe Schröder", ["kaethe@example.de"], [("+4930901821", None, None, 1)]
        ),
        person("Uwe Groß", [], [("+4930901822", None, None, 1)]),
    ]
    assert custom_of(db, "juergen.mueller@example.de")["birthday"] == "1980-12-31"
    uwe = json.loads(
        db.execute("SELECT custom FROM contacts WHERE id = 3").fetchone()[0]
    )
    assert uwe["Geburtsdatum"] == "30.02.1990"  # impossible: kept and flagged
    assert uwe["import_flags"] == ["Geburtsdatum: 30.02.1990 is not a real date"]


def test_excel_unicode_text_pipe_and_mac_line_ends(load, db):
    summary, _ = load("excel-unicode-text.txt")
    assert (summary.encoding, summary.delimiter) == ("utf-16", "tab")
    summary, _ = load("pipe-delimited.csv")
    assert (summary.delimiter, summary.skipped, summary.created) == ("pipe", 2, 2)
    summary, _ = load("mac-cr-only.csv")
    assert summary.created == 2
    names = [p["name"] for p in snapshot(db)]
    assert names == [
        "Søren Kierkegaard",
        "Ada Lovelace",
        "Pia Lund",
        "Bo Lund",
        "Anne Dupont",
        "Luc Martin",
    ]
    assert flagged(db) == ["shared phone, different emails"]


def test_day_month_order_is_inferred_per_column(load, db):
    summary, _ = load("dates-day-first.csv")
    assert summary.notes == []
    created = [e["data"]["created_time"][:10] for e in events(db, "lead.created")]
    assert created == ["2024-04-03", "2024-04-25"]
    assert custom_of(db, "aoife@example.ie")["birthday"] == "1990-05-12"
    cian = custom_of(db, "cian@example.ie")
    assert cian["Birthday"] == "31/02/1988" and "import_flags" in cian


def test_unsettled_dates_warn_with_the_assumption(load, db):
    summary, _ = load("dates-ambiguous.csv")
    assert len(summary.notes) == 1
    assert "read as month/day" in summary.notes[0] and "Signup Date" in summary.notes[0]


def test_date_format_forces_order_and_reports_contradictions(load, db):
    summary, _ = load("dates-ambiguous.csv", date_format="DMY")
    assert summary.notes == []
    created = [e["data"]["created_time"][:10] for e in events(db, "lead.created")]
    assert created == ["2024-04-03", "2024-06-05"]


def test_date_format_contradiction_is_flagged_not_rolled_over(load, db):
    summary, _ = load("dates-day-first.csv", date_format="MDY")
    cian = custom_of(db, "cian@example.ie")
    assert cian["Signup Date"] == "25/04/2024"
    assert any("does not fit the month/day order" in f for f in cian["import_flags"])
    assert summary.created == 2


def test_apple_vcard(load, db):
    summary, rejects = load("apple-contacts.vcf")
    assert (summary.input_format, summary.format) == ("vcard", "vcard")
    assert snapshot(db) == [
        person(
            "Chidi Okafor",
            ["chidi.okafor@example.com"],
            [("+13125550163", None, "mobile", 1), ("+13125550164", None, "fax", 0)],
            ["Clients", "VIP"],
        ),
        person("Lakeside Veterinary Clinic", [], [("+17735550165", None, "work", 1)]),
    ]
    chidi = custom_of(db, "chidi.okafor@example.com")
    assert chidi["notes"] == "Prefers mornings, not Mondays\nGate code 1234"
    assert chidi["birthday"] == "--04-17"
    assert rejects == [(3, "", "no email or phone")]


def test_truncated_vcard_is_rejected_with_its_number(workspace, db, clock, tmp_path):
    card = "BEGIN:VCARD\nVERSION:3.0\nN:{1};{0};;;\nFN:{0} {1}\nEMAIL:{2}\n"
    path = tmp_path / "cut.vcf"
    path.write_text(
        card.format("Ada", "Lind", "ada@example.com")
        + "END:VCARD\n"
        + card.format("Bo", "Nye", "bo@example.com")  # no END: the next begins
        + card.format("Cy", "Oda", "cy@example.com")  # the file ends here
    )
    summary = import_file(
        workspace,
        db,
        path,
        clock=clock,
        options=ImportOptions(rejects_path=tmp_path / "r.csv"),
    )

    assert summary.counts() == {
        "records": 3,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 2,
        "skipped": 0,
    }
    with open(tmp_path / "r.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["row"], r["reason"]) for r in rows] == [
        ("2", "truncated vCard: no END:VCARD before the next BEGIN:VCARD"),
        ("3", "truncated vCard: no END:VCARD before the end of the file"),
    ]
    assert "bo@example.com" in rows[0]["record"]


def test_json_lines(load, db):
    summary, rejects = load("leads.jsonl")
    assert (summary.input_format, summary.skipped) == ("jsonl", 1)
    assert snapshot(db) == [
        person(
            "Iker Ruiz",
            ["iker.ruiz@example.es"],
            [("+34910000000", None, None, 1)],
            ["spring", "web"],
        ),
        person("Nora Blom", ["nora@example.nl", "n.blom@example.org"]),
    ]
    assert [(r[0], r[2].split(":")[0]) for r in rejects] == [
        (4, "malformed line"),
        (5, "malformed line"),
    ]


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name for p in FIXTURES.iterdir() if p.suffix in (".csv", ".vcf", ".jsonl")
    ),
)
def test_every_fixture_reimports_unchanged(load, db, name):
    options = {"region": "DE"} if "semicolon" in name else {}
    load(name, **options)
    events_before = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    summary, _ = load(name, **options)
    assert summary.created == summary.updated == 0
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == events_before


def import_text(workspace, db, clock, tmp_path, text: str):
    path = tmp_path / "people.csv"
    path.write_text(text, encoding="utf-8")
    options = ImportOptions(rejects_path=tmp_path / "people.rejects.csv")
    return import_file(workspace, db, path, clock=clock, options=options)


@pytest.mark.parametrize(
    "headers",
    [
        ["First Name", "Last Name", "Email", "Mobile Phone"],
        ["ID", "First Name", "Last Name", "Email", "Mobile Phone", "Created Date"],
        ["EMAIL", "FIRSTNAME", "LASTNAME", "MOBILEPHONE", "LEADSOURCE"],
        ["Email", "Phone", "Lead Source", "Lead Status", "Email Opt Out", "Created"],
        ["Email Address", "First Name", "Last Name", "Phone Number", "Created Time"],
    ],
)
def test_common_headers_alone_never_pick_a_vendor_layout(headers):
    assert detect_layout(headers).name == "generic"


def test_plain_contact_list_imports_as_generic(workspace, db, clock, tmp_path):
    summary = import_text(
        workspace,
        db,
        clock,
        tmp_path,
        "First Name,Last Name,Email,Mobile Phone,Created Date\n"
        "Ada,Lind,ada@example.com,312-555-0101,2024-03-05 09:30\n",
    )

    assert summary.format == "generic"
    assert db.execute("SELECT source FROM contacts").fetchone()[0] == "generic"
    # No offset: read in the business's zone (Chicago, UTC-6 in early March).
    created = events(db, "lead.created")[0]["data"]["created_time"]
    assert created == "2024-03-05T15:30:00.000000Z"


def test_country_names_set_the_phone_region(workspace, db, clock, tmp_path):
    summary = import_text(
        workspace,
        db,
        clock,
        tmp_path,
        "Name,Email,Phone,Country\n"
        "Amy Reid,amy@example.com,020 7946 0958,United Kingdom\n"
        "Ian Muir,ian@example.com,0131 496 0001,Scotland\n"
        "Bo Visser,bo@example.com,06 12345678,Nederland\n"
        "Cy Lee,,020 7946 0959,Narnia\n",
    )

    assert [p["phones"] for p in snapshot(db)] == [
        [("+442079460958", None, None, 1)],
        [("+441314960001", None, None, 1)],
        [("+31612345678", None, None, 1)],
    ]
    with open(summary.rejects_path, encoding="utf-8") as handle:
        (reject,) = list(csv.DictReader(handle))
    assert reject["row"] == "4"
    assert "country 'Narnia' not recognised" in reject["reason"]


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Do Not Text", "sms_opt_out"),
        ("Do Not SMS", "sms_opt_out"),
        ("SMS Opt Out", "sms_opt_out"),
        ("Text Opt-Out", "sms_opt_out"),
        ("DoNotCall", "sms_opt_out"),  # voicemail drops follow SMS consent
        ("Do Not Email", "email_opt_out"),
        ("Email Opt Out", "email_opt_out"),
        ("Unsubscribed", "email_opt_out"),
        ("Opt Out", "opt_out"),
        ("Opted Out", "opt_out"),
        ("DO_NOT_CONTACT", "opt_out"),
    ],
)
def test_opt_out_headers_are_consent_columns(header, field):
    assert role_for(get_layout("generic"), header, {}) == (field, None)


SALESFORCE_LEAD_REPORT = (
    "Lead ID,First Name,Last Name,Company / Account,Email,Mobile,Lead Source,"
    "Lead Status,Lead Owner,Create Date,Email Opt Out"
)
SALESFORCE_CONTACT_REPORT = (
    "Contact ID,First Name,Last Name,Account Name,Email,Phone,Mailing Street,"
    "Mailing City,Mailing State/Province,Mailing Country,Contact Owner,Lead Source"
)


@pytest.mark.parametrize(
    ("header", "layout"),
    [
        (SALESFORCE_LEAD_REPORT, "salesforce-report"),
        (SALESFORCE_CONTACT_REPORT, "salesforce-report"),
        (
            "Record Id,Lead Owner,First Name,Email,Lead Source,Lead Status,"
            "Created Time,Modified Time",
            "zoho",
        ),
        ("Record ID,First Name,Email,Contact owner,Lead Status,Create Date", "hubspot"),
        ("Contact Id,First Name,Email,Created,Last Activity,Tags", "gohighlevel"),
    ],
)
def test_layout_with_the_most_distinctive_headers_wins(header, layout):
    assert detect_layout(header.split(",")).name == layout


def test_salesforce_contact_report(workspace, db, clock, tmp_path):
    summary = import_text(
        workspace,
        db,
        clock,
        tmp_path,
        SALESFORCE_CONTACT_REPORT + "\n"
        "0035g00000AbCdE,Lena,Berg,Berg Dental,lena@example.com,(312) 555-0171,"
        "1 Main St,Chicago,IL,United States,Sam Reed,Referral\n",
    )

    assert summary.format == "salesforce-report"
    contact = db.execute("SELECT company, region, source FROM contacts").fetchone()
    assert tuple(contact) == ("Berg Dental", "IL", "Referral")
    assert custom_of(db, "lena@example.com")["Contact ID"] == "0035g00000AbCdE"


def test_consent_columns_alone_never_make_a_list_a_cxm_export():
    from cxm_cli.importing.formats import detect_layout

    plain = ["Name", "Emails", "Phones", "SMS Consent", "Email Consent"]
    assert detect_layout(plain).name != "cxm"
    assert detect_layout(["cxm_id", *plain]).name == "cxm"
