"""Import batches: recording them, listing them, and undoing one.

Undo removes the contacts a batch created and reverts the fields and
identifiers it changed on existing contacts. It refuses, naming the contacts
and the reason, where later activity depends on the batch: a created contact
the person, the staff or a later import did something with (a message either
way, a form, a booking, a payment, a manual stage move, ...), or a field
someone has changed again since the import, or a contact it created or
changed that has since been merged into another or erased (what the batch
wrote about it lives on elsewhere, or is gone). The engine's own bookkeeping
(sequence and step decisions, automatic stage moves) and an undo's own
records are no such activity. A created contact that is opted out or bouncing
is always kept and reported: undo never removes an opt-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cxm_cli import clock as clocks
from cxm_cli.errors import CxmError, InputError, NotFound
from cxm_cli.events import record_event
from cxm_cli.store import dumps, fetch_one, loads, write_transaction

log = logging.getLogger(__name__)

# Events an import writes on an existing contact, removed again by undo.
IMPORT_EVENT_TYPES = (
    "contact.merged",
    "form.submitted",
    "appointment.booked",
    "appointment.cancelled",
    "tag.added",
)

# Sources of stage.changed events no person caused: a pipeline rule
# ("rule:N") or a sequence's move_stage step ("sequence:NAME").
AUTOMATIC_MOVE_SOURCES = ("rule", "sequence")

# Later events on a created contact that do not block its removal: what the
# engine wrote about its own work (sequence.*, step.* but a sent step,
# automatic stage moves, a sequence step's tags) and what an undo of another
# batch wrote.
_NOT_ACTIVITY = (
    "(type LIKE 'sequence.%'"
    " OR (type LIKE 'step.%' AND type != 'step.sent')"
    " OR (type = 'stage.changed' AND source IN (SELECT value FROM json_each(?)))"
    " OR (type IN ('tag.added', 'tag.removed') AND source = 'runner')"
    " OR (type = 'contact.updated'"
    "   AND json_extract(data, '$.undone_batch') IS NOT NULL))"
)

PARTLY_UNDONE = "partly undone"


def start_batch(
    db, *, file: str, format: str, encoding: str | None, options: dict, clock
):
    cursor = db.conn.execute(
        "INSERT INTO import_batches (file, format, encoding, status, options,"
        " started_at,"
        " first_event_id) VALUES (?, ?, ?, 'running', ?, ?,"
        " (SELECT COALESCE(MAX(id), 0) + 1 FROM events))",
        [file, format, encoding, dumps(options), clocks.now_iso(clock)],
    )
    return cursor.lastrowid


def finish_batch(
    db, batch_id: int, counts: dict, *, rejects_path: str | None, clock
) -> None:
    db.conn.execute(
        "UPDATE import_batches SET status = 'complete', records = ?, created = ?,"
        " updated = ?, unchanged = ?, rejected = ?, skipped = ?, rejects_path = ?,"
        " finished_at = ?, last_event_id = (SELECT COALESCE(MAX(id), 0) FROM events)"
        " WHERE id = ?",
        [
            counts["records"],
            counts["created"],
            counts["updated"],
            counts["unchanged"],
            counts["rejected"],
            counts["skipped"],
            rejects_path,
            clocks.now_iso(clock),
            batch_id,
        ],
    )


def list_batches(db, *, limit: int = 50) -> list[dict]:
    return list(
        db.query(
            "SELECT id, file, format, status, records, created, updated, unchanged,"
            " rejected, skipped, started_at, undone_at, rejects_path"
            " FROM import_batches ORDER BY id DESC LIMIT ?",
            [limit],
        )
    )


def parse_batch_id(text: str) -> int:
    cleaned = str(text).strip().lstrip("#").lower().removeprefix("batch").strip("-")
    if not cleaned.isdigit():
        raise InputError(f"{text!r} is not a batch id", hint="see: cxm leads batches")
    return int(cleaned)


@dataclass
class UndoResult:
    batch_id: int
    removed_contacts: int = 0
    reverted_contacts: int = 0
    kept: list[dict] = field(default_factory=list)  # what could not be undone, why
    status: str = "undone"  # or "partly undone": --keep-blocked kept some


def undo_batch(
    db, batch_ref: str | int, *, clock, keep_blocked: bool = False
) -> UndoResult:
    """Revert one batch in one transaction; refuse if anything depends on it.

    With ``keep_blocked`` the parts nothing depends on are undone and the rest
    is kept and reported.
    """
    batch_id = parse_batch_id(str(batch_ref))
    with write_transaction(db):
        batch = fetch_one(db, "SELECT * FROM import_batches WHERE id = ?", [batch_id])
        if batch is None:
            raise NotFound(f"no import batch {batch_id}", hint="see: cxm leads batches")
        if batch["status"] != "complete":
            already = (
                "what is left of it is kept"
                if batch["status"] == PARTLY_UNDONE
                else "nothing to undo"
            )
            raise CxmError(f"batch {batch_id} is {batch['status']}, {already}")

        last_event = batch["last_event_id"] or 0
        first_event = batch["first_event_id"] or 0
        changes = list(
            db.query(
                "SELECT * FROM import_changes WHERE batch_id = ? ORDER BY id DESC",
                [batch_id],
            )
        )
        result = UndoResult(batch_id)
        # Opt-outs first: such a contact is kept whatever else happened to it,
        # and that is the reason to give.
        opted_out = _opted_out_created(db, batch_id)
        opted_out_ids = {k["contact_id"] for k in opted_out}
        blocked = _gone(db, changes) + _blockers(
            db, changes, last_event, skip=opted_out_ids
        )
        if blocked and not keep_blocked:
            raise CxmError(
                f"batch {batch_id} cannot be undone: {_listed(blocked)}",
                hint="undo the rest with --keep-blocked, or leave the batch as it is",
            )
        result.kept = blocked + opted_out
        kept_ids = opted_out_ids | {b["contact_id"] for b in blocked}
        undoable = [
            change for change in changes if change["contact_id"] not in kept_ids
        ]
        erased = _erased_since(batch, changes)
        if blocked and not undoable:
            raise CxmError(
                f"batch {batch_id}: nothing can be undone, every contact it "
                f"touched is kept: {_listed(result.kept)}",
                hint="leave the batch as it is",
            )
        if erased and not changes:
            raise CxmError(
                f"batch {batch_id}: nothing can be undone, the {erased} "
                f"contact{'' if erased == 1 else 's'} it created "
                f"{'was' if erased == 1 else 'were'} erased since the import",
                hint="leave the batch as it is",
            )

        for change in undoable:
            contact_id = change["contact_id"]
            if change["action"] == "created":
                db.conn.execute("DELETE FROM contacts WHERE id = ?", [contact_id])
                result.removed_contacts += 1
            else:
                _revert(
                    db, change, first_event, last_event, clock=clock, batch_id=batch_id
                )
                result.reverted_contacts += 1

        # A kept contact keeps its timeline events, so the records that say
        # they are there stay too (importing the file again adds none twice);
        # a merge moved those of a merged contact to the one it went into.
        holders = {k["merged_into"] for k in blocked if "merged_into" in k}
        db.conn.execute(
            "DELETE FROM import_records WHERE batch_id = ? AND contact_id NOT IN"
            " (SELECT value FROM json_each(?))",
            [batch_id, dumps(sorted(kept_ids | holders))],
        )
        # Opt-outs are kept by every undo; contacts kept for later activity or
        # merged away since (--keep-blocked) leave part of the batch in place.
        result.status = PARTLY_UNDONE if blocked else "undone"
        db.conn.execute(
            "UPDATE import_batches SET status = ?, undone_at = ? WHERE id = ?",
            [result.status, clocks.now_iso(clock), batch_id],
        )
    log.info(
        "undid batch %s: %d removed, %d reverted, %d kept, %d erased before",
        batch_id,
        result.removed_contacts,
        result.reverted_contacts,
        len(result.kept),
        erased,
    )
    return result


def _erased_since(batch: dict, changes: list[dict]) -> int:
    """How many contacts the batch created were erased since: an erasure
    deletes the person's records of the import too, so only the count is left.

    Limitation: an undo that removes the rest of a batch does not list the
    contacts of it erased meanwhile (no id is left to name); it only logs
    their number.
    """
    created = {c["contact_id"] for c in changes if c["action"] == "created"}
    return max(0, (batch["created"] or 0) - len(created))


def _gone(db, changes: list[dict]) -> list[dict]:
    """Contacts the batch created or changed that no longer exist: merged
    into another contact (which holds what the batch wrote) or erased since.
    Nothing of them can be undone, which is said rather than passed over."""
    gone: list[dict] = []
    seen: set[int] = set()
    for change in changes:
        contact_id = change["contact_id"]
        if contact_id in seen or _exists(db, contact_id):
            continue
        seen.add(contact_id)
        into = _merged_into(db, contact_id)
        if into is None:
            gone.append({"contact_id": contact_id, "reason": "no longer exists"})
            continue
        gone.append(
            {
                "contact_id": contact_id,
                "reason": f"merged into contact {into} since the import",
                "merged_into": into,
            }
        )
    return sorted(gone, key=lambda k: k["contact_id"])


def _merged_into(db, contact_id: int) -> int | None:
    """The contact that now holds ``contact_id``'s record, following later
    merges of the contact it was merged into; None when it was not merged."""
    holder = None
    followed = {contact_id}
    while True:
        row = db.conn.execute(
            "SELECT contact_id FROM events WHERE type = 'contact.merged'"
            " AND json_extract(data, '$.merged_contact') = ?"
            " ORDER BY id DESC LIMIT 1",
            [contact_id],
        ).fetchone()
        if row is None or row[0] is None or row[0] in followed:
            return holder
        holder = contact_id = row[0]
        if _exists(db, holder):
            return holder
        followed.add(holder)


def _exists(db, contact_id: int) -> bool:
    return (
        db.conn.execute("SELECT 1 FROM contacts WHERE id = ?", [contact_id]).fetchone()
        is not None
    )


def _listed(kept: list[dict]) -> str:
    sample = "; ".join(f"contact {k['contact_id']}: {k['reason']}" for k in kept[:5])
    more = f" (and {len(kept) - 5} more)" if len(kept) > 5 else ""
    return sample + more


def _opted_out_created(db, batch_id: int) -> list[dict]:
    """Contacts the batch created that are opted out or bouncing: undo keeps
    them, since deleting one would let a later import bring the person back
    with nothing to stop a message."""
    rows = db.query(
        "SELECT DISTINCT c.contact_id,"
        " EXISTS (SELECT 1 FROM consents WHERE contact_id = c.contact_id"
        "   AND status = 'opted_out') AS opted_out"
        " FROM import_changes c"
        " WHERE c.batch_id = ? AND c.action = 'created' AND ("
        "   EXISTS (SELECT 1 FROM consents WHERE contact_id = c.contact_id"
        "     AND status = 'opted_out')"
        "   OR EXISTS (SELECT 1 FROM contact_emails WHERE contact_id = c.contact_id"
        "     AND status = 'bouncing'))"
        " ORDER BY c.contact_id",
        [batch_id],
    )
    return [
        {
            "contact_id": row["contact_id"],
            "reason": "opted out: an undo never removes an opt-out"
            if row["opted_out"]
            else "address bouncing: an undo never removes a suppression",
        }
        for row in rows
    ]


def _blockers(
    db, changes: list[dict], last_event: int, *, skip: set[int]
) -> list[dict]:
    blocked: list[dict] = []
    seen: set[int] = set(skip)
    for change in changes:
        contact_id = change["contact_id"]
        if contact_id in seen or not _exists(db, contact_id):
            continue
        if change["action"] == "created":
            reason = _later_activity(db, contact_id, last_event)
            if reason:
                seen.add(contact_id)
                blocked.append({"contact_id": contact_id, "reason": reason})
            continue
        after = loads(change["after"], {})
        current = (
            fetch_one(db, "SELECT * FROM contacts WHERE id = ?", [contact_id]) or {}
        )
        for name, value in after.items():
            written = dumps(value) if name == "custom" else value
            if current.get(name) != written:
                seen.add(contact_id)
                blocked.append(
                    {
                        "contact_id": contact_id,
                        "reason": f"{name} changed since the import",
                    }
                )
                break
    return blocked


def _later_activity(db, contact_id: int, last_event: int) -> str | None:
    """Why a contact the batch created must stay, or None: the first thing
    since the batch that the person or the staff did, or that went out to the
    person."""
    later = fetch_one(
        db,
        "SELECT id, type, at FROM events WHERE contact_id = ? AND id > ?"
        f" AND NOT {_NOT_ACTIVITY} ORDER BY id LIMIT 1",
        [contact_id, last_event, dumps(list(AUTOMATIC_MOVE_SOURCES))],
    )
    if later:
        by_batch = fetch_one(
            db,
            "SELECT id FROM import_batches WHERE status = 'complete'"
            " AND ? BETWEEN first_event_id AND last_event_id",
            [later["id"]],
        )
        if by_batch:
            return (
                f"later activity ({later['type']} by import batch {by_batch['id']}:"
                " undo that batch first)"
            )
        return f"later activity ({later['type']} at {later['at']})"
    # A message row is written before the provider is called: one left
    # 'sending' by a crash may have reached the person.
    message = fetch_one(
        db,
        "SELECT id, status, at FROM messages WHERE contact_id = ?"
        " AND status != 'failed' ORDER BY id LIMIT 1",
        [contact_id],
    )
    if message:
        return f"later activity (message {message['id']} {message['status']})"
    return None


# Limitation: on a contact that existed before the batch, undo reverts what the
# import wrote (fields, identifiers, tags, its own events) but not what event
# hooks did in reaction (a pipeline stage moved by a form.submitted rule, a
# sequence enrolment); those stay, as do opt-outs the batch recorded.
def _revert(
    db, change: dict, first_event: int, last_event: int, *, clock, batch_id
) -> None:
    contact_id = change["contact_id"]
    before = loads(change["before"], {})
    added = loads(change["added"], {})
    conn = db.conn
    if before:
        assignments = ", ".join(f"{name} = ?" for name in before)
        values = [
            dumps(v)
            if name == "custom" and v is not None and not isinstance(v, str)
            else v
            for name, v in before.items()
        ]
        conn.execute(
            f"UPDATE contacts SET {assignments}, updated_at = ? WHERE id = ?",
            [*values, clocks.now_iso(clock), contact_id],
        )
    for email in added.get("emails", []):
        conn.execute(
            "DELETE FROM contact_emails WHERE contact_id = ? AND email = ?",
            [contact_id, email],
        )
    for phone in added.get("phones", []):
        conn.execute(
            "DELETE FROM contact_phones WHERE contact_id = ? AND phone = ?",
            [contact_id, phone],
        )
    for tag in added.get("tags", []):
        conn.execute(
            "DELETE FROM contact_tags WHERE contact_id = ? AND tag = ?",
            [contact_id, tag],
        )
    marks = ",".join("?" * len(IMPORT_EVENT_TYPES))
    conn.execute(
        "DELETE FROM events WHERE contact_id = ? AND id BETWEEN ? AND ?"
        f" AND type IN ({marks})",
        [contact_id, first_event, last_event, *IMPORT_EVENT_TYPES],
    )
    record_event(
        db,
        contact_id,
        "contact.updated",
        clock=clock,
        data={"undone_batch": batch_id, "fields": sorted(before), **added},
        source="import",
    )
