"""Asking a customer for a review: who may be asked, and sending the ask.

No review gating: whether someone may be asked depends only on the cool-down,
the lifetime cap, consent and the guard delay, never on a rating they gave
before or on how happy they seem. Every request offers the public review links
in the message itself, beside the rating link.

A request is a ``review_requests`` row written before the message goes out
(status ``sending``), so a crash after the provider call can never cause a
second ask; rows that end as ``skipped`` or ``cancelled`` say why, and make up
the compliance trail with the sent ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.contacts import get_contact
from cxm_cli.errors import ChannelError, CxmError
from cxm_cli.events import Event, record_event
from cxm_cli.reviews import links
from cxm_cli.reviews.platforms import choose_platforms
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.store import dumps, fetch_one, loads, write_transaction

log = logging.getLogger(__name__)

ASKED = ("sending", "sent", "answered")


@dataclass
class Eligibility:
    ok: bool
    channel: str | None = None
    reason: str | None = None


@dataclass
class RequestOutcome:
    status: str  # sent | skipped | failed | would_send | already_sent
    contact_id: int
    request_id: int | None = None
    channel: str | None = None
    reason: str | None = None
    platforms: list[dict[str, str]] = field(default_factory=list)
    message_id: int | None = None
    transient: bool = False
    retry_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "request_id": self.request_id,
            "status": self.status,
            "channel": self.channel,
            "reason": self.reason,
            "platforms": [p["name"] for p in self.platforms],
            "message_id": self.message_id,
            "retry_at": clocks.iso(self.retry_at) if self.retry_at else None,
        }


# ---------------------------------------------------------------- eligibility


def check_eligibility(
    workspace, db, clock, contact_id: int, *, channel: str | None = None
) -> Eligibility:
    """May this contact be asked now, and on which channel?

    Deliberately blind to ratings and feedback: the rules are the same for a
    customer who gave 1 star last time as for one who gave 5.
    """
    settings = ReviewSettings.of(workspace)
    contact = get_contact(db, contact_id)
    now = clock.now()

    asked = list(
        db.query(
            "SELECT sent_at, created_at FROM review_requests "
            f"WHERE contact_id = ? AND status IN ({_placeholders(ASKED)}) "
            "ORDER BY COALESCE(sent_at, created_at) DESC",
            [contact_id, *ASKED],
        )
    )
    if settings.lifetime_cap and len(asked) >= settings.lifetime_cap:
        return Eligibility(
            False,
            reason=f"lifetime cap reached: asked {len(asked)} times "
            f"(reviews.lifetime_cap = {settings.lifetime_cap})",
        )
    if asked and settings.cooldown_days:
        last = clocks.parse(asked[0]["sent_at"] or asked[0]["created_at"])
        until = last + timedelta(days=settings.cooldown_days)
        if now < until:
            return Eligibility(
                False,
                reason=f"cool-down: asked on {last.date().isoformat()}, not again "
                f"before {until.date().isoformat()} "
                f"(reviews.cooldown_days = {settings.cooldown_days:g})",
            )

    candidates = [channel] if channel else list(settings.channels)
    refusals: list[str] = []
    for candidate in candidates:
        problem = _channel_problem(db, contact, candidate)
        if problem is None:
            return Eligibility(True, channel=candidate)
        refusals.append(f"{candidate}: {problem}")
    if not candidates:
        refusals.append("reviews.channels is empty")
    return Eligibility(False, reason="no usable channel (" + "; ".join(refusals) + ")")


def _channel_problem(db, contact: dict[str, Any], channel: str) -> str | None:
    """Why ``channel`` cannot reach the contact (opted out, no address,
    suppressed, bouncing), by the same check ``send_message`` makes."""
    from cxm_cli.messaging import ConsentRefused, check_consent

    if channel not in ("sms", "email"):
        return f"unknown channel {channel!r}"
    try:
        check_consent(db, contact, channel)
    except ConsentRefused as exc:
        return exc.reason.replace("_", " ")
    return None


def _placeholders(values) -> str:
    return ", ".join("?" for _ in values)


# ---------------------------------------------------------------- asking


def request_review(
    workspace,
    db,
    clock,
    contact_id: int,
    *,
    channel: str | None = None,
    source: str = "cli",
    sequence: str | None = None,
    due_step_id: int | None = None,
    guard_request_id: int | None = None,
    job: Event | None = None,
    dry_run: bool = False,
) -> RequestOutcome:
    """Ask one contact for a review, or record why they were not asked.

    ``guard_request_id`` names a scheduled (guarded) row to send; ``job`` is
    the event the request follows (a completed appointment, a paid invoice).
    Raises ConfigError when no review platform may be used.
    """
    settings = ReviewSettings.of(workspace)

    if due_step_id is not None:
        earlier = fetch_one(
            db,
            "SELECT * FROM review_requests WHERE due_step_id = ? "
            f"AND status IN ({_placeholders(ASKED)})",
            [due_step_id, *ASKED],
        )
        if earlier:
            # The engine ran this step before (a crash after sending): never
            # ask twice for one step.
            return _outcome_of(earlier, "already_sent")

    offered = [p.offer() for p in choose_platforms(workspace, db)]
    if dry_run:
        eligibility = check_eligibility(
            workspace, db, clock, contact_id, channel=channel
        )
        return RequestOutcome(
            "would_send" if eligibility.ok else "skipped",
            contact_id,
            channel=eligibility.channel,
            reason=eligibility.reason,
            platforms=offered,
        )

    values: dict[str, Any] = {
        "contact_id": contact_id,
        "source": source,
        "sequence": sequence,
        "due_step_id": due_step_id,
        "platforms": dumps(offered),
    }
    if job is not None:
        values.update(trigger_event_id=job.id, trigger_type=job.type, trigger_at=job.at)

    # The window is checked first: a deferred ask is no decision about the
    # person, so it leaves no row (a guarded one stays scheduled).
    opens_at = _quiet_until(workspace, clock, contact_id, db)
    if opens_at is not None:
        return RequestOutcome(
            "deferred",
            contact_id,
            reason="outside quiet hours for this contact; the window opens at "
            + clocks.iso(opens_at),
            platforms=offered,
            retry_at=opens_at,
        )

    # Checking and recording under one write lock: two processes asking the
    # same person at once cannot both pass the cool-down.
    with write_transaction(db):
        eligibility = check_eligibility(
            workspace, db, clock, contact_id, channel=channel
        )
        request_id = _save_row(
            db,
            clock,
            guard_request_id,
            {
                **values,
                "status": "sending" if eligibility.ok else "skipped",
                "channel": eligibility.channel,
                "reason": eligibility.reason,
            },
        )
    if request_id is None:
        return RequestOutcome(
            "skipped", contact_id, reason="the scheduled request was taken already"
        )
    if not eligibility.ok:
        log.info("review request %s skipped for contact %s", request_id, contact_id)
        return RequestOutcome(
            "skipped",
            contact_id,
            request_id=request_id,
            reason=eligibility.reason,
            platforms=offered,
        )

    row = fetch_one(db, "SELECT * FROM review_requests WHERE id = ?", [request_id])
    return _send(workspace, db, clock, settings, row, offered)


def _quiet_until(workspace, clock, contact_id: int, db) -> datetime | None:
    """When the contact's send window opens, or None when it is open now."""
    from cxm_cli.sendwindow import window_for

    window = window_for(workspace, get_contact(db, contact_id))
    now = clock.now()
    if window.allows(now):
        return None
    return window.next_open(now)


def _save_row(
    db, clock, guard_request_id: int | None, values: dict[str, Any]
) -> int | None:
    """Insert a new request row, or move a scheduled one on; None if taken."""
    values = {**values, "updated_at": clocks.now_iso(clock)}
    if guard_request_id is not None:
        # Only a row still 'scheduled' may be taken, so the sequence step and
        # `cxm reviews send-due` can never both send it. It keeps its job.
        for key in ("trigger_event_id", "trigger_type", "trigger_at"):
            values.pop(key, None)
        assignments = ", ".join(f"{key} = ?" for key in values)
        cursor = db.execute(
            f"UPDATE review_requests SET {assignments} "
            "WHERE id = ? AND status = 'scheduled'",
            [*values.values(), guard_request_id],
        )
        return guard_request_id if cursor.rowcount == 1 else None
    values["nonce"] = links.new_nonce()
    values["created_at"] = values["updated_at"]
    return db["review_requests"].insert(values).last_pk


def _send(
    workspace, db, clock, settings: ReviewSettings, row: dict, offered: list[dict]
) -> RequestOutcome:
    from cxm_cli.messaging import ConsentRefused, send_message

    request_id = row["id"]
    contact_id = row["contact_id"]
    channel = row["channel"]
    extra = request_extra(workspace, row, offered)

    try:
        sent = send_message(
            workspace,
            db,
            clock,
            contact_id,
            channel,
            template=settings.request_template,
            extra=extra,
            due_step_id=row["due_step_id"],
            source=row["source"],
            automated=row["source"] != "cli",
        )
    except ConsentRefused as exc:
        _finish(db, clock, request_id, status="skipped", reason=exc.message)
        return RequestOutcome(
            "skipped", contact_id, request_id, channel, exc.message, offered
        )
    except ChannelError as exc:
        _finish(db, clock, request_id, status="failed", reason=exc.message)
        return RequestOutcome(
            "failed",
            contact_id,
            request_id,
            channel,
            exc.message,
            offered,
            transient=exc.transient,
        )
    except CxmError as exc:
        # A broken template or setting: the request did not go out; say so on
        # the row, then let the caller report the problem.
        _finish(db, clock, request_id, status="failed", reason=exc.message)
        raise

    # Limitation: a crash between the provider call and this update leaves the
    # row 'sending': it counts as asked (never asked again) and the trail shows
    # it as sending, though the text most likely went out.
    message_id = sent.message_id
    with write_transaction(db):
        _finish(
            db,
            clock,
            request_id,
            status="sent",
            sent_at=clocks.now_iso(clock),
            message_id=message_id,
            rating_page=1 if extra["rating_url"] else 0,
        )
        record_event(
            db,
            contact_id,
            "review.requested",
            clock=clock,
            data={
                "request_id": request_id,
                "channel": channel,
                "platforms": [offer["key"] for offer in offered],
                "message_id": message_id,
            },
            source=row["source"],
        )
    log.info(
        "review request %s sent to contact %s by %s", request_id, contact_id, channel
    )
    return RequestOutcome(
        "sent", contact_id, request_id, channel, None, offered, message_id
    )


def request_extra(workspace, row: dict, offered: list[dict]) -> dict[str, Any]:
    """Template values of a review request message."""
    nonce = row["nonce"]
    request_id = row["id"]
    rating_url = links.rating_url(workspace, request_id, nonce)
    rating_urls = None
    if rating_url:
        rating_urls = {
            score: links.rating_url(workspace, request_id, nonce, score)
            for score in range(1, 6)
        }
    return {
        "rating_url": rating_url,
        "rating_urls": rating_urls,
        "review_links": offered,
        "review_url": offered[0]["url"] if offered else None,
        "review_platform": offered[0]["name"] if offered else None,
        "request_id": request_id,
    }


def _finish(db, clock, request_id: int, **values: Any) -> None:
    values["updated_at"] = clocks.now_iso(clock)
    db["review_requests"].update(request_id, values)


def _outcome_of(row: dict, status: str) -> RequestOutcome:
    return RequestOutcome(
        status,
        row["contact_id"],
        request_id=row["id"],
        channel=row["channel"],
        platforms=loads(row["platforms"], []),
        message_id=row["message_id"],
    )


# ---------------------------------------------------------------- the guard


def schedule_guarded(workspace, db, clock, event: Event) -> int | None:
    """After a finished job, hold a request until the guard delay has passed.

    A refund or cancellation recorded during the delay cancels it (see
    :func:`cancel_guarded`). One open scheduled request per contact: a paid
    invoice right after the completed appointment is the same job.
    """
    settings = ReviewSettings.of(workspace)
    if event.contact_id is None:
        return None
    open_row = fetch_one(
        db,
        "SELECT id, due_at FROM review_requests "
        "WHERE contact_id = ? AND status = 'scheduled'",
        [event.contact_id],
    )
    if open_row and open_row["due_at"] > event.at:
        return None
    if open_row:
        # Overdue and never sent (no sequence and no send-due ran): the new
        # job takes its place rather than being ignored.
        _finish(
            db,
            clock,
            open_row["id"],
            status="cancelled",
            reason=f"superseded by a later {event.type} before it was sent",
        )

    due = clocks.parse(event.at) + timedelta(hours=settings.guard_delay_hours)
    now = clocks.now_iso(clock)
    request_id = (
        db["review_requests"]
        .insert(
            {
                "contact_id": event.contact_id,
                "status": "scheduled",
                "source": "guard",
                "trigger_event_id": event.id,
                "trigger_type": event.type,
                "trigger_at": event.at,
                "due_at": clocks.iso(due),
                "nonce": links.new_nonce(),
                "created_at": now,
                "updated_at": now,
            }
        )
        .last_pk
    )
    log.info("review request %s scheduled for contact %s", request_id, event.contact_id)
    return request_id


def cancel_guarded(workspace, db, clock, event: Event) -> int:
    """Cancel scheduled requests whose job was refunded or cancelled."""
    if event.contact_id is None:
        return 0
    cancelled = 0
    rows = db.query(
        "SELECT r.id, r.due_at, e.data AS job_data FROM review_requests r "
        "LEFT JOIN events e ON e.id = r.trigger_event_id "
        "WHERE r.contact_id = ? AND r.status = 'scheduled'",
        [event.contact_id],
    )
    for row in list(rows):
        if not same_job(loads(row["job_data"], {}), event.data):
            continue
        _finish(
            db,
            clock,
            row["id"],
            status="cancelled",
            reason=f"{event.type} recorded during the guard delay",
        )
        cancelled += 1
    if cancelled:
        log.info(
            "cancelled %d scheduled review requests for contact %s",
            cancelled,
            event.contact_id,
        )
    return cancelled


def same_job(job: dict[str, Any], cancelling: dict[str, Any]) -> bool:
    """Does a refund or cancellation concern the job? Unknown ids mean yes."""
    for key in ("invoice_id", "appointment_id"):
        if job.get(key) and cancelling.get(key) and job[key] != cancelling[key]:
            return False
    return True


@dataclass
class GuardState:
    """Where a job stands against the guard delay."""

    status: str  # clear | waiting | cancelled
    due_at: str | None = None
    reason: str | None = None
    request_id: int | None = None


def guard_state(workspace, db, clock, contact_id: int, job: Event | None) -> GuardState:
    """Has the guard delay after ``job`` passed, with no refund or cancellation?

    Reads the scheduled row the hook made when there is one; otherwise looks at
    the timeline directly, so the rule holds even for jobs recorded before the
    reviews settings named them.
    """
    settings = ReviewSettings.of(workspace)
    if job is None:
        return GuardState("clear")

    row = fetch_one(
        db,
        "SELECT id, status, due_at, reason FROM review_requests "
        "WHERE trigger_event_id = ? AND source = 'guard' ORDER BY id DESC LIMIT 1",
        [job.id],
    )
    if row and row["status"] == "cancelled":
        return GuardState("cancelled", row["due_at"], row["reason"], row["id"])

    due = clocks.parse(job.at) + timedelta(hours=settings.guard_delay_hours)
    cancels = list(settings.cancel_on)
    if cancels:
        later = db.query(
            "SELECT type, data FROM events WHERE contact_id = ? AND at >= ? "
            f"AND id != ? AND type IN ({_placeholders(cancels)}) ORDER BY at, id",
            [contact_id, job.at, job.id, *cancels],
        )
        for found in later:
            if same_job(job.data, loads(found["data"], {})):
                return GuardState(
                    "cancelled",
                    clocks.iso(due),
                    f"{found['type']} recorded after {job.type}",
                    row["id"] if row else None,
                )

    if clock.now() < due:
        return GuardState("waiting", clocks.iso(due), None, row["id"] if row else None)
    open_id = row["id"] if row and row["status"] == "scheduled" else None
    return GuardState("clear", clocks.iso(due), None, open_id)


def latest_job(workspace, db, contact_id: int, *, event_id: int | None = None):
    """The job a request follows: the named event, else the contact's latest."""
    settings = ReviewSettings.of(workspace)
    if event_id is not None:
        row = fetch_one(db, "SELECT * FROM events WHERE id = ?", [event_id])
        return Event.from_row(row) if row else None
    kinds = list(settings.trigger_on)
    if not kinds:
        return None
    row = fetch_one(
        db,
        "SELECT * FROM events WHERE contact_id = ? "
        f"AND type IN ({_placeholders(kinds)}) ORDER BY at DESC, id DESC LIMIT 1",
        [contact_id, *kinds],
    )
    return Event.from_row(row) if row else None


def send_due_requests(
    workspace, db, clock, *, limit: int = 500
) -> list[RequestOutcome]:
    """Send every scheduled request whose guard delay has passed."""
    rows = list(
        db.query(
            "SELECT id, contact_id, trigger_event_id FROM review_requests "
            "WHERE status = 'scheduled' AND due_at <= ? ORDER BY due_at LIMIT ?",
            [clocks.now_iso(clock), limit],
        )
    )
    outcomes = []
    for row in rows:
        job = latest_job(
            workspace, db, row["contact_id"], event_id=row["trigger_event_id"]
        )
        state = guard_state(workspace, db, clock, row["contact_id"], job)
        if state.status == "cancelled":
            _finish(db, clock, row["id"], status="cancelled", reason=state.reason)
            outcomes.append(
                RequestOutcome(
                    "cancelled", row["contact_id"], row["id"], reason=state.reason
                )
            )
            continue
        outcomes.append(
            request_review(
                workspace,
                db,
                clock,
                row["contact_id"],
                source="guard",
                guard_request_id=row["id"],
            )
        )
    return outcomes
