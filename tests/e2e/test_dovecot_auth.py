"""Dovecot as the fallback users database (COMPAT.md §14), against the real
Dovecot (dovecot.py) started on private sockets.

    our daemon: example.com, users `user` (secret) and `recv` (receive only)
    Dovecot:    dove@example.com (dovepass), and user@example.com with a
                different password (dovecot-side), to show which one wins.

Skipped without Dovecot or root, except in CI, where that fails.
"""

import os
import smtplib

import pytest

import dovecot as DV
import server as S
from server import ChasquidServer
from smtpraw import no_verify_context

ok, why = DV.available()
pytestmark = pytest.mark.skipif(not ok and not os.environ.get("CI"), reason=why)

DOVE = "dove@example.com"
DOVE_PASSWORD = "dovepass"


@pytest.fixture(scope="module")
def dv():
    d = DV.Dovecot(users={DOVE: DOVE_PASSWORD, S.USER: "dovecot-side"})
    d.start()
    yield d
    d.cleanup()


@pytest.fixture(scope="module")
def srv(dv):
    s = ChasquidServer(extra_conf=(
        "dovecot_auth: true\n"
        f'dovecot_userdb_path: "{dv.userdb_socket}"\n'
        f'dovecot_client_path: "{dv.client_socket}"\n'))
    s.start()
    yield s
    s.cleanup()


def login(srv, user, password):
    """(code, text) of AUTH PLAIN on submission after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", srv.submission_port, timeout=30) as c:
        c.ehlo("client.test")
        c.starttls(context=no_verify_context())
        c.ehlo("client.test")
        try:
            c.login(user, password)
            return 235, ""
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code, e.smtp_error.decode()
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode()


def rcpt(srv, address):
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        c.mail("sender@sender.invalid")
        code, text = c.rcpt(address)
        return code, text.decode()


def test_startup_names_the_fallback(srv, dv):
    assert f'Fallback authenticator: DovecotAuth("{dv.userdb_socket}", "{dv.client_socket}")' in srv.stderr()


def test_a_dovecot_user_logs_in_and_a_wrong_password_does_not(srv):
    assert login(srv, DOVE, DOVE_PASSWORD) == (235, "")
    code, text = login(srv, DOVE, "nope")
    assert (code, text) == (535, "5.7.8 Incorrect user or password")
    assert "auth succeeded for dove@example.com" in srv.mail_log()
    assert "auth failed for dove@example.com" in srv.mail_log()


def test_our_database_is_asked_first(srv):
    """Our own user logs in with our password. (Dovecot's password for the
    same name also works, as in chasquid: Dovecot is asked when ours says no.)"""
    assert login(srv, S.USER, S.PASSWORD) == (235, "")
    assert login(srv, S.USER, "dovecot-side") == (235, "")


def test_a_dovecot_only_user_exists_at_rcpt(srv):
    assert rcpt(srv, DOVE) == (250, "2.1.5 You have an eerie feeling...")
    assert rcpt(srv, "dove+tag@example.com") == (250, "2.1.5 You have an eerie feeling...")
    code, text = rcpt(srv, "nobody@example.com")
    assert (code, text) == (550, "5.1.1 Destination address is unknown (user does not exist)")


def test_dovecot_down_is_temporary_never_unknown(dv):
    """Dovecot stopped: an unknown address is 451 (try later), a Dovecot
    user's login is 454; our own users are unaffected. Started again, it
    answers again without restarting chasquid."""
    s = ChasquidServer(extra_conf=(
        "dovecot_auth: true\n"
        f'dovecot_userdb_path: "{dv.userdb_socket}"\n'
        f'dovecot_client_path: "{dv.client_socket}"\n'))
    try:
        dv.stop()
        s.start()
        assert "Warning: Dovecot auth is not responding" in s.stderr()
        assert rcpt(s, DOVE) == (451, "4.4.3 Temporary error checking address")
        assert login(s, DOVE, DOVE_PASSWORD) == (454, "4.7.0 Temporary authentication failure")
        assert rcpt(s, S.USER) == (250, "2.1.5 You have an eerie feeling...")
        assert login(s, S.USER, S.PASSWORD) == (235, "")
        assert "error checking if user exists: dial unix" in s.mail_log()
        dv.start()
        assert rcpt(s, DOVE) == (250, "2.1.5 You have an eerie feeling...")
        assert login(s, DOVE, DOVE_PASSWORD) == (235, "")
    finally:
        if dv.proc is None:
            dv.start()
        s.cleanup()


def test_autodetection_finds_sockets_made_after_start(dv, tmp_path):
    """Only the userdb path is given, the client one is autodetected among
    chasquid's defaults. Without a Dovecot at the default paths that is a
    temporary failure for AUTH, while RCPT (userdb) works."""
    s = ChasquidServer(extra_conf=(
        "dovecot_auth: true\n"
        f'dovecot_userdb_path: "{dv.userdb_socket}"\n'))
    try:
        s.start()
        if any(os.path.exists(p) for p in ("/var/run/dovecot/auth-chasquid-client", "/var/run/dovecot/auth-client")):
            pytest.skip("a system Dovecot is running")
        assert login(s, DOVE, DOVE_PASSWORD) == (454, "4.7.0 Temporary authentication failure")
        assert rcpt(s, DOVE) == (451, "4.4.3 Temporary error checking address")
    finally:
        s.cleanup()
