"""What people send back: recording inbound messages, keywords and statuses.

Every inbound message, whatever door it came through (the SMS webhook, the IMAP
poller, ``cxm inbox record``, ``POST /events``), goes through
:func:`record_inbound`: one ``messages`` row, one ``message.received`` event
(which the engine's exit rules listen to), at most once per provider id.

SMS keywords follow the carriers' rules: a text that is nothing but an opt-out
keyword opts the person out of SMS at once and cancels their pending SMS steps;
START/YES/UNSTOP opt back in; HELP/INFO get the configured help reply. A text
that merely *reads* like an opt-out is flagged for a person to decide, because
guessing wrong either way is worse than asking.
"""

from __future__ import annotations

import importlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import tracking  # noqa: F401  (registers the email-links decorator)
from cxm_cli.contacts import (
    find_contact,
    get_contact,
    inherit_phone_opt_out,
    is_opted_out,
    normalise_phone_loosely,
    opt_in_phone,
    opt_out_phone,
    phone_opted_out,
    set_consent,
)
from cxm_cli.errors import CxmError, InputError, NotFound
from cxm_cli.events import record_event
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# The whole text is one word, with only spaces, punctuation or symbols around it.
_SINGLE_WORD = re.compile(r"[\W_]*([^\W\d_]+)[\W_]*")

# Sentences that sound like "leave me alone" without being a carrier keyword.
_OPT_OUT_LIKE = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\bstop\s+(?:texting|txting|messaging|sending|contacting|emailing|calling)",
        r"\b(?:don'?t|do\s+not|never)\s+(?:text|txt|message|email|contact|call)",
        r"\bno\s+more\s+(?:texts?|messages?|emails?|calls?)",
        r"\bunsubscribe\b",
        r"\bopt(?:ing)?[\s-]*out\b",
        r"\bremove\s+me\b",
        r"\btake\s+me\s+off\b",
        r"\bleave\s+me\s+alone\b",
        r"\bwrong\s+number\b",
        r"\bstop\s*(?:it|now|please)?\s*[.!]*$",
    )
]

DEFAULT_HELP_REPLY = (
    "{business}: reply to this number to reach our team. "
    "Msg & data rates may apply. Reply STOP to opt out."
)

# Delivery statuses in the order a message moves through them; a callback
# that would move a message back to an earlier status is ignored.
STATUS_RANK = {
    "pending": 0,
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "bounced": 4,
    "canceled": 4,
    "read": 5,
}
# Twilio: "Attempt to send to unsubscribed recipient".
PROVIDER_OPT_OUT_CODES = frozenset({"21610"})


@dataclass
class InboundResult:
    message_id: int
    contact_id: int
    event_id: int | None
    duplicate: bool = False
    created_contact: bool = False
    # reply | opt_out | opt_in | help | auto_reply | keyword_answer
    kind: str = "reply"
    keyword: str | None = None
    flag: str | None = None
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "event_id": self.event_id,
            "duplicate": self.duplicate,
            "created_contact": self.created_contact,
            "kind": self.kind,
            "keyword": self.keyword,
            "flag": self.flag,
            "actions": list(self.actions),
        }


def sms_keyword(text: str | None) -> tuple[str, str] | None:
    """``(kind, KEYWORD)`` when the whole text is a carrier keyword, else None.

    Full-width letters and accents typed by phone keyboards are folded first,
    so "ＳＴＯＰ" and " stop! " both count.
    """
    if not text:
        return None
    folded = unicodedata.normalize("NFKC", text).strip()
    match = _SINGLE_WORD.fullmatch(folded)
    if not match:
        return None
    word = match.group(1).upper()
    if word in OPT_OUT_KEYWORDS:
        return "opt_out", word
    if word in OPT_IN_KEYWORDS:
        return "opt_in", word
    if word in HELP_KEYWORDS:
        return "help", word
    return None


def reads_like_opt_out(text: str | None) -> bool:
    """True for texts a person should read before anyone writes back."""
    if not text:
        return False
    folded = unicodedata.normalize("NFKC", text).strip()
    if any(pattern.search(folded) for pattern in _OPT_OUT_LIKE):
        return True
    # "STOP STOP", "stop all", "Stop pls": short texts led by a keyword.
    words = re.findall(r"[^\W\d_]+", folded.upper())
    return 0 < len(words) <= 3 and words[0] in OPT_OUT_KEYWORDS


def record_inbound(
    workspace,
    db,
    clock,
    *,
    channel: str,
    text: str | None,
    contact_id: int | None = None,
    address: str | None = None,
    subject: str | None = None,
    provider_id: str | None = None,
    thread_id: str | None = None,
    at: str | None = None,
    source: str = "cli",
    kind: str | None = None,
    create_contact: bool = False,
    data: dict[str, Any] | None = None,
) -> InboundResult:
    """Record one inbound message and act on it; idempotent by provider id.

    ``contact_id`` wins; otherwise the contact is found by ``address`` (an
    email or phone), and created when ``create_contact`` is true. ``kind``
    ``auto_reply`` records the message without counting it as a reply (an
    out-of-office), so follow-ups go on.
    """
    channel = channel.strip().lower()
    if not channel:
        raise InputError("an inbound message needs a channel (sms, email, ...)")
    given_at = clocks.iso(clocks.parse(at)) if at else None

    with write_transaction(db):
        # Taken under the write lock, so "recorded at" orders this message
        # against every send: a send stamped later saw the opt-out.
        at_text = given_at or clocks.now_iso(clock)
        if provider_id:
            existing = fetch_one(
                db,
                "SELECT id, contact_id, event_id FROM messages "
                "WHERE channel = ? AND provider_id = ?",
                [channel, provider_id],
            )
            if existing:
                log.info("inbound %s %s already recorded", channel, existing["id"])
                return _duplicate_result(db, existing)

        created = False
        if address:
            email, phone = normalise_address(workspace, address)
            address = email or phone
        if contact_id is not None:
            contact = get_contact(db, contact_id)
        else:
            contact, created = _contact_for_address(
                workspace, db, clock, channel, address, create_contact, source
            )
        if not address:
            address = contact["phone"] if channel == "sms" else contact["email"]

        result = _record(
            workspace,
            db,
            clock,
            contact=contact,
            channel=channel,
            text=text,
            address=address,
            subject=subject,
            provider_id=provider_id,
            thread_id=thread_id,
            at_text=at_text,
            source=source,
            kind=kind,
            data=data or {},
        )
        result.created_contact = created

    if result.kind == "help":
        _send_help_reply(workspace, db, clock, result)
    return result


def _record(
    workspace,
    db,
    clock,
    *,
    contact: dict,
    channel: str,
    text: str | None,
    address: str | None,
    subject: str | None,
    provider_id: str | None,
    thread_id: str | None,
    at_text: str,
    source: str,
    kind: str | None,
    data: dict[str, Any],
) -> InboundResult:
    contact_id = contact["id"]
    phone = address if channel == "sms" and address and "@" not in address else None
    keyword = None
    if kind is None:
        kind = "reply"
        found = sms_keyword(text) if channel == "sms" else None
        if found:
            kind, keyword = found
            # YES is also an ordinary answer ("Yes, Tuesday works"); it only
            # opts back in a phone that had opted out.
            if kind == "opt_in" and not _phone_opted_out(db, contact_id, phone):
                kind, keyword = "reply", None
    flag = "possible_opt_out" if kind == "reply" and reads_like_opt_out(text) else None

    message_id = (
        db["messages"]
        .insert(
            {
                "contact_id": contact_id,
                "channel": channel,
                "direction": "inbound",
                "address": address,
                "subject": subject,
                "body": text,
                "status": "auto_reply" if kind == "auto_reply" else "received",
                "provider_id": provider_id,
                "thread_id": thread_id or _default_thread(channel, address),
                "at": at_text,
            }
        )
        .last_pk
    )
    db["inbound_messages"].insert(
        {
            "message_id": message_id,
            "contact_id": contact_id,
            "kind": kind,
            "keyword": keyword,
            "flag": flag,
            "created_at": clocks.now_iso(clock),
        }
    )

    event_data = {"message_id": message_id, "channel": channel, **data}
    if keyword:
        event_data["keyword"] = keyword
    if flag:
        event_data["flag"] = flag
    event_type = "message.auto_reply" if kind == "auto_reply" else "message.received"
    event = record_event(
        db,
        contact_id,
        event_type,
        clock=clock,
        at=at_text,
        data=event_data,
        source=source,
    )
    db["messages"].update(message_id, {"event_id": event.id})
    if kind == "reply" and _answered_an_offered_keyword(db, contact_id, event.id):
        # "C" to confirm was handled by the engine; nobody needs to answer it.
        kind = "keyword_answer"
        db["inbound_messages"].update(message_id, {"kind": kind})

    result = InboundResult(
        message_id=message_id,
        contact_id=contact_id,
        event_id=event.id,
        kind=kind,
        keyword=keyword,
        flag=flag,
    )
    if kind == "opt_out":
        # Carriers stop the number, not the person: everyone on it opts out.
        cancelled = opt_out_phone(
            db,
            phone,
            clock=clock,
            source="sms_keyword",
            at=at_text,
            contact_id=contact_id,
            detail={"keyword": keyword, "message_id": message_id},
        )
        others = len(cancelled) - 1
        shared = f" with {others} other contact(s) on this phone" if others else ""
        result.actions.append(
            f"opted out of sms{shared}; "
            f"{sum(cancelled.values())} pending steps cancelled"
        )
    elif kind == "opt_in":
        opted_in = opt_in_phone(
            db,
            phone,
            clock=clock,
            source="sms_keyword",
            at=at_text,
            contact_id=contact_id,
            detail={"keyword": keyword, "message_id": message_id},
        )
        others = len([holder for holder in opted_in if holder != contact_id])
        shared = f" with {others} other contact(s) on this phone" if others else ""
        result.actions.append(f"opted back in to sms{shared}")
    if flag:
        result.actions.append("flagged: reads like an opt-out, a person should decide")
    log.info("inbound message %s contact=%s kind=%s", message_id, contact_id, kind)
    return result


def _phone_opted_out(db, contact_id: int, phone: str | None) -> bool:
    if is_opted_out(db, contact_id, "sms"):
        return True
    return bool(phone) and phone_opted_out(db, phone)


def _answered_an_offered_keyword(db, contact_id: int, event_id: int) -> bool:
    return (
        fetch_one(
            db,
            "SELECT 1 AS x FROM events WHERE contact_id = ? AND id > ? "
            "AND source = 'keyword' AND json_extract(data, '$.reply_event_id') = ?",
            [contact_id, event_id, event_id],
        )
        is not None
    )


def _duplicate_result(db, existing: dict) -> InboundResult:
    details = fetch_one(
        db,
        "SELECT kind, keyword, flag FROM inbound_messages WHERE message_id = ?",
        [existing["id"]],
    ) or {"kind": "reply", "keyword": None, "flag": None}
    return InboundResult(
        message_id=existing["id"],
        contact_id=existing["contact_id"],
        event_id=existing["event_id"],
        duplicate=True,
        kind=details["kind"],
        keyword=details["keyword"],
        flag=details["flag"],
    )


def _default_thread(channel: str, address: str | None) -> str | None:
    # Texts with one number are one running conversation.
    if channel == "sms" and address:
        return f"sms:{address}"
    return None


def normalise_address(workspace, address: str) -> tuple[str | None, str | None]:
    """``(email, None)`` or ``(None, E.164 phone)`` for a sender address."""
    if "@" in address:
        return address.strip().lower(), None
    phone = normalise_phone_loosely(address, workspace.phone_region)
    if phone is None:
        raise InputError(f"sender {address!r} is neither an email nor a phone")
    return None, phone


def _contact_for_address(
    workspace, db, clock, channel, address, create_contact, source
) -> tuple[dict, bool]:
    if not address:
        raise InputError("an inbound message needs a contact or a sender address")
    email, phone = normalise_address(workspace, address)

    contact = contact_by_address(db, email=email, phone=phone)
    if contact is not None:
        return contact, False
    if not create_contact:
        raise NotFound(f"no contact with {'email' if email else 'phone'} {address}")
    contact_id = create_minimal_contact(
        db, clock, email=email, phone=phone, source=f"inbound_{channel}"
    )
    return get_contact(db, contact_id), True


def contact_by_address(db, *, email: str | None = None, phone: str | None = None):
    """The contact an email or E.164 phone belongs to, or None.

    A phone shared by a household goes to whoever we last texted at it, else
    to the most recently added of them.
    """
    if email:
        row = fetch_one(
            db,
            "SELECT contact_id FROM contact_emails WHERE email = ?",
            [email.strip().lower()],
        )
        if row:
            return get_contact(db, row["contact_id"])
    if phone:
        row = fetch_one(
            db,
            "SELECT p.contact_id FROM contact_phones p "
            "LEFT JOIN messages m ON m.contact_id = p.contact_id "
            "  AND m.channel = 'sms' AND m.address = p.phone "
            "WHERE p.phone = ? "
            "GROUP BY p.contact_id ORDER BY MAX(m.at) DESC, p.contact_id DESC",
            [phone],
        )
        if row:
            return get_contact(db, row["contact_id"])
    return None


def create_minimal_contact(
    db,
    clock,
    *,
    email: str | None = None,
    phone: str | None = None,
    extension: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    display_name: str | None = None,
    source: str,
    event_data: dict[str, Any] | None = None,
    origin: str = "lead.created",
) -> int:
    """Create a contact from what an inbound message or web form tells us.

    Records ``lead.created`` so the contact has an origin on its timeline and
    the new-lead sequences see them like any other lead. ``extension``: the
    phone's, if it has one (a switchboard line: never texted). ``origin``
    ``contact.imported`` makes a plain contact instead (someone cxm learns of
    from an opt-out or a bounce, not a person reaching out), as an import of
    existing contacts does; None records no origin (the caller's own event
    is one).
    """
    now = clocks.now_iso(clock)
    name = display_name or " ".join(p for p in (first_name, last_name) if p) or None
    contact_id = (
        db["contacts"]
        .insert(
            {
                "display_name": name,
                "first_name": first_name,
                "last_name": last_name,
                "email": email,
                "phone": phone,
                "source": source,
                "custom": "{}",
                "created_at": now,
                "updated_at": now,
            }
        )
        .last_pk
    )
    if email:
        db["contact_emails"].insert(
            {
                "contact_id": contact_id,
                "email": email,
                "is_primary": 1,
                "created_at": now,
            }
        )
    if phone:
        db["contact_phones"].insert(
            {
                "contact_id": contact_id,
                "phone": phone,
                "extension": extension or None,
                "kind": "mobile" if source == "inbound_sms" else None,
                "is_primary": 1,
                "created_at": now,
            }
        )
        inherit_phone_opt_out(db, contact_id, phone, clock=clock)
    if origin == "contact.imported":
        event_data = {"existing": True, **(event_data or {})}
    if origin is not None:
        record_event(
            db,
            contact_id,
            origin,
            clock=clock,
            data={"source": source, **(event_data or {})},
            source=source,
        )
    return contact_id


def cancel_pending_steps(
    db, contact_id: int, *, channel: str, clock, reason: str
) -> int:
    """Cancel the contact's queued steps on ``channel``; returns how many.

    The queue belongs to the engine, so its own function does the work.
    """
    for module_name in ("cxm_cli.engine", "cxm_cli.queue"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        cancel = getattr(module, "cancel_pending_steps", None)
        if cancel is not None:
            return int(
                cancel(db, contact_id, channel=channel, clock=clock, reason=reason) or 0
            )
    # Limitation: without the engine's cancel function nothing is cancelled
    # here; the consent check at send time still stops every later message.
    log.warning("no engine cancel function; contact %s steps left queued", contact_id)
    return 0


def help_reply_text(workspace) -> str:
    template = str(workspace.setting("inbound.help_reply", DEFAULT_HELP_REPLY))
    return template.replace("{business}", workspace.business_name)


def _send_help_reply(workspace, db, clock, result: InboundResult) -> None:
    """Answer HELP/INFO with the configured text.

    Limitation: carriers expect a HELP answer even to an opted-out number, but
    it goes through send_message's consent check, so an opted-out person who
    texts HELP gets no answer (the keyword is still on their timeline).
    """
    from cxm_cli.messaging import send_message

    if db.conn.in_transaction:
        # Limitation: recorded inside a caller's transaction, HELP gets no
        # automatic answer (a provider call must not hold the write lock).
        log.warning(
            "HELP from contact %s not answered: in a transaction", result.contact_id
        )
        return
    try:
        send_message(
            workspace,
            db,
            clock,
            result.contact_id,
            "sms",
            text=help_reply_text(workspace),
            source="inbound",
            automated=True,
        )
    except CxmError as exc:
        # The keyword is recorded either way; a failed reply is not a lost message.
        log.warning("HELP reply to contact %s not sent: %s", result.contact_id, exc)
        return
    result.actions.append("sent the help reply")


def record_status(
    db,
    clock,
    *,
    channel: str,
    provider_id: str,
    status: str,
    error_code: str | None = None,
    source: str = "provider",
) -> dict[str, Any]:
    """Apply a provider's delivery status to an outbound message.

    Callbacks arrive late, twice, or out of order: a status earlier in the
    message's life than the one it has is ignored, and a repeat records nothing.
    """
    status = status.strip().lower()
    with write_transaction(db):
        message = fetch_one(
            db,
            "SELECT id, contact_id, status, address FROM messages "
            "WHERE channel = ? AND provider_id = ?",
            [channel, provider_id],
        )
        if message is None:
            return {"outcome": "unknown_message"}
        current_rank = STATUS_RANK.get(message["status"], 0)
        new_rank = STATUS_RANK.get(status)
        if new_rank is None:
            return {"outcome": "unknown_status", "message_id": message["id"]}
        if new_rank <= current_rank:
            return {"outcome": "ignored", "message_id": message["id"]}

        changes: dict[str, Any] = {"status": status}
        if error_code:
            changes["error"] = f"provider error {error_code}"
        db["messages"].update(message["id"], changes)
        data: dict[str, Any] = {"message_id": message["id"], "status": status}
        if error_code:
            data["error_code"] = error_code
        record_event(
            db,
            message["contact_id"],
            "message.status",
            clock=clock,
            data=data,
            source=source,
        )
        if error_code in PROVIDER_OPT_OUT_CODES and channel == "sms":
            opt_out_phone(
                db,
                message["address"],
                clock=clock,
                source="provider",
                contact_id=message["contact_id"],
                detail={"error_code": error_code, "message_id": message["id"]},
                reason=f"provider reports unsubscribed ({error_code})",
            )
        elif error_code in PROVIDER_OPT_OUT_CODES:
            set_consent(
                db,
                message["contact_id"],
                channel,
                "opted_out",
                clock=clock,
                source="provider",
                detail={"error_code": error_code, "message_id": message["id"]},
            )
            cancel_pending_steps(
                db,
                message["contact_id"],
                channel=channel,
                clock=clock,
                reason=f"provider reports unsubscribed ({error_code})",
            )
    return {"outcome": "updated", "message_id": message["id"], "status": status}


def opt_out_email(db, clock, contact_id: int, *, source: str, detail=None) -> bool:
    """An email unsubscribe: consent off for email and its pending steps gone."""
    with write_transaction(db):
        changed = set_consent(
            db,
            contact_id,
            "email",
            "opted_out",
            clock=clock,
            source=source,
            detail=detail,
        )
        if changed:
            cancel_pending_steps(
                db, contact_id, channel="email", clock=clock, reason="unsubscribed"
            )
    return changed


def resolve_contact(workspace, db, reference: str) -> dict:
    """A contact named on the command line by id, email or phone."""
    return find_contact(db, reference, region=workspace.phone_region)
