"""DKIM in the daemon (COMPAT.md §12.3; docs/dkim.md), with the keys in
chasquid's files and the key records served by the tests' DNS server:

* mail from an authenticated client is signed with every key of its MAIL
  FROM domain, and dkimpy verifies each signature of the delivered message
  against the zone;
* other mail is verified (dkimpy signs it, both algorithms and both
  canonicalizations), never refused for it, and the results go into
  Authentication-Results beside spf=;
* a broken key file stops the start-up, naming the file.
"""

import base64
import re
import smtplib
import subprocess
import uuid

import dkim
import dns.message
import dns.query
import pytest

import deployed
import server as S
from dnstest import DNSServer
from server import ChasquidServer
from smtpraw import no_verify_context

SIGNER = "signer.test"          # an outside domain whose mail we verify
CLIENT_IP = "127.0.0.1"


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60).stdout


def make_key(directory, name, algorithm):
    """A PKCS#8 key file, and (dkimpy's private key, the record's p=)."""
    path = directory / name
    if algorithm == "ed25519":
        openssl("genpkey", "-algorithm", "ed25519", "-out", path)
        der = openssl("pkey", "-in", path, "-outform", "DER")
        spki = openssl("pkey", "-in", path, "-pubout", "-outform", "DER")
        return path, base64.b64encode(der[-32:]), f"v=DKIM1; k=ed25519; p={base64.b64encode(spki[-32:]).decode()}"
    openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    spki = openssl("pkey", "-in", path, "-pubout", "-outform", "DER")
    return path, path.read_bytes(), f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


def split255(text):
    return [text[i:i + 255] for i in range(0, len(text), 255)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkimkeys")
    return {alg: make_key(d, f"{alg}.pem", alg) for alg in ("ed25519", "rsa")}


@pytest.fixture(scope="module")
def ns(keys):
    zone = {
        # Our domain's keys (the daemon signs with them).
        f"ed._domainkey.{S.DOMAIN}": {"TXT": [keys["ed25519"][2]]},
        f"rs._domainkey.{S.DOMAIN}": {"TXT": [split255(keys["rsa"][2])]},
        # The outside signer's keys (dkimpy signs with them).
        f"ed._domainkey.{SIGNER}": {"TXT": [keys["ed25519"][2]]},
        f"rs._domainkey.{SIGNER}": {"TXT": [split255(keys["rsa"][2])]},
        f"broken._domainkey.{SIGNER}": {"_servfail": True, "TXT": ["x"]},
        SIGNER: {"TXT": [f"v=spf1 ip4:{CLIENT_IP} -all"]},
    }
    with DNSServer(zone) as server:
        yield server


HOOK = """#!/bin/sh
cat > {stdin_copy}.$$
echo "X-Hooked: yes"
"""


@pytest.fixture(scope="module")
def srv(ns, keys):
    s = ChasquidServer(flags=[ns.chasquid_flag])
    domain_dir = s.config_dir / "domains" / S.DOMAIN
    # Two keys: each signs; rs sorts after ed, so its signature is on top.
    (domain_dir / "dkim:ed.pem").write_bytes(keys["ed25519"][0].read_bytes())
    (domain_dir / "dkim:rs.pem").write_bytes(keys["rsa"][0].read_bytes())
    hook_dir = s.base / "hook-stdin"
    hook_dir.mkdir()
    s.set_hook(HOOK.format(stdin_copy=hook_dir / "msg"))
    s.hook_dir = hook_dir
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def dns_txt(ns):
    """dkimpy's dnsfunc, asking the tests' DNS server."""
    def lookup(name, timeout=5):
        query = dns.message.make_query(name.decode().rstrip("."), "TXT")
        answer = dns.query.udp(query, ns.addr, port=ns.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return b""
    return lookup


def message(subject, sender):
    return (f"From: {sender}\r\nTo: {S.USER}\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{uuid.uuid4().hex}@x>\r\n\r\n"
            f"Hello  there.\r\n\r\nBye.\r\n").encode()


def delivered(srv, subject):
    def look():
        for m in srv.messages():
            if subject.encode() in m:
                return m
        return None
    return srv.wait_for(look, 20, f"message {subject}")


def to_crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def field_names(data):
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    return [line.split(":", 1)[0] for line in head.split("\n") if line and line[0] not in " \t"]


def authentication_results(data):
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    m = re.search(r"^Authentication-Results: (.*?)\n(?=\S)", head, re.M | re.S)
    assert m, head
    return m.group(1)


def submit(srv, data, sender=S.USER):
    with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(S.USER, S.PASSWORD)
        s.sendmail(sender, [S.USER], data)


def send_plain(srv, data, sender):
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.sendmail(sender, [S.USER], data)


# ---------------------------------------------------------------- signing


def test_authenticated_mail_is_signed_with_every_key(srv, ns):
    subject = f"sign-{uuid.uuid4().hex[:10]}"
    original = message(subject, S.USER)
    submit(srv, original)
    got = to_crlf(delivered(srv, subject))
    names = field_names(got)
    # §12.3: hook output, Received, the signatures (last key's on top), the message.
    assert names == ["X-Hooked", "Received", "DKIM-Signature", "DKIM-Signature"] + field_names(original), names
    # Below the added headers, the message exactly as sent.
    assert got.endswith(original)
    signatures = [dkim.DKIM(got) for _ in range(2)]
    assert signatures[0].verify(idx=0, dnsfunc=dns_txt(ns)), "rs signature (on top)"
    assert signatures[1].verify(idx=1, dnsfunc=dns_txt(ns)), "ed signature"
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    assert re.search(r"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n\td=example\.com; s=rs; t=\d+;", head)
    assert re.search(r"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n\td=example\.com; s=ed; t=\d+;", head)
    # The post-data hook saw the signed message.
    copies = [p.read_bytes() for p in srv.hook_dir.iterdir() if subject.encode() in p.read_bytes()]
    assert copies and b"DKIM-Signature: v=1; a=rsa-sha256" in copies[0]


def test_a_sender_domain_without_keys_is_not_signed(srv):
    subject = f"nosign-{uuid.uuid4().hex[:10]}"
    submit(srv, message(subject, "someone@elsewhere.test"), sender="someone@elsewhere.test")
    names = field_names(delivered(srv, subject))
    assert "DKIM-Signature" not in names and names[:2] == ["X-Hooked", "Received"], names


def test_signed_mail_survives_a_body_that_needs_canonicalization(srv, ns):
    subject = f"ws-{uuid.uuid4().hex[:10]}"
    original = (f"From: {S.USER}\r\nTo: {S.USER}\r\nSubject: {subject}\r\n\r\n"
                "trailing spaces   \r\n\ttabs\t\there\r\n\r\n\r\n\r\n").encode()
    submit(srv, original)
    got = to_crlf(delivered(srv, subject))
    assert dkim.DKIM(got).verify(idx=0, dnsfunc=dns_txt(ns))


# ---------------------------------------------------------------- verification


@pytest.mark.parametrize("selector, private_index", [("ed", "ed25519"), ("rs", "rsa")])
@pytest.mark.parametrize("canonicalize", [(b"relaxed", b"relaxed"), (b"simple", b"simple")])
def test_incoming_signatures_are_verified(srv, keys, selector, private_index, canonicalize):
    subject = f"verify-{uuid.uuid4().hex[:10]}"
    original = message(subject, f"someone@{SIGNER}")
    algorithm = b"ed25519-sha256" if private_index == "ed25519" else b"rsa-sha256"
    signature = dkim.sign(original, selector.encode(), SIGNER.encode(), keys[private_index][1],
                          canonicalize=canonicalize, signature_algorithm=algorithm)
    send_plain(srv, signature + original, f"someone@{SIGNER}")
    got = delivered(srv, subject)
    ar = authentication_results(got)
    lines = ar.split("\n")
    assert lines[0] == S.HOSTNAME
    assert lines[1] == "\t;spf=pass (matched ip)"
    assert re.fullmatch(r"\t;dkim=pass  header\.b=\S{12}  header\.d=signer\.test", lines[2]), lines
    assert field_names(got) == (["X-Hooked", "Authentication-Results", "Received-SPF", "Received"]
                                + field_names(signature + original))
    assert to_crlf(got).endswith(signature + original)


def test_a_modified_message_fails_and_is_still_delivered(srv, keys):
    subject = f"tampered-{uuid.uuid4().hex[:10]}"
    original = message(subject, f"someone@{SIGNER}")
    signature = dkim.sign(original, b"ed", SIGNER.encode(), keys["ed25519"][1],
                          canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"ed25519-sha256")
    send_plain(srv, signature + original.replace(b"Bye.", b"Bye!"), f"someone@{SIGNER}")
    ar = authentication_results(delivered(srv, subject))
    assert ';dkim=fail  reason="body hash mismatch (got ' in ar, ar
    assert "\t  header.b=" in ar and "header.d=signer.test" in ar


def test_no_signature_is_none(srv):
    subject = f"unsigned-{uuid.uuid4().hex[:10]}"
    send_plain(srv, message(subject, f"someone@{SIGNER}"), f"someone@{SIGNER}")
    ar = authentication_results(delivered(srv, subject))
    assert ar.split("\n")[1:] == ["\t;spf=pass (matched ip)", "\t;dkim=none"], ar


def test_a_key_lookup_that_fails_for_now_is_temperror(srv, keys):
    subject = f"servfail-{uuid.uuid4().hex[:10]}"
    original = message(subject, f"someone@{SIGNER}")
    signature = dkim.sign(original, b"broken", SIGNER.encode(), keys["ed25519"][1],
                          canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"ed25519-sha256")
    send_plain(srv, signature + original, f"someone@{SIGNER}")
    ar = authentication_results(delivered(srv, subject))
    assert "\t;dkim=temperror  reason=" in ar, ar


# ---------------------------------------------------------------- start-up


def test_a_broken_key_file_stops_the_start(ns, tmp_path):
    s = ChasquidServer(flags=[ns.chasquid_flag])
    try:
        bad = s.config_dir / "domains" / S.DOMAIN / "dkim:bad.pem"
        bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        with pytest.raises(RuntimeError) as failure:
            s.start(timeout=20)
        assert f"dkim:bad.pem: not an RSA (of at least 2048 bits) or Ed25519 private key" in str(failure.value)
    finally:
        s.cleanup()


def test_the_key_count_is_logged(srv):
    assert f"  {S.DOMAIN} (2 users, " in srv.stderr() and ", 2 DKIM keys)" in srv.stderr()
