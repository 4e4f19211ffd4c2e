"""A real IMAP server on loopback: Debian's dovecot with a throw-away config.

``Dovecot().start()`` writes a minimal configuration (IMAP only, no TLS, one
user with a plain password, maildir storage) into a fresh temporary folder,
starts ``dovecot -F`` on a free 127.0.0.1 port and waits until it answers.
``append(raw_bytes)`` delivers a message over IMAP. ``stop()`` ends the server
and removes the folder.

Running as root, dovecot refuses both to run its login process as root and to
give mail access to uid 0, so the login process runs as ``dovenull`` and the
mailbox belongs to ``nobody``; the folder lives directly under the system temp
directory because those users cannot enter pytest's private ``tmp_path``.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"
USER = "office@brightsmile.example"
PASSWORD = "imap-test-password"


def available() -> bool:
    return Path(DOVECOT).is_file() and os.access(DOVECOT, os.X_OK)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Dovecot:
    def __init__(self) -> None:
        self.root: Path | None = None
        self.port = 0
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Dovecot:
        # /tmp itself, not $TMPDIR: dovecot's unprivileged users must enter it.
        base = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="cxm-dovecot-", dir=base))
        self.root.chmod(0o755)
        self.port = free_port()
        config = self.root / "dovecot.conf"
        config.write_text(self._config(), encoding="utf-8")
        (self.root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")

        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited at start:\n{self.log()}")
            try:
                with imaplib.IMAP4("127.0.0.1", self.port, timeout=2) as probe:
                    probe.login(USER, PASSWORD)
                    probe.logout()
                return self
            except (OSError, imaplib.IMAP4.error):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("dovecot did not answer in time")

    def _config(self) -> str:
        root = self.root
        as_root = os.geteuid() == 0
        if as_root:
            login_user, mail_user, mail_group = "dovenull", "nobody", "nogroup"
            for folder in ("mail", "home"):
                (root / folder).mkdir()
                nobody = pwd.getpwnam(mail_user)
                os.chown(root / folder, nobody.pw_uid, nobody.pw_gid)
            internal = "root"
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            login_user = mail_user = internal = me
            mail_group = ""
        userdb_args = f"uid={mail_user} home={root}/home/%u" + (
            f" gid={mail_group}" if mail_group else ""
        )
        return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = {userdb_args}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
"""

    def connect(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        imap.login(USER, PASSWORD)
        return imap

    def append(self, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        with self.connect() as imap:
            if folder != "INBOX":
                imap.create(folder)
            status, detail = imap.append(
                folder, f"({flags})" if flags else None, None, raw
            )
            assert status == "OK", detail
            imap.logout()

    def recreate_folder(self, folder: str) -> None:
        """Delete and create ``folder``: the server gives it a new UIDVALIDITY."""
        with self.connect() as imap:
            imap.delete(folder)
            imap.create(folder)
            imap.logout()

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.connect() as imap:
            imap.select(folder, readonly=True)
            value = int(imap.response("UIDVALIDITY")[1][-1])
            imap.logout()
        return value

    def log(self) -> str:
        path = self.root / "dovecot.log" if self.root else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
