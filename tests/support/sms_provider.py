"""A real HTTP server on loopback playing a Twilio-compatible SMS provider.

It serves ``POST /2010-04-01/Accounts/<sid>/Messages.json`` and
``.../Calls.json``, records every request (path, basic-auth user and password,
form fields) and answers 201 with a fresh ``sid``, as Twilio does.
``fail_next(status, count, code=...)`` makes the next ``count`` requests get
an error answer instead (429, 500, or 400 with a Twilio error code).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ACCOUNT_SID = "ACtest0123456789abcdef0123456789"
AUTH_TOKEN = "test-auth-token-0123456789"
FROM_NUMBER = "+15555550123"


@dataclass
class ProviderRequest:
    method: str
    path: str
    username: str | None
    password: str | None
    form: dict[str, str]
    sid: str | None = None
    status: int = 201


@dataclass
class _Failure:
    status: int
    remaining: int
    code: int | None
    message: str


@dataclass
class _State:
    requests: list[ProviderRequest] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeTwilio/1.0"
    state: _State  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        form = {key: values[-1] for key, values in parse_qs(raw).items()}
        username, password = _basic_auth(self.headers.get("Authorization"))
        request = ProviderRequest("POST", self.path, username, password, form)

        with self.state.lock:
            self.state.requests.append(request)
            failure = self.state.failures[0] if self.state.failures else None
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.state.failures.pop(0)

        if failure is not None:
            request.status = failure.status
            body = {"status": failure.status, "message": failure.message}
            if failure.code is not None:
                body["code"] = failure.code
                body["more_info"] = f"https://www.twilio.com/docs/errors/{failure.code}"
            self._answer(failure.status, body)
            return

        if self.path.endswith("/Messages.json"):
            request.sid = "SM" + secrets.token_hex(16)
            self._answer(201, {"sid": request.sid, "status": "queued", **_echo(form)})
        elif self.path.endswith("/Calls.json"):
            request.sid = "CA" + secrets.token_hex(16)
            self._answer(201, {"sid": request.sid, "status": "queued", **_echo(form)})
        else:
            request.status = 404
            self._answer(404, {"status": 404, "code": 20404, "message": "Not found"})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _echo(form: dict[str, str]) -> dict[str, str]:
    return {"to": form.get("To", ""), "from": form.get("From", "")}


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.startswith("Basic "):
        return None, None
    decoded = base64.b64decode(header[6:]).decode("utf-8")
    username, _, password = decoded.partition(":")
    return username, password


class SmsProvider:
    """Start with :meth:`start`, stop with :meth:`stop` (the fixture does both)."""

    account_sid = ACCOUNT_SID
    auth_token = AUTH_TOKEN
    from_number = FROM_NUMBER

    def __init__(self) -> None:
        self._state = _State()
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[ProviderRequest]:
        return self._state.requests

    @property
    def messages(self) -> list[ProviderRequest]:
        """Texts the provider accepted (201), oldest first."""
        return self._accepted("/Messages.json")

    @property
    def calls(self) -> list[ProviderRequest]:
        """Voicemail drops (calls) the provider accepted, oldest first."""
        return self._accepted("/Calls.json")

    def _accepted(self, suffix: str) -> list[ProviderRequest]:
        with self._state.lock:
            return [
                r
                for r in self._state.requests
                if r.path.endswith(suffix) and r.status == 201
            ]

    def start(self) -> SmsProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        code: int | None = None,
        message: str = "",
    ) -> None:
        """Answer the next ``count`` requests with an error."""
        with self._state.lock:
            self._state.failures.append(
                _Failure(status, count, code, message or f"Simulated error {status}")
            )

    def settings(self) -> dict[str, object]:
        return {
            "channels.sms": "twilio",
            "twilio.base_url": self.base_url,
            "twilio.from_number": self.from_number,
            "twilio.timeout_seconds": 5,
        }

    def configure(self, workspace):
        """Point ``workspace`` at this server and write its credentials to .env;
        returns the reloaded workspace."""
        from tests.support.fixtures import update_settings, write_env

        sid_env = workspace.setting("twilio.account_sid_env", "CXM_SMS_ACCOUNT_SID")
        token_env = workspace.setting("twilio.auth_token_env", "CXM_SMS_AUTH_TOKEN")
        write_env(workspace, {sid_env: self.account_sid, token_env: self.auth_token})
        return update_settings(workspace, self.settings())
