"""Send steps of one claimed batch, sent and recorded in phases.

The runner claims due steps a batch at a time. Each step still gets its own
checks (enrollment, condition, opt-out, send window, caps) in
:func:`cxm_cli.dispatch.process_step`, which renders a send step's message and
hands it here instead of sending it. The batch then:

1. records every message of an *idempotent* channel (the outbox) as 'sending'
   in one write transaction, with the consent recheck under that lock and
   the claims of all its steps checked (extended when half their lease is
   gone) in one statement;
2. makes the provider calls: one ``send_many`` call for a channel that has
   it (the outbox appends a batch's texts to each folder's file at once),
   else on a few threads while 3 is being written;
3. records those sends, their ``message.sent`` events and the steps'
   outcomes in one more transaction, which also claims the runner's next
   batch (one transaction fewer per batch).

A crash between 1 and 3 leaves the batch's rows 'sending'; the next runner
claims the steps again, takes over those rows and sends them under the same
message ids, marked as resends, which an idempotent channel delivers once
(the same email file; no second line for a text already written). A channel
that is not idempotent (SMTP, an SMS provider) could deliver such a message
twice, so each of its messages is recorded as 'sending', sent and recorded as
sent on its own, before the next provider call: at most the one message in
flight when a runner dies can go out twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from cxm_cli import queue
from cxm_cli.caps import recent_sends
from cxm_cli.channels import get_channel
from cxm_cli.dispatch import (
    QUEUED,
    RunSettings,
    SentStep,
    StepResult,
    finish_sent_steps,
    guarded,
    rate_hold,
)
from cxm_cli.engine_steps import sent_outcome
from cxm_cli.errors import NotFound
from cxm_cli.events import hooks_share_transaction
from cxm_cli.messaging import (
    ConsentFacts,
    PreparedMessage,
    SentMessage,
    consent_facts,
    deliver,
    is_idempotent,
    prepare_message,
    record_sending,
    record_sending_many,
    record_sent_many,
)
from cxm_cli.steps import StepContext, StepOutcome
from cxm_cli.store import loads, write_transaction

log = logging.getLogger(__name__)


def _lost() -> StepOutcome:
    return StepOutcome("lost", detail="claim lost before running")


@dataclass
class PlannedSend:
    """One send step of the batch, checked and rendered."""

    row: dict[str, Any]
    sequence: Any
    step: Any
    enrollment: dict[str, Any]
    ctx: StepContext
    prepared: PreparedMessage
    sender: Any
    result: StepResult
    record: Callable[[StepOutcome], StepResult]
    send_at: datetime | None = None  # the rate limit's slot, if any
    outcome: StepOutcome | None = None  # decided before the provider call
    sent: SentMessage | None = None
    reported: bool = False

    @property
    def idempotent(self) -> bool:
        return is_idempotent(self.sender)


@dataclass
class SendBatch:
    """The send steps of one claimed batch; see the module docstring."""

    workspace: Any
    db: Any
    clock: Any
    runner_id: str
    settings: RunSettings
    plans: list[PlannedSend] = field(default_factory=list)
    facts: ConsentFacts | None = None
    _facts_version: tuple[int, int] | None = None
    _senders: dict[str, Any] = field(default_factory=dict)
    _planned: dict[int, list[tuple[str, datetime]]] = field(default_factory=dict)
    _enrollments: dict[int, dict[str, Any]] = field(default_factory=dict)
    _contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    _recent: dict[int, list[tuple[str, str, int | None]]] = field(default_factory=dict)
    _tags: dict[int, list[str]] = field(default_factory=dict)
    # Set by the runner: claims the next batch inside this batch's last
    # transaction, which saves a transaction (and a commit) per batch.
    claim_next: Callable[[], list[dict[str, Any]]] | None = None
    next_rows: list[dict[str, Any]] | None = None

    def read(self, rows: list[dict[str, Any]]) -> None:
        """Read the claimed steps' enrollments, contacts, tags, consent and
        recent sends with a few statements for the whole batch."""
        # Limitation: a send renders with the contact as read here, up to a
        # batch (25 steps) earlier; a change another process makes meanwhile
        # shows from the next batch. Consent is read again under the write
        # lock before anything is recorded, and a step of this batch that
        # runs on its own makes its contact, tags and sends read again.
        conn = self.db.conn
        enrollment_ids = sorted({row["enrollment_id"] for row in rows})
        self._enrollments = {
            enrollment["id"]: enrollment
            for enrollment in _rows(
                conn, "SELECT * FROM enrollments WHERE id IN ({})", enrollment_ids
            )
        }
        contact_ids = sorted({row["contact_id"] for row in rows})
        for contact in _rows(
            conn, "SELECT * FROM contacts WHERE id IN ({})", contact_ids
        ):
            contact["custom"] = loads(contact["custom"], {})
            self._contacts[contact["id"]] = contact
        self.facts = consent_facts(self.db, list(self._contacts.values()))
        self._facts_version = _database_version(self.db)
        self._recent = recent_sends(self.db, contact_ids, clock=self.clock)
        self._tags = {contact_id: [] for contact_id in self._contacts}
        for contact_id, tag in conn.execute(
            "SELECT contact_id, tag FROM contact_tags WHERE contact_id IN "
            f"({', '.join('?' for _ in contact_ids)}) ORDER BY tag",
            contact_ids,
        ):
            self._tags.setdefault(contact_id, []).append(tag)

    def touched(self, contact_id: int) -> None:
        """A step of the batch ran on its own for this contact (a tag step, a
        review request): its row is read again now, its tags and sends when
        needed."""
        self._tags.pop(contact_id, None)
        self._recent.pop(contact_id, None)
        for contact in _rows(
            self.db.conn, "SELECT * FROM contacts WHERE id IN ({})", [contact_id]
        ):
            contact["custom"] = loads(contact["custom"], {})
            self._contacts[contact_id] = contact

    def enrollment(self, enrollment_id: int) -> dict[str, Any] | None:
        return self._enrollments.get(enrollment_id)

    def contact(self, contact_id: int) -> dict[str, Any]:
        contact = self._contacts.get(contact_id)
        if contact is None:
            raise NotFound(f"no contact with id {contact_id}")
        return contact

    def recent_for(self, contact_id: int) -> list[tuple[str, str, int | None]] | None:
        """The contact's counted sends of the last week as read for the batch,
        or None when the caps must read them (see :meth:`touched`)."""
        return self._recent.get(contact_id)

    def takes(self, step) -> bool:
        return step.kind == "send"

    def planned_for(self, contact_id: int) -> list[tuple[str, datetime]] | None:
        """Sends to the contact already in this batch, for the caps to count."""
        return self._planned.get(contact_id)

    def add(
        self, row, sequence, step, enrollment, contact, trigger_data, result, record
    ) -> StepOutcome:
        """Render the step's message and queue it; an outcome if it cannot be."""
        channel = step.spec.get("send")
        enrollment_view = dict(enrollment)
        enrollment_view["trigger_data"] = trigger_data
        ctx = StepContext(
            db=self.db,
            workspace=self.workspace,
            clock=self.clock,
            contact=contact,
            enrollment=enrollment_view,
            step=step.spec,
            trigger_data=trigger_data,
            due_step_id=row["id"],
        )

        def plan() -> StepOutcome:
            sender = self._sender(channel)
            prepared = prepare_message(
                self.workspace,
                self.db,
                contact,
                channel,
                template=step.spec.get("template"),
                text=step.spec.get("text"),
                subject=step.spec.get("subject"),
                extra=trigger_data,
                due_step_id=row["id"],
                facts=self.facts,
                tags=self._tags.get(contact["id"]),
            )
            held, slot = rate_hold(
                self.workspace, self.db, self.clock, channel, self.settings
            )
            if held is not None:
                return held
            self.plans.append(
                PlannedSend(
                    row,
                    sequence,
                    step,
                    enrollment,
                    ctx,
                    prepared,
                    sender,
                    result,
                    record,
                    slot,
                )
            )
            self._planned.setdefault(contact["id"], []).append(
                (channel, self.clock.now())
            )
            return StepOutcome(QUEUED)

        return guarded(plan, row["id"], contact["id"])

    def _sender(self, channel: str):
        sender = self._senders.get(channel)
        if sender is None:
            sender = self._senders[channel] = get_channel(self.workspace, channel)
        return sender

    # ------------------------------------------------------------ phases

    def run(self, report: Callable[[StepResult], None]) -> None:
        """Send and record every queued step; ``report`` gets each result."""
        if not self.plans:
            return
        batched = [plan for plan in self.plans if plan.idempotent]
        self._record_sending(batched)
        calls = self._start_sends([plan for plan in batched if plan.outcome is None])
        # A failure recording one send waits until every other send is
        # recorded: raised at once, it would leave their steps claimed and
        # unreported for a whole lease.
        failure = None
        for plan in self.plans:
            if not plan.idempotent and plan.outcome is None:
                problem = self._send_alone(plan, report)
                failure = failure or problem
        self._record_outcomes(calls, report)
        if failure is not None:
            raise failure

    def abandon(self) -> list[dict[str, Any]]:
        """The claimed rows of queued steps, for a runner stopping before 1."""
        rows = [plan.row for plan in self.plans]
        self.plans.clear()
        return rows

    def _record_sending(self, plans: list[PlannedSend]) -> None:
        """Phase 1: every message of the batch's idempotent sends, 'sending'."""
        if not plans:
            return
        with write_transaction(self.db):
            # Read again under the write lock: a STOP recorded since the
            # batch was read must still stop its send. When nothing at all
            # was written to the database since (by this connection or any
            # other), what was read then still holds.
            facts = self.facts
            if facts is None or _database_version(self.db) != self._facts_version:
                facts = consent_facts(
                    self.db,
                    [plan.ctx.contact for plan in plans],
                    tuple({plan.prepared.channel for plan in plans}),
                )
            held = queue.keep_claims(
                self.db,
                [plan.row for plan in plans],
                self.runner_id,
                clock=self.clock,
                lease_seconds=self.settings.step_lease_seconds,
            )
            kept = []
            for plan in plans:
                if plan.row["id"] in held:
                    kept.append(plan)
                else:
                    plan.outcome = _lost()
            errors = record_sending_many(
                self.workspace,
                self.db,
                self.clock,
                [(plan.prepared, queue.claimed_before(plan.row)) for plan in kept],
                facts=facts,
            )
            for plan, error in zip(kept, errors, strict=True):
                if error is not None:
                    plan.outcome = guarded(
                        partial(_raise, error), plan.row["id"], plan.ctx.contact["id"]
                    )

    def _record_one(self, plan: PlannedSend):
        record_sending(
            self.workspace,
            self.db,
            self.clock,
            plan.prepared,
            reuse=queue.claimed_before(plan.row),
        )

    def _start_sends(self, plans: list[PlannedSend]) -> dict[int, Future]:
        """Phase 2 for idempotent channels: the provider calls, side by side.

        A file system under load makes each outbox file wait on its journal;
        written by a few threads, those waits overlap each other and the
        recording of the batch (the calls hold no database handle).
        """
        calls: dict[int, Future] = {}
        pooled: list[tuple[PlannedSend, Future]] = []
        together: dict[int, list[tuple[PlannedSend, Future]]] = {}
        for plan in plans:
            future: Future = Future()
            calls[id(plan)] = future
            if plan.send_at is not None:
                # A rate-limited sender: one at a time, each at its slot.
                self._wait_for_slot(plan)
                _call(plan, future)
            elif hasattr(plan.sender, "send_many"):
                together.setdefault(id(plan.sender), []).append((plan, future))
            else:
                pooled.append((plan, future))
        for share in together.values():
            # The outbox appends a batch's texts with one write per file (and
            # writes its emails' files) in one task.
            _pool().submit(_call_many, share)
        # A few calls per task: one task a message costs more to hand over
        # than a small file takes to write.
        for first in range(SEND_THREADS):
            share = pooled[first::SEND_THREADS]
            if share:
                _pool().submit(_call_all, share)
        return calls

    def _send_alone(self, plan: PlannedSend, report) -> BaseException | None:
        """A channel that is not idempotent: 'sending', the call, and what came
        of it, each committed before the next message's provider call.

        Returns the error the caller's record of the send raised, if any.
        """
        plan.outcome = self._attempt_alone(plan)
        failure = None
        if plan.sent is not None:
            with write_transaction(self.db), hooks_share_transaction():
                failure = self._record_sent([plan])
        else:
            plan.record(plan.outcome or _lost())
        self._report(plan, report)
        return failure

    def _attempt_alone(self, plan: PlannedSend) -> StepOutcome | None:
        if not queue.keep_claim(
            self.db,
            plan.row,
            self.runner_id,
            clock=self.clock,
            lease_seconds=self.settings.step_lease_seconds,
        ):
            return _lost()
        self._wait_for_slot(plan)
        refused = guarded(
            lambda: self._record_one(plan), plan.row["id"], plan.ctx.contact["id"]
        )
        if refused is not None:
            return refused

        def call() -> None:
            plan.sent = deliver(self.db, self.clock, plan.sender, plan.prepared)

        return guarded(call, plan.row["id"], plan.ctx.contact["id"])

    def _wait_for_slot(self, plan: PlannedSend) -> None:
        if plan.send_at is None:
            return
        wait = (plan.send_at - self.clock.now()).total_seconds()
        if wait > 0:
            self.clock.sleep(wait)

    def _record_outcomes(self, calls: dict[int, Future], report) -> None:
        """Phase 3: the batch's sends and every outcome not recorded yet.

        The sends are recorded while the provider calls may still be running,
        and committed only once every one of them succeeded; if one failed,
        the transaction is rolled back and recorded again knowing which.
        """
        failure: BaseException | None = None
        try:
            with write_transaction(self.db), hooks_share_transaction():
                for plan in self.plans:
                    if id(plan) in calls:
                        plan.sent = _expected(plan)
                failure = self._record_all()
                if not self._settle(calls):
                    raise _SendFailed
                next_rows = None
                if failure is None and self.claim_next is not None:
                    next_rows = self.claim_next()
            # Only once committed: a rolled-back claim holds nothing.
            self.next_rows = next_rows
        except _SendFailed:
            self._resolve_all(calls)
            with write_transaction(self.db), hooks_share_transaction():
                failure = self._record_all()
        except Exception:  # noqa: BLE001 - one step's trouble must not stop the rest
            log.exception(
                "recording %d sends together failed; recording them one by one",
                len(self.plans),
            )
            self._resolve_all(calls)
            failure = self._record_each()
        for plan in self.plans:
            if not plan.reported:
                self._report(plan, report)
        if failure is not None:
            raise failure

    def _resolve_all(self, calls: dict[int, Future]) -> None:
        for plan in self.plans:
            if id(plan) in calls:
                plan.sent = None
                plan.outcome = self._resolve(plan, calls[id(plan)])

    def _record_each(self) -> BaseException | None:
        """Each send and outcome in its own transaction; a step whose record
        fails is recorded as failed (its message stays 'sending')."""
        failure = None
        for plan in self.plans:
            if plan.reported:
                continue
            try:
                with write_transaction(self.db), hooks_share_transaction():
                    if plan.sent is not None:
                        failure = failure or self._record_sent([plan])
                    else:
                        plan.record(plan.outcome or _lost())
            except Exception as exc:  # noqa: BLE001 - becomes the step's outcome
                log.exception("recording step %s failed", plan.row["id"])
                plan.record(
                    StepOutcome(
                        "failed", detail=f"internal error: {type(exc).__name__}: {exc}"
                    )
                )
        return failure

    def _record_all(self) -> BaseException | None:
        waiting = [plan for plan in self.plans if not plan.reported]
        failure = self._record_sent([plan for plan in waiting if plan.sent])
        for plan in waiting:
            if plan.sent is None:
                plan.record(plan.outcome or _lost())
        return failure

    def _settle(self, calls: dict[int, Future]) -> bool:
        """Wait for the provider calls; True when every one succeeded, with
        the provider's ids and statuses then written to the messages."""
        updates = []
        for plan in self.plans:
            future = calls.get(id(plan))
            if future is None:
                continue
            if future.exception() is not None:
                return False
            result = future.result()
            status = result.status or "sent"
            provider_id = plan.sent.provider_id
            if plan.prepared.channel != "email":
                provider_id = result.provider_id
            if (status, provider_id) == (plan.sent.status, plan.sent.provider_id):
                continue  # recorded as it came out
            plan.sent.provider_id = provider_id
            plan.sent.status = status
            updates.append((status, provider_id, plan.sent.message_id))
        if updates:
            self.db.conn.executemany(
                "UPDATE messages SET status = ?, provider_id = ? WHERE id = ?", updates
            )
        return True

    def _resolve(self, plan: PlannedSend, future: Future) -> StepOutcome | None:
        """A finished call as :func:`deliver` would have made it: failures
        recorded, the message sent otherwise."""

        def call() -> None:
            plan.sent = deliver(self.db, self.clock, _Finished(future), plan.prepared)

        return guarded(call, plan.row["id"], plan.ctx.contact["id"])

    def _record_sent(self, plans: list[PlannedSend]) -> BaseException | None:
        """The sends and the steps' outcomes, in the caller's transaction.

        A send commits even if recording its step's outcome fails: the
        message is out, and a retry would send it again. The first failure
        is returned, for the caller to raise once the transaction commits.
        """
        if not plans:
            return None
        record_sent_many(
            self.db,
            self.clock,
            [
                (
                    plan.prepared,
                    plan.sent,
                    {"sequence": plan.ctx.enrollment.get("sequence")},
                )
                for plan in plans
            ],
            source="runner",
            automated=True,
        )
        steps = [
            SentStep(
                plan.row,
                plan.sequence,
                plan.step,
                plan.enrollment,
                sent_outcome(plan.ctx, plan.prepared.channel, plan.sent),
                plan.result,
            )
            for plan in plans
        ]
        try:
            with write_transaction(self.db):
                finish_sent_steps(
                    self.workspace, self.db, self.clock, self.runner_id, steps
                )
        except BaseException as exc:  # noqa: BLE001 - raised by the caller
            return exc
        return None

    def _report(self, plan: PlannedSend, report) -> None:
        plan.reported = True
        report(plan.result)


def _raise(error: BaseException):
    raise error


def _database_version(db) -> tuple[int, int]:
    """Changes so far: other connections' commits (SQLite's ``data_version``)
    and this connection's own writes. Equal pairs mean nothing was written."""
    conn = db.conn
    return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes


def _rows(conn, sql: str, ids: list[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    cursor = conn.execute(sql.format(", ".join("?" for _ in ids)), ids)
    columns = [column[0] for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


class _SendFailed(Exception):
    """A provider call of the batch failed: record the batch again."""


class _Finished:
    """A provider call already made (by the pool), as a channel to deliver."""

    idempotent = True

    def __init__(self, future: Future):
        self.future = future

    def send(self, message, *, message_id=None):
        return self.future.result()


def _expected(plan: PlannedSend) -> SentMessage:
    """The send as it will be recorded if its provider call succeeds."""
    outbound = plan.prepared.outbound
    if outbound.channel == "email":
        provider_id = outbound.headers.get("Message-ID")
    else:
        foresee = getattr(plan.sender, "provider_id_for", None)
        provider_id = foresee(plan.prepared.message_id) if foresee else None
    return SentMessage(
        plan.prepared.message_id,
        provider_id,
        "sent",
        outbound.channel,
        outbound.to,
        plan.prepared.rendered,
    )


def _call(plan: PlannedSend, future: Future) -> None:
    """One provider call, its result or failure handed to ``future``."""
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = plan.sender.send(
            plan.prepared.outbound, message_id=plan.prepared.message_id
        )
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        future.set_exception(exc)
    else:
        future.set_result(result)


def _call_many(share: list[tuple[PlannedSend, Future]]) -> None:
    """One ``send_many`` call for plans of one sender; each future gets its
    message's result or error."""
    sender = share[0][0].sender
    live = [
        (plan, future)
        for plan, future in share
        if future.set_running_or_notify_cancel()
    ]
    try:
        results = sender.send_many(
            [(plan.prepared.outbound, plan.prepared.message_id) for plan, _ in live]
        )
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        results = [exc] * len(live)
    for (_, future), result in zip(live, results, strict=True):
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _call_all(share: list[tuple[PlannedSend, Future]]) -> None:
    for plan, future in share:
        _call(plan, future)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
SEND_THREADS = 4


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="cxm-send")
        return _POOL
