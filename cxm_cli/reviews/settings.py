"""The ``[reviews]`` settings of cxm.toml, read and checked in one place."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from cxm_cli.errors import ConfigError

CHANNELS = ("sms", "email")


@dataclass(frozen=True)
class ReviewSettings:
    channels: tuple[str, ...] = ("sms", "email")
    cooldown_days: float = 90
    lifetime_cap: int = 3
    guard_delay_hours: float = 24
    trigger_on: tuple[str, ...] = ("appointment.completed", "invoice.paid")
    cancel_on: tuple[str, ...] = (
        "invoice.refunded",
        "appointment.cancelled",
        "appointment.no_show",
    )
    low_rating_max: int = 3
    answer_window_days: float = 14
    feedback_window_days: float = 7
    link_expiry_days: float = 30
    staff_email: str | None = None
    alert_webhook_url: str | None = None
    alert_webhook_secret_env: str | None = None
    timeline_url: str | None = None
    request_template: str = "review-request"
    thanks_template: str = "review-thanks"
    low_score_template: str = "review-low-score"

    @classmethod
    def of(cls, workspace) -> ReviewSettings:
        """The checked settings; every event asks, so unchanged ones are reused."""
        section = workspace.setting("reviews", {}) or {}
        cached = _PARSED.get(id(workspace.config))
        # Compared by value, so a section edited in place is read again.
        if cached is not None and cached[0] == section:
            return cached[1]
        settings = cls.parse(section)
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[id(workspace.config)] = (copy.deepcopy(section), settings)
        return settings

    @classmethod
    def parse(cls, section) -> ReviewSettings:
        """Check a ``[reviews]`` table; ConfigError names the bad key."""
        if not isinstance(section, dict):
            raise ConfigError("cxm.toml: [reviews] must be a table")
        defaults = cls()

        def number(name: str, *, minimum: float = 0) -> float:
            value = section.get(name, getattr(defaults, name))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"cxm.toml: reviews.{name} must be a number")
            if value < minimum:
                raise ConfigError(f"cxm.toml: reviews.{name} must be >= {minimum}")
            return value

        def names(name: str) -> tuple[str, ...]:
            value = section.get(name, list(getattr(defaults, name)))
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(
                isinstance(v, str) for v in value
            ):
                raise ConfigError(f"cxm.toml: reviews.{name} must be a list of names")
            return tuple(v.strip() for v in value if v.strip())

        def text(name: str) -> str | None:
            value = section.get(name, getattr(defaults, name))
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise ConfigError(f"cxm.toml: reviews.{name} must be text")
            return value.strip()

        channels = names("channels")
        for channel in channels:
            if channel not in CHANNELS:
                raise ConfigError(
                    f"cxm.toml: reviews.channels: {channel!r} is not one of "
                    f"{', '.join(CHANNELS)}"
                )
        low = int(number("low_rating_max", minimum=0))
        if low > 4:
            raise ConfigError("cxm.toml: reviews.low_rating_max must be 0 to 4")

        return cls(
            channels=channels,
            cooldown_days=number("cooldown_days"),
            lifetime_cap=int(number("lifetime_cap")),
            guard_delay_hours=number("guard_delay_hours"),
            trigger_on=names("trigger_on"),
            cancel_on=names("cancel_on"),
            low_rating_max=low,
            answer_window_days=number("answer_window_days"),
            feedback_window_days=number("feedback_window_days"),
            link_expiry_days=number("link_expiry_days", minimum=0.001),
            staff_email=text("staff_email"),
            alert_webhook_url=text("alert_webhook_url"),
            alert_webhook_secret_env=text("alert_webhook_secret_env"),
            timeline_url=text("timeline_url"),
            request_template=text("request_template") or defaults.request_template,
            thanks_template=text("thanks_template") or defaults.thanks_template,
            low_score_template=text("low_score_template")
            or defaults.low_score_template,
        )


_PARSED: dict[int, tuple[dict, ReviewSettings]] = {}
