"""The PROXY protocol (`haproxy_incoming`, COMPAT.md §15 and §22.3) behind a
real HAProxy on loopback, with both `send-proxy` (v1) and `send-proxy-v2`.

    client (127.0.0.2 or ::1) -> HAProxy (127.0.0.1 / [::1]) -> our daemon

Clients connect from 127.0.0.2, HAProxy from 127.0.0.1: every place that
names the client (SPF, the mail log, fail2ban lines, the hook's
REMOTE_ADDR, Received:) must show 127.0.0.2.

Skipped without haproxy, except in CI, where that fails.
"""

import json
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import deployed
import processes
import server as S
from dnstest import DNSServer
from server import ChasquidServer
from smtpraw import no_verify_context

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(
    not Path(HAPROXY).exists() and not os.environ.get("CI"), reason="haproxy is not installed")

CLIENT = "127.0.0.2"
ZONE = {
    # Passes only for the real client: HAProxy's 127.0.0.1 fails it.
    "proxied.test": {"TXT": [f"v=spf1 ip4:{CLIENT} -all"]},
}

HOOK = """#!{python}
import json, os, re, sys
data = sys.stdin.buffer.read()
m = re.search(rb"^Subject: (\\S+)", data, re.M)
with open(os.path.join({envdir!r}, m.group(1).decode() + ".json"), "w") as f:
    json.dump(dict(os.environ), f)
"""


class HAProxy:
    """HAProxy with one frontend per (name, bind, backend port, send-proxy
    option); runs in the foreground (-db) from a private config."""

    def __init__(self, routes):
        self.base = Path(tempfile.mkdtemp(prefix="hap"))
        self.ports = {name: S.free_port() for name, *_ in routes}
        sections = ["defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"]
        for name, bind_host, backend_port, option in routes:
            bind = f"[{bind_host}]" if ":" in bind_host else bind_host
            sections.append(
                f"frontend f_{name}\n  bind {bind}:{self.ports[name]}\n  default_backend b_{name}\n"
                f"backend b_{name}\n  server s 127.0.0.1:{backend_port} {option}\n")
        (self.base / "haproxy.cfg").write_text("\n".join(sections))
        self.log = open(self.base / "haproxy.log", "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.base / "haproxy.cfg")],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        for name, bind_host, *_ in routes:
            while True:
                try:
                    with socket.create_connection((bind_host, self.ports[name]), timeout=2):
                        break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((self.base / "haproxy.log").read_text())
                    time.sleep(0.05)

    def stop(self):
        processes.stop(self.proc)
        self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def ns():
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture(scope="module")
def srv(ns):
    s = ChasquidServer(flags=[ns.chasquid_flag], extra_conf="haproxy_incoming: true\n")
    envdir = s.base / "hook-env"
    envdir.mkdir()
    s.set_hook(HOOK.format(python=deployed.hook_python(), envdir=str(envdir)))
    s.hook_env_dir = envdir
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def hap(srv):
    h = HAProxy([
        ("smtp_v1", "127.0.0.1", srv.smtp_port, "send-proxy"),
        ("smtp_v2", "127.0.0.1", srv.smtp_port, "send-proxy-v2"),
        ("smtp_v2_ipv6", "::1", srv.smtp_port, "send-proxy-v2"),
        ("sub_v1", "127.0.0.1", srv.submission_port, "send-proxy"),
        ("tls_v2", "127.0.0.1", srv.tls_port, "send-proxy-v2"),
        ("tls_v1", "127.0.0.1", srv.tls_port, "send-proxy"),
    ])
    yield h
    h.stop()


def marker():
    return f"hap-{uuid.uuid4().hex[:10]}"


def client(hap, route, source=CLIENT):
    host = "::1" if route.endswith("ipv6") else "127.0.0.1"
    return smtplib.SMTP(host, hap.ports[route], timeout=30, source_address=(source, 0))


def hook_env(srv, subject):
    path = srv.hook_env_dir / f"{subject}.json"
    srv.wait_for(path.exists, 30, f"hook for {subject}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("route", ["smtp_v1", "smtp_v2"])
def test_the_real_client_is_used_everywhere(srv, hap, route):
    subject = marker()
    with client(hap, route) as c:
        port = c.sock.getsockname()[1]
        c.ehlo("client.test")
        # SPF passes for 127.0.0.2 only: a 250 means SPF saw the real client.
        c.sendmail("someone@proxied.test", [S.USER], f"Subject: {subject}\r\n\r\nhello\r\n")
    remote = f"{CLIENT}:{port}"
    assert hook_env(srv, subject)["REMOTE_ADDR"] == remote
    srv.wait_for_log(f"queued ip={remote} ")
    srv.wait_for(lambda: [m for m in srv.messages() if subject.encode() in m], 30, "delivery")
    message = [m for m in srv.messages() if subject.encode() in m][0].decode()
    assert f"from client.test ([{CLIENT}])" in message
    assert "Received-SPF: pass" in message


def test_ipv6_clients_through_v2(srv, hap):
    subject = marker()
    with client(hap, "smtp_v2_ipv6", source="::1") as c:
        port = c.sock.getsockname()[1]
        c.sendmail("someone@sender.invalid", [S.USER], f"Subject: {subject}\r\n\r\nhello\r\n")
    srv.wait_for_log(f"queued ip=[::1]:{port} ")
    assert hook_env(srv, subject)["REMOTE_ADDR"] == f"[::1]:{port}"


def test_fail2ban_lines_name_the_real_client(srv, hap):
    with client(hap, "smtp_v1") as c:
        port = c.sock.getsockname()[1]
        code, _ = c.docmd("BOGUS")
        assert code == 500
    srv.wait_for(lambda: f"SMTP.Conn {CLIENT}:{port}: error: " in srv.stderr(), 15, "the fail2ban line")


def test_starttls_and_auth_after_the_header(srv, hap):
    subject = marker()
    with client(hap, "sub_v1") as c:
        port = c.sock.getsockname()[1]
        c.ehlo("client.test")
        c.starttls(context=no_verify_context())
        c.ehlo("client.test")
        c.login(S.USER, S.PASSWORD)
        c.sendmail(S.USER, [S.USER], f"Subject: {subject}\r\n\r\nhello\r\n")
    srv.wait_for_log(f"{CLIENT}:{port} auth succeeded for {S.USER}")
    assert hook_env(srv, subject)["REMOTE_ADDR"] == f"{CLIENT}:{port}"


@pytest.mark.parametrize("route", ["tls_v1", "tls_v2"])
def test_implicit_tls_reads_the_header_before_the_handshake(srv, hap, route):
    """chasquid 1.18 does the TLS handshake first and then waits for a
    header that HAProxy has already sent in the clear (§22.3); we read it
    first, so port 465 works behind HAProxy."""
    with smtplib.SMTP_SSL("127.0.0.1", hap.ports[route], timeout=30, source_address=(CLIENT, 0),
                          context=no_verify_context()) as c:
        port = c.sock.getsockname()[1]
        c.ehlo("client.test")
        c.login(S.USER, S.PASSWORD)
    srv.wait_for_log(f"{CLIENT}:{port} auth succeeded for {S.USER}")


def test_a_connection_without_a_header_is_refused_before_the_greeting(srv):
    with socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=10) as s:
        port = s.getsockname()[1]
        s.sendall(b"EHLO direct.test\r\n")
        assert s.recv(1024) == b""  # closed, no greeting
    srv.wait_for(lambda: f"SMTP.Conn 127.0.0.1:{port}: haproxy handshake failed: not a PROXY protocol header"
                 in srv.stderr(), 15, "the refusal log line")
    # Not in the fail2ban form: the proxy's address must never be banned.
    assert f"SMTP.Conn 127.0.0.1:{port}: error: EHLO failed" not in srv.stderr()


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 25\r\n"])
def test_an_invalid_header_is_refused(srv, header):
    with socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=10) as s:
        s.sendall(header + b"EHLO x\r\n")
        assert s.recv(1024) == b""


def test_a_header_when_off_is_refused_with_a_log_line():
    s = ChasquidServer()
    try:
        s.start()
        with socket.create_connection(("127.0.0.1", s.smtp_port), timeout=10) as c:
            port = c.getsockname()[1]
            f = c.makefile("rb")
            assert f.readline().startswith(b"220 ")
            c.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1234 25\r\n")
            assert f.readline() == b"500 5.5.1 Unknown command\r\n"
        s.wait_for(lambda: f"SMTP.Conn 127.0.0.1:{port}: PROXY header received, but haproxy_incoming is off"
                   in s.stderr(), 15, "the hint")
    finally:
        s.cleanup()
