"""Export a person's data; erase them with no trace in the files cxm keeps."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from cxm_cli import privacy
from cxm_cli.channels import OutboundMessage
from cxm_cli.channels.outbox import (
    OutboxChannel,
    contact_files,
    read_texts,
    texts_path,
)
from cxm_cli.contacts import get_contact, is_suppressed
from cxm_cli.events import record_event
from cxm_cli.importing.duplicates import merge_contacts
from cxm_cli.inbound import record_inbound
from cxm_cli.messaging import check_consent, send_message
from cxm_cli.store import loads, write_transaction
from tests.support.fixtures import make_contact

EMAIL = "zebulon.quixote@example.com"
PHONE = "+15125550188"
NAME = "Zebulon Quixote"


def person_with_history(workspace, db, clock) -> tuple[int, int]:
    zeb = make_contact(
        db, clock, first_name="Zebulon", last_name="Quixote", email=EMAIL, phone=PHONE
    )
    other = make_contact(
        db,
        clock,
        first_name="Ana",
        last_name="Lima",
        email="ana@example.com",
        phone="+15125550101",
    )
    send_message(
        workspace,
        db,
        clock,
        zeb,
        "email",
        text="Hi {{ first_name }}",
        subject="Welcome",
    )
    send_message(workspace, db, clock, zeb, "sms", text="Hi from Bright Smile")
    record_inbound(
        workspace,
        db,
        clock,
        channel="sms",
        text="Call me at 512.555.0188",
        address=PHONE,
        provider_id="SMz1",
    )
    with write_transaction(db):
        # Someone else's record that mentions him, as free text would.
        record_event(
            db,
            other,
            "form.submitted",
            clock=clock,
            data={
                "form": "referral",
                "referred": f"{NAME} <{EMAIL.upper()}>, (512) 555-0188",
            },
        )
    return zeb, other


def test_export_data_holds_everything(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)

    exported = cli("contacts", "export-data", EMAIL)

    assert exported.exit_code == 0, exported.stderr
    data = exported.json()
    assert data["contact"]["id"] == zeb
    records = data["records"]
    assert {m["channel"] for m in records["messages"]} == {"email", "sms"}
    assert any(m["body"] == "Call me at 512.555.0188" for m in records["messages"])
    assert [e["email"] for e in records["contact_emails"]] == [EMAIL]
    assert any(e["type"] == "message.received" for e in records["events"])
    [eml] = data["outbox_files"]
    assert EMAIL in eml["content"] and eml["path"].endswith(".eml")
    [text] = data["outbox_texts"]
    assert text["body"] == "Hi from Bright Smile" and text["to"] == PHONE
    assert text["contact_id"] == zeb and text["kind"] == "text"


def test_show_summarises_a_person(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    shown = cli("contacts", "show", str(zeb), "--json")
    assert shown.exit_code == 0, shown.stderr
    summary = shown.json()
    assert summary["name"] == NAME
    assert summary["messages"]["sent"] == 2 and summary["messages"]["received"] == 1
    table = cli("contacts", "show", PHONE)
    assert table.exit_code == 0 and EMAIL in table.stdout


def test_show_counts_only_messages_that_went_out(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    with write_transaction(db):
        for status in ("failed", "sending"):
            db.execute(
                "INSERT INTO messages (contact_id, channel, direction, address, "
                "body, status, at) VALUES (?, 'sms', 'outbound', ?, 'Hi', ?, "
                "'2027-01-01T00:00:00.000000Z')",
                [zeb, PHONE, status],
            )

    summary = cli("contacts", "show", str(zeb), "--json").json()

    assert summary["messages"]["sent"] == 2
    assert summary["messages"]["last_sent_at"] < "2027"


def test_erase_leaves_no_trace_in_database_wal_or_outbox(workspace, db, clock, cli):
    zeb, other = person_with_history(workspace, db, clock)
    send_message(workspace, db, clock, other, "sms", text="Hi Ana")
    assert contact_files(workspace, zeb) and read_texts(workspace, zeb)
    kept = contact_files(workspace, other)
    [other_line] = [
        line
        for line in texts_path(workspace, other).read_bytes().splitlines()
        if b'"contact_id":%d,' % other in line
    ]
    # A write a killed runner left half done holds the message too.
    [first] = contact_files(workspace, zeb)[:1]
    leftover = first.with_name(f".{first.name}.0badf00d.tmp")
    leftover.write_bytes(first.read_bytes())

    erased = cli("contacts", "erase", str(zeb), "--yes", "--json")

    assert erased.exit_code == 0, erased.stderr
    assert erased.json()["wal_emptied"] is True
    assert erased.json()["outbox_lines_removed"] == 1
    needles = [EMAIL, PHONE, "5125550188", "555-0188", NAME, "Zebulon", "Quixote"]
    files = [workspace.db_path, workspace.db_path.with_name("cxm.db-wal")]
    files += [p for p in workspace.outbox_dir.rglob("*") if p.is_file()]
    for path in files:
        if not path.exists():
            continue
        content = path.read_bytes().lower()
        for needle in needles:
            assert needle.lower().encode() not in content, (path.name, needle)

    assert is_suppressed(db, EMAIL) and is_suppressed(db, PHONE)
    assert db["contacts"].get(other)["email"] == "ana@example.com"
    # The folder is shared with other contacts: only the person's files go.
    assert contact_files(workspace, zeb, partial=True) == []
    assert not leftover.exists()
    assert contact_files(workspace, other) == kept
    # The shared texts file loses only his line; Ana's stays byte for byte.
    assert read_texts(workspace, zeb) == []
    assert texts_path(workspace, other).read_bytes() == other_line + b"\n"
    remaining = db.execute(
        "SELECT COUNT(*) FROM messages WHERE contact_id = ?", [zeb]
    ).fetchone()[0]
    assert remaining == 0
    assert cli("timeline", str(zeb)).exit_code != 0


def test_erase_asks_before_it_deletes(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    refused = cli("contacts", "erase", str(zeb))
    assert refused.exit_code != 0 and "--yes" in refused.stderr
    assert db["contacts"].get(zeb)["email"] == EMAIL


def test_show_table_keeps_a_phone_extension(workspace, db, clock, cli):
    zeb, _ = person_with_history(workspace, db, clock)
    db.execute(
        "UPDATE contact_phones SET extension = '204' WHERE contact_id = ?", [zeb]
    )

    table = cli("contacts", "show", str(zeb))

    assert table.exit_code == 0, table.stderr
    assert "x204" in table.stdout


def test_export_data_into_a_missing_folder_is_one_clear_error(
    workspace, db, clock, cli, tmp_path
):
    zeb, _ = person_with_history(workspace, db, clock)

    result = cli("contacts", "export-data", str(zeb), "-o", str(tmp_path / "no" / "x"))

    assert result.exit_code == 1
    assert "does not exist" in result.stderr


SHARED_PHONE = "+12025550105"


def test_erase_leaves_a_shared_phone_to_the_other_contact(workspace, db, clock, cli):
    daniel = make_contact(
        db,
        clock,
        first_name="Daniel",
        last_name="Kim",
        email="daniel.kim@example.com",
        phone=SHARED_PHONE,
    )
    sofia = make_contact(
        db,
        clock,
        first_name="Sofia",
        last_name="Kim",
        email="sofia.kim@example.com",
        phone=SHARED_PHONE,
    )
    send_message(workspace, db, clock, daniel, "sms", text="Hi Daniel")
    send_message(workspace, db, clock, sofia, "sms", text="Hi Sofia")
    send_message(workspace, db, clock, sofia, "email", text="Hi", subject="Hello")
    with write_transaction(db):
        record_event(
            db,
            sofia,
            "form.submitted",
            clock=clock,
            data={
                "form": "household",
                "partner": f"Daniel Kim, daniel.kim@example.com, {SHARED_PHONE}",
            },
        )
    [sofia_line] = [
        line
        for line in texts_path(workspace, sofia).read_bytes().splitlines()
        if b'"contact_id":%d,' % sofia in line
    ]
    sofia_files = contact_files(workspace, sofia)

    erased = cli("contacts", "erase", "daniel.kim@example.com", "--yes", "--json")

    assert erased.exit_code == 0, erased.stderr
    assert f"shared with contact {sofia}" in erased.stderr
    assert erased.json()["outbox_lines_removed"] == 1
    phones = db.execute(
        "SELECT phone FROM contact_phones WHERE contact_id = ?", [sofia]
    ).fetchall()
    assert phones == [(SHARED_PHONE,)]
    assert db["contacts"].get(sofia)["phone"] == SHARED_PHONE
    addresses = db.execute(
        "SELECT address FROM messages WHERE contact_id = ? AND channel = 'sms'",
        [sofia],
    ).fetchall()
    assert addresses == [(SHARED_PHONE,)]
    assert texts_path(workspace, sofia).read_bytes() == sofia_line + b"\n"
    assert contact_files(workspace, sofia) == sofia_files
    assert not is_suppressed(db, SHARED_PHONE)
    assert is_suppressed(db, "daniel.kim@example.com")
    assert check_consent(db, get_contact(db, sofia), "sms") == SHARED_PHONE
    # His name and his own address are still scrubbed from her record.
    [form] = db.query(
        "SELECT data FROM events WHERE contact_id = ? AND type = 'form.submitted'",
        [sofia],
    )
    assert loads(form["data"])["partner"] == f"[erased], [erased], {SHARED_PHONE}"
    assert read_texts(workspace, daniel) == []

    exported = cli("contacts", "export-data", str(sofia))

    assert exported.exit_code == 0, exported.stderr
    [text] = exported.json()["outbox_texts"]
    assert text["body"] == "Hi Sofia" and text["to"] == SHARED_PHONE


def test_erase_keeps_other_contacts_addresses_and_names(workspace, db, clock, cli):
    ana = make_contact(
        db, clock, last_name="Lima", email="ana@example.com", phone="+15125550101"
    )
    diana = make_contact(
        db, clock, first_name="Diana", email="diana@example.com", phone=None
    )
    namesake = make_contact(
        db, clock, last_name="Lima", email="ana.lima@example.org", phone=None
    )

    erased = cli("contacts", "erase", str(ana), "--yes")

    assert erased.exit_code == 0, erased.stderr
    assert db["contacts"].get(namesake)["display_name"] == "Ana Lima"
    assert db["contacts"].get(diana)["email"] == "diana@example.com"
    emails = db.execute(
        "SELECT email FROM contact_emails WHERE contact_id = ?", [diana]
    ).fetchall()
    assert emails == [("diana@example.com",)]


@contextmanager
def unchangeable(folder: Path):
    """The folder's files can be neither changed nor removed: a read-only
    folder, or, for root (whom permissions do not stop), immutable files."""
    frozen: list[str] = []
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):
            frozen = [str(path) for path in folder.iterdir() if path.is_file()]
            chattr = shutil.which("chattr")
            made = chattr and subprocess.run(
                [chattr, "+i", *frozen], capture_output=True
            )
            if not made or made.returncode or os.access(frozen[0], os.W_OK):
                pytest.skip("running as root and files cannot be made immutable")
        yield
    finally:
        if frozen:
            subprocess.run([shutil.which("chattr"), "-i", *frozen], check=False)
        os.chmod(folder, 0o755)


def test_erase_into_an_unwritable_outbox_changes_nothing_and_can_be_rerun(
    workspace, db, clock, cli
):
    zeb, _ = person_with_history(workspace, db, clock)
    folder = texts_path(workspace, zeb).parent

    with unchangeable(folder):
        refused = cli("contacts", "erase", str(zeb), "--yes")

    assert refused.exit_code == 1
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert "Traceback" not in refused.stderr
    assert f"{folder.name}/" in refused.stderr
    assert "run the erase again" in refused.stderr
    assert "already removed from the outbox:" in " ".join(refused.stderr.split())
    assert db["contacts"].get(zeb)["email"] == EMAIL
    assert not is_suppressed(db, EMAIL)
    assert read_texts(workspace, zeb)

    rerun = cli("contacts", "erase", str(zeb), "--yes")

    assert rerun.exit_code == 0, rerun.stderr
    assert read_texts(workspace, zeb) == []
    assert contact_files(workspace, zeb, partial=True) == []
    assert cli("contacts", "show", str(zeb)).exit_code != 0


def test_a_text_written_during_erasure_that_cannot_be_removed_is_a_warning(
    workspace, db, clock, cli, monkeypatch
):
    zeb, _ = person_with_history(workspace, db, clock)
    folder = texts_path(workspace, zeb).parent
    delete_rows = privacy._delete_rows
    frozen = ExitStack()

    def a_runner_sends_meanwhile(db, contact_id):
        # What a runner holding an older read of the contact does: append
        # a text, after the outbox was cleaned once. Then the file locks up.
        OutboxChannel(workspace, "sms").send(
            OutboundMessage("sms", PHONE, "Late reminder", contact_id=contact_id)
        )
        frozen.enter_context(unchangeable(folder))
        return delete_rows(db, contact_id)

    monkeypatch.setattr(privacy, "_delete_rows", a_runner_sends_meanwhile)
    with frozen:
        erased = cli("contacts", "erase", str(zeb), "--yes", "--json")

    assert erased.exit_code == 0, erased.stderr
    [note] = [n for n in erased.json()["notes"] if "could not clean" in n]
    assert f"{folder.name}/texts.jsonl" in note
    assert note in erased.stderr
    assert cli("contacts", "show", str(zeb)).exit_code != 0
    assert [t["body"] for t in read_texts(workspace, zeb)] == ["Late reminder"]


def test_export_and_erase_find_a_merged_contacts_outbox(workspace, db, clock, cli):
    kept = make_contact(db, clock, first_name="Ana", last_name="Lima")
    with write_transaction(db):
        # The next contact lands in the 1000-1999 folder.
        db["contacts"].insert(
            {"id": 1499, "custom": "{}", "created_at": "x", "updated_at": "x"}
        )
    merged = make_contact(
        db,
        clock,
        first_name="Ana",
        last_name="Lima-Souza",
        email="ana.souza@example.com",
        phone="+15125550177",
    )
    with write_transaction(db):
        db.execute("DELETE FROM contacts WHERE id = 1499")
    assert merged == 1500
    send_message(workspace, db, clock, kept, "sms", text="Hi from the kept record")
    send_message(workspace, db, clock, merged, "sms", text="Hi from the merged one")
    send_message(workspace, db, clock, merged, "email", text="Hi", subject="Merged")
    # Another contact of the merged one's folder keeps their lines.
    neighbour = make_contact(
        db, clock, first_name="Bo", email="bo@example.com", phone="+15125550166"
    )
    send_message(workspace, db, clock, neighbour, "sms", text="Hi Bo")
    merge_contacts(db, kept, merged, clock=clock)

    exported = cli("contacts", "export-data", str(kept))

    assert exported.exit_code == 0, exported.stderr
    data = exported.json()
    assert [t["body"] for t in data["outbox_texts"]] == [
        "Hi from the kept record",
        "Hi from the merged one",
    ]
    [eml] = data["outbox_files"]
    assert eml["path"].startswith("data/outbox/1000-1999/1500-msg-")
    assert "ana.souza@example.com" in eml["content"]

    erased = cli("contacts", "erase", str(kept), "--yes", "--json")

    assert erased.exit_code == 0, erased.stderr
    assert erased.json()["outbox_lines_removed"] == 2
    assert erased.json()["files_deleted"] == 1
    assert contact_files(workspace, merged, partial=True) == []
    assert read_texts(workspace, merged) == []
    assert [t["body"] for t in read_texts(workspace, neighbour)] == ["Hi Bo"]
