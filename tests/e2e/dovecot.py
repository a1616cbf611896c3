"""A private Dovecot for the integration tests: its auth service (the
sockets chasquid's `dovecot_auth` talks to) and its LMTP listener (what
mda-lmtp delivers into).

Debian's `dovecot-core` and `dovecot-lmtpd` are all it needs; no system
instance is configured. This writes its own dovecot.conf in a temporary
directory and runs `dovecot -F -c <conf>` in the foreground. Everything
(sockets, state, log, mail) lives under that directory.

    dv = Dovecot(users={"dove@example.com": "dovepass"})
    dv.start()
    dv.userdb_socket, dv.client_socket     # for dovecot_userdb_path/_client_path
    dv.lmtp_socket, dv.lmtp_port           # LMTP on a Unix socket and 127.0.0.1
    dv.messages("dove@example.com")        # what Dovecot stored, as bytes
    dv.stop()

Dovecot's master needs root (CI has it). Its mail processes run as the
daemon user (deployed.DAEMON_USER), and the auth sockets are 0666, so our
unprivileged daemon reaches them as an installed one would reach sockets
made for its group.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import deployed
import processes
import server as S

DOVECOT = "/usr/sbin/dovecot"


def available():
    if not Path(DOVECOT).exists():
        return False, "dovecot-core is not installed"
    if not Path("/usr/lib/dovecot/lmtp").exists():
        return False, "dovecot-lmtpd is not installed"
    if os.geteuid() != 0:
        return False, "Dovecot's master needs root"
    return True, ""


class Dovecot:
    def __init__(self, users):
        """users: {address: password}; every one gets a Maildir."""
        self.base = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
        # mkdtemp makes it 0700; the daemon user must reach the sockets.
        self.base.chmod(0o755)
        self.run_dir = self.base / "run"
        self.mail_dir = self.base / "mail"
        self.log_path = self.base / "dovecot.log"
        self.userdb_socket = self.run_dir / "auth-chasquid-userdb"
        self.client_socket = self.run_dir / "auth-chasquid-client"
        self.lmtp_socket = self.run_dir / "lmtp"
        self.lmtp_port = S.free_port()
        self.users = dict(users)
        self.proc = None

    def _write(self):
        for d in (self.run_dir, self.mail_dir, self.base / "state"):
            d.mkdir(exist_ok=True)
        ids = deployed.account()
        user = deployed.DAEMON_USER if ids else os.environ.get("USER", "root")
        if ids:
            os.chown(self.mail_dir, *ids)
        (self.base / "passwd").write_text(
            "".join(f"{a}:{{PLAIN}}{p}::::::\n" for a, p in self.users.items()))
        (self.base / "dovecot.conf").write_text(f"""\
base_dir = {self.run_dir}
state_dir = {self.base}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
disable_plaintext_auth = no
default_internal_user = {user}
default_login_user = {user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.base}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.base}/passwd
  default_fields = uid={user} gid={user} home={self.mail_dir}/%d/%n
}}
mail_location = maildir:~/Maildir
service auth {{
  unix_listener auth-chasquid-userdb {{
    mode = 0666
  }}
  unix_listener auth-chasquid-client {{
    mode = 0666
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
""")

    def start(self, timeout=30):
        self._write()
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.base / "dovecot.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.base / "stderr", "ab"))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}:\n{self.log()}"
                                   f"{(self.base / 'stderr').read_text()}")
            if all(p.exists() for p in (self.userdb_socket, self.client_socket, self.lmtp_socket)) \
                    and self._port_open():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def _port_open(self):
        try:
            with socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=2):
                return True
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None
        # Its sockets go with it, as when Dovecot is stopped for real.
        for p in (self.userdb_socket, self.client_socket, self.lmtp_socket):
            if p.exists():
                p.unlink()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maildir(self, address):
        local, domain = address.split("@")
        return self.mail_dir / domain / local / "Maildir"

    def messages(self, address):
        """What Dovecot stored for `address` (new/ and cur/), oldest first."""
        files = []
        for sub in ("new", "cur"):
            d = self.maildir(address) / sub
            if d.is_dir():
                files += list(d.iterdir())
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]
