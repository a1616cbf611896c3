"""A helper that runs our chasquid daemon on loopback for end-to-end tests.

`ChasquidServer` lays out a config dir (COMPAT.md §2) under a short
temporary directory, starts `.build/debug/chasquid -config_dir=<dir>`, waits
until every listener is up, and stops it again. It can be restarted on the
same directories (after rewriting chasquid.conf) and killed with SIGKILL.

Layout, all under `base` (a short /tmp dir, because the local RPC Unix
socket lives in the data dir and socket paths are limited to ~108 bytes):

    base/conf/chasquid.conf
    base/conf/certs/mail.example.com/{fullchain,privkey}.pem
    base/conf/certs/other.example.org/{fullchain,privkey}.pem
    base/conf/domains/example.com/{users,aliases}
    base/conf/hooks/post-data              (only if a hook is given)
    base/data/                             data_dir
    base/mail/<user>/                      one Maildir per local user
    base/mail.log                          mail_log_path
    base/stderr.log                        the daemon's stderr (its log)

The hostname, the domain and certs/ can be chosen per instance (see
__init__): the remote-delivery tests run mx.a.test and mx.b.test side by side.

Environment: CHASQUID, CHASQUID_UTIL, MAILDIR_DELIVER override the
binaries (relative paths are taken from the repo root).

Deployed as installed (see deployed.py): when the tests run as root, the
daemon runs as the unprivileged user `chasquid-test`, with the config tree
root:chasquid-test and group-readable only, and base/ (data, mail, logs)
owned by that user. As any other user it runs as that user.
"""

import atexit
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import deployed
import processes
from dnstest import DNSServer

REPO_ROOT = Path(__file__).resolve().parents[2]

HOSTNAME = "mail.example.com"
OTHER_NAME = "other.example.org"
DOMAIN = "example.com"
USER = "user@example.com"
PASSWORD = "secret"
RECEIVE_ONLY = "recv@example.com"

DEFAULT_ALIASES = """\
# test aliases
info: user
postmaster: user
"""


def binary(env_name, default):
    path = Path(os.environ.get(env_name, default))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def chasquid_bin():
    """The daemon as the daemon user runs it: an installed copy where the
    tests run as root (see deployed.installed)."""
    return deployed.installed(binary("CHASQUID", ".build/debug/chasquid"))


def chasquid_util_bin():
    return binary("CHASQUID_UTIL", ".build/debug/chasquid-util")


def maildir_deliver_bin():
    return deployed.installed(binary("MAILDIR_DELIVER", ".build/debug/maildir-deliver"))


def mda_lmtp_bin():
    return deployed.installed(binary("MDA_LMTP", ".build/debug/mda-lmtp"))


def smtp_check_bin():
    return deployed.installed(binary("SMTP_CHECK", ".build/debug/smtp-check"))


def wait_for_binaries(timeout=120):
    """The lead may be rebuilding; a binary can be briefly missing."""
    deadline = time.monotonic() + timeout
    bins = [binary("CHASQUID", ".build/debug/chasquid"), chasquid_util_bin(),
            binary("MAILDIR_DELIVER", ".build/debug/maildir-deliver"),
            binary("MDA_LMTP", ".build/debug/mda-lmtp"),
            binary("SMTP_CHECK", ".build/debug/smtp-check")]
    while True:
        missing = [b for b in bins if not (b.is_file() and os.access(b, os.X_OK))]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"binaries not built: {missing}")
        time.sleep(2)


def retry_busy(fn, timeout=120):
    """Calls fn(), retrying while the binary is being rewritten by a build
    (ETXTBSY) or briefly missing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except OSError as e:
            if e.errno not in (errno.ETXTBSY, errno.ENOENT) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def run_bin(cmd, **kwargs):
    """subprocess.run with retry_busy; captures output, stdin /dev/null."""
    kwargs.setdefault("capture_output", True)
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("timeout", 60)
    return retry_busy(lambda: subprocess.run([str(c) for c in cmd], **kwargs))


_handed_out = set()


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port nothing listens on, for a daemon to bind later. Below the
    ephemeral range: a port from there can be taken by an outgoing
    connection (a client, a delivery) before the daemon binds it. Never the
    same port twice in one run."""
    low = _ephemeral_low()
    while True:
        port = random.randrange(10000, low)
        if port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port


def make_cert(directory, name):
    """Self-signed certificate for `name` in `directory` (certbot layout)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-days", "30", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(directory / "privkey.pem"),
            "-out", str(directory / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


_CERT_CACHE = None


def cached_certs():
    """Makes the two certificates once per test session (openssl and RSA
    key generation are the slowest part of a fresh layout)."""
    global _CERT_CACHE
    if _CERT_CACHE is None or not _CERT_CACHE.is_dir():
        d = Path(tempfile.mkdtemp(prefix="cqcerts"))
        make_cert(d / HOSTNAME, HOSTNAME)
        make_cert(d / OTHER_NAME, OTHER_NAME)
        _CERT_CACHE = d
    return _CERT_CACHE


_USERS_CACHE = None


def cached_users_file():
    """A users file for example.com, made with our chasquid-util once per
    session (scrypt in a debug build takes a moment per user)."""
    global _USERS_CACHE
    if _USERS_CACHE is None or not _USERS_CACHE.is_file():
        d = Path(tempfile.mkdtemp(prefix="cqusers"))
        conf = d / "conf"
        (conf / "domains" / DOMAIN).mkdir(parents=True)
        (conf / "chasquid.conf").write_text(
            f'hostname: "{HOSTNAME}"\ndata_dir: "{d / "data"}"\n')
        util = chasquid_util_bin()
        for cmd in (
            [util, f"-C={conf}", "user-add", USER, f"--password={PASSWORD}"],
            [util, f"-C={conf}", "user-add", RECEIVE_ONLY, "--receive_only"],
        ):
            p = run_bin(cmd)
            if p.returncode != 0:
                raise RuntimeError(f"{cmd}: {p.returncode} {p.stdout!r} {p.stderr!r}")
        _USERS_CACHE = conf / "domains" / DOMAIN / "users"
    return _USERS_CACHE


def cleanup_caches():
    for c in (_CERT_CACHE, _USERS_CACHE and _USERS_CACHE.parents[3]):
        if c:
            shutil.rmtree(c, ignore_errors=True)


def wait_for(predicate, timeout=15, what="condition", interval=0.05):
    """Polls predicate until it returns something true, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_empty_dns = None


def shared_dns():
    """The DNS server shared by every daemon that does not bring its own.
    Its zone starts empty (each name NXDOMAIN at once), so no test ever asks
    the machine's resolver (or the internet); a test may add names of its
    own, unique to it, with .update()."""
    global _empty_dns
    if _empty_dns is None:
        _empty_dns = DNSServer()
        _empty_dns.start()
        atexit.register(_empty_dns.cleanup)
    return _empty_dns


def empty_dns_flag():
    """-testing__dns_addr for the shared DNS server (see shared_dns)."""
    return shared_dns().chasquid_flag


class ChasquidServer:
    """One chasquid daemon and its directories.

    Attributes: base, config_dir, data_dir, mail_dir, mail_log_path,
    stderr_path, smtp_port, submission_port, tls_port, proc.
    """

    def __init__(self, base=None, aliases=DEFAULT_ALIASES, post_data_hook=None,
                 max_data_size_mb=None, extra_conf="", flags=(), extra_env=None,
                 hostname=HOSTNAME, domain=DOMAIN, certs=None, outgoing_smtp_port=1,
                 monitoring=False):
        """hostname: chasquid.conf's hostname. domain: the local domain
        (domains/<domain>/, with the users `user` and `recv`). certs:
        {name: directory with fullchain.pem and privkey.pem}, copied to
        certs/<name>/; None gives the two default self-signed ones.
        outgoing_smtp_port: -testing__outgoing_smtp_port (1 by default, so
        no queued message ever leaves the machine); can also be set on the
        attribute before start()."""
        wait_for_binaries()
        self.hostname = hostname
        self.domain = domain
        self.user = f"user@{domain}"
        self.outgoing_smtp_port = outgoing_smtp_port
        self.base = Path(base or tempfile.mkdtemp(prefix="cqs", dir="/tmp"))
        self.config_dir = self.base / "conf"
        self.data_dir = self.base / "data"
        self.mail_dir = self.base / "mail"
        self.mail_log_path = self.base / "mail.log"
        self.stderr_path = self.base / "stderr.log"
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.tls_port = free_port()
        # monitoring: the monitoring HTTP server on 127.0.0.1:<mon_port>;
        # start() then also waits for it.
        self.mon_port = free_port() if monitoring else None
        self.flags = list(flags)
        self.extra_env = dict(extra_env or {})
        self.proc = None
        self._stderr_file = None
        self._layout(aliases, post_data_hook, certs)
        self.write_conf(max_data_size_mb=max_data_size_mb, extra=extra_conf)

    # ---- layout ----

    def _layout(self, aliases, post_data_hook, certs=None):
        self.set_certs(certs)
        dom = self.config_dir / "domains" / self.domain
        dom.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached_users_file(), dom / "users")
        if aliases is not None:
            (dom / "aliases").write_text(aliases)
        self.data_dir.mkdir(exist_ok=True)
        self.mail_dir.mkdir(exist_ok=True)
        if post_data_hook is not None:
            self.set_hook(post_data_hook)

    def set_certs(self, certs=None):
        """Replaces certs/ with {name: directory} (None: the default two).
        Takes effect at the next start (or SIGHUP)."""
        target = self.config_dir / "certs"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        if certs is None:
            cache = cached_certs()
            certs = {name: cache / name for name in (HOSTNAME, OTHER_NAME)}
        for name, directory in certs.items():
            (target / name).mkdir()
            for f in ("fullchain.pem", "privkey.pem"):
                shutil.copyfile(Path(directory) / f, target / name / f)

    def set_hook(self, script):
        hooks = self.config_dir / "hooks"
        hooks.mkdir(exist_ok=True)
        path = hooks / "post-data"
        path.write_text(script)
        path.chmod(0o755)
        return path

    def conf_text(self, mda_bin=None, mda_args=None, max_data_size_mb=None, extra=""):
        mda_bin = mda_bin or str(maildir_deliver_bin())
        mda_args = mda_args or [f"{self.mail_dir}/%to_user%"]
        lines = [
            f'hostname: "{self.hostname}"',
            f'smtp_address: "127.0.0.1:{self.smtp_port}"',
            f'submission_address: "127.0.0.1:{self.submission_port}"',
            f'submission_over_tls_address: "127.0.0.1:{self.tls_port}"',
            f'data_dir: "{self.data_dir}"',
            f'mail_log_path: "{self.mail_log_path}"',
            f'mail_delivery_agent_bin: "{mda_bin}"',
        ]
        lines += [f'mail_delivery_agent_args: "{a}"' for a in mda_args]
        if max_data_size_mb is not None:
            lines.append(f"max_data_size_mb: {max_data_size_mb}")
        if self.mon_port:
            lines.append(f'monitoring_address: "127.0.0.1:{self.mon_port}"')
        if extra:
            lines.append(extra)
        return "\n".join(lines) + "\n"

    def write_conf(self, **kwargs):
        (self.config_dir / "chasquid.conf").write_text(self.conf_text(**kwargs))

    # ---- process control ----

    def start(self, timeout=30):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._log_offset = self.mail_log_path.stat().st_size if self.mail_log_path.exists() else 0
        self._stderr_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        self._stderr_file = open(self.stderr_path, "ab")
        self.deploy()
        cmd = [str(chasquid_bin()), f"-config_dir={self.config_dir}",
               # By default (1), no queued remote message leaves the machine.
               f"-testing__outgoing_smtp_port={self.outgoing_smtp_port}", *self.flags]
        if not any(f.startswith("-testing__dns_addr") for f in self.flags):
            cmd.append(empty_dns_flag())
        self.proc = retry_busy(lambda: subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._stderr_file,
            stderr=self._stderr_file, cwd=str(self.base),
            env=deployed.daemon_env(self.extra_env), **deployed.popen_user()))
        want = [f"127.0.0.1:{p}" for p in (self.smtp_port, self.submission_port, self.tls_port)]
        # Bound before the SMTP listeners, so open by the time they are.
        monitor = [f"127.0.0.1:{self.mon_port}"] if self.mon_port else []
        deadline = time.monotonic() + timeout
        while True:
            text = self.mail_log()[self._log_offset:] if self.mail_log_path.exists() else ""
            err = self.stderr()
            if all(f"listening on {a}" in text or f"listening on {a}" in err for a in want):
                if all(self._port_open(a) for a in want + monitor):
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chasquid exited with {self.proc.returncode} during startup:\n{err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chasquid did not start listening in {timeout}s:\n{err}")
            time.sleep(0.05)

    def deploy(self):
        """Owners and modes as on an installed system, before each start
        (tests add files between starts): see deployed.py."""
        deployed.own_config(self.config_dir)
        deployed.own_state(self.base, skip=self.config_dir)

    @staticmethod
    def _port_open(addr):
        host, port = addr.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return True
        except OSError:
            return False

    def _reap(self):
        if self._stderr_file:
            self._stderr_file.close()
            self._stderr_file = None

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        status = processes.stop(self.proc, timeout)
        self._reap()
        return status

    def reload(self):
        """SIGHUP after the config was edited, with the edited files given
        the installed owners and modes first (as an admin's files are)."""
        self.deploy()
        self.proc.send_signal(signal.SIGHUP)

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reap()

    def restart(self, **conf):
        """Stops (SIGTERM) and starts again on the same directories; with
        keyword arguments, chasquid.conf is rewritten first."""
        self.stop()
        if conf:
            self.write_conf(**conf)
        return self.start()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- observation ----

    def mail_log(self):
        try:
            return self.mail_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr(self):
        """The daemon's stderr (its log) since the last start."""
        try:
            data = self.stderr_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._stderr_offset:].decode("utf-8", "replace") if hasattr(self, "_stderr_offset") \
            else data.decode("utf-8", "replace")

    def util(self, *args, timeout=60):
        """Runs our chasquid-util with -C=<config_dir> (cwd: base, so a
        relative data_dir would resolve like the daemon's)."""
        return run_bin([chasquid_util_bin(), f"-C={self.config_dir}", *args],
                       cwd=str(self.base), timeout=timeout)

    def maildir(self, user="user"):
        return self.mail_dir / user

    def messages(self, user="user"):
        """Delivered messages (bytes) in user's Maildir new/, oldest first."""
        new = self.maildir(user) / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def queue_files(self):
        q = self.data_dir / "queue"
        if not q.is_dir():
            return []
        return sorted(p.name for p in q.iterdir())

    def wait_for(self, predicate, timeout=15, what="condition"):
        return wait_for(predicate, timeout, what)

    def wait_for_log(self, text, timeout=15):
        return self.wait_for(lambda: text in self.mail_log(), timeout, f"mail log line {text!r}")

    def wait_for_messages(self, n, user="user", timeout=15):
        return self.wait_for(lambda: len(self.messages(user)) >= n and self.messages(user),
                             timeout, f"{n} message(s) for {user}")
