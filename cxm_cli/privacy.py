"""A person's data: everything cxm holds about them, and erasing it for good.

Export gathers every row in every table that names the contact, plus the
files and texts the outbox wrote for them. Erase deletes those rows, scrubs
the person's email addresses, phone numbers and full name from any other text
in the database (an import's before/after record, another contact's notes),
removes their outbox files and their lines of the outbox's texts.jsonl
files, and then rewrites the database file and empties its write-ahead log so
the deleted bytes are gone from disk files too. A one-way hash of each
address is kept in ``suppressions`` so a later import can never message them
again.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.contacts import contact_tags, get_contact, identifier_hash
from cxm_cli.events import record_event
from cxm_cli.store import fetch_one, loads, write_transaction
from cxm_cli.timeline import contact_name

log = logging.getLogger(__name__)

ERASED = "[erased]"
# Tables whose rows keep meaning without the person: their link is cut
# instead of deleting them (the mailbox must still know a message was seen).
UNLINK_ONLY = {"imap_messages": ("contact_id", "message_id")}
# Bookkeeping with no personal data, left alone by the scrub.
NOT_SCRUBBED = {"suppressions", "_sqlite_migrations", "sqlite_sequence"}


def person_tables(db) -> list[str]:
    """Every ordinary table with a ``contact_id`` column, except contacts."""
    tables = []
    for name in _ordinary_tables(db):
        columns = {row[1] for row in db.execute(f'PRAGMA table_info("{name}")')}
        if "contact_id" in columns and name != "contacts":
            tables.append(name)
    return tables


def _ordinary_tables(db) -> list[str]:
    rows = db.execute("PRAGMA table_list").fetchall()
    return sorted(
        row[1]
        for row in rows
        if row[0] == "main" and row[2] == "table" and not row[1].startswith("sqlite_")
    )


def contact_summary(db, contact_id: int) -> dict[str, Any]:
    """One screen about a person: identity, consent, activity, where they are."""
    contact = get_contact(db, contact_id)
    emails = list(
        db.query(
            "SELECT email, is_primary, status FROM contact_emails "
            "WHERE contact_id = ? ORDER BY is_primary DESC, id",
            [contact_id],
        )
    )
    phones = list(
        db.query(
            "SELECT phone, kind, extension, is_primary FROM contact_phones "
            "WHERE contact_id = ? ORDER BY is_primary DESC, id",
            [contact_id],
        )
    )
    consents = {
        row["channel"]: {
            "status": row["status"],
            "source": row["source"],
            "changed_at": row["changed_at"],
        }
        for row in db.query("SELECT * FROM consents WHERE contact_id = ?", [contact_id])
    }
    messages = fetch_one(
        db,
        "SELECT COUNT(*) AS total, "
        "SUM(direction = 'outbound') AS sent, SUM(direction = 'inbound') AS received, "
        "MAX(CASE WHEN direction = 'inbound' THEN at END) AS last_received_at, "
        "MAX(CASE WHEN direction = 'outbound' THEN at END) AS last_sent_at "
        "FROM messages WHERE contact_id = ?",
        [contact_id],
    )
    summary: dict[str, Any] = {
        "id": contact["id"],
        "name": contact_name(contact),
        "company": contact["company"],
        "source": contact["source"],
        "created_at": contact["created_at"],
        "timezone": contact["timezone"],
        "emails": emails,
        "phones": phones,
        "tags": contact_tags(db, contact_id),
        "consent": consents,
        "custom": contact["custom"],
        "messages": {
            "sent": messages["sent"] or 0,
            "received": messages["received"] or 0,
            "last_sent_at": messages["last_sent_at"],
            "last_received_at": messages["last_received_at"],
        },
    }
    if "enrollments" in _ordinary_tables(db):
        summary["sequences"] = [
            row["sequence"]
            for row in db.query(
                "SELECT sequence FROM enrollments WHERE contact_id = ? "
                "AND status = 'active' ORDER BY enrolled_at",
                [contact_id],
            )
        ]
    if "contact_stages" in _ordinary_tables(db):
        summary["stages"] = [
            {k: v for k, v in row.items() if k != "contact_id"}
            for row in db.query(
                "SELECT * FROM contact_stages WHERE contact_id = ?", [contact_id]
            )
        ]
    return summary


def export_data(workspace, db, contact_id: int, *, clock) -> dict[str, Any]:
    """Everything held about a person, as JSON-ready data."""
    contact = get_contact(db, contact_id)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in person_tables(db):
        rows = [
            _readable(row)
            for row in db.query(
                f'SELECT * FROM "{table}" WHERE contact_id = ?', [contact_id]
            )
        ]
        if rows:
            tables[table] = rows

    files = []
    for path in sorted(_outbox_files_of(workspace, contact_id)):
        files.append(
            {
                "path": str(path.relative_to(workspace.root)),
                "content": path.read_text(encoding="utf-8", errors="replace"),
            }
        )
    return {
        "exported_at": clocks.now_iso(clock),
        "business": workspace.business_name,
        "contact": _readable(contact),
        "records": tables,
        "outbox_files": files,
        "outbox_texts": _outbox_texts_of(workspace, contact_id),
    }


def _readable(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns (data, custom, ...) as values rather than strings."""
    readable = {}
    for key, value in row.items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                readable[key] = loads(value)
                continue
            except ValueError:
                pass
        readable[key] = value
    return readable


def _outbox_files_of(
    workspace, contact_id: int, *, partial: bool = False
) -> list[Path]:
    from cxm_cli.channels.outbox import contact_files

    return contact_files(workspace, contact_id, partial=partial)


def _outbox_texts_of(workspace, contact_id: int) -> list[dict[str, Any]]:
    from cxm_cli.channels.outbox import read_texts

    return read_texts(workspace, contact_id)


@dataclass
class EraseResult:
    contact_id: int
    rows_deleted: int = 0
    values_scrubbed: int = 0
    files_deleted: int = 0
    outbox_lines_removed: int = 0
    suppressed: int = 0
    wal_emptied: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "rows_deleted": self.rows_deleted,
            "values_scrubbed": self.values_scrubbed,
            "files_deleted": self.files_deleted,
            "outbox_lines_removed": self.outbox_lines_removed,
            "suppressed": self.suppressed,
            "wal_emptied": self.wal_emptied,
            "notes": list(self.notes),
        }


def erase_contact(workspace, db, contact_id: int, *, clock) -> EraseResult:
    """Remove a person for good; keep only one-way hashes of their addresses."""
    contact = get_contact(db, contact_id)
    result = EraseResult(contact_id)
    emails, phones = _identifiers(db, contact)
    patterns = _patterns(workspace, emails, phones, _full_names(contact))

    # Freed pages are overwritten with zeros instead of left readable.
    db.execute("PRAGMA secure_delete = ON")
    with write_transaction(db):
        result.suppressed = _suppress(db, clock, contact_id, emails, phones, result)
        result.rows_deleted = _delete_rows(db, contact_id)
        result.values_scrubbed = _scrub(db, patterns)
        record_event(
            db,
            None,
            "contact.erased",
            clock=clock,
            data={"erased_contact_id": contact_id},
            source="privacy",
        )
    result.files_deleted = _delete_outbox_files(workspace, contact_id, patterns)
    result.outbox_lines_removed = _remove_outbox_texts(workspace, contact_id, patterns)
    result.wal_emptied = _rewrite_database(db, result)
    log.info("erased contact %s (%d rows)", contact_id, result.rows_deleted)
    return result


def _identifiers(db, contact: dict) -> tuple[set[str], set[str]]:
    contact_id = contact["id"]
    emails = {
        row["email"]
        for row in db.query(
            "SELECT email FROM contact_emails WHERE contact_id = ?", [contact_id]
        )
    }
    phones = {
        row["phone"]
        for row in db.query(
            "SELECT phone FROM contact_phones WHERE contact_id = ?", [contact_id]
        )
    }
    if contact.get("email"):
        emails.add(contact["email"].lower())
    if contact.get("phone"):
        phones.add(contact["phone"])
    return emails, phones


def _full_names(contact: dict) -> set[str]:
    """Names specific enough to scrub from other text (not "Ana" alone)."""
    names = {contact.get("display_name") or ""}
    names.add(
        " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
    )
    return {name.strip() for name in names if name and " " in name.strip()}


def _patterns(workspace, emails, phones, names) -> list[re.Pattern]:
    patterns = [re.compile(re.escape(email), re.IGNORECASE) for email in emails]
    for phone in phones:
        patterns.extend(_phone_patterns(phone, workspace.phone_region))
    patterns.extend(
        re.compile(r"\s+".join(re.escape(part) for part in name.split()), re.I)
        for name in names
    )
    return patterns


def _phone_patterns(phone: str, region: str) -> list[re.Pattern]:
    """The phone however it was typed: +1 (512) 555-0101, 512.555.0101, ..."""
    import phonenumbers

    digits = re.sub(r"\D", "", phone)
    forms = {digits}
    try:
        parsed = phonenumbers.parse(phone, region)
        forms.add(str(parsed.national_number))
    except phonenumbers.NumberParseException:
        pass
    separator = r"[\s().\-]*"
    return [
        re.compile(
            r"(?<!\d)(?:\+?\d{1,3}"
            + separator
            + ")?"
            + separator.join(form)
            + r"(?!\d)"
        )
        for form in forms
        if len(form) >= 6
    ]


def _suppress(db, clock, contact_id, emails, phones, result) -> int:
    added = 0
    for value in sorted(emails | phones):
        if value in phones:
            shared = fetch_one(
                db,
                "SELECT contact_id FROM contact_phones "
                "WHERE phone = ? AND contact_id != ?",
                [value, contact_id],
            )
            if shared:
                # Suppressing it would silence the other person too.
                result.notes.append(
                    f"a phone is shared with contact {shared['contact_id']}: it "
                    "stays on their record and is not suppressed"
                )
                continue
        cursor = db.execute(
            "INSERT OR IGNORE INTO suppressions (identifier_hash, reason, created_at) "
            "VALUES (?, 'erased', ?)",
            [identifier_hash(value), clocks.now_iso(clock)],
        )
        added += cursor.rowcount
    return added


def _delete_rows(db, contact_id: int) -> int:
    deleted = 0
    for table in person_tables(db):
        if table in UNLINK_ONLY:
            assignments = ", ".join(f"{c} = NULL" for c in UNLINK_ONLY[table])
            db.execute(
                f'UPDATE "{table}" SET {assignments} WHERE contact_id = ?',
                [contact_id],
            )
            continue
        deleted += db.execute(
            f'DELETE FROM "{table}" WHERE contact_id = ?', [contact_id]
        ).rowcount
    # Rows that point at the person under another name (contact_a, ...) go
    # with the contact through their ON DELETE CASCADE.
    deleted += db.execute("DELETE FROM contacts WHERE id = ?", [contact_id]).rowcount
    return deleted


def _scrub(db, patterns: list[re.Pattern]) -> int:
    """Replace the person's identifiers in every text value still stored.

    Limitation: this reads every text column of every table once, so erasing
    takes seconds on a database of millions of events; and a first name alone
    is not scrubbed from other people's rows (it is not specific enough).
    """
    if not patterns:
        return 0

    def found(value) -> int:
        return int(isinstance(value, str) and any(p.search(value) for p in patterns))

    def scrubbed(value):
        for pattern in patterns:
            value = pattern.sub(ERASED, value)
        return value

    db.conn.create_function("cxm_has_identifier", 1, found, deterministic=True)
    db.conn.create_function("cxm_scrub_identifier", 1, scrubbed, deterministic=True)
    changed = 0
    for table in _ordinary_tables(db):
        if table in NOT_SCRUBBED:
            continue
        for column in _text_columns(db, table):
            changed += db.execute(
                f'UPDATE "{table}" SET "{column}" = cxm_scrub_identifier("{column}") '
                f'WHERE cxm_has_identifier("{column}")'
            ).rowcount
    return changed


def _text_columns(db, table: str) -> list[str]:
    columns = []
    for row in db.execute(f'PRAGMA table_info("{table}")'):
        declared = (row[2] or "").upper()
        if (
            declared == ""
            or "CHAR" in declared
            or "TEXT" in declared
            or ("CLOB" in declared)
        ):
            columns.append(row[1])
    return columns


def _delete_outbox_files(workspace, contact_id: int, patterns) -> int:
    from cxm_cli.channels.outbox import TEXTS_FILE

    deleted = 0
    for path in _outbox_files_of(workspace, contact_id, partial=True):
        path.unlink()
        deleted += 1
    folder = workspace.outbox_dir / str(contact_id)
    if folder.is_dir():
        shutil.rmtree(folder)  # the folder files went to before shared folders
    # Files written before the outbox kept one folder per contact, or for no
    # contact at all, may still name the person.
    if workspace.outbox_dir.is_dir():
        for path in workspace.outbox_dir.rglob("*"):
            if not path.is_file() or path.name == TEXTS_FILE:
                continue  # texts.jsonl loses only its lines naming the person
            text = path.read_bytes().decode("utf-8", "replace")
            if any(pattern.search(text) for pattern in patterns):
                path.unlink()
                deleted += 1
    return deleted


def _remove_outbox_texts(workspace, contact_id: int, patterns) -> int:
    """Drop every text line of the contact, or naming them, from every
    folder's texts.jsonl (another contact's text may quote their number)."""
    from cxm_cli.channels.outbox import remove_text_lines, texts_files

    def names_the_person(line: bytes, record: dict | None) -> bool:
        if record is not None and record.get("contact_id") == contact_id:
            return True
        text = line.decode("utf-8", "replace")
        # A torn line cannot be parsed, but may still hold the contact's id.
        if record is None and f'"contact_id":{contact_id},' in text:
            return True
        return any(pattern.search(text) for pattern in patterns)

    return sum(
        remove_text_lines(path, names_the_person) for path in texts_files(workspace)
    )


def _rewrite_database(db, result: EraseResult) -> bool:
    """Copy the WAL into the file, rebuild the file, and empty the WAL."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        # Limitation: while another process reads the database (a running
        # `cxm serve` or runner), SQLite cannot empty the WAL; the erased
        # bytes leave it at that process's next checkpoint, not now.
        result.notes.append(
            "another process holds the database open; the write-ahead log is "
            "emptied at its next checkpoint"
        )
        return False
    return True
