"""The step kinds built into the engine, registered in :mod:`cxm_cli.steps`.

Each kind validates its own fields (problems start with the field name and a
colon, so ``cxm sequences validate`` can point at the right line) and runs
through :func:`cxm_cli.dispatch.process_step`, which handles quiet hours, caps,
retries and the timeline around it.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from cxm_cli import clock as clocks
from cxm_cli import queue
from cxm_cli.conditions import (
    ConditionContext,
    did_you_mean,
    evaluate,
    validate_condition,
)
from cxm_cli.contacts import add_tag, remove_tag
from cxm_cli.errors import ChannelError, ConfigError
from cxm_cli.rendering import syntax_problem
from cxm_cli.steps import StepContext, StepOutcome, step_kind
from cxm_cli.store import fetch_one, write_transaction
from cxm_cli.waits import parse_timedelta, parse_wait

log = logging.getLogger(__name__)

COMMON = {"kind", "name", "when"}
MESSAGE_CHANNELS = ("sms", "email")
# Steps that reach the person: quiet hours, caps and opt-outs apply to them.
CONTACT_FACING_KINDS = {"send", "voicemail", "review_request"}


def _unknown_fields(step: dict[str, Any], allowed: set[str]) -> list[str]:
    known = allowed | COMMON
    return [
        f"{key}: unknown field for a {step['kind']} step{did_you_mean(key, known)}"
        for key in step
        if key not in known
    ]


def _condition_problems(value: Any, field: str) -> list[str]:
    return [f"{field}: {message}" for _, message in validate_condition(value)]


def _duration_problems(step: dict[str, Any], field: str) -> list[str]:
    """The problem with an optional duration field such as ``10s`` or ``2h``."""
    if step.get(field) is None:
        return []
    try:
        parse_timedelta(step[field])
    except ValueError as exc:
        return [f"{field}: {exc}"]
    return []


# ---------------------------------------------------------------- wait


def validate_wait(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"wait"})
    try:
        parse_wait(step.get("wait"))
    except ValueError as exc:
        problems.append(f"wait: {exc}")
    return problems


@step_kind("wait", validate=validate_wait)
def run_wait(ctx: StepContext) -> StepOutcome:
    """Wait: a duration, a time of day, business days, or a date in the event."""
    # Waits are worked out when the following step is queued; nothing to do.
    return StepOutcome("done", detail="wait over")


# ---------------------------------------------------------------- send


def validate_send(step: dict[str, Any]) -> list[str]:
    allowed = {
        "send",
        "template",
        "text",
        "subject",
        "keywords",
        "keywords_window",
        "caps",
    }
    problems = _unknown_fields(step, allowed)
    channel = step.get("send")
    if channel not in MESSAGE_CHANNELS:
        hint = did_you_mean(str(channel), MESSAGE_CHANNELS)
        problems.append(f"send: unknown channel {channel!r}{hint}; use sms or email")
    has_template = isinstance(step.get("template"), str) and step["template"].strip()
    has_text = isinstance(step.get("text"), str) and step["text"].strip()
    if has_template == has_text:
        problems.append(
            "template: give a template name (or a text), not both or neither"
        )
    if step.get("subject") is not None and not isinstance(step.get("subject"), str):
        problems.append("subject: must be text")
    for key in ("text", "subject"):
        if isinstance(step.get(key), str):
            problem = syntax_problem(step[key])
            if problem:
                problems.append(f"{key}: {problem}")
    problems.extend(_validate_keywords(step))
    if "caps" in step and not isinstance(step["caps"], bool):
        problems.append("caps: must be true or false")
    return problems


def _validate_keywords(step: dict[str, Any]) -> list[str]:
    keywords = step.get("keywords")
    problems = []
    if keywords is not None:
        if not isinstance(keywords, dict) or not keywords:
            problems.append(
                "keywords: write a mapping such as {C: appointment.confirmed}"
            )
        else:
            for word, event_type in keywords.items():
                if " " in str(word).strip() or not str(word).strip():
                    problems.append(f"keywords: {word!r} must be one word")
                if not isinstance(event_type, str) or not event_type.strip():
                    problems.append(f"keywords: {word!r} must name an event type")
    problems.extend(_duration_problems(step, "keywords_window"))
    return problems


@step_kind("send", validate=validate_send)
def run_send(ctx: StepContext) -> StepOutcome:
    """Send a text or an email from a template, through cxm's one send path."""
    from cxm_cli.messaging import send_message

    channel = ctx.step["send"]
    on_recorded = None
    if ctx.record_outcome is not None:

        def on_recorded(sent) -> None:
            ctx.record_outcome(sent_outcome(ctx, channel, sent))

    sent = send_message(
        ctx.workspace,
        ctx.db,
        ctx.clock,
        ctx.contact["id"],
        channel,
        template=ctx.step.get("template"),
        text=ctx.step.get("text"),
        subject=ctx.step.get("subject"),
        extra=ctx.trigger_data,
        due_step_id=ctx.due_step_id,
        source="runner",
        automated=True,
        event_data={"sequence": ctx.enrollment.get("sequence")},
        dry_run=ctx.dry_run,
        on_recorded=on_recorded,
    )
    return sent_outcome(ctx, channel, sent)


def sent_outcome(ctx: StepContext, channel: str, sent) -> StepOutcome:
    data: dict[str, Any] = {
        "message_id": sent.message_id,
        "channel": channel,
        "template": ctx.step.get("template"),
    }
    if sent.rendered is not None:
        data["body"] = sent.rendered.body
        data["subject"] = sent.rendered.subject
    if ctx.step.get("keywords"):
        data["keywords"] = ctx.step["keywords"]
        data["keywords_window"] = ctx.step.get("keywords_window")
    return StepOutcome("done", detail=f"{channel} message {sent.message_id}", data=data)


# ---------------------------------------------------------------- voicemail


def validate_voicemail(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"voicemail", "caps"})
    url = step.get("voicemail")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        problems.append("voicemail: give the recording's URL (https://...)")
    return problems


@step_kind("voicemail", validate=validate_voicemail)
def run_voicemail(ctx: StepContext) -> StepOutcome:
    """Drop a recorded voicemail on the contact's phone through the SMS provider."""
    from cxm_cli.messaging import drop_voicemail

    audio_url = ctx.step["voicemail"]
    on_recorded = None
    if ctx.record_outcome is not None:

        def on_recorded(sent) -> None:
            ctx.record_outcome(_voicemail_outcome(sent))

    sent = drop_voicemail(
        ctx.workspace,
        ctx.db,
        ctx.clock,
        ctx.contact["id"],
        audio_url,
        due_step_id=ctx.due_step_id,
        source="runner",
        automated=True,
        event_data={"sequence": ctx.enrollment.get("sequence")},
        reuse=_claimed_before(ctx.db, ctx.due_step_id),
        dry_run=ctx.dry_run,
        on_recorded=on_recorded,
    )
    if ctx.dry_run:
        return StepOutcome("done", detail=f"would drop voicemail {audio_url}")
    return _voicemail_outcome(sent)


def _voicemail_outcome(sent) -> StepOutcome:
    return StepOutcome(
        "done",
        detail=f"voicemail {sent.message_id}",
        data={"message_id": sent.message_id, "channel": "voicemail"},
    )


def _claimed_before(db, due_step_id: int | None) -> bool:
    """Whether a runner had this due step before (it may have left its
    voicemail row 'sending'): the test the batch makes for a text."""
    if due_step_id is None:
        return False
    row = fetch_one(
        db, "SELECT claims, attempts FROM due_steps WHERE id = ?", [due_step_id]
    )
    return row is not None and queue.claimed_before(row)


# ---------------------------------------------------------------- staff tasks


def validate_task(step: dict[str, Any]) -> list[str]:
    kind = step["kind"]
    problems = _unknown_fields(step, {kind, "to", "via", "url", "details"})
    if not isinstance(step.get(kind), str) or not step[kind].strip():
        problems.append(
            f"{kind}: write what staff should do, e.g. Call {{{{ first_name }}}}"
        )
    for key in (kind, "details"):
        if isinstance(step.get(key), str):
            problem = syntax_problem(step[key])
            if problem:
                problems.append(f"{key}: {problem}")
    via = step.get("via", "email")
    if via not in ("email", "webhook"):
        problems.append(f"via: {via!r} is not email or webhook")
    if step.get("to") is not None:
        problems.extend(_staff_address_problems(step["to"]))
    if via == "webhook" and not str(step.get("url") or "").startswith(
        ("http://", "https://")
    ):
        problems.append("url: a webhook task needs url: https://...")
    return problems


def _staff_address_problems(to: Any) -> list[str]:
    from email_validator import EmailNotValidError, validate_email

    if not isinstance(to, str) or not to.strip():
        return ["to: give the staff email address"]
    try:
        validate_email(to.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return [f"to: {to!r} is not an email address ({exc})"]
    return []


def _run_task(ctx: StepContext) -> StepOutcome:
    from cxm_cli.rendering import render_text

    kind = ctx.step["kind"]
    title = render_text(
        ctx.workspace,
        ctx.step[kind],
        ctx.contact,
        extra=ctx.trigger_data,
        channel="email",
        db=ctx.db,
    )
    details = ctx.step.get("details")
    body = (
        render_text(
            ctx.workspace,
            details,
            ctx.contact,
            extra=ctx.trigger_data,
            channel="email",
            db=ctx.db,
        )
        if details
        else ""
    )
    if ctx.step.get("via", "email") == "webhook":
        payload = {
            "type": "task",
            "title": title,
            "details": body,
            **_payload_base(ctx),
        }
        if ctx.dry_run:
            return StepOutcome("done", detail=f"would post task to {ctx.step['url']}")
        post_json(ctx.step["url"], payload, timeout=10.0, key=f"step-{ctx.due_step_id}")
        return StepOutcome("done", detail=f"task posted: {title}")

    staff = ctx.step.get("to") or ctx.workspace.setting("staff.email")
    if not staff:
        # Failed, not skipped: the person may have been promised a call, and
        # a failure is what `cxm status` and the runner's exit code show.
        return StepOutcome(
            "failed",
            detail="no staff address for the task: set [staff] email in cxm.toml "
            "(or to: on the step)",
        )
    if ctx.dry_run:
        return StepOutcome("done", detail=f"would email task to staff: {title}")
    _email_staff(ctx, str(staff), title, body)
    return StepOutcome("done", detail=f"task emailed to staff: {title}")


def _email_staff(ctx: StepContext, staff: str, title: str, body: str) -> None:
    from cxm_cli.channels import OutboundMessage, get_channel

    contact = ctx.contact
    lines = [
        title,
        "",
        body,
        "",
        f"Contact {contact['id']}: {contact.get('display_name') or ''}",
        f"Email: {contact.get('email') or '-'}   Phone: {contact.get('phone') or '-'}",
        f"Sequence: {ctx.enrollment.get('sequence')}",
        f"Timeline: cxm timeline {contact['id']}",
    ]
    message = OutboundMessage(
        channel="email",
        to=staff,
        subject=f"[cxm task] {title}"[:200],
        body="\n".join(line for line in lines if line is not None).strip() + "\n",
        contact_id=None,
        idempotency_key=f"task-{ctx.due_step_id}",
    )
    get_channel(ctx.workspace, "email").send(message)


step_kind("task", validate=validate_task)(_run_task)
step_kind("notify", validate=validate_task)(_run_task)
_run_task.__doc__ = (
    "Tell staff to do something: an email to [staff] email, or a webhook."
)


# ---------------------------------------------------------------- webhook


def validate_webhook(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"webhook", "payload", "timeout", "secret_env"})
    if not str(step.get("webhook") or "").startswith(("http://", "https://")):
        problems.append("webhook: give the URL to POST to (https://...)")
    if step.get("payload") is not None and not isinstance(step["payload"], dict):
        problems.append("payload: must be a mapping of extra fields")
    problems.extend(_duration_problems(step, "timeout"))
    return problems


@step_kind("webhook", validate=validate_webhook)
def run_webhook(ctx: StepContext) -> StepOutcome:
    """POST the contact and the trigger's data as JSON to a URL."""
    payload = {"type": "sequence.step", **_payload_base(ctx)}
    payload["data"] = dict(ctx.step.get("payload") or {})
    timeout = parse_timedelta(ctx.step.get("timeout") or "10s").total_seconds()
    headers = {}
    secret_env = ctx.step.get("secret_env")
    if secret_env:
        secret = ctx.workspace.secret(secret_env)
        if not secret:
            raise ConfigError(
                f"webhook step: environment variable {secret_env} is empty"
            )
        headers["Authorization"] = f"Bearer {secret}"
    if ctx.dry_run:
        return StepOutcome("done", detail=f"would POST to {ctx.step['webhook']}")
    status = post_json(
        ctx.step["webhook"],
        payload,
        timeout=timeout,
        key=f"step-{ctx.due_step_id}",
        headers=headers,
    )
    return StepOutcome("done", detail=f"webhook answered HTTP {status}")


def _payload_base(ctx: StepContext) -> dict[str, Any]:
    contact = ctx.contact
    return {
        "sequence": ctx.enrollment.get("sequence"),
        "step": ctx.step.get("name"),
        "due_step_id": ctx.due_step_id,
        "at": clocks.now_iso(ctx.clock),
        "contact": {
            key: contact.get(key)
            for key in (
                "id",
                "display_name",
                "first_name",
                "last_name",
                "email",
                "phone",
                "source",
                "company",
            )
        },
        "trigger": ctx.trigger_data,
    }


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float,
    key: str,
    headers: dict[str, str] | None = None,
) -> int:
    """POST JSON; ChannelError (transient for timeouts, 429, 5xx) on failure."""
    all_headers = {"Idempotency-Key": key, **(headers or {})}
    try:
        response = requests.post(
            url, json=payload, timeout=timeout, headers=all_headers
        )
    except requests.Timeout as exc:
        raise ChannelError(
            f"webhook timed out after {timeout:g}s", transient=True
        ) from exc
    except requests.RequestException as exc:
        raise ChannelError(
            f"webhook unreachable: {exc.__class__.__name__}", transient=True
        ) from exc
    if response.status_code < 300:
        return response.status_code
    transient = response.status_code == 429 or response.status_code >= 500
    raise ChannelError(
        f"webhook answered HTTP {response.status_code}",
        transient=transient,
        provider_code=str(response.status_code),
    )


# ---------------------------------------------------------------- tags


def _validate_tag(step: dict[str, Any]) -> list[str]:
    kind = step["kind"]
    problems = _unknown_fields(step, {kind})
    value = step.get(kind)
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        problems.append(f"{kind}: name the tag (or a list of tags)")
    return problems


def _tags(ctx: StepContext) -> list[str]:
    value = ctx.step[ctx.step["kind"]]
    return [str(v).strip() for v in (value if isinstance(value, list) else [value])]


def _change_tags(ctx: StepContext, change, done: str) -> StepOutcome:
    """Apply ``change`` (add_tag or remove_tag) for each of the step's tags."""
    if not ctx.dry_run:
        with write_transaction(ctx.db):
            for tag in _tags(ctx):
                change(ctx.db, ctx.contact["id"], tag, clock=ctx.clock, source="runner")
    return StepOutcome("done", detail=f"{done} {', '.join(_tags(ctx))}")


@step_kind("add_tag", validate=_validate_tag)
def run_add_tag(ctx: StepContext) -> StepOutcome:
    """Add a tag (or several) to the contact."""
    return _change_tags(ctx, add_tag, "tagged")


@step_kind("remove_tag", validate=_validate_tag)
def run_remove_tag(ctx: StepContext) -> StepOutcome:
    """Remove a tag (or several) from the contact."""
    return _change_tags(ctx, remove_tag, "untagged")


# ---------------------------------------------------------------- flow


def validate_branch(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"branch", "goto", "else"})
    problems.extend(_condition_problems(step.get("branch"), "branch"))
    if step.get("goto") is None:
        problems.append("goto: a branch needs goto: STEP-NAME for when it holds")
    return problems


@step_kind("branch", validate=validate_branch)
def run_branch(ctx: StepContext) -> StepOutcome:
    """Go to another step when a condition holds (else to ``else`` or on)."""
    holds = evaluate(
        ctx.step["branch"],
        ConditionContext(
            ctx.db,
            ctx.workspace,
            ctx.contact,
            event_data=ctx.trigger_data,
            since=ctx.enrollment.get("enrolled_at"),
            clock=ctx.clock,
        ),
    )
    if holds:
        target = ctx.step["goto"]
        return StepOutcome(
            "goto", detail=f"condition holds: go to {target}", next_step=target
        )
    if ctx.step.get("else") is not None:
        target = ctx.step["else"]
        return StepOutcome(
            "goto", detail=f"condition does not hold: go to {target}", next_step=target
        )
    return StepOutcome("done", detail="condition does not hold")


def validate_goto(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"goto"})
    if step.get("goto") is None:
        problems.append("goto: name the step to go to")
    return problems


@step_kind("goto", validate=validate_goto)
def run_goto(ctx: StepContext) -> StepOutcome:
    """Continue at another step."""
    return StepOutcome(
        "goto", detail=f"go to {ctx.step['goto']}", next_step=ctx.step["goto"]
    )


def validate_switch(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"switch"})
    if not isinstance(step.get("switch"), str):
        problems.append("switch: name the sequence to switch to")
    return problems


@step_kind("switch", validate=validate_switch)
def run_switch(ctx: StepContext) -> StepOutcome:
    """Leave this sequence and enrol the contact in another."""
    return StepOutcome("switch", switch_to=ctx.step["switch"])


def validate_end(step: dict[str, Any]) -> list[str]:
    problems = _unknown_fields(step, {"end"})
    if step.get("end") is not None and not isinstance(step["end"], str):
        problems.append("end: the reason must be text")
    return problems


@step_kind("end", validate=validate_end)
def run_end(ctx: StepContext) -> StepOutcome:
    """Finish the sequence for this contact."""
    return StepOutcome("end", detail=ctx.step.get("end") or "end step")
