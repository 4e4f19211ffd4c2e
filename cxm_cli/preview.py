"""Seeing the queue: what will go out, when (in the contact's time), and why.

``cxm due`` and ``cxm run --dry-run`` read the queue and apply the same send
windows and caps the runner will, without writing anything. Beyond each
enrollment's queued step, the steps after it are projected through their
waits until a step whose path cannot be known ahead (a branch, a switch).
A step's ``when:`` is checked as things stand now; it may hold or fail by
the time the runner gets to the step.

Each step's "why" gives its reasons once, in the order the runner meets them:
the sequence file, the step's condition, consent, then quiet hours and caps.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from cxm_cli import clock as clocks
from cxm_cli.caps import STRICT_CHANNELS, check_caps
from cxm_cli.conditions import ConditionContext, evaluate
from cxm_cli.contacts import get_contact
from cxm_cli.dispatch import (
    caps_exempt,
    channel_of,
    consent_channel_of,
    sequence_changed,
    step_for,
)
from cxm_cli.engine_steps import CONTACT_FACING_KINDS
from cxm_cli.errors import CxmError
from cxm_cli.messaging import CHANNELS, ConsentRefused, consent_facts
from cxm_cli.queue import queue_counts
from cxm_cli.runner import lease_status
from cxm_cli.sendwindow import contact_zone, window_for, workspace_calendar
from cxm_cli.sequences import (
    Sequence,
    SequenceSet,
    StepDef,
    load_sequences,
    split_row_key,
    tasks_without_staff,
)
from cxm_cli.store import fetch_one, loads
from cxm_cli.waits import (
    deadline_for,
    late_skip_reason,
    missed_wait,
    parse_wait,
    wait_until,
)

log = logging.getLogger(__name__)

UNPREDICTABLE_KINDS = {"branch", "goto", "switch", "end"}
# Each round of the window/cap search moves the moment forward; a handful
# settles any real mix of quiet hours, daily, weekly and 24-hour caps.
MAX_ROUNDS = 10
# What the runner writes on a row it put back (dispatch.precheck, apply_outcome).
_WORKSPACE_CAP_NOTE = re.compile(r"cap: \d+ (\w+) per ")
_RETRY_NOTE = re.compile(r"retry \d+ of \d+")


def preview_due(
    workspace,
    db,
    clock,
    *,
    within: timedelta = timedelta(0),
    contact_id: int | None = None,
    render: bool = False,
    project: bool = True,
) -> list[dict[str, Any]]:
    """Queued (and projected) steps that will run within ``within`` from now."""
    now = clock.now()
    horizon = now + within
    sequence_set = load_sequences(workspace)
    sql = (
        "SELECT d.*, e.trigger_data, e.enrolled_at FROM due_steps d "
        "JOIN enrollments e ON e.id = d.enrollment_id "
        "WHERE d.status IN ('pending', 'claimed') AND d.due_at <= ?"
    )
    params: list[Any] = [clocks.iso(horizon)]
    if contact_id is not None:
        sql += " AND d.contact_id = ?"
        params.append(contact_id)
    rows = list(db.query(sql + " ORDER BY d.due_at, d.id", params))

    planned: dict[int, list[tuple[str, datetime]]] = {}
    previews: list[dict[str, Any]] = []
    for row in rows:
        sequence = sequence_set.sequences.get(row["sequence"])
        contact = get_contact(db, row["contact_id"])
        step = _step(db, sequence, row)
        problem = _sequence_problem(db, sequence_set, sequence, step, row)
        start = max(clocks.parse(row["due_at"]), now)
        entry = _entry(
            workspace,
            db,
            clock,
            contact,
            sequence,
            step,
            row,
            start,
            planned.setdefault(contact["id"], []),
            problem=problem,
        )
        if render and step is not None:
            entry.update(
                _render(
                    workspace, db, clock, contact, step, loads(row["trigger_data"], {})
                )
            )
        previews.append(entry)
        if project and problem is None:
            previews.extend(
                _project(
                    workspace,
                    db,
                    clock,
                    contact,
                    sequence,
                    step,
                    row,
                    entry["send_at_dt"],
                    horizon,
                    planned[contact["id"]],
                )
            )

    for entry in previews:
        entry.pop("send_at_dt", None)
    previews.sort(key=lambda e: (e["send_at"], e["contact_id"]))
    return previews


def _step(db, sequence: Sequence | None, row) -> StepDef | None:
    return None if sequence is None else step_for(sequence, row, db)


def _sequence_problem(
    db, sequence_set: SequenceSet, sequence: Sequence | None, step: StepDef | None, row
) -> str | None:
    """What the runner will do instead of the step when its file is gone,
    broken, or changed around the step (dispatch.process_step, in its order)."""
    if sequence is None:
        return f"will be cancelled: sequence {row['sequence']} no longer exists"
    if sequence.path.name in sequence_set.invalid:
        return f"held: {sequence.path.name} has problems (see cxm sequences validate)"
    changed = sequence_changed(db, sequence, step, row)
    return f"will be cancelled: {changed}" if changed else None


def _entry(
    workspace,
    db,
    clock,
    contact,
    sequence,
    step,
    row,
    start: datetime,
    planned: list,
    *,
    problem: str | None = None,
    lead: str | None = None,
    late_skip: str | None = None,
) -> dict[str, Any]:
    """One preview line. ``lead`` opens a projected step's why; ``late_skip``
    is why the engine will skip it after a missed ``until`` wait."""
    zone = contact_zone(workspace, contact)
    send_at = start
    to = refused = None
    consent = consent_channel_of(step) if step is not None else None
    if consent in CHANNELS:
        # The send path's own choice and check: a text goes to a mobile
        # first and never to a fax or an extension, and a contact with no
        # such phone shows as skipped here as the runner will skip it.
        facts = consent_facts(db, [contact], (consent,))
        to = facts.address(contact, consent)
        try:
            facts.check(contact, consent)
        except ConsentRefused as exc:
            refused = exc
    if late_skip is not None:
        # The engine skips the step before the runner could check its condition.
        condition, condition_why = None, None
    else:
        condition, condition_why = _condition(workspace, db, clock, contact, step, row)

    note, held = (None, None)
    if problem is None:
        note, held = _stored_note(db, sequence, step, row)
        if held is not None and start <= clock.now():
            # The deferral has run out: the checks below say what holds it now.
            held = None
    why: list[str] = [part for part in (lead, note) if part]
    if problem is not None and condition == "cannot be checked":
        # The file is held for its problems; a condition that cannot be
        # checked (a segment renamed in cxm.toml) is the likely one, and says
        # more than "has problems". The runner holds the step meanwhile.
        why.append(condition_why.replace("will fail:", "held:", 1))
    elif problem is not None:
        why.append(problem)
    elif late_skip is not None:
        why.append(f"will be skipped: {late_skip}")
    elif condition_why or refused is not None:
        if held is not None:
            zone_shown = window_for(workspace, contact).zone
            why.append(f"{held} until {_local(start, zone_shown)}")
        if condition_why:
            why.append(condition_why)
        elif refused.reason == "opted_out":
            why.append(f"will be skipped: opted out of {consent}")
        else:
            why.append(f"will be skipped: {refused.message}")
    elif step.kind in CONTACT_FACING_KINDS or step.spec.get("channel"):
        send_at, reasons = _when_allowed(
            workspace, db, contact, sequence, step, row, start, planned, held
        )
        why.extend(reasons)
    if not why:
        why.append("queued")
    return {
        "due_step_id": row["id"] if row is not None else None,
        "contact_id": contact["id"],
        "contact": contact.get("display_name") or contact.get("email") or "",
        "sequence": row["sequence"] if row is not None else sequence.name,
        "step": step.describe() if step else f"{row['step_index'] + 1} ({row['kind']})",
        "kind": step.kind if step else row["kind"],
        "channel": channel_of(step) if step else None,
        "to": to,
        "due_at": row["due_at"] if row is not None else clocks.iso(start),
        "send_at": clocks.iso(send_at),
        "local_time": send_at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
        "projected": row is None,
        "condition": condition,
        "why": "; ".join(why),
        "send_at_dt": send_at,
    }


def _stored_note(db, sequence, step, row) -> tuple[str | None, str | None]:
    """The row's note as ``(history, held)``, or neither when it is stale.

    The runner overwrites the note each time it puts the row back, so after
    an edit of the sequence file it may speak of another step. ``history``
    (how the due time was worked out, a retry count) is shown as it is;
    ``held`` names a deferral (quiet hours, a cap, a rate limit) that holds
    the step until its due time, shown as the preview's own reasons are.
    """
    note = row.get("note")
    if not note:
        return None, None
    channel = channel_of(step)
    if note.startswith("quiet hours:"):
        windowed = channel or step.kind in CONTACT_FACING_KINDS
        return None, "quiet hours" if windowed else None
    if note.startswith("cap: "):
        return None, note if _cap_applies(note, sequence, step) else None
    if note.startswith("rate limit of "):
        sender = note.removeprefix("rate limit of ")
        return None, note if sender.split(":")[0] == consent_channel_of(step) else None
    if note.endswith("has problems (see cxm sequences validate)"):
        # Whether the file still has them is the preview's own check.
        return None, None
    if _RETRY_NOTE.fullmatch(note) and not _retried_this_step(db, step, row):
        return None, None
    return note, None


def _cap_applies(note: str, sequence, step) -> bool:
    """Whether a cap the runner named could hold this step (same channel)."""
    channel = channel_of(step)
    workspace_cap = _WORKSPACE_CAP_NOTE.match(note)
    if workspace_cap is not None:
        return workspace_cap.group(1) == channel and not caps_exempt(sequence, step)
    # A state's legal limit on texts and calls, which no sequence can lift.
    return channel in STRICT_CHANNELS


def _retried_this_step(db, step, row) -> bool:
    """Whether a "retry N of M" note was written for this step's kind and
    channel: a row that remembers its step was found by it (step_for); an
    older row only by position and kind, so its last message tells."""
    if row.get("step_key") is not None:
        return split_row_key(row["step_key"])[0] == step.key
    message = fetch_one(
        db,
        "SELECT channel FROM messages WHERE due_step_id = ? ORDER BY id DESC LIMIT 1",
        [row["id"]],
    )
    return message is None or message["channel"] == channel_of(step)


def _condition(
    workspace, db, clock, contact, step, row
) -> tuple[str | None, str | None]:
    """The step's ``when:`` as the runner will judge it, and why it stops it.

    Returns ``(state, why)``: state is None (no condition), ``holds``, ``does
    not hold`` or ``cannot be checked``; why is set when the step will not go.
    """
    when = step.spec.get("when") if step is not None else None
    if not when:
        return None, None
    # The same context the runner builds (dispatch._run), read as of now.
    ctx = ConditionContext(
        db,
        workspace,
        contact,
        event_data=loads(row["trigger_data"], {}),
        since=row["enrolled_at"],
        clock=clock,
    )
    try:
        holds = evaluate(when, ctx)
    except CxmError as exc:
        # A segment renamed in cxm.toml after enrolment, say: show the step
        # held with the problem instead of failing the whole preview.
        return "cannot be checked", (
            f"will fail: its condition (when:) cannot be checked: {exc.message}"
        )
    if holds:
        return "holds", None
    return "does not hold", (
        "will be skipped: its condition (when:) does not hold "
        "(checked now; may change before it is due)"
    )


def _when_allowed(workspace, db, contact, sequence, step, row, start, planned, held):
    """The first moment from ``start`` at which the runner's checks let the
    step go, and the reasons it waits, in the order the runner meets them.

    ``held`` is a deferral the runner recorded that holds the step until
    ``start``; it comes first. A message timed before an event that they
    would hold past the event's time shows as skipped, as the runner will
    skip it (:func:`cxm_cli.waits.deadline_for`).
    """
    reasons: list[tuple[str, datetime | None]] = []
    if held is not None:
        reasons.append((held, start))
    channel = channel_of(step)
    window = window_for(workspace, contact)
    deadline = deadline_for(sequence, step, loads(row["trigger_data"], {}))
    late = deadline and deadline.passed(start, window.zone)
    moment = start
    for _ in range(MAX_ROUNDS):
        if late:
            break
        # As in dispatch.precheck: the window first, then the caps.
        opened = window.next_open(moment)
        if opened != moment:
            late = deadline and deadline.held_past(
                "quiet hours last", opened, window.zone
            )
            if late:
                break
            _hold(reasons, "quiet hours", opened)
            moment = opened
        if not channel:
            break
        # The caps as the runner will count them when it gets there: sends
        # up to that moment, in that moment's local day. check_caps reads
        # both from its clock (its ``at`` argument is unused), so it gets a
        # clock stopped at the moment; with the real one, a day cap lifts
        # at the next midnight forever and the search never settles.
        decision = check_caps(
            db,
            workspace,
            contact,
            channel,
            clock=clocks.FakeClock(moment),
            exempt=caps_exempt(sequence, step),
            due_step_id=row["id"],
            planned=planned,
        )
        if decision.allowed:
            break
        # The runner's own deferral ends when the window next opens.
        until = window.next_open(decision.until)
        late = deadline and deadline.held_past(decision.reason, until, window.zone)
        if late:
            break
        _hold(reasons, decision.reason, decision.until)
        # Always forward, so a cap that names the present cannot loop.
        moment = max(decision.until, moment + timedelta(seconds=1))
    else:
        reasons.append(
            (f"no free moment found in {MAX_ROUNDS} checks; the runner retries", None)
        )
    if channel and not late:
        planned.append((channel, moment))
    if not reasons and not late:
        return moment, ["in the send window"]
    texts = [
        f"{reason} until {_local(until, window.zone)}" if until else reason
        for reason, until in reasons
    ]
    shown = [*texts[:1], *(f"then {text}" for text in texts[1:])]
    # The runner skips it at ``moment``, when the hold that is too long begins.
    return moment, [*shown, f"will be skipped: {late}"] if late else shown


def _hold(reasons: list, reason: str, until: datetime) -> None:
    """Add a reason the step waits; the same one again just moves its end."""
    if reasons and reasons[-1][0] == reason:
        reasons[-1] = (reason, max(until, reasons[-1][1]))
    else:
        reasons.append((reason, until))


def _local(moment: datetime, zone) -> str:
    return moment.astimezone(zone).strftime("%a %H:%M %Z")


def _project(
    workspace,
    db,
    clock,
    contact,
    sequence,
    step,
    row,
    after: datetime,
    horizon: datetime,
    planned: list,
) -> list[dict[str, Any]]:
    """The steps after a queued one, as far as their timing can be known.

    A message after an ``until`` wait whose time will have passed shows as
    skipped, as :func:`cxm_cli.engine.schedule_from` will skip it.
    """
    # Limitation: projections stop at a branch, goto, switch or end, and assume
    # each projected step runs as soon as it is allowed (no failures, retries
    # or exits); they are a forecast, the queued step is the commitment.
    # Limitation: a wait's own when: is not checked; the engine passes over
    # a wait whose condition does not hold, so such a wait may end sooner.
    if step.kind in UNPREDICTABLE_KINDS:
        return []
    zone = contact_zone(workspace, contact)
    calendar = workspace_calendar(workspace)
    trigger_data = loads(row["trigger_data"], {})
    moment = after
    missed = None
    entries: list[dict[str, Any]] = []
    for following in sequence.steps[step.index + 1 :]:
        if following.kind == "wait":
            try:
                spec = parse_wait(following.spec.get("wait"))
                missed = missed_wait(spec, moment, trigger_data) or missed
                moment, _ = wait_until(spec, moment, zone, calendar, trigger_data)
            except ValueError:
                break
            continue
        if moment > horizon or following.kind in UNPREDICTABLE_KINDS:
            break
        late_skip = None
        # schedule_from holds back only what reaches the contact, and only
        # the step right after the waits.
        if missed is not None and following.kind in CONTACT_FACING_KINDS:
            later = [
                s.spec.get("wait")
                for s in sequence.steps[following.index + 1 :]
                if s.kind == "wait"
            ]
            late_skip = late_skip_reason(missed, moment, later)
        missed = None
        fake_row = {
            "id": None,
            "sequence": sequence.name,
            "step_index": following.index,
            "kind": following.kind,
            "due_at": clocks.iso(moment),
            "trigger_data": row["trigger_data"],
            "enrolled_at": row["enrolled_at"],
        }
        entry = _entry(
            workspace,
            db,
            clock,
            contact,
            sequence,
            following,
            fake_row,
            moment,
            planned,
            lead=f"projected after step {step.number}",
            late_skip=late_skip,
        )
        entry["due_step_id"] = None
        entry["projected"] = True
        entries.append(entry)
        moment = entry["send_at_dt"]
    return [e for e in entries if e["send_at_dt"] <= horizon]


def _render(
    workspace, db, clock, contact, step: StepDef, trigger_data
) -> dict[str, Any]:
    if step.kind != "send":
        return {}
    from cxm_cli.messaging import send_message

    try:
        sent = send_message(
            workspace,
            db,
            clock,
            contact["id"],
            step.spec["send"],
            template=step.spec.get("template"),
            text=step.spec.get("text"),
            subject=step.spec.get("subject"),
            extra=trigger_data,
            dry_run=True,
        )
    except CxmError as exc:
        return {"would": f"not send: {exc.message}"}
    rendered = sent.rendered
    return {
        "to": sent.address,
        "subject": rendered.subject if rendered else None,
        "body": rendered.body if rendered else None,
    }


def engine_status(workspace, db, clock) -> dict[str, Any]:
    """Queue depth, failures, enrollments, the last run and the runner lease."""
    now = clock.now()
    day_ago = clocks.iso(now - timedelta(days=1))
    counts = queue_counts(db, clock=clock)
    failures = fetch_one(
        db,
        "SELECT COUNT(*) AS n FROM events WHERE type = 'step.failed' "
        "AND recorded_at >= ?",
        [day_ago],
    )
    enrollments = {
        row["status"]: row["n"]
        for row in db.query(
            "SELECT status, COUNT(*) AS n FROM enrollments GROUP BY status"
        )
    }
    last_run = fetch_one(db, "SELECT * FROM runner_runs ORDER BY id DESC LIMIT 1")
    if last_run is not None and not last_run["finished_at"]:
        _unfinished_run(db, last_run)
    lease = lease_status(db, clock=clock)
    sequence_set = load_sequences(workspace)
    return {
        "queue": counts,
        "failed_last_24h": failures["n"] if failures else 0,
        "enrollments": {
            "active": enrollments.get("active", 0),
            "completed": enrollments.get("completed", 0),
            "exited": enrollments.get("exited", 0),
        },
        "last_run": last_run,
        "runner_lease": lease,
        "sequences": {
            "active": sorted(sequence_set.active),
            "with_problems": sorted(sequence_set.invalid),
            "tasks_without_staff": tasks_without_staff(workspace, sequence_set),
        },
    }


def _unfinished_run(db, run: dict[str, Any]) -> None:
    """A run with no finish recorded: still going (its counts so far, which
    the runner writes only between passes), or killed (its process is gone)."""
    from cxm_cli.runner import runner_alive

    run["state"] = "running" if runner_alive(run["runner"]) else "stopped"
    counts = dict(
        db.execute(
            "SELECT status, COUNT(*) FROM due_steps WHERE claimed_by = ? "
            "AND status IN ('done', 'failed') GROUP BY status",
            [run["runner"]],
        ).fetchall()
    )
    run["steps_done"] = max(run["steps_done"] or 0, counts.get("done", 0))
    run["steps_failed"] = max(run["steps_failed"] or 0, counts.get("failed", 0))
