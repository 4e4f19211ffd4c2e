"""Likely duplicates, and merging two contacts into one by hand.

The importer merges only on certain evidence (same email; same phone where the
emails do not conflict). What is left but suspicious is listed here: pairs the
importer flagged (a household phone shared by two emails), the same email
apart from Gmail dots or a ``+tag``, and the same name with a phone one digit
or a country code apart. ``merge_contacts`` then joins two of them, keeping
every event, message and identifier of both.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from cxm_cli import clock as clocks
from cxm_cli.contacts import consent_status, get_contact, set_consent
from cxm_cli.engine import active_enrollments, apply_exit_rules, exit_enrollment
from cxm_cli.errors import InputError
from cxm_cli.events import Event, hook_workspace, record_event
from cxm_cli.importing.values import (
    display_name,
    fold_name,
    is_variant_of,
    name_quality,
)
from cxm_cli.sequences import load_sequences
from cxm_cli.store import dumps, write_transaction

log = logging.getLogger(__name__)

GMAIL_DOMAINS = {"gmail.com", "googlemail.com"}


def email_alias_key(email: str) -> str:
    """The mailbox an address delivers to: no ``+tag``; no dots at Gmail."""
    local, _, domain = email.lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in GMAIL_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def _phones_close(a: str, b: str) -> bool:
    """One digit apart, or one number ending in the other (lost country code)."""
    if a == b:
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    digits_a, digits_b = a.lstrip("+"), b.lstrip("+")
    shorter, longer = sorted((digits_a, digits_b), key=len)
    return len(shorter) >= 7 and longer.endswith(shorter)


def find_duplicates(db) -> list[dict]:
    """Pairs of contacts that are probably one person, with the reason."""
    pairs: dict[tuple[int, int], str] = {}
    closed = {
        (r["contact_a"], r["contact_b"])
        for r in db.query(
            "SELECT contact_a, contact_b FROM likely_duplicates WHERE status != 'open'"
        )
    }

    def add(a: int, b: int, reason: str) -> None:
        key = (min(a, b), max(a, b))
        if a != b and key not in closed:
            pairs.setdefault(key, reason)

    for row in db.query(
        "SELECT contact_a, contact_b, reason FROM likely_duplicates"
        " WHERE status = 'open'"
    ):
        add(row["contact_a"], row["contact_b"], row["reason"])

    by_alias: dict[str, set[int]] = defaultdict(set)
    for row in db.query(
        "SELECT contact_id, email FROM contact_emails"
        " WHERE email LIKE '%+%' OR email LIKE '%@gmail.com'"
        " OR email LIKE '%@googlemail.com'"
    ):
        by_alias[email_alias_key(row["email"])].add(row["contact_id"])
    if by_alias:
        keys = list(by_alias)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.query(
                "SELECT contact_id, email FROM contact_emails"
                f" WHERE email IN ({marks})",
                chunk,
            ):
                by_alias[row["email"]].add(row["contact_id"])
    for alias, ids in by_alias.items():
        ordered = sorted(ids)
        for other in ordered[1:]:
            add(ordered[0], other, f"email aliases of {alias}")

    by_name: dict[str, list[int]] = defaultdict(list)
    for row in db.query(
        "SELECT id, first_name, last_name FROM contacts"
        " WHERE first_name IS NOT NULL AND last_name IS NOT NULL"
    ):
        by_name[fold_name(f"{row['first_name']} {row['last_name']}")].append(row["id"])
    for ids in by_name.values():
        if len(ids) < 2:
            continue
        phones = defaultdict(list)
        marks = ",".join("?" * len(ids))
        for row in db.query(
            "SELECT contact_id, phone FROM contact_phones"
            f" WHERE contact_id IN ({marks})",
            ids,
        ):
            phones[row["contact_id"]].append(row["phone"])
        for index, a in enumerate(ids):
            for b in ids[index + 1 :]:
                if any(_phones_close(p, q) for p in phones[a] for q in phones[b]):
                    add(a, b, "same name, near-identical phone")

    return _describe(db, pairs)


def _describe(db, pairs: dict[tuple[int, int], str]) -> list[dict]:
    rows = []
    for (a, b), reason in sorted(pairs.items()):
        first, second = get_contact(db, a), get_contact(db, b)
        rows.append(
            {
                "contact_a": a,
                "name_a": first["display_name"] or first["email"] or first["phone"],
                "contact_b": b,
                "name_b": second["display_name"] or second["email"] or second["phone"],
                "reason": reason,
            }
        )
    return rows


def _referencing_columns(db) -> list[tuple[str, str]]:
    """Every (table, column) with a foreign key to contacts, from the schema."""
    found = []
    for (table,) in db.conn.execute(
        "SELECT name FROM sqlite_master"
        " WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ):
        for fk in db.conn.execute(f"PRAGMA foreign_key_list('{table}')"):
            if fk[2] == "contacts" and fk[4] in (None, "id"):
                found.append((table, fk[3]))
    return found


def merge_contacts(
    db, keep_id: int, other_id: int, *, clock, source: str = "cli"
) -> dict:
    """Merge contact ``other_id`` into ``keep_id``; every event and message kept.

    Rows of other parts of cxm that point at the merged contact (enrollments,
    stages, reviews) move to the kept one where they do not clash with a row it
    already has. Opt-outs of either contact apply to the merged one. A
    sequence the kept contact was already in (active, left or finished) is not
    started again: the merged contact's active enrollment in it is exited.
    Each side's events meet the other side's active enrollments' exit rules,
    as if recorded on one contact: a reply under either record stops the
    follow-ups of both.
    """
    if keep_id == other_id:
        raise InputError("cannot merge a contact into itself")
    now = clocks.now_iso(clock)
    with write_transaction(db):
        keep, other = get_contact(db, keep_id), get_contact(db, other_id)
        moved_emails = _move_identifiers(db, keep, other)
        opted = {
            channel: consent_status(db, other_id, channel)
            for channel in ("email", "sms")
        }
        fields = _merged_fields(keep, other)
        exited = _exit_sequences_already_joined(db, keep_id, other_id, clock=clock)
        sides = _sides(db, keep_id, other_id)

        for table, column in _referencing_columns(db):
            if table in ("contact_emails", "contact_phones", "likely_duplicates"):
                continue
            db.conn.execute(
                f"UPDATE OR IGNORE {table} SET {column} = ? WHERE {column} = ?",
                [keep_id, other_id],
            )
        db.conn.execute(
            "UPDATE likely_duplicates SET status = 'merged' WHERE"
            " (contact_a = ? AND contact_b = ?) OR (contact_a = ? AND contact_b = ?)",
            [min(keep_id, other_id), max(keep_id, other_id)] * 2,
        )
        db.conn.execute("DELETE FROM contacts WHERE id = ?", [other_id])
        if fields:
            assignments = ", ".join(f"{k} = ?" for k in fields)
            values = [dumps(v) if k == "custom" else v for k, v in fields.items()]
            db.conn.execute(
                f"UPDATE contacts SET {assignments}, updated_at = ? WHERE id = ?",
                [*values, now, keep_id],
            )
        if "email" in fields:
            db.conn.execute(
                "UPDATE contact_emails SET is_primary = 1"
                " WHERE contact_id = ? AND email = ?",
                [keep_id, fields["email"]],
            )
        if "phone" in fields:
            db.conn.execute(
                "UPDATE contact_phones SET is_primary = 1"
                " WHERE contact_id = ? AND phone = ?",
                [keep_id, fields["phone"]],
            )
        _apply_exit_rules_across(db, keep_id, sides, clock=clock)
        for channel, status in opted.items():
            if (
                status == "opted_out"
                and consent_status(db, keep_id, channel) != "opted_out"
            ):
                set_consent(
                    db,
                    keep_id,
                    channel,
                    "opted_out",
                    clock=clock,
                    source=source,
                    detail={"merged_contact": other_id},
                )
        record_event(
            db,
            keep_id,
            "contact.merged",
            clock=clock,
            data={
                "merged_contact": other_id,
                "merged_name": other["display_name"],
                "by": source,
                "fields": sorted(k for k in fields if k != "display_name"),
                **moved_emails,
                **({"exited_sequences": exited} if exited else {}),
            },
            source=source,
        )
    log.info("merged contact %s into %s", other_id, keep_id)
    return get_contact(db, keep_id)


# Limitation: only the same sequence counts; an active enrollment moved over
# may leave the kept contact in two active sequences of one sequence group
# (the engine's one-per-group rule is applied at enrolment, not here).
def _exit_sequences_already_joined(
    db, keep_id: int, other_id: int, *, clock
) -> list[str]:
    """Exit the merged contact's active enrollments in sequences the kept one
    has any enrollment in; returns those sequences.

    Moving such an enrollment over as it is would restart a sequence the
    person left (a STOP) or finished. Exited, it moves over as history, its
    queued step cancelled and the reason on the timeline.
    """
    joined = [
        dict(row)
        for row in db.query(
            "SELECT * FROM enrollments WHERE contact_id = ? AND status = 'active'"
            " AND sequence IN (SELECT sequence FROM enrollments WHERE contact_id = ?)"
            " ORDER BY id",
            [other_id, keep_id],
        )
    ]
    for enrollment in joined:
        exit_enrollment(
            db,
            enrollment,
            clock=clock,
            reason=f"merged into contact {keep_id}, who was already in this sequence",
        )
    return [enrollment["sequence"] for enrollment in joined]


def _sides(db, keep_id: int, other_id: int) -> dict[int, tuple[set[int], set[int]]]:
    """Per contact of the merge: ids of its active enrollments and its events."""
    sides = {}
    for contact_id in (keep_id, other_id):
        enrollments = db.conn.execute(
            "SELECT id FROM enrollments WHERE contact_id = ? AND status = 'active'",
            [contact_id],
        )
        events = db.conn.execute(
            "SELECT id FROM events WHERE contact_id = ?", [contact_id]
        )
        sides[contact_id] = ({row[0] for row in enrollments}, {r[0] for r in events})
    return sides


# Limitation: an exit rule's `when:` is checked against the merged contact as
# it is now, not as it was when the event happened; and a reply keyword (C to
# confirm) sent under one record is not answered again for the other's steps.
def _apply_exit_rules_across(
    db, keep_id: int, sides: dict[int, tuple[set[int], set[int]]], *, clock
) -> None:
    """Let each contact's events stop the other one's active enrollments.

    The engine saw the merged contact's reply (or booking) only against that
    contact's own sequences; the kept contact's follow-up would go on nudging
    the person who answered. Each event of one side that some exit rule stops
    on, at or after an enrollment of the other side began, is put to that
    enrollment's exit rules as an event of the kept contact, oldest first.
    """
    workspace = hook_workspace(db)
    if workspace is None:
        return  # a database outside a workspace has no sequences
    sequence_set = load_sequences(workspace)
    exit_types = sorted(
        {
            event_type
            for sequence in sequence_set.sequences.values()
            for rule in sequence.exits
            for event_type in rule.types
        }
    )
    side_of_enrollment = {
        enrollment_id: contact_id
        for contact_id, (enrollments, _) in sides.items()
        for enrollment_id in enrollments
    }
    side_of_event = {
        event_id: contact_id
        for contact_id, (_, events) in sides.items()
        for event_id in events
    }
    if not exit_types or not side_of_enrollment:
        return

    marks = ", ".join("?" for _ in exit_types)
    stopping = [
        Event.from_row(row)
        for row in db.query(
            "SELECT id, contact_id, type, at, data, source FROM events"
            f" WHERE contact_id = ? AND type IN ({marks}) ORDER BY at, id",
            [keep_id, *exit_types],
        )
        if row["id"] in side_of_event
    ]
    for event in stopping:
        side = side_of_event[event.id]
        # Read again each time: an earlier event may have ended some of them.
        enrollments = [
            enrollment
            for enrollment in active_enrollments(db, keep_id)
            if side_of_enrollment.get(enrollment["id"], side) != side
            and (enrollment["enrolled_at"] or "") <= event.at
        ]
        if enrollments:
            apply_exit_rules(
                db, workspace, sequence_set, event, clock, enrollments=enrollments
            )


def _move_identifiers(db, keep: dict, other: dict) -> dict:
    keep_id, other_id = keep["id"], other["id"]
    conn = db.conn
    emails = [
        r[0]
        for r in conn.execute(
            "SELECT email FROM contact_emails WHERE contact_id = ? ORDER BY id",
            [other_id],
        )
    ]
    conn.execute(
        "UPDATE contact_emails SET contact_id = ?, is_primary = 0 WHERE contact_id = ?",
        [keep_id, other_id],
    )
    have = {
        r[0]
        for r in conn.execute(
            "SELECT phone FROM contact_phones WHERE contact_id = ?", [keep_id]
        )
    }
    phones = []
    for phone_id, phone in conn.execute(
        "SELECT id, phone FROM contact_phones WHERE contact_id = ? ORDER BY id",
        [other_id],
    ).fetchall():
        if phone in have:
            continue
        conn.execute(
            "UPDATE contact_phones SET contact_id = ?, is_primary = 0 WHERE id = ?",
            [keep_id, phone_id],
        )
        phones.append(phone)
    return {k: v for k, v in {"emails": emails, "phones": phones}.items() if v}


def _merged_fields(keep: dict, other: dict) -> dict:
    """Fields of the kept contact after the merge: its own first, gaps filled."""
    fields: dict = {}
    keep_name = " ".join(p for p in (keep["first_name"], keep["last_name"]) if p)
    other_name = " ".join(p for p in (other["first_name"], other["last_name"]) if p)
    if other_name and (
        not keep_name
        or is_variant_of(keep_name, other_name)
        and name_quality(other_name) > name_quality(keep_name)
    ):
        fields["first_name"], fields["last_name"] = (
            other["first_name"],
            other["last_name"],
        )
    for name in ("company", "email", "phone", "source", "timezone", "region"):
        if not keep[name] and other[name]:
            fields[name] = other[name]
    custom = {**other["custom"], **keep["custom"]}
    if custom != keep["custom"]:
        fields["custom"] = custom
    names = {**keep, **fields}
    shown = display_name(
        names["first_name"] or "", names["last_name"] or "", names["company"] or ""
    )
    if shown != keep["display_name"]:
        fields["display_name"] = shown
    return fields
