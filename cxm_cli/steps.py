"""The registry of sequence step kinds.

The engine runs a step by looking up its ``kind`` here. Parts of cxm add their
own kinds (moving a pipeline stage, asking for a review) by registering a
handler, so the engine never needs to know them. Each kind also validates its
own fields, which is how ``cxm sequences validate`` reports a bad step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class StepContext:
    """Everything a step handler may need while it runs for one contact."""

    db: Any
    workspace: Any
    clock: Any
    contact: dict[str, Any]
    enrollment: dict[str, Any]
    step: dict[str, Any]  # the step as written in the sequence file
    trigger_data: dict[str, Any] = field(default_factory=dict)
    due_step_id: int | None = None
    dry_run: bool = False
    # Set by the runner: a handler that sends a message may call it with its
    # outcome inside the transaction recording the send (messaging's
    # ``on_recorded``), so the message and the step's progress commit together.
    record_outcome: Callable[[StepOutcome], Any] | None = None


@dataclass
class StepOutcome:
    """What happened, for the queue and the timeline.

    ``status``: ``done`` (go on to the next step), ``failed`` (permanent),
    ``retry`` (transient; try again at ``retry_at``), ``deferred`` (not allowed
    now, e.g. quiet hours or a cap; run at ``retry_at``), ``skipped`` (not
    applicable, go on), ``goto`` (continue at ``next_step``), ``end`` (finish
    the enrollment), ``switch`` (end here and enrol in ``switch_to``).
    """

    status: str
    detail: str = ""
    retry_at: datetime | None = None
    next_step: int | str | None = None
    switch_to: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


StepHandler = Callable[[StepContext], StepOutcome]
StepValidator = Callable[[dict[str, Any]], list[str]]


@dataclass
class StepKind:
    name: str
    run: StepHandler
    validate: StepValidator
    description: str = ""


STEP_KINDS: dict[str, StepKind] = {}


def step_kind(
    name: str, *, validate: StepValidator | None = None, description: str = ""
) -> Callable[[StepHandler], StepHandler]:
    """Register ``handler(ctx) -> StepOutcome`` as the step kind ``name``.

    ``validate(step) -> [problem, ...]`` checks the step's fields when sequence
    files are loaded; each problem is a short sentence naming the field.
    """

    def register(handler: StepHandler) -> StepHandler:
        STEP_KINDS[name] = StepKind(
            name=name,
            run=handler,
            validate=validate or (lambda step: []),
            description=description or (handler.__doc__ or "").strip().split("\n")[0],
        )
        return handler

    return register
