"""`cxm leads import`: the end-to-end behaviour a user and the demo rely on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cxm_cli.errors import InputError
from cxm_cli.importing import ImportOptions, import_file
from tests.conftest import REPO_DIR

SAMPLE = REPO_DIR / "data" / "sample-leads.csv"

GOOGLE_HEADER = (
    "First Name,Middle Name,Last Name,Organization Name,Birthday,Notes,Labels,"
    "E-mail 1 - Label,E-mail 1 - Value,Phone 1 - Label,Phone 1 - Value"
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def contacts(db) -> list[dict]:
    return list(db.query("SELECT * FROM contacts ORDER BY id"))


def emails_of(db, contact_id: int) -> list[str]:
    return [
        r["email"]
        for r in db.query(
            "SELECT email FROM contact_emails WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
    ]


def phones_of(db, contact_id: int) -> list[tuple]:
    return [
        (r["phone"], r["extension"], r["kind"], r["is_primary"])
        for r in db.query(
            "SELECT * FROM contact_phones WHERE contact_id = ? ORDER BY id",
            [contact_id],
        )
    ]


def events_of(db, contact_id: int, type_: str) -> list[dict]:
    return list(
        db.query(
            "SELECT * FROM events WHERE contact_id = ? AND type = ? ORDER BY id",
            [contact_id, type_],
        )
    )


def run_import(workspace, db, clock, path, **options):
    options.setdefault("rejects_path", Path(path).with_suffix(".rejects.csv"))
    return import_file(
        workspace, db, path, clock=clock, options=ImportOptions(**options)
    )


def test_sample_leads_import_as_documented(workspace, db, clock, tmp_path):
    rejects = tmp_path / "rejects.csv"
    summary = run_import(workspace, db, clock, SAMPLE, rejects_path=rejects)

    assert summary.format == "google"
    assert (summary.records, summary.skipped) == (28, 2)
    assert (summary.created, summary.rejected) == (22, 2)
    assert summary.updated + summary.unchanged == 2
    people = {c["display_name"]: c for c in contacts(db)}
    assert len(people) == 22

    # The upper-case, spaced duplicate merged into Maria and did not rename her.
    maria = people["Maria Lopez"]
    assert emails_of(db, maria["id"]) == ["maria.lopez@example.com"]
    assert "MARIA LOPEZ" not in people
    # Accents kept; a company-only row is named after the company.
    assert "José Álvarez" in people and "Zoë Ferrand" in people
    assert people["Lakeside Dental Lab"]["phone"] == "+13125550111"
    # Household: one phone, two emails -> two contacts, flagged.
    daniel, sofia = people["Daniel Kim"], people["Sofia Kim"]
    assert daniel["phone"] == sofia["phone"] == "+12025550105"
    flagged = list(
        db.query("SELECT contact_a, contact_b, reason FROM likely_duplicates")
    )
    assert flagged == [
        {
            "contact_a": daniel["id"],
            "contact_b": sofia["id"],
            "reason": "shared phone, different emails",
        }
    ]
    # Multi-line note kept whole.
    notes = json.loads(daniel["custom"])["notes"]
    assert notes.count("\n") == 2 and "Delta Dental" in notes
    # Damaged and 7-digit phones dropped, the email keeps the contact.
    assert people["Benjamin Adler"]["phone"] is None
    assert people["Liam Walsh"]["phone"] is None
    warnings = " ".join(w["warning"] for w in summary.warning_samples)
    assert "scientific notation" in warnings and "gmail.com" in warnings

    with rejects.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["row"], r["column"]) for r in rows] == [
        ("8", "E-mail 1 - Value"),
        ("13", ""),
    ]
    assert "not an email address" in rows[0]["reason"]
    assert rows[1]["reason"] == "no email or phone"
    assert rows[1]["First Name"] == "Noah"


def test_every_new_contact_gets_one_lead_created_event(workspace, db, clock, tmp_path):
    summary = run_import(workspace, db, clock, SAMPLE, rejects_path=tmp_path / "r.csv")
    created = list(db.query("SELECT * FROM events WHERE type = 'lead.created'"))
    assert len(created) == summary.created == len(contacts(db))
    data = json.loads(created[0]["data"])
    assert data["batch_id"] == summary.batch_id
    assert data["source"] == "google"
    assert "created_time" in data


def test_importing_the_same_file_twice_changes_nothing(workspace, db, clock, tmp_path):
    first = run_import(workspace, db, clock, SAMPLE, rejects_path=tmp_path / "r.csv")
    before = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    second = run_import(workspace, db, clock, SAMPLE, rejects_path=tmp_path / "r.csv")

    assert second.created == second.updated == 0
    assert second.unchanged == first.records - first.skipped - first.rejected
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == before


def test_in_file_merge_keeps_every_identifier_first_seen_primary(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "leads.csv",
        "Name,Email,Phone\n"
        "Lucas Petit,,(919) 555-0107\n"
        "Lucas Petit,lucas.petit@example.net,919-555-0107\n"
        "Lucas Petit,lucas@example.org,(919) 555-0122\n"
        "LUCAS PETIT,Lucas.Petit@Example.NET ,\n",
    )
    summary = run_import(workspace, db, clock, path)

    assert (summary.created, summary.updated, summary.unchanged) == (2, 1, 1)
    # Row 3 shares no identifier with the others: a second contact.
    people = contacts(db)
    assert len(people) == 2
    lucas = people[0]
    assert lucas["display_name"] == "Lucas Petit"
    assert lucas["email"] == "lucas.petit@example.net"
    assert emails_of(db, lucas["id"]) == ["lucas.petit@example.net"]
    assert phones_of(db, lucas["id"]) == [("+19195550107", None, None, 1)]
    merged = events_of(db, lucas["id"], "contact.merged")
    assert [json.loads(e["data"])["row"] for e in merged] == [2, 4]
    assert json.loads(merged[0]["data"])["file"] == "leads.csv"


def test_same_phone_merges_when_one_side_has_no_email(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "leads.csv",
        "Name,Email,Phone\n"
        "Carlos Peña,carlos.pena@example.com,+1 702 555 0164\n"
        "Carlos Pena,,702-555-0164\n",
    )
    run_import(workspace, db, clock, path)
    people = contacts(db)
    assert [p["display_name"] for p in people] == ["Carlos Peña"]


def test_a_better_written_name_improves_a_shouting_one(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "leads.csv",
        "Name,Phone\nLI WEI,+1 312 555 0174\n"
        "Li Wei,(312) 555-0174\nLI WEI,3125550174\n",
    )
    run_import(workspace, db, clock, path)
    assert [p["display_name"] for p in contacts(db)] == ["Li Wei"]


def test_merge_into_existing_contact_records_event_naming_file(
    workspace, db, clock, tmp_path
):
    run_import(
        workspace,
        db,
        clock,
        write(tmp_path / "a.csv", "Email,First Name\nana@example.com,Ana\n"),
    )
    summary = run_import(
        workspace,
        db,
        clock,
        write(
            tmp_path / "b.csv",
            "Email,Last Name,Phone\nANA@example.com,Lima,3125550116\n",
        ),
    )
    assert (summary.created, summary.updated) == (0, 1)
    ana = contacts(db)[0]
    assert (ana["first_name"], ana["last_name"], ana["phone"]) == (
        "Ana",
        "Lima",
        "+13125550116",
    )
    event = events_of(db, ana["id"], "contact.merged")[-1]
    data = json.loads(event["data"])
    assert data["file"] == "b.csv" and data["phones"] == ["+13125550116"]
    assert "last_name" in data["fields"]


def test_on_conflict_modes(workspace, db, clock, tmp_path):
    first = write(tmp_path / "a.csv", "Email,Company\nana@example.com,Lima Bakery\n")
    second = write(tmp_path / "b.csv", "Email,Company\nana@example.com,Lima Cafe\n")
    run_import(workspace, db, clock, first)

    assert run_import(workspace, db, clock, second).unchanged == 1
    assert contacts(db)[0]["company"] == "Lima Bakery"
    assert run_import(workspace, db, clock, second, on_conflict="skip").unchanged == 1
    assert (
        run_import(workspace, db, clock, second, on_conflict="overwrite").updated == 1
    )
    assert contacts(db)[0]["company"] == "Lima Cafe"


def test_source_and_tags_apply_to_every_row(workspace, db, clock, tmp_path):
    path = write(tmp_path / "l.csv", "Email\na@example.com\nb@example.com\n")
    run_import(workspace, db, clock, path, source="fair-2026", tags=["spring", "fair"])
    for person in contacts(db):
        assert person["source"] == "fair-2026"
        tags = {
            r["tag"]
            for r in db.query(
                "SELECT tag FROM contact_tags WHERE contact_id = ?", [person["id"]]
            )
        }
        assert tags == {"spring", "fair"}
        created = json.loads(events_of(db, person["id"], "lead.created")[0]["data"])
        assert created["source"] == "fair-2026"


def test_unmapped_columns_are_kept_and_map_overrides(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Email,Handy,Favourite Treatment\nana@example.com,+49 30 901820,Whitening\n",
    )
    run_import(workspace, db, clock, path, mapping=["Handy=phone"])
    ana = contacts(db)[0]
    assert ana["phone"] == "+4930901820"
    assert json.loads(ana["custom"]) == {"Favourite Treatment": "Whitening"}


def test_bom_crlf_and_quoted_newlines(workspace, db, clock, tmp_path):
    text = (
        "First Name,Email,Notes\r\n"
        'Zoë,zoe@example.com,"Gate code 4412\r\nDog is friendly"\r\n'
        "\r\n"
        ",,\r\n"
    )
    path = write(tmp_path / "l.csv", "\ufeff" + text)
    summary = run_import(workspace, db, clock, path)
    assert (summary.records, summary.created, summary.skipped) == (3, 1, 2)
    zoe = contacts(db)[0]
    assert zoe["first_name"] == "Zoë"
    assert json.loads(zoe["custom"])["notes"] == "Gate code 4412\r\nDog is friendly"


def test_malformed_line_is_rejected_not_misread(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Phone\nAmara Nwosu,amara@example.net,Nwosu & Partners, LLC\n"
        "Ok Person,ok@example.net,\n",
    )
    summary = run_import(workspace, db, clock, path)
    assert (summary.created, summary.rejected) == (1, 1)
    rows = list(csv.DictReader(path.with_suffix(".rejects.csv").open()))
    assert rows[0]["row"] == "1" and "malformed line" in rows[0]["reason"]


def test_dry_run_changes_nothing(workspace, db, clock, tmp_path):
    summary = run_import(
        workspace, db, clock, SAMPLE, rejects_path=tmp_path / "r.csv", dry_run=True
    )
    assert summary.created == 22 and summary.dry_run
    assert contacts(db) == []
    assert db.execute("SELECT COUNT(*) FROM import_batches").fetchone()[0] == 0
    assert not (tmp_path / "r.csv").exists()


def test_rejects_file_goes_beside_the_input_by_default(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "leads.csv", "Name,Email\nNo Contact,\nAna,ana@example.com\n"
    )
    summary = import_file(workspace, db, path, clock=clock, options=ImportOptions())
    assert summary.rejects_path == str(tmp_path / "leads.rejects.csv")
    assert (tmp_path / "leads.rejects.csv").exists()


# ---------------------------------------------------------------- the CLI


def test_cli_import_from_stdin_prints_summary_and_reimport_is_unchanged(cli, workspace):
    data = SAMPLE.read_bytes()
    first = cli("leads", "import", "-", "--json", input=data)
    assert first.exit_code == 0, first.stderr
    summary = first.json()
    assert summary["created"] == 22 and summary["rejected"] == 2
    assert summary["rejects_path"].startswith(str(workspace.data_dir))
    assert "2 rows rejected" in first.stderr

    second = cli("leads", "import", "-", input=data)
    assert second.exit_code == 0
    lines = dict(line.split("\t") for line in second.stdout.splitlines()[2:])
    assert lines["created"] == "0" and lines["updated"] == "0"
    assert lines["unchanged"] == "24"


def test_cli_missing_file_is_one_clear_error(cli):
    result = cli("leads", "import", "nope.csv")
    assert result.exit_code == 1
    assert "nope.csv: no such file" in result.stderr


def test_cli_unknown_format_and_bad_map(cli, tmp_path):
    path = write(tmp_path / "l.csv", "Email\na@example.com\n")
    result = cli("leads", "import", str(path), "--format", "nonsense")
    assert result.exit_code == 1 and "unknown format" in result.stderr
    result = cli("leads", "import", str(path), "--map", "Email=wrong")
    assert result.exit_code == 1 and "unknown field" in result.stderr


def test_cli_formats_lists_layouts(cli):
    result = cli("leads", "formats", "--json")
    names = {row["name"] for row in result.json()}
    assert {"google", "meta-lead-ads", "outlook", "mailchimp", "vcard"} <= names


def test_cli_dry_run_says_so_and_writes_no_rejects(cli, tmp_path):
    rejects = tmp_path / "rejects.csv"
    result = cli("leads", "import", str(SAMPLE), "--dry-run", "--rejects", str(rejects))
    assert result.exit_code == 0
    assert "nothing was changed" in result.stderr
    assert "2 rows would be rejected" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "ws"]


def test_worker_process_gives_the_same_result(workspace, db, clock, tmp_path):
    """Large files are mapped in a second process; the outcome is identical."""
    in_process = run_import(
        workspace, db, clock, SAMPLE, rejects_path=tmp_path / "a.csv"
    )
    first = [dict(r) for r in db.query("SELECT * FROM contacts ORDER BY id")]
    db.execute("DELETE FROM contacts")

    in_worker = run_import(
        workspace, db, clock, SAMPLE, rejects_path=tmp_path / "b.csv", worker=True
    )
    second = [dict(r) for r in db.query("SELECT * FROM contacts ORDER BY id")]

    assert in_worker.counts() == in_process.counts()
    assert in_worker.warning_samples == in_process.warning_samples
    strip = ("id", "created_at", "updated_at")
    assert [{k: v for k, v in c.items() if k not in strip} for c in second] == [
        {k: v for k, v in c.items() if k not in strip} for c in first
    ]
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()


def test_suppressed_people_are_never_imported_again(workspace, db, clock, tmp_path):
    from cxm_cli.contacts import identifier_hash

    db["suppressions"].insert(
        {
            "identifier_hash": identifier_hash("maria.lopez@example.com"),
            "reason": "erased",
            "created_at": "2026-03-01T00:00:00.000000Z",
        }
    )
    summary = run_import(workspace, db, clock, SAMPLE, rejects_path=tmp_path / "r.csv")
    assert summary.rejected == 4  # two rows of Maria, plus the two without an id
    assert not list(db.query("SELECT * FROM contacts WHERE display_name LIKE 'Maria%'"))
    rows = list(csv.DictReader((tmp_path / "r.csv").open(encoding="utf-8")))
    assert [r["reason"] for r in rows if r["First Name"].upper() == "MARIA"] == [
        "suppressed",
        "suppressed",
    ]


def test_stdin_rejects_are_named_after_the_batch(cli, workspace):
    result = cli("leads", "import", "-", input=b"Name,Email\nNo Contact,\n")
    assert result.exit_code == 0
    assert (workspace.data_dir / "rejects-stdin-batch-1.csv").exists()


def test_empty_input_is_a_clear_error(cli):
    result = cli("leads", "import", "-", input=b"")
    assert result.exit_code == 1 and "empty file or no header row" in result.stderr


def test_repeated_and_blank_headers_keep_every_value(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Email,Note,Note,\nana@example.com,first,second,third\n",
    )
    run_import(workspace, db, clock, path)
    custom = json.loads(contacts(db)[0]["custom"])
    assert custom == {"notes": "first\nsecond", "column 4": "third"}


# ---------------------------------------------------------------- broken quotes


def outcomes(summary) -> int:
    return sum(v for k, v in summary.counts().items() if k != "records")


def test_unclosed_quote_rejects_its_record_and_reads_the_rest(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Phone\n"
        '"Bob, Jr",bob@example.com,"212-555-0112\n'
        "Carl,carl@example.com,212-555-0113\n",
    )
    summary = run_import(workspace, db, clock, path)

    assert summary.counts() == {
        "records": 2,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "skipped": 0,
    }
    assert [c["first_name"] for c in contacts(db)] == ["Carl"]
    assert contacts(db)[0]["phone"] == "+12125550113"
    rows = list(csv.DictReader(path.with_suffix(".rejects.csv").open()))
    assert [(r["row"], r["column"], r["reason"]) for r in rows] == [
        ("1", "Phone", "unclosed quote")
    ]
    assert rows[0]["Name"] == "Bob, Jr" and rows[0]["Phone"] == "212-555-0112"
    assert all("\n" not in w["warning"] for w in summary.warning_samples)


def test_quote_closed_by_a_later_row_loses_no_row(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Phone\n"
        'Ann,ann@example.com,"212-555-0111\n'
        "Bea,bea@example.com,212-555-0112\n"
        'Cy,"cy@example.com",212-555-0113\n'
        'Dee,dee@example.com,"Call after 5\nor on weekends"\n',
    )
    summary = run_import(workspace, db, clock, path)

    assert (summary.records, summary.created, summary.rejected) == (4, 3, 1)
    assert outcomes(summary) == summary.records
    assert [c["first_name"] for c in contacts(db)] == ["Bea", "Cy", "Dee"]


def test_quote_swallowing_whole_records_is_caught(workspace, db, clock, tmp_path):
    # The stray quote "closes" at the very end of a later line, so the CSV
    # parser sees one well-formed record holding two people.
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Phone\n"
        'Ann,ann@example.com,"212-555-0111\n'
        "Bea,bea@example.com,212-555-0112\n"
        'Cy,cy@example.com,212-555-0113"\n',
    )
    summary = run_import(workspace, db, clock, path)

    assert (summary.records, summary.created, summary.rejected) == (3, 2, 1)
    assert [c["first_name"] for c in contacts(db)] == ["Bea", "Cy"]


def test_unclosed_quote_in_a_worker_gives_the_same_result(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "l.csv",
        'Name,Email\n"Bob,bob@example.com\nCarl,carl@example.com\n',
    )
    summary = run_import(workspace, db, clock, path, worker=True)
    assert (summary.records, summary.created, summary.rejected) == (2, 1, 1)


# ---------------------------------------------------------------- refusals


def test_cli_folder_is_named_as_a_folder(cli, tmp_path):
    result = cli("leads", "import", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path}: is a folder, not a file" in result.stderr
    assert "no such file" not in result.stderr


def test_cli_unknown_region_is_refused(cli, workspace, tmp_path):
    path = write(tmp_path / "l.csv", "Name,Phone\nAna,212-555-0100\n")
    result = cli("leads", "import", str(path), "--region", "ZZ")
    assert result.exit_code == 1
    assert "--region 'ZZ' is not a phone region" in result.stderr
    assert "such as US" in result.stderr
    with workspace.open_db() as check:
        assert check.execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0

    result = cli("leads", "import", str(path), "--region", "gb")
    assert result.exit_code == 0, result.stderr


def test_unknown_workspace_region_is_refused(workspace, db, clock, tmp_path):
    from cxm_cli.errors import ConfigError

    workspace.config.setdefault("business", {})["phone_region"] = "ZZ"
    path = write(tmp_path / "l.csv", "Name,Phone\nAna,212-555-0100\n")
    with pytest.raises(ConfigError, match="phone_region 'ZZ'"):
        run_import(workspace, db, clock, path)
    assert contacts(db) == []
    assert run_import(workspace, db, clock, path, region="US").created == 1


def test_cli_piped_summary_is_pure_data(cli, tmp_path):
    path = write(tmp_path / "l.csv", "Name,Email\nAna,ana@example.com\nNo One,\n")
    result = cli("leads", "import", str(path))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "outcome\trows",
        "records\t2",
        "created\t1",
        "updated\t0",
        "unchanged\t0",
        "rejected\t1",
        "skipped\t0",
    ]
    assert "batch 1: " in result.stderr
    assert "undo with: cxm leads undo 1" in result.stderr


def test_names_split_for_the_greeting(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        "Name,Email\n"
        '"Bob, Jr",bob@example.com\n'
        '"Smith, John, Jr.",john@example.com\n'
        "Mary Ann Van Der Berg,mary@example.com\n",
    )
    run_import(workspace, db, clock, path)
    assert [(c["first_name"], c["last_name"]) for c in contacts(db)] == [
        ("Bob", "Jr"),
        ("John", "Smith Jr."),
        ("Mary Ann", "Van Der Berg"),
    ]


def test_name_columns_never_keep_a_trailing_comma(workspace, db, clock, tmp_path):
    path = write(
        tmp_path / "l.csv",
        'First Name,Last Name,Email\n"Bob,","Smith,",b@example.com\n',
    )
    run_import(workspace, db, clock, path)
    assert [(c["first_name"], c["last_name"]) for c in contacts(db)] == [
        ("Bob", "Smith")
    ]


def test_a_note_with_commas_and_a_phone_is_not_a_broken_quote(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Notes\n"
        'Zoe,zoe@example.com,"Gate code 4412\nDog friendly, call ahead, 212-555-0100"\n'
        "Ann,ann@example.com,\n",
    )
    summary = run_import(workspace, db, clock, path)
    assert (summary.records, summary.created, summary.rejected) == (2, 2, 0)
    notes = json.loads(contacts(db)[0]["custom"])["notes"]
    assert notes == "Gate code 4412\nDog friendly, call ahead, 212-555-0100"


def test_unclosed_quote_past_the_field_size_limit_loses_no_row(
    workspace, db, clock, tmp_path
):
    filler = ("," * 1000 + "\n") * 1200  # more than the 1 MB field limit
    path = write(
        tmp_path / "l.csv",
        'Name,Email\n"Bob,bob@example.com\n' + filler + "Carl,carl@example.com\n",
    )
    summary = run_import(workspace, db, clock, path)
    assert (summary.records, summary.rejected, summary.skipped) == (1202, 1, 1200)
    assert [c["first_name"] for c in contacts(db)] == ["Carl"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_wrong_encoding_option_is_one_error_naming_file_and_encoding(
    cli, db, tmp_path, encoding
):
    path = write(tmp_path / "leads.csv", "name,email\nAna,ana@example.com\n")

    result = cli("leads", "import", str(path), "--encoding", encoding)

    assert result.exit_code == 1
    assert f"leads.csv: not valid {encoding} on line 1" in result.stderr
    assert f"--encoding {encoding}" in result.stderr
    assert not isinstance(result.exception, UnicodeError)
    assert contacts(db) == []


def test_an_undecodable_byte_is_placed_on_its_line_counted_from_one(tmp_path):
    from cxm_cli.errors import InputError
    from cxm_cli.importing.reader import CsvRecords

    path = tmp_path / "leads.csv"
    path.write_bytes(b"name,email\nAna,ana@example.com\nBo\xe9,bo@example.com\n")

    with pytest.raises(InputError) as caught:
        list(CsvRecords(path, "utf-8", ",", "leads.csv"))

    assert "leads.csv: not valid utf-8 on line 3" in str(caught.value)


def test_a_phone_that_texted_stop_stays_opted_out_for_whoever_gets_it(
    workspace, db, clock, tmp_path
):
    from cxm_cli.contacts import consent_status, opt_out_phone
    from cxm_cli.store import write_transaction

    first = write(
        tmp_path / "first.csv",
        "Name,Email,Phone\nAna Lima,ana@example.com,(512) 555-0101\n"
        "Bo Reyes,bo@example.com,\n",
    )
    run_import(workspace, db, clock, first)
    with write_transaction(db):
        opt_out_phone(db, "+15125550101", clock=clock, source="sms_keyword")

    # A new person on the household phone, and Bo given that phone.
    second = write(
        tmp_path / "second.csv",
        "Name,Email,Phone\nCarla Lima,carla@example.com,512-555-0101\n"
        "Bo Reyes,bo@example.com,512.555.0101\nDee Moss,dee@example.com,512-555-0199\n",
    )
    summary = run_import(workspace, db, clock, second)
    assert (summary.created, summary.updated) == (2, 1)

    ids = {row["email"]: row["id"] for row in contacts(db)}
    assert consent_status(db, ids["carla@example.com"], "sms") == "opted_out"
    assert consent_status(db, ids["bo@example.com"], "sms") == "opted_out"
    assert consent_status(db, ids["dee@example.com"], "sms") != "opted_out"
    (opt_out,) = events_of(db, ids["carla@example.com"], "opted_out")
    assert opt_out["source"] == "shared_phone"
    # Carla's opt-out came before her lead.created, so her follow-up's texts
    # are skipped from the start.
    types = [
        row[0]
        for row in db.execute(
            "SELECT type FROM events WHERE contact_id = ? ORDER BY id",
            [ids["carla@example.com"]],
        )
    ]
    assert types.index("opted_out") < types.index("lead.created")


@pytest.mark.parametrize(
    ("pattern", "says"),
    [("%Q", "is not a date pattern"), ("%d/%m", "must name the day, month and year")],
)
def test_a_broken_date_pattern_is_refused_before_any_row(cli, tmp_path, pattern, says):
    path = write(tmp_path / "d.csv", "Name,Email,Birthday\nA,a@example.com,3.2.2001\n")

    result = cli("leads", "import", str(path), "--date-format", pattern)

    assert result.exit_code != 0
    assert says in result.stderr
    assert "row" not in result.stderr
    assert cli("contacts", "list", "--json").json() == []


# ---------------------------------------------------------------- opt-out columns


def consents_by_email(db) -> dict[str, dict[str, tuple[str, str]]]:
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for row in db.query(
        "SELECT e.email, c.channel, c.status, c.changed_at FROM consents c"
        " JOIN contact_emails e ON e.contact_id = c.contact_id"
    ):
        found.setdefault(row["email"], {})[row["channel"]] = (
            row["status"],
            row["changed_at"],
        )
    return found


def test_opt_out_columns_read_words_and_dates_not_only_yes(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "o.csv",
        "Name,Email,Phone,SMS Opt Out,Email Opt Out\n"
        "O,o@example.com,312-555-0510,Opted Out,Unsubscribed\n"
        "P,p@example.com,312-555-0511,STOP,Opt-out\n"
        "Q,q@example.com,312-555-0512,2024-01-02,Unsubscribe\n"
        "R,r@example.com,312-555-0513,no,subscribed\n"
        "S,s@example.com,312-555-0514,false,opted in\n"
        "T,t@example.com,312-555-0515,0,\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert summary.created == 6 and summary.warnings == 0
    found = consents_by_email(db)
    for email in ("o@example.com", "p@example.com", "q@example.com"):
        assert {ch: status for ch, (status, _) in found[email].items()} == {
            "sms": "opted_out",
            "email": "opted_out",
        }, email
    # The date is when they opted out (midnight in the workspace's zone).
    assert found["q@example.com"]["sms"][1].startswith("2024-01-02T06:00:00")
    for email in ("r@example.com", "s@example.com", "t@example.com"):
        assert email not in found


def test_opt_out_headers_of_both_channels_and_do_not_call(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "h.csv",
        "Name,Email,Phone,Do Not Text,Do Not SMS,Text Opt Out,DoNotCall,"
        "Do Not Email,Opt Out,Opted Out,Do Not Contact\n"
        "A,a@example.com,312-555-0520,yes,,,,,,,\n"
        "B,b@example.com,312-555-0521,,y,,,,,,\n"
        "C,c@example.com,312-555-0522,,,x,,,,,\n"
        "D,d@example.com,312-555-0523,,,,true,,,,\n"
        "E,e@example.com,312-555-0524,,,,,1,,,\n"
        "F,f@example.com,312-555-0525,,,,,,yes,,\n"
        "G,g@example.com,312-555-0526,,,,,,,Opted Out,\n"
        "H,h@example.com,312-555-0527,,,,,,,,2023-11-30\n"
        "I,i@example.com,312-555-0528,no,no,no,no,no,no,no,no\n",
    )

    run_import(workspace, db, clock, path)

    found = {
        email: sorted(ch for ch, (status, _) in channels.items())
        for email, channels in consents_by_email(db).items()
    }
    assert found == {
        "a@example.com": ["sms"],
        "b@example.com": ["sms"],
        "c@example.com": ["sms"],
        # Do Not Call stops voicemail drops, which follow SMS consent.
        "d@example.com": ["sms"],
        "e@example.com": ["email"],
        "f@example.com": ["email", "sms"],
        "g@example.com": ["email", "sms"],
        "h@example.com": ["email", "sms"],
    }
    assert all(not c["custom"] or c["custom"] == "{}" for c in contacts(db)), (
        "opt-out columns are consent, not custom fields"
    )


def test_an_unknown_opt_out_value_is_an_opt_out_and_a_warning(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "u.csv",
        "Name,Email,SMS Opt Out\nA,a@example.com,no\nB,b@example.com,maybe later\n",
    )

    summary = run_import(workspace, db, clock, path)

    assert consents_by_email(db)["b@example.com"]["sms"][0] == "opted_out"
    assert "a@example.com" not in consents_by_email(db)
    (warning,) = summary.warning_samples
    assert (warning["row"], warning["column"]) == (2, "SMS Opt Out")
    assert "'maybe later'" in warning["warning"]
    assert "opted out" in warning["warning"]
    kept = json.loads(contacts(db)[1]["custom"])
    assert kept == {"SMS Opt Out": "maybe later"}


def test_cli_opted_out_in_the_file_gets_no_follow_up(cli, workspace, tmp_path):
    path = write(
        tmp_path / "x.csv",
        "Name,Email,Phone,SMS Opt Out,Email Opt Out\n"
        "O,o@example.com,312-555-0510,Opted Out,Unsubscribed\n"
        "N,n@example.com,312-555-0511,,\n",
    )
    assert cli("leads", "import", str(path)).exit_code == 0

    run = cli("run", "--once")

    assert run.exit_code == 0, run.stderr
    db = workspace.open_db()
    try:
        addresses = [row[0] for row in db.execute("SELECT address FROM messages")]
    finally:
        db.close()
    assert addresses and "n@example.com" in addresses
    assert not {"o@example.com", "+13125550510"} & set(addresses)


# ------------------------------------------------- rejects, --map, rejects files


def test_rejects_at_a_folder_is_refused_before_anything_is_imported(
    cli, workspace, tmp_path
):
    path = write(tmp_path / "l.csv", "Name,Email\nA,a@example.com\nB,bad\n")
    folder = tmp_path / "adir"
    folder.mkdir()

    result = cli("leads", "import", str(path), "--rejects", str(folder))

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{folder}: it is a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # error and hint
    assert cli("contacts", "list", "--json").json() == []
    assert cli("leads", "batches", "--json").json() == []
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "l.csv", "ws"]


def test_rejects_under_a_file_is_refused_before_anything_is_imported(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "l.csv", "Name,Email\nA,a@example.com\nB,bad\n")

    with pytest.raises(InputError, match="l.csv is not a folder"):
        run_import(workspace, db, clock, path, rejects_path=path / "rejects.csv")

    assert contacts(db) == []
    assert db.execute("SELECT COUNT(*) FROM import_batches").fetchone()[0] == 0


def test_rejects_onto_the_input_itself_is_refused(workspace, db, clock, tmp_path):
    text = "Name,Email\nA,a@example.com\nB,bad\n"
    path = write(tmp_path / "l.csv", text)

    with pytest.raises(InputError, match="it is the file being imported"):
        run_import(workspace, db, clock, path, rejects_path=path)

    assert path.read_text() == text and contacts(db) == []


def test_cli_map_of_a_missing_column_names_it_and_the_columns(cli, tmp_path):
    path = write(tmp_path / "l.csv", "Name,Email,Mobile\nA,a@example.com,\n")

    result = cli("leads", "import", str(path), "--map", "Nope=phone")

    assert result.exit_code == 1
    assert "no column 'Nope'" in result.stderr
    assert "Name, Email, Mobile" in result.stderr
    assert cli("leads", "batches", "--json").json() == []
    # A column named in any spelling the header matching accepts is fine.
    ok = cli("leads", "import", str(path), "--map", "mobile=notes")
    assert ok.exit_code == 0, ok.stderr


def test_a_fixed_rejects_file_imports_only_its_original_columns(
    workspace, db, clock, tmp_path
):
    path = write(
        tmp_path / "l.csv",
        "Name,Email,Plan\nA,a@example.com,gold\nB,b(at)example.com,silver\nC,,bronze\n",
    )
    first = import_file(workspace, db, path, clock=clock, options=ImportOptions())
    rejects = Path(first.rejects_path)
    fixed = rejects.read_text().replace("b(at)example.com", "b@example.com")
    fixed_path = write(tmp_path / "fixed.csv", fixed)

    second = import_file(
        workspace, db, fixed_path, clock=clock, options=ImportOptions()
    )

    assert (second.created, second.rejected) == (1, 1)
    bee = next(c for c in contacts(db) if c["display_name"] == "B")
    assert json.loads(bee["custom"]) == {"Plan": "silver"}
    assert any("rejects file" in note for note in second.notes)
    with open(second.rejects_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["row", "column", "reason", "Name", "Email", "Plan"]
    assert rows[1][0] == "2" and rows[1][3:] == ["C", "", "bronze"]


@pytest.mark.parametrize(("bad_rows", "says"), [(1, "1 row"), (2, "2 rows")])
def test_cli_counts_rejected_rows_in_words(cli, tmp_path, bad_rows, says):
    text = "Name,Email\nA,a@example.com\n" + "B,\n" * bad_rows
    path = write(tmp_path / "l.csv", text)

    result = cli("leads", "import", str(path))

    assert f"{says} rejected, written to" in result.stderr


# ------------------------------------ rejects: only regular files, never clobbered

BAD_ROWS = "Name,Email\nA,a@example.com\nB,bad\n"


def test_cli_rejects_onto_a_fifo_is_refused_before_anything_is_imported(cli, tmp_path):
    import os
    import stat

    path = write(tmp_path / "l.csv", BAD_ROWS)
    fifo = tmp_path / "rejects.fifo"
    os.mkfifo(fifo)

    result = cli("leads", "import", str(path), "--rejects", str(fifo))

    assert result.exit_code == 1
    assert f"{fifo}: it is a named pipe, not a regular file" in result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert cli("contacts", "list", "--json").json() == []
    assert cli("leads", "batches", "--json").json() == []


def test_rejects_onto_a_symlink_is_refused_and_its_target_kept(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "l.csv", BAD_ROWS)
    target = write(tmp_path / "precious.csv", "keep me\n")
    link = tmp_path / "r.csv"
    link.symlink_to(target)

    with pytest.raises(InputError, match="it is a symbolic link"):
        run_import(workspace, db, clock, path, rejects_path=link)

    assert link.is_symlink() and target.read_text() == "keep me\n"
    assert contacts(db) == []
    assert db.execute("SELECT COUNT(*) FROM import_batches").fetchone()[0] == 0


def test_an_explicit_rejects_file_is_replaced(workspace, db, clock, tmp_path):
    path = write(tmp_path / "l.csv", BAD_ROWS)
    rejects = write(tmp_path / "mine.csv", "old\n")

    summary = run_import(workspace, db, clock, path, rejects_path=rejects)

    assert summary.rejects_path == str(rejects)
    assert "bad" in rejects.read_text() and "old" not in rejects.read_text()


def test_rejects_that_became_a_fifo_during_the_import_are_not_written_into_it(
    workspace, db, clock, tmp_path
):
    import os
    import stat

    path = write(tmp_path / "l.csv", BAD_ROWS)
    rejects = tmp_path / "r.csv"

    def make_fifo(*_):
        if not rejects.exists():
            os.mkfifo(rejects)

    with pytest.raises(InputError, match="it is a named pipe") as caught:
        run_import(workspace, db, clock, path, rejects_path=rejects, progress=make_fifo)

    assert stat.S_ISFIFO(os.lstat(rejects).st_mode)
    kept_in = caught.value.message.rsplit("they are in ", 1)[1]
    assert "B,bad" in Path(kept_in).read_text()


def test_the_default_rejects_file_never_replaces_an_earlier_one(cli, tmp_path):
    first = write(tmp_path / "t.csv", "Name,Email\nA,a@example.com\nB,\nC,\n")
    second = write(tmp_path / "t.jsonl", '{"name": "D"}\n')
    assert cli("leads", "import", str(first)).exit_code == 0
    earlier = (tmp_path / "t.rejects.csv").read_text()

    result = cli("leads", "import", str(second), "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["rejects_path"] == str(tmp_path / "t.rejects-batch-2.csv")
    assert (tmp_path / "t.rejects.csv").read_text() == earlier
    assert "no email or phone" in (tmp_path / "t.rejects-batch-2.csv").read_text()
    batches = cli("leads", "batches", "--json").json()
    assert batches[0]["rejects_path"] == str(tmp_path / "t.rejects-batch-2.csv")


def test_the_default_rejects_name_steps_past_anything_there(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "l.csv", BAD_ROWS)
    (tmp_path / "l.rejects.csv").mkdir()
    write(tmp_path / "l.rejects-batch-1.csv", "someone else's\n")

    summary = import_file(workspace, db, path, clock=clock, options=ImportOptions())

    assert summary.rejects_path == str(tmp_path / "l.rejects-batch-1-2.csv")
    assert (tmp_path / "l.rejects-batch-1.csv").read_text() == "someone else's\n"


def test_a_default_rejects_file_appearing_during_the_import_is_kept(
    workspace, db, clock, tmp_path
):
    path = write(tmp_path / "l.csv", BAD_ROWS)
    default = tmp_path / "l.rejects.csv"

    def appear(*_):
        if not default.exists():
            default.write_text("written meanwhile\n")

    with pytest.raises(InputError, match="appeared during the import"):
        import_file(
            workspace, db, path, clock=clock, options=ImportOptions(progress=appear)
        )

    assert default.read_text() == "written meanwhile\n"
    assert len(contacts(db)) == 1  # the import itself was saved


def test_stdin_rejects_never_replace_a_file_of_the_same_batch_name(cli, workspace):
    earlier = workspace.data_dir / "rejects-stdin-batch-1.csv"
    earlier.write_text("from another database\n")

    result = cli("leads", "import", "-", "--json", input=b"Name,Email\nNo Contact,\n")

    assert result.exit_code == 0, result.stderr
    assert result.json()["rejects_path"] == str(
        workspace.data_dir / "rejects-stdin-batch-1-2.csv"
    )
    assert earlier.read_text() == "from another database\n"


def test_cli_dry_run_makes_no_rejects_folders(cli, tmp_path):
    rejects = tmp_path / "dryrun-dir" / "sub" / "r.csv"

    result = cli("leads", "import", str(SAMPLE), "--dry-run", "--rejects", str(rejects))

    assert result.exit_code == 0, result.stderr
    assert "2 rows would be rejected" in result.stderr
    assert not (tmp_path / "dryrun-dir").exists()


# ------------------------------------------------------------ a missing header row


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("Ann,ann@example.com,312-555-0100\nBob,bob@example.com,312-555-0101\n", 2),
        ("Ann Lee,(312) 555-0100\nBob Day,(312) 555-0101\n", 2),
        ("+1 312 555 0100;Ann\n+1 312 555 0101;Bob\n", 1),
    ],
)
def test_cli_a_file_without_a_header_row_is_refused(cli, tmp_path, text, cell):
    path = write(tmp_path / "people.csv", text)

    result = cli("leads", "import", str(path))

    assert result.exit_code == 1
    assert (
        f"{path}: the first row looks like a person, not column names (cell {cell}"
        in result.stderr
    )
    assert "add a header row" in result.stderr
    assert cli("contacts", "list", "--json").json() == []
    assert cli("leads", "batches", "--json").json() == []


def test_cli_headerless_stdin_is_named_and_format_imports_it_anyway(cli, tmp_path):
    text = b"Ann,ann@example.com\nBob,bob@example.com\n"
    refused = cli("leads", "import", "-", input=text)
    assert refused.exit_code == 1
    assert "stdin: the first row looks like a person" in refused.stderr

    forced = cli("leads", "import", "-", "--format", "generic", input=text)
    assert forced.exit_code == 0, forced.stderr


@pytest.mark.parametrize(
    "header",
    [
        "E-mail 1 - Value,Phone 1 - Value",
        "Phone,Name",
        "Email,Phone,Name",
        "Customer,Contact,Notes",
        "ID,2026-03-01,Total",
        "Name,Email,info@example.com",
        "Telefon,Vorname",
    ],
)
def test_real_header_rows_are_not_taken_for_people(
    workspace, db, clock, tmp_path, header
):
    path = write(tmp_path / "h.csv", f"{header}\n")
    summary = run_import(workspace, db, clock, path)
    assert summary.records == 0
