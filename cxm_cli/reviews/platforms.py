"""Where a customer can leave a public review, and which links one request offers.

Platforms come from ``[[reviews.platforms]]`` in cxm.toml. Google's link is built
from the place id; Facebook's from the page name; anything else is a custom URL.
Yelp is accepted in the file only to be refused with its reason: Yelp's rules
forbid businesses from asking customers for reviews, so cxm never links to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlparse

from cxm_cli.errors import ConfigError
from cxm_cli.store import loads

log = logging.getLogger(__name__)

GOOGLE_WRITE_REVIEW = "https://search.google.com/local/writereview"
YELP_REASON = (
    "Yelp forbids businesses from asking customers for reviews (its content "
    "guidelines and support pages say 'Don't ask for reviews'), so cxm never "
    "sends review requests that point to Yelp"
)
KINDS = ("google", "facebook", "custom", "yelp")
ROTATIONS = ("all", "round_robin", "weighted")


@dataclass(frozen=True)
class Platform:
    key: str
    name: str
    kind: str
    url: str | None
    weight: float = 1.0
    refused: str | None = None  # why cxm will not use it

    @property
    def usable(self) -> bool:
        return self.refused is None and bool(self.url)

    def offer(self) -> dict[str, str]:
        return {"key": self.key, "name": self.name, "url": self.url or ""}


def google_review_link(place_id: str) -> str:
    return f"{GOOGLE_WRITE_REVIEW}?{urlencode({'placeid': place_id.strip()})}"


def facebook_review_link(page: str) -> str:
    page = page.strip().strip("/")
    if page.startswith(("http://", "https://")):
        return page.rstrip("/") + "/reviews"
    return f"https://www.facebook.com/{quote(page)}/reviews"


def _is_yelp(kind: str, url: str | None) -> bool:
    if kind == "yelp":
        return True
    host = urlparse(url or "").hostname or ""
    return host == "yelp.com" or host.endswith(".yelp.com") or ".yelp." in host


def load_platforms(workspace) -> list[Platform]:
    """Every platform in cxm.toml, refused ones included (with their reason)."""
    entries = workspace.setting("reviews.platforms", []) or []
    if not isinstance(entries, list):
        raise ConfigError("cxm.toml: reviews.platforms must be a list of tables")

    platforms: list[Platform] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        where = f"cxm.toml: reviews.platforms #{index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with a 'kind'")
        platform = _platform_from_entry(entry, where)
        if platform.key in seen:
            raise ConfigError(
                f"{where}: the key {platform.key!r} is used twice",
                hint="give each platform a distinct `key`",
            )
        seen.add(platform.key)
        platforms.append(platform)
    return platforms


def _platform_from_entry(entry: dict[str, Any], where: str) -> Platform:
    kind = str(entry.get("kind", "")).strip().lower()
    if kind not in KINDS:
        raise ConfigError(
            f"{where}: kind {kind or '(missing)'!r} is not one of {', '.join(KINDS)}"
        )
    weight = entry.get("weight", 1)
    if not isinstance(weight, (int, float)) or weight <= 0:
        raise ConfigError(f"{where}: weight must be a positive number")

    url = entry.get("url")
    if kind == "google" and not url:
        place_id = str(entry.get("place_id", "")).strip()
        if not place_id:
            raise ConfigError(f"{where}: a google platform needs place_id (or url)")
        url = google_review_link(place_id)
    elif kind == "facebook" and not url:
        page = str(entry.get("page", "")).strip()
        if not page:
            raise ConfigError(f"{where}: a facebook platform needs page (or url)")
        url = facebook_review_link(page)
    elif kind == "custom" and not url:
        raise ConfigError(f"{where}: a custom platform needs url")

    if url and not str(url).startswith(("https://", "http://")):
        raise ConfigError(f"{where}: url must start with https://")

    default_names = {"google": "Google", "facebook": "Facebook", "yelp": "Yelp"}
    name = str(entry.get("name") or default_names.get(kind) or "Review us")
    key = str(entry.get("key") or name).strip().lower().replace(" ", "-")
    refused = YELP_REASON if _is_yelp(kind, url) else None
    if refused:
        log.warning("review platform %s refused: Yelp forbids soliciting", key)
    return Platform(
        key=key,
        name=name,
        kind=kind,
        url=str(url) if url else None,
        weight=float(weight),
        refused=refused,
    )


def usable_platforms(workspace) -> list[Platform]:
    return [p for p in load_platforms(workspace) if p.usable]


def require_platforms(workspace) -> list[Platform]:
    """The platforms a request may offer, or a ConfigError saying why none."""
    platforms = load_platforms(workspace)
    usable = [p for p in platforms if p.usable]
    if usable:
        return usable
    if platforms:
        reasons = "; ".join(f"{p.name}: {p.refused}" for p in platforms if p.refused)
        raise ConfigError(
            f"no review platform cxm may use ({reasons})",
            hint="add a Google, Facebook or custom platform to [[reviews.platforms]]",
        )
    raise ConfigError(
        "no review platform is configured",
        hint='add a [[reviews.platforms]] table (kind = "google", place_id = ...) '
        "to cxm.toml",
    )


def rotation_rule(workspace) -> str:
    rule = str(workspace.setting("reviews.rotation", "all")).strip().lower()
    if rule not in ROTATIONS:
        raise ConfigError(
            f"cxm.toml: reviews.rotation {rule!r} is not one of {', '.join(ROTATIONS)}"
        )
    return rule


def choose_platforms(workspace, db) -> list[Platform]:
    """The platforms the next request offers, by the workspace's rotation rule.

    ``all`` offers every platform; ``round_robin`` offers one, the one offered
    least often so far; ``weighted`` offers one, keeping each platform's share
    of requests close to its weight. Counting past requests (rather than
    keeping a cursor) keeps the rotation right across processes and restarts.
    """
    usable = require_platforms(workspace)
    rule = rotation_rule(workspace)
    if rule == "all" or len(usable) == 1:
        return usable

    offered = offer_counts(db)
    if rule == "round_robin":
        return [min(usable, key=lambda p: (offered.get(p.key, 0), usable.index(p)))]

    total_weight = sum(p.weight for p in usable)
    total_offers = sum(offered.get(p.key, 0) for p in usable) + 1

    def shortfall(platform: Platform) -> tuple[float, int]:
        target = total_offers * platform.weight / total_weight
        return (offered.get(platform.key, 0) - target, usable.index(platform))

    return [min(usable, key=shortfall)]


# Limitation: rotation counts every past request's offers on each call; fine
# for thousands of requests, slow for millions.
def offer_counts(db) -> dict[str, int]:
    """How many sent requests offered each platform key."""
    counts: dict[str, int] = {}
    rows = db.query(
        "SELECT platforms FROM review_requests "
        "WHERE status IN ('sending', 'sent', 'answered')"
    )
    for row in rows:
        for offer in loads(row["platforms"], []):
            counts[offer["key"]] = counts.get(offer["key"], 0) + 1
    return counts
