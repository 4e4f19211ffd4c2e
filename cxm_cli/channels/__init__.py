"""How messages leave cxm.

Every channel takes an :class:`OutboundMessage` and returns a
:class:`SendResult`, or raises :class:`cxm_cli.errors.ChannelError` saying
whether the failure is transient (retry later) or permanent. ``get_channel``
picks the implementation named in cxm.toml's ``[channels]`` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class OutboundMessage:
    channel: str  # "email" or "sms"
    to: str  # email address or E.164 phone
    body: str
    subject: str | None = None
    contact_id: int | None = None
    # Stable per send attempt chain, so a retried send can be recognised.
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    html_body: str | None = None
    # This message id may have been handed to the channel before, by a runner
    # that died before recording the send: an idempotent channel checks first.
    resend: bool = False


@dataclass
class SendResult:
    provider_id: str | None
    status: str = "sent"
    detail: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """What every channel offers.

    A channel may also set ``idempotent = True`` and accept
    ``send(message, *, message_id=...)``: sending one message id twice then
    delivers it once (the outbox rewrites an email's file, and writes a text
    marked ``resend`` only if its line is missing), which lets the runner
    record a batch of its sends in one transaction. Channels without it are
    recorded message by message. An idempotent channel may also offer
    ``send_many([(message, message_id), ...])``, answering each one's result
    or error in order: the runner then hands it a batch's messages at once.
    """

    name: str

    def send(self, message: OutboundMessage) -> SendResult: ...


def get_channel(workspace, kind: str) -> Channel:
    """The channel configured in cxm.toml for ``kind`` ("email" or "sms")."""
    from cxm_cli.channels.registry import get_channel as build

    return build(workspace, kind)
