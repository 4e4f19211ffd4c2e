"""Links cxm adds to outgoing email: unsubscribe, open pixel, click redirects.

Active only when ``[server] public_url`` says where ``cxm serve`` is reachable.
Every link carries a signed token (``cxm_cli.tokens``), so it cannot be edited
into someone else's unsubscribe or into a redirect to an arbitrary site.

Open tracking counts image loads. Mail clients and privacy proxies that fetch
images ahead of the reader (Apple Mail Privacy Protection, Gmail's image
proxy, corporate scanners) load the pixel without anyone reading, so opens are
inflated and only a rough signal; clicks are more trustworthy, though link
scanners can click too.
"""

from __future__ import annotations

import html
import logging
import re
from urllib.parse import quote

from cxm_cli import tokens
from cxm_cli.outbound import register_decorator

log = logging.getLogger(__name__)

UNSUBSCRIBE = "unsubscribe"
OPEN = "open"
CLICK = "click"

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.I)


def public_url(workspace) -> str | None:
    """Where people and providers reach ``cxm serve``, without a trailing slash."""
    configured = workspace.setting("server.public_url") or workspace.setting(
        "serve.public_url"
    )
    return str(configured).rstrip("/") if configured else None


def unsubscribe_url(workspace, contact_id: int, message_id: int | None) -> str | None:
    base = public_url(workspace)
    if not base:
        return None
    token = tokens.sign(workspace, UNSUBSCRIBE, {"c": contact_id, "m": message_id})
    return f"{base}/unsubscribe/{quote(token)}"


def open_pixel_url(workspace, message_id: int) -> str | None:
    base = public_url(workspace)
    if not base:
        return None
    return f"{base}/o/{quote(tokens.sign(workspace, OPEN, {'m': message_id}))}.gif"


def click_url(workspace, message_id: int, target: str) -> str | None:
    base = public_url(workspace)
    if not base:
        return None
    token = tokens.sign(workspace, CLICK, {"m": message_id, "u": target})
    return f"{base}/c/{quote(token)}"


@register_decorator("inbound.email_links")
def add_email_links(workspace, db, message, contact, message_id) -> None:
    """List-Unsubscribe (RFC 2369/8058) and, when enabled, tracking."""
    if message.channel != "email" or not public_url(workspace):
        return
    # A personal answer in a thread is not a mailing; leave it as written.
    if "In-Reply-To" in message.headers:
        return

    unsubscribe = unsubscribe_url(
        workspace, message.contact_id or contact["id"], message_id
    )
    message.headers.setdefault("List-Unsubscribe", f"<{unsubscribe}>")
    message.headers.setdefault("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if workspace.setting("server.unsubscribe_footer", True):
        message.body = f"{message.body.rstrip()}\n\n--\nUnsubscribe: {unsubscribe}\n"

    if not message.html_body:
        return
    if workspace.setting("server.track_clicks", False):
        message.html_body = _HREF.sub(
            lambda m: (
                m.group(1)
                + m.group(2)
                + html.escape(
                    click_url(workspace, message_id, html.unescape(m.group(3)))
                )
                + m.group(2)
            ),
            message.html_body,
        )
    if workspace.setting("server.track_opens", False):
        pixel = (
            f'<img src="{html.escape(open_pixel_url(workspace, message_id))}" '
            'width="1" height="1" alt="" style="display:none">'
        )
        if re.search(r"</body>", message.html_body, re.I):
            message.html_body = re.sub(
                r"</body>", pixel + "</body>", message.html_body, count=1, flags=re.I
            )
        else:
            message.html_body += pixel
    log.debug("email links added to message %s", message_id)
