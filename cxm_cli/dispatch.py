"""Running one claimed step, and recording what was decided and why.

Around the step kind's handler this module applies what every contact-facing
step obeys: opt-outs (skip), the contact's send window (defer to the next
opening, never drop), per-contact caps (defer), per-sender rate limits. Every
outcome is one event on the contact's timeline (``step.sent``,
``step.deferred``, ``step.capped``, ``step.skipped``, ``step.failed``,
``step.done``) and moves the enrollment on, in one transaction that first
checks the runner still holds the claim.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli import queue
from cxm_cli.caps import check_caps, rate_limit_for, reserve_send_slot
from cxm_cli.conditions import ConditionContext, evaluate
from cxm_cli.contacts import get_contact, is_opted_out
from cxm_cli.engine import (
    end_enrollment,
    enroll,
    enrollment_by_id,
    offer_keywords,
    record_step_event,
    record_unusable,
    schedule_from,
    schedule_many,
    step_event,
)
from cxm_cli.engine_steps import CONTACT_FACING_KINDS
from cxm_cli.errors import ChannelError, CxmError, NotFound
from cxm_cli.events import NewEvent, record_events
from cxm_cli.sendwindow import window_for
from cxm_cli.sequences import Sequence, StepDef, load_sequences, split_row_key
from cxm_cli.steps import STEP_KINDS, StepContext, StepOutcome
from cxm_cli.store import fetch_one, loads, write_transaction
from cxm_cli.waits import deadline_for

log = logging.getLogger(__name__)

# The outcome of a send step handed to a batch: the batch records it later.
QUEUED = "queued"


@dataclass
class RunSettings:
    """``[runner]`` in cxm.toml."""

    batch_size: int = 25
    step_lease_seconds: float = 300
    max_attempts: int = 5
    retry_base_seconds: float = 60
    retry_cap_seconds: float = 3600
    max_claims: int = 10
    runner_lease_seconds: float = 30
    max_rate_wait_seconds: float = 30
    broken_sequence_retry_seconds: float = 900

    @classmethod
    def from_workspace(cls, workspace) -> RunSettings:
        settings = cls()
        for name, default in asdict(settings).items():
            value = workspace.setting(f"runner.{name}", default)
            setattr(settings, name, type(default)(value))
        return settings


@dataclass
class StepResult:
    due_step_id: int
    contact_id: int
    sequence: str
    step: str
    outcome: str  # sent | done | deferred | capped | skipped | failed | retry | ...
    detail: str = ""
    at: str = ""
    message_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data


def process_step(
    workspace,
    db,
    clock,
    row: dict[str, Any],
    runner_id: str,
    settings: RunSettings,
    *,
    batch=None,
) -> StepResult:
    """Run one claimed due step to a recorded outcome.

    With a ``batch`` (:class:`cxm_cli.batch_send.SendBatch`), a send step that
    passed its checks is rendered and handed to the batch instead, which
    sends and records it later with the rest of the pass's batch: the result
    then says ``queued`` and the batch completes it.
    """
    result = StepResult(
        row["id"],
        row["contact_id"],
        row["sequence"],
        f"{row['step_index'] + 1}",
        "lost",
        at=clocks.now_iso(clock),
    )
    if batch is not None:
        enrollment = batch.enrollment(row["enrollment_id"])
    else:
        enrollment = enrollment_by_id(db, row["enrollment_id"])
    if enrollment is None or enrollment["status"] != "active":
        with write_transaction(db):
            queue.finish(
                db,
                row["id"],
                runner_id,
                "cancelled",
                clock=clock,
                error="enrollment no longer active",
            )
        result.outcome, result.detail = "cancelled", "enrollment no longer active"
        return result

    sequence_set = load_sequences(workspace)
    sequence = sequence_set.sequences.get(row["sequence"])
    if sequence is None:
        reason = f"sequence {row['sequence']} no longer exists"
        end_enrollment(db, enrollment, clock=clock, status="exited", reason=reason)
        result.outcome, result.detail = "cancelled", reason
        return result

    step = step_for(sequence, row, db)
    if sequence.path.name in sequence_set.invalid:
        # A file with problems (a stray copy claiming this name, say) is not
        # trusted to say where the enrollment stands, so its steps neither
        # run nor end anyone: they wait until the file is fixed.
        waiting = step or StepDef(
            index=row["step_index"], kind=row["kind"], spec={"kind": row["kind"]}
        )
        result.step = waiting.describe()
        retry_at = clock.now() + timedelta(
            seconds=settings.broken_sequence_retry_seconds
        )
        outcome = StepOutcome(
            "deferred",
            detail=f"{sequence.path.name} has problems (see cxm sequences validate)",
            retry_at=retry_at,
        )
        return apply_outcome(
            workspace,
            db,
            clock,
            row,
            runner_id,
            settings,
            sequence,
            waiting,
            enrollment,
            outcome,
            result,
        )

    reason = sequence_changed(db, sequence, step, row)
    if reason is not None:
        end_enrollment(db, enrollment, clock=clock, status="exited", reason=reason)
        result.outcome, result.detail = "cancelled", reason
        return result
    result.step = step.describe()

    def record(outcome: StepOutcome) -> StepResult:
        return apply_outcome(
            workspace,
            db,
            clock,
            row,
            runner_id,
            settings,
            sequence,
            step,
            enrollment,
            outcome,
            result,
        )

    try:
        if batch is not None:
            contact = batch.contact(row["contact_id"])
        else:
            contact = get_contact(db, row["contact_id"])
    except NotFound:
        result.outcome = "cancelled"
        return result

    early = _EarlyOutcome(record)
    # The step's handler has its own guard; this one covers the checks around
    # it (conditions, caps, windows), so one step's trouble never stops a run.
    outcome = guarded(
        lambda: _run(
            workspace,
            db,
            clock,
            row,
            runner_id,
            settings,
            sequence,
            step,
            enrollment,
            contact,
            early,
            batch=batch,
            result=result,
            record=record,
        ),
        row["id"],
        contact["id"],
    )
    if early.error is not None:
        raise early.error
    if early.result is not None:
        return early.result
    if outcome.status == QUEUED:
        result.outcome = QUEUED
        return result
    return record(outcome)


class _EarlyOutcome:
    """A step's outcome recorded inside the transaction that recorded its send.

    A send step hands its outcome over while messaging's ``message.sent``
    transaction is still open, saving a transaction per step. The outcome is
    then not recorded again, and an error raised while recording it (which
    the handler's error handling would take for a failed send) is raised
    again by :func:`process_step`, as it would be without this shortcut.
    """

    def __init__(self, record: Callable[[StepOutcome], StepResult]):
        self._record = record
        self.result: StepResult | None = None
        self.error: BaseException | None = None

    def __call__(self, outcome: StepOutcome) -> None:
        try:
            self.result = self._record(outcome)
        except BaseException as exc:
            self.error = exc
            raise


def step_for(sequence: Sequence, row: dict[str, Any], db=None) -> StepDef | None:
    """The step a queued row stands for in the sequence as the file is now;
    None when it cannot be told (the enrollment then ends, "changed").

    A row remembers what its step is (:attr:`StepDef.key`: its shape and a
    digest of what it says) and which version of the file queued it. Steps
    inserted, removed or reordered around it move it: it is found by what it
    is, so the step that now sits at its old position (one the person may
    have had already) is never run in its place. A step whose wording was
    edited is the step of the same shape where it should now be: its old
    position, moved as far as the contact's last finished step has moved
    (read from ``db``); when that cannot be told, it is not guessed.
    """
    steps = sequence.steps
    index = row["step_index"]
    at = steps[index] if 0 <= index < len(steps) else None
    if row.get("step_key") is None:
        # Queued before rows remembered their step: position and kind only.
        return at if at is not None and at.kind == row["kind"] else None
    key = split_row_key(row["step_key"])[0]
    if at is not None and at.key == key:
        return at
    same = [step for step in steps if step.key == key]
    if same:
        # Two steps exactly alike cannot be told apart: guessing could send
        # one of them twice.
        return same[0] if len(same) == 1 else None
    shift = _shift(db, sequence, row) if db is not None else 0
    if shift is None:
        return None
    expected = index + shift
    at = steps[expected] if 0 <= expected < len(steps) else None
    return at if at is not None and at.shape == key.partition("#")[0] else None


def _done_steps(db, row: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(key, position, file version) of every step this enrollment finished,
    oldest first."""
    return [
        (key, index, version)
        for stored, index in db.execute(
            "SELECT step_key, step_index FROM due_steps WHERE enrollment_id = ? "
            "AND status = 'done' AND step_key IS NOT NULL ORDER BY id",
            [row["enrollment_id"]],
        ).fetchall()
        for key, version in [split_row_key(stored)]
    ]


def _shift(db, sequence: Sequence, row: dict[str, Any]) -> int | None:
    """How far the file moved the contact's last finished step: steps inserted
    or removed above move the queued one as far. 0 when the contact finished
    none; None when that step is gone or written twice (no telling)."""
    done = _done_steps(db, row)
    if not done:
        return 0
    # The latest finished step still written once tells; an older one would
    # miss a change between it and the queued step.
    last_key, last_index, _ = done[-1]
    now_at = [step.index for step in sequence.steps if step.key == last_key]
    return now_at[0] - last_index if len(now_at) == 1 else None


def sequence_changed(
    db, sequence: Sequence, step: StepDef | None, row: dict[str, Any]
) -> str | None:
    """Why a queued row's enrollment ends because its file changed since the
    row was queued (its step is gone, or was already done at another place,
    or a step it already ran now comes after it); None to go on. ``step`` is
    what :func:`step_for` found for the row."""
    if step is None:
        return (
            f"sequence {sequence.name} changed: its step {row['step_index'] + 1} "
            f"({row['step_label'] or row['kind']}) cannot be found in it any more"
        )
    unchanged = split_row_key(row.get("step_key"))[1] == sequence.version
    if unchanged and step.key not in sequence.repeated_keys:
        return None  # the file is as it was when the step was queued
    done = _done_steps(db, row)
    # Done under an older version of the file at another place: the step was
    # moved or copied since. A step written twice on purpose (both copies in
    # the file the contact started with) is sent twice.
    if any(
        key == step.key and index != step.index and version != sequence.version
        for key, index, version in done
    ):
        return (
            f"sequence {sequence.name} changed: step {step.describe()} was already "
            "done at another place in it (moved or copied)"
        )
    if unchanged:
        return None
    # Limitation: steps are matched by what they say. A sent step that is
    # both renamed (or reworded) and moved below the queued one looks new and
    # is sent again; a step moved above the queued one is never sent to this
    # contact, with no note of it; and after any edit an enrollment inside a
    # goto loop ends here, since the loop's later steps were done before.
    done_keys = {key for key, _, _ in done}
    copies = Counter(each.key for each in sequence.steps)
    for later in sequence.steps[step.index + 1 :]:
        # A copy of a done step is stopped when it is reached (done at another
        # place); the one written once and now after this step was moved.
        if later.kind != "wait" and later.key in done_keys and copies[later.key] == 1:
            return (
                f"sequence {sequence.name} changed: step {later.describe()}, "
                f"already done, now comes after the queued step {step.describe()}"
            )
    return None


def _run(
    workspace,
    db,
    clock,
    row,
    runner_id,
    settings,
    sequence,
    step,
    enrollment,
    contact,
    record_outcome,
    *,
    batch=None,
    result: StepResult | None = None,
    record: Callable[[StepOutcome], StepResult] | None = None,
) -> StepOutcome:
    trigger_data = loads(enrollment["trigger_data"], {})
    when = step.spec.get("when")
    if when:
        ctx = ConditionContext(
            db,
            workspace,
            contact,
            event_data=trigger_data,
            since=enrollment["enrolled_at"],
            clock=clock,
        )
        try:
            holds = evaluate(when, ctx)
        except CxmError as exc:
            return StepOutcome(
                "failed", detail=f"its condition (when:) cannot be checked: {exc}"
            )
        if not holds:
            return StepOutcome("skipped", detail="its condition (when:) does not hold")

    if row["claims"] > settings.max_claims:
        return StepOutcome(
            "failed",
            detail=f"claimed {row['claims']} times without finishing (runner crashes?)",
        )

    if step.kind in CONTACT_FACING_KINDS or step.spec.get("channel"):
        # Before the caps: the step's own earlier send must not cap it.
        already = _already_sent(db, row)
        if already is not None:
            return already
        batched = batch is not None and batch.takes(step)
        held = precheck(
            workspace,
            db,
            clock,
            sequence,
            step,
            contact,
            settings,
            reserve=not batched,
            due_step_id=row["id"],
            batch=batch,
            trigger_data=trigger_data,
        )
        if held is not None:
            return held
        if batched:
            # The batch checks (or extends) the claims of all its steps at once.
            return batch.add(
                row, sequence, step, enrollment, contact, trigger_data, result, record
            )

    if not queue.keep_claim(
        db, row, runner_id, clock=clock, lease_seconds=settings.step_lease_seconds
    ):
        return StepOutcome("lost", detail="claim lost before running")

    enrollment_view = dict(enrollment)
    enrollment_view["trigger_data"] = trigger_data
    ctx = StepContext(
        db=db,
        workspace=workspace,
        clock=clock,
        contact=contact,
        enrollment=enrollment_view,
        step=step.spec,
        trigger_data=trigger_data,
        due_step_id=row["id"],
        record_outcome=record_outcome,
    )
    return run_handler(step, ctx)


def run_handler(step: StepDef, ctx: StepContext) -> StepOutcome:
    """Call the step kind's handler; any failure becomes an outcome, never a crash."""
    return guarded(
        lambda: STEP_KINDS[step.kind].run(ctx), ctx.due_step_id, ctx.contact["id"]
    )


def guarded(
    call: Callable[[], StepOutcome | None], due_step_id, contact_id
) -> StepOutcome | None:
    """``call()``, with any failure turned into the step's outcome."""
    from cxm_cli.messaging import ConsentRefused

    try:
        return call()
    except ConsentRefused as exc:
        return StepOutcome("skipped", detail=exc.message, data={"consent": exc.reason})
    except ChannelError as exc:
        if exc.transient:
            return StepOutcome("retry", detail=exc.message)
        detail = exc.message
        if exc.opt_out:
            detail += " (the recipient unsubscribed; opted out)"
        return StepOutcome(
            "failed", detail=detail, data={"provider_code": exc.provider_code}
        )
    except CxmError as exc:
        return StepOutcome("failed", detail=exc.message)
    except Exception as exc:  # noqa: BLE001 - one bad step must not stop the runner
        log.exception("step %s of contact %s crashed", due_step_id, contact_id)
        return StepOutcome(
            "failed", detail=f"internal error: {type(exc).__name__}: {exc}"
        )


def caps_exempt(sequence: Sequence, step: StepDef) -> bool:
    """Whether a step may send past the frequency caps (sequence or step opts out)."""
    return not (sequence.caps and step.spec.get("caps", True))


def consent_channel_of(step: StepDef) -> str | None:
    """The channel whose consent and address a step needs (a voicemail: sms)."""
    channel = channel_of(step)
    return "sms" if channel == "voicemail" else channel


def channel_of(step: StepDef) -> str | None:
    if step.kind == "send":
        return step.spec.get("send")
    if step.kind == "voicemail":
        return "voicemail"
    channel = step.spec.get("channel")
    return channel if isinstance(channel, str) else None


def precheck(
    workspace,
    db,
    clock,
    sequence: Sequence,
    step: StepDef,
    contact,
    settings: RunSettings,
    *,
    reserve: bool = True,
    due_step_id: int | None = None,
    batch=None,
    trigger_data: dict | None = None,
) -> StepOutcome | None:
    """Opt-out, send window, caps and rate limit; None when the step may run now.

    With a ``batch``, consent and recent sends come from what it read for all
    its steps, and its sends not recorded yet count towards the caps too.
    With ``reserve`` false no rate-limit slot is booked: the caller books it
    with :func:`rate_hold` and waits for it itself. With the enrollment's
    ``trigger_data``, a message timed before an event (``until starts_at -
    2h``) that would go out at or after the event's time is skipped instead
    (:func:`cxm_cli.waits.deadline_for`).
    """
    channel = channel_of(step)
    consent_channel = consent_channel_of(step)
    if consent_channel in ("sms", "email"):
        if batch is not None:
            opted_out = batch.facts.is_opted_out(contact["id"], consent_channel)
        else:
            opted_out = is_opted_out(db, contact["id"], consent_channel)
        if opted_out:
            return StepOutcome("skipped", detail=f"opted out of {consent_channel}")

    now = clock.now()
    window = window_for(workspace, contact)
    deadline = deadline_for(sequence, step, trigger_data)
    # A reminder held back earlier whose appointment has begun meanwhile.
    late = deadline and deadline.passed(now, window.zone)
    if late:
        return StepOutcome("skipped", detail=late)
    if not window.allows(now):
        until = window.next_open(now)
        late = deadline and deadline.held_past("quiet hours last", until, window.zone)
        if late:
            return StepOutcome("skipped", detail=late)
        return StepOutcome(
            "deferred",
            detail=f"quiet hours: outside {window.describe()}",
            retry_at=until,
            data={"local_until": _local(until, window.zone)},
        )

    if channel:
        decision = check_caps(
            db,
            workspace,
            contact,
            channel,
            clock=clock,
            exempt=caps_exempt(sequence, step),
            due_step_id=due_step_id,
            planned=batch.planned_for(contact["id"]) if batch is not None else None,
            recent=batch.recent_for(contact["id"]) if batch is not None else None,
        )
        if not decision.allowed:
            until = window.next_open(decision.until or now + timedelta(hours=1))
            late = deadline and deadline.held_past(decision.reason, until, window.zone)
            if late:
                return StepOutcome("skipped", detail=late)
            return StepOutcome(
                "deferred",
                detail=decision.reason,
                retry_at=until,
                data={
                    "event": "step.capped",
                    "local_until": _local(until, window.zone),
                },
            )

    if not reserve:
        return None
    held, slot = rate_hold(workspace, db, clock, consent_channel, settings)
    if held is not None and deadline is not None:
        late = deadline.held_past(held.detail, held.retry_at, window.zone)
        held = StepOutcome("skipped", detail=late) if late else held
    if held is not None:
        return held
    if slot is not None:
        wait = (slot - clock.now()).total_seconds()
        if wait > 0:
            clock.sleep(wait)
    return None


def rate_hold(workspace, db, clock, channel: str | None, settings: RunSettings):
    """Book the sender's next send slot: ``(deferral or None, slot or None)``.

    The slot is when the message may go; a slot further off than
    ``max_rate_wait_seconds`` defers the step instead of waiting.
    """
    limit = rate_limit_for(workspace, channel) if channel else None
    if limit is None:
        return None, None
    key, interval = limit
    slot = reserve_send_slot(db, key, interval, clock=clock)
    wait = (slot - clock.now()).total_seconds()
    if wait > settings.max_rate_wait_seconds:
        deferral = StepOutcome("deferred", detail=f"rate limit of {key}", retry_at=slot)
        return deferral, None
    return None, slot


def _local(moment, zone) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _already_sent(db, row: dict[str, Any]) -> StepOutcome | None:
    """A step claimed again after a crash may have sent already: do not repeat it."""
    if not queue.claimed_before(row):
        return None
    message = fetch_one(
        db,
        "SELECT id FROM messages WHERE due_step_id = ? AND direction = 'outbound' "
        "AND status NOT IN ('sending', 'failed') ORDER BY id DESC LIMIT 1",
        [row["id"]],
    )
    if message is None:
        return None
    return StepOutcome(
        "done",
        detail="sent before the runner stopped; not sent again",
        data={"message_id": message["id"], "recovered": True},
    )


def apply_outcome(
    workspace,
    db,
    clock,
    row,
    runner_id,
    settings,
    sequence: Sequence,
    step: StepDef,
    enrollment,
    outcome: StepOutcome,
    result: StepResult,
) -> StepResult:
    """Record the outcome and move the enrollment on, if the claim still stands."""
    status = outcome.status
    result.detail = outcome.detail
    result.message_id = outcome.data.get("message_id")
    result.extra = outcome.data
    if status == "lost":
        result.outcome = "lost"
        return result

    with write_transaction(db):
        if not queue.still_claimed(db, row["id"], runner_id):
            # Cancelled by an exit rule while it ran, or the lease ran out and
            # another runner took it over: that runner owns the rest.
            log.info("step %s: claim lost, outcome %s dropped", row["id"], status)
            result.outcome = "lost"
            return result

        if status == "retry":
            attempts = row["attempts"] + 1
            if attempts >= settings.max_attempts:
                status = "failed"
                outcome.detail = f"gave up after {attempts} attempts: {outcome.detail}"
                result.detail = outcome.detail
            else:
                retry_at = outcome.retry_at or clock.now() + queue.backoff_delay(
                    attempts,
                    base_seconds=settings.retry_base_seconds,
                    cap_seconds=settings.retry_cap_seconds,
                )
                note = f"retry {attempts} of {settings.max_attempts - 1}"
                queue.release(
                    db,
                    row["id"],
                    runner_id,
                    retry_at,
                    note=note,
                    error=outcome.detail,
                    failed_attempt=True,
                )
                record_step_event(
                    db,
                    enrollment,
                    step,
                    "step.deferred",
                    f"temporary failure ({outcome.detail}); {note} at "
                    f"{clocks.iso(retry_at)}",
                    clock=clock,
                    due_step_id=row["id"],
                    extra={"until": clocks.iso(retry_at)},
                )
                result.outcome = "retry"
                return result

        if status == "deferred":
            event_type = outcome.data.get("event", "step.deferred")
            retry_at = outcome.retry_at or clock.now() + timedelta(hours=1)
            queue.release(db, row["id"], runner_id, retry_at, note=outcome.detail)
            if not (outcome.detail and row["note"] == outcome.detail):
                extra = {"until": clocks.iso(retry_at)}
                if outcome.data.get("local_until"):
                    extra["local_until"] = outcome.data["local_until"]
                record_step_event(
                    db,
                    enrollment,
                    step,
                    event_type,
                    outcome.detail,
                    clock=clock,
                    due_step_id=row["id"],
                    extra=extra,
                )
            result.outcome = "capped" if event_type == "step.capped" else "deferred"
            return result

        return _finish(
            workspace,
            db,
            clock,
            row,
            runner_id,
            sequence,
            step,
            enrollment,
            outcome,
            status,
            result,
        )


def _finish(
    workspace,
    db,
    clock,
    row,
    runner_id,
    sequence,
    step,
    enrollment,
    outcome,
    status,
    result,
) -> StepResult:
    final = {"failed": "failed", "skipped": "skipped"}.get(status, "done")
    queue.finish(
        db,
        row["id"],
        runner_id,
        final,
        clock=clock,
        error=outcome.detail if final == "failed" else None,
    )
    message_id = outcome.data.get("message_id")
    extra: dict[str, Any] = {}
    if message_id:
        extra["message_id"] = message_id
    if outcome.data.get("channel"):
        extra["channel"] = outcome.data["channel"]

    if final == "failed":
        event_type = "step.failed"
    elif final == "skipped":
        event_type = "step.skipped"
    elif message_id:
        event_type = "step.sent"
    else:
        event_type = "step.done"
    record_step_event(
        db,
        enrollment,
        step,
        event_type,
        outcome.detail,
        clock=clock,
        due_step_id=row["id"],
        extra=extra,
    )
    result.outcome = {"step.sent": "sent", "step.done": "done"}.get(event_type, final)

    if outcome.data.get("keywords") and final == "done":
        offer_keywords(
            db,
            enrollment,
            row["id"],
            outcome.data["keywords"],
            outcome.data.get("keywords_window"),
            clock=clock,
        )

    now = clock.now()
    if status == "end":
        end_enrollment(
            db,
            enrollment,
            clock=clock,
            status="completed",
            reason=outcome.detail or "end step",
        )
    elif status == "switch":
        target = load_sequences(workspace).usable(outcome.switch_to or "")
        end_enrollment(
            db,
            enrollment,
            clock=clock,
            status="exited",
            reason=f"switched to {outcome.switch_to}",
        )
        if target is None:
            record_unusable(db, row["contact_id"], outcome.switch_to or "", clock=clock)
        else:
            enroll(
                db,
                workspace,
                target,
                row["contact_id"],
                clock=clock,
                trigger_data=loads(enrollment["trigger_data"], {}),
                reason=f"switched from {sequence.name}",
            )
    elif status == "goto":
        position = sequence.step_position(outcome.next_step)
        if position is None:
            record_step_event(
                db,
                enrollment,
                step,
                "step.failed",
                f"no step named {outcome.next_step!r}",
                clock=clock,
            )
            end_enrollment(
                db,
                enrollment,
                clock=clock,
                status="exited",
                reason=f"goto {outcome.next_step!r}: no such step",
            )
        else:
            schedule_from(
                db, workspace, sequence, enrollment, position, base=now, clock=clock
            )
    else:
        schedule_from(
            db, workspace, sequence, enrollment, step.index + 1, base=now, clock=clock
        )
    return result


@dataclass
class SentStep:
    """A claimed send step whose message went out, for :func:`finish_sent_steps`."""

    row: dict[str, Any]
    sequence: Sequence
    step: StepDef
    enrollment: dict[str, Any]
    outcome: StepOutcome
    result: StepResult


def finish_sent_steps(workspace, db, clock, runner_id: str, sent: list[SentStep]):
    """:func:`apply_outcome` for many send steps whose message went out.

    In the caller's transaction: one read of the claims, one statement
    finishing the steps, one for their ``step.sent`` events (with the hooks'
    many-events forms), then each enrollment moves on. A step whose claim was
    lost is left to its new owner, as :func:`apply_outcome` does.
    """
    held = queue.claimed_of(db, [item.row["id"] for item in sent], runner_id)
    kept = []
    for item in sent:
        item.result.detail = item.outcome.detail
        item.result.message_id = item.outcome.data.get("message_id")
        item.result.extra = item.outcome.data
        if item.row["id"] in held:
            kept.append(item)
            continue
        log.info("step %s: claim lost, outcome done dropped", item.row["id"])
        item.result.outcome = "lost"
    if not kept:
        return

    queue.finish_done(db, [item.row["id"] for item in kept], runner_id, clock=clock)
    record_events(
        db,
        [_step_sent_event(item) for item in kept],
        clock=clock,
    )
    for item in kept:
        item.result.outcome = "sent"
        data = item.outcome.data
        if data.get("keywords"):
            offer_keywords(
                db,
                item.enrollment,
                item.row["id"],
                data["keywords"],
                data.get("keywords_window"),
                clock=clock,
            )
    schedule_many(
        db,
        workspace,
        [(item.sequence, item.enrollment, item.step.index + 1) for item in kept],
        base=clock.now(),
        clock=clock,
    )


def _step_sent_event(item: SentStep) -> NewEvent:
    extra = {"message_id": item.outcome.data.get("message_id")}
    if item.outcome.data.get("channel"):
        extra["channel"] = item.outcome.data["channel"]
    return step_event(
        item.enrollment,
        item.step,
        "step.sent",
        item.outcome.detail,
        due_step_id=item.row["id"],
        extra=extra,
    )
