"""Abuse limits against a real daemon (issue 18): each client's abuse is
performed, then a normal client is checked to be still served.

Clients other than loopback come in through the PROXY protocol
(`haproxy_incoming`), which gives the daemon any source address we like,
IPv6 networks included, with the header written here by hand.
"""

import base64
import random
import re
import smtplib
import socket
import ssl
import threading
import time

import pytest

import server as S
from server import ChasquidServer
from smtpraw import no_verify_context


class ProxiedSMTP(smtplib.SMTP_SSL):
    """Implicit TLS submission from `source`, as HAProxy would announce it."""

    def __init__(self, srv, source):
        self.source = source
        super().__init__("127.0.0.1", srv.tls_port, local_hostname="client.test",
                         context=no_verify_context(), timeout=60)

    def _get_socket(self, host, port, timeout):
        raw = socket.create_connection((host, port), timeout)
        family = "TCP6" if ":" in self.source else "TCP4"
        destination = "::1" if family == "TCP6" else "127.0.0.1"
        raw.sendall(f"PROXY {family} {self.source} {destination} 40000 465\r\n".encode())
        return self.context.wrap_socket(raw, server_hostname=host)


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def auth(srv, source, user, password):
    """The reply code to one AUTH PLAIN from `source`, on a new connection
    (smtplib's login would try LOGIN after a failed PLAIN: two attempts)."""
    with ProxiedSMTP(srv, source) as c:
        c.ehlo()
        return c.docmd("AUTH", "PLAIN " + plain(user, password))[0]


@pytest.fixture
def srv():
    # 20 ms first delay (500 ms in production), so the growing delays of a
    # guessing run stay short here.
    s = ChasquidServer(extra_conf="haproxy_incoming: true", flags=["-testing__auth_delay=20ms"])
    s.start()
    yield s
    s.cleanup()


def test_a_guessing_network_is_refused_and_others_still_log_in(srv):
    # Ten wrong passwords from one IPv6 /64, each on a fresh connection and
    # for another account, as a guesser escaping the per-connection limit.
    for i in range(10):
        assert auth(srv, f"2001:db8:1:2::{i + 1}", f"guess{i}@example.com", "nope") == 535
    # The whole /64 is refused now, even with the right password...
    with ProxiedSMTP(srv, "2001:db8:1:2:aaaa::1") as c:
        c.ehlo()
        assert c.docmd("AUTH", "PLAIN " + plain(S.USER, S.PASSWORD)) == (
            454, b"4.7.0 Too many failed authentication attempts, try again later")
    # ...and logged as a failed attempt for fail2ban.
    srv.wait_for_log("[2001:db8:1:2:aaaa::1]:40000 auth failed for user@example.com")
    assert ("SMTP.Conn [2001:db8:1:2:aaaa::1]:40000: error: AUTH failed: 454  4.7.0 Too many failed "
            "authentication attempts, try again later") in srv.stderr()
    # Another network, and IPv4, are served.
    assert auth(srv, "2001:db8:1:3::1", S.USER, S.PASSWORD) == 235
    assert auth(srv, "192.0.2.10", S.USER, S.PASSWORD) == 235


def test_guesses_sent_in_parallel_are_checked_no_more_than_the_limit(srv):
    # Twenty connections from one address send a wrong AUTH at the same
    # moment: ten are checked (and fail), the other ten are refused, as if
    # they had come one after another.
    source = "192.0.2.99"
    clients = [ProxiedSMTP(srv, source) for _ in range(20)]
    try:
        for c in clients:
            c.ehlo()
        barrier = threading.Barrier(len(clients))
        codes = [None] * len(clients)

        def guess(i):
            barrier.wait()
            codes[i] = clients[i].docmd("AUTH", "PLAIN " + plain(f"guess{i}@example.com", "nope"))[0]

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for c in clients:
            c.close()
    assert sorted(codes) == [454] * 10 + [535] * 10, codes
    assert auth(srv, source, S.USER, S.PASSWORD) == 454
    assert auth(srv, "192.0.2.100", S.USER, S.PASSWORD) == 235


def test_an_attacked_account_still_logs_in_from_elsewhere(srv):
    # Wrong passwords for one account from many networks: it is slowed
    # down, never locked.
    for i in range(12):
        assert auth(srv, f"198.51.100.{i + 1}", S.USER, "wrong") == 535
    assert auth(srv, "203.0.113.5", S.USER, S.PASSWORD) == 235
    # Its count starts again after that.
    assert auth(srv, "203.0.113.6", S.USER, S.PASSWORD) == 235


def test_loopback_clients_are_not_locked_out():
    # Webmail on this machine speaks for many users from 127.0.0.1.
    srv_plain = ChasquidServer(flags=["-testing__auth_delay=20ms"])
    try:
        srv_plain.start()
        for i in range(12):
            with smtplib.SMTP_SSL("127.0.0.1", srv_plain.tls_port, context=no_verify_context(),
                                  timeout=60) as c:
                c.ehlo()
                assert c.docmd("AUTH", "PLAIN " + plain(f"other{i}@example.com", "wrong"))[0] == 535
        with smtplib.SMTP_SSL("127.0.0.1", srv_plain.tls_port, context=no_verify_context(), timeout=60) as c:
            c.login(S.USER, S.PASSWORD)
    finally:
        srv_plain.cleanup()


@pytest.mark.parametrize("limit,refused_after", [(0, None), (3, 3)])
def test_auth_failure_limit_sets_or_turns_off_the_limit(limit, refused_after):
    srv = ChasquidServer(extra_conf=f"haproxy_incoming: true\nauth_failure_limit: {limit}",
                         flags=["-testing__auth_delay=20ms"])
    try:
        srv.start()
        codes = [auth(srv, "192.0.2.77", f"guess{i}@example.com", "nope") for i in range(12)]
        expected = [535] * 12 if refused_after is None else [535] * refused_after + [454] * (12 - refused_after)
        assert codes == expected
        assert auth(srv, "192.0.2.77", S.USER, S.PASSWORD) == (235 if refused_after is None else 454)
    finally:
        srv.cleanup()


# ------------------------------------------------ connection limits


def proxied_greeting(srv, source):
    """Connects to port 25 as `source` (PROXY v1) and returns the socket and
    the first reply line."""
    sock = socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=30)
    family = "TCP6" if ":" in source else "TCP4"
    destination = "::1" if family == "TCP6" else "127.0.0.1"
    sock.sendall(f"PROXY {family} {source} {destination} 40000 25\r\n".encode())
    reply = sock.makefile("rb").readline().decode()
    return sock, reply


@pytest.fixture
def limited():
    s = ChasquidServer(extra_conf="haproxy_incoming: true\nmax_connections_per_ip: 3\nmax_connections: 8")
    s.start()
    yield s
    s.cleanup()


@pytest.mark.parametrize("sources", [
    ["192.0.2.1"] * 4,
    # One IPv6 /64, four hosts.
    ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3", "2001:db8:7:7::4"],
])
def test_a_network_over_its_limit_gets_421_and_others_are_served(limited, sources):
    held = []
    try:
        for source in sources[:3]:
            sock, reply = proxied_greeting(limited, source)
            held.append(sock)
            assert reply.startswith("220 ")
        sock, reply = proxied_greeting(limited, sources[3])
        held.append(sock)
        assert reply == "421 4.7.0 Too many connections from your network, try again later\r\n"
        assert sock.recv(1) == b""  # closed at once
        # Another network is served, and the limit frees with a closed one.
        sock, reply = proxied_greeting(limited, "198.51.100.1")
        held.append(sock)
        assert reply.startswith("220 ")
        held.pop(0).close()
        limited.wait_for(lambda: proxied_greeting(limited, sources[3])[1].startswith("220 "),
                         what="a freed slot")
        assert "too many connections from" in limited.stderr()
    finally:
        for sock in held:
            sock.close()


def test_the_total_limit_counts_every_client(limited):
    held = []
    try:
        for i in range(8):
            sock, reply = proxied_greeting(limited, f"203.0.113.{i + 1}")
            held.append(sock)
            assert reply.startswith("220 "), (i, reply)
        sock, reply = proxied_greeting(limited, "203.0.113.99")
        held.append(sock)
        assert reply == "421 4.7.0 Too many connections, try again later\r\n"
    finally:
        for sock in held:
            sock.close()


def test_loopback_is_not_limited_per_network():
    srv = ChasquidServer(extra_conf="max_connections_per_ip: 2")
    held = []
    try:
        srv.start()
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=30)
            held.append(sock)
            assert sock.makefile("rb").readline().startswith(b"220 ")
    finally:
        for sock in held:
            sock.close()
        srv.cleanup()


# ------------------------------------------------ slow clients


def test_a_command_sent_one_byte_at_a_time_is_cut_at_the_command_timeout():
    """A byte every 2 s keeps the connection from ever being idle; the
    command timeout (1 minute, counted from our last reply) cuts it anyway,
    and a normal client is served meanwhile."""
    srv = ChasquidServer()
    try:
        srv.start()
        slow = socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=30)
        assert slow.recv(1024).startswith(b"220 ")
        slow.settimeout(2)
        start = time.monotonic()
        reply = b""
        # 105 bytes at one per 2 s: without the cut, 210 s and no reply.
        for i, byte in enumerate(b"EHLO " + b"x" * 100):
            if i == 10:
                with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=30) as c:
                    assert c.noop()[0] == 250
            try:
                slow.sendall(bytes([byte]))
                reply = slow.recv(1024)
                break
            except socket.timeout:
                continue
        elapsed = time.monotonic() - start
        assert reply == b"421 4.4.2 Timed out, bye\r\n"
        # Not cut before its minute (the idle timeout alone never fires here).
        assert elapsed > 55, elapsed
    finally:
        srv.cleanup()


# ------------------------------------------------ require_sender_match

SENDER_ALIASES = "sales: user\nteam: user, recv\nelsewhere: someone@remote.test\n"


def mail_from_codes(srv, addresses):
    """The MAIL FROM reply code for each address, as user@example.com."""
    with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, context=no_verify_context(), timeout=30) as c:
        c.login(S.USER, S.PASSWORD)
        codes = []
        for a in addresses:
            codes.append(c.docmd("MAIL", f"FROM:<{a}>"))
            c.rset()
        return codes


@pytest.mark.parametrize("address,allowed", [
    ("user@example.com", True),
    ("User+tag@EXAMPLE.com", True),     # suffix, case: still theirs
    ("sales@example.com", True),        # an alias delivering to them
    ("team@example.com", True),         # one of its recipients
    ("", True),                         # the null sender (bounces, vacation replies)
    ("recv@example.com", False),        # another user
    ("elsewhere@example.com", False),   # an alias going elsewhere
    ("user@remote.test", False),        # not a domain of ours
])
def test_require_sender_match_allows_only_the_users_own_addresses(address, allowed):
    srv = ChasquidServer(aliases=SENDER_ALIASES, extra_conf="require_sender_match: true")
    try:
        srv.start()
        [(code, text)] = mail_from_codes(srv, [address])
        if allowed:
            assert code == 250, text
        else:
            assert (code, text) == (553, b"5.7.1 Sender address not owned by user@example.com")
            srv.wait_for_log("sender not owned by authenticated user user@example.com")
    finally:
        srv.cleanup()


def test_without_require_sender_match_users_send_as_anyone():
    srv = ChasquidServer(aliases=SENDER_ALIASES)
    try:
        srv.start()
        assert [c for c, _ in mail_from_codes(srv, ["recv@example.com", "user@remote.test"])] == [250, 250]
    finally:
        srv.cleanup()


# ------------------------------------------------ garbage

def tls_client_hello():
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname="mail.example.com")
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def raw_exchange(port, data, source=None, greeting=True, timeout=10):
    """Everything the server sends until it closes (`source`: a PROXY header
    first). Fails if the server does not close within `timeout`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        if source:
            s.sendall(f"PROXY TCP4 {source} 127.0.0.1 40000 {port}\r\n".encode())
        if greeting:
            out += s.recv(1000)
        s.sendall(data)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_other_protocols_are_answered_and_closed_at_once():
    srv = ChasquidServer()
    try:
        srv.start()
        hello = tls_client_hello()
        # Implicit TLS to port 25: one reply and closed, not answered line by line.
        out = raw_exchange(srv.smtp_port, hello)
        assert out.endswith(b"500 5.5.1 TLS handshake on a plain-text port, use port 465 or STARTTLS\r\n"), out
        assert out.count(b"\r\n") == 2, out
        for port in (srv.smtp_port, srv.submission_port):
            out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
            assert out.endswith(b"502 5.7.0 You hear someone cursing shoplifters\r\n"), out
        # On 465 HTTP is no TLS handshake: closed with nothing sent.
        assert raw_exchange(srv.tls_port, b"GET / HTTP/1.1\r\n\r\n", greeting=False) == b""
        log = srv.stderr()
        assert "TLS handshake on a plain-text port (implicit TLS is port 465), closing connection" in log
        # Not in fail2ban's form: a misconfigured client is no attacker.
        assert not re.search(r"error:.*TLS handshake", log), log
        assert log.count("http command, closing connection") == 2
        # Still serving.
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
            assert c.ehlo()[0] == 250
    finally:
        srv.cleanup()


def test_garbage_from_one_network_cannot_fill_the_log_nor_show_secrets(srv):
    rng = random.Random(18)
    secret = "hunter2-very-secret"
    for i in range(40):
        noise = b"\r\n".join(bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(80))
                             for _ in range(5))
        out = raw_exchange(srv.smtp_port, noise + f"\r\nPASS{secret}\r\nAUTH PLAIN {secret}\r\n".encode(),
                           source=f"203.0.113.{i % 4 + 1}")
        assert out.startswith(b"220 ") and out.endswith(b"421 4.5.0 Too many errors, bye\r\n"), out
    log = srv.stderr()
    lines = [line for line in log.splitlines() if "SMTP.Conn 203.0.113." in line]
    # 40 connections of 4 lines each would be 160; one /32 network each
    # of the 4 addresses gets its burst of 20, then about one per 3 s.
    per_network = {ip: sum(1 for line in lines if f"203.0.113.{ip}:" in line) for ip in range(1, 5)}
    assert all(5 <= n <= 26 for n in per_network.values()), per_network
    assert secret not in log and secret not in srv.mail_log()
    # A normal client is served meanwhile.
    assert auth(srv, "192.0.2.50", S.USER, S.PASSWORD) == 235
