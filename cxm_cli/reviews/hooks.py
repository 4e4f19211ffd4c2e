"""The ``reviews`` event hook: SMS answers, and the guard around finished jobs.

- ``message.received`` on SMS from a contact with an open SMS review request
  is read as a rating (or, after a low score's invitation, as feedback);
- a job event (``reviews.trigger_on``: a completed appointment, a paid
  invoice) schedules a guarded request due after ``guard_delay_hours``;
- a refund or cancellation (``reviews.cancel_on``) during the delay cancels it.
"""

from __future__ import annotations

import logging

from cxm_cli.errors import ConfigError, CxmError
from cxm_cli.events import Event, on_event, on_events
from cxm_cli.reviews import answers, requests
from cxm_cli.reviews.platforms import usable_platforms
from cxm_cli.reviews.settings import ReviewSettings
from cxm_cli.workspace import workspace_of

log = logging.getLogger(__name__)

# Event types that never start, stop or answer a review request, skipped
# before the workspace is looked up so the busiest events cost nothing.
_NEVER = {
    "message.sent",
    "message.status",
    "step.sent",
    "step.deferred",
    "review.requested",
    "review.rated",
    "feedback.received",
    "staff.alerted",
}


@on_event("reviews")
def on_review_event(db, event: Event, clock) -> None:
    if event.contact_id is None or event.type in _NEVER:
        return
    try:
        workspace = workspace_of(db)
    except CxmError:
        return  # a database outside any workspace (a benchmark's bare file)
    try:
        settings = ReviewSettings.of(workspace)
    except ConfigError as exc:
        # A broken [reviews] section must not stop the timeline from recording
        # (imports, inbound texts); requests and answers wait until it is fixed.
        log.warning("reviews hook skipped event %s: %s", event.id, exc.message)
        return

    if event.type == "message.received":
        if event.data.get("channel") == "sms":
            answers.handle_inbound_sms(workspace, db, clock, event)
        return
    if event.type in settings.cancel_on:
        requests.cancel_guarded(workspace, db, clock, event)
    if event.type in settings.trigger_on and _platforms_ready(workspace):
        requests.schedule_guarded(workspace, db, clock, event)


@on_events("reviews")
def on_review_events(db, events: list[Event], clock) -> None:
    """The hook for many events at once: settings read once, not per event."""
    wanted = [
        event
        for event in events
        if event.contact_id is not None and event.type not in _NEVER
    ]
    if not wanted:
        return
    try:
        settings = ReviewSettings.of(workspace_of(db))
    except CxmError:
        # No workspace, or a broken [reviews] section: the one-event hook
        # knows what to say about each.
        settings = None
    for event in wanted:
        if (
            settings is None
            or event.type == "message.received"
            or event.type in settings.cancel_on
            or event.type in settings.trigger_on
        ):
            on_review_event(db, event, clock)


def _platforms_ready(workspace) -> bool:
    try:
        return bool(usable_platforms(workspace))
    except ConfigError as exc:
        log.warning("review platforms misconfigured: %s", exc.message)
        return False
