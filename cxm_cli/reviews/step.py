"""The ``review_request`` sequence step.

::

    - review_request: auto    # or sms / email; auto follows reviews.channels

The step waits out the guard delay after the job that started the sequence
(``reviews.guard_delay_hours`` after a completed appointment or a paid
invoice), is skipped when a refund or cancellation came in meanwhile, and
otherwise asks through :func:`cxm_cli.reviews.requests.request_review` with
the same eligibility rules as every other way of asking.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from cxm_cli import clock as clocks
from cxm_cli.errors import ConfigError, CxmError
from cxm_cli.reviews.platforms import require_platforms
from cxm_cli.reviews.requests import guard_state, latest_job, request_review
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.steps import StepContext, StepOutcome, step_kind

log = logging.getLogger(__name__)

RETRY_MINUTES = 15


STEP_FIELDS = {"kind", "name", "when", "review_request", "channel", "caps"}
CHANNEL_CHOICES = (None, "sms", "email", "auto")
RATING_WORDS = ("rating", "review.", "feedback", "unhappy", "happy")


def validate_review_request(step: dict) -> list[str]:
    problems = [
        f"{key}: unknown field of a review_request step (known: channel)"
        for key in step
        if key not in STEP_FIELDS
    ]
    for key in ("review_request", "channel"):
        if step.get(key) not in CHANNEL_CHOICES:
            problems.append(f"{key}: must be sms, email or auto, not {step[key]!r}")
    if _mentions_ratings(step.get("when")):
        problems.append(
            "when: a review request may not depend on ratings or feedback; asking "
            "only people expected to be happy is review gating"
        )
    return problems


# Limitation: only the step's own `when:` is checked, and only by its words; a
# sequence whose trigger filters on a segment built from ratings, or a step
# condition naming such a segment, is not caught here (`cxm reviews request
# --segment` does refuse rating segments).
def _mentions_ratings(condition) -> bool:
    """Does a ``when:`` condition look at ratings, reviews or feedback?"""
    if isinstance(condition, dict):
        return any(
            _mentions_ratings(key) or _mentions_ratings(value)
            for key, value in condition.items()
        )
    if isinstance(condition, list):
        return any(_mentions_ratings(item) for item in condition)
    text = str(condition).lower() if condition is not None else ""
    return any(word in text for word in RATING_WORDS)


def step_channel(step: dict) -> str | None:
    """``- review_request: sms`` or ``channel: sms``; auto means the order in
    reviews.channels."""
    channel = step.get("channel") or step.get("review_request")
    return None if channel in (None, "auto") else channel


@step_kind(
    "review_request",
    validate=validate_review_request,
    description="Ask the contact for a review (after the guard delay; no gating).",
)
def run_review_request(ctx: StepContext) -> StepOutcome:
    """Ask the contact for a review (after the guard delay; no gating)."""
    workspace, db, clock = ctx.workspace, ctx.db, ctx.clock
    contact_id = ctx.contact["id"]
    channel = step_channel(ctx.step)

    try:
        require_platforms(workspace)
    except ConfigError as exc:
        # Nothing to ask for (no platform set up yet): say so, and go on.
        return StepOutcome("skipped", detail=exc.message)
    try:
        settings = ReviewSettings.of(workspace)
        job = _job_of(ctx, settings)
        state = guard_state(workspace, db, clock, contact_id, job)
    except ConfigError as exc:
        return StepOutcome("failed", detail=exc.message)

    if state.status == "cancelled":
        if state.request_id is not None:
            _cancel_row(db, clock, state.request_id, state.reason)
        return StepOutcome("skipped", detail=f"no review request: {state.reason}")
    if state.status == "waiting":
        return StepOutcome(
            "deferred",
            detail="guard delay: waiting in case of a refund or cancellation",
            retry_at=clocks.parse(state.due_at),
        )

    try:
        outcome = request_review(
            workspace,
            db,
            clock,
            contact_id,
            channel=channel,
            source="sequence",
            sequence=ctx.enrollment.get("sequence"),
            due_step_id=ctx.due_step_id,
            guard_request_id=state.request_id,
            job=job,
            dry_run=ctx.dry_run,
        )
    except ConfigError as exc:
        # No usable platform: nothing to ask for; the sequence goes on.
        return StepOutcome("skipped", detail=exc.message)
    except CxmError as exc:
        return StepOutcome("failed", detail=exc.message)

    detail = _describe(outcome)
    if outcome.status in ("sent", "already_sent", "would_send"):
        return StepOutcome("done", detail=detail, data=outcome.as_dict())
    if outcome.status == "deferred":
        return StepOutcome("deferred", detail=detail, retry_at=outcome.retry_at)
    if outcome.status == "failed" and outcome.transient:
        retry_at = clock.now() + timedelta(minutes=RETRY_MINUTES)
        return StepOutcome("retry", detail=detail, retry_at=retry_at)
    if outcome.status == "failed":
        return StepOutcome("failed", detail=detail, data=outcome.as_dict())
    return StepOutcome("skipped", detail=detail, data=outcome.as_dict())


def _job_of(ctx: StepContext, settings: ReviewSettings):
    """The finished job the sequence follows, when it was started by one."""
    trigger_type = ctx.enrollment.get("trigger_type")
    if trigger_type not in settings.trigger_on:
        return None
    return latest_job(
        ctx.workspace,
        ctx.db,
        ctx.contact["id"],
        event_id=ctx.enrollment.get("trigger_event_id"),
    )


def _cancel_row(db, clock, request_id: int, reason: str | None) -> None:
    db.execute(
        "UPDATE review_requests SET status = 'cancelled', reason = ?, updated_at = ? "
        "WHERE id = ? AND status = 'scheduled'",
        [reason, clocks.now_iso(clock), request_id],
    )


def _describe(outcome) -> str:
    names = ", ".join(p["name"] for p in outcome.platforms)
    if outcome.status == "sent":
        return (
            f"review request {outcome.request_id} sent by {outcome.channel} ({names})"
        )
    if outcome.status == "already_sent":
        return f"review request {outcome.request_id} was already sent"
    if outcome.status == "would_send":
        return f"would ask for a review by {outcome.channel} ({names})"
    return f"review request {outcome.status}: {outcome.reason}"
