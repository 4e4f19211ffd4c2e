"""Signed, tamper-proof tokens for links cxm puts in messages.

Unsubscribe links, tracking pixels, click redirects and review pages carry a
small payload signed with a per-workspace secret, so nobody can unsubscribe
someone else or turn cxm into an open redirect by editing a URL. The
``purpose`` is the signing salt: a token made for one purpose is refused for
any other.

The secret comes from ``CXM_SECRET_KEY`` (process environment or ``.env``);
without it cxm generates one on first use and keeps it in
``data/secret_key`` readable by the owner only.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from cxm_cli.errors import CxmError

log = logging.getLogger(__name__)

SECRET_ENV = "CXM_SECRET_KEY"
SECRET_FILE = "secret_key"


class TokenInvalid(CxmError):
    """A token was altered, made for another purpose, or has expired."""


# The name some callers know it by.
TokenError = TokenInvalid


def secret_key(workspace) -> str:
    configured = workspace.secret(SECRET_ENV)
    if configured:
        return configured
    return _stored_secret(workspace.data_dir / SECRET_FILE)


def _stored_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass

    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        # O_EXCL: when two processes race to create it, one wins and the
        # other reads the winner's secret, so both sign alike.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    log.info("generated a new signing secret in %s", path)
    return value


def _serializer(workspace, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key(workspace), salt=f"cxm.{purpose}")


def sign(workspace, purpose: str, payload: Any) -> str:
    """A URL-safe token carrying ``payload`` (anything JSON can hold)."""
    return _serializer(workspace, purpose).dumps(payload)


def verify(
    workspace,
    purpose: str,
    token: str,
    max_age_seconds: float | None = None,
    *,
    max_age: float | None = None,
) -> Any:
    """The payload of a token made by :func:`sign` for ``purpose``.

    ``max_age_seconds=None`` accepts a token of any age (unsubscribe links
    must work for as long as the email exists); ``max_age`` is a synonym.
    """
    limit = max_age_seconds if max_age_seconds is not None else max_age
    try:
        return _serializer(workspace, purpose).loads(token, max_age=limit)
    except SignatureExpired as exc:
        raise TokenInvalid("this link has expired") from exc
    except BadSignature as exc:
        raise TokenInvalid("this link is not valid") from exc
