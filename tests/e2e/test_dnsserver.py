"""Tests of the test DNS server (tests/dnsserver/dnsserver.py) itself, with
dnspython as the client, over UDP and TCP. No chasquid binary is needed."""

import socket
import struct
import subprocess
import sys
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from dnstest import DNSSERVER, DNSServer

BIG_TXT = [f"record {i:02d} " + "x" * 200 for i in range(12)]  # ~2.5 KB

ZONE = {
    "example.com": {
        "A": ["192.0.2.1", "192.0.2.2"],
        "AAAA": ["2001:db8::1"],
        "MX": [[10, "mx.example.com"], [20, "MX2.Example.com."]],
        "TXT": ["v=spf1 -all", ["two ", "strings"]],
    },
    "MX.Example.COM.": {"A": ["192.0.2.10"]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["example.com"]},
    "alias.example.com": {"CNAME": "chain.example.com"},
    "chain.example.com": {"CNAME": "example.com."},
    "dangling.example.com": {"CNAME": "nowhere.example.com"},
    "null-mx.example.com": {"MX": [[0, "."]]},
    "long.example.com": {"TXT": ["a" * 300]},
    "big.example.com": {"TXT": BIG_TXT},
    "trunc.example.com": {"_truncate": True, "A": ["192.0.2.3"]},
    "drop.example.com": {"_drop": True, "A": ["192.0.2.4"]},
    "fail.example.com": {"_servfail": True, "A": ["192.0.2.5"]},
    "refuse.example.com": {"_refused": True},
}


@pytest.fixture(scope="module")
def ns():
    with DNSServer(ZONE) as server:
        yield server


def ask(server, name, rdtype, tcp=False, timeout=3, **make_kw):
    q = dns.message.make_query(name, rdtype, **make_kw)
    fn = dns.query.tcp if tcp else dns.query.udp
    return q, fn(q, server.addr, port=server.port, timeout=timeout)


def records(response, rdtype=None):
    """[(owner, TYPE, text)] of the answer section, lowercase (name
    compression may change the case of names in the data)."""
    out = []
    for rrset in response.answer:
        if rdtype is not None and rrset.rdtype != dns.rdatatype.from_text(rdtype):
            continue
        for rd in rrset:
            out.append((rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype),
                        rd.to_text().lower()))
    return sorted(out)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_records(ns, tcp):
    _, r = ask(ns, "example.com", "A", tcp)
    assert r.rcode() == dns_rcode("NOERROR")
    assert records(r) == [("example.com.", "A", "192.0.2.1"), ("example.com.", "A", "192.0.2.2")]
    _, r = ask(ns, "EXAMPLE.com.", "AAAA", tcp)
    assert records(r) == [("example.com.", "AAAA", "2001:db8::1")]
    _, r = ask(ns, "example.com", "MX", tcp)
    assert records(r) == [("example.com.", "MX", "10 mx.example.com."),
                          ("example.com.", "MX", "20 mx2.example.com.")]
    _, r = ask(ns, "example.com", "TXT", tcp)
    txts = sorted(rd.strings for rrset in r.answer for rd in rrset)
    assert txts == [(b"two ", b"strings"), (b"v=spf1 -all",)]
    _, r = ask(ns, "1.2.0.192.in-addr.arpa", "PTR", tcp)
    assert records(r) == [("1.2.0.192.in-addr.arpa.", "PTR", "example.com.")]
    # The key was written "MX.Example.COM." in the zone.
    _, r = ask(ns, "mx.example.com", "A", tcp)
    assert records(r) == [("mx.example.com.", "A", "192.0.2.10")]
    _, r = ask(ns, "null-mx.example.com", "MX", tcp)
    assert records(r) == [("null-mx.example.com.", "MX", "0 .")]
    _, r = ask(ns, "long.example.com", "TXT", tcp)
    (rd,) = r.answer[0]
    assert rd.strings == (b"a" * 255, b"a" * 45)


def dns_rcode(text):
    return dns.rcode.from_text(text)


def test_header_flags_question_and_id(ns):
    for rd in (True, False):
        q = dns.message.make_query("example.com", "A")
        if not rd:
            q.flags &= ~dns.flags.RD
        r = dns.query.udp(q, ns.addr, port=ns.port, timeout=3)
        assert r.id == q.id
        assert r.question == q.question
        assert r.flags & dns.flags.QR and r.flags & dns.flags.AA and r.flags & dns.flags.RA
        assert bool(r.flags & dns.flags.RD) == rd
        assert not r.flags & dns.flags.TC


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_and_nodata(ns, tcp):
    _, r = ask(ns, "absent.example.com", "A", tcp)
    assert r.rcode() == dns_rcode("NXDOMAIN")
    assert r.flags & dns.flags.AA and not r.answer
    _, r = ask(ns, "mx.example.com", "TXT", tcp)
    assert r.rcode() == dns_rcode("NOERROR") and not r.answer
    assert r.flags & dns.flags.AA


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_cname(ns, tcp):
    _, r = ask(ns, "alias.example.com", "A", tcp)
    assert r.rcode() == dns_rcode("NOERROR")
    assert records(r) == [("alias.example.com.", "CNAME", "chain.example.com."),
                          ("chain.example.com.", "CNAME", "example.com."),
                          ("example.com.", "A", "192.0.2.1"), ("example.com.", "A", "192.0.2.2")]
    # Asking for the CNAME itself does not follow it.
    _, r = ask(ns, "alias.example.com", "CNAME", tcp)
    assert records(r) == [("alias.example.com.", "CNAME", "chain.example.com.")]
    # Chain ends at a name absent from the zone: NXDOMAIN, CNAME kept.
    _, r = ask(ns, "dangling.example.com", "A", tcp)
    assert r.rcode() == dns_rcode("NXDOMAIN")
    assert records(r) == [("dangling.example.com.", "CNAME", "nowhere.example.com.")]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_behaviour_rcodes(ns, tcp):
    _, r = ask(ns, "fail.example.com", "A", tcp)
    assert r.rcode() == dns_rcode("SERVFAIL") and not r.answer
    _, r = ask(ns, "refuse.example.com", "TXT", tcp)
    assert r.rcode() == dns_rcode("REFUSED") and not r.answer


def test_edns_echo(ns):
    _, r = ask(ns, "example.com", "A")
    assert r.edns == -1 and r.opt is None
    _, r = ask(ns, "example.com", "A", use_edns=0, payload=1232)
    assert r.edns == 0 and r.opt is not None
    _, r = ask(ns, "example.com", "A", tcp=True, use_edns=0)
    assert r.edns == 0
    # An EDNS version we do not speak.
    q = dns.message.make_query("example.com", "A", use_edns=1)
    r = dns.query.udp(q, ns.addr, port=ns.port, timeout=3)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0


def test_udp_size_limits_and_truncation(ns):
    # No EDNS: 512 bytes, so the big TXT set is truncated with no records.
    _, r = ask(ns, "big.example.com", "TXT")
    assert r.flags & dns.flags.TC and not r.answer and r.rcode() == 0
    assert r.question[0].name == dns.name.from_text("big.example.com")
    # EDNS with a small buffer: still truncated, and the OPT is there.
    _, r = ask(ns, "big.example.com", "TXT", use_edns=0, payload=1232)
    assert r.flags & dns.flags.TC and not r.answer and r.edns == 0
    # A big enough buffer: the whole answer over UDP.
    q, r = ask(ns, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == len(BIG_TXT)
    assert len(r.to_wire()) <= 4096
    # An advertised size below 512 counts as 512 (a small answer fits).
    _, r = ask(ns, "example.com", "MX", use_edns=0, payload=100)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 2
    # TCP: always complete.
    _, r = ask(ns, "big.example.com", "TXT", tcp=True)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == len(BIG_TXT)
    # dnspython's own fallback gets it over TCP.
    q = dns.message.make_query("big.example.com", "TXT")
    r, used_tcp = dns.query.udp_with_fallback(q, ns.addr, port=ns.port, timeout=3)
    assert used_tcp and len(r.answer[0]) == len(BIG_TXT)


def test_truncate_behaviour(ns):
    _, r = ask(ns, "trunc.example.com", "A", use_edns=0, payload=4096)
    assert r.flags & dns.flags.TC and not r.answer
    _, r = ask(ns, "trunc.example.com", "A", tcp=True)
    assert not r.flags & dns.flags.TC
    assert records(r) == [("trunc.example.com.", "A", "192.0.2.3")]
    q = dns.message.make_query("trunc.example.com", "A")
    r, used_tcp = dns.query.udp_with_fallback(q, ns.addr, port=ns.port, timeout=3)
    assert used_tcp and records(r) == [("trunc.example.com.", "A", "192.0.2.3")]


def tcp_send(sock, msg):
    wire = msg if isinstance(msg, bytes) else msg.to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)


def tcp_recv(sock):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            data = sock.recv(n - len(buf))
            if not data:
                raise EOFError("closed")
            buf += data
        return buf
    (n,) = struct.unpack("!H", exactly(2))
    return exactly(n)


def test_drop_behaviour(ns):
    with pytest.raises(dns.exception.Timeout):
        ask(ns, "drop.example.com", "A", timeout=1)
    with pytest.raises(dns.exception.Timeout):
        ask(ns, "drop.example.com", "A", tcp=True, timeout=1)
    # TCP: nothing is sent for the dropped query, the connection stays
    # open, and a later query on it is answered.
    with socket.create_connection((ns.addr, ns.port), timeout=5) as s:
        dropped = dns.message.make_query("drop.example.com", "A")
        tcp_send(s, dropped)
        s.settimeout(1)
        with pytest.raises(socket.timeout):
            s.recv(1)
        s.settimeout(5)
        q = dns.message.make_query("example.com", "AAAA")
        tcp_send(s, q)
        r = dns.message.from_wire(tcp_recv(s))
        assert r.id == q.id and records(r) == [("example.com.", "AAAA", "2001:db8::1")]


def test_several_queries_per_tcp_connection(ns):
    with socket.create_connection((ns.addr, ns.port), timeout=5) as s:
        qs = [dns.message.make_query(n, t) for n, t in
              [("example.com", "A"), ("absent.example.com", "A"), ("example.com", "TXT")]]
        # Pipelined: all written before reading.
        for q in qs:
            tcp_send(s, q)
        replies = [dns.message.from_wire(tcp_recv(s)) for _ in qs]
        assert [r.id for r in replies] == [q.id for q in qs]
        assert [r.rcode() for r in replies] == [0, 3, 0]
        # dnspython reusing the connection.
        _, r = None, dns.query.tcp(dns.message.make_query("example.com", "MX"), ns.addr, sock=s, timeout=3)
        assert len(r.answer[0]) == 2


def test_malformed_queries(ns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.connect((ns.addr, ns.port))
        # Shorter than a header: ignored.
        s.send(b"\x01\x02\x03")
        with pytest.raises(socket.timeout):
            s.recv(512)
        # A header that promises a question that is not there: FORMERR.
        s.send(struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07exa")
        r = s.recv(512)
        qid, flags = struct.unpack("!HH", r[:4])
        assert qid == 0x1234 and flags & 0x8000 and flags & 0x000F == dns.rcode.FORMERR
        assert flags & 0x0100  # RD copied
        # Two questions: FORMERR too.
        q = dns.message.make_query("example.com", "A")
        q.question.append(dns.message.make_query("example.org", "A").question[0])
        s.send(q.to_wire())
        r = dns.message.from_wire(s.recv(512))
        assert r.id == q.id and r.rcode() == dns.rcode.FORMERR
        # A response sent to us: ignored.
        s.send(struct.pack("!HHHHHH", 0x4321, 0x8000, 0, 0, 0, 0))
        with pytest.raises(socket.timeout):
            s.recv(512)
    with socket.create_connection((ns.addr, ns.port), timeout=5) as s:
        tcp_send(s, struct.pack("!HHHHHH", 0x5555, 0, 1, 0, 0, 0) + b"\xff\xff")
        r = tcp_recv(s)
        assert struct.unpack("!H", r[:2])[0] == 0x5555
        assert struct.unpack("!H", r[2:4])[0] & 0x000F == dns.rcode.FORMERR
    # Still alive.
    _, r = ask(ns, "example.com", "A")
    assert r.rcode() == 0


def test_query_log(ns):
    before = len(ns.queries())
    ask(ns, "Example.COM.", "MX")
    ask(ns, "absent.example.com", "AAAA", tcp=True)
    ask(ns, "1.2.0.192.in-addr.arpa", "PTR")
    with pytest.raises(dns.exception.Timeout):
        ask(ns, "drop.example.com", "TXT", timeout=0.5)
    assert ns.queries()[before:] == [
        ("udp", "example.com", "MX"),
        ("tcp", "absent.example.com", "AAAA"),
        ("udp", "1.2.0.192.in-addr.arpa", "PTR"),
        ("udp", "drop.example.com", "TXT"),
    ]


def test_zone_changes_are_seen_by_the_next_query(dns_server):
    dns_server.set_zone({"a.test": {"TXT": ["one"]}})
    _, r = ask(dns_server, "a.test", "TXT")
    assert r.answer[0][0].strings == (b"one",)
    # Same size, written right away: still seen.
    dns_server.update("a.test", {"TXT": ["two"]})
    _, r = ask(dns_server, "a.test", "TXT")
    assert r.answer[0][0].strings == (b"two",)
    dns_server.update("b.test", {"_servfail": True})
    _, r = ask(dns_server, "b.test", "A", tcp=True)
    assert r.rcode() == dns.rcode.SERVFAIL
    dns_server.remove("a.test")
    _, r = ask(dns_server, "a.test", "TXT")
    assert r.rcode() == dns.rcode.NXDOMAIN
    # A broken zone file is reported and the previous zone kept.
    dns_server.zone_path.write_text("{not json")
    _, r = ask(dns_server, "b.test", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert "keeping the previous zone" in dns_server.stderr()
    dns_server.set_zone({"c.test": {"AAAA": ["::1"]}})
    _, r = ask(dns_server, "c.test", "AAAA")
    assert records(r) == [("c.test.", "AAAA", "::1")]


def test_drop_all():
    with DNSServer({"example.com": {"A": ["192.0.2.1"]}}, drop_all=True) as server:
        with pytest.raises(dns.exception.Timeout):
            ask(server, "example.com", "A", timeout=1)
        with pytest.raises(dns.exception.Timeout):
            ask(server, "example.com", "A", tcp=True, timeout=1)
        assert server.queries() == [("udp", "example.com", "A"), ("tcp", "example.com", "A")]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback():
    with DNSServer({"example.com": {"A": ["192.0.2.1"]}}, addr="::1") as server:
        assert server.address == f"[::1]:{server.port}"
        for tcp in (False, True):
            _, r = ask(server, "example.com", "A", tcp=tcp)
            assert records(r) == [("example.com.", "A", "192.0.2.1")]


def test_bad_zone_at_startup_is_fatal(tmp_path):
    zone = tmp_path / "zone.json"
    zone.write_text('{"example.com": {"BOGUS": ["x"]}}')
    p = subprocess.run([sys.executable, str(DNSSERVER), "--zone", str(zone)],
                       capture_output=True, timeout=30)
    assert p.returncode == 2 and p.stdout == b""
    assert b"unknown record type" in p.stderr


def test_fixed_port_and_sigterm(tmp_path):
    # Take a free port, then ask for it explicitly.
    with DNSServer({}) as first:
        port = first.port
    server = DNSServer({"x.test": {"A": ["127.0.0.1"]}}, port=port)
    try:
        server.start()
        assert server.port == port
        _, r = ask(server, "x.test", "A", tcp=True)
        assert r.rcode() == 0
        start = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - start < 5
    finally:
        server.cleanup()
