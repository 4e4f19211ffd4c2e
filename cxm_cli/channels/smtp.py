"""Email through an SMTP server (smtplib): STARTTLS, SSL or plain.

Settings come from cxm.toml's ``[smtp]`` section; the user name and password
from the environment variables it names (``username_env``, ``password_env``).
SMTP 4xx answers, refused connections, disconnects and timeouts are transient
(a retry may work); 5xx answers are permanent.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

from cxm_cli.channels import OutboundMessage, SendResult
from cxm_cli.errors import ChannelError, ConfigError

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "ssl", "none")


def sender_address(workspace) -> tuple[str, str]:
    """(display name, address) that outgoing email comes from."""
    address = str(workspace.setting("smtp.from_address", "") or "").strip()
    if not address or "@" not in address:
        raise ConfigError(
            "cxm.toml [smtp] from_address is missing or not an email address",
            hint='set from_address = "hello@your-business.com" under [smtp]',
        )
    name = str(workspace.setting("smtp.from_name", "") or workspace.business_name)
    return name, address


def new_message_id(workspace, token: str | None = None) -> str:
    """A unique RFC 5322 Message-ID on the sender's own domain."""
    _, address = sender_address(workspace)
    domain = address.rsplit("@", 1)[1]
    return make_msgid(idstring=token, domain=domain)


def build_email(workspace, message: OutboundMessage) -> EmailMessage:
    """The RFC 5322 message that goes out (or into the outbox) for ``message``."""
    name, address = sender_address(workspace)
    email = EmailMessage()
    email["From"] = formataddr((name, address))
    email["To"] = message.to
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False, usegmt=True)
    reply_to = workspace.setting("smtp.reply_to")
    if reply_to:
        email["Reply-To"] = str(reply_to)
    headers = dict(message.headers)
    email["Message-ID"] = headers.pop("Message-ID", None) or new_message_id(workspace)
    for header, value in headers.items():
        email[header] = value

    email.set_content(message.body)
    if message.html_body:
        email.add_alternative(message.html_body, subtype="html")
    return email


class SmtpChannel:
    name = "smtp"

    def __init__(self, workspace):
        self.workspace = workspace
        self.host = str(workspace.setting("smtp.host", "") or "")
        if not self.host:
            raise ConfigError("cxm.toml [smtp] host is empty")
        self.security = str(workspace.setting("smtp.security", "starttls")).lower()
        if self.security not in SECURITY_MODES:
            raise ConfigError(
                f"cxm.toml [smtp] security = {self.security!r} is not one of "
                f"{', '.join(SECURITY_MODES)}"
            )
        default_port = 465 if self.security == "ssl" else 587
        self.port = int(workspace.setting("smtp.port", default_port))
        self.timeout = float(workspace.setting("smtp.timeout_seconds", 20))
        self.username = workspace.secret(workspace.setting("smtp.username_env"))
        self.password = workspace.secret(workspace.setting("smtp.password_env"))
        sender_address(workspace)

    def send(self, message: OutboundMessage) -> SendResult:
        email = build_email(self.workspace, message)
        try:
            with self._connect() as server:
                refused = server.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reason = next(iter(exc.recipients.values()))
            raise _error_for(code, reason, "refused the recipient") from exc
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are an operator's fix, not the contact's fault:
            # keep the message retryable instead of failing it for good.
            raise ChannelError(
                f"SMTP login to {self.host} failed ({exc.smtp_code})",
                transient=True,
                provider_code=str(exc.smtp_code),
                hint="check the user name and password variables named in [smtp]",
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(
                f"SMTP server {self.host} does not support {exc}",
                transient=True,
                hint="check [smtp] security (starttls, ssl or none)",
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise _error_for(exc.smtp_code, exc.smtp_error, "answered") from exc
        except smtplib.SMTPException as exc:
            raise ChannelError(f"SMTP error: {exc}", transient=True) from exc
        except ssl.SSLError as exc:
            raise ChannelError(
                f"TLS with {self.host}:{self.port} failed: {exc.reason}",
                transient=True,
                hint="check [smtp] security and port",
            ) from exc
        except OSError as exc:
            raise ChannelError(
                f"cannot reach SMTP server {self.host}:{self.port}: {exc}",
                transient=True,
            ) from exc

        if refused:
            code, reason = next(iter(refused.values()))
            raise _error_for(code, reason, "refused the recipient")
        message_id = email["Message-ID"]
        log.info("email sent through smtp (contact %s)", message.contact_id)
        return SendResult(provider_id=message_id, status="sent")

    # Limitation: each email opens its own SMTP connection (and login); a large
    # batch through a slow relay spends most of its time in handshakes.
    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            server = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            server.ehlo()
            if self.security == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if self.username:
                server.login(self.username, self.password or "")
        except BaseException:
            server.close()
            raise
        return server


def _error_for(code: int, reason: bytes | str, what: str) -> ChannelError:
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
    return ChannelError(
        f"SMTP server {what}: {code} {text}".strip(),
        transient=400 <= code < 500,
        provider_code=str(code),
    )
