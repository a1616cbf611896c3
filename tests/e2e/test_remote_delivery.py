"""Remote delivery end to end: two of our daemons talking to each other, and
our daemon talking to fake SMTP peers with chosen failure modes.

    A: mx.a.test, domain a.test      B: mx.b.test, domain b.test

Both on 127.0.0.1; one test DNS server (tests/dnsserver) holds MX, A and SPF
records for both. A's -testing__outgoing_smtp_port is B's SMTP port and the
other way round, so mail for b.test leaves A and arrives at B. Fake peers
(mta.FakeSMTPPeer) listen on other loopback addresses (127.0.0.N) on A's
outgoing port, with the MX of a test domain pointing there. Certificates come
from a test CA (mta.TestCA), trusted by the daemons through SSL_CERT_FILE.

Contract: COMPAT.md §12.4 (queue, SRS, FORWARD/via, DSN), §12.5 (outgoing
SMTP), §13 (security levels), §18 (mail log), §22.8 (null MX); our choices in
docs/delivery.md and docs/compatibility.md (a domain with neither MX nor
address records bounces at once; `via host:port`).
"""

import email.utils
import os
import re
import shutil
import tempfile
import smtplib
import time
import uuid
from pathlib import Path

import pytest

import mta
import server as S
from dnstest import DNSServer
from mta import FakeSMTPPeer, crlf, make_message, sec_levels, wait_for, wait_for_level
from server import ChasquidServer

SPF_PASS = "v=spf1 ip4:127.0.0.1 -all"
REMOTE_SENDER = "sender@remote.test"       # not a local domain anywhere: SRS applies
DELIVERY_TIMEOUT = 30                      # first attempts come within seconds
RETRY_TIMEOUT = 150                        # the queue's first retry: 1 min + 0-60 s


def uid():
    return uuid.uuid4().hex[:8]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca():
    return mta.test_ca()


@pytest.fixture(scope="module")
def dns():
    zone = {
        "a.test": {"MX": [[10, "mx.a.test"]], "TXT": [SPF_PASS]},
        "mx.a.test": {"A": ["127.0.0.1"]},
        "b.test": {"MX": [[10, "mx.b.test"]], "TXT": [SPF_PASS]},
        "mx.b.test": {"A": ["127.0.0.1"]},
    }
    with DNSServer(zone) as server:
        yield server


A_ALIASES = """\
postmaster: user
# one local and one remote copy; a remote sender is rewritten with SRS
fwd: user@b.test, copy@srs.test
# FORWARD: through the named server only, never by MX
viahost: y@c.test via relay.c.test
viaport: z@d.test via 127.0.0.1:{via_port}
"""


class Pair:
    """The two daemons and what the tests share."""

    def __init__(self, a, b, ca, dns, via_port):
        self.a, self.b, self.ca, self.dns, self.via_port = a, b, ca, dns, via_port

    def b_certs(self):
        return {"mx.b.test": self.ca.issue(["mx.b.test"])}


@pytest.fixture(scope="module")
def pair(ca, dns):
    via_port = S.free_port()
    env = {"SSL_CERT_FILE": str(ca.cert_path)}
    a = ChasquidServer(hostname="mx.a.test", domain="a.test",
                       certs={"mx.a.test": ca.issue(["mx.a.test"])},
                       aliases=A_ALIASES.format(via_port=via_port),
                       flags=[dns.chasquid_flag], extra_env=env)
    b = ChasquidServer(hostname="mx.b.test", domain="b.test",
                       certs={"mx.b.test": ca.issue(["mx.b.test"])},
                       flags=[dns.chasquid_flag], extra_env=env)
    a.outgoing_smtp_port = b.smtp_port
    b.outgoing_smtp_port = a.smtp_port
    try:
        a.start()
        b.start()
        yield Pair(a, b, ca, dns, via_port)
    finally:
        a.cleanup()
        b.cleanup()


@pytest.fixture
def peers(pair):
    """peer(domain, **kwargs): a FakeSMTPPeer on a fresh loopback address
    and A's outgoing port, named mx.<domain>, with the zone's MX for
    `domain` pointing at it. Stopped after the test."""
    started = []

    def make(domain, mx_name=None, **kwargs):
        mx_name = mx_name or f"mx.{domain}"
        p = FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name=mx_name, **kwargs)
        p.start()
        started.append(p)
        pair.dns.update(domain, {"MX": [[10, mx_name]]})
        pair.dns.update(mx_name, {"A": [p.host]})
        return p

    yield make
    for p in started:
        p.stop()


def dead_address():
    """A loopback address where nothing listens (connection refused)."""
    return mta.next_loopback()


def wait_for_dsn(server, marker, timeout=DELIVERY_TIMEOUT):
    """The DSN in server's user Maildir that carries `marker` (bytes, e.g.
    the original subject); returns mta.parse_dsn's (msg, blocks, original)."""
    data = mta.find_message(server, marker, timeout=timeout)
    assert b"Mail delivery failed" in data, data[:2000]
    return mta.parse_dsn(data)


def assert_no_dsn(server, marker):
    assert not [m for m in server.messages() if marker in m and b"Mail delivery failed" in m]


def assert_stays_queued(server, qid, rcpt, text=None):
    """The item is still queued, the recipient PENDING with a
    last_failure_message (containing `text` if given)."""
    def look():
        item = mta.queue_item(server, qid)
        if not item:
            return None
        r = next((r for r in item["rcpt"] if r["address"] == rcpt), None)
        return r if r and r["last_failure_message"] else None
    r = wait_for(look, DELIVERY_TIMEOUT, f"m:{qid} with a last_failure_message for {rcpt}")
    assert r["status"] == "PENDING", r
    if text is not None:
        assert text in r["last_failure_message"], r
    assert not re.search(rf"^\S+ \S+ {qid} from=\S* all done$", server.mail_log(), re.M)
    return r


def a_to_b(pair, subject=None):
    """One message from user@a.test to user@b.test; waits for it at B.
    Returns (qid at A, the message as B stored it)."""
    subject = subject or f"a-to-b-{uid()}"
    qid = mta.submit(pair.a, ["user@b.test"], make_message(subject, to="user@b.test"))
    mta.wait_for_attempt(pair.a, qid, "user@b.test", "sent", DELIVERY_TIMEOUT)
    return qid, mta.find_message(pair.b, subject.encode())


# ---------------------------------------------------------------- A <-> B


def test_a_to_b_and_back_records_tls_levels(pair):
    a, b = pair.a, pair.b
    subject = f"a-to-b-{uid()}"
    original = make_message(subject, body="From A to B.\n", to="user@b.test")
    qid = mta.submit(a, ["user@b.test"], original)
    assert mta.wait_for_attempt(a, qid, "user@b.test", "sent") == "sent"
    a.wait_for_log(f"{qid} from=user@a.test all done")
    got = mta.find_message(b, subject.encode())
    assert got.endswith(original), got
    # B's Received: A came over SMTP with STARTTLS, from A's hostname.
    assert re.search(rb"^Received: from mx\.a\.test \(\[127\.0\.0\.1\]\)\n\tby mx\.b\.test \(chasquid\) "
                     rb"with ESMTPS\n\ttls TLS_[A-Z0-9_]+\n", got, re.M), got[:800]
    assert re.search(rb"\(over SMTP, TLS-1\.[23], envelope from \"user@a\.test\"\)", got), got[:800]
    assert re.search(rb"^Received-SPF: pass ", got, re.M), got[:800]

    # A verified B's certificate (our CA, name mx.b.test): TLS_SECURE.
    rec = wait_for_level(a, "b.test", "outgoing", "TLS_SECURE")
    assert rec["name"] == "b.test"
    # B saw a.test over TLS with SPF pass: TLS_CLIENT.
    assert wait_for_level(b, "a.test", "incoming", "TLS_CLIENT")["outgoing"] == "PLAIN"

    # And back: B to A.
    subject = f"b-to-a-{uid()}"
    original = make_message(subject, body="From B to A.\n", sender="user@b.test", to="user@a.test")
    qid = mta.submit(b, ["user@a.test"], original)
    assert mta.wait_for_attempt(b, qid, "user@a.test", "sent") == "sent"
    assert mta.find_message(a, subject.encode()).endswith(original)
    wait_for_level(b, "a.test", "outgoing", "TLS_SECURE")
    assert sec_levels(b, "a.test")["incoming"] == "TLS_CLIENT"
    assert wait_for_level(a, "b.test", "incoming", "TLS_CLIENT")["outgoing"] == "TLS_SECURE"
    b.wait_for_log(f"{qid} from=user@b.test all done")


def test_incoming_downgrade_is_refused(pair):
    """B has a.test at TLS_CLIENT: a plaintext session with an SPF-passing
    MAIL FROM @a.test gets 550 5.7.3; the same over STARTTLS is fine."""
    a_to_b(pair)
    wait_for_level(pair.b, "a.test", "incoming", "TLS_CLIENT")
    with smtplib.SMTP("127.0.0.1", pair.b.smtp_port, local_hostname="mx.a.test", timeout=60) as s:
        s.ehlo()
        port = s.sock.getsockname()[1]
        code, text = s.mail("someone@a.test")
        assert (code, text.split()[0]) == (550, b"5.7.3"), (code, text)
    pair.b.wait_for(lambda: re.search(
        rf"^\S+ \S+ 127\.0\.0\.1:{port} rejected from=someone@a\.test - security level check failed$",
        pair.b.mail_log(), re.M), what="the rejection in B's mail log")
    with smtplib.SMTP("127.0.0.1", pair.b.smtp_port, local_hostname="mx.a.test", timeout=60) as s:
        s.starttls(context=mta.no_verify_context())
        s.ehlo("mx.a.test")
        assert s.mail("someone@a.test")[0] == 250
    # The level did not change.
    assert sec_levels(pair.b, "a.test")["incoming"] == "TLS_CLIENT"


# ---------------------------------------------------------------- MX


@pytest.mark.parametrize("better", ["dead", "tempfail"])
def test_mx_preference_falls_back_to_the_next(pair, peers, better):
    """Two MX, listed in the zone worst first: the preference-10 one is
    tried first; it is dead or answers RCPT with 4xx, so the preference-20
    one gets the message, in the same attempt."""
    domain = f"pref-{uid()}.test"
    good = peers(domain, mx_name=f"mx2.{domain}")
    if better == "dead":
        first_ip, bad = dead_address(), None
    else:
        bad = FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name=f"mx1.{domain}",
                           replies={"RCPT": "451 4.3.2 mx1 is busy"}).start()
        first_ip = bad.host
    try:
        pair.dns.update(f"mx1.{domain}", {"A": [first_ip]})
        pair.dns.update(domain, {"MX": [[20, f"mx2.{domain}"], [10, f"mx1.{domain}"]]})
        subject = f"pref-{uid()}"
        rcpt = f"x@{domain}"
        qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
        assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
        d = good.wait_for_delivery(subject.encode())
        assert d.rcpts == [rcpt]
        if bad:
            assert bad.sessions and "RCPT" in bad.sessions[0].commands, bad.transcript_text()
            assert not bad.accepted
            assert bad.sessions[0].started <= good.sessions[0].started
    finally:
        if bad:
            bad.stop()


def test_implicit_mx_from_address_record(pair):
    """No MX records, only an A record: the domain itself is the MX."""
    domain = f"implicit-{uid()}.test"
    with FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name=domain) as p:
        pair.dns.update(domain, {"A": [p.host]})
        mark = len(pair.dns.queries())
        subject = f"implicit-{uid()}"
        rcpt = f"x@{domain}"
        qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
        assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
        assert p.wait_for_delivery(subject.encode()).rcpts == [rcpt]
        seen = [(n, t) for _, n, t in pair.dns.queries()[mark:]]
        assert (domain, "MX") in seen and (domain, "A") in seen, seen
        assert seen.index((domain, "MX")) < seen.index((domain, "A")), seen


def assert_dsn(msg, blocks, original, rcpt, subject, status):
    assert msg["From"] == "Mail Delivery System <postmaster-dsn@a.test>", msg["From"]
    assert email.utils.parseaddr(msg["To"])[1] == "user@a.test", msg["To"]
    assert msg["Subject"] == "Mail delivery failed: returning message to sender"
    assert rcpt in msg["X-Failed-Recipients"], msg["X-Failed-Recipients"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    mine = [b for b in blocks if rcpt in b.get("Final-Recipient", "")]
    assert mine, blocks
    block = mine[0]
    assert block["Action"] == "failed" and block["Status"] == status, block
    assert block.get("Diagnostic-Code", "").startswith("smtp;"), block
    assert original is not None and subject.encode() in original
    return block


def test_null_mx_bounces_at_once(pair):
    """MX 0 "." (RFC 7505, COMPAT §22.8): a permanent failure on the first
    attempt, so the DSN comes well before the first retry (1 min)."""
    domain = f"nullmx-{uid()}.test"
    pair.dns.update(domain, {"MX": [[0, ""]], "A": [dead_address()]})
    subject = f"nullmx-{uid()}"
    rcpt = f"x@{domain}"
    start = time.monotonic()
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
    assert mta.wait_for_attempt(pair.a, qid, rcpt, "failed (permanent)")
    msg, blocks, original = wait_for_dsn(pair.a, subject.encode())
    assert time.monotonic() - start < 55, "the DSN waited for a retry"
    assert_dsn(msg, blocks, original, rcpt, subject, "5.0.0")
    pair.a.wait_for_log(f"{qid} from=user@a.test all done")
    assert f"m:{qid}" not in pair.a.queue_files()


def test_nonexistent_domain_stays_queued(pair):
    """A domain with neither MX nor address records (NXDOMAIN): implicit MX,
    whose address lookup also finds nothing: a transient failure, as COMPAT
    §12.5 has it (a resolver's passing NXDOMAIN must not bounce mail); the
    DSN comes at give_up_send_after."""
    domain = f"nx-{uid()}.test"
    mark = len(pair.dns.queries())
    subject = f"nx-{uid()}"
    rcpt = f"x@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
    outcome = mta.wait_for_attempt(pair.a, qid, rcpt, "failed (temporary)")
    assert "no such host" in outcome, outcome
    assert_stays_queued(pair.a, qid, rcpt, "no such host")
    assert_no_dsn(pair.a, subject.encode())
    seen = [(n, t) for _, n, t in pair.dns.queries()[mark:]]
    assert (domain, "MX") in seen, seen
    assert (domain, "A") in seen or (domain, "AAAA") in seen, seen


def test_5xx_greeting_moves_on_to_the_next_mx(pair, peers):
    """A server that refuses us at the greeting (a blocklist, say) is about
    that server, not the message: the next MX gets it (§12.5 step 6)."""
    domain = f"greet-{uid()}.test"
    good = peers(domain, mx_name=f"mx2.{domain}")
    bad = FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name=f"mx1.{domain}",
                       replies={"GREETING": "554 5.7.1 you are on our list"}).start()
    try:
        pair.dns.update(f"mx1.{domain}", {"A": [bad.host]})
        pair.dns.update(domain, {"MX": [[10, f"mx1.{domain}"], [20, f"mx2.{domain}"]]})
        subject = f"greet-{uid()}"
        rcpt = f"x@{domain}"
        qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
        assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
        good.wait_for_delivery(subject.encode())
        assert bad.sessions and not bad.accepted
    finally:
        bad.stop()


def test_batch_one_transaction_with_per_recipient_results(pair, peers):
    """Three recipients at one domain whose server lacks SMTPUTF8: the two
    ASCII ones go in one transaction (one MAIL, two RCPT); the UTF-8 local
    part alone bounces, and does not hold back or bounce the others."""
    domain = f"batch-{uid()}.test"
    p = peers(domain, extensions=("8BITMIME", "PIPELINING"))
    subject = f"batch-{uid()}"
    rcpts = [f"one@{domain}", f"ñandú@{domain}", f"two@{domain}"]
    qid = mta.submit(pair.a, rcpts, make_message(subject, to=f"list@{domain}"), smtputf8=True)
    assert mta.wait_for_attempt(pair.a, qid, rcpts[0], "sent") == "sent"
    assert mta.wait_for_attempt(pair.a, qid, rcpts[2], "sent") == "sent"
    mta.wait_for_attempt(pair.a, qid, rcpts[1], "failed (permanent)")
    d = p.wait_for_delivery(subject.encode())
    assert d.rcpts == [rcpts[0], rcpts[2]]
    assert len(p.accepted) == 1, p.transcript_text()
    msg, blocks, original = wait_for_dsn(pair.a, subject.encode())
    assert_dsn(msg, blocks, original, rcpts[1], subject, "5.0.0")


# ---------------------------------------------------------------- TLS levels per peer


LEVEL_CASES = {
    # case: (peer kwargs maker, expected level, delivered over TLS)
    "plain": (lambda ca, d: {}, "PLAIN", False),
    "valid-cert": (lambda ca, d: {"tls": ca.issue([f"mx.{d}"])}, "TLS_SECURE", True),
    "expired-cert": (lambda ca, d: {"tls": ca.issue([f"mx.{d}"], expired=True)}, "TLS_INSECURE", True),
    # Valid for the domain, but the name checked is the MX host name.
    "wrong-name": (lambda ca, d: {"tls": ca.issue([d])}, "TLS_INSECURE", True),
    "self-signed": (lambda ca, d: {"tls": mta.self_signed(f"mx.{d}")}, "TLS_INSECURE", True),
    # STARTTLS offered but refused, or the handshake fails: plaintext.
    "starttls-454": (lambda ca, d: {"offer_starttls": True}, "PLAIN", False),
    "handshake-fails": (lambda ca, d: {"offer_starttls": True,
                                       "replies": {"STARTTLS": "220 2.0.0 go ahead"}}, "PLAIN", False),
}


@pytest.mark.parametrize("case", list(LEVEL_CASES))
def test_security_level_recorded_per_peer(pair, peers, case):
    make_kwargs, level, over_tls = LEVEL_CASES[case]
    domain = f"lvl-{case}-{uid()}.test"
    p = peers(domain, **make_kwargs(pair.ca, domain))
    subject = f"lvl-{case}-{uid()}"
    rcpt = f"x@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
    assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent", p.transcript_text()
    d = p.wait_for_delivery(subject.encode())
    assert d.tls is over_tls, p.transcript_text()
    assert d.ehlo == "mx.a.test", d.ehlo            # EHLO <hostname> (§12.5)
    rec = wait_for_level(pair.a, domain, "outgoing", level)
    assert rec["incoming"] == "PLAIN" and rec["name"] == domain
    if over_tls:
        assert d.mail_from == "user@a.test"


# ---------------------------------------------------------------- failures


TRANSIENT = {
    # case: (peer kwargs, text expected in the last failure message or None)
    "rcpt-451": ({"replies": {"RCPT": "451 4.7.1 greylisted-{m}"}}, "greylisted-{m}"),
    "greeting-421": ({"replies": {"GREETING": "421 4.3.2 too-busy-{m}"}}, None),
    "data-command-451": ({"replies": {"DATA": "451 4.3.0 no-data-now-{m}"}}, "no-data-now-{m}"),
    "after-data-451": ({"replies": {".": "451 4.3.0 disk-full-{m}"}}, "disk-full-{m}"),
    "drop-at-rcpt": ({"drop_at": "RCPT"}, None),
    "drop-after-data": ({"drop_at": "."}, None),
}


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_failure_stays_queued(pair, peers, case):
    m = uid()
    kwargs, text = TRANSIENT[case]
    kwargs = {k: ({vk: vv.format(m=m) for vk, vv in v.items()} if isinstance(v, dict) else v)
              for k, v in kwargs.items()}
    text = text.format(m=m) if text else None
    domain = f"tmp-{case}-{uid()}.test"
    p = peers(domain, **kwargs)
    subject = f"tmp-{case}-{uid()}"
    rcpt = f"x@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
    outcome = mta.wait_for_attempt(pair.a, qid, rcpt, "failed (temporary)")
    if text:
        assert text in outcome, outcome
    assert_stays_queued(pair.a, qid, rcpt, text)
    assert f"m:{qid}" in pair.a.queue_files()
    assert not p.accepted
    assert p.sessions, "the peer was never contacted"
    assert_no_dsn(pair.a, subject.encode())


PERMANENT = {
    "rcpt-550": {"RCPT": "550 5.1.1 no-such-mailbox-{m}"},
    "after-data-554": {".": "554 5.7.1 content-rejected-{m}"},
}


@pytest.mark.parametrize("case", list(PERMANENT))
def test_permanent_failure_bounces_with_the_remote_reply(pair, peers, case):
    m = uid()
    replies = {k: v.format(m=m) for k, v in PERMANENT[case].items()}
    marker = next(iter(replies.values())).split(" ", 2)[2]
    domain = f"perm-{case}-{uid()}.test"
    # A second MX that would accept: a 5xx must not move on to it.
    p = peers(domain, replies=replies)
    backup = FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name=f"mx2.{domain}").start()
    try:
        pair.dns.update(f"mx2.{domain}", {"A": [backup.host]})
        pair.dns.update(domain, {"MX": [[10, f"mx.{domain}"], [20, f"mx2.{domain}"]]})
        subject = f"perm-{case}-{uid()}"
        rcpt = f"x@{domain}"
        qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
        outcome = mta.wait_for_attempt(pair.a, qid, rcpt, "failed (permanent)")
        assert marker in outcome, outcome
        msg, blocks, original = wait_for_dsn(pair.a, subject.encode())
        block = assert_dsn(msg, blocks, original, rcpt, subject, "5.0.0")
        assert marker in block["Diagnostic-Code"], block
        assert not p.accepted and not backup.sessions, backup.transcript_text()
        pair.a.wait_for_log(f"{qid} from=user@a.test all done")
    finally:
        backup.stop()


# The outcome as chasquid 1.18 words it (internal/courier/smtp.go): the step
# (MAIL+RCPT, DATA, DATA closing), then the reply as Go's textproto.Error
# prints it since Go 1.25, `<code> "<text>"`, no host prefix; a transient
# one wrapped as `all MXs returned transient failures (last: …)` even for a
# single MX. Admins and their scripts grep these (issue 12 §2).
EXACT_TEXTS = {
    "mail-550": ({"MAIL": "550 5.7.23 SPF check failed: matched all"},
                 'failed (permanent): MAIL+RCPT 550 "5.7.23 SPF check failed: matched all"'),
    "rcpt-451": ({"RCPT": "451 4.7.1 greylisted-{m}"},
                 'failed (temporary): all MXs returned transient failures '
                 '(last: MAIL+RCPT 451 "4.7.1 greylisted-{m}")'),
    "data-554": ({"DATA": "554 5.3.4 no-data-{m}"},
                 'failed (permanent): DATA 554 "5.3.4 no-data-{m}"'),
    "closing-451": ({".": "451 4.3.0 disk-full-{m}"},
                    'failed (temporary): all MXs returned transient failures '
                    '(last: DATA closing 451 "4.3.0 disk-full-{m}")'),
}


@pytest.mark.parametrize("case", list(EXACT_TEXTS))
def test_delivery_errors_are_worded_as_chasquids(pair, peers, case):
    m = uid()
    replies, want = EXACT_TEXTS[case]
    replies = {k: v.format(m=m) for k, v in replies.items()}
    want = want.format(m=m)
    domain = f"words-{case}-{uid()}.test"
    peers(domain, replies=replies)
    rcpt = f"x@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(f"words-{m}", to=rcpt))
    outcome = mta.wait_for_attempt(pair.a, qid, rcpt, want.split(":")[0])
    assert outcome == want, outcome
    if "temporary" in want:
        r = assert_stays_queued(pair.a, qid, rcpt)
        assert r["last_failure_message"] == want.split(": ", 1)[1], r


@pytest.mark.parametrize("with_ca", [True, False], ids=["ca-in-dir", "empty-dir"])
def test_ssl_cert_dir_is_read_as_go_reads_it(pair, with_ca):
    """SSL_CERT_DIR as Go's crypto/x509 reads it: every file in the
    directory is PEM, no hashed names (issue 12 §5). With the test CA
    dropped in as ca.pem, a delivery to a server with a certificate from it
    is TLS_SECURE; with the directory empty (the negative control), the
    same delivery is TLS_INSECURE."""
    certdir = Path(tempfile.mkdtemp(prefix="cqcadir", dir="/tmp"))
    os.chmod(certdir, 0o755)
    if with_ca:
        shutil.copyfile(pair.ca.cert_path, certdir / "ca.pem")
        os.chmod(certdir / "ca.pem", 0o644)
    domain = f"certdir-{uid()}.test"
    mx_name = f"mx.{domain}"
    port = S.free_port()
    peer = FakeSMTPPeer(mta.next_loopback(), port, name=mx_name,
                        tls=pair.ca.issue([mx_name])).start()
    pair.dns.update(domain, {"MX": [[10, mx_name]]})
    pair.dns.update(mx_name, {"A": [peer.host]})
    c = ChasquidServer(hostname="mx.c.test", domain="c.test",
                       certs={"mx.c.test": pair.ca.issue(["mx.c.test"])},
                       flags=[pair.dns.chasquid_flag], outgoing_smtp_port=port,
                       extra_env={"SSL_CERT_DIR": str(certdir)})
    try:
        c.start()
        rcpt = f"x@{domain}"
        subject = f"certdir-{uid()}"
        qid = mta.submit(c, [rcpt], make_message(subject, sender="user@c.test", to=rcpt))
        assert mta.wait_for_attempt(c, qid, rcpt, "sent") == "sent"
        assert peer.wait_for_delivery(subject.encode()).tls
        wait_for_level(c, domain, "outgoing", "TLS_SECURE" if with_ca else "TLS_INSECURE")
    finally:
        c.cleanup()
        peer.stop()
        shutil.rmtree(certdir, ignore_errors=True)


def test_tempfail_then_the_queue_retry_delivers(pair, peers):
    """4xx to the first RCPT, 2xx afterwards: the first attempt leaves the
    reply in the queue file; the queue's own retry (1-2 min later) delivers;
    no DSN."""
    m = uid()
    domain = f"retry-{uid()}.test"
    p = peers(domain, replies={"RCPT": [f"450 4.2.0 try-again-later-{m}"]})
    subject = f"retry-{uid()}"
    rcpt = f"x@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to=rcpt))
    assert f"try-again-later-{m}" in mta.wait_for_attempt(pair.a, qid, rcpt, "failed (temporary)")
    assert_stays_queued(pair.a, qid, rcpt, f"try-again-later-{m}")
    pair.a.wait_for_log(f"{qid} from=user@a.test completed loop, next in ", timeout=DELIVERY_TIMEOUT)
    assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent", RETRY_TIMEOUT) == "sent"
    assert p.wait_for_delivery(subject.encode()).rcpts == [rcpt]
    pair.a.wait_for_log(f"{qid} from=user@a.test all done")
    assert f"m:{qid}" not in pair.a.queue_files()
    assert len(p.sessions) >= 2
    assert_no_dsn(pair.a, subject.encode())


# ---------------------------------------------------------------- SRS, via


def test_forward_alias_rewrites_a_remote_sender(pair, peers):
    """fwd@a.test -> user@b.test, copy@srs.test. From a remote sender, both
    copies leave with MAIL FROM fwd+fwd_from=sender=remote.test@a.test."""
    peer = peers("srs.test")
    subject = f"srs-{uid()}"
    original = make_message(subject, sender=REMOTE_SENDER, to="fwd@a.test")
    qid = mta.send_smtp(pair.a, REMOTE_SENDER, ["fwd@a.test"], original)
    srs = "fwd+fwd_from=sender=remote.test@a.test"
    for rcpt in ("user@b.test", "copy@srs.test"):
        assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
    d = peer.wait_for_delivery(subject.encode())
    assert d.mail_from == srs and d.rcpts == ["copy@srs.test"], d
    got = mta.find_message(pair.b, subject.encode())
    assert f'envelope from "{srs}"'.encode() in got, got[:800]
    # B checked SPF on the rewritten sender: a.test passes.
    assert re.search(rb"^Received-SPF: pass ", got, re.M), got[:800]
    assert got.endswith(original)


def test_forward_alias_keeps_a_local_sender(pair, peers):
    peer = peers("srs.test")
    subject = f"nosrs-{uid()}"
    qid = mta.submit(pair.a, ["fwd@a.test"], make_message(subject, to="fwd@a.test"))
    assert mta.wait_for_attempt(pair.a, qid, "copy@srs.test", "sent") == "sent"
    assert peer.wait_for_delivery(subject.encode()).mail_from == "user@a.test"
    got = mta.find_message(pair.b, subject.encode())
    assert b'envelope from "user@a.test"' in got


def test_via_alias_by_server_name(pair):
    """viahost@a.test -> y@c.test via relay.c.test: delivered to
    relay.c.test (A record, the outgoing port), never by c.test's MX."""
    with FakeSMTPPeer(mta.next_loopback(), pair.a.outgoing_smtp_port, name="relay.c.test") as relay:
        pair.dns.update("relay.c.test", {"A": [relay.host]})
        pair.dns.update("c.test", {"MX": [[10, "mx.c.test"]]})
        pair.dns.update("mx.c.test", {"A": [dead_address()]})
        mark = len(pair.dns.queries())
        subject = f"viahost-{uid()}"
        qid = mta.send_smtp(pair.a, REMOTE_SENDER, ["viahost@a.test"],
                            make_message(subject, sender=REMOTE_SENDER, to="viahost@a.test"))
        assert mta.wait_for_attempt(pair.a, qid, "y@c.test", "sent") == "sent"
        d = relay.wait_for_delivery(subject.encode())
        assert d.rcpts == ["y@c.test"]
        assert d.mail_from == "viahost+fwd_from=sender=remote.test@a.test"
        seen = [(n, t) for _, n, t in pair.dns.queries()[mark:]]
        assert ("c.test", "MX") not in seen, seen
        assert ("relay.c.test", "A") in seen, seen
        wait_for_level(pair.a, "c.test", "outgoing", "PLAIN")    # keyed by the recipient domain


def test_via_alias_with_host_and_port(pair):
    """viaport@a.test -> z@d.test via 127.0.0.1:<port>."""
    with FakeSMTPPeer("127.0.0.1", pair.via_port, name="relay.d.test") as relay:
        pair.dns.update("d.test", {"MX": [[10, "mx.d.test"]]})
        pair.dns.update("mx.d.test", {"A": [dead_address()]})
        mark = len(pair.dns.queries())
        subject = f"viaport-{uid()}"
        qid = mta.send_smtp(pair.a, REMOTE_SENDER, ["viaport@a.test"],
                            make_message(subject, sender=REMOTE_SENDER, to="viaport@a.test"))
        assert mta.wait_for_attempt(pair.a, qid, "z@d.test", "sent") == "sent"
        d = relay.wait_for_delivery(subject.encode())
        assert d.rcpts == ["z@d.test"]
        assert d.mail_from == "viaport+fwd_from=sender=remote.test@a.test"
        assert ("d.test", "MX") not in [(n, t) for _, n, t in pair.dns.queries()[mark:]]


# ---------------------------------------------------------------- the bytes on the wire


BODY = (
    "First line.\n"
    ".A line starting with a dot\n"
    "..two dots\n"
    ".\n"
    "The line above was a lone dot; this one ends the paragraph.\n"
    ". dot space\n"
    "Non-ASCII: Ünïcödé, ñandú, текст, 日本語 ✓\n"
    "\n"
    "Trailing spaces stay:   \n"
    "Tab\tinside.\n"
    "Last line.\n"
)


def dot_stuff(data):
    return b"".join(b"." + l if l.startswith(b".") else l for l in data.splitlines(keepends=True))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_message_arrives_byte_for_byte(pair, peers, tls):
    domain = f"bytes-{'tls' if tls else 'plain'}-{uid()}.test"
    p = peers(domain, **({"tls": pair.ca.issue([f"mx.{domain}"])} if tls else {}))
    subject = f"bytes-{uid()}"
    rcpt = f"x@{domain}"
    original = make_message(subject, body=BODY, to=rcpt,
                            extra_headers="Content-Type: text/plain; charset=utf-8\n"
                                          "Content-Transfer-Encoding: 8bit\n")
    qid = mta.submit(pair.a, [rcpt], original)
    assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
    d = p.wait_for_delivery(subject.encode())
    assert d.tls is tls
    assert (d.mail_from, d.rcpts) == ("user@a.test", [rcpt])
    assert "BODY=8BITMIME" in d.mail_params.upper().split(), d.mail_params
    # CRLF everywhere, nothing bare.
    assert b"\n" not in d.wire.replace(b"\r\n", b"") and b"\r" not in d.wire.replace(b"\r\n", b""), d.wire
    assert d.wire.endswith(b"\r\n")
    # Dot-stuffing on the wire; undone, the message is A's Received header
    # on top of the original, byte for byte.
    assert d.wire == dot_stuff(d.data)
    assert b"\r\n..A line starting with a dot\r\n...two dots\r\n..\r\nThe line above" in d.wire
    assert b"\r\n.. dot space\r\n" in d.wire
    assert d.data.endswith(crlf(original)), d.data
    added = d.data[: len(d.data) - len(crlf(original))]
    assert added.startswith(b"Received: from client.test\r\n\tby mx.a.test (chasquid) with ESMTPSA"), added
    assert all(l.startswith((b"Received:", b"\t", b" ")) for l in added.split(b"\r\n")[:-1]), added


def test_idna_domain_to_a_peer_without_smtputf8(pair, peers):
    """A recipient at a Unicode domain: MX looked up by its A-label, and
    RCPT TO uses the A-label when the peer lacks SMTPUTF8."""
    label = f"ñandú{uid()}"
    unicode_domain = f"{label}.test"
    ascii_domain = f"{label.encode('idna').decode()}.test"
    p = peers(ascii_domain, extensions=("8BITMIME", "ENHANCEDSTATUSCODES"))
    subject = f"idna-{uid()}"
    rcpt = f"user@{unicode_domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to="user@example.invalid"), smtputf8=True)
    assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
    d = p.wait_for_delivery(subject.encode())
    assert d.rcpts == [f"user@{ascii_domain}"], d.rcpts
    assert "SMTPUTF8" not in d.mail_params.upper()


@pytest.mark.parametrize("peer_smtputf8", [True, False], ids=["peer-smtputf8", "peer-ascii-only"])
def test_utf8_local_part(pair, peers, peer_smtputf8):
    """A non-ASCII local part needs SMTPUTF8: sent with it when the peer
    offers it, a permanent failure (DSN) when it does not."""
    domain = f"utf8-{uid()}.test"
    exts = ("8BITMIME", "SMTPUTF8") if peer_smtputf8 else ("8BITMIME",)
    p = peers(domain, extensions=exts)
    subject = f"utf8-{uid()}"
    rcpt = f"ñandú@{domain}"
    qid = mta.submit(pair.a, [rcpt], make_message(subject, to="someone@example.invalid"), smtputf8=True)
    if peer_smtputf8:
        assert mta.wait_for_attempt(pair.a, qid, rcpt, "sent") == "sent"
        d = p.wait_for_delivery(subject.encode())
        assert d.rcpts == [rcpt]
        assert "SMTPUTF8" in d.mail_params.upper().split(), d.mail_params
    else:
        mta.wait_for_attempt(pair.a, qid, rcpt, "failed (permanent)")
        msg, blocks, original = wait_for_dsn(pair.a, subject.encode())
        assert_dsn(msg, blocks, original, rcpt, subject, "5.0.0")
        assert not p.accepted


# ---------------------------------------------------------------- downgrade (restarts B: keep last)


def test_outgoing_downgrade_refused_until_domaininfo_remove(pair):
    """A knows b.test at TLS_SECURE. Then b.test's server gets an untrusted
    certificate, then loses TLS altogether: A keeps the mail queued with
    `Security level check failed`, until `chasquid-util domaininfo-remove
    b.test`; afterwards a new message goes out in plaintext (PLAIN), and the
    next TLS delivery raises the level again.

    chasquid cannot start without a certificate, so "b.test without TLS" is
    a fake peer on B's address and port while B is stopped."""
    a, b = pair.a, pair.b
    a_to_b(pair)
    wait_for_level(a, "b.test", "outgoing", "TLS_SECURE")
    try:
        # 1. B with a self-signed certificate: TLS_INSECURE < TLS_SECURE.
        b.set_certs({"mx.b.test": mta.self_signed("mx.b.test")})
        b.restart()
        subject1 = f"downgrade-insecure-{uid()}"
        qid1 = mta.submit(a, ["user@b.test"], make_message(subject1, to="user@b.test"))
        outcome = mta.wait_for_attempt(a, qid1, "user@b.test", "failed (temporary)")
        assert "Security level check failed (level:TLS_INSECURE)" in outcome, outcome
        assert_stays_queued(a, qid1, "user@b.test", "Security level check failed (level:TLS_INSECURE)")
        assert not [m for m in b.messages() if subject1.encode() in m]

        # 2. No TLS at all.
        b.stop()
        with FakeSMTPPeer("127.0.0.1", b.smtp_port, name="mx.b.test") as plain:
            subject2 = f"downgrade-plain-{uid()}"
            qid2 = mta.submit(a, ["user@b.test"], make_message(subject2, to="user@b.test"))
            outcome = mta.wait_for_attempt(a, qid2, "user@b.test", "failed (temporary)")
            assert "Security level check failed (level:PLAIN)" in outcome, outcome
            assert_stays_queued(a, qid2, "user@b.test", "Security level check failed (level:PLAIN)")
            assert plain.sessions and not plain.deliveries, plain.transcript_text()
            assert sec_levels(a, "b.test")["outgoing"] == "TLS_SECURE"

            # 3. The admin accepts the downgrade.
            r = a.util("domaininfo-remove", "b.test")
            assert (r.returncode, r.stdout, r.stderr) == (0, b"", b""), r
            rec = sec_levels(a, "b.test")
            assert rec is not None, "domaininfo-remove keeps the file (COMPAT §13)"
            assert (rec["incoming"], rec["outgoing"]) == ("PLAIN", "PLAIN"), rec

            # A new message goes out at once (the queued ones wait for
            # their retry, 1 min at the earliest).
            subject3 = f"downgrade-accepted-{uid()}"
            qid3 = mta.submit(a, ["user@b.test"], make_message(subject3, to="user@b.test"))
            assert mta.wait_for_attempt(a, qid3, "user@b.test", "sent") == "sent"
            d = plain.wait_for_delivery(subject3.encode())
            assert not d.tls and d.rcpts == ["user@b.test"]
            assert sec_levels(a, "b.test")["outgoing"] == "PLAIN"
    finally:
        # 4. B is back with its good certificate.
        b.stop()
        b.set_certs(pair.b_certs())
        b.start()
    a_to_b(pair)
    wait_for_level(a, "b.test", "outgoing", "TLS_SECURE")
