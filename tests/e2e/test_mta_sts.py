"""MTA-STS for outgoing mail (RFC 8461; COMPAT.md §5, §12.5, §13;
docs/delivery.md): our daemon delivering to fake peers whose domains publish
policies, fetched from an HTTPS policy host on loopback (the daemon's
-testing__sts_port), through the tests' DNS server.

    sts-<case>.test   MX mx.sts-<case>.test -> a FakeSMTPPeer on 127.0.0.N
    _mta-sts.sts-<case>.test TXT "v=STSv1; id=…;"
    mta-sts.sts-<case>.test -> 127.0.0.1, the policy host

An enforce policy needs the MX to be listed and verified TLS; testing and no
policy deliver as before. Policies are cached in <data_dir>/sts-cache as
chasquid keeps them.
"""

import json
import os
import time
import uuid

import pytest

import mta
import server as S
from dnstest import DNSServer
from mta import FakeSMTPPeer, PolicyHost, make_message
from server import ChasquidServer

CASES = ["ok", "unlisted", "insecure", "testing", "nopolicy", "wildcard"]


def policy(mode, mx):
    return f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"


@pytest.fixture(scope="module")
def ca():
    return mta.test_ca()


@pytest.fixture(scope="module")
def policy_host(ca):
    host = PolicyHost(ca.issue([f"mta-sts.sts-{c}.test" for c in CASES]))
    yield host
    host.stop()


@pytest.fixture(scope="module")
def dns():
    with DNSServer({}) as server:
        yield server


@pytest.fixture(scope="module")
def srv(ca, dns, policy_host):
    s = ChasquidServer(hostname="mx.a.test", domain="a.test", certs={"mx.a.test": ca.issue(["mx.a.test"])},
                       flags=[dns.chasquid_flag, f"-testing__sts_port={policy_host.port}"],
                       extra_env={"SSL_CERT_FILE": str(ca.cert_path)}, outgoing_smtp_port=S.free_port())
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def domain(request, srv, dns, policy_host, ca):
    """A domain for this case, its peer and its policy: (domain, peer)."""
    started = []

    def make(case, mode=None, listed=None, secure=True):
        name = f"sts-{case}.test"
        mx = f"mx.{name}"
        tls = ca.issue([mx]) if secure else mta.self_signed(mx)
        peer = FakeSMTPPeer(mta.next_loopback(), srv.outgoing_smtp_port, name=mx, tls=tls).start()
        started.append(peer)
        dns.update(name, {"MX": [[10, mx]]})
        dns.update(mx, {"A": [peer.host]})
        if mode:
            dns.update(f"_mta-sts.{name}", {"TXT": [f"v=STSv1; id={uuid.uuid4().hex[:20]};"]})
            dns.update(f"mta-sts.{name}", {"A": ["127.0.0.1"]})
            policy_host.serve(policy(mode, listed or mx), host=f"mta-sts.{name}")
        return name, peer

    yield make
    for p in started:
        p.stop()


def submit(srv, rcpt):
    subject = f"sts-{uuid.uuid4().hex[:10]}"
    return subject, mta.submit(srv, [rcpt], make_message(subject, sender="user@a.test", to=rcpt))


def test_enforce_with_a_listed_mx_and_verified_tls_delivers(srv, domain):
    name, peer = domain("ok", "enforce")
    subject, _ = submit(srv, f"x@{name}")
    peer.wait_for_delivery(subject.encode())
    # Cached as chasquid keeps it: JSON, the mtime the expiry.
    path = srv.data_dir / "sts-cache" / f"pol:{name}"
    stored = json.loads(path.read_text())
    assert stored == {"version": "STSv1", "mode": "enforce", "mx": [f"mx.{name}"], "max_age": 86400 * 10**9}
    assert path.read_text() == ('{"version":"STSv1","mode":"enforce","mx":["mx.%s"],"max_age":86400000000000}' % name)
    assert abs(os.stat(path).st_mtime - (time.time() + 86400)) < 600


def test_wildcard_pattern_matches_one_label(srv, domain):
    name, peer = domain("wildcard", "enforce", listed="*.sts-wildcard.test")
    subject, _ = submit(srv, f"x@{name}")
    peer.wait_for_delivery(subject.encode())


def test_enforce_skips_an_mx_the_policy_does_not_list(srv, domain):
    name, peer = domain("unlisted", "enforce", listed="mx.elsewhere.test")
    rcpt = f"x@{name}"
    subject, qid = submit(srv, rcpt)
    outcome = mta.wait_for_attempt(srv, qid, rcpt, "failed (temporary)")
    assert "skipped as per MTA-STS policy" in outcome, outcome
    assert not peer.sessions, "a host the policy does not list was contacted"
    assert f"m:{qid}" in srv.queue_files()


def test_enforce_needs_verified_tls(srv, domain):
    name, peer = domain("insecure", "enforce", secure=False)
    rcpt = f"x@{name}"
    subject, qid = submit(srv, rcpt)
    outcome = mta.wait_for_attempt(srv, qid, rcpt, "failed (temporary)")
    assert "invalid security level (TLS_INSECURE) for STS policy" in outcome, outcome
    assert not peer.accepted
    assert f"m:{qid}" in srv.queue_files()


def test_testing_mode_delivers_anyway(srv, domain):
    name, peer = domain("testing", "testing", listed="mx.elsewhere.test", secure=False)
    subject, _ = submit(srv, f"x@{name}")
    peer.wait_for_delivery(subject.encode())
    assert (srv.data_dir / "sts-cache" / f"pol:{name}").exists()


def test_no_policy_delivers_over_unverified_tls(srv, domain):
    name, peer = domain("nopolicy", secure=False)
    subject, _ = submit(srv, f"x@{name}")
    peer.wait_for_delivery(subject.encode())
    assert not (srv.data_dir / "sts-cache" / f"pol:{name}").exists()


def test_a_file_in_the_cache_place_stops_the_start(dns, tmp_path):
    s = ChasquidServer(flags=[dns.chasquid_flag])
    try:
        (s.data_dir / "sts-cache").write_text("not a directory\n")
        with pytest.raises(RuntimeError) as failure:
            s.start(timeout=20)
        assert "Failed to initialize STS cache: " in str(failure.value)
    finally:
        s.cleanup()
