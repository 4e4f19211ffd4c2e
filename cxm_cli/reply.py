"""Answering a person from the terminal, on the channel they last used.

A reply goes through the same ``send_message`` as the runner, so consent,
suppression and bounce checks apply, and it is recorded as a message a person
wrote (``automated: false``), which is what closes a conversation in the inbox.
Snippets are short saved answers in the workspace's ``snippets.toml``.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from typing import Any

from cxm_cli.errors import ConfigError, InputError, NotFound
from cxm_cli.store import fetch_one

log = logging.getLogger(__name__)

SNIPPETS_FILE = "snippets.toml"


@dataclass
class Snippet:
    name: str
    text: str
    subject: str | None = None


def load_snippets(workspace) -> dict[str, Snippet]:
    """``name = "text"`` or ``[name]`` tables with ``text`` and ``subject``."""
    path = workspace.root / SNIPPETS_FILE
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc

    snippets = {}
    for name, value in raw.items():
        if isinstance(value, str):
            snippets[name] = Snippet(name, value)
        elif isinstance(value, dict) and isinstance(value.get("text"), str):
            snippets[name] = Snippet(name, value["text"], value.get("subject"))
        else:
            raise ConfigError(
                f'{path}: snippet {name!r} needs text (name = "..." or a '
                '[name] table with text = "...")'
            )
    return snippets


def last_inbound(db, contact_id: int, channel: str | None = None) -> dict | None:
    sql = (
        "SELECT * FROM messages WHERE contact_id = ? AND direction = 'inbound' "
        "AND status != 'auto_reply'"
    )
    params: list[Any] = [contact_id]
    if channel:
        sql += " AND channel = ?"
        params.append(channel)
    return fetch_one(db, sql + " ORDER BY at DESC, id DESC LIMIT 1", params)


def choose_channel(db, contact: dict) -> str:
    """The channel the person last wrote on, else the one we last used."""
    inbound = last_inbound(db, contact["id"])
    if inbound:
        return inbound["channel"]
    last = fetch_one(
        db,
        "SELECT channel FROM messages WHERE contact_id = ? ORDER BY at DESC LIMIT 1",
        [contact["id"]],
    )
    if last:
        return last["channel"]
    if contact.get("phone") and not contact.get("email"):
        return "sms"
    if contact.get("email"):
        return "email"
    raise InputError(
        f"contact {contact['id']} has no message history, email or phone",
        hint="pass --channel",
    )


def send_reply(
    workspace,
    db,
    clock,
    contact: dict,
    *,
    text: str | None = None,
    template: str | None = None,
    snippet: str | None = None,
    channel: str | None = None,
    subject: str | None = None,
):
    """Send one reply; returns the messaging helper's ``SentMessage``."""
    given = [
        name
        for name, value in (
            ("text", text),
            ("template", template),
            ("snippet", snippet),
        )
        if value
    ]
    if len(given) != 1:
        raise InputError("give exactly one of --text, --template or --snippet")

    if snippet:
        snippets = load_snippets(workspace)
        if snippet not in snippets:
            known = ", ".join(sorted(snippets)) or "none yet"
            raise NotFound(
                f"no snippet {snippet!r} in {SNIPPETS_FILE}", hint=f"known: {known}"
            )
        text = snippets[snippet].text
        subject = subject or snippets[snippet].subject

    channel = (channel or choose_channel(db, contact)).lower()
    answering = last_inbound(db, contact["id"], channel)
    if channel == "email" and not template and not subject:
        original = (answering or {}).get("subject") or ""
        subject = (
            original
            if original.lower().startswith("re:")
            else (
                f"Re: {original}"
                if original
                else f"A note from {workspace.business_name}"
            )
        )

    from cxm_cli.messaging import send_message

    headers = {}
    if channel == "email" and answering and answering.get("provider_id"):
        original = answering["provider_id"]
        reference = original if original.startswith("<") else f"<{original}>"
        headers = {"In-Reply-To": reference, "References": reference}
    sent = send_message(
        workspace,
        db,
        clock,
        contact["id"],
        channel,
        template=template,
        text=text,
        subject=subject,
        source="reply",
        automated=False,
        headers=headers,
        thread_id=(answering or {}).get("thread_id"),
    )
    log.info("reply sent to contact %s on %s", contact["id"], channel)
    return sent
