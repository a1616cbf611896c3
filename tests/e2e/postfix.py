"""A private Postfix instance for interoperability tests.

Debian's `postfix` package (installed with debconf's "No configuration", so
/etc/postfix has no main.cf and no system instance runs) is all it needs:
this module writes its own main.cf and master.cf in a temporary directory and
runs `postfix -c <dir> start`. Everything (queue, data, mail, log) lives
under that directory; nothing in /etc is touched. Postfix's master(8) runs as
root and its daemons as the `postfix` user the package created, so the tests
need root (CI has it).

    pf = Postfix(hostname="mx.pf.test", mailbox_domains=["pf.test"],
                 listeners=[("127.0.0.50", 2525, None),          # plain
                            ("127.0.0.51", 2525, cert_dir)],     # STARTTLS
                 routes={"tls@a.test": ("secure", "127.0.0.1", 1025, "mx.a.test"),
                         "a.test": ("none", "127.0.0.1", 1025, None)},
                 ca_file=ca.cert_path)
    pf.start()
    ...                                  # SMTP into a listener: relayed by `routes`
    pf.messages("pf.test")               # mail for mailbox_domains, as stored
    pf.log()                             # Postfix's own log (maillog_file)
    pf.stop()

Receiving: every address of a mailbox domain goes to one Maildir,
<base>/mail/<domain>/ (virtual(8), uid/gid 65534).
Sending: `routes` maps a recipient address or domain (transport_maps keys) to
(tls, host, port, name): tls is Postfix's smtp_tls_security_level for that
route ("none", "may", "encrypt", "verify", "secure"); with "verify"/"secure"
the certificate must chain to ca_file and match `name`. Mail from 127.0.0.0/8
may relay.

Postfix's command-line tools print errors only to a terminal (otherwise to
syslog, which containers rarely have), so commands run under a pty and their
output is kept in the exception on failure.
"""

import os
import pty
import pwd
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"

MASTER_CF_BASE = """\
# service  type  private unpriv chroot wakeup maxproc command + args
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""

TLS_LEVELS = ("none", "may", "encrypt", "verify", "secure")


def available():
    """(True, "") if a private Postfix can run here, else (False, why)."""
    if not os.path.exists(POSTFIX):
        return False, "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return False, "Postfix's master(8) must start as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False, "there is no `postfix` user (the Debian package creates it)"
    return True, ""


def run_pty(args, timeout=60):
    """Runs a command with a pty as stdout/stderr; returns (rc, output)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:       # EIO: the child side is closed
                    chunk = b""
                if not chunk and p.poll() is not None:
                    break
                out += chunk
            elif p.poll() is not None:
                break
            if time.monotonic() > deadline:
                p.kill()
                raise TimeoutError(f"{args}: no exit in {timeout}s; output so far: {out!r}")
    finally:
        os.close(master)
    return p.wait(), out.decode("utf-8", "replace").replace("\r\n", "\n")


class Postfix:
    def __init__(self, hostname="mx.pf.test", mailbox_domains=(), listeners=(), routes=None,
                 ca_file=None, base=None, extra_main_cf=""):
        ok, why = available()
        if not ok:
            raise RuntimeError(why)
        self.hostname = hostname
        self.mailbox_domains = list(mailbox_domains)
        self.listeners = [(h, int(p), Path(c) if c else None) for h, p, c in listeners]
        self.routes = dict(routes or {})
        self.base = Path(base or tempfile.mkdtemp(prefix="cqpf", dir="/tmp"))
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.mail = self.base / "mail"
        self.log_path = self.base / "postfix.log"
        self.running = False
        self._layout(ca_file, extra_main_cf)

    # ---- configuration

    def _layout(self, ca_file, extra_main_cf):
        postfix_user = pwd.getpwnam("postfix")
        self.base.chmod(0o755)
        for d in (self.conf, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.mail, 65534, 65534)
        # Certificates are copied in: the CA's own directory is root-only,
        # and smtp(8) reads its CA file as `postfix`.
        certs = self.conf / "certs"
        certs.mkdir(exist_ok=True)
        certs.chmod(0o755)
        ca_copy = None
        if ca_file:
            ca_copy = certs / "ca.pem"
            shutil.copyfile(ca_file, ca_copy)
            ca_copy.chmod(0o644)

        main = [
            "compatibility_level = 3.6",
            f"config_directory = {self.conf}",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.data}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"myhostname = {self.hostname}",
            f"mydomain = {self.hostname.split('.', 1)[-1]}",
            "myorigin = $mydomain",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup = no",
            "smtp_dns_support_level = disabled",
            "smtp_host_lookup = native",
            "alias_maps =",
            "alias_database =",
            "biff = no",
            f"maillog_file = {self.log_path}",
            "maillog_file_prefixes = /tmp, /var, /dev/stdout",
            # Retry quickly: a test should not wait minutes for a deferral.
            "queue_run_delay = 5s",
            "minimal_backoff_time = 5s",
            "maximal_backoff_time = 10s",
            # Mailboxes: one Maildir per domain.
            f"virtual_mailbox_domains = {' '.join(self.mailbox_domains)}",
            f"virtual_mailbox_base = {self.mail}",
            f"virtual_mailbox_maps = texthash:{self.conf}/vmailbox",
            "virtual_uid_maps = static:65534",
            "virtual_gid_maps = static:65534",
            "virtual_minimum_uid = 100",
            # Outgoing: by transport_maps only.
            f"transport_maps = texthash:{self.conf}/transport",
            "smtp_tls_security_level = none",
            "smtp_tls_loglevel = 1",
            "smtpd_tls_loglevel = 1",
            "smtpd_tls_security_level = none",
        ]
        if ca_copy:
            main.append(f"smtp_tls_CAfile = {ca_copy}")
        if extra_main_cf:
            main.append(extra_main_cf)
        (self.conf / "main.cf").write_text("\n".join(main) + "\n")
        (self.conf / "vmailbox").write_text(
            "".join(f"@{d} {d}/\n" for d in self.mailbox_domains))

        master = [MASTER_CF_BASE]
        for i, (host, port, cert_dir) in enumerate(self.listeners):
            line = f"{host}:{port} inet n - n - - smtpd"
            if cert_dir:
                d = certs / f"listener{i}"
                d.mkdir(exist_ok=True)
                for f in ("fullchain.pem", "privkey.pem"):
                    shutil.copyfile(cert_dir / f, d / f)
                (d / "privkey.pem").chmod(0o600)
                line += (f"\n  -o smtpd_tls_security_level=may"
                         f"\n  -o smtpd_tls_chain_files={d / 'privkey.pem'},{d / 'fullchain.pem'}")
            master.append(line + "\n")
        transport = []
        for key, (tls, host, port, name) in self.routes.items():
            assert tls in TLS_LEVELS, tls
            service = f"out-{tls}-{len(transport)}"
            opts = [f"smtp_tls_security_level={tls}"]
            if tls in ("verify", "secure") and name:
                opts += [f"smtp_tls_{tls}_cert_match={name}", f"smtp_tls_servername={name}"]
            master.append(f"{service} unix - - n - - smtp\n" + "".join(f"  -o {o}\n" for o in opts))
            transport.append(f"{key} {service}:[{host}]:{port}\n")
        (self.conf / "master.cf").write_text("".join(master))
        (self.conf / "transport").write_text("".join(transport))

    # ---- process control

    def _postfix(self, *args, timeout=60):
        return run_pty([POSTFIX, "-c", str(self.conf), *args], timeout=timeout)

    def start(self, timeout=30):
        rc, out = self._postfix("check")
        if rc != 0:
            raise RuntimeError(f"postfix check failed ({rc}):\n{out}\n{self.log()}")
        rc, out = self._postfix("start")
        if rc != 0:
            raise RuntimeError(f"postfix start failed ({rc}):\n{out}\n{self.log()}")
        self.running = True
        deadline = time.monotonic() + timeout
        while not all(self._port_open(h, p) for h, p, _ in self.listeners):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Postfix listeners not up in {timeout}s:\n{self.log()}")
            time.sleep(0.1)
        return self

    @staticmethod
    def _port_open(host, port):
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.recv(512)       # the greeting, so smtpd is really serving
                return True
        except OSError:
            return False

    def master_pid(self):
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self, timeout=30):
        if not self.running:
            return
        pid = self.master_pid()
        self._postfix("stop")
        deadline = time.monotonic() + timeout
        while pid and _alive(pid):
            if time.monotonic() > deadline:
                self._postfix("abort")
                break
            time.sleep(0.1)
        self.running = False

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # ---- observation

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def messages(self, domain):
        """Messages stored for `domain` (bytes, oldest first)."""
        new = self.mail / domain / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def flush(self):
        """Asks the queue manager to retry deferred mail now."""
        return self._postfix("flush")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
