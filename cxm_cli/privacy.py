"""A person's data: everything cxm holds about them, and erasing it for good.

Export gathers every row in every table that names the contact, plus the
files and texts the outbox wrote for them. Erase deletes those rows, scrubs
the person's email addresses, phone numbers and full name from any other text
in the database (an import's before/after record, another contact's notes),
removes their outbox files and their lines of the outbox's texts.jsonl
files (found by contact id and by message id, so a merged contact's count too),
and then rewrites the database file and empties its write-ahead log so
the deleted bytes are gone from disk files too. A one-way hash of each
address is kept in ``suppressions`` so a later import can never message them
again.

A phone or email another contact also holds (a household's landline, a
shared front-desk inbox) is theirs too: it is removed with the erased
person's own rows, but is not scrubbed from other text, not suppressed, and
is no reason to drop another contact's outbox line or file.
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
from cxm_cli.errors import CxmError
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
# Columns holding another contact's own address or name, never scrubbed (the
# erased person's rows are deleted before the scrub, so every row left is
# someone else's). These are what cxm sends to and looks people up by: a
# pattern matching there means the value is that person's too (a shared
# number, a namesake) or an email matching inside a longer one, and
# rewriting it to "[erased]" would make cxm text "[erased]". The value maps
# to the rows the column may still be scrubbed in (None: none of them).
IDENTIFIER_COLUMNS: dict[tuple[str, str], str | None] = {
    ("contacts", "email"): None,
    ("contacts", "phone"): None,
    ("contacts", "display_name"): None,
    ("contacts", "first_name"): None,
    ("contacts", "last_name"): None,
    ("contact_emails", "email"): None,
    ("contact_phones", "phone"): None,
    # A message of no contact (an unknown sender) may be the erased person's.
    ("messages", "address"): "contact_id IS NULL",
}


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


_WENT_OUT = (
    "direction = 'outbound' AND event_id IS NOT NULL "
    "AND status NOT IN ('failed', 'refused', 'skipped')"
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
        # Sent means it went out: its message.sent event is linked, and it
        # did not fail. A row still 'sending' (recorded before its send, or
        # left by a runner that died) or a failed attempt is not counted.
        f"SUM({_WENT_OUT}) AS sent, SUM(direction = 'inbound') AS received, "
        "MAX(CASE WHEN direction = 'inbound' THEN at END) AS last_received_at, "
        f"MAX(CASE WHEN {_WENT_OUT} THEN at END) AS last_sent_at "
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

    message_ids = _message_ids(db, contact_id)
    files = []
    for path in _outbox_files_of(workspace, contact_id, message_ids):
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
        "outbox_texts": _outbox_texts_of(workspace, contact_id, message_ids),
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


def _message_ids(db, contact_id: int) -> set[int]:
    """The contact's message ids, a merged contact's included: their outbox
    lines and files keep the merged contact's id and folder."""
    return {
        row[0]
        for row in db.execute(
            "SELECT id FROM messages WHERE contact_id = ?", [contact_id]
        )
    }


def _outbox_files_of(
    workspace, contact_id: int, message_ids: set[int], *, partial: bool = False
) -> list[Path]:
    from cxm_cli.channels.outbox import contact_files, files_of_messages

    own = contact_files(workspace, contact_id, partial=partial)
    merged = files_of_messages(workspace, message_ids, partial=partial)
    return sorted(set(own) | set(merged))


def _outbox_texts_of(
    workspace, contact_id: int, message_ids: set[int]
) -> list[dict[str, Any]]:
    from cxm_cli.channels.outbox import read_texts, texts_of_messages

    texts = read_texts(workspace, contact_id)
    held = {record.get("message_id") for record in texts}
    # Limitation: a contact with a message not in their own folder's file
    # (an email, a merged contact's text, a text sent through a provider)
    # makes export read every folder's texts.jsonl: the whole outbox once.
    texts.extend(texts_of_messages(workspace, message_ids - held))
    return texts


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
    shared = _shared_identifiers(db, contact_id, emails, phones)
    patterns = _patterns(
        workspace, emails - set(shared), phones - set(shared), _full_names(contact)
    )
    # Read before the rows go: a merged contact's outbox lines and files
    # are found by these.
    outbox = _OutboxCleanup(workspace, contact_id, _message_ids(db, contact_id))

    # The outbox first, while the database still holds the person: a file
    # cxm cannot change stops the erasure here, and running it again (once
    # the file is fixed) finishes the job instead of finding no contact.
    failures = outbox.clean(patterns, result)
    if failures:
        raise _outbox_error(workspace, contact_id, failures, result)

    # Freed pages are overwritten with zeros instead of left readable.
    db.execute("PRAGMA secure_delete = ON")
    with write_transaction(db):
        result.suppressed = _suppress(db, clock, emails, phones, shared, result)
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

    # Again: a runner may have appended a text for the person meanwhile. The
    # person is gone from the database now, so a failure is reported, not
    # raised.
    _note_unclean(workspace, contact_id, outbox.clean(patterns, result), result)
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


def _shared_identifiers(db, contact_id: int, emails, phones) -> dict[str, int]:
    """The person's emails and phones another contact also holds, each with
    one such contact's id."""
    shared = {}
    for kind, values in (("email", emails), ("phone", phones)):
        for value in sorted(values):
            other = fetch_one(
                db,
                f"SELECT contact_id FROM contact_{kind}s "
                f"WHERE {kind} = ? AND contact_id != ? "
                f"UNION ALL SELECT id FROM contacts WHERE {kind} = ? AND id != ? "
                "LIMIT 1",
                [value, contact_id, value, contact_id],
            )
            if other:
                shared[value] = other["contact_id"]
    return shared


def _full_names(contact: dict) -> set[str]:
    """Names specific enough to scrub from other text (not "Ana" alone)."""
    names = {contact.get("display_name") or ""}
    names.add(
        " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
    )
    return {name.strip() for name in names if name and " " in name.strip()}


def _patterns(workspace, emails, phones, names) -> list[re.Pattern]:
    # Bounded, so ana@example.com is not found inside diana@example.com.
    patterns = [
        re.compile(r"(?<![\w.+-])" + re.escape(email) + r"(?![\w-]|\.\w)", re.I)
        for email in emails
    ]
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


def _suppress(db, clock, emails, phones, shared, result) -> int:
    added = 0
    for value in sorted(emails | phones):
        if value in shared:
            # Suppressing it would silence the other person too.
            kind = "a phone" if value in phones else "an email"
            result.notes.append(
                f"{kind} is shared with contact {shared[value]}: it "
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
    """Replace the person's identifiers in every text value still stored,
    except other contacts' own addresses and names (IDENTIFIER_COLUMNS).

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
            rows = "1"
            if (table, column) in IDENTIFIER_COLUMNS:
                rows = IDENTIFIER_COLUMNS[(table, column)]
                if rows is None:
                    continue
            changed += db.execute(
                f'UPDATE "{table}" SET "{column}" = cxm_scrub_identifier("{column}") '
                f'WHERE ({rows}) AND cxm_has_identifier("{column}")'
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


_MESSAGE_ID_IN_LINE = re.compile(rb'"message_id":(\d+),')


class _OutboxCleanup:
    """The person's outbox files and texts.jsonl lines, removed; run twice by
    an erasure (before and after the database part)."""

    def __init__(self, workspace, contact_id: int, message_ids: set[int]):
        self.workspace = workspace
        self.contact_id = contact_id
        self.message_ids = message_ids

    def clean(self, patterns, result: EraseResult) -> list[tuple[Path, OSError]]:
        """Remove what can be removed; the files that could not be changed,
        with the reason. Adds to the result's counts."""
        failures: list[tuple[Path, OSError]] = []
        # Limitation: what is removed before a file that cannot be changed
        # stays removed (the error says how much); the erase run again
        # finishes the rest.
        result.files_deleted += self._delete_files(patterns, failures)
        result.outbox_lines_removed += self._remove_texts(patterns, failures)
        return failures

    def _delete_files(self, patterns, failures) -> int:
        from cxm_cli.channels.outbox import TEXTS_FILE

        workspace, contact_id = self.workspace, self.contact_id
        deleted = 0
        try:
            own = _outbox_files_of(
                workspace, contact_id, self.message_ids, partial=True
            )
        except OSError as exc:  # a folder that cannot be listed
            failures.append((Path(exc.filename or workspace.outbox_dir), exc))
            own = []
        for path in own:
            deleted += _unlink(path, failures)
        folder = workspace.outbox_dir / str(contact_id)
        if folder.is_dir():
            try:
                shutil.rmtree(folder)  # the folder files went to before shared
            except OSError as exc:
                failures.append((Path(exc.filename or folder), exc))
        # Files written before the outbox kept one folder per contact, or for
        # no contact at all, may still name the person.
        if workspace.outbox_dir.is_dir():
            for path in workspace.outbox_dir.rglob("*"):
                if not path.is_file() or path.name == TEXTS_FILE:
                    continue  # texts.jsonl loses only its lines naming the person
                try:
                    text = path.read_bytes().decode("utf-8", "replace")
                except FileNotFoundError:
                    continue  # removed meanwhile (a temporary file renamed)
                except OSError as exc:
                    failures.append((path, exc))
                    continue
                if any(pattern.search(text) for pattern in patterns):
                    deleted += _unlink(path, failures)
        return deleted

    def _remove_texts(self, patterns, failures) -> int:
        """Drop every text line of the contact or of their messages, or naming
        them, from every folder's texts.jsonl (another contact's text may
        quote their number)."""
        from cxm_cli.channels.outbox import remove_text_lines, texts_files

        contact_id, message_ids = self.contact_id, self.message_ids

        def names_the_person(line: bytes, record: dict | None) -> bool:
            if record is not None and (
                record.get("contact_id") == contact_id
                or record.get("message_id") in message_ids
            ):
                return True
            text = line.decode("utf-8", "replace")
            # A torn line cannot be parsed, but may still hold the ids.
            if record is None:
                if f'"contact_id":{contact_id},' in text:
                    return True
                found = _MESSAGE_ID_IN_LINE.search(line)
                if found and int(found.group(1)) in message_ids:
                    return True
            return any(pattern.search(text) for pattern in patterns)

        removed = 0
        for path in texts_files(self.workspace):
            try:
                removed += remove_text_lines(path, names_the_person)
            except OSError as exc:
                failures.append((path, exc))
        return removed


def _unlink(path: Path, failures) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        failures.append((path, exc))
        return 0
    return 1


def _shown(workspace, path: Path) -> Path:
    try:
        return path.relative_to(workspace.root)
    except ValueError:
        return path


def _note_unclean(workspace, contact_id: int, failures, result) -> None:
    """The files the cleanup after the database part could not change, as
    notes: the person is gone from the database, so this is no error."""
    from cxm_cli.channels.outbox import TEXTS_FILE

    if failures:
        log.warning(
            "erased contact %s: %d outbox files not cleaned", contact_id, len(failures)
        )
    for path, exc in failures:
        # Limitation: what this pass could not remove stays until removed by
        # hand; erase cannot run again for a contact that no longer exists.
        if path.name == TEXTS_FILE:
            what = f'its lines with "contact_id":{contact_id}, by hand'
        else:
            what = "it by hand"
        result.notes.append(
            f"could not clean {_shown(workspace, path)} ({exc.strerror or exc}): "
            f"it may still hold a message to contact {contact_id}; fix its "
            f"permissions and remove {what}"
        )


def _outbox_error(workspace, contact_id: int, failures, result) -> CxmError:
    path, exc = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return CxmError(
        f"cannot erase contact {contact_id}: the outbox file "
        f"{_shown(workspace, path)} cannot be changed: {exc.strerror or exc}{more}; "
        "nothing was erased from the database (already removed from the outbox: "
        f"{result.files_deleted} files, {result.outbox_lines_removed} text lines)",
        hint="fix the file's (or its folder's) permissions, then run the erase again",
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
