"""The core of the ``cxm reviews`` commands that is not a single call elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from cxm_cli.contacts import find_contact
from cxm_cli.errors import ConfigError
from cxm_cli.reviews import links
from cxm_cli.reviews.platforms import load_platforms, require_platforms, rotation_rule
from cxm_cli.reviews.requests import RequestOutcome, request_review

log = logging.getLogger(__name__)

RATING_RULES = ("min_rating", "max_rating")


def request_reviews(
    workspace,
    db,
    clock,
    *,
    contact: str | None = None,
    segment: str | None = None,
    channel: str | None = None,
    dry_run: bool = False,
) -> list[RequestOutcome]:
    """Ask one contact, or each contact of a segment, by the usual rules."""
    require_platforms(workspace)
    if contact is not None:
        found = find_contact(db, contact, region=workspace.phone_region)
        ids = [found["id"]]
        source = "cli"
    else:
        from cxm_cli.segments import contacts_in_segment

        refuse_rating_segment(workspace, segment)
        ids = contacts_in_segment(db, workspace, segment, clock=clock)
        source = "segment"

    outcomes = []
    for contact_id in ids:
        outcomes.append(
            request_review(
                workspace,
                db,
                clock,
                contact_id,
                channel=channel,
                source=source,
                dry_run=dry_run,
            )
        )
    log.info("review requests: %d contacts considered", len(outcomes))
    return outcomes


def refuse_rating_segment(workspace, name: str) -> None:
    """A segment chosen by rating would be review gating: refuse it.

    Asking only the people who rated you well (or leaving out those who did
    not) is exactly what Google's policy and the FTC forbid.
    """
    from cxm_cli.segments import segment_config

    config = segment_config(workspace)
    pending, seen = [name], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        segment = config.get(current)
        used = [rule for rule in RATING_RULES if segment.rules.get(rule) is not None]
        if used:
            raise ConfigError(
                f"segment {name!r} picks people by their rating ({current}: "
                f"{', '.join(used)}); asking for reviews by rating is review "
                "gating, which Google's review policy and the FTC forbid",
                hint="ask a segment that does not look at ratings",
            )
        pending.extend(segment.references)


def platform_rows(workspace) -> tuple[list[dict[str, Any]], list[str], str]:
    """The platforms table, warnings about what will not work, the rotation."""
    rows = []
    notes = []
    for platform in load_platforms(workspace):
        rows.append(
            {
                "key": platform.key,
                "name": platform.name,
                "kind": platform.kind,
                "status": "refused" if platform.refused else "in use",
                "url": platform.url,
                "weight": platform.weight,
                "refused_because": platform.refused,
            }
        )
        if platform.refused:
            notes.append(f"{platform.name} refused: {platform.refused}")
    if not rows:
        notes.append("no platform configured: add reviews.platforms to cxm.toml")
    if not links.base_url(workspace):
        notes.append(
            "server.public_url is not set: requests carry the public links and "
            "'reply 1 to 5', but no link to the rating page"
        )
    return rows, notes, rotation_rule(workspace)
