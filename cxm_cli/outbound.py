"""Last touches on an outgoing message, contributed by other parts of cxm.

Before a message is sent, every registered decorator may add to it (an email's
List-Unsubscribe headers, tracking links). Decorators must not send anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OutboundDecorator = Callable[..., None]
_DECORATORS: dict[str, OutboundDecorator] = {}


def register_decorator(name: str) -> Callable[[OutboundDecorator], OutboundDecorator]:
    """Register ``decorator(workspace, db, message, contact, message_id)``.

    ``message`` is a :class:`cxm_cli.channels.OutboundMessage` to change in
    place; ``message_id`` is the id of its row in ``messages``.
    """

    def register(decorator: OutboundDecorator) -> OutboundDecorator:
        _DECORATORS[name] = decorator
        return decorator

    return register


def decorate(workspace, db, message, contact: dict[str, Any], message_id: int) -> None:
    for decorator in _DECORATORS.values():
        decorator(workspace, db, message, contact, message_id)
