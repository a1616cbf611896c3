"""International mail: a UTF-8 user at an IDN domain, end to end."""

import smtplib
import subprocess

import pytest

import server as S
from server import ChasquidServer

USER_U = "ñandú"
DOMAIN_U = "pingüino.example"
DOMAIN_A = "xn--pingino-q2a.example"


@pytest.fixture(params=[DOMAIN_U, DOMAIN_A], ids=["u-label-dir", "a-label-dir"])
def srv(request):
    server = ChasquidServer()
    # The domain directory may be named in either form (COMPAT.md §2, §8).
    result = subprocess.run(
        [str(S.chasquid_util_bin()), f"-C={server.config_dir}", "user-add",
         f"{USER_U}@{request.param}", "--password=secreto"],
        capture_output=True, timeout=60)
    assert result.returncode == 0, result
    assert (server.config_dir / "domains" / request.param / "users").exists()
    server.start()
    yield server
    server.cleanup()


def message(subject):
    return (f"From: Pingüino <x@remote.example>\r\nTo: {USER_U}@{DOMAIN_U}\r\n"
            f"Subject: {subject} — ¡hola!\r\n\r\nCuerpo en UTF-8: ñandú, 用户.\r\n").encode()


@pytest.mark.parametrize("rcpt", [
    f"{USER_U}@{DOMAIN_U}",            # as typed
    f"ÑANDÚ@{DOMAIN_U}",               # case folds to the same user
    f"{USER_U}@{DOMAIN_A}",            # the domain as A-labels
    f"n\u0303andu\u0301@{DOMAIN_U}",   # decomposed: NFC makes it the same
])
def test_smtputf8_delivery_to_idn_domain(srv, rcpt):
    subject = f"idn-{abs(hash(rcpt))}"
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("smtputf8")
        refused = s.sendmail("x@remote.example", [rcpt], message(subject), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}
    srv.wait_for(lambda: any(subject.encode() in m for m in srv.messages(USER_U)),
                 what=f"delivery to {USER_U}'s Maildir")
    delivered = next(m for m in srv.messages(USER_U) if subject.encode() in m)
    # UTF-8 headers and body pass through untouched.
    assert f"Subject: {subject} — ¡hola!".encode() in delivered
    assert "Cuerpo en UTF-8: ñandú, 用户.".encode() in delivered


def test_a_look_alike_is_an_unknown_user(srv):
    # "nandu" is not "ñandú": PRECIS does not fold the tilde away.
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail("x@remote.example", ["SMTPUTF8"])
        code, text = s.rcpt(f"nandu@{DOMAIN_U}")
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)
        code, text = s.rcpt(f"ñandu@{DOMAIN_U}")
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)


def test_swaks_utf8_submission(srv, tmp_path):
    data = tmp_path / "msg"
    data.write_bytes(message("swaks-idn"))
    out = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{srv.smtp_port}", "--from", "x@remote.example",
         "--to", f"{USER_U}@{DOMAIN_U}", "--data", str(data)],
        capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout.decode(errors="replace")
    srv.wait_for(lambda: any(b"swaks-idn" in m for m in srv.messages(USER_U)), what="swaks delivery")


def test_auth_with_a_utf8_user_at_an_idn_domain(srv):
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, context=ctx, timeout=30) as s:
        s.ehlo("client.test")
        # Another spelling of the same name and domain logs in. (smtplib's
        # login() only takes ASCII, so AUTH PLAIN by hand, in UTF-8.)
        import base64
        token = base64.b64encode(f"\0ÑANDÚ@{DOMAIN_A}\0secreto".encode()).decode()
        code, text = s.docmd("AUTH", "PLAIN " + token)
        assert code == 235, (code, text)


def test_auth_look_alike_fails(srv):
    import base64
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, context=ctx, timeout=30) as s:
        s.ehlo("client.test")
        token = base64.b64encode(f"\0nandu@{DOMAIN_U}\0secreto".encode()).decode()
        code, text = s.docmd("AUTH", "PLAIN " + token)
        assert code == 535, (code, text)
