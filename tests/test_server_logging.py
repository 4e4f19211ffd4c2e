"""``cxm serve`` logs each thing once, through the ``cxm_cli`` logger."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from tests.support.dovecot import free_port


@pytest.mark.parametrize("options", [[], ["--verbose"]])
def test_a_refused_webhook_is_logged_once(workspace, options):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cxm_cli",
            "--workspace",
            str(workspace.root),
            *options,
            "serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = requests.post(
                    f"http://127.0.0.1:{port}/twilio/sms",
                    data={"MessageSid": "SM1", "From": "+15125550101", "Body": "hi"},
                    timeout=2,
                )
            except requests.ConnectionError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 403
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)

    refusals = [line for line in stderr.splitlines() if "webhook refused" in line]
    assert len(refusals) == 1, stderr
    assert "WARNING cxm_cli.server.twilio_hooks:" in refusals[0]
