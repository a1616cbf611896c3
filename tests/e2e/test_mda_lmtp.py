"""mda-lmtp (COMPAT.md §21) delivering into a real Dovecot's LMTP listener
(dovecot.py), over TCP and a Unix socket, run as the daemon user; and the
whole chain: chasquid with Dovecot's users, delivering through mda-lmtp.

Skipped without Dovecot or root, except in CI, where that fails.
"""

import os
import smtplib
import subprocess
import uuid

import pytest

import deployed
import dovecot as DV
import server as S
from server import ChasquidServer

ok, why = DV.available()
pytestmark = pytest.mark.skipif(not ok and not os.environ.get("CI"), reason=why)

DOVE = "dove@example.com"


@pytest.fixture(scope="module")
def dv():
    d = DV.Dovecot(users={DOVE: "dovepass", "ñandú@example.com": "x"})
    d.start()
    yield d
    d.cleanup()


def mda(*args, input=b""):
    """Runs mda-lmtp as the daemon user: (exit status, stdout)."""
    p = deployed.run_as_daemon_user(
        [str(S.mda_lmtp_bin()), *args], input=input, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode()


def message(marker):
    return (f"From: someone@remote.test\nTo: {DOVE}\nSubject: {marker}\n\n"
            "Body line.\n.leading dot\n..two dots\n.\nÚltima línea, UTF-8.\n").encode()


def stored(dv, address, marker):
    found = [m for m in dv.messages(address) if marker.encode() in m]
    assert len(found) == 1, dv.log()
    return found[0]


def dovecots_own_headers(stored_bytes, original):
    """What Dovecot put before the message: the stored file must be its
    trace headers, then our bytes exactly."""
    assert stored_bytes.endswith(original), stored_bytes
    prefix = stored_bytes[:-len(original)].decode()
    names = [line.split(":")[0] for line in prefix.splitlines() if line and not line[0].isspace()]
    return names


@pytest.mark.parametrize("network", ["tcp", "unix"])
def test_delivers_byte_for_byte(dv, network):
    marker = f"lmtp-{network}-{uuid.uuid4().hex[:8]}"
    addr = f"127.0.0.1:{dv.lmtp_port}" if network == "tcp" else str(dv.lmtp_socket)
    original = message(marker)
    rc, out = mda(f"-addr={addr}", "-f", "someone@remote.test", "-d", DOVE, input=original)
    assert (rc, out) == (0, ""), dv.log()
    names = dovecots_own_headers(stored(dv, DOVE, marker), original)
    assert set(names) <= {"Return-Path", "Delivered-To", "Received"}, names
    assert "Return-Path" in names


def test_the_network_flag_overrides_the_guess(dv):
    marker = f"lmtp-flag-{uuid.uuid4().hex[:8]}"
    rc, out = mda("-addr_network=tcp", f"--addr=127.0.0.1:{dv.lmtp_port}", "-f", "<>", "-d", DOVE,
                  input=message(marker))
    assert (rc, out) == (0, "")
    assert stored(dv, DOVE, marker).startswith(b"Return-Path: <>")


def test_to_puny_reaches_an_idna_encoded_user(dv):
    """-to_puny encodes the whole -d and -f strings as one domain name,
    `@` included, as chasquid does (Go's idna.ToASCII): the Dovecot user
    stored under that name receives it."""
    def whole(text):
        return ".".join("xn--" + label.encode("punycode").decode() if not label.isascii() else label
                        for label in text.split("."))
    puny_user = whole("ñandú@example.com")
    dv2 = DV.Dovecot(users={puny_user: "x"})
    dv2.start()
    try:
        marker = f"lmtp-puny-{uuid.uuid4().hex[:8]}"
        rc, out = mda(f"-addr={dv2.lmtp_socket}", "-to_puny", "-f", "fröm@remote.test", "-d",
                      "ñandú@example.com", input=message(marker))
        assert (rc, out) == (0, ""), dv2.log()
        data = stored(dv2, puny_user, marker)
        assert data.startswith(f"Return-Path: <{whole('fröm@remote.test')}>".encode()), data[:200]
    finally:
        dv2.cleanup()


def test_an_unknown_user_is_temporary_and_permanent_when_asked(dv):
    """chasquid's mda-lmtp exits 75 on every failure, 5xx included; with
    -permanent_on_5xx a refusal is 2, which chasquid bounces at once."""
    rc, out = mda(f"-addr={dv.lmtp_socket}", "-f", "a@b.test", "-d", "nobody@example.com", input=b"x\n")
    assert rc == 75
    assert out.startswith('Sent "RCPT TO:<nobody@example.com>", got 550 "5.1.1 '), out
    rc, out = mda(f"-addr={dv.lmtp_socket}", "-permanent_on_5xx", "-f", "a@b.test", "-d",
                  "nobody@example.com", input=b"x\n")
    assert rc == 2, out


def test_no_server_is_temporary_and_no_address_is_usage(tmp_path):
    missing = "/tmp/no-such-lmtp-socket"
    rc, out = mda(f"-addr={missing}", "-f", "a@b.test", "-d", DOVE, input=b"x\n")
    assert (rc, out) == (75, f"Error connecting to (unix, {missing}): dial unix {missing}: "
                             "connect: no such file or directory\n")
    rc, out = mda("-f", "a@b.test", "-d", DOVE)
    assert (rc, out) == (2, "No LMTP server address given (use --addr)\n")
    rc, _ = mda("-nonsense")
    assert rc == 2


def test_chasquid_delivers_a_dovecot_users_mail_through_mda_lmtp(dv):
    """docs/dovecot.md's setup: Dovecot knows the user, chasquid accepts
    the RCPT because Dovecot does, and the MDA is mda-lmtp into Dovecot."""
    s = ChasquidServer(extra_conf=(
        "dovecot_auth: true\n"
        f'dovecot_userdb_path: "{dv.userdb_socket}"\n'
        f'dovecot_client_path: "{dv.client_socket}"\n'))
    s.write_conf(mda_bin=str(S.mda_lmtp_bin()),
                 mda_args=[f"--addr={dv.lmtp_socket}", "-f", "%from%", "-d", "%to_user%@%to_domain%"],
                 extra=("dovecot_auth: true\n"
                        f'dovecot_userdb_path: "{dv.userdb_socket}"\n'
                        f'dovecot_client_path: "{dv.client_socket}"\n'))
    try:
        s.start()
        marker = f"chain-{uuid.uuid4().hex[:8]}"
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
            c.sendmail("someone@remote.invalid", ["dove+tag@example.com"],
                       f"Subject: {marker}\r\n\r\nThrough the chain.\r\n")
        s.wait_for(lambda: any(marker.encode() in m for m in dv.messages(DOVE)), 30, "delivery into Dovecot")
        s.wait_for_log("to=dove@example.com sent")
    finally:
        s.cleanup()
