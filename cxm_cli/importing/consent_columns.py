"""Consent and opt-out columns recognised by the words in their header.

A plain list names its opt-out column however its author liked ("SMS
Unsubscribed", "No Texts", "Do not contact (Y/N)"), so besides the fixed
aliases in ``formats.GENERIC`` a header is read by its words: an opt-out word
plus a channel word, or a consent word plus a channel word.
"""

from __future__ import annotations

import re

# (field, argument), as ``formats.Role``.
Role = tuple[str, object]

_EMAIL_WORDS = ("email", "mail", "newsletter")
_SMS_WORDS = ("sms", "text", "mobile", "call", "phone", "voice", "whatsapp")
# Anyone: no channel named, or all of them.
_ANY_CHANNEL_WORDS = ("marketing", "contact", "solicit", "disturb", "promo")
# Said with no channel, these already mean "stop messaging me".
_OPT_OUT_PHRASES = ("optout", "optedout", "unsub", "donotdisturb")
_OPT_OUT_WORDS = {"dnc", "dnd"}
# These need a channel (or "marketing", "contact") to mean an opt-out.
_NEGATION_PHRASES = ("donot", "dont")
_CONSENT_PHRASES = ("optin", "optedin")
# These need a channel (or "marketing") to mean consent: "Accepts Terms",
# "Photo Consent" or "Subscription Plan" are no marketing consent.
_AGREEMENT_PHRASES = (
    "consent",
    "subscri",
    "accept",
    "agree",
    "allow",
    "permission",
    "wants",
    "okto",
)
# A header of only these words is a consent column too ("Consent (Y/N)").
_BARE_CONSENT_WORDS = {"consent", "subscribed", "y", "n", "yn", "given", "status"}
# Words of a column about an opt-out, not the opt-out itself ("Unsubscribe
# Link", "Opt-in IP", "Opt Out Reason"): kept as custom fields, with a note.
_ABOUT_WORDS = {"reason", "link", "url", "ip", "campaign", "id", "count", "source"}
# Substrings of headers that look consent-related (see ``looks_consent``).
_CONSENT_HINTS = ("opt", "consent", "subscri", "dnc", "donot", "notext", "nosms")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def header_words(header: str) -> list[str]:
    """A header's words: "SMS_Opt-Out", "smsOptOut" -> sms, opt, out."""
    return re.findall(r"[^\W_]+", _CAMEL.sub(" ", header).lower())


def _channel_suffix(key: str) -> str | None:
    """ "email", "sms", or None for both, from the channel words in a key."""
    key = key.replace("voicemail", "voice")  # a voicemail drop is SMS-governed
    email = any(word in key for word in _EMAIL_WORDS)
    sms = any(word in key for word in _SMS_WORDS)
    if email and not sms:
        return "email"
    if sms and not email:
        return "sms"
    return None


def _names_a_channel(key: str) -> bool:
    words = _EMAIL_WORDS + _SMS_WORDS + _ANY_CHANNEL_WORDS
    return any(word in key for word in words)


def consent_role(header: str) -> Role | None:
    """An opt-out or consent role from the words of a header no alias knows.

    "SMS Unsubscribed", "Opt out of SMS", "No Texts" -> sms_opt_out;
    "Marketing Opt Out", "DNC", "Do not contact (Y/N)" -> opt_out (both);
    "SMS Consent", "Text opt in" -> sms_opt_in, read strictly: a "no" there
    is an opt-out. An unsubscribe with no channel named is an email one, as
    the ``Unsubscribed`` alias has always been.
    """
    words = header_words(header)
    if not words or _ABOUT_WORDS & set(words):
        return None
    key = "".join(words)
    channel = _channel_suffix(key)

    opts_out = any(phrase in key for phrase in _OPT_OUT_PHRASES) or bool(
        _OPT_OUT_WORDS & set(words)
    )
    if not opts_out and _names_a_channel(key):
        opts_out = any(phrase in key for phrase in _NEGATION_PHRASES) or (
            words[0] == "no"
            or (words[0].startswith("no") and _names_a_channel(words[0][2:]))
        )
    if opts_out:
        bare = not any(word in key for word in _ANY_CHANNEL_WORDS)
        if channel is None and bare and "unsub" in key and "optout" not in key:
            channel = "email"
        return (f"{channel}_opt_out" if channel else "opt_out", None)

    agrees = (
        any(phrase in key for phrase in _CONSENT_PHRASES)
        or (_names_a_channel(key) and any(p in key for p in _AGREEMENT_PHRASES))
        or (
            set(words) <= _BARE_CONSENT_WORDS and set(words) & {"consent", "subscribed"}
        )
    )
    if agrees:
        return (f"{channel}_opt_in" if channel else "opt_in", "strict")
    return None


def looks_consent(header: str) -> bool:
    """Whether a column kept as a custom field may be about consent."""
    key = "".join(header_words(header))
    return any(hint in key for hint in _CONSENT_HINTS)
