"""Email replies: reading the business's mailbox over IMAP (stdlib imaplib).

Each poll reads the messages that arrived since the last one and sorts them:

- a **bounce** (a ``multipart/report`` delivery-status report) marks the
  recipient's address as bouncing, so no more email goes to it;
- a copy of the **business's own mail** (Sent, a BCC, a draft) is skipped;
- an **auto-reply** (``Auto-Submitted``, out-of-office) is recorded on the
  timeline without counting as a reply, so follow-ups go on;
- anything else from a known person is a **reply**: matched to our message by
  In-Reply-To/References, else to the contact by sender address.

Every message is remembered by a hash of its Message-ID (or of its bytes), so
repeated polls, restarts and a server that changes UIDVALIDITY never ingest it
twice. The folder is opened read-only: cxm never changes flags or deletes mail.
"""

from __future__ import annotations

import email
import hashlib
import imaplib
import logging
import re
import ssl
from dataclasses import asdict, dataclass
from email import policy
from email.message import EmailMessage
from email.utils import parseaddr

from cxm_cli import clock as clocks
from cxm_cli.errors import ChannelError, ConfigError
from cxm_cli.events import record_event
from cxm_cli.inbound import STATUS_RANK, contact_by_address, record_inbound
from cxm_cli.store import fetch_one, write_transaction

log = logging.getLogger(__name__)

FETCH_BATCH = 50
MAX_BODY_CHARS = 20_000
SECURITY_MODES = ("ssl", "starttls", "none")

_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto[- ]?reply|autoreply|"
    r"auto:|away from (the )?office|on vacation|abwesenheitsnotiz|"
    r"r[ée]ponse automatique)",
    re.IGNORECASE,
)
_QUOTE_START = re.compile(
    r"^(On .{5,200} wrote:|-{2,}\s*Original Message\s*-{2,}|From: .+|"
    r"Le .{5,200} a écrit ?:|Am .{5,200} schrieb .+:)\s*$",
    re.IGNORECASE,
)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass
class ImapSettings:
    host: str
    port: int
    security: str
    username: str
    password: str
    folder: str
    timeout: float

    @property
    def account(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass
class PollResult:
    fetched: int = 0
    replies: int = 0
    auto_replies: int = 0
    bounces: int = 0
    own_copies: int = 0
    unmatched: int = 0
    ignored: int = 0
    already_seen: int = 0
    uidvalidity_changed: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def imap_settings(workspace) -> ImapSettings | None:
    """The mailbox to poll, or None when ``[imap] host`` is empty."""
    host = str(workspace.setting("imap.host", "") or "").strip()
    if not host:
        return None
    security = str(workspace.setting("imap.security", "ssl")).lower()
    if security not in SECURITY_MODES:
        raise ConfigError(
            f"cxm.toml [imap] security = {security!r} is not one of "
            f"{', '.join(SECURITY_MODES)}"
        )
    username = workspace.secret(workspace.setting("imap.username_env"))
    password = workspace.secret(workspace.setting("imap.password_env"))
    if not username or not password:
        raise ConfigError(
            "IMAP user name or password is not set",
            hint="fill in the variables named by [imap] username_env and "
            "password_env in .env",
        )
    default_port = 993 if security == "ssl" else 143
    return ImapSettings(
        host=host,
        port=int(workspace.setting("imap.port", default_port)),
        security=security,
        username=username,
        password=password,
        folder=str(workspace.setting("imap.folder", "INBOX")),
        timeout=float(workspace.setting("imap.timeout_seconds", 30)),
    )


def poll_interval_minutes(workspace) -> float:
    return float(workspace.setting("imap.poll_minutes", 5))


def business_addresses(workspace, settings: ImapSettings | None = None) -> set[str]:
    """Addresses that are the business itself; their mail is never a reply."""
    addresses = {
        str(a).strip().lower()
        for a in workspace.setting("imap.business_addresses", []) or []
    }
    for candidate in (
        workspace.setting("smtp.from_address"),
        workspace.setting("smtp.reply_to"),
        settings.username if settings else None,
    ):
        if candidate and "@" in str(candidate):
            addresses.add(parseaddr(str(candidate))[1].lower())
    return addresses


def poll_mailbox(workspace, db, clock) -> PollResult:
    """Ingest what arrived since the last poll; safe to call at any time."""
    settings = imap_settings(workspace)
    if settings is None:
        raise ConfigError(
            "no IMAP mailbox is configured", hint="set host under [imap] in cxm.toml"
        )
    ours = business_addresses(workspace, settings)
    result = PollResult()

    imap = _connect(settings)
    try:
        uidvalidity = _select(imap, settings)
        last_uid = _resume_point(db, clock, settings, uidvalidity, result)
        uids = _new_uids(imap, last_uid)
        for start in range(0, len(uids), FETCH_BATCH):
            for uid, flags, raw in _fetch(imap, uids[start : start + FETCH_BATCH]):
                result.fetched += 1
                _ingest(
                    workspace,
                    db,
                    clock,
                    settings,
                    uidvalidity,
                    uid,
                    flags,
                    raw,
                    ours,
                    result,
                )
    except (imaplib.IMAP4.error, OSError) as exc:
        raise ChannelError(
            f"IMAP {settings.host}:{settings.port}: {exc}", transient=True
        ) from exc
    finally:
        _logout(imap)
    log.info("imap poll: %s", result.as_dict())
    return result


def _connect(settings: ImapSettings) -> imaplib.IMAP4:
    try:
        if settings.security == "ssl":
            imap = imaplib.IMAP4_SSL(
                settings.host,
                settings.port,
                ssl_context=ssl.create_default_context(),
                timeout=settings.timeout,
            )
        else:
            imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
            if settings.security == "starttls":
                imap.starttls(ssl_context=ssl.create_default_context())
        imap.login(settings.username, settings.password)
    except imaplib.IMAP4.error as exc:
        raise ChannelError(
            f"IMAP login to {settings.host}:{settings.port} failed: {exc}",
            transient=True,
            hint="check [imap] and the user name and password in .env",
        ) from exc
    except OSError as exc:
        raise ChannelError(
            f"cannot reach IMAP server {settings.host}:{settings.port}: {exc}",
            transient=True,
        ) from exc
    return imap


def _logout(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except (imaplib.IMAP4.error, OSError):
        log.debug("imap logout failed; the connection is gone anyway")


def _select(imap: imaplib.IMAP4, settings: ImapSettings) -> int:
    status, detail = imap.select(_quoted(settings.folder), readonly=True)
    if status != "OK":
        raise ConfigError(
            f"IMAP folder {settings.folder!r} cannot be opened: {detail!r}"
        )
    _, values = imap.response("UIDVALIDITY")
    if not values or values[0] is None:
        raise ChannelError(f"IMAP server {settings.host} sent no UIDVALIDITY")
    return int(values[-1])


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _resume_point(db, clock, settings, uidvalidity: int, result: PollResult) -> int:
    with write_transaction(db):
        state = fetch_one(
            db,
            "SELECT * FROM imap_folders WHERE account = ? AND folder = ?",
            [settings.account, settings.folder],
        )
        if state and state["uidvalidity"] == uidvalidity:
            return state["last_uid"]
        if state:
            # The server renumbered the folder: start over by UID; the
            # message keys keep anything seen before from coming in twice.
            result.uidvalidity_changed = True
            log.warning("imap folder UIDVALIDITY changed; rescanning")
        db["imap_folders"].upsert(
            {
                "account": settings.account,
                "folder": settings.folder,
                "uidvalidity": uidvalidity,
                "last_uid": 0,
                "polled_at": clocks.now_iso(clock),
            },
            pk=("account", "folder"),
        )
    return 0


def _new_uids(imap: imaplib.IMAP4, last_uid: int) -> list[int]:
    status, data = imap.uid("SEARCH", None, f"UID {last_uid + 1}:*")
    if status != "OK":
        raise ChannelError(f"IMAP search failed: {data!r}", transient=True)
    # "N:*" always matches the newest message, even when its UID is below N.
    uids = {int(part) for part in (data[0] or b"").split()}
    return sorted(uid for uid in uids if uid > last_uid)


def _fetch(imap: imaplib.IMAP4, uids: list[int]):
    wanted = ",".join(str(uid) for uid in uids)
    status, data = imap.uid("FETCH", wanted, "(UID FLAGS BODY.PEEK[])")
    if status != "OK":
        raise ChannelError(f"IMAP fetch failed: {data!r}", transient=True)
    found = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode("ascii", "replace")
        uid_match = re.search(r"UID (\d+)", meta)
        if not uid_match:
            continue
        flags_match = re.search(r"FLAGS \(([^)]*)\)", meta)
        flags = set(flags_match.group(1).split()) if flags_match else set()
        found.append((int(uid_match.group(1)), flags, item[1]))
    found.sort(key=lambda entry: entry[0])
    return found


def message_key(parsed: EmailMessage, raw: bytes) -> str:
    message_id = _clean_id(parsed.get("Message-ID"))
    basis = f"id:{message_id}" if message_id else "raw:" + raw.hex()
    return hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()


def _clean_id(value) -> str | None:
    if not value:
        return None
    found = _MESSAGE_ID.search(str(value))
    return found.group(0) if found else str(value).strip() or None


def _ingest(
    workspace, db, clock, settings, uidvalidity, uid, flags, raw, ours, result
) -> None:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    key = message_key(parsed, raw)

    with write_transaction(db):
        _advance(db, clock, settings, uid)
        if fetch_one(
            db, "SELECT 1 AS x FROM imap_messages WHERE message_key = ?", [key]
        ):
            result.already_seen += 1
            return
        outcome, message_id, contact_id = _classify_and_record(
            workspace, db, clock, parsed, flags, ours
        )
        setattr(result, _COUNTERS[outcome], getattr(result, _COUNTERS[outcome]) + 1)
        db["imap_messages"].insert(
            {
                "message_key": key,
                "account": settings.account,
                "folder": settings.folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "outcome": outcome,
                "message_id": message_id,
                "contact_id": contact_id,
                "ingested_at": clocks.now_iso(clock),
            }
        )
    log.debug("imap uid %s: %s", uid, outcome)


_COUNTERS = {
    "reply": "replies",
    "auto_reply": "auto_replies",
    "bounce": "bounces",
    "own_copy": "own_copies",
    "unmatched": "unmatched",
    "ignored": "ignored",
}


def _advance(db, clock, settings, uid: int) -> None:
    db.execute(
        "UPDATE imap_folders SET last_uid = MAX(last_uid, ?), polled_at = ? "
        "WHERE account = ? AND folder = ?",
        [uid, clocks.now_iso(clock), settings.account, settings.folder],
    )


def _classify_and_record(workspace, db, clock, parsed, flags, ours):
    """``(outcome, message row id or None, contact id or None)``."""
    if is_delivery_report(parsed):
        return _record_bounce(db, clock, parsed)

    sender = parseaddr(str(parsed.get("From", "")))[1].lower()
    own_id = _clean_id(parsed.get("Message-ID"))
    if "\\Draft" in flags or sender in ours or _is_our_outbound(db, own_id):
        return "own_copy", None, None

    original = _original_outbound(db, parsed)
    contact = None
    if original is not None:
        contact = {"id": original["contact_id"]}
    elif sender:
        contact = contact_by_address(db, email=sender)
    if contact is None:
        return "unmatched", None, None

    auto = is_auto_reply(parsed)
    inbound = record_inbound(
        workspace,
        db,
        clock,
        channel="email",
        text=reply_text(parsed),
        contact_id=contact["id"],
        address=sender or None,
        subject=str(parsed.get("Subject", "")) or None,
        provider_id=own_id or None,
        thread_id=_thread(original, parsed),
        at=_sent_at(parsed, clock),
        source="imap",
        kind="auto_reply" if auto else None,
        data={"in_reply_to": original["id"]} if original else None,
    )
    return ("auto_reply" if auto else "reply"), inbound.message_id, contact["id"]


# Limitation: only standard delivery reports (RFC 3464) count as bounces; an
# old MTA's plain-text bounce is left unmatched (its sender is no contact).
def is_delivery_report(parsed: EmailMessage) -> bool:
    return (
        parsed.get_content_type() == "multipart/report"
        and str(parsed.get_param("report-type", "")).lower() == "delivery-status"
    )


def is_auto_reply(parsed: EmailMessage) -> bool:
    auto_submitted = str(parsed.get("Auto-Submitted", "")).strip().lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if parsed.get("X-Autoreply") or parsed.get("X-Autorespond"):
        return True
    if str(parsed.get("Precedence", "")).strip().lower() in ("auto_reply", "bulk"):
        return True
    return bool(_AUTO_SUBJECT.match(str(parsed.get("Subject", ""))))


def _is_our_outbound(db, message_id: str | None) -> bool:
    if not message_id:
        return False
    return _outbound_by_ids(db, [message_id]) is not None


def _outbound_by_ids(db, ids: list[str]) -> dict | None:
    forms = set()
    for value in ids:
        bare = value.strip("<>")
        forms.update({bare, f"<{bare}>"})
    if not forms:
        return None
    marks = ", ".join("?" for _ in forms)
    return fetch_one(
        db,
        "SELECT * FROM messages WHERE channel = 'email' AND direction = 'outbound' "
        f"AND provider_id IN ({marks}) ORDER BY at DESC LIMIT 1",
        sorted(forms),
    )


def _original_outbound(db, parsed: EmailMessage) -> dict | None:
    """Our message this one answers, from In-Reply-To first, then References."""
    for header in ("In-Reply-To", "References"):
        ids = _MESSAGE_ID.findall(str(parsed.get(header, "")))
        # The latest reference is the message answered; earlier ones, the thread.
        for message_id in reversed(ids):
            found = _outbound_by_ids(db, [message_id])
            if found:
                return found
    return None


def _thread(original: dict | None, parsed: EmailMessage) -> str | None:
    if original is not None:
        return original["thread_id"] or original["provider_id"]
    references = _MESSAGE_ID.findall(str(parsed.get("References", "")))
    return references[0] if references else _clean_id(parsed.get("Message-ID"))


def _sent_at(parsed: EmailMessage, clock) -> str:
    """The Date header when it is sane (not in the future), else now."""
    try:
        sent = parsed["Date"].datetime if parsed.get("Date") else None
    except (TypeError, ValueError, AttributeError):
        sent = None
    now = clock.now()
    if sent is None or sent.tzinfo is None or sent > now:
        return clocks.iso(now)
    return clocks.iso(sent)


def reply_text(parsed: EmailMessage) -> str:
    """The new words of a reply: the text part, without the quoted original.

    Limitation: quoted originals are recognised by "> " lines and the
    English, French and German "On ... wrote:" forms; other mail programs'
    quote headers keep the quoted text in the recorded body.
    """
    part = parsed.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, UnicodeDecodeError):
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", "replace")
    if part.get_content_type() == "text/html":
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
        text = re.sub(r"<br\s*/?>|</p>|</div>", "\n", text, flags=re.I)
        text = re.sub(r"<[^>]+>", "", text)
    kept = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if _QUOTE_START.match(line.strip()):
            break
        if line.startswith(">"):
            continue
        kept.append(line.rstrip())
    words = "\n".join(kept).strip()
    return words[:MAX_BODY_CHARS]


def _record_bounce(db, clock, parsed: EmailMessage):
    recipients = failed_recipients(parsed)
    original_ids = _reported_message_ids(parsed)
    original = _outbound_by_ids(db, original_ids) if original_ids else None
    if not recipients:
        # A delay warning ("will retry"), not a failure.
        return "ignored", None, original["contact_id"] if original else None

    contact_id = original["contact_id"] if original else None
    for address, status in recipients:
        row = fetch_one(
            db, "SELECT contact_id FROM contact_emails WHERE email = ?", [address]
        )
        if row is None:
            continue
        contact_id = contact_id or row["contact_id"]
        db.execute(
            "UPDATE contact_emails SET status = 'bouncing' WHERE email = ?", [address]
        )
        data = {"channel": "email", "status": status}
        if original is not None:
            data["message_id"] = original["id"]
        record_event(
            db,
            row["contact_id"],
            "message.bounced",
            clock=clock,
            data=data,
            source="imap",
        )
    if (
        original is not None
        and STATUS_RANK.get(original["status"], 0) < STATUS_RANK["bounced"]
    ):
        db["messages"].update(original["id"], {"status": "bounced", "error": "bounced"})
    if contact_id is None:
        return "unmatched", None, None
    return "bounce", original["id"] if original else None, contact_id


def failed_recipients(parsed: EmailMessage) -> list[tuple[str, str]]:
    """``(address, status)`` for each recipient the report says failed for good."""
    failed = []
    for part in parsed.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            action = str(block.get("Action", "")).strip().lower()
            status = str(block.get("Status", "")).strip()
            recipient = str(
                block.get("Final-Recipient") or block.get("Original-Recipient") or ""
            )
            address = recipient.split(";", 1)[-1].strip().strip("<>").lower()
            if action == "failed" and status.startswith("5") and "@" in address:
                failed.append((address, status))
            elif action == "failed" and not status and "@" in address:
                failed.append((address, "5.0.0"))
    return failed


def _status_blocks(part) -> list:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload
    # Some servers send the report as text; read its header blocks ourselves.
    text = payload if isinstance(payload, str) else ""
    return [
        email.message_from_string(block.strip() + "\n", policy=policy.default)
        for block in re.split(r"\n\s*\n", text)
        if block.strip()
    ]


def _reported_message_ids(parsed: EmailMessage) -> list[str]:
    """Message-IDs of the returned original (a message/rfc822 or its headers)."""
    ids: list[str] = []
    for part in parsed.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) else inner
            found = _clean_id(inner.get("Message-ID")) if inner is not None else None
            if found:
                ids.append(found)
        elif kind == "text/rfc822-headers":
            headers = email.message_from_string(
                part.get_content(), policy=policy.default
            )
            found = _clean_id(headers.get("Message-ID"))
            if found:
                ids.append(found)
    return ids
