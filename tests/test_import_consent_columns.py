"""Consent and opt-out columns under the names real lists give them, and cells
holding two phones or two emails (trial 2, findings 3 and 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.importing.formats import get_layout, parse_map_options, role_for
from cxm_cli.importing.values import consent_flag


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_import(workspace, db, clock, path, **options):
    options.setdefault("rejects_path", Path(path).with_suffix(".rejects.csv"))
    return import_file(
        workspace, db, path, clock=clock, options=ImportOptions(**options)
    )


def consents(db) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for row in db.query(
        "SELECT e.email, c.channel, c.status FROM consents c"
        " JOIN contact_emails e ON e.contact_id = c.contact_id"
    ):
        found.setdefault(row["email"], {})[row["channel"]] = row["status"]
    return found


def phones(db, email: str) -> list[tuple[str, int]]:
    return [
        (row["phone"], row["is_primary"])
        for row in db.query(
            "SELECT p.phone, p.is_primary FROM contact_phones p"
            " JOIN contact_emails e ON e.contact_id = p.contact_id"
            " WHERE e.email = ? ORDER BY p.id",
            [email],
        )
    ]


# ---------------------------------------------------------------- header rule


@pytest.mark.parametrize(
    ("header", "role"),
    [
        ("SMS Unsubscribed", ("sms_opt_out", None)),
        ("Unsubscribed from SMS", ("sms_opt_out", None)),
        ("Opt out of SMS", ("sms_opt_out", None)),
        ("No Texts", ("sms_opt_out", None)),
        ("No SMS", ("sms_opt_out", None)),
        ("smsOptOut", ("sms_opt_out", None)),
        ("Mobile opt-out", ("sms_opt_out", None)),
        ("Don't text", ("sms_opt_out", None)),
        ("Do Not Call", ("sms_opt_out", None)),
        ("DNC", ("opt_out", None)),
        ("Marketing Opt Out", ("opt_out", None)),
        ("Do not contact (Y/N)", ("opt_out", None)),
        ("Do Not Disturb", ("opt_out", None)),
        ("Email Unsubscribed", ("email_opt_out", None)),
        ("Newsletter opt-out", ("email_opt_out", None)),
        ("Unsubscribed", ("email_opt_out", None)),
        ("Unsubscribe", ("email_opt_out", None)),
        ("SMS Consent", ("sms_opt_in", "strict")),
        ("Accepts SMS", ("sms_opt_in", "strict")),
        ("Text opt in", ("sms_opt_in", "strict")),
        ("OK to text", ("sms_opt_in", "strict")),
        ("Email consent", ("email_opt_in", "strict")),
        ("Accepts Marketing", ("opt_in", "strict")),
        ("Consent", ("opt_in", "strict")),
    ],
)
def test_consent_headers_are_read_by_their_words(header, role):
    assert role_for(get_layout("generic"), header, {}) == role
    assert role_for(get_layout("jsonl"), header, {}) == role


@pytest.mark.parametrize(
    "header",
    [
        "Photo Consent",
        "Subscription Plan",
        "Contact Preference",
        "Never contacted",
        "Recall Due",
        "Unsubscribe Link",
        "Opt-in IP",
        "Opt Out Reason",
        "No Show",
        "Mailing Address",
        "Emergency Contact",
        "Notes about texts",
    ],
)
def test_headers_that_only_mention_consent_stay_custom(header):
    assert role_for(get_layout("generic"), header, {}) in (
        ("custom", None),
        ("notes", None),
    )


def test_vendor_layouts_keep_their_own_reading_of_unknown_columns():
    # A vendor's columns are known; the header rule is for plain lists only.
    assert role_for(get_layout("mailchimp"), "UNSUB_REASON", {}) == ("custom", None)
    assert role_for(get_layout("shopify"), "Accepts SMS Marketing", {}) == (
        "sms_opt_in",
        None,
    )
    assert role_for(get_layout("hubspot"), "SMS Consent", {}) == ("custom", None)


def test_map_to_an_opt_in_field_reads_no_as_an_opt_out():
    overrides = parse_map_options(["Texts OK=sms_opt_in", "Both=opt_in"])
    assert role_for(get_layout("generic"), "Texts OK", overrides) == (
        "sms_opt_in",
        "strict",
    )
    assert role_for(get_layout("generic"), "Both", overrides) == ("opt_in", "strict")


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("Yes", True),
        ("TRUE", True),
        ("subscribed", True),
        ("opted-in", True),
        ("no", False),
        ("False", False),
        ("0", False),
        ("N", False),
        ("declined", False),
        ("Not subscribed", False),
        ("unsubscribed", False),
        ("pending", None),
        ("ask later", None),
    ],
)
def test_consent_words(value, flag):
    assert consent_flag(value) is flag


# ---------------------------------------------------------------- importing


def test_common_opt_out_headers_import_as_opt_outs(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "optouts.csv",
        "Name,Email,Phone,SMS Unsubscribed,Unsubscribed from SMS,Opt out of SMS,"
        "No Texts,DNC,Unsubscribe,Marketing Opt Out,Do not contact (Y/N)\n"
        "A,a@example.com,312-555-0601,yes,,,,,,,\n"
        "B,b@example.com,312-555-0602,,TRUE,,,,,,\n"
        "C,c@example.com,312-555-0603,,,x,,,,,\n"
        "D,d@example.com,312-555-0604,,,,Y,,,,\n"
        "E,e@example.com,312-555-0605,,,,,DNC,,,\n"
        "F,f@example.com,312-555-0606,,,,,,Unsubscribed,,\n"
        "G,g@example.com,312-555-0607,,,,,,,1,\n"
        "H,h@example.com,312-555-0608,,,,,,,,Y\n"
        "I,i@example.com,312-555-0609,no,no,no,no,no,no,no,N\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert summary.created == 9 and summary.warnings == 0
    both = {"email": "opted_out", "sms": "opted_out"}
    assert consents(db) == {
        "a@example.com": {"sms": "opted_out"},
        "b@example.com": {"sms": "opted_out"},
        "c@example.com": {"sms": "opted_out"},
        "d@example.com": {"sms": "opted_out"},
        "e@example.com": both,
        "f@example.com": {"email": "opted_out"},
        "g@example.com": both,
        "h@example.com": both,
    }
    customs = [row["custom"] for row in db.query("SELECT custom FROM contacts")]
    assert all(custom in (None, "", "{}") for custom in customs)


def test_a_consent_column_saying_no_opts_the_person_out(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "consent.csv",
        "Name,Email,Phone,SMS Consent,Email marketing consent\n"
        "A,a@example.com,312-555-0611,no,yes\n"
        "B,b@example.com,312-555-0612,Yes,declined\n"
        "C,c@example.com,312-555-0613,Not subscribed,\n"
        "D,d@example.com,312-555-0614,maybe,\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert consents(db) == {
        "a@example.com": {"sms": "opted_out", "email": "opted_in"},
        "b@example.com": {"sms": "opted_in", "email": "opted_out"},
        "c@example.com": {"sms": "opted_out"},
    }
    (warning,) = summary.warning_samples
    assert (warning["row"], warning["column"]) == (4, "SMS Consent")
    assert "'maybe'" in warning["warning"]


def test_accepts_marketing_no_opts_out_of_both_in_a_plain_list(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "m.csv",
        "Email,Phone,Accepts Marketing\n"
        "a@example.com,312-555-0621,no\n"
        "b@example.com,312-555-0622,yes\n",
    )

    run_import(workspace, db, clock, path)

    assert consents(db) == {
        "a@example.com": {"email": "opted_out", "sms": "opted_out"},
        "b@example.com": {"email": "opted_in", "sms": "opted_in"},
    }


def test_shopify_accepts_marketing_no_is_read_as_before(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "shopify.csv",
        "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,"
        "Accepts SMS Marketing,Total Spent,Total Orders,Tax Exempt\n"
        "1,Ann,Lee,a@example.com,no,no,0.00,0,no\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert summary.format == "shopify"
    assert consents(db) == {}


def test_an_unmapped_consent_looking_column_gets_one_warning(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "hint.csv",
        "Email,Opt Out Reason,Photo Consent\n"
        "a@example.com,too many emails,yes\n"
        "b@example.com,moved away,yes\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert consents(db) == {}
    hints = [w for w in summary.warning_samples if "looks like consent" in w["warning"]]
    assert [w["column"] for w in hints] == ["Opt Out Reason", "Photo Consent"]
    assert summary.warnings == 2
    assert '--map "Opt Out Reason=sms_opt_out"' in hints[0]["warning"]
    custom = json.loads(db.execute("SELECT custom FROM contacts").fetchone()[0])
    assert custom["Opt Out Reason"] == "too many emails"


def test_the_hint_points_at_a_map_that_works(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "hint.csv",
        "Email,Opt Out Reason\na@example.com,too many texts\nb@example.com,\n",
    )

    summary = run_import(
        workspace,
        db,
        clock,
        path,
        mapping=["Opt Out Reason=sms_opt_out"],
    )

    assert consents(db) == {"a@example.com": {"sms": "opted_out"}}
    assert all(
        "looks like consent" not in w["warning"] for w in summary.warning_samples
    )


def test_json_lines_consent_keys_are_read_too(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "people.jsonl",
        '{"email": "a@example.com", "phone": "312-555-0631", "No SMS": "yes"}\n'
        '{"email": "b@example.com", "phone": "312-555-0632", "sms_consent": "no"}\n',
    )

    run_import(workspace, db, clock, path)

    assert consents(db) == {
        "a@example.com": {"sms": "opted_out"},
        "b@example.com": {"sms": "opted_out"},
    }


# ---------------------------------------------------------------- two in a cell


@pytest.mark.parametrize(
    "cell",
    [
        '"312-555-0701, 312-555-0702"',
        '"312-555-0701; 312-555-0702"',
        "312-555-0701 / 312-555-0702",
        "312-555-0701/312-555-0702",
        "312-555-0701 or 312-555-0702",
        "312-555-0701 & 312-555-0702",
        '"312-555-0701\n312-555-0702"',
    ],
)
def test_two_phones_in_one_cell_are_both_kept(workspace, db, clock, tmp_path, cell):
    path = write(tmp_path / "two.csv", f"Email,Phone\na@example.com,{cell}\n")

    summary = run_import(workspace, db, clock, path)

    assert summary.warnings == 0
    assert phones(db, "a@example.com") == [("+13125550701", 1), ("+13125550702", 0)]


def test_a_slash_inside_one_number_does_not_split_it(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "de.csv", "Email,Phone,Country\na@example.com,030/1234567,DE\n"
    )

    run_import(workspace, db, clock, path)

    assert phones(db, "a@example.com") == [("+49301234567", 1)]


def test_a_cell_with_one_phone_and_junk_keeps_the_phone(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "junk.csv", 'Email,Phone\na@example.com,"312-555-0701, ext"\n'
    )

    summary = run_import(workspace, db, clock, path)

    assert phones(db, "a@example.com") == [("+13125550701", 1)]
    (warning,) = summary.warning_samples
    assert warning["warning"].startswith("phone dropped: ")


@pytest.mark.parametrize(
    "cell", ["a@x.com / b@y.com", "a@x.com/b@y.com", "a@x.com or b@y.com"]
)
def test_two_emails_split_by_a_slash_or_or(workspace, db, clock, tmp_path, cell):
    path = write(tmp_path / "emails.csv", f"Name,Email\nAnn,{cell}\n")

    summary = run_import(workspace, db, clock, path)

    assert summary.warnings == 0
    emails = [row[0] for row in db.execute("SELECT email FROM contact_emails")]
    assert emails == ["a@x.com", "b@y.com"]


def test_no_warning_spans_two_lines(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "nl.csv",
        'Email,Phone\n"ann at\nexample.com",312-555-0701\n'
        'b@example.com,"1234\n5678 9"\n',
    )

    summary = run_import(workspace, db, clock, path)

    assert summary.warnings >= 2
    for warning in summary.warning_samples:
        assert "\n" not in warning["warning"] and "\r" not in warning["warning"]
    assert any("\\n" in warning["warning"] for warning in summary.warning_samples)


def test_a_plain_list_read_as_a_cxm_export_still_honours_consent_no(
    workspace, db, clock, tmp_path
):
    # "SMS Consent" and "Email Consent" are also cxm's own export headers, so
    # a plain list with both may be read in the cxm layout.
    path = write(
        tmp_path / "c.csv",
        "Email,Phone,SMS Consent,Email Consent\n"
        "a@example.com,312-555-0641,no,yes\n"
        "b@example.com,312-555-0642,opted_in,opted_out\n",
    )

    run_import(workspace, db, clock, path)

    assert consents(db) == {
        "a@example.com": {"sms": "opted_out", "email": "opted_in"},
        "b@example.com": {"sms": "opted_in", "email": "opted_out"},
    }
