"""End-to-end checks of the chasquid counters (COMPAT.md §19) that
test_monitoring.py does not cover, each against a real daemon and real
peers: hook results, SPF and security-level checks, TLS in and out, loops,
the queue's counters and our two gauges.

Every test starts its own daemon (monitoring on a free loopback port),
scrapes `/debug/vars` before and after one scenario, and asserts the exact
difference. A counter that has never moved is absent from the JSON (a map
without keys, or 0), so a missing key reads as zero here.

Peers: the test DNS server (tests/dnsserver, the `dns_server` fixture) for
SPF, MX and A records; mta.FakeSMTPPeer on 127.0.0.N at the daemon's
outgoing port as the remote MX; mta.test_ca() for certificates the daemon
trusts (through SSL_CERT_FILE).
"""

import smtplib
import socket
import ssl
import sys
import uuid

import pytest

import mta
import deployed
import server as S
from monitoring import debug_vars, wait_idle
from mta import FakeSMTPPeer, make_message
from server import ChasquidServer
from smtpraw import RawSMTP, no_verify_context

SPF_PASS = "v=spf1 ip4:127.0.0.1 -all"


def uid():
    return uuid.uuid4().hex[:10]


# ---------------------------------------------------------------- daemon and scraping


def start(**kwargs):
    """A started ChasquidServer with monitoring on .mon_port; cleaned up by
    the caller (use the `daemons` fixture)."""
    srv = ChasquidServer(monitoring=True, **kwargs)
    try:
        srv.start()
        # start() probes the SMTP ports: let those connections end first.
        wait_idle(srv)
    except BaseException:
        srv.cleanup()
        raise
    return srv


@pytest.fixture
def daemons():
    """daemons(**kwargs) starts a monitored daemon, cleaned up after the test."""
    started = []

    def make(**kwargs):
        srv = start(**kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.cleanup()


scrape = debug_vars


# The labelled counters (COMPAT.md §19 and ours): expvar maps, absent from
# /debug/vars until their first count.
MAPS = {
    "smtpIn/commandCount", "smtpIn/responseCodeCount", "smtpIn/spfResultCount", "smtpIn/tlsCount",
    "smtpIn/securityLevelChecks", "smtpIn/hookResults", "smtpIn/wrongProtoCount",
    "smtpIn/tlsHandshakeFailures", "aliases/hookResults", "queue/deliverAttempts",
    "smtpOut/tlsCount", "smtpOut/securityLevelChecks",
}


def delta(before, after, name):
    """How `chasquid/<name>` moved: {label: n} (non-zero entries only) for
    a map, an int otherwise."""
    key = f"chasquid/{name}"
    a, b = after.get(key), before.get(key)
    if name in MAPS:
        a, b = a or {}, b or {}
        return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b) if a.get(k, 0) != b.get(k, 0)}
    return (a or 0) - (b or 0)


class Meter:
    """A baseline scrape; .delta(name) compares a fresh scrape with it."""

    def __init__(self, srv):
        self.srv = srv
        self.before = scrape(srv)

    def delta(self, name, now=None):
        return delta(self.before, now or scrape(self.srv), name)

    def deltas(self, *names):
        now = scrape(self.srv)
        return {n: delta(self.before, now, n) for n in names}


def gauge(srv, name):
    return scrape(srv).get(f"chasquid/{name}", 0)


def wait_counter(srv, meter, name, want, timeout=30):
    """Waits until the counter moved by `want` (for asynchronous work, e.g. a
    handshake failure noticed after the client left); returns the delta."""
    got = []

    def check():
        got[:] = [meter.delta(name)]
        return got[0] == want
    try:
        srv.wait_for(check, timeout, f"{name} to move by {want}")
    except AssertionError:
        raise AssertionError(f"{name}: want delta {want}, have {got[0] if got else None}") from None
    return got[0]


def session(port, helo="client.test"):
    c = RawSMTP(port, timeout=30)
    assert c.reply()[0] == 220
    assert c.cmd(f"EHLO {helo}")[0] == 250
    return c


def send_data(c, subject, extra_headers="", body="body\r\n"):
    """DATA with a small message; returns the final (code, text)."""
    code, text = c.cmd("DATA")
    assert code == 354, (code, text)
    return c.cmd(f"From: sender@sender.invalid\r\nTo: {S.USER}\r\nSubject: {subject}\r\n"
                 f"Message-ID: <{uid()}@client.test>\r\n{extra_headers}\r\n{body}.")


def plain_message(srv, subject, sender="sender@sender.invalid", rcpt=S.USER, starttls=False,
                  extra_headers=""):
    """One message over port 25; returns the final reply. Closes the
    connection and waits until the daemon has closed it too."""
    c = session(srv.smtp_port)
    try:
        if starttls:
            c.starttls()
            assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        reply = send_data(c, subject, extra_headers)
        c.cmd("QUIT")
    finally:
        c.close()
    wait_idle(srv)
    return reply


# ---------------------------------------------------------------- smtpIn/hookResults


POST_DATA_HOOK = """#!{python}
import sys
data = sys.stdin.buffer.read()
if b"Subject: hook-badoutput" in data:
    sys.stdout.write("this is not a header\\n")
elif b"Subject: hook-fail" in data:
    sys.stdout.write("go away\\n")
    sys.exit(1)
else:
    sys.stdout.write("X-Hooked: yes\\n")
"""


def test_post_data_hook_skip(daemons):
    """No hook file: chasquid counts post-data:skip for every message."""
    srv = daemons()
    for n in (1, 2):
        m = Meter(srv)
        assert plain_message(srv, f"no-hook-{uid()}")[0] == 250
        assert m.delta("smtpIn/hookResults") == {"post-data:skip": 1}, n


def test_post_data_hook_results(daemons):
    """success, badoutput and fail by what the hook prints and how it
    exits; one count per message."""
    srv = daemons(post_data_hook=POST_DATA_HOOK.format(python=deployed.hook_python()))
    for subject, code, result in [("hook-success", 250, "success"),
                                  ("hook-badoutput", 250, "badoutput"),
                                  ("hook-fail", 451, "fail")]:
        m = Meter(srv)
        got = plain_message(srv, f"{subject}-{uid()}")
        assert got[0] == code, (subject, got)
        d = m.deltas("smtpIn/hookResults", "queue/putCount")
        assert d["smtpIn/hookResults"] == {f"post-data:{result}": 1}, (subject, d)
        # A refused message never reaches the queue.
        assert d["queue/putCount"] == (0 if result == "fail" else 1), (subject, d)
    assert len(srv.wait_for_messages(2)) == 2


# ---------------------------------------------------------------- aliases/hookResults


ALIAS_HOOK = """#!{python}
import sys
from pathlib import Path
base = Path({base!r})
with open(base / "calls.log", "a") as f:
    f.write(sys.argv[1] + "\\n")
mode = (base / "mode").read_text().strip()
if mode == "fail":
    sys.exit(1)
elif mode == "parse_err":
    print("|")          # a pipe without a command does not parse
elif sys.argv[1].startswith("hooked@"):
    print("user")       # hooked@example.com -> user@example.com
# Otherwise nothing: a successful run that adds no alias.
"""

RESOLVE_KEYS = ("resolve:skip", "resolve:success", "resolve:fail", "resolve:parse_err")


class AliasHook:
    def __init__(self, srv):
        self.base = srv.base / "alias-hook"
        self.base.mkdir()
        self.calls_path = self.base / "calls.log"
        self.calls_path.write_text("")
        self.path = srv.config_dir / "hooks" / "alias-resolve"

    def install(self, mode):
        (self.base / "mode").write_text(mode)
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_text(ALIAS_HOOK.format(python=deployed.hook_python(), base=str(self.base)))
        self.path.chmod(0o755)
        # The hook runs as the daemon user and appends to calls.log.
        deployed.own_state(self.base)

    def calls(self):
        return self.calls_path.read_text().splitlines()


def resolve_phases(srv, rcpt, subject, expect_data):
    """MAIL, RCPT to `rcpt`, DATA, scraping aliases/hookResults around RCPT
    (the existence check) and around DATA (the queue put resolves again).
    Returns (rcpt delta, data delta, final reply)."""
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        m = Meter(srv)
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        at_rcpt = scrape(srv)
        reply = send_data(c, subject)
        assert reply[0] == expect_data, reply
        at_data = scrape(srv)
        c.cmd("QUIT")
    finally:
        c.close()
    wait_idle(srv)
    return (delta(m.before, at_rcpt, "aliases/hookResults"),
            delta(at_rcpt, at_data, "aliases/hookResults"), reply)


def test_alias_resolve_hook_results(daemons):
    """Resolution runs twice per recipient: the RCPT existence check and the
    queue put. Each lookup asks the hook once, so with a hook installed every
    counted result matches one logged hook run; without one, the same
    lookups count resolve:skip."""
    srv = daemons()
    hook = AliasHook(srv)

    # No hook: skip, at RCPT and at the put. user@ is no alias, so RCPT
    # looks up the exact, the cleaned and the catch-all address before the
    # users database (3); the put looks up the exact and the cleaned one,
    # then finds the user (2). chasquid 1.18 makes the same lookups.
    skip_rcpt, skip_data, _ = resolve_phases(srv, S.USER, f"skip-{uid()}", 250)
    assert skip_rcpt == {"resolve:skip": 3}, skip_rcpt
    assert skip_data == {"resolve:skip": 2}, skip_data
    srv.wait_for_messages(1)

    # A hook that adds nothing: success, once per lookup, the same lookups
    # that counted skip above.
    hook.install("empty")
    ok_rcpt, ok_data, _ = resolve_phases(srv, S.USER, f"empty-{uid()}", 250)
    assert ok_rcpt == {"resolve:success": skip_rcpt["resolve:skip"]}, (ok_rcpt, skip_rcpt)
    assert ok_data == {"resolve:success": skip_data["resolve:skip"]}, (ok_data, skip_data)
    assert len(hook.calls()) == ok_rcpt["resolve:success"] + ok_data["resolve:success"], hook.calls()
    assert set(hook.calls()) <= {S.USER, "*@example.com"}, hook.calls()
    srv.wait_for_messages(2)

    # A hook that is the only source of an alias: hooked@ -> user@.
    before_calls = len(hook.calls())
    subject = f"hooked-{uid()}"
    rcpt_d, data_d, _ = resolve_phases(srv, "hooked@example.com", subject, 250)
    calls = hook.calls()[before_calls:]
    assert set(rcpt_d) == {"resolve:success"} and set(data_d) == {"resolve:success"}, (rcpt_d, data_d)
    assert rcpt_d["resolve:success"] + data_d["resolve:success"] == len(calls), (rcpt_d, data_d, calls)
    # RCPT: the exact lookup finds the alias (1). The put: hooked@ (1), then
    # user@ as above (2).
    assert (rcpt_d, data_d) == ({"resolve:success": 1}, {"resolve:success": 3}), (rcpt_d, data_d, calls)
    # The put followed the alias to the real user, asking the hook about it too.
    assert "hooked@example.com" in calls and S.USER in calls, calls
    mta.find_message(srv, subject.encode())

    # Failing and unparsable hooks: a failed lookup is "no result" at RCPT
    # (the user exists, so 250), and fails the put (4xx after DATA).
    for mode in ("fail", "parse_err"):
        hook.install(mode)
        before_calls = len(hook.calls())
        rcpt_d, data_d, reply = resolve_phases(srv, S.USER, f"{mode}-{uid()}", 451)
        calls = hook.calls()[before_calls:]
        key = f"resolve:{mode}"
        assert rcpt_d[key] + data_d[key] == len(calls), (mode, rcpt_d, data_d, calls)
        # RCPT tries all three lookups; the put stops at the first failure.
        assert (rcpt_d, data_d) == ({key: 3}, {key: 1}), (mode, rcpt_d, data_d, calls)
        assert "resolving aliases" in reply[1], reply


# ---------------------------------------------------------------- SPF and incoming security levels


def mail_from_only(srv, sender):
    """EHLO and MAIL FROM on port 25, then QUIT; returns MAIL's code."""
    c = session(srv.smtp_port)
    try:
        code, _ = c.cmd(f"MAIL FROM:<{sender}>")
        c.cmd("QUIT")
    finally:
        c.close()
    wait_idle(srv)
    return code


def test_spf_and_incoming_security_level_checks(daemons, dns_server):
    """SPF runs for unauthenticated senders only; the incoming security
    level is checked after an SPF pass and skipped otherwise (including for
    authenticated users); the null sender has neither."""
    dns_server.update("spfpass.test", {"TXT": [SPF_PASS]})
    srv = daemons(flags=[dns_server.chasquid_flag])
    names = ("smtpIn/spfResultCount", "smtpIn/securityLevelChecks")

    m = Meter(srv)
    assert mail_from_only(srv, "someone@spfpass.test") == 250
    assert m.deltas(*names) == {names[0]: {"pass": 1}, names[1]: {"pass": 1}}

    # nospf.test is not in the zone (NXDOMAIN): "none", and no level check.
    m = Meter(srv)
    assert mail_from_only(srv, "someone@nospf.test") == 250
    assert m.deltas(*names) == {names[0]: {"none": 1}, names[1]: {"skip": 1}}

    m = Meter(srv)
    assert mail_from_only(srv, "") == 250       # MAIL FROM:<>
    assert m.deltas(*names) == {names[0]: {}, names[1]: {}}

    # Authenticated submission: no SPF; chasquid still counts a skipped check.
    m = Meter(srv)
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(S.USER, S.PASSWORD)
        assert s.mail("someone@spfpass.test")[0] == 250
    wait_idle(srv)
    assert m.deltas(*names) == {names[0]: {}, names[1]: {"skip": 1}}


# ---------------------------------------------------------------- smtpIn/tlsCount


def test_incoming_tls_count(daemons):
    """Counted at DATA: a plaintext message and one after STARTTLS."""
    srv = daemons()
    m = Meter(srv)
    assert plain_message(srv, f"plain-{uid()}")[0] == 250
    assert m.delta("smtpIn/tlsCount") == {"plain": 1}

    m = Meter(srv)
    assert plain_message(srv, f"tls-{uid()}", starttls=True)[0] == 250
    assert m.delta("smtpIn/tlsCount") == {"tls": 1}

    # STARTTLS without a message is not counted.
    m = Meter(srv)
    c = session(srv.smtp_port)
    c.starttls()
    assert c.cmd("EHLO client.test")[0] == 250
    c.cmd("QUIT")
    c.close()
    wait_idle(srv)
    assert m.delta("smtpIn/tlsCount") == {}


# ---------------------------------------------------------------- smtpIn/tlsHandshakeFailures


def test_tls_handshake_failures(daemons):
    srv = daemons()
    name = "smtpIn/tlsHandshakeFailures"

    # Port 465: garbage instead of a ClientHello.
    m = Meter(srv)
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10) as s:
        s.sendall(b"EHLO this is not TLS\r\n")
        try:
            s.recv(4096)         # an alert, or the close
        except OSError:
            pass
    wait_counter(srv, m, name, {"submission+TLS": 1})
    wait_idle(srv)
    assert m.delta(name) == {"submission+TLS": 1}

    # Port 465: a client that refuses the (self-signed) certificate aborts
    # the handshake with an alert.
    m = Meter(srv)
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname=S.HOSTNAME)
    wait_counter(srv, m, name, {"submission+TLS": 1})

    # Port 25: STARTTLS, then garbage.
    m = Meter(srv)
    c = session(srv.smtp_port)
    assert c.cmd("STARTTLS")[0] == 220
    c.send(b"\x16\x03\x01\x00\x05hello, not a ClientHello\r\n")
    try:
        c.sock.recv(4096)
    except OSError:
        pass
    c.close()
    wait_counter(srv, m, name, {"SMTP": 1})
    wait_idle(srv)
    assert m.delta(name) == {"SMTP": 1}

    # A good handshake on either port is not a failure.
    m = Meter(srv)
    c = RawSMTP(srv.tls_port, tls=True, server_hostname=S.HOSTNAME)
    assert c.reply()[0] == 220
    c.cmd("QUIT")
    c.close()
    c = session(srv.smtp_port)
    c.starttls()
    assert c.cmd("EHLO client.test")[0] == 250
    c.cmd("QUIT")
    c.close()
    wait_idle(srv)
    assert m.delta(name) == {}


# ---------------------------------------------------------------- smtpIn/loopsDetected


def received(n):
    return "".join(f"Received: from hop{i}.invalid by hop{i + 1}.invalid; "
                   "Mon, 02 Jan 2006 15:04:05 -0700\r\n" for i in range(n))


def test_loops_detected(daemons):
    srv = daemons(flags=["-testing__max_received_headers=3"])
    m = Meter(srv)
    code, text = plain_message(srv, f"loop-{uid()}", extra_headers=received(4))
    assert (code, text.split()[0]) == (554, "5.4.6"), text
    d = m.deltas("smtpIn/loopsDetected", "queue/putCount")
    assert d == {"smtpIn/loopsDetected": 1, "queue/putCount": 0}, d

    # At the limit: accepted, not a loop.
    m = Meter(srv)
    assert plain_message(srv, f"hops-{uid()}", extra_headers=received(3))[0] == 250
    assert m.delta("smtpIn/loopsDetected") == 0


# ---------------------------------------------------------------- remote delivery


def start_remote(daemons, dns, **kwargs):
    """A daemon whose DNS is `dns` and whose outgoing port is a free one, on
    which fake MX peers listen (at 127.0.0.N); it trusts the test CA."""
    return daemons(flags=[dns.chasquid_flag], outgoing_smtp_port=S.free_port(),
                   extra_env={"SSL_CERT_FILE": str(mta.test_ca().cert_path)}, **kwargs)


@pytest.fixture
def peers():
    started = []

    def make(srv, dns, domain, host=None, **kwargs):
        """A FakeSMTPPeer named mx.<domain>, the domain's only MX."""
        p = FakeSMTPPeer(host or mta.next_loopback(), srv.outgoing_smtp_port,
                         name=f"mx.{domain}", **kwargs).start()
        started.append(p)
        dns.update(domain, {"MX": [[10, f"mx.{domain}"]]})
        dns.update(f"mx.{domain}", {"A": [p.host]})
        return p

    yield make
    for p in started:
        p.stop()


OUT = ("smtpOut/tlsCount", "smtpOut/securityLevelChecks", "queue/deliverAttempts")


def submit_and_wait(srv, rcpts, outcome="sent"):
    subject = f"out-{uid()}"
    qid = mta.submit(srv, rcpts, make_message(subject, to=rcpts[0], sender=srv.user))
    for r in rcpts:
        mta.wait_for_attempt(srv, qid, r, outcome)
    return qid, subject


def test_outgoing_tls_secure_then_downgrade_fails(daemons, dns_server, peers):
    """A verified STARTTLS: tls:secure, the level check passes; one attempt
    per recipient (two recipients, one connection). Then the domain's server
    loses TLS: plain, the level check fails, and the message stays queued."""
    domain = f"secure-{uid()}.test"
    srv = start_remote(daemons, dns_server)
    peer = peers(srv, dns_server, domain, tls=mta.test_ca().issue([f"mx.{domain}"]))

    m = Meter(srv)
    rcpts = [f"a@{domain}", f"b@{domain}"]
    _, subject = submit_and_wait(srv, rcpts)
    assert peer.wait_for_delivery(subject.encode()).tls
    assert m.deltas(*OUT) == {"smtpOut/tlsCount": {"tls:secure": 1},
                              "smtpOut/securityLevelChecks": {"pass": 1},
                              "queue/deliverAttempts": {"email:remote": 2}}
    mta.wait_for_level(srv, domain, "outgoing", "TLS_SECURE")

    # The same address, now without STARTTLS.
    host = peer.host
    peer.stop()
    plain = peers(srv, dns_server, domain, host=host)
    m = Meter(srv)
    qid, _ = submit_and_wait(srv, [f"c@{domain}"], "failed (temporary)")
    assert m.deltas(*OUT) == {"smtpOut/tlsCount": {"plain": 1},
                              "smtpOut/securityLevelChecks": {"fail": 1},
                              "queue/deliverAttempts": {"email:remote": 1}}
    assert f"m:{qid}" in srv.queue_files()
    assert plain.sessions and not plain.deliveries, plain.transcript_text()


def test_outgoing_tls_insecure(daemons, dns_server, peers):
    """An untrusted (self-signed) certificate: tls:insecure, and no
    tls:failed (chasquid verifies after an unverified handshake; a failed
    verification is not a failed TLS connection)."""
    domain = f"insecure-{uid()}.test"
    srv = start_remote(daemons, dns_server)
    peer = peers(srv, dns_server, domain, tls=mta.self_signed(f"mx.{domain}"))
    m = Meter(srv)
    _, subject = submit_and_wait(srv, [f"a@{domain}"])
    assert peer.wait_for_delivery(subject.encode()).tls
    assert m.deltas(*OUT) == {"smtpOut/tlsCount": {"tls:insecure": 1},
                              "smtpOut/securityLevelChecks": {"pass": 1},
                              "queue/deliverAttempts": {"email:remote": 1}}


def test_outgoing_plain(daemons, dns_server, peers):
    domain = f"plain-{uid()}.test"
    srv = start_remote(daemons, dns_server)
    peer = peers(srv, dns_server, domain)
    m = Meter(srv)
    _, subject = submit_and_wait(srv, [f"a@{domain}"])
    assert not peer.wait_for_delivery(subject.encode()).tls
    assert m.deltas(*OUT) == {"smtpOut/tlsCount": {"plain": 1},
                              "smtpOut/securityLevelChecks": {"pass": 1},
                              "queue/deliverAttempts": {"email:remote": 1}}


@pytest.mark.parametrize("reply", ["220 2.0.0 go ahead", "454 4.7.0 TLS not available"],
                         ids=["handshake-fails", "starttls-454"])
def test_outgoing_tls_failed(daemons, dns_server, peers, reply):
    """STARTTLS offered, but refused or the handshake fails: chasquid's
    StartTLS returns an error either way, counted as tls:failed, and its
    retry without TLS counts plain."""
    domain = f"tlsfail-{uid()}.test"
    srv = start_remote(daemons, dns_server)
    peer = peers(srv, dns_server, domain, offer_starttls=True, replies={"STARTTLS": reply})
    m = Meter(srv)
    _, subject = submit_and_wait(srv, [f"a@{domain}"])
    assert not peer.wait_for_delivery(subject.encode()).tls
    d = m.deltas(*OUT)
    assert d["smtpOut/tlsCount"] == {"tls:failed": 1, "plain": 1}, d
    assert d["smtpOut/securityLevelChecks"] == {"pass": 1}, d


# ---------------------------------------------------------------- queue counters


def test_dsn_queued(daemons, dns_server, peers):
    """550 to RCPT: a permanent failure, so a DSN to the (local) sender is
    queued: dsnQueued +1 and a second put."""
    domain = f"dsn-{uid()}.test"
    srv = start_remote(daemons, dns_server)
    peers(srv, dns_server, domain, replies={"RCPT": "550 5.1.1 no such user"})
    m = Meter(srv)
    qid, subject = submit_and_wait(srv, [f"a@{domain}"], "failed (permanent)")
    srv.wait_for_log(f"{qid} from={srv.user} all done")
    dsn = mta.find_message(srv, subject.encode())
    assert b"Mail delivery failed" in dsn
    srv.wait_for(lambda: not srv.queue_files(), 30, "the DSN to leave the queue")
    d = m.deltas("queue/dsnQueued", "queue/putCount", "queue/deliverAttempts")
    assert d == {"queue/dsnQueued": 1, "queue/putCount": 2,
                 "queue/deliverAttempts": {"email:remote": 1, "email:local": 1}}, d


def test_put_count_ignores_a_full_queue(daemons):
    """max_queue_items 1: a remote message stays queued (the outgoing port
    is 1); the next message is refused with 4xx, and chasquid does not count
    a put it refused because the queue is full."""
    srv = daemons(extra_conf="max_queue_items: 1")
    m = Meter(srv)
    qid, _ = submit_and_wait(srv, [f"a@full-{uid()}.test"], "failed (temporary)")
    assert m.delta("queue/putCount") == 1
    assert gauge(srv, "queue_items") == 1

    m = Meter(srv)
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(srv.user, S.PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail(srv.user, [f"b@full-{uid()}.test"],
                       mta.crlf(make_message("refused", sender=srv.user)))
        assert 400 <= e.value.smtp_code < 500, e.value
    wait_idle(srv)
    d = m.deltas("queue/putCount", "queue/itemsWritten")
    assert d == {"queue/putCount": 0, "queue/itemsWritten": 0}, d
    assert f"m:{qid}" in srv.queue_files()
    assert gauge(srv, "queue_items") == 1


def test_queue_items_gauge_and_items_written(daemons):
    """Two remote messages that stay queued: the queue gauge reads 2, and
    each put wrote its envelope."""
    srv = daemons()
    assert gauge(srv, "queue_items") == 0
    m = Meter(srv)
    for _ in range(2):
        submit_and_wait(srv, [f"a@stay-{uid()}.test"], "failed (temporary)")
    srv.wait_for(lambda: gauge(srv, "queue_items") == 2, 30, "queue_items at 2")
    d = m.deltas("queue/putCount", "queue/itemsWritten")
    assert d["queue/putCount"] == 2, d
    # chasquid writes the envelope at the put and again after each
    # recipient's attempt; this build writes it at the put and once per
    # delivery round, so only a lower bound holds for both.
    assert d["queue/itemsWritten"] >= 2, d


# ---------------------------------------------------------------- open connections


def test_open_connections_gauge(daemons):
    srv = daemons()
    base = gauge(srv, "smtp_in_open_connections")
    conns = []
    try:
        for port in (srv.smtp_port, srv.submission_port):
            c = RawSMTP(port, timeout=30)
            assert c.reply()[0] == 220
            conns.append(c)
        srv.wait_for(lambda: gauge(srv, "smtp_in_open_connections") == base + 2, 15,
                     "two open connections")
    finally:
        for c in conns:
            c.close()
    srv.wait_for(lambda: gauge(srv, "smtp_in_open_connections") == base, 15,
                 "the connections to close")
