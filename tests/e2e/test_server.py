"""End-to-end tests of the chasquid daemon with real clients (swaks, msmtp,
openssl s_client, Python's smtplib and raw sockets), on loopback.

Contract: COMPAT.md §2, §10.1, §11.5, §12, §18. The server helper lives in
server.py.
"""

import email
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
import base64
import smtplib
from pathlib import Path

import pytest

import deployed
import server as S
from server import ChasquidServer
from smtpraw import RawSMTP, no_verify_context


# ---------------------------------------------------------------- helpers


def enhanced(text):
    """The enhanced status code at the start of a reply text."""
    return text.split()[0] if text.split() else ""


def plain_b64(user, password, authz=""):
    return base64.b64encode(f"{authz}\0{user}\0{password}".encode()).decode()


def make_message(subject, body, sender="sender@sender.invalid", to=S.USER, extra_headers=""):
    """An RFC 5322 message with LF line endings (bytes)."""
    msg = (
        f"From: {sender}\n"
        f"To: {to}\n"
        f"Subject: {subject}\n"
        f"Message-ID: <{uuid.uuid4().hex}@sender.invalid>\n"
        f"{extra_headers}"
        "\n"
        f"{body}"
    )
    return msg.encode("utf-8")


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def find_message(server, marker, user="user", timeout=15):
    """Waits for a delivered message containing `marker` (bytes)."""
    def look():
        for m in server.messages(user):
            if marker in m:
                return m
        return None
    return server.wait_for(look, timeout, f"message with {marker!r} for {user}")


def split_delivered(delivered, original):
    """Asserts that the delivered message is some prepended headers followed
    by the original message byte for byte; returns the prepended part."""
    assert delivered.endswith(original), (
        f"the original message is not intact at the end of the delivered one:\n"
        f"--- delivered\n{delivered!r}\n--- original\n{original!r}")
    return delivered[: len(delivered) - len(original)]


BODY = (
    "First line of the body.\n"
    ".A line starting with a dot\n"
    "..and one with two dots\n"
    ".\tdot then tab\n"
    "Non-ASCII: Ünïcödé, ñandú, текст, 日本語 ✓\n"
    "\n"
    "Last line.\n"
)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def srv():
    """The shared server: max message 1 MiB, Received limit 5."""
    s = ChasquidServer(max_data_size_mb=1, flags=["-testing__max_received_headers=5"])
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


HOOK_TEMPLATE = """#!{python}
import json, os, sys
data = sys.stdin.buffer.read()
if b"Subject: hook-exit20" in data:
    sys.stdout.write("go away\\n")
    sys.exit(20)
if b"Subject: hook-exit1" in data:
    sys.stdout.write("some noise\\ncome back later\\n")
    sys.exit(1)
if b"Subject: hook-not-headers" in data:
    sys.stdout.write("this is not a header\\n")
    sys.exit(0)
with open({envfile!r}, "w") as f:
    json.dump({{"env": dict(os.environ), "cwd": os.getcwd(),
               "stdin": data.decode("utf-8", "replace")}}, f)
sys.stdout.write("X-Spam: no\\n")
"""


@pytest.fixture(scope="module")
def hook_srv():
    s = ChasquidServer(extra_env={"CQ_TEST_MARKER": "1", "HOME": "/root"})
    envfile = s.base / "hook-env.json"
    s.set_hook(HOOK_TEMPLATE.format(python=deployed.hook_python(), envfile=str(envfile)))
    s.hook_env_file = envfile
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


# ---------------------------------------------------------------- swaks, plain SMTP


def swaks(port, to, data_file, *extra, sender="sender@sender.invalid"):
    """swaks ends the data with CRLF.CRLF itself, so the file given here
    must not end in a newline (see write_swaks_data)."""
    p = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "client.test",
         "--from", sender, "--to", to, "--data", "@" + str(data_file), *extra],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


def write_swaks_data(tmp_path, message):
    assert message.endswith(b"\n")
    path = tmp_path / "msg.eml"
    path.write_bytes(message[:-1])
    return path


def test_swaks_plain_smtp_delivery_intact(srv, tmp_path):
    subject = f"swaks-{uuid.uuid4().hex}"
    original = make_message(subject, BODY)
    data = write_swaks_data(tmp_path, original)
    rc, out = swaks(srv.smtp_port, S.USER, data)
    assert rc == 0, out
    assert re.search(r"^<[-~]  250 2\.0\.0", out, re.M), out

    delivered = find_message(srv, subject.encode())
    assert b"\r" not in delivered  # maildir-deliver stores LF
    added = split_delivered(delivered, original)
    headers = email.message_from_bytes(added + b"\n")
    received = headers.get_all("Received")
    assert received and len(received) == 1, added
    r = received[0]
    assert r.startswith("from client.test ([127.0.0.1])"), r
    assert "by mail.example.com (chasquid) with ESMTP" in r, r
    assert "with ESMTPS" not in r and "with ESMTPA" not in r, r
    assert "over SMTP, plain text!" in r, r
    assert 'envelope from "sender@sender.invalid"' in r, r
    # Received folds with LF+TAB; the date follows "; ".
    assert re.search(rb"\n\t; \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\n", added), added


@pytest.mark.parametrize("rcpt", ["info@example.com", "U.ser+tag@example.com", "postmaster@example.com"])
def test_swaks_alias_and_suffix_arrive_to_user(srv, tmp_path, rcpt):
    subject = f"alias-{uuid.uuid4().hex}"
    original = make_message(subject, "hello\n", to=rcpt)
    data = write_swaks_data(tmp_path, original)
    rc, out = swaks(srv.smtp_port, rcpt, data)
    assert rc == 0, out
    delivered = find_message(srv, subject.encode())
    split_delivered(delivered, original)


def test_smtplib_8bitmime_utf8_body(srv):
    subject = f"8bit-{uuid.uuid4().hex}"
    original = make_message(subject, BODY, extra_headers="Content-Type: text/plain; charset=utf-8\n"
                            "Content-Transfer-Encoding: 8bit\n")
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=20) as s:
        s.ehlo()
        assert s.has_extn("8bitmime")
        refused = s.sendmail("sender@sender.invalid", [S.USER], crlf(original),
                             mail_options=["BODY=8BITMIME"])
        assert refused == {}
    delivered = find_message(srv, subject.encode())
    split_delivered(delivered, original)
    assert "日本語 ✓".encode() in delivered


# ---------------------------------------------------------------- msmtp, submission


def msmtp(server, tmp_path, rcpts, message, user=S.USER, password=S.PASSWORD):
    conf = tmp_path / "msmtprc"
    conf.write_text(
        "defaults\n"
        "account test\n"
        "host 127.0.0.1\n"
        f"port {server.submission_port}\n"
        "domain client.test\n"
        "tls on\n"
        "tls_starttls on\n"
        "tls_certcheck off\n"
        "auth plain\n"
        f"user {user}\n"
        f"password {password}\n"
        f"from {user}\n"
        "account default : test\n")
    conf.chmod(0o600)
    p = subprocess.run(["msmtp", "-C", str(conf), "-v", *rcpts], input=message,
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


def test_msmtp_submission_local(srv, tmp_path):
    subject = f"msmtp-local-{uuid.uuid4().hex}"
    original = make_message(subject, BODY, sender=S.USER)
    rc, out = msmtp(srv, tmp_path, [S.USER], crlf(original))
    assert rc == 0, out
    assert "250 2.0.0" in out, out
    delivered = find_message(srv, subject.encode())
    added = split_delivered(delivered, original)
    r = email.message_from_bytes(added + b"\n").get_all("Received")[0]
    # Authenticated: the client IP is hidden. (msmtp sends "127.0.0.1" as
    # SNI, which then names the server in "by", as Go's TLS stack would.)
    assert r.split("\n")[0].strip() == "from client.test", r
    assert "with ESMTPSA" in r, r
    # COMPAT §12.3: the suite on its own line, read from our ServerHello.
    assert re.search(r"\n\ttls TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256|ECDHE_\w+)\n", r), r
    assert re.search(r"over submission, TLS-1\.[23]", r), r


def test_msmtp_submission_remote_stays_queued(srv, tmp_path):
    # The domain exists (an A record, no MX), but its server refuses
    # connections (the harness's outgoing port is 1): a temporary failure.
    domain = f"remote-{uuid.uuid4().hex[:8]}.example"
    S.shared_dns().update(domain, {"A": ["127.0.0.1"]})
    rcpt = f"someone@{domain}"
    original = make_message("msmtp remote", "to a remote domain\n", sender=S.USER, to=rcpt)
    rc, out = msmtp(srv, tmp_path, [rcpt], crlf(original))
    assert rc == 0, out
    assert "250 2.0.0" in out, out
    m = srv.wait_for(lambda: re.search(
        rf"^\S+ \S+ (\S+) from={re.escape(S.USER)} queued ip=127\.0\.0\.1:\d+ to=\[{re.escape(rcpt)}\]$",
        srv.mail_log(), re.M), what="queued line")
    qid = m.group(1)
    srv.wait_for_log(f"{qid} from={S.USER} to={rcpt} failed (temporary): ")
    time.sleep(0.3)
    assert f"m:{qid}" in srv.queue_files(), srv.queue_files()
    assert f"{qid} from={S.USER} all done" not in srv.mail_log()


# ---------------------------------------------------------------- smtplib


def test_smtplib_implicit_tls_auth_plain_and_login(srv):
    for mech in ("PLAIN", "LOGIN"):
        subject = f"smtps-{mech}-{uuid.uuid4().hex}"
        original = make_message(subject, "over implicit TLS\n", sender=S.USER)
        with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, local_hostname="client.test",
                              context=no_verify_context(), timeout=20) as s:
            s.ehlo()
            assert "PLAIN" in s.esmtp_features.get("auth", "").upper().split()
            s.user, s.password = S.USER, S.PASSWORD
            auth_fn = s.auth_plain if mech == "PLAIN" else s.auth_login
            code, text = s.auth(mech, auth_fn)
            assert code == 235 and text.startswith(b"2.7.0"), (mech, code, text)
            assert s.sendmail(S.USER, [S.USER], crlf(original)) == {}
        delivered = find_message(srv, subject.encode())
        added = split_delivered(delivered, original)
        assert b"over submission+TLS, TLS-1." in added, added
        assert b"with ESMTPSA" in added, added


def test_smtplib_starttls_submission(srv):
    subject = f"starttls-{uuid.uuid4().hex}"
    original = make_message(subject, "via STARTTLS\n", sender=S.USER)
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=20) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "AUTH must never be offered in plaintext"
        s.starttls(context=no_verify_context())
        s.ehlo()
        assert not s.has_extn("starttls")
        s.login(S.USER, S.PASSWORD)
        assert s.sendmail(S.USER, ["info@example.com"], crlf(original)) == {}
    find_message(srv, subject.encode())


def test_ehlo_reply_order(srv):
    c = RawSMTP(srv.smtp_port)
    try:
        code, text = c.reply()
        assert code == 220 and text.startswith("mail.example.com ") and text.endswith("ESMTP chasquid"), text
        code, text = c.cmd("EHLO client.test")
        lines = text.split("\n")
        assert code == 250
        assert lines[0].startswith("mail.example.com")
        assert lines[1:] == ["8BITMIME", "PIPELINING", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                             f"SIZE {1 * 1048576}", "STARTTLS", "HELP"], lines
        c.starttls()
        code, text = c.cmd("EHLO client.test")
        lines = text.split("\n")
        assert lines[5] == "SIZE 1048576" and "STARTTLS" not in lines, lines
        assert any(l.upper().startswith("AUTH ") and "PLAIN" in l.upper().split() for l in lines), lines
        assert lines[-1] == "HELP"
    finally:
        c.close()


# ---------------------------------------------------------------- refusals (§12.2)


def session(port, ehlo=True, tls=False):
    c = RawSMTP(port, tls=tls)
    code, _ = c.reply()
    assert code == 220
    if ehlo:
        code, _ = c.cmd("EHLO client.test")
        assert code == 250
    return c


def test_unknown_local_user_550_5_1_1(srv):
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        code, text = c.cmd("RCPT TO:<nobody@example.com>")
        assert (code, enhanced(text)) == (550, "5.1.1"), text
        # The receive-only user exists (it can receive mail).
        code, text = c.cmd(f"RCPT TO:<{S.RECEIVE_ONLY}>")
        assert (code, enhanced(text)) == (250, "2.1.5"), text
    finally:
        c.close()


def test_relay_without_auth_503_5_7_1(srv):
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<user@example.com>")[0] == 250
        code, text = c.cmd("RCPT TO:<someone@remote.invalid>")
        assert (code, enhanced(text)) == (503, "5.7.1"), text
    finally:
        c.close()


@pytest.mark.parametrize("port_name", ["smtp_port", "submission_port"])
def test_auth_before_starttls_503_5_7_10(srv, port_name):
    with smtplib.SMTP("127.0.0.1", getattr(srv, port_name), local_hostname="client.test", timeout=20) as s:
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN " + plain_b64(S.USER, S.PASSWORD))
        assert (code, enhanced(text.decode())) == (503, "5.7.10"), (code, text)


def test_wrong_password_535_5_7_8(srv):
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=20) as s:
        s.starttls(context=no_verify_context())
        s.ehlo()
        code, text = s.docmd("AUTH", "PLAIN " + plain_b64(S.USER, "wrong"))
        assert (code, enhanced(text.decode())) == (535, "5.7.8"), (code, text)
        # The receive-only user can never authenticate.
        code, text = s.docmd("AUTH", "PLAIN " + plain_b64(S.RECEIVE_ONLY, ""))
        assert (code, enhanced(text.decode())) == (535, "5.7.8"), (code, text)


def test_auth_variants(srv):
    c = session(srv.submission_port)
    try:
        c.starttls()
        assert c.cmd("EHLO client.test")[0] == 250
        # Unknown mechanism.
        code, text = c.cmd("AUTH CRAM-MD5")
        assert (code, enhanced(text)) == (534, "5.7.9"), text
        # Bad base64.
        code, text = c.cmd("AUTH PLAIN !!!notbase64")
        assert (code, enhanced(text)) == (501, "5.5.2"), text
    finally:
        c.close()
    c = session(srv.submission_port)
    try:
        c.starttls()
        assert c.cmd("EHLO client.test")[0] == 250
        # Mechanism names are case-insensitive (§0); PLAIN after a 334 challenge.
        code, text = c.cmd("auth plain")
        assert code == 334, text
        code, text = c.cmd(plain_b64(S.USER, S.PASSWORD))
        assert (code, enhanced(text)) == (235, "2.7.0"), text
        code, text = c.cmd("AUTH PLAIN " + plain_b64(S.USER, S.PASSWORD))
        assert (code, enhanced(text)) == (503, "5.5.1"), text
    finally:
        c.close()


@pytest.mark.parametrize("tls", [False, True])
def test_mail_on_submission_without_auth_550_5_7_9(srv, tls):
    c = session(srv.submission_port)
    try:
        if tls:
            c.starttls()
            assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("MAIL FROM:<user@example.com>")
        assert (code, enhanced(text)) == (550, "5.7.9"), text
    finally:
        c.close()


def test_mail_on_implicit_tls_without_auth_550_5_7_9(srv):
    c = session(srv.tls_port, tls=True)
    try:
        code, text = c.cmd("MAIL FROM:<user@example.com>")
        assert (code, enhanced(text)) == (550, "5.7.9"), text
    finally:
        c.close()


def test_oversized_message_552_5_3_4_session_usable(srv):
    big = make_message("too big", ("x" * 1023 + "\n") * 2048)  # 2 MiB body
    assert len(big) > 2 * 1024 * 1024
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("sender@sender.invalid", [S.USER], crlf(big))
        assert e.value.smtp_code == 552, e.value
        assert enhanced(e.value.smtp_error.decode()) == "5.3.4", e.value
        # Still usable.
        assert s.noop()[0] == 250
        subject = f"after-big-{uuid.uuid4().hex}"
        small = make_message(subject, "small one\n")
        assert s.sendmail("sender@sender.invalid", [S.USER], crlf(small)) == {}
    find_message(srv, subject.encode())


def test_too_many_received_headers_554_5_4_6(srv):
    def received(n):
        return "".join(f"Received: from hop{i}.invalid by hop{i + 1}.invalid; "
                       "Mon, 02 Jan 2006 15:04:05 -0700\n" for i in range(n))
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("sender@sender.invalid", [S.USER],
                       crlf(make_message("loop", "x\n", extra_headers=received(6))))
        assert e.value.smtp_code == 554, e.value
        assert enhanced(e.value.smtp_error.decode()) == "5.4.6", e.value
        # Exactly the limit is fine.
        subject = f"five-hops-{uuid.uuid4().hex}"
        assert s.sendmail("sender@sender.invalid", [S.USER],
                          crlf(make_message(subject, "x\n", extra_headers=received(5)))) == {}
    find_message(srv, subject.encode())


def test_bare_lf_in_data_521_and_close(srv):
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: smuggle\r\n\r\nfirst\nsecond\r\n.\r\n")
        code, text = c.reply()
        assert (code, enhanced(text)) == (521, "5.5.2"), text
        c.assert_closed()
    finally:
        c.close()


def test_bare_cr_in_data_521_and_close(srv):
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: smuggle\r\n\r\nfirst\rsecond\r\n.\r\n")
        code, text = c.reply()
        assert (code, enhanced(text)) == (521, "5.5.2"), text
        c.assert_closed()
    finally:
        c.close()


def test_vrfy_expn_502(srv):
    c = session(srv.smtp_port)
    try:
        # Two errors: still below the budget (the third would be a 421).
        for verb in ("VRFY user@example.com", "EXPN info@example.com"):
            code, text = c.cmd(verb)
            assert (code, enhanced(text)) == (502, "5.5.1"), (verb, text)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


def test_http_get_502_5_7_0_and_close(srv):
    c = session(srv.smtp_port, ehlo=False)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        code, text = c.reply()
        assert (code, enhanced(text)) == (502, "5.7.0"), text
        c.assert_closed()
    finally:
        c.close()
    srv.wait_for(lambda: f"SMTP.Conn 127.0.0.1:{c.local_port}: error: http command, closing connection"
                 in srv.stderr(), what="http command line in the daemon log")


def test_third_error_is_421_and_close(srv):
    c = session(srv.smtp_port)
    try:
        code, text = c.cmd("FOOBAR1")
        assert (code, enhanced(text)) == (500, "5.5.1"), text
        code, text = c.cmd("RCPT TO:<user@example.com>")  # before MAIL
        assert (code, enhanced(text)) == (503, "5.5.1"), text
        code, text = c.cmd("FOOBAR3")
        assert (code, enhanced(text)) == (421, "4.5.0"), text
        c.assert_closed()
    finally:
        c.close()
    log = srv.wait_for(lambda: srv.stderr() if f"SMTP.Conn 127.0.0.1:{c.local_port}: error: too many errors, "
                       "breaking connection" in srv.stderr() else None, what="too many errors line")
    # Unknown verbs are logged Go-quoted and truncated to 6 characters.
    assert f'SMTP.Conn 127.0.0.1:{c.local_port}: error: unknown<\\"FOOBAR\\">' in log or \
        f'SMTP.Conn 127.0.0.1:{c.local_port}: error: unknown<"FOOBAR">' in log, log


def test_long_command_line_554_and_close(srv):
    c = session(srv.smtp_port)
    try:
        # Exactly 1000 bytes (without CRLF) is fine.
        line = "NOOP " + "a" * 995
        assert len(line) == 1000
        code, text = c.cmd(line)
        assert code == 250, text
        line = "NOOP " + "a" * 996
        code, text = c.cmd(line)
        assert code == 554, text
        assert text.startswith("error reading command"), text
        c.assert_closed()
    finally:
        c.close()


def test_misc_commands(srv):
    c = session(srv.smtp_port, ehlo=False)
    try:
        assert c.cmd("EHLO")[0] == 501
        assert c.cmd("helo client.test")[0] == 250
        code, text = c.cmd("DATA")
        assert (code, enhanced(text)) == (503, "5.5.1"), text
        c.close()
        c = session(srv.smtp_port)
        code, text = c.cmd("HELP")
        assert (code, enhanced(text)) == (214, "2.0.0"), text
        code, text = c.cmd("NOOP")
        assert (code, enhanced(text)) == (250, "2.0.0"), text
        assert c.cmd("RSET")[0] == 250
        code, text = c.cmd("MAIL TO:<x@y>")
        assert (code, enhanced(text)) == (500, "5.5.2"), text
        code, text = c.cmd("MAIL FROM:<nodomain>")
        assert (code, enhanced(text)) == (501, "5.1.8"), text
        code, text = c.cmd("QUIT")
        assert (code, enhanced(text)) == (221, "2.0.0"), text
        c.assert_closed()
    finally:
        c.close()


# ---------------------------------------------------------------- post-data hook (§10.1)


def test_hook_adds_header_and_env(hook_srv):
    subject = f"hook-ok-{uuid.uuid4().hex}"
    original = make_message(subject, "hooked\n", sender=S.USER)
    if hook_srv.hook_env_file.exists():
        hook_srv.hook_env_file.unlink()
    with smtplib.SMTP("127.0.0.1", hook_srv.submission_port, local_hostname="client.test", timeout=20) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(S.USER, S.PASSWORD)
        local_port = s.sock.getsockname()[1]
        assert s.sendmail(S.USER, [S.USER, "info@example.com"], crlf(original)) == {}
    # Delivered twice (user, and info -> user); both have the header on top.
    delivered = find_message(hook_srv, subject.encode())
    assert delivered.startswith(b"X-Spam: no\n"), delivered[:200]
    added = split_delivered(delivered, original)
    assert added.index(b"X-Spam: no\n") < added.index(b"Received: ")

    dump = json.loads(hook_srv.hook_env_file.read_text())
    env = dump["env"]
    assert env.get("REMOTE_ADDR") == f"127.0.0.1:{local_port}", env
    assert env.get("MAIL_FROM") == S.USER, env
    assert env.get("RCPT_TO") == f"{S.USER} info@example.com", env
    assert env.get("AUTH_AS") == S.USER, env
    assert env.get("ON_TLS") == "1", env
    assert env.get("EHLO_DOMAIN") == "client.test", env
    assert env.get("EHLO_DOMAIN_RAW") == "client.test", env
    assert env.get("FROM_LOCAL_DOMAIN") == "1", env
    assert env.get("SPF_PASS") == "0", env
    assert env.get("PWD") == str(hook_srv.config_dir), env
    assert dump["cwd"] == str(hook_srv.config_dir.resolve()), dump["cwd"]
    assert "PATH" in env
    allowed = {"USER", "SHELL", "PATH", "PWD", "REMOTE_ADDR", "EHLO_DOMAIN", "EHLO_DOMAIN_RAW",
               "MAIL_FROM", "RCPT_TO", "AUTH_AS", "ON_TLS", "SPF_PASS", "FROM_LOCAL_DOMAIN"}
    # Python itself may add LC_CTYPE when coercing the C locale.
    extra = set(env) - allowed - {"LC_CTYPE"}
    assert not extra, f"unexpected variables in the hook environment: {sorted(extra)}"
    assert "HOME" not in env and "CQ_TEST_MARKER" not in env
    # Stdin: the LF form of the message with the trace headers added.
    stdin = dump["stdin"]
    assert "\r" not in stdin
    assert stdin.startswith("Received: from client.test\n"), stdin[:200]
    assert stdin.endswith(original.decode())


def test_hook_unauthenticated_env(hook_srv):
    original = make_message(f"hook-plain-{uuid.uuid4().hex}", "x\n")
    with smtplib.SMTP("127.0.0.1", hook_srv.smtp_port, local_hostname="weird!host", timeout=20) as s:
        assert s.sendmail("<>", [S.USER], crlf(original)) == {}
    env = json.loads(hook_srv.hook_env_file.read_text())["env"]
    assert env.get("MAIL_FROM") == "<>", env
    assert env.get("AUTH_AS") == "", env
    assert env.get("ON_TLS") == "0", env
    assert env.get("EHLO_DOMAIN") == "weirdhost", env
    assert env.get("EHLO_DOMAIN_RAW") == "weird!host", env
    assert env.get("FROM_LOCAL_DOMAIN") == "1", env


def test_hook_exit20_554(hook_srv):
    with smtplib.SMTP("127.0.0.1", hook_srv.smtp_port, local_hostname="client.test", timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("sender@sender.invalid", [S.USER], crlf(make_message("hook-exit20", "x\n")))
    assert e.value.smtp_code == 554, e.value
    assert e.value.smtp_error.decode().strip() == "go away", e.value
    hook_srv.wait_for(lambda: re.search(
        r"127\.0\.0\.1:\d+ rejected from=sender@sender\.invalid to=\[user@example\.com\] - go away$",
        hook_srv.mail_log(), re.M), what="rejected line for the hook")


def test_hook_exit1_451(hook_srv):
    with smtplib.SMTP("127.0.0.1", hook_srv.smtp_port, local_hostname="client.test", timeout=20) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("sender@sender.invalid", [S.USER], crlf(make_message("hook-exit1", "x\n")))
    assert e.value.smtp_code == 451, e.value
    assert e.value.smtp_error.decode().strip() == "come back later", e.value


def test_hook_output_not_headers_discarded(hook_srv):
    subject = f"hook-not-headers-{uuid.uuid4().hex}"
    original = make_message(subject, "x\n")
    with smtplib.SMTP("127.0.0.1", hook_srv.smtp_port, local_hostname="client.test", timeout=20) as s:
        assert s.sendmail("sender@sender.invalid", [S.USER], crlf(original)) == {}
    delivered = find_message(hook_srv, subject.encode())
    assert b"this is not a header" not in delivered
    split_delivered(delivered, original)


# ---------------------------------------------------------------- TLS


def test_starttls_injection_ignored(srv):
    c = session(srv.smtp_port)
    try:
        c.send(b"STARTTLS\r\nRSET\r\n")
        code, text = c.reply()
        assert code == 220, text
        assert c.buf == b"", f"server answered the injected command in plaintext: {c.buf!r}"
        c.sock = no_verify_context().wrap_socket(c.sock)
        code, text = c.cmd("EHLO client.test")
        assert code == 250
        lines = text.split("\n")
        assert len(lines) > 1 and lines[0].startswith("mail.example.com") and "8BITMIME" in lines, (
            f"first reply over TLS is not the EHLO's (injected RSET answered?): {text!r}")
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()


def s_client_subject(port, *args):
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    out = p.stdout.decode("utf-8", "replace")
    m = re.search(r"^subject=\s*/?CN\s*=\s*([^\s,/]+)", out, re.M)
    assert m, out + p.stderr.decode("utf-8", "replace")
    return m.group(1)


def test_sni_certificates(srv):
    assert s_client_subject(srv.tls_port, "-servername", "other.example.org") == "other.example.org"
    assert s_client_subject(srv.tls_port, "-servername", "mail.example.com") == "mail.example.com"
    # No SNI: the first certificate loaded (lexical order of certs/).
    assert s_client_subject(srv.tls_port, "-noservername") == "mail.example.com"
    # STARTTLS on the SMTP port too.
    assert s_client_subject(srv.smtp_port, "-starttls", "smtp", "-servername",
                            "other.example.org") == "other.example.org"


def test_sni_name_used_in_greeting_and_received(srv):
    c = RawSMTP(srv.tls_port, tls=True, server_hostname="other.example.org")
    try:
        code, text = c.reply()
        assert code == 220 and text.startswith("other.example.org "), text
        code, text = c.cmd("EHLO client.test")
        assert text.split("\n")[0].startswith("other.example.org"), text
    finally:
        c.close()


# ---------------------------------------------------------------- durability


FAILING_MDA = "#!/bin/sh\ncat >/dev/null\nexit 75\n"


def test_durability_kill9_and_restart(tmp_path):
    s = ChasquidServer()
    try:
        failing = s.base / "failing-mda"
        failing.write_text(FAILING_MDA)
        failing.chmod(0o755)
        s.write_conf(mda_bin=str(failing))
        s.start()
        n = 20
        subjects = [f"durable-{i}-{uuid.uuid4().hex}" for i in range(n)]
        with smtplib.SMTP_SSL("127.0.0.1", s.tls_port, local_hostname="client.test",
                              context=no_verify_context(), timeout=30) as c:
            c.login(S.USER, S.PASSWORD)
            for subj in subjects:
                code, _ = c.docmd("MAIL", f"FROM:<{S.USER}>")
                assert code == 250
                assert c.docmd("RCPT", f"TO:<{S.USER}>")[0] == 250
                code, text = c.data(crlf(make_message(subj, f"message {subj}\n", sender=S.USER)))
                assert code == 250, text
        ids = s.wait_for(lambda: (lambda m: m if len(m) == n else None)(re.findall(
            rf"^\S+ \S+ (\S+) from={re.escape(S.USER)} queued ", s.mail_log(), re.M)), what="20 queued lines")
        s.kill9()
        files = set(s.queue_files())
        for qid in ids:
            assert f"m:{qid}" in files and f"d:{qid}" in files, (qid, sorted(files))
        assert s.messages() == []

        s.write_conf()  # the working maildir-deliver
        s.start()
        msgs = s.wait_for_messages(n, timeout=60)
        got = sorted(re.search(rb"^Subject: (\S+)$", m, re.M).group(1).decode() for m in msgs)
        assert got == sorted(subjects)
        for qid in ids:
            s.wait_for_log(f"{qid} from={S.USER} all done", timeout=30)
        s.wait_for(lambda: not [f for f in s.queue_files() if f.startswith(("m:", "d:"))],
                   what="empty queue")
        assert len(s.messages()) == n
    finally:
        s.cleanup()


# ---------------------------------------------------------------- logs


TS = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}"


def test_mail_log_lines(srv):
    log_start = len(srv.mail_log())
    subject = f"log-{uuid.uuid4().hex}"
    with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, local_hostname="client.test",
                          context=no_verify_context(), timeout=20) as c:
        c.login(S.USER, S.PASSWORD)
        port = c.sock.getsockname()[1]
        assert c.sendmail(S.USER, ["info@example.com"], crlf(make_message(subject, "x\n"))) == {}
    find_message(srv, subject.encode())
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=20) as c:
        c.ehlo()
        rport = c.sock.getsockname()[1]
        c.docmd("MAIL", "FROM:<sender@sender.invalid>")
        code, _ = c.docmd("RCPT", "TO:<nobody@example.com>")
        assert code == 550
        code, _ = c.docmd("RCPT", "TO:<someone@remote.invalid>")
        assert code == 503
    srv.wait_for(lambda: srv.mail_log()[log_start:].count("rejected") >= 2, what="rejected lines")

    def all_lines():
        log = srv.mail_log()[log_start:]
        if re.search(r" all done$", log, re.M):
            return log
        return None
    log = srv.wait_for(all_lines, what="all done")
    assert re.search(rf"^{TS} 127\.0\.0\.1:{port} auth succeeded for user@example\.com$", log, re.M), log
    m = re.search(rf"^{TS} (\S+) from=user@example\.com queued ip=127\.0\.0\.1:{port} "
                  r"to=\[info@example\.com\]$", log, re.M)
    assert m, log
    qid = m.group(1)
    assert re.fullmatch(r"[A-Za-z0-9_-]{11}", qid), qid
    assert re.search(rf"^{TS} {qid} from=user@example\.com to=user@example\.com sent$", log, re.M), log
    assert re.search(rf"^{TS} {qid} from=user@example\.com all done$", log, re.M), log
    assert re.search(rf"^{TS} 127\.0\.0\.1:{rport} rejected from=sender@sender\.invalid "
                     r"to=\[nobody@example\.com\] - local user does not exist$", log, re.M), log
    assert re.search(rf"^{TS} 127\.0\.0\.1:{rport} rejected from=sender@sender\.invalid "
                     r"to=\[someone@remote\.invalid\] - relay not allowed$", log, re.M), log
    assert re.search(rf"^{TS} daemon listening on 127\.0\.0\.1:{srv.smtp_port}$", srv.mail_log(), re.M)


def test_auth_failed_mail_log(srv):
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=20) as s:
        s.starttls(context=no_verify_context())
        s.ehlo()
        port = s.sock.getsockname()[1]
        assert s.docmd("AUTH", "PLAIN " + plain_b64(S.USER, "wrong"))[0] == 535
    srv.wait_for(lambda: re.search(rf"^{TS} 127\.0\.0\.1:{port} auth failed for user@example\.com$",
                                   srv.mail_log(), re.M), what="auth failed line")
    srv.wait_for(lambda: re.search(rf"SMTP\.Conn 127\.0\.0\.1:{port}: error: AUTH failed: 535  5\.7\.8 ",
                                   srv.stderr()), what="AUTH failed fail2ban line")


def test_fail2ban_rcpt_line(srv):
    c = session(srv.smtp_port)
    try:
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        assert c.cmd("RCPT TO:<nobody@example.com>")[0] == 550
    finally:
        c.close()
    line = srv.wait_for(lambda: re.search(
        rf"^.*SMTP\.Conn 127\.0\.0\.1:{c.local_port}: error: RCPT failed: 550  5\.1\.1 .*$",
        srv.stderr(), re.M), what="fail2ban RCPT line")
    fail2ban = re.compile(r"SMTP.Conn 127\.0\.0\.1:\d+: error:.*((AUTH|MAIL|RCPT|DATA) failed|"
                          r"Unknown command|too many errors|http command)")
    assert fail2ban.search(line.group(0)), line.group(0)


# ---------------------------------------------------------------- chasquid-util and flags


def test_aliases_resolve_against_daemon(srv):
    p = S.run_bin([S.chasquid_util_bin(), f"-C={srv.config_dir}", "aliases-resolve", "info@example.com"])
    assert p.returncode == 0, p
    assert p.stdout.decode() == "(email)  user@example.com\n", p.stdout


def test_version_flag():
    p = S.run_bin([S.chasquid_bin(), "-version"])
    assert p.returncode == 0, p
    out = p.stdout.decode() + p.stderr.decode()
    assert re.fullmatch(r"chasquid \S+ \(source date: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} "
                        r"[+-]\d{4} \S+\)\n", out), out


def test_unknown_flag_exits_2():
    p = S.run_bin([S.chasquid_bin(), "-no_such_flag"])
    assert p.returncode == 2, p
    assert b"flag provided but not defined: -no_such_flag" in p.stderr, p.stderr


def test_broken_config_exits_1(tmp_path):
    s = ChasquidServer(base=tmp_path / "b")
    conf = s.config_dir / "chasquid.conf"
    text = conf.read_text().splitlines()
    text.insert(2, 'max_data_size_mb: "lots"')
    conf.write_text("\n".join(text) + "\n")
    p = S.run_bin([S.chasquid_bin(), f"-config_dir={s.config_dir}"])
    err = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1, (p.returncode, err)
    assert "Error loading config:" in err, err
    assert str(conf) in err and "line 3" in err, err
