"""Attacks on a real daemon (issue 13), each of which worked on an earlier
main: the test performs it and checks that it no longer does anything.

The daemons run as deployed (unprivileged, see deployed.py).
"""

import html
import re
import smtplib
import subprocess
import threading
import time
from pathlib import Path
import urllib.parse

import pytest

import deployed
import mta
import server as S
from dnstest import DNSServer
from monitoring import get, request
from server import ChasquidServer
from smtpraw import RawSMTP
from test_monitoring import run_chromium, start_monitored, tool


@pytest.fixture
def srv():
    server = ChasquidServer()
    yield server
    server.cleanup()


# ---------------------------------------------------------------- §1 script injection


# U+0600 is a "Prepend" scalar: it fuses with the next `<` into one grapheme,
# which per-Character escaping let through raw.
# The script would set the title to "PWN", a text the payload itself lacks.
PAYLOAD = "\u0600<img src=x onerror=\"document.title=String.fromCharCode(80,87,78)\">"


def trace_id_with(srv, text):
    listing = get(srv, "/debug/traces?fam=SMTP.Conn&b=0")
    for m in re.finditer(r'<a href="/debug/traces\?trace=(\d+)">', listing):
        if text in html.unescape(get(srv, f"/debug/traces?trace={m.group(1)}")):
            return m.group(1)
    return None


def test_prepend_scalar_markup_runs_no_script_in_the_monitoring_pages(tmp_path):
    """Unauthenticated, on port 25: a NOOP whose argument is markup behind a
    Prepend scalar; and the same markup reflected through ?fam=. Headless
    Chromium renders both pages: no script ran (the title is untouched) and
    no <img> element was made."""
    chromium = tool("chromium", "/usr/bin/chromium")
    srv = start_monitored()
    try:
        c = RawSMTP(srv.smtp_port)
        assert c.reply()[0] == 220
        c.cmd("EHLO client.test")
        c.cmd("NOOP " + PAYLOAD)
        c.cmd("QUIT")
        c.close()
        tid = srv.wait_for(lambda: trace_id_with(srv, "onerror"), what="the session's trace")
        home = tmp_path / "home"
        home.mkdir()
        base = f"http://127.0.0.1:{srv.mon_port}"
        for path in (f"/debug/traces?trace={tid}",
                     "/debug/traces?fam=" + urllib.parse.quote(PAYLOAD, safe="")):
            p = run_chromium(chromium, ["--dump-dom", base + path], home)
            assert p.returncode == 0, p.stderr.decode()[-3000:]
            dom = p.stdout.decode("utf-8", "replace")
            assert "onerror" in dom, f"{path}: the payload is not on the page at all:\n{dom[:3000]}"
            assert "PWN" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1), dom[:3000]
            assert "<img" not in dom, f"{path}: an <img> element was made:\n{dom[:3000]}"
    finally:
        srv.cleanup()


# ---------------------------------------------------------------- §3 inherited descriptors


def test_hooks_inherit_no_listener_or_client_socket(srv):
    """A post-data hook lists its open descriptors: 0, 1, 2, and the one ls
    reads the directory through; no listener, client socket or epoll fd."""
    out = srv.base / "hook-fds.txt"
    srv.set_hook(f"#!/bin/sh\nls -l /proc/self/fd > {out}\ncat > /dev/null\n")
    srv.start()
    c = RawSMTP(srv.smtp_port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
    assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    assert c.cmd("Subject: fds\r\n\r\nbody\r\n.")[0] == 250
    c.close()
    listing = out.read_text()
    fds = {int(m.group(1)): m.group(2) for m in re.finditer(r" (\d+) -> (.*)$", listing, re.M)}
    extra = {fd: target for fd, target in fds.items() if fd > 2 and "/proc/" not in target}
    assert not extra, f"the hook inherited: {extra}\n{listing}"
    assert not [t for t in fds.values() if t.startswith(("socket:", "anon_inode:"))], listing


# ---------------------------------------------------------------- §4 forged log lines


def test_a_newline_in_an_auth_identity_forges_no_log_line(srv):
    """AUTH PLAIN whose identity carries a newline and a whole fake
    'auth succeeded' line: the mail log and the daemon log keep it on the
    failed attempt's own line, escaped."""
    import base64
    forged = "2026-01-01 00:00:00.000000 203.0.113.9:4242 auth succeeded for boss@example.com"
    srv.flags = ["-v=1"]
    srv.start()
    c = RawSMTP(srv.submission_port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    c.starttls(server_hostname=S.HOSTNAME)
    assert c.cmd("EHLO client.test")[0] == 250
    token = base64.b64encode(f"\0user@example.com\n{forged}\0wrong".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {token}")[0] in (501, 535)
    c.cmd("QUIT")
    c.close()
    line = srv.wait_for(lambda: next((l for l in srv.mail_log().splitlines() if "auth failed" in l), None),
                        what="the failed AUTH in the mail log")
    assert line.endswith(f"auth failed for user@example.com\\n{forged}"), line
    for name, text in (("mail log", srv.mail_log()), ("daemon log", srv.stderr())):
        starts = [l for l in text.splitlines() if l.startswith(forged) or l.lstrip().startswith("2026-01-01")]
        assert not starts, f"{name} has a forged line: {starts}"
    assert "auth succeeded for boss@example.com" not in "\n".join(
        l for l in srv.mail_log().splitlines() if "auth failed" not in l)


# ---------------------------------------------------------------- §5, §6 addresses


CATCH_ALL = S.DEFAULT_ALIASES + "*: user\n"


@pytest.mark.parametrize("address", [
    # "\u0D4E@" is one grapheme: per Character the local part held "@evil.test".
    f"a\u0D4E@evil.test@{S.DOMAIN}",
    # Controls in a quoted local part and in an address literal.
    f'"a\rb"@{S.DOMAIN}',
    f'"a\x01b"@{S.DOMAIN}',
    f'"a\x7fb"@{S.DOMAIN}',
    "a@[127.0.0.1\x01]",
    # A quote and a backslash hidden behind a Prepend scalar.
    f'"a\u0600""@{S.DOMAIN}',
    f"a\u0600\\b@{S.DOMAIN}",
], ids=["fused-at", "quoted-cr", "quoted-soh", "quoted-del", "literal-soh", "fused-quote", "fused-backslash"])
def test_an_address_with_a_hidden_delimiter_or_a_control_is_refused(address):
    """Unauthenticated, on port 25, with a catch-all alias that would take
    any local part: each address is refused at MAIL (501 5.1.7) and at RCPT
    (501 5.1.3), nothing is queued, and the mail log shows the address
    escaped on the rejection's own line."""
    srv = ChasquidServer(aliases=CATCH_ALL)
    try:
        srv.start()
        c = RawSMTP(srv.smtp_port)
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{address}>") == (501, "5.1.7 Sender address malformed")
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        assert c.cmd(f"RCPT TO:<{address}>") == (501, "5.1.3 Malformed destination address")
        # The session goes on: a good recipient still works.
        assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
        c.cmd("QUIT")
        c.close()
        log = srv.wait_for(lambda: (l := srv.mail_log()).count("rejected") >= 2 and l,
                           what="both rejections in the mail log")
        assert "queued" not in log, log
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), repr(log)
        assert len(log.splitlines()) == len([l for l in log.splitlines() if l[:4].isdigit()]), log
    finally:
        srv.cleanup()


def test_no_bare_cr_reaches_the_wire(tmp_path):
    """A post-data hook adds a header with `\\r.\\r\\n` in it (hooks may
    reflect what a client sent). Relayed to a remote server, the DATA block
    has CRLF and nothing else as line ends, so a receiver that ends lines at
    CR finds no `.` line inside the message, and the dot after the bare CR
    is stuffed."""
    domain = "far.test"
    with DNSServer({}) as dns:
        srv = ChasquidServer(flags=[dns.chasquid_flag], outgoing_smtp_port=S.free_port(),
                             post_data_hook="#!/bin/sh\ncat > /dev/null\n"
                                            "printf 'X-Hook: a\\r.\\r\\nX-After: b\\n'\n")
        peer = mta.FakeSMTPPeer(mta.next_loopback(), srv.outgoing_smtp_port, name=f"mx.{domain}")
        peer.start()
        try:
            dns.update(domain, {"MX": [[10, f"mx.{domain}"]]})
            dns.update(f"mx.{domain}", {"A": [peer.host]})
            srv.start()
            subject = "bare-cr"
            mta.submit(srv, [f"x@{domain}"], mta.make_message(subject, sender=srv.user, to=f"x@{domain}"))
            wire = peer.wait_for_delivery(subject.encode()).wire
            assert b"\r\nX-After: b\r\n" in wire, wire
            assert b"X-Hook: a\r\n..\r\nX-After" in wire, wire
            assert b"\r" not in wire.replace(b"\r\n", b"") and b"\n" not in wire.replace(b"\r\n", b""), wire
        finally:
            peer.stop()
            srv.cleanup()


# ---------------------------------------------------------------- §7 SNI into headers


def starttls_and_send(srv, server_name, subject):
    c = RawSMTP(srv.smtp_port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    c.starttls(server_hostname=server_name)
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
    assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    assert c.cmd(f"Subject: {subject}\r\n\r\nbody\r\n.")[0] == 250
    c.cmd("QUIT")
    c.close()
    data = srv.wait_for(lambda: next((m for m in srv.messages() if subject.encode() in m), None),
                        what=f"message {subject}")
    return data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")


def test_an_sni_name_forges_no_header(srv):
    """SNI is the client's text: with a line break and a header in it, the
    message gets no such header and is received `by` our hostname; a name
    we hold a certificate for (other.example.org) is used as before."""
    srv.start()
    head = starttls_and_send(srv, f"{S.HOSTNAME}\r\nX-Forged: yes", "sni-forged")
    assert "X-Forged" not in head, head
    assert f"by {S.HOSTNAME} (chasquid)" in head, head
    head = starttls_and_send(srv, "unknown.example.net", "sni-unknown")
    assert "unknown.example.net" not in head, head
    head = starttls_and_send(srv, S.OTHER_NAME, "sni-other")
    assert f"by {S.OTHER_NAME} (chasquid)" in head, head


# ---------------------------------------------------------------- §8 cross-site /exit, DNS rebinding


def raw_http(srv, method, path, headers):
    status, _, body = request(srv, path, method=method, headers=headers)
    return status, body


def test_a_cross_site_exit_or_a_rebound_name_is_refused():
    """What a browser sends for another site's `fetch(…/exit, {method:
    "POST", mode: "no-cors"})`, and for a page on a name rebound to
    127.0.0.1: both 403, and the daemon keeps running. A tool (no browser
    headers) is served under any name, and the admin's own POST (no Origin,
    as curl) still stops it."""
    srv = start_monitored()
    try:
        here = f"127.0.0.1:{srv.mon_port}"
        for headers in ([("Host", here), ("Origin", "https://evil.example"), ("Sec-Fetch-Site", "cross-site")],
                        [("Host", here), ("Origin", "null")],
                        # A page on a name rebound to 127.0.0.1, as the browser sends it.
                        [("Host", f"rebind.evil.example:{srv.mon_port}"), ("Sec-Fetch-Site", "same-origin")]):
            status, _ = raw_http(srv, "POST", "/exit", headers)
            assert status == 403, headers
        status, body = raw_http(srv, "GET", "/debug/config", [("Host", f"rebind.evil.example:{srv.mon_port}"),
                                                              ("Sec-Fetch-Site", "same-origin"),
                                                              ("Sec-Fetch-Mode", "navigate")])
        assert status == 403 and "hostname" not in body, body
        time.sleep(0.5)
        assert srv.proc.poll() is None, "a refused /exit stopped the daemon"
        assert raw_http(srv, "GET", "/debug/config", [("Host", here)])[0] == 200
        # A tool may reach it by any name (a proxy, a second DNS name).
        assert raw_http(srv, "GET", "/metrics", [("Host", f"mon.internal:{srv.mon_port}")])[0] == 200
        status, _ = raw_http(srv, "POST", "/exit", [("Host", here)])
        assert status == 200
        srv.proc.wait(timeout=30)
    finally:
        srv.cleanup()


# ---------------------------------------------------------------- §12 threads for blocking work


# Hooks waited for at once (BlockingWork.sessionProcessThreads).
PROCESS_THREADS = 32


def thread_count(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def test_the_thread_count_stays_bounded_while_many_hooks_wait(srv):
    """80 sessions at once, each waiting for a post-data hook that sleeps:
    the daemon's threads grow by at most its process pool, where one thread
    per waiting hook used to be made; and every message is accepted."""
    sessions = 80
    srv.set_hook("#!/bin/sh\ncat > /dev/null\nsleep 1\n")
    srv.start()
    pid = srv.proc.pid
    # One message first, so the pools that exist at all have been made.
    mta.send_smtp(srv, "sender@sender.invalid", [S.USER], b"Subject: warm-up\n\nbody\n")
    before = thread_count(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], thread_count(pid))
            time.sleep(0.02)

    failures = []

    def send(i):
        try:
            with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=120) as c:
                c.sendmail("sender@sender.invalid", [S.USER], f"Subject: load-{i}\r\n\r\nbody\r\n")
        except Exception as e:  # noqa: BLE001 - any failure fails the test below
            failures.append(f"{i}: {e!r}")

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=send, args=(i,)) for i in range(sessions)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    done.set()
    sampler.join()
    assert not failures, failures
    assert peak[0] <= before + PROCESS_THREADS, (before, peak[0])
    srv.wait_for(lambda: len([m for m in srv.messages() if b"Subject: load-" in m]) == sessions,
                 timeout=60, what=f"{sessions} messages delivered")
