"""smtp-check (COMPAT.md §20; docs/smtp-check.md) against our own daemon, the
tests' DNS server and an HTTPS policy host, all on loopback, one case per
verdict.

    good.test   MX 10 mx.good.test -> 127.0.0.1, our daemon's SMTP port
                (smtp-check -port), certificate from the test CA
    mta-sts.good.test -> 127.0.0.1, a Python HTTPS server (-testing__sts_port)

smtp-check runs as the daemon user, with SSL_CERT_FILE naming the test CA and
-config_dir the daemon's config (its DKIM keys, as an admin would run it).
Each test sets the whole zone, starting from a setup that passes everything.
"""

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import deployed
import mta
from mta import PolicyHost
import server as S
from dnstest import DNSServer
from server import ChasquidServer

DOMAIN = "good.test"
MX = "mx.good.test"
REVERSE = "1.0.0.127.in-addr.arpa"
LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
POLICY = "version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 86400\n"


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60).stdout


@pytest.fixture(scope="module")
def ca():
    return mta.test_ca()


@pytest.fixture(scope="module")
def dns():
    with DNSServer({}) as server:
        yield server


@pytest.fixture(scope="module")
def policy_host(ca):
    host = PolicyHost(ca.issue(["mta-sts.good.test"]))
    host.default_policy = POLICY
    yield host
    host.stop()


@pytest.fixture(scope="module")
def keys():
    """A DKIM key of each kind, and the p= value each publishes."""
    d = Path(tempfile.mkdtemp(prefix="cqdkim"))
    openssl("genpkey", "-algorithm", "ed25519", "-out", d / "ed.pem")
    openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", d / "rsa.pem")
    ed_spki = openssl("pkey", "-in", d / "ed.pem", "-pubout", "-outform", "DER")
    rsa_spki = openssl("pkey", "-in", d / "rsa.pem", "-pubout", "-outform", "DER")
    yield {
        "ed": (d / "ed.pem", "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_spki[-32:]).decode()),
        "rsa": (d / "rsa.pem", "v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_spki).decode()),
    }
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def srv(ca, dns, keys):
    s = ChasquidServer(hostname=MX, domain=DOMAIN, certs={MX: ca.issue([MX])}, flags=[dns.chasquid_flag])
    dkim = s.config_dir / "domains" / DOMAIN
    shutil.copyfile(keys["ed"][0], dkim / "dkim:sel1.pem")
    shutil.copyfile(keys["rsa"][0], dkim / "dkim:sel2.pem")
    s.start()
    yield s
    s.stop()
    s.cleanup()


def good_zone(keys):
    return {
        DOMAIN: {"MX": [[10, MX]], "TXT": ["v=spf1 mx -all"]},
        MX: {"A": ["127.0.0.1"]},
        REVERSE: {"PTR": [MX]},
        "_mta-sts.good.test": {"TXT": ["v=STSv1; id=20261203;"]},
        "mta-sts.good.test": {"A": ["127.0.0.1"]},
        "sel1._domainkey.good.test": {"TXT": [keys["ed"][1]]},
        # RSA key records are longer than one character-string.
        "sel2._domainkey.good.test": {"TXT": [split255(keys["rsa"][1])]},
        "_dmarc.good.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:postmaster@good.test"]},
    }


def split255(text):
    return [text[i:i + 255] for i in range(0, len(text), 255)]


class Run:
    def __init__(self, proc):
        self.status = proc.returncode
        self.stderr = proc.stderr.decode()
        self.stdout = proc.stdout.decode()
        # Go's log prefix on every line; the checks read what follows it.
        self.lines = []
        for line in self.stderr.splitlines():
            assert LOG_PREFIX.match(line), f"line without Go's log prefix: {line!r}"
            self.lines.append(LOG_PREFIX.sub("", line))
        self.text = "\n".join(self.lines)

    def section(self, name):
        """The lines after `=== <name>` up to the next blank line."""
        start = self.lines.index("=== " + name)
        out = []
        for line in self.lines[start + 1:]:
            if line == "" or line.startswith("=== "):
                break
            out.append(line)
        return out


@pytest.fixture
def check(srv, dns, policy_host, keys, ca):
    dns.set_zone(good_zone(keys))
    policy_host.serve()

    def run(*args, domain=DOMAIN, port=None, cert_file=None):
        cmd = [S.smtp_check_bin(), f"-port={port or srv.smtp_port}", dns.chasquid_flag,
               f"-testing__sts_port={policy_host.port}", f"-config_dir={srv.config_dir}", *args]
        if domain is not None:
            cmd.append(domain)
        proc = S.run_bin(cmd, env=deployed.daemon_env({"SSL_CERT_FILE": str(cert_file or ca.cert_path)}),
                         **deployed.popen_user())
        assert proc.stdout == b"", "smtp-check writes only to stderr, as Go's log does"
        return Run(proc)

    return run


# ---------------------------------------------------------------- success


def test_everything_right_is_success(check):
    r = check()
    assert r.status == 0, r.stderr
    assert r.lines[-1] == "=== Success"
    assert "=== Warnings" not in r.lines and "=== FAILED" not in r.lines
    assert r.section("STS policy") == [
        "Parsed contents:  [{Version:STSv1 Mode:enforce MXs:[mx.good.test] MaxAge:24h0m0s}]", "OK"]
    mx = r.section("MX: 10  mx.good.test.")
    assert mx[0] == "SPF pass for 127.0.0.1: matched mx"
    # BoringSSL negotiates TLS 1.3 with our server; the suite is read from
    # the ServerHello, so it is one of TLS 1.3's.
    tls = [l for l in mx if l.startswith("TLS OK: ")]
    assert len(tls) == 1 and re.fullmatch(r"TLS OK: TLS-1\.3 - TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|"
                                          r"CHACHA20_POLY1305_SHA256)", tls[0]), mx
    assert "PTR 127.0.0.1: mx.good.test (forward-confirmed, matches the HELO name)" in mx
    assert mx[-1] == "Allowed by policy"
    dkim = r.section("DKIM")
    assert any(l.startswith("Selector sel1 (ed25519): the published key matches ") for l in dkim), dkim
    assert any(l.startswith("Selector sel2 (rsa): the published key matches ") for l in dkim), dkim
    assert r.section("DMARC") == [
        "_dmarc.good.test: v=DMARC1; p=reject; rua=mailto:postmaster@good.test (policy reject)"]


def test_no_domain_prints_use():
    proc = S.run_bin([S.smtp_check_bin()])
    assert proc.returncode == 1
    assert LOG_PREFIX.sub("", proc.stderr.decode()).strip() == "Use: smtp-check <domain>"


def test_unknown_flag_is_a_usage_error():
    proc = S.run_bin([S.smtp_check_bin(), "-nosuchflag", DOMAIN])
    assert proc.returncode == 2
    assert "flag provided but not defined: -nosuchflag" in proc.stderr.decode()


# ---------------------------------------------------------------- MX


def test_no_mx_is_fatal(check, dns):
    dns.update(DOMAIN, {"TXT": ["v=spf1 mx -all"]})
    r = check()
    assert r.status == 1
    assert "MX lookup returned no results" in r.lines
    assert not any(l.startswith("=== MX") for l in r.lines)


def test_nonexistent_domain_is_fatal(check):
    r = check(domain="nowhere.test")
    assert r.status == 1
    assert any(l.startswith("MX lookup: ") and "no such host" in l for l in r.lines), r.text


def test_unreachable_mx_fails_and_goes_on(check):
    r = check(port=S.free_port())
    assert r.status == 1
    assert any(l.startswith("Connection failed: ") for l in r.lines), r.text
    # The other checks still ran.
    assert "=== DKIM" in r.lines and "=== DMARC" in r.lines
    assert "mx.good.test.: connection failed" in r.text


def test_skip_tls_check(check):
    r = check("-skip_tls_check", port=1)
    assert r.status == 0, r.stderr
    mx = r.section("MX: 10  mx.good.test.")
    assert "TLS check skipped" in mx
    assert not any(l.startswith("TLS OK") for l in mx)
    # With no EHLO, the PTR is held against the MX name.
    assert "PTR 127.0.0.1: mx.good.test (forward-confirmed, matches the MX name)" in mx


# ---------------------------------------------------------------- SPF


def test_spf_missing_fails_with_the_record_to_publish(check, dns):
    dns.update(DOMAIN, {"MX": [[10, MX]]})
    r = check()
    assert r.status == 1
    assert "SPF none for 127.0.0.1: no DNS record found" in r.lines
    failed = r.lines[r.lines.index("=== FAILED") + 1:]
    # chasquid's log.Fatal("") ends the list with an empty line.
    assert failed == ["mx.good.test.: SPF failed (127.0.0.1)", '    fix: good.test. IN TXT "v=spf1 mx -all"', ""]


def test_spf_fail_keeps_the_rest_of_the_record(check, dns):
    dns.update(DOMAIN, {"MX": [[10, MX]], "TXT": ["v=spf1 ip4:192.0.2.1 -all"]})
    r = check()
    assert r.status == 1
    assert "SPF fail for 127.0.0.1: matched all" in r.lines
    assert '    fix: good.test. IN TXT "v=spf1 mx ip4:192.0.2.1 -all"' in r.lines


# ---------------------------------------------------------------- TLS


@pytest.fixture
def restore_certs(srv, ca):
    yield
    srv.set_certs({MX: ca.issue([MX])})
    srv.stop()
    srv.start()


@pytest.mark.parametrize("kind", ["wrong-name", "expired", "self-signed", "untrusted-issuer", "no-intermediate"])
def test_tls_failures_say_what_is_wrong(check, srv, ca, restore_certs, kind, tmp_path):
    # The last two trust another CA only, so our CA is an unknown issuer.
    trusted = ca.cert_path
    if kind == "wrong-name":
        certs = {MX: ca.issue(["other.test"])}
        expect = "Certificate: it is for other.test, not mx.good.test; get one that names mx.good.test"
    elif kind == "expired":
        certs = {MX: ca.issue([MX], expired=True)}
        expect = "Certificate: it expired on 2020-02-01; renew it (e.g. certbot renew)"
    elif kind == "self-signed":
        certs = {MX: mta.self_signed(MX)}
        expect = "Certificate: it is self-signed; use one from a public CA (e.g. Let's Encrypt)"
    elif kind == "untrusted-issuer":
        certs = {MX: ca.issue([MX])}
        trusted = mta.self_signed("unrelated.test") / "fullchain.pem"
        expect = "Certificate: its issuer (CN=chasquid test CA) is not trusted here"
    else:
        leaf = ca.issue([MX])
        (tmp_path / "fullchain.pem").write_bytes((leaf / "cert.pem").read_bytes())
        shutil.copyfile(leaf / "privkey.pem", tmp_path / "privkey.pem")
        certs = {MX: tmp_path}
        trusted = mta.self_signed("unrelated.test") / "fullchain.pem"
        expect = ("Certificate: the server sends no intermediate certificate (issuer CN=chasquid test CA); "
                  "use fullchain.pem, not cert.pem")
    srv.set_certs(certs)
    srv.stop()
    srv.start()
    r = check(cert_file=trusted)
    assert r.status == 1
    mx = r.section("MX: 10  mx.good.test.")
    assert any(l.startswith("TLS error: ") for l in mx), mx
    assert expect in mx, mx
    assert "mx.good.test.: TLS failed" in r.lines


# ---------------------------------------------------------------- MTA-STS


def test_sts_mx_not_allowed(check, policy_host):
    policy_host.serve(POLICY.replace("mx: mx.good.test", "mx: *.elsewhere.test"))
    r = check()
    assert r.status == 1
    mx = r.section("MX: 10  mx.good.test.")
    assert "NOT allowed by STS policy" in mx
    # COMPAT §22.14: not both verdicts.
    assert "Allowed by policy" not in mx
    assert "mx.good.test.: STS failed" in r.lines


def test_sts_wildcard_allows(check, policy_host):
    policy_host.serve(POLICY.replace("mx: mx.good.test", "mx: *.good.test"))
    r = check()
    assert r.status == 0, r.stderr
    assert r.section("MX: 10  mx.good.test.")[-1] == "Allowed by policy"


def test_sts_record_without_id_is_noted_and_the_policy_still_applies(check, dns, policy_host):
    # chasquid fetches the policy for any v=STSv1; record; so do we, and say
    # what RFC 8461 makes of it.
    dns.update("_mta-sts.good.test", {"TXT": ["v=STSv1; id=not-valid!;"]})
    policy_host.serve(POLICY.replace("mx: mx.good.test", "mx: *.elsewhere.test"))
    r = check()
    assert r.status == 1
    assert "NOT allowed by STS policy" in r.section("MX: 10  mx.good.test.")
    assert any(l.startswith("Note: MTA-STS TXT record without a valid id=") for l in r.section("STS policy"))
    assert any(l.startswith("    fix: _mta-sts.good.test. IN TXT \"v=STSv1; id=") for l in r.section("Warnings"))


def test_sts_max_age_above_a_year_is_invalid(check, policy_host):
    policy_host.serve(POLICY.replace("86400", "9999999999"))
    r = check()
    assert r.status == 1
    # Printed without trapping (Go's Duration wraps), then refused.
    assert r.section("STS policy")[0].startswith("Parsed contents:  [{Version:STSv1 Mode:enforce MXs:[mx.good.test] MaxAge:")
    assert "Invalid: invalid max_age" in r.lines


def test_server_text_reaches_the_terminal_escaped(check, dns, policy_host):
    dns.update("_dmarc.good.test", {"TXT": ["v=DMARC1; p=none; x=\x1b[31mred\x07"]})
    policy_host.serve(POLICY.replace("mx: mx.good.test", "mx: mx.good.test\x1b]0;title\x07"))
    r = check()
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "_dmarc.good.test: v=DMARC1; p=none; x=\\x1b[31mred\\x07 (policy none)" in r.lines
    assert "\\x1b]0;title\\x07" in r.section("STS policy")[0]


def test_sts_body_ended_by_the_close(check, policy_host):
    policy_host.serve(length=False)
    r = check()
    assert r.status == 0, r.stderr
    assert r.section("STS policy")[-1] == "OK"


def test_sts_policy_host_that_never_answers(check, dns, policy_host):
    # A listener on the policy port of another loopback address that
    # accepts and then says nothing.
    silent = socket.socket()
    silent.bind(("127.0.0.3", policy_host.port))
    silent.listen(8)
    try:
        dns.update("mta-sts.good.test", {"A": ["127.0.0.3"]})
        r = check()
        assert r.status == 0, r.stderr
        assert r.section("STS policy") == ["Not available (timed out after 5.0 seconds)"]
    finally:
        silent.close()


def test_sts_policy_past_10_kib_is_ignored(check, policy_host):
    # chasquid reads 10 KiB and ignores the rest: a line beyond is not seen.
    policy_host.serve(POLICY.replace("mx: mx.good.test\n", "") + "# " + "x" * (11 * 1024) + "\nmx: mx.good.test\n")
    r = check()
    assert r.status == 1
    assert "Invalid: invalid mx" in r.lines


def test_sts_invalid_policy_is_fatal(check, policy_host):
    policy_host.serve(POLICY.replace("STSv1", "STSv2"))
    r = check()
    assert r.status == 1
    assert "Invalid: unknown policy version" in r.lines
    assert not any(l.startswith("=== MX") for l in r.lines)


@pytest.mark.parametrize("setup, reason", [
    ("no-txt", "MTA-STS TXT record missing"),
    ("html", "invalid HTTP media type"),
    ("no-type", "HTTP media type error: mime: no media type"),
    ("404", "HTTP response status code: 404"),
    ("redirect", "HTTP response status code: 301 (redirects not allowed in MTA-STS)"),
])
def test_sts_not_available(check, dns, policy_host, setup, reason):
    if setup == "no-txt":
        dns.remove("_mta-sts.good.test")
    elif setup == "html":
        policy_host.serve(ctype="text/html")
    elif setup == "no-type":
        policy_host.serve(ctype=None)
    elif setup == "404":
        policy_host.serve(status=404)
    else:
        policy_host.serve(status=301)
    r = check()
    assert r.status == 0, r.stderr
    assert r.section("STS policy") == [f"Not available ({reason})"]
    assert not any("policy" in l for l in r.section("MX: 10  mx.good.test."))


# ---------------------------------------------------------------- reverse DNS


def test_no_ptr_is_a_warning_with_the_record(check, dns):
    dns.remove(REVERSE)
    r = check()
    assert r.status == 0, r.stderr
    assert "PTR 127.0.0.1: none" in r.section("MX: 10  mx.good.test.")
    warnings = r.section("Warnings")
    assert warnings == [
        "mx.good.test.: 127.0.0.1 has no PTR record (ask whoever gave you the address to publish it)",
        "    fix: 1.0.0.127.in-addr.arpa. IN PTR mx.good.test."]
    assert r.lines[-1] == "=== Success"
    # -strict counts warnings as failures.
    assert check("-strict").status == 1


def test_ptr_not_forward_confirmed(check, dns):
    dns.update(REVERSE, {"PTR": ["host.isp.test"]})
    r = check()
    assert "PTR 127.0.0.1: host.isp.test (not forward-confirmed)" in r.lines
    assert "    fix: host.isp.test. IN A 127.0.0.1" in r.section("Warnings")


def test_ptr_other_than_helo_name(check, dns):
    dns.update(REVERSE, {"PTR": ["host.isp.test"]})
    dns.update("host.isp.test", {"A": ["127.0.0.1"]})
    r = check()
    assert "PTR 127.0.0.1: host.isp.test (forward-confirmed, but the HELO name is mx.good.test)" in r.lines
    warnings = r.section("Warnings")
    assert warnings[0] == "mx.good.test.: the PTR of 127.0.0.1 is host.isp.test, but the HELO name is mx.good.test"
    assert any('hostname: "host.isp.test"' in l for l in warnings)


# ---------------------------------------------------------------- DKIM


def test_dkim_record_missing_gives_the_record(check, dns, keys):
    dns.remove("sel1._domainkey.good.test")
    r = check()
    assert r.status == 0
    assert "Selector sel1 (ed25519): no key record at sel1._domainkey.good.test" in r.section("DKIM")
    warnings = r.section("Warnings")
    assert warnings == [
        "DKIM sel1: no key record at sel1._domainkey.good.test",
        f'    fix: sel1._domainkey.good.test. IN TXT "{keys["ed"][1]}"']


def test_dkim_record_of_another_key(check, dns, keys):
    dns.update("sel2._domainkey.good.test", {"TXT": [keys["ed"][1].replace("ed25519", "rsa")]})
    r = check()
    assert any(l.startswith("Selector sel2: the published key is not the one in ") for l in r.section("DKIM"))
    fix = [l for l in r.section("Warnings") if l.startswith("    fix: sel2._domainkey")]
    # Split into 255-byte character-strings, and the same text once joined.
    assert len(fix) == 1 and '" "' in fix[0]
    assert fix[0].split(" IN TXT ", 1)[1].replace('" "', "").strip('"') == keys["rsa"][1]


def test_dkim_revoked_key(check, dns):
    dns.update("sel1._domainkey.good.test", {"TXT": ["v=DKIM1; k=ed25519; p="]})
    r = check()
    assert "Selector sel1: the published key is revoked (empty p=)" in r.section("DKIM")


def test_dkim_not_a_local_domain(check):
    d = Path(tempfile.mkdtemp(prefix="cqconf", dir="/tmp"))
    try:
        (d / "domains" / "other.test").mkdir(parents=True)
        os.chmod(d, 0o755)
        r = check(f"-config_dir={d}")
        assert r.section("DKIM") == [f"Not checked: {DOMAIN} is not a local domain in {d}/domains"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not deployed.as_root(), reason="needs another user to be refused")
def test_dkim_unreadable_config_is_said(check):
    d = Path(tempfile.mkdtemp(prefix="cqconf", dir="/tmp"))  # 0700, root's
    try:
        (d / "domains" / DOMAIN).mkdir(parents=True)
        r = check(f"-config_dir={d}")
        assert r.section("DKIM") == [
            f"Not checked: cannot read {d}/domains (permission denied; run as the server's user)"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- DMARC


def test_dmarc_missing_gives_the_record(check, dns):
    dns.remove("_dmarc.good.test")
    r = check()
    assert r.status == 0
    assert r.section("DMARC") == ["No record at _dmarc.good.test"]
    assert r.section("Warnings") == [
        "DMARC: no record for good.test",
        '    fix: _dmarc.good.test. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@good.test"']


def test_dmarc_invalid_policy(check, dns):
    dns.update("_dmarc.good.test", {"TXT": ["v=DMARC1; p=maybe"]})
    r = check()
    assert r.section("DMARC") == ["_dmarc.good.test: v=DMARC1; p=maybe: invalid (p= must be none, quarantine or reject)"]
    assert "DMARC: invalid record at _dmarc.good.test" in r.section("Warnings")
