"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

Tests point the workspace's ``[smtp]`` settings at it and read
``server.messages`` afterwards. ``fail_next(code, count)`` makes the next
``count`` deliveries get an SMTP error reply instead (451 for a transient
problem, 550 for a permanent one).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage

    def body_text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""


@dataclass
class _Failure:
    code: int
    remaining: int
    text: str


@dataclass
class _Handler:
    messages: list[ReceivedMail] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.failures:
                failure = self.failures[0]
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failures.pop(0)
                return f"{failure.code} {failure.text}"
            raw = envelope.original_content or envelope.content
            parsed = message_from_bytes(raw, policy=policy.default)
            self.messages.append(
                ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), raw, parsed)
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    """Start with :meth:`start`, stop with :meth:`stop` (the fixture does both)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._handler = _Handler()
        self._controller = Controller(self._handler, hostname=self.host, port=self.port)

    @property
    def messages(self) -> list[ReceivedMail]:
        return self._handler.messages

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def fail_next(self, code: int, count: int = 1, text: str = "") -> None:
        """Answer the next ``count`` messages with ``code`` instead of 250."""
        text = text or ("Try again later" if code < 500 else "Mailbox unavailable")
        with self._handler.lock:
            self._handler.failures.append(_Failure(code, count, text))

    def settings(self) -> dict[str, object]:
        """cxm.toml settings that send email here (plain SMTP, no login)."""
        return {
            "channels.email": "smtp",
            "smtp.host": self.host,
            "smtp.port": self.port,
            "smtp.security": "none",
            "smtp.timeout_seconds": 10,
        }

    def configure(self, workspace):
        """Point ``workspace`` at this server; returns the reloaded workspace."""
        from tests.support.fixtures import update_settings

        return update_settings(workspace, self.settings())


def _free_port() -> int:
    # aiosmtpd checks readiness by connecting to its port, so it needs a real
    # number up front rather than port 0.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
