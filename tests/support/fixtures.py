"""Fixtures for the loopback provider servers, and workspace helpers for tests.

``smtp_server`` and ``sms_provider`` start a real server on 127.0.0.1 for one
test; ``server.configure(workspace)`` rewrites that workspace's cxm.toml (and
.env) to send through it and returns the reloaded workspace. ``make_contact``
inserts a contact with its email and phone rows directly, for tests that need
people without running an import.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from cxm_cli import clock as clocks
from cxm_cli.store import dumps, write_transaction
from cxm_cli.workspace import load_workspace
from tests.support.sms_provider import SmsProvider
from tests.support.smtp_server import SmtpServer


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def sms_provider():
    provider = SmsProvider().start()
    yield provider
    provider.stop()


def update_settings(workspace, settings: dict[str, Any]):
    """Set ``section.key`` values in the workspace's cxm.toml; returns the
    reloaded workspace (also registered for ``workspace_of``)."""
    path = workspace.config_path
    text = path.read_text(encoding="utf-8")
    for dotted, value in settings.items():
        section, _, key = dotted.rpartition(".")
        text = _set_toml_value(text, section, key, _toml_value(value))
    path.write_text(text, encoding="utf-8")

    reloaded = load_workspace(workspace.root)
    reloaded.open_db().close()
    return reloaded


def write_env(workspace, values: dict[str, str]) -> None:
    """Add or replace variables in the workspace's .env."""
    path = workspace.root / ".env"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in values]
    kept.extend(f"{name}={value}" for name, value in values.items())
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _set_toml_value(text: str, section: str, key: str, rendered: str) -> str:
    lines = text.split("\n")
    header = f"[{section}]"
    start = next((i for i, line in enumerate(lines) if line.strip() == header), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n{header}\n{key} = {rendered}\n"

    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for index in range(start + 1, end):
        if pattern.match(lines[index]):
            lines[index] = f"{key} = {rendered}"
            return "\n".join(lines)
    lines.insert(start + 1, f"{key} = {rendered}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()
        )
        return "{" + inner + "}"
    return json.dumps(str(value))


def make_contact(
    db,
    clock,
    *,
    first_name: str | None = "Ana",
    last_name: str | None = None,
    email: str | None = "ana@example.com",
    phone: str | None = "+15125550101",
    phone_kind: str = "mobile",
    company: str | None = None,
    timezone: str | None = None,
    custom: dict[str, Any] | None = None,
    extra_phones: list[tuple[str, str]] = (),
) -> int:
    """Insert a contact with a primary email and phone; returns its id."""
    now = clocks.now_iso(clock)
    display = " ".join(part for part in (first_name, last_name) if part) or None
    with write_transaction(db):
        contact_id = (
            db["contacts"]
            .insert(
                {
                    "display_name": display,
                    "first_name": first_name,
                    "last_name": last_name,
                    "company": company,
                    "email": email,
                    "phone": phone,
                    "timezone": timezone,
                    "custom": dumps(custom or {}),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            .last_pk
        )
        if email:
            db["contact_emails"].insert(
                {
                    "contact_id": contact_id,
                    "email": email,
                    "is_primary": 1,
                    "created_at": now,
                }
            )
        if phone:
            db["contact_phones"].insert(
                {
                    "contact_id": contact_id,
                    "phone": phone,
                    "kind": phone_kind,
                    "is_primary": 1,
                    "created_at": now,
                }
            )
        for other_phone, kind in extra_phones:
            db["contact_phones"].insert(
                {
                    "contact_id": contact_id,
                    "phone": other_phone,
                    "kind": kind,
                    "is_primary": 0,
                    "created_at": now,
                }
            )
    return contact_id
