"""docs/howto.md and the examples of docs/hooks.md, run as written.

The commands are read from the documents, so the two cannot drift apart:
each fenced block is preceded by a marker comment,

    <!-- test: NAME[, flag...] -->

and this file runs it:

  - a ```sh block is run with bash (-e, -o pipefail), after `localize`
    points its system paths at a scratch root, its ports at the daemon's
    high ports and the user `mail` at the tests' daemon user;
  - `not run`: the block needs what a test does not have (the internet, a
    build, systemd); STAND_INS[NAME] does the same thing here instead, and
    the howto says so next to the block;
  - `retry`: run again, for a while, until it succeeds (it looks at a
    delivery that happens in the background);
  - a block named `output` is what the block before it prints: each of its
    lines, `...` matching anything, must be in that output;
  - `zone` is the DNS records the howto asks to publish: served by the
    tests' DNS server, and compared with the fixes smtp-check prints;
  - in docs/hooks.md, `hook-*` blocks are the example hooks, installed as
    they are into a daemon.

Every fenced block of the howto must have a marker, and every `not run`
block a stand-in, so a command added to the howto is run here or the test
fails.

The howto's commands run as root (the daemon as deployed.DAEMON_USER), so
this file needs root, as CI has; as any other user it is skipped.
"""

import os
import re
import shlex
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest

import deployed
import mta
import processes
import server as S
from dnstest import DNSServer
from server import ChasquidServer

HOWTO = S.REPO_ROOT / "docs" / "howto.md"
HOOKS = S.REPO_ROOT / "docs" / "hooks.md"
HOSTNAME = "mail.example.com"
PASSWORD = "howto-Secret-1"
# The addresses of the howto's zone, and what the test serves instead.
PUBLIC_V4 = "192.0.2.25"
PUBLIC_V4_REVERSE = "25.2.0.192.in-addr.arpa"
LOOPBACK_REVERSE = "1.0.0.127.in-addr.arpa"

MARKER = re.compile(r"^<!-- test: (.+?) -->$")
FENCE = re.compile(r"^```(\S*)\s*$")
GO_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")


# ---------------------------------------------------------------- the documents


@dataclass
class Block:
    name: str
    flags: set
    lang: str
    text: str
    line: int
    output: "Block" = None

    def where(self):
        return f"block {self.name!r} (line {self.line})"


def doc_blocks(path):
    """The fenced blocks of a markdown file, with their markers. An `output`
    block is attached to the block before it rather than listed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    pending = None
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            assert pending is None, f"{path}:{i + 1}: two markers in a row"
            parts = [p.strip() for p in marker.group(1).split(",")]
            pending = (parts[0], set(parts[1:]))
            assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), \
                f"{path}:{i + 1}: a marker must be right above a fenced block"
        elif fence:
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            name, flags = pending or (None, set())
            pending = None
            block = Block(name, flags, fence.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1)
            if name == "output":
                assert blocks, f"{path}:{i + 1}: an output block needs a block above it"
                blocks[-1].output = block
            else:
                blocks.append(block)
            i = end
        i += 1
    return blocks


def named_block(path, name):
    found = [b for b in doc_blocks(path) if b.name == name]
    assert len(found) == 1, f"{path}: expected one block named {name!r}, found {len(found)}"
    return found[0]


def expect_lines(expected, text, what):
    """Each line of `expected` (`...` matches anything) is somewhere in one
    line of `text`."""
    lines = text.splitlines()
    for want in expected.splitlines():
        if not want.strip():
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
        assert any(pattern.search(line) for line in lines), \
            f"{what}: no line matches {want!r} in:\n{text}"


# ---------------------------------------------------------------- DNS records


def parse_zone(text):
    """Zone-file lines `name [IN] TYPE data` into [(name, type, value)]:
    names lower case without the trailing dot; TXT values joined from
    their quoted strings; MX as (preference, exchange)."""
    records = []
    for line in text.splitlines():
        if line.strip().startswith(";"):
            continue
        words = shlex.split(line)
        if not words:
            continue
        name, rest = words[0], words[1:]
        if rest and rest[0].upper() == "IN":
            rest = rest[1:]
        rtype, data = rest[0].upper(), rest[1:]
        name = name.rstrip(".").lower()
        if rtype == "TXT":
            value = "".join(data)
        elif rtype == "MX":
            value = (int(data[0]), data[1].rstrip(".").lower())
        elif rtype == "PTR":
            value = data[0].rstrip(".").lower()
        else:
            value = " ".join(data)
        records.append((name, rtype, value))
    return records


def serve_zone(dns, records):
    """Replaces the DNS server's zone with these records, for loopback:
    the howto's public address becomes 127.0.0.1, and AAAA records are left
    out (the daemon listens on 127.0.0.1 only)."""
    zone = {}
    for name, rtype, value in records:
        if rtype == "AAAA":
            continue
        if name == PUBLIC_V4_REVERSE:
            name = LOOPBACK_REVERSE
        if rtype == "A" and value == PUBLIC_V4:
            value = "127.0.0.1"
        entry = zone.setdefault(name, {}).setdefault(rtype, [])
        if rtype == "MX":
            entry.append(list(value))
        elif rtype == "TXT":
            entry.append([value[i:i + 255] for i in range(0, len(value), 255)])
        else:
            entry.append(value)
    dns.set_zone(zone)


# ---------------------------------------------------------------- the site


class Site:
    """The scratch machine the howto runs on: `root` stands for /, with
    etc/chasquid, etc/letsencrypt, var/lib/chasquid, var/mail and
    usr/local/bin under it; `bin` holds the stand-ins on PATH."""

    def __init__(self):
        S.wait_for_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="cqhow", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.user = deployed.DAEMON_USER
        self.uid, self.gid = deployed.account()
        self.conf = self.root / "etc" / "chasquid"
        self.letsencrypt = self.root / "etc" / "letsencrypt"
        self.mail = self.root / "var" / "mail"
        self.data = self.root / "var" / "lib" / "chasquid"
        self.prefix_bin = self.root / "usr" / "local" / "bin"
        self.bin = self.root / "test-bin"
        self.work = self.root / "root-home"
        self.work.mkdir()
        self.log_path = self.root / "daemon.log"
        self.pid_file = self.bin / "chasquid.pid"
        self.smtp_port, self.submission_port, self.tls_port = (S.free_port() for _ in range(3))
        self.dns = DNSServer()
        self.dns.start()
        self.ca = mta.test_ca()
        self.proc = None
        self.log_file = None
        self.zone = []          # the howto's records (parse_zone)
        self.ptr = []           # its PTR record, from the text
        self.dkim = {}          # domain -> (name, "TXT", value), from dkim-keygen
        self.used_rules = set()
        self._stand_in_commands()

    # -- paths, ports and the user, as the howto writes them and as here

    def rules(self):
        return [
            ("/etc/chasquid", str(self.conf)),
            ("/etc/letsencrypt", str(self.letsencrypt)),
            ("/var/mail", str(self.mail)),
            ("/usr/local/bin/", f"{self.prefix_bin}/"),
            (f"{HOSTNAME}:25 ", f"127.0.0.1:{self.smtp_port} "),
            (f"{HOSTNAME}:587 ", f"127.0.0.1:{self.submission_port} "),
            (f"{HOSTNAME}:465 ", f"127.0.0.1:{self.tls_port} "),
            ("runuser -u mail ", f"runuser -u {self.user} "),
            ("chgrp -R mail ", f"chgrp -R {self.user} "),
            ("chgrp mail ", f"chgrp {self.user} "),
        ]

    def localize(self, text):
        for old, new in self.rules():
            if old in text:
                self.used_rules.add(old)
                text = text.replace(old, new)
        return text

    def _stand_in_commands(self):
        """Programs the howto names, found first on PATH: chasquid-util
        and smtp-check with this site's config dir (and smtp-check with the
        tests' DNS server, port and CA), swaks and chasquid-util given the
        password they ask for, and systemctl's reload as the unit does it."""
        self.bin.mkdir()
        os.chmod(self.bin, 0o755)
        swaks = shutil.which("swaks") or "/usr/bin/swaks"
        util = self.prefix_bin / "chasquid-util"
        check = self.prefix_bin / "smtp-check"
        scripts = {
            "chasquid-util": f"""#!/bin/sh
case "$1" in
user-add|authenticate)
	printf '%s\\n%s\\n' '{PASSWORD}' '{PASSWORD}' | {util} -C={self.conf} "$@"
	exit $? ;;
esac
exec {util} -C={self.conf} "$@" < /dev/null
""",
            "smtp-check": f"""#!/bin/sh
SSL_CERT_FILE={self.ca.cert_path} exec {check} -port={self.smtp_port} \\
	{self.dns.chasquid_flag} -config_dir={self.conf} "$@"
""",
            "swaks": f"""#!/bin/sh
case " $* " in
*" --auth-user "*)
	printf '%s\\n' '{PASSWORD}' | {swaks} "$@"
	exit $? ;;
esac
exec {swaks} "$@" < /dev/null
""",
            # The unit's ExecReload=/bin/kill -HUP $MAINPID.
            "systemctl": f"""#!/bin/sh
if [ "$*" != "reload chasquid" ]; then
	echo "test stand-in for systemctl: only 'reload chasquid', not '$*'" >&2
	exit 1
fi
exec kill -HUP "$(cat {self.pid_file})"
""",
        }
        for name, text in scripts.items():
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env["HOME"] = str(self.work)
        return env

    def sh(self, block, timeout=120):
        script = self.localize(block.text)
        proc = S.retry_busy(lambda: subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script], cwd=str(self.work), env=self.env(),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
            preexec_fn=lambda: os.umask(0o022)))
        out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
        return proc.returncode, out, script

    # -- the daemon

    def start_daemon(self, timeout=60):
        self.log_file = open(self.log_path, "ab")
        cmd = [str(self.prefix_bin / "chasquid"), f"-config_dir={self.conf}",
               "-testing__outgoing_smtp_port=1", self.dns.chasquid_flag]
        self.proc = S.retry_busy(lambda: subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file, cwd="/",
            env=deployed.daemon_env(), **deployed.popen_user()))
        self.pid_file.write_text(f"{self.proc.pid}\n")
        want = [f"listening on 127.0.0.1:{p}" for p in
                (self.smtp_port, self.submission_port, self.tls_port)]
        deadline = time.monotonic() + timeout
        while not all(w in self.log() for w in want):
            if self.proc.poll() is not None:
                raise AssertionError(f"chasquid exited with {self.proc.returncode}:\n{self.log()}")
            assert time.monotonic() < deadline, f"chasquid did not start:\n{self.log()}"
            time.sleep(0.1)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def messages(self, domain, user):
        new = self.mail / domain / user / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def cleanup(self):
        if self.proc is not None:
            processes.stop(self.proc)
        if self.log_file:
            self.log_file.close()
        self.dns.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- stand-ins


def stand_in_install(site):
    """`make install-config-skeleton` as the howto's make runs it, into the
    scratch root; the built programs copied where install-binaries puts
    them; and what a Debian system has already: /var/mail, root:mail 2775."""
    p = subprocess.run(["make", "-s", "-C", str(S.REPO_ROOT), "install-config-skeleton",
                        f"DESTDIR={site.root}", f"MAIL_USER={site.user}"],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    site.prefix_bin.mkdir(parents=True, exist_ok=True)
    for name, default in (("chasquid", ".build/debug/chasquid"),
                          ("chasquid-util", ".build/debug/chasquid-util"),
                          ("smtp-check", ".build/debug/smtp-check"),
                          ("maildir-deliver", ".build/debug/maildir-deliver")):
        source = S.binary(name.upper().replace("-", "_"), default)
        S.retry_busy(lambda: shutil.copy2(source, site.prefix_bin / name))
        os.chmod(site.prefix_bin / name, 0o755)
    site.mail.mkdir(parents=True)
    os.chown(site.mail, 0, site.gid)
    os.chmod(site.mail, 0o2775)
    assert (site.data.stat().st_uid, site.data.stat().st_mode & 0o777) == (site.uid, 0o700)
    # Instead of systemd's sockets, high ports; the scratch data dir; the
    # mail log with the daemon's.
    with open(site.conf / "chasquid.conf", "a") as f:
        f.write(f"""
# tests/e2e/test_howto.py
smtp_address: "127.0.0.1:{site.smtp_port}"
submission_address: "127.0.0.1:{site.submission_port}"
submission_over_tls_address: "127.0.0.1:{site.tls_port}"
data_dir: "{site.data}"
mail_log_path: "<stderr>"
""")


def stand_in_certbot(site):
    """What `certbot certonly -d mail.example.com` leaves: archive/ with
    numbered files, live/ with relative links to them, both directories
    0700 and the key 0600, all root's. The certificate is from the tests'
    CA (smtp-check is told to trust it)."""
    issued = site.ca.issue([HOSTNAME])
    archive = site.letsencrypt / "archive" / HOSTNAME
    live = site.letsencrypt / "live" / HOSTNAME
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (site.letsencrypt / "renewal-hooks" / "deploy").mkdir(parents=True)
    for d in (site.letsencrypt / "archive", site.letsencrypt / "live"):
        os.chmod(d, 0o700)
    files = {
        "cert": (issued / "cert.pem").read_bytes(),
        "chain": site.ca.cert_path.read_bytes(),
        "fullchain": (issued / "fullchain.pem").read_bytes(),
        "privkey": (issued / "privkey.pem").read_bytes(),
    }
    for name, data in files.items():
        path = archive / f"{name}1.pem"
        path.write_bytes(data)
        os.chmod(path, 0o600 if name == "privkey" else 0o644)
        (live / f"{name}.pem").symlink_to(f"../../archive/{HOSTNAME}/{name}1.pem")


def stand_in_start(site):
    """systemctl enable --now: the unit's ExecStart as the unit's user."""
    site.start_daemon()


STAND_INS = {
    "install": stand_in_install,
    "certbot": stand_in_certbot,
    "start": stand_in_start,
}


# ---------------------------------------------------------------- checks after blocks


def check_conf(site, out):
    assert 'hostname: "mail.example.com"' in out, out
    assert f'mail_delivery_agent_bin: "{site.prefix_bin}/maildir-deliver"' in out, out


def check_users(site, out):
    # The setgid directories gave the new files the daemon's group.
    for domain in ("example.com", "example.org"):
        users = site.conf / "domains" / domain / "users"
        st = users.stat()
        assert st.st_gid == site.gid and st.st_mode & 0o040, (users, oct(st.st_mode), st.st_gid)


def check_dkim_keygen(site, out):
    for domain in ("example.com", "example.org"):
        keys = list((site.conf / "domains" / domain).glob("dkim:*.pem"))
        assert len(keys) == 1, keys
        assert keys[0].stat().st_gid == site.gid, keys[0]
        record = [r for r in dkim_records(out) if r[0].endswith("._domainkey." + domain)]
        assert len(record) == 1, out
        site.dkim[domain] = record[0]


def dkim_records(out):
    """The `<name>\tTXT\t"<value>"` lines chasquid-util prints."""
    return [r for line in out.splitlines() if "\tTXT\t" in line for r in parse_zone(line)]


def check_start(site, out):
    for line in site.log().splitlines():
        assert not re.search(r"\b(Warning|Error)\b", line), line


def check_reload(site, out):
    site.log_file.flush()
    S.wait_for(lambda: site.log().count("Received SIGHUP, reloading") >= 1, what="the reload")
    # certbot's deploy hook, as a renewal runs it: the same reload.
    hook = site.letsencrypt / "renewal-hooks" / "deploy" / "chasquid"
    p = subprocess.run([str(hook)], env=site.env(), capture_output=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    S.wait_for(lambda: site.log().count("Received SIGHUP, reloading") >= 2, what="the hook's reload")
    assert site.proc.poll() is None
    S.wait_for(lambda: "Certificate " in site.log().rsplit("Received SIGHUP, reloading", 1)[1],
               what="the certificates reloaded")


def check_zone(site, block):
    """The records the howto publishes are the fixes smtp-check prints for
    their absence (DKIM: the records dkim-keygen printed); once they are
    served, the howto's smtp-check passes."""
    site.zone = parse_zone(block.text)
    text = HOWTO.read_text()
    site.ptr = [r for line in re.findall(r"`(\S+\.in-addr\.arpa\. IN PTR \S+)`", text)
                for r in parse_zone(line)]
    assert len(site.ptr) == 1, site.ptr
    minimal = [r for r in site.zone if r[1] in ("MX", "A", "AAAA")]
    serve_zone(site.dns, minimal)
    published = set(site.zone) | set(site.ptr) | set(site.dkim.values())
    for domain in ("example.com", "example.org"):
        p = subprocess.run([str(site.bin / "smtp-check"), domain], env=site.env(), capture_output=True,
                           timeout=120, **deployed.popen_user())
        out = p.stderr.decode()
        assert p.returncode == 1 and "=== FAILED" in out, out
        fixes = set()
        for line in out.splitlines():
            line = GO_LOG_PREFIX.sub("", line).strip()
            if line.startswith("fix: "):
                fix = line[len("fix: "):].replace(LOOPBACK_REVERSE, PUBLIC_V4_REVERSE)
                fixes.update(parse_zone(fix))
                if "v=DKIM1" in fix:
                    # As the howto says: split for a zone file.
                    assert '" "' in fix, fix
        expected = {r for r in published if r[1] in ("TXT", "PTR")
                    and (r[0] == domain or r[0].endswith("." + domain) or r[1] == "PTR")}
        assert fixes == expected, (fixes ^ expected, out)
    serve_zone(site.dns, site.zone + site.ptr + list(site.dkim.values()))


def check_dkim_dns(site, out):
    assert set(dkim_records(out)) == set(site.dkim.values()), out


def check_send_out(site, out):
    """Both messages reach bob signed by example.com, and the signature
    verifies against the record the howto published."""
    import dkim
    expected = 3   # info@ from section 7, then these two
    msgs = S.wait_for(lambda: len(site.messages("example.org", "bob")) >= expected
                      and site.messages("example.org", "bob"), timeout=30, what="bob's mail")
    signed = [m for m in msgs if b"DKIM-Signature:" in m]
    assert len(signed) == 2, msgs
    for msg in signed:
        msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        header = msg.split(b"\r\n\r\n", 1)[0]
        assert re.search(rb"DKIM-Signature: v=1; a=rsa-sha256;.*\s+d=example\.com;", header), header
        assert dkim.verify(msg, dnsfunc=dns_txt(site.dns)), header


def dns_txt(server):
    """dkimpy's dnsfunc, asking the tests' DNS server (what the howto had
    published there)."""
    def lookup(name, timeout=5):
        query = dns.message.make_query(name.decode().rstrip("."), "TXT")
        # TCP: a 3072-bit key does not fit a plain UDP answer.
        answer = dns.query.tcp(query, server.addr, port=server.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return b""
    return lookup


def check_smtp_check(site, out):
    assert out.count("=== Success") == 2, out
    assert "=== Warnings" not in out and "=== FAILED" not in out, out
    assert "the published key matches" in out, out
    assert "TLS OK" in out, out


CHECKS = {
    "conf": check_conf,
    "users": check_users,
    "dkim-keygen": check_dkim_keygen,
    "start": check_start,
    "reload": check_reload,
    "dkim-dns": check_dkim_dns,
    "send-out": check_send_out,
    "smtp-check": check_smtp_check,
}


# ---------------------------------------------------------------- the howto


@pytest.fixture
def site():
    if not deployed.as_root():
        pytest.skip("the howto's commands run as root (chgrp, runuser)")
    s = Site()
    try:
        yield s
    finally:
        s.cleanup()


def test_howto_blocks_are_all_accounted_for():
    blocks = doc_blocks(HOWTO)
    for b in blocks:
        assert b.name, f"howto.md line {b.line}: a fenced block without a <!-- test: ... --> marker"
        assert b.lang == "sh" or b.name == "zone", f"{b.where()}: only sh blocks and the zone"
        assert b.flags <= {"not run", "retry"}, b.where()
    names = [b.name for b in blocks]
    assert len(names) == len(set(names)), names
    not_run = {b.name for b in blocks if "not run" in b.flags}
    assert not_run == set(STAND_INS), (not_run, set(STAND_INS))
    assert set(CHECKS) <= set(names), set(CHECKS) - set(names)
    # Each block that the test does not run says so where a reader sees it.
    text = HOWTO.read_text()
    for b in blocks:
        if "not run" in b.flags:
            after = text.split(f"<!-- test: {b.name}, not run -->", 1)[1]
            following = after.split("```", 2)[2][:400]
            assert "*Not run by the test:*" in following, b.where()


def test_howto(site):
    for block in doc_blocks(HOWTO):
        if "not run" in block.flags:
            STAND_INS[block.name](site)
            out = site.log() if block.name == "start" else ""
        elif block.name == "zone":
            check_zone(site, block)
            continue
        else:
            deadline = time.monotonic() + (20 if "retry" in block.flags else 0)
            while True:
                status, out, script = site.sh(block)
                if status == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert status == 0, f"{block.where()} exited {status}:\n{script}\n---\n{out}\n---\n{site.log()}"
        if block.output is not None:
            expect_lines(site.localize(block.output.text), out, block.where())
        if block.name in CHECKS:
            CHECKS[block.name](site, out)
    assert site.proc is not None and site.proc.poll() is None, site.log()
    # Every translation was needed: a howto that stops naming /var/mail, say,
    # must not leave a rule here that checks nothing.
    assert site.used_rules == {old for old, _ in site.rules()}, \
        {old for old, _ in site.rules()} - site.used_rules


# ---------------------------------------------------------------- docs/hooks.md


def send(port, rcpt, body, subject="hello", sender="someone@example.net", login=None):
    """One message over SMTP (login: (user, password) over STARTTLS).
    Returns the exception smtplib raised, or None."""
    msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.ehlo("client.example.net")
            if login:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                c.starttls(context=ctx)
                c.ehlo("client.example.net")
                c.login(*login)
            c.sendmail(sender, [rcpt], msg)
    except smtplib.SMTPException as e:
        return e
    return None


def headers_of(message):
    return message.split(b"\n\n", 1)[0].decode("utf-8", "replace")


@pytest.fixture
def daemon():
    servers = []

    def make(**kwargs):
        s = ChasquidServer(**kwargs)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.cleanup()


def test_post_data_hook_example(daemon):
    hook = named_block(HOOKS, "hook-post-data").text
    srv = daemon(post_data_hook=hook)
    srv.start()

    # Accepted: the hook's line is on top, from its environment.
    assert send(srv.smtp_port, S.USER, "just saying hi") is None
    msg = srv.wait_for_messages(1)[0]
    assert re.search(r"^X-Client: 127\.0\.0\.1:\d+ tls=0 auth=none$", headers_of(msg), re.M), msg
    # Over TLS, logged in.
    assert send(srv.submission_port, S.USER, "hi again", sender=S.USER,
                login=(S.USER, S.PASSWORD)) is None
    msg = srv.wait_for_messages(2)[-1]
    assert re.search(rf"^X-Client: 127\.0\.0\.1:\d+ tls=1 auth={re.escape(S.USER)}$",
                     headers_of(msg), re.M), msg

    # Refused for good, with the hook's last line.
    err = send(srv.smtp_port, S.USER, "You are a LOTTERY WINNER!\r\nClaim it now.")
    assert isinstance(err, smtplib.SMTPDataError), err
    assert (err.smtp_code, err.smtp_error) == (554, b"No lotteries here, thank you"), err
    time.sleep(0.5)
    assert len(srv.messages()) == 2


def test_post_data_hook_contract(daemon):
    """What docs/hooks.md promises beyond its example: output that is not
    headers is dropped and logged as shown there; other exit codes are
    temporary; a hook that cannot run refuses temporarily."""
    srv = daemon(post_data_hook="#!/bin/sh\ncat > /dev/null\necho 'spam score 3.2'\n")
    srv.start()
    assert send(srv.smtp_port, S.USER, "body one") is None
    msg = srv.wait_for_messages(1)[0]
    assert b"spam score" not in msg, msg
    logged = named_block(HOOKS, "hook-badoutput-log").text.strip()
    srv.wait_for(lambda: logged in srv.stderr(), what=f"the log line {logged!r}")

    srv.set_hook("#!/bin/sh\ncat > /dev/null\necho 'busy'\necho 'try again later'\nexit 75\n")
    srv.deploy()
    err = send(srv.smtp_port, S.USER, "body two")
    assert (err.smtp_code, err.smtp_error) == (451, b"try again later"), err

    path = srv.set_hook("#!/bin/sh\ncat > /dev/null\n")
    path.chmod(0o644)
    srv.deploy()
    err = send(srv.smtp_port, S.USER, "body three")
    assert err.smtp_code == 451, err
    assert err.smtp_error.startswith(b"Error running post-data hook"), err
    assert len(srv.messages()) == 1


def test_alias_resolve_hook_example(daemon):
    hook = named_block(HOOKS, "hook-alias-resolve").text
    srv = daemon()
    path = srv.config_dir / "hooks" / "alias-resolve"
    path.parent.mkdir(exist_ok=True)
    path.write_text(hook)
    path.chmod(0o755)
    on_call = srv.config_dir / "on-call"
    on_call.write_text(f"{S.USER}\n")
    srv.start()

    def resolve(address):
        p = srv.util("aliases-resolve", address)
        return p.returncode, p.stdout.decode() + p.stderr.decode()

    assert resolve("support@example.com") == (0, f"(email)  {S.USER}\n")
    assert send(srv.smtp_port, "support@example.com", "help!") is None
    msg = srv.wait_for_messages(1)[0]
    assert b"help!" in msg
    # Other addresses: no output, the aliases file decides.
    assert resolve("info@example.com") == (0, f"(email)  {S.USER}\n")

    # Changed without a reload.
    on_call.write_text(f"{S.RECEIVE_ONLY}\n")
    srv.deploy()
    assert resolve("support@example.com") == (0, f"(email)  {S.RECEIVE_ONLY}\n")

    # A target without a domain is refused: the lookup fails.
    on_call.write_text("juana@\n")
    srv.deploy()
    status, out = resolve("support@example.com")
    assert status == 1 and "has no domain after the @" in out, out

    # No file: cat fails, so does the lookup. At RCPT that is "no alias"
    # (unknown user); at DATA, a temporary refusal.
    on_call.unlink()
    status, out = resolve("support@example.com")
    assert (status, out.strip()) == (1, "Error resolving: exit status 1"), out
    err = send(srv.smtp_port, "support@example.com", "anyone?")
    assert isinstance(err, smtplib.SMTPRecipientsRefused), err
    assert err.recipients["support@example.com"][0] == 550, err
    path.write_text(hook.replace("support@example.com)", f"{S.USER})"))
    srv.deploy()
    err = send(srv.smtp_port, S.USER, "still there?")
    assert isinstance(err, smtplib.SMTPDataError) and err.smtp_code == 451, err
    assert err.smtp_error.startswith(b"4.3.0 Failed to queue message: "), err
    assert len(srv.messages()) == 1


# ---------------------------------------------------------------- docs/configuration.md

CONFIGURATION = S.REPO_ROOT / "docs" / "configuration.md"


def test_configuration_listening_address_error(daemon):
    """The error shown in docs/configuration.md, word for word, from
    print-config (exit 1) and from the daemon, which does not start."""
    shown = named_block(CONFIGURATION, "config-error").text.strip()
    address = re.search(r'invalid listening address "([^"]*)"', shown).group(1)
    srv = daemon()
    text = srv.conf_text().splitlines()
    smtp = next(i for i, l in enumerate(text) if l.startswith("smtp_address:"))
    del text[smtp]
    wanted = int(re.search(r" line (\d+):", shown).group(1))
    text.insert(wanted - 1, f'smtp_address: "{address}"')
    conf = srv.config_dir / "chasquid.conf"
    conf.write_text("\n".join(text) + "\n")
    expected = shown.replace("/etc/chasquid", str(srv.config_dir))
    p = srv.util("print-config")
    assert p.returncode == 1, p
    assert p.stderr.decode().strip() == expected, p.stderr.decode()
    with pytest.raises(RuntimeError) as e:
        srv.start()
    # The daemon says the same.
    assert expected in str(e.value), e.value


def test_configuration_missing_mda_warns_and_keeps_mail(daemon):
    shown = named_block(CONFIGURATION, "mda-warning").text.strip()
    missing = re.search(r'mail_delivery_agent_bin "([^"]*)"', shown).group(1)
    srv = daemon()
    missing_here = str(srv.base / missing.lstrip("/"))
    srv.write_conf(mda_bin=missing_here)
    srv.start()
    assert shown.replace(missing, missing_here) in srv.stderr(), srv.stderr()
    assert send(srv.smtp_port, S.USER, "wait for me") is None
    srv.wait_for_log("to=user@example.com failed (temporary): MDA delivery failed")
    assert "bounce" not in srv.mail_log().lower(), srv.mail_log()
    assert srv.queue_files(), "the message waits in the queue"


def test_configuration_relative_paths(daemon):
    """data_dir and mail_log_path relative to the config directory, for the
    daemon and for chasquid-util run from elsewhere."""
    srv = daemon()
    text = srv.conf_text()
    text = text.replace(f'data_dir: "{srv.data_dir}"', 'data_dir: "data"')
    text = text.replace(f'mail_log_path: "{srv.mail_log_path}"', 'mail_log_path: "mail.log"')
    (srv.config_dir / "chasquid.conf").write_text(text)
    data = srv.config_dir / "data"
    data.mkdir()
    log = srv.config_dir / "mail.log"
    log.touch()
    deploy = srv.deploy

    def deploy_keeping_state():
        deploy()
        # The daemon's state inside the config dir stays the daemon's.
        deployed.own_state(data)
        deployed.own_state(log)
    srv.deploy = deploy_keeping_state
    srv.start()
    assert (data / "localrpc-v1").exists()
    assert send(srv.smtp_port, S.USER, "relative") is None
    srv.wait_for_messages(1)
    S.wait_for(lambda: "from=someone@example.net all done" in log.read_text(), what="the mail log")
    for cwd in ("/", str(srv.base)):
        p = S.run_bin([S.chasquid_util_bin(), f"-C={srv.config_dir}", "aliases-resolve", "info@example.com"],
                      cwd=cwd)
        assert (p.returncode, p.stdout.decode()) == (0, f"(email)  {S.USER}\n"), p
