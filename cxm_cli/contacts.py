"""Contacts: finding them, and their current state (tags, consent).

Creating and merging contacts from files is the importer's job
(``cxm_cli/importing``); this module holds what every part of cxm needs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.errors import NotFound
from cxm_cli.events import record_event
from cxm_cli.store import dumps, fetch_one, loads, write_transaction

log = logging.getLogger(__name__)

CHANNELS_WITH_CONSENT = ("email", "sms")


def get_contact(db, contact_id: int) -> dict[str, Any]:
    row = fetch_one(db, "SELECT * FROM contacts WHERE id = ?", [contact_id])
    if row is None:
        raise NotFound(f"no contact with id {contact_id}")
    row["custom"] = loads(row["custom"], {})
    return row


def find_contact(db, reference: str, *, region: str = "US") -> dict[str, Any]:
    """Find a contact by id, email or phone, as a user would type any of them."""
    reference = str(reference).strip()
    if reference.isdigit() and len(reference) < 9:
        return get_contact(db, int(reference))

    if "@" in reference:
        row = fetch_one(
            db,
            "SELECT contact_id FROM contact_emails WHERE email = ?",
            [reference.lower()],
        )
        if row:
            return get_contact(db, row["contact_id"])
        raise NotFound(f"no contact with email {reference}")

    phone = normalise_phone_loosely(reference, region)
    if phone:
        rows = list(
            db.query(
                "SELECT DISTINCT contact_id FROM contact_phones WHERE phone = ?",
                [phone],
            )
        )
        if len(rows) == 1:
            return get_contact(db, rows[0]["contact_id"])
        if len(rows) > 1:
            ids = ", ".join(str(r["contact_id"]) for r in rows)
            raise NotFound(
                f"phone {phone} belongs to several contacts ({ids})",
                hint="name the contact by id or email instead",
            )
    raise NotFound(
        f"no contact matches {reference!r}", hint="use an id, email or phone"
    )


def normalise_phone_loosely(text: str, region: str) -> str | None:
    """E.164 for a phone typed on the command line, or None."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def contact_tags(db, contact_id: int) -> list[str]:
    return [
        row["tag"]
        for row in db.query(
            "SELECT tag FROM contact_tags WHERE contact_id = ? ORDER BY tag",
            [contact_id],
        )
    ]


def add_tag(db, contact_id: int, tag: str, *, clock, source: str = "cli") -> bool:
    """Tag a contact; records ``tag.added`` only when the tag is new."""
    existing = fetch_one(
        db,
        "SELECT 1 AS x FROM contact_tags WHERE contact_id = ? AND tag = ?",
        [contact_id, tag],
    )
    if existing:
        return False
    db["contact_tags"].insert(
        {"contact_id": contact_id, "tag": tag, "created_at": clocks.now_iso(clock)}
    )
    record_event(
        db, contact_id, "tag.added", clock=clock, data={"tag": tag}, source=source
    )
    return True


def remove_tag(db, contact_id: int, tag: str, *, clock, source: str = "cli") -> bool:
    cursor = db.execute(
        "DELETE FROM contact_tags WHERE contact_id = ? AND tag = ?", [contact_id, tag]
    )
    if cursor.rowcount == 0:
        return False
    record_event(
        db, contact_id, "tag.removed", clock=clock, data={"tag": tag}, source=source
    )
    return True


def consent_status(db, contact_id: int, channel: str) -> str | None:
    row = fetch_one(
        db,
        "SELECT status FROM consents WHERE contact_id = ? AND channel = ?",
        [contact_id, channel],
    )
    return row["status"] if row else None


def is_opted_out(db, contact_id: int, channel: str) -> bool:
    return consent_status(db, contact_id, channel) == "opted_out"


def set_consent(
    db,
    contact_id: int,
    channel: str,
    status: str,
    *,
    clock,
    source: str,
    at: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Record an opt-out or opt-in; returns False when nothing changed.

    Every change is an ``opted_out`` / ``opted_in`` event carrying its source
    and time, so the business can prove consent later.
    """
    if status not in ("opted_in", "opted_out"):
        raise ValueError(f"unknown consent status {status!r}")
    if consent_status(db, contact_id, channel) == status:
        return False

    changed_at = at or clocks.now_iso(clock)
    db["consents"].upsert(
        {
            "contact_id": contact_id,
            "channel": channel,
            "status": status,
            "source": source,
            "changed_at": changed_at,
        },
        pk=("contact_id", "channel"),
    )
    record_event(
        db,
        contact_id,
        status,
        clock=clock,
        at=changed_at,
        data={"channel": channel, **(detail or {})},
        source=source,
    )
    log.info("contact %s %s on %s (source %s)", contact_id, status, channel, source)
    return True


def change_consent(
    db,
    contact_id: int,
    channel: str,
    status: str,
    *,
    clock,
    source: str,
    at: str | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """:func:`set_consent` for one person, and an opt-out's pending steps go.

    For opt-outs a person asked for by name (a form, a script, staff);
    texts from a phone go through :func:`opt_out_phone` instead.
    """
    with write_transaction(db):
        changed = set_consent(
            db,
            contact_id,
            channel,
            status,
            clock=clock,
            source=source,
            at=at,
            detail=detail,
        )
        if status == "opted_out":
            _cancel_pending(
                db, contact_id, channel, clock=clock, reason=f"opted out ({source})"
            )
    return changed


def contacts_with_phone(db, phone: str) -> list[int]:
    """Every contact holding ``phone`` (E.164): a household may share one."""
    return [
        row["contact_id"]
        for row in db.query(
            "SELECT contact_id FROM contact_phones WHERE phone = ? "
            "UNION SELECT id FROM contacts WHERE phone = ? ORDER BY 1",
            [phone, phone],
        )
    ]


def opt_out_phone(
    db,
    phone: str | None,
    *,
    clock,
    source: str,
    detail: dict[str, Any] | None = None,
    at: str | None = None,
    contact_id: int | None = None,
    reason: str = "opted out by SMS",
) -> dict[int, int]:
    """Opt out of SMS everyone who holds ``phone``; returns ``{id: cancelled}``.

    Carriers track opt-outs per number, so a STOP from a shared household
    phone (or the provider's "unsubscribed recipient" error) stops texts to
    every contact on it. Each gets an ``opted_out`` event carrying the number
    and ``detail`` (keyword, message id, error code), and their pending SMS
    steps are cancelled. ``contact_id`` is included even when the number is
    not on file for it (a STOP recorded by contact id). ``source`` should be
    one of :data:`PHONE_OPT_OUT_SOURCES` ("sms_keyword", "provider"): that is
    what later marks the opt-out as the number's. The answer maps each
    holder's id to how many of their pending steps were cancelled.
    """
    holders = _phone_holders(db, phone, contact_id)
    data = {**({"phone": phone} if phone else {}), **(detail or {})}
    cancelled: dict[int, int] = {}
    with write_transaction(db):
        for holder in holders:
            set_consent(
                db,
                holder,
                "sms",
                "opted_out",
                clock=clock,
                source=source,
                at=at,
                detail=data,
            )
            cancelled[holder] = _cancel_pending(
                db, holder, "sms", clock=clock, reason=reason
            )
    log.info("sms opt-out for %s contact(s) sharing a phone", len(holders))
    return cancelled


def opt_in_phone(
    db,
    phone: str | None,
    *,
    clock,
    source: str,
    detail: dict[str, Any] | None = None,
    at: str | None = None,
    contact_id: int | None = None,
) -> list[int]:
    """Undo :func:`opt_out_phone` (START/UNSTOP); returns who changed.

    Every holder of the number whose SMS opt-out came from the number (a
    keyword, the provider) is opted back in, and ``contact_id`` (the person
    the text was matched to) in any case. Someone who asked staff or a form
    to stop texting them stays opted out: START from a shared phone is not
    their word.
    """
    data = {**({"phone": phone} if phone else {}), **(detail or {})}
    changed = []
    with write_transaction(db):
        for holder in _phone_holders(db, phone, contact_id):
            if holder != contact_id and not _opted_out_by_phone(db, holder):
                continue
            if set_consent(
                db,
                holder,
                "sms",
                "opted_in",
                clock=clock,
                source=source,
                at=at,
                detail=data,
            ):
                changed.append(holder)
    return changed


# Consent sources that speak for a phone number rather than for one person:
# a carrier keyword, the provider's "unsubscribed" error, and their copies.
PHONE_OPT_OUT_SOURCES = ("sms_keyword", "provider", "shared_phone")


def phone_opted_out(db, phone: str) -> bool:
    """Whether ``phone`` itself has opted out of texts (STOP, carrier error)."""
    marks = ", ".join("?" for _ in PHONE_OPT_OUT_SOURCES)
    return (
        fetch_one(
            db,
            "SELECT 1 AS x FROM consents c "
            "JOIN contact_phones p ON p.contact_id = c.contact_id "
            "WHERE p.phone = ? AND c.channel = 'sms' AND c.status = 'opted_out' "
            f"AND c.source IN ({marks}) LIMIT 1",
            [phone, *PHONE_OPT_OUT_SOURCES],
        )
        is not None
    )


def _opted_out_by_phone(db, contact_id: int) -> bool:
    row = fetch_one(
        db,
        "SELECT status, source FROM consents WHERE contact_id = ? AND channel = 'sms'",
        [contact_id],
    )
    return bool(
        row and row["status"] == "opted_out" and row["source"] in PHONE_OPT_OUT_SOURCES
    )


def inherit_phone_opt_out(db, contact_id: int, phone: str | None, *, clock) -> bool:
    """Opt a contact out of SMS when a phone just given to it had opted out.

    Someone new on a household phone that texted STOP must not be texted
    either. Call after adding the phone row; returns True when it opted out.
    """
    if not phone or is_opted_out(db, contact_id, "sms"):
        return False
    if not phone_opted_out(db, phone):
        return False
    return set_consent(
        db,
        contact_id,
        "sms",
        "opted_out",
        clock=clock,
        source="shared_phone",
        detail={"phone": phone, "reason": "this phone had opted out of texts"},
    )


def _phone_holders(db, phone: str | None, contact_id: int | None) -> list[int]:
    holders = contacts_with_phone(db, phone) if phone else []
    if contact_id is not None and contact_id not in holders:
        holders.append(contact_id)
    return holders


def _cancel_pending(db, contact_id: int, channel: str, *, clock, reason: str) -> int:
    # The queue belongs to the engine, which imports this module: import late.
    from cxm_cli.engine import cancel_pending_steps

    return int(
        cancel_pending_steps(
            db, contact_id, channel=channel, clock=clock, reason=reason
        )
        or 0
    )


# The runner hashes each address of a batch several times (the consent read,
# each check, the recheck under the write lock).
@functools.lru_cache(maxsize=4096)
def identifier_hash(value: str) -> str:
    """One-way hash of a normalised email or phone, for suppression lists."""
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


def is_suppressed(db, value: str) -> bool:
    return (
        fetch_one(
            db,
            "SELECT 1 AS x FROM suppressions WHERE identifier_hash = ?",
            [identifier_hash(value)],
        )
        is not None
    )


def update_custom(db, contact_id: int, values: dict[str, Any], *, clock) -> None:
    contact = get_contact(db, contact_id)
    merged = {**contact["custom"], **values}
    db["contacts"].update(
        contact_id, {"custom": dumps(merged), "updated_at": clocks.now_iso(clock)}
    )
