"""Texts and voicemail drops through a Twilio-compatible REST API.

Settings come from cxm.toml's ``[twilio]`` section: ``base_url`` (tests point
it at a local server), ``from_number``, and the environment variables holding
the account SID and auth token. Rate limits (429), server errors (5xx),
timeouts and refused connections are transient; other 4xx answers are
permanent and carry Twilio's error code. Code 21610 means the recipient has
unsubscribed (replied STOP to this sender) and marks the error ``opt_out``.
"""

from __future__ import annotations

import logging
from typing import Any
from xml.sax.saxutils import escape

import requests

from cxm_cli.channels import OutboundMessage, SendResult
from cxm_cli.errors import ChannelError, ConfigError

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
UNSUBSCRIBED_CODE = "21610"


class TwilioChannel:
    name = "twilio"

    def __init__(self, workspace):
        self.workspace = workspace
        self.base_url = str(workspace.setting("twilio.base_url", "") or "").rstrip("/")
        if not self.base_url:
            raise ConfigError("cxm.toml [twilio] base_url is empty")
        sid_env = workspace.setting("twilio.account_sid_env", "CXM_SMS_ACCOUNT_SID")
        token_env = workspace.setting("twilio.auth_token_env", "CXM_SMS_AUTH_TOKEN")
        self.account_sid = workspace.secret(sid_env)
        self.auth_token = workspace.secret(token_env)
        missing = [
            env
            for env, value in (
                (sid_env, self.account_sid),
                (token_env, self.auth_token),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"SMS provider credentials missing: set {' and '.join(missing)}",
                hint="put them in the workspace's .env (see .env.example)",
            )
        self.from_number = str(workspace.setting("twilio.from_number", "") or "")
        if not self.from_number:
            raise ConfigError("cxm.toml [twilio] from_number is empty")
        self.timeout = float(workspace.setting("twilio.timeout_seconds", 20))
        self.status_callback = workspace.setting("twilio.status_callback_url")

    def _url(self, resource: str) -> str:
        return (
            f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/{resource}.json"
        )

    def send(self, message: OutboundMessage) -> SendResult:
        form = {"To": message.to, "From": self.from_number, "Body": message.body}
        if self.status_callback:
            form["StatusCallback"] = str(self.status_callback)
        answer = self._post("Messages", form, what="text")
        log.info("sms accepted by provider (contact %s)", message.contact_id)
        return SendResult(
            provider_id=answer.get("sid"),
            status="sent",
            detail={"provider_status": answer.get("status")},
        )

    def send_voicemail(
        self, to: str, audio_url: str, *, contact_id: int | None = None
    ) -> SendResult:
        # Wait for the answering machine's beep, then play the recording.
        # Limitation: this is a real call that may ring the phone and play to a
        # person who picks up; carrier "ringless" voicemail is not available here.
        twiml = f"<Response><Play>{escape(audio_url)}</Play></Response>"
        form = {
            "To": to,
            "From": self.from_number,
            "Twiml": twiml,
            "MachineDetection": "DetectMessageEnd",
        }
        answer = self._post("Calls", form, what="voicemail drop")
        log.info("voicemail drop accepted by provider (contact %s)", contact_id)
        return SendResult(
            provider_id=answer.get("sid"),
            status="sent",
            detail={"provider_status": answer.get("status")},
        )

    def _post(
        self, resource: str, form: dict[str, str], *, what: str
    ) -> dict[str, Any]:
        url = self._url(resource)
        try:
            response = requests.post(
                url,
                data=form,
                auth=(self.account_sid, self.auth_token),
                timeout=self.timeout,
            )
        except requests.Timeout as exc:
            raise ChannelError(
                f"SMS provider timed out on a {what} after {self.timeout:g}s",
                transient=True,
            ) from exc
        except requests.RequestException as exc:
            raise ChannelError(
                f"cannot reach SMS provider at {self.base_url}: "
                f"{exc.__class__.__name__}",
                transient=True,
            ) from exc

        answer = _json_or_empty(response)
        if response.status_code < 300:
            if not answer.get("sid"):
                raise ChannelError(
                    f"SMS provider accepted the {what} but returned no sid "
                    f"(HTTP {response.status_code})",
                    transient=False,
                )
            return answer
        raise _error_for(response.status_code, answer, what)


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_for(status: int, answer: dict[str, Any], what: str) -> ChannelError:
    code = answer.get("code")
    code_text = str(code) if code is not None else None
    reason = str(answer.get("message") or "").strip() or f"HTTP {status}"
    transient = status == 429 or status >= 500
    label = f"error {code_text}: " if code_text else ""
    return ChannelError(
        f"SMS provider refused the {what} (HTTP {status}, {label}{reason})",
        transient=transient,
        opt_out=code_text == UNSUBSCRIBED_CODE,
        provider_code=code_text or str(status),
    )


def send_voicemail(workspace, to: str, audio_url: str) -> SendResult:
    """Drop a recorded voicemail on ``to`` through the provider's Calls API."""
    return TwilioChannel(workspace).send_voicemail(to, audio_url)
