"""Exporting contacts to CSV or JSON Lines that ``cxm leads import`` reads back.

The columns are those of the ``cxm`` layout, so an export imports without
flags: into the same workspace it changes nothing; into a new one its rows are
existing contacts (``contact.imported``, no new-lead follow-up), with each
opt-out at its own time and bouncing addresses still bouncing. CSV cells that
a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-`` or
``@``) get Excel's ``'`` text guard, which the importer strips again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import TextIO

from cxm_cli import clock as clocks
from cxm_cli.errors import InputError
from cxm_cli.store import loads

EXPORT_FORMATS = ("csv", "jsonl")
COLUMNS = [
    "cxm_id",
    "first_name",
    "last_name",
    "company",
    "emails",
    "phones",
    "tags",
    "source",
    "timezone",
    "region",
    "email_consent",
    "sms_consent",
    "email_opted_out_at",
    "sms_opted_out_at",
    "email_consent_source",
    "sms_consent_source",
    "sms_number_opted_out",
    "bouncing_emails",
    "created_at",
    "custom",
]
MULTI = " ::: "
_NO_CONSENT = ("", None, None)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text rather than running as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def contact_records(db, *, tag: str | None = None) -> Iterator[dict]:
    """One export record per contact, oldest first, streamed from the database."""
    sql = "SELECT * FROM contacts"
    params: list = []
    if tag:
        sql += " WHERE id IN (SELECT contact_id FROM contact_tags WHERE tag = ?)"
        params.append(tag)
    sql += " ORDER BY id"
    reader = db.conn.cursor()
    columns = None
    for row in reader.execute(sql, params):
        if columns is None:
            columns = [d[0] for d in reader.description]
        yield _record(db, dict(zip(columns, row, strict=True)))


def _record(db, contact: dict) -> dict:
    contact_id = contact["id"]
    conn = db.conn
    email_rows = conn.execute(
        "SELECT email, status FROM contact_emails WHERE contact_id = ?"
        " ORDER BY is_primary DESC, id",
        [contact_id],
    ).fetchall()
    emails = [email for email, _ in email_rows]
    phones = []
    for phone, extension, kind in conn.execute(
        "SELECT phone, extension, kind FROM contact_phones WHERE contact_id = ?"
        " ORDER BY phone = ? DESC, is_primary DESC, id",
        [contact_id, contact["phone"] or ""],
    ):
        text = phone + (f" x{extension}" if extension else "")
        phones.append(text + (f" ({kind})" if kind else ""))
    tags = [
        r[0]
        for r in conn.execute(
            "SELECT tag FROM contact_tags WHERE contact_id = ? ORDER BY tag",
            [contact_id],
        )
    ]
    consent = {
        channel: (status, source, changed_at)
        for channel, status, source, changed_at in conn.execute(
            "SELECT channel, status, source, changed_at FROM consents"
            " WHERE contact_id = ?",
            [contact_id],
        )
    }
    # The lead's own date (the source's created time), not the day it was
    # imported here: the importer reads this column back as the lead's
    # created_time, so a new workspace keeps the original date. An existing
    # contact (imported with --existing-contacts) keeps its date the same way.
    [created_time] = conn.execute(
        "SELECT min(json_extract(data, '$.created_time')) FROM events"
        " WHERE contact_id = ? AND type IN ('lead.created', 'contact.imported')",
        [contact_id],
    ).fetchone()
    return {
        "cxm_id": contact_id,
        "first_name": contact["first_name"] or "",
        "last_name": contact["last_name"] or "",
        "company": contact["company"] or "",
        "emails": emails,
        "phones": phones,
        "tags": tags,
        "source": contact["source"] or "",
        "timezone": contact["timezone"] or "",
        "region": contact["region"] or "",
        "email_consent": consent.get("email", _NO_CONSENT)[0],
        "sms_consent": consent.get("sms", _NO_CONSENT)[0],
        "email_opted_out_at": _opted_out_at(consent.get("email")),
        "sms_opted_out_at": _opted_out_at(consent.get("sms")),
        "email_consent_source": consent.get("email", _NO_CONSENT)[1] or "",
        "sms_consent_source": consent.get("sms", _NO_CONSENT)[1] or "",
        "bouncing_emails": [e for e, status in email_rows if status == "bouncing"],
        "sms_number_opted_out": _number_opted_out(conn, contact_id),
        "created_at": created_time or contact["created_at"],
        "custom": loads(contact["custom"], {}),
    }


def _number_opted_out(conn, contact_id: int) -> str:
    """When another holder of one of the contact's phones opted out of texts
    (so no text reaches that number through this contact either), else "".

    Exported so a workspace the contact moves to without that holder still
    never texts the number.
    """
    [when] = conn.execute(
        "SELECT min(c.changed_at) FROM contact_phones mine"
        " JOIN contact_phones theirs ON theirs.phone = mine.phone"
        " AND theirs.contact_id != mine.contact_id"
        " AND COALESCE(theirs.extension, '') = ''"
        " JOIN consents c ON c.contact_id = theirs.contact_id"
        " AND c.channel = 'sms' AND c.status = 'opted_out'"
        " WHERE mine.contact_id = ? AND COALESCE(mine.extension, '') = ''",
        [contact_id],
    ).fetchone()
    return when or ""


def _opted_out_at(consent: tuple | None) -> str:
    """When an opt-out was made, to the second: the importer reads a date in
    an opt-out column as the time of the opt-out."""
    if consent is None or consent[0] != "opted_out" or not consent[2]:
        return ""
    return clocks.parse(consent[2]).strftime("%Y-%m-%dT%H:%M:%SZ")


# Limitation: an opt-in is exported as its status and source only; imported
# into a new workspace it is dated to the import (the cxm layout reads times
# for opt-outs only).
def export_contacts(
    db, out: TextIO, *, format: str = "csv", tag: str | None = None
) -> int:
    """Write every contact (or those with ``tag``) to ``out``; returns the count."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"--format {format!r}: use csv or jsonl")
    count = 0
    if format == "jsonl":
        for record in contact_records(db, tag=tag):
            out.write(json.dumps(_jsonl(record), ensure_ascii=False) + "\n")
            count += 1
        return count

    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for record in contact_records(db, tag=tag):
        writer.writerow([spreadsheet_safe(_cell(record[c])) for c in COLUMNS])
        count += 1
    return count


def _jsonl(record: dict) -> dict:
    return {k: v for k, v in record.items() if v not in ("", [], {})}


def _cell(value) -> str:
    if isinstance(value, list):
        return MULTI.join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return "" if value is None else str(value)
