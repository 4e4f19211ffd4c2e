"""Which channel implementation sends each kind of message.

cxm.toml's ``[channels]`` section names one per kind: ``email = "outbox" |
"smtp"`` and ``sms = "outbox" | "twilio"``. Building a channel checks its
settings and secrets, so a misconfigured channel fails before anything is
recorded as being sent.
"""

from __future__ import annotations

from cxm_cli.errors import ConfigError

KINDS = ("email", "sms")
IMPLEMENTATIONS = {"email": ("outbox", "smtp"), "sms": ("outbox", "twilio")}


def channel_setting(workspace, kind: str) -> str:
    """The implementation name configured for ``kind`` ("outbox" by default)."""
    if kind not in KINDS:
        raise ConfigError(
            f"unknown channel {kind!r}", hint=f"channels are {', '.join(KINDS)}"
        )
    name = str(workspace.setting(f"channels.{kind}", "outbox") or "outbox").lower()
    if name not in IMPLEMENTATIONS[kind]:
        raise ConfigError(
            f"cxm.toml [channels] {kind} = {name!r} is not one of "
            f"{', '.join(IMPLEMENTATIONS[kind])}"
        )
    return name


def get_channel(workspace, kind: str):
    """The configured channel object for ``kind`` ("email" or "sms")."""
    name = channel_setting(workspace, kind)
    if name == "outbox":
        from cxm_cli.channels.outbox import OutboxChannel

        return OutboxChannel(workspace, kind)
    if name == "smtp":
        from cxm_cli.channels.smtp import SmtpChannel

        return SmtpChannel(workspace)
    from cxm_cli.channels.twilio import TwilioChannel

    return TwilioChannel(workspace)
