"""SPF at MAIL FROM, end to end: the daemon sends every DNS query to the test
DNS server (tests/dnsserver/dnsserver.py, through -testing__dns_addr), whose
zone holds one sender domain per SPF outcome.

Contract: COMPAT.md §12.2 (MAIL FROM check 6: SPF only for unauthenticated
clients, only `fail` rejects, `550 5.7.23 SPF check failed: <reason>`),
§12.3 (Received-SPF and Authentication-Results, and the order of the added
headers), §10.1 (SPF_PASS for the post-data hook) and §18 (the mail log's
`failed SPF: <reason>`). The client always connects from 127.0.0.1.
"""

import json
import re
import smtplib
import sys
import time
import uuid

import pytest

import deployed
import server as S
from dnstest import DNSServer
from server import ChasquidServer
from smtpraw import no_verify_context

CLIENT_IP = "127.0.0.1"
PASS_RECORD = f"v=spf1 ip4:{CLIENT_IP} -all"

ZONE = {
    # One sender domain per outcome.
    "fail.test": {"TXT": ["v=spf1 -all"]},
    "pass.test": {"TXT": [PASS_RECORD], "A": ["192.0.2.1"]},
    "softfail.test": {"TXT": ["v=spf1 ~all"]},
    "neutral.test": {"TXT": ["v=spf1 ?all"]},
    "nospf.test": {"TXT": ["google-site-verification=abc123"], "A": ["192.0.2.2"]},
    # "absent.test" is not in the zone: NXDOMAIN, so "none" (RFC 7208 §4.3).
    "permerror.test": {"TXT": ["v=spf1 frobnicate:example.org -all"]},
    "multi.test": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},  # two records: permerror
    "servfail.test": {"_servfail": True, "TXT": [PASS_RECORD]},
    "drop.test": {"_drop": True, "TXT": [PASS_RECORD]},
    # Mechanisms that need more lookups.
    "include.test": {"TXT": ["v=spf1 include:_spf.provider.test -all"]},
    "_spf.provider.test": {"TXT": [f"v=spf1 ip4:192.0.2.0/24 ip4:{CLIENT_IP}/32 -all"]},
    "include-miss.test": {"TXT": ["v=spf1 include:_spf.other.test -all"]},
    "_spf.other.test": {"TXT": ["v=spf1 ip4:192.0.2.7 -all"]},
    "a.test": {"TXT": ["v=spf1 a:relay.example.net -all"]},
    "relay.example.net": {"A": [CLIENT_IP]},
    "a-other.test": {"TXT": ["v=spf1 a:elsewhere.example.net -all"]},
    "elsewhere.example.net": {"A": ["192.0.2.55"]},
    "a-self.test": {"TXT": ["v=spf1 a -all"], "A": [CLIENT_IP]},
    "mx.test": {"TXT": ["v=spf1 mx -all"], "MX": [[10, "mail.mx.test"]]},
    "mail.mx.test": {"A": [CLIENT_IP]},
    # DNS mechanics: a CNAME, a record split in two character-strings
    # (joined without a separator, RFC 7208 §3.3), and an answer that only
    # comes over TCP.
    "spf-alias.test": {"CNAME": "pass.test"},
    "split.test": {"TXT": [[f"v=spf1 ip4:{CLIENT_IP}", " -all"]]},
    "truncated.test": {"_truncate": True, "TXT": [PASS_RECORD]},
}

# Each hook run leaves <envdir>/<subject>.json with its environment and stdin.
HOOK = """#!{python}
import json, os, re, sys
data = sys.stdin.buffer.read()
m = re.search(rb"^Subject: (\\S+)", data, re.M)
name = m.group(1).decode() if m else "no-subject"
with open(os.path.join({envdir!r}, name + ".json"), "w") as f:
    json.dump({{"env": dict(os.environ), "stdin": data.decode("utf-8", "replace")}}, f)
sys.stdout.write("X-Hooked: yes\\n")
"""


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ns():
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture(scope="module")
def srv(ns):
    s = ChasquidServer(flags=[ns.chasquid_flag])
    envdir = s.base / "hook-env"
    envdir.mkdir()
    s.set_hook(HOOK.format(python=deployed.hook_python(), envdir=str(envdir)))
    s.hook_env_dir = envdir
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


# ---------------------------------------------------------------- helpers


def make_message(subject, sender):
    """An RFC 5322 message with LF line endings (bytes)."""
    return (f"From: {sender}\nTo: {S.USER}\nSubject: {subject}\n"
            f"Message-ID: <{uuid.uuid4().hex}@client.test>\n\nSPF test body.\n").encode()


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def new_subject(tag):
    return f"spf-{tag}-{uuid.uuid4().hex[:12]}"


def enhanced(text):
    return text.split()[0] if text.split() else ""


def send_in_session(s, sender, subject):
    """One transaction on an open smtplib session; MAIL must be accepted.
    Returns the original message (LF form)."""
    original = make_message(subject, sender)
    code, text = s.mail(sender)
    assert code == 250, f"MAIL FROM:<{sender}> got {code} {text!r}"
    code, text = s.rcpt(S.USER)
    assert code == 250, (code, text)
    code, text = s.data(crlf(original))
    assert code == 250, (code, text)
    return original


def send_plain(srv, sender, subject, timeout=60):
    """Unauthenticated SMTP on port 25, as another MTA would deliver."""
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=timeout) as s:
        s.ehlo()
        return send_in_session(s, sender, subject)


def delivered_headers(srv, subject, original):
    """The headers the server prepended to the delivered message, as
    [(name, value)] in order; a value keeps its folds ("\\n\\t...")."""
    def look():
        for m in srv.messages():
            if subject.encode() in m:
                return m
        return None
    delivered = srv.wait_for(look, 15, f"message {subject}")
    assert delivered.endswith(original), (
        f"the original message is not intact at the end:\n{delivered!r}")
    added = delivered[: len(delivered) - len(original)].decode("utf-8", "replace")
    return header_fields(added.replace("\r\n", "\n"))


def header_fields(block):
    fields = []
    for line in block.split("\n"):
        if not line:
            continue
        if line[0] in " \t":
            assert fields, f"continuation line first: {block!r}"
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + line)
        else:
            name, _, value = line.partition(":")
            fields.append((name, value.lstrip(" ")))
    return fields


def hook_run(srv, subject):
    path = srv.hook_env_dir / f"{subject}.json"
    srv.wait_for(path.exists, 15, f"hook output for {subject}")
    return json.loads(path.read_text())


def assert_spf_headers(fields, result):
    """Order (§12.3): hook output, Authentication-Results, Received-SPF,
    Received, then the original message. Returns the SPF reason."""
    names = [n for n, _ in fields]
    assert names == ["X-Hooked", "Authentication-Results", "Received-SPF", "Received"], fields
    values = dict(fields)
    m = re.fullmatch(rf"{re.escape(result)} \((.*)\)", values["Received-SPF"])
    assert m, f"Received-SPF: {values['Received-SPF']!r}, want {result} (<reason>)"
    reason = m.group(1)
    ar = values["Authentication-Results"].split("\n")
    assert ar[0] == S.HOSTNAME, ar
    assert len(ar) >= 2 and ar[1] == f"\t;spf={result} ({reason})", ar
    assert all(line.startswith("\t") for line in ar[1:]), ar
    assert sum(";spf=" in line for line in ar) == 1, ar
    assert values["Received"].startswith(f"from client.test ([{CLIENT_IP}])"), values["Received"]
    return reason


def queried(ns, since):
    """(qname, TYPE) pairs the DNS server saw after mark `since`."""
    return [(name, qtype) for _, name, qtype in ns.queries()[since:]]


# ---------------------------------------------------------------- accepted results


# (sender domain, SPF result, queries that must have been made)
ACCEPTED = [
    ("pass.test", "pass", [("pass.test", "TXT")]),
    ("softfail.test", "softfail", [("softfail.test", "TXT")]),
    ("neutral.test", "neutral", [("neutral.test", "TXT")]),
    ("nospf.test", "none", [("nospf.test", "TXT")]),
    ("absent.test", "none", [("absent.test", "TXT")]),
    ("permerror.test", "permerror", [("permerror.test", "TXT")]),
    ("multi.test", "permerror", [("multi.test", "TXT")]),
    ("servfail.test", "temperror", [("servfail.test", "TXT")]),
    ("include.test", "pass", [("include.test", "TXT"), ("_spf.provider.test", "TXT")]),
    ("a.test", "pass", [("a.test", "TXT"), ("relay.example.net", "A")]),
    ("a-self.test", "pass", [("a-self.test", "TXT"), ("a-self.test", "A")]),
    ("mx.test", "pass", [("mx.test", "TXT"), ("mx.test", "MX"), ("mail.mx.test", "A")]),
    ("spf-alias.test", "pass", [("spf-alias.test", "TXT")]),
    ("split.test", "pass", [("split.test", "TXT")]),
    ("truncated.test", "pass", [("truncated.test", "TXT")]),
]


@pytest.mark.parametrize("domain,result,queries", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_spf_result_accepted_with_headers(srv, ns, domain, result, queries):
    sender = f"someone@{domain}"
    subject = new_subject(domain)
    mark = len(ns.queries())
    original = send_plain(srv, sender, subject)

    fields = delivered_headers(srv, subject, original)
    assert_spf_headers(fields, result)

    # The lookups really went to the DNS server.
    seen = queried(ns, mark)
    for q in queries:
        assert q in seen, f"no {q} query; the server saw {seen}"
    if domain == "truncated.test":
        assert ("tcp", "truncated.test", "TXT") in ns.queries()[mark:], ns.queries()[mark:]

    # The post-data hook: SPF_PASS is 1 only for "pass" (§10.1).
    env = hook_run(srv, subject)["env"]
    assert env.get("SPF_PASS") == ("1" if result == "pass" else "0"), env
    assert env.get("MAIL_FROM") == sender and env.get("AUTH_AS") == "", env


def test_dns_timeout_is_temperror_and_mail_from_still_answered(srv, ns):
    """drop.test's server never answers: SPF gives temperror, the mail is
    accepted, and MAIL FROM is answered well within the command timeout."""
    sender = "someone@drop.test"
    subject = new_subject("drop")
    mark = len(ns.queries())
    original = make_message(subject, sender)
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        start = time.monotonic()
        code, text = s.mail(sender)
        elapsed = time.monotonic() - start
        assert code == 250, (code, text)
        assert elapsed < 30, f"MAIL FROM took {elapsed:.1f}s"
        assert s.rcpt(S.USER)[0] == 250
        assert s.data(crlf(original))[0] == 250
    assert_spf_headers(delivered_headers(srv, subject, original), "temperror")
    assert ("drop.test", "TXT") in queried(ns, mark)
    assert hook_run(srv, subject)["env"].get("SPF_PASS") == "0"


# ---------------------------------------------------------------- fail rejects


FAILING = ["fail.test", "include-miss.test", "a-other.test"]


@pytest.mark.parametrize("domain", FAILING)
def test_spf_fail_rejected_at_mail_from(srv, ns, domain):
    sender = f"someone@{domain}"
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        local_port = s.sock.getsockname()[1]
        code, text = s.mail(sender)
        text = text.decode("utf-8", "replace")
        assert (code, enhanced(text)) == (550, "5.7.23"), (code, text)
        assert text.startswith("5.7.23 SPF check failed: "), text
        # The session goes on, and the next MAIL is checked on its own.
        subject = new_subject(f"after-{domain}")
        original = send_in_session(s, "someone@pass.test", subject)
    assert_spf_headers(delivered_headers(srv, subject, original), "pass")

    # §18: "<ip:port> rejected from=<from> - failed SPF: <reason>".
    srv.wait_for(lambda: re.search(
        rf"^\S+ \S+ {re.escape(CLIENT_IP)}:{local_port} rejected from={re.escape(sender)} "
        r"- failed SPF: \S.*$", srv.mail_log(), re.M), what="the failed SPF line in the mail log")


# ---------------------------------------------------------------- not checked


def test_authenticated_submission_is_not_spf_checked(srv, ns):
    """An authenticated user may send with any MAIL FROM, even from a domain
    whose SPF would fail: no check, no Received-SPF (§12.2 check 6)."""
    sender = "someone@fail.test"
    subject = new_subject("auth")
    original = make_message(subject, sender)
    mark = len(ns.queries())
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(S.USER, S.PASSWORD)
        code, text = s.mail(sender)
        assert code == 250, (code, text)
        assert s.rcpt(S.USER)[0] == 250
        assert s.data(crlf(original))[0] == 250
    fields = delivered_headers(srv, subject, original)
    names = [n for n, _ in fields]
    assert "Received-SPF" not in names, fields
    # Neither SPF nor DKIM verification ran: no Authentication-Results.
    assert "Authentication-Results" not in names, fields
    assert names == ["X-Hooked", "Received"], fields
    assert not [q for q in queried(ns, mark) if q[0].endswith("fail.test")], ns.queries()[mark:]
    env = hook_run(srv, subject)["env"]
    assert env.get("SPF_PASS") == "0" and env.get("AUTH_AS") == S.USER, env


def test_null_sender_is_not_spf_checked(srv, ns):
    subject = new_subject("null")
    original = make_message(subject, "MAILER-DAEMON@client.test")
    mark = len(ns.queries())
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        code, text = s.mail("<>")
        assert code == 250, (code, text)
        assert s.rcpt(S.USER)[0] == 250
        assert s.data(crlf(original))[0] == 250
    fields = delivered_headers(srv, subject, original)
    names = [n for n, _ in fields]
    assert "Received-SPF" not in names, fields
    # Authentication-Results may be there for DKIM, but without an spf item.
    for name, value in fields:
        if name == "Authentication-Results":
            assert ";spf=" not in value, value
    assert not [q for q in queried(ns, mark) if q[1] == "TXT"], ns.queries()[mark:]
    env = hook_run(srv, subject)["env"]
    assert env.get("MAIL_FROM") == "<>" and env.get("SPF_PASS") == "0", env


# ---------------------------------------------------------------- details


def test_spf_result_is_per_transaction(srv):
    """Two transactions in one session, each with its own result."""
    subjects = [new_subject("tx1"), new_subject("tx2")]
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.ehlo()
        first = send_in_session(s, "someone@pass.test", subjects[0])
        second = send_in_session(s, "someone@softfail.test", subjects[1])
    assert_spf_headers(delivered_headers(srv, subjects[0], first), "pass")
    assert_spf_headers(delivered_headers(srv, subjects[1], second), "softfail")
    assert hook_run(srv, subjects[0])["env"]["SPF_PASS"] == "1"
    assert hook_run(srv, subjects[1])["env"]["SPF_PASS"] == "0"


def test_hook_stdin_has_authentication_results_with_crlf_folds(srv):
    """§12.3: the Authentication-Results value is built with CRLF breaks, so
    the hook (which gets the internal LF form) sees its folds as CRLF+TAB,
    while every other header is folded with LF+TAB."""
    subject = new_subject("stdin")
    original = send_plain(srv, "someone@pass.test", subject)
    stdin = hook_run(srv, subject)["stdin"]
    assert stdin.startswith(f"Authentication-Results: {S.HOSTNAME}\r\n\t;spf=pass ("), stdin[:300]
    ar_end = stdin.index("\nReceived-SPF: ")
    assert "\r" not in stdin[ar_end:], stdin
    assert re.search(r"\nReceived-SPF: pass \([^\r\n]*\)\nReceived: from client\.test ", stdin), stdin
    assert stdin.endswith(original.decode())
