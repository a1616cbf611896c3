"""chasquid-util's DKIM commands (COMPAT.md §17; docs/dkim.md): dkim-keygen and
dkim-dns as chasquid 1.18 prints them, and dkim-sign / dkim-verify checked
both ways against dkimpy (PyPI `dkimpy`): what we sign dkimpy verifies, and
what dkimpy signs we verify, for RSA and Ed25519 and (dkimpy's side) both
canonicalizations.
"""

import base64
import datetime
import os
import re
import stat
import subprocess

import dkim
import pytest

from conftest import DEFAULT_DOMAIN, run

MESSAGE = (b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\n"
           b"Subject:  Is dinner   ready?\r\nDate: Thu, 03 Dec 2026 12:00:00 +0000\r\n"
           b"Message-ID: <1@example.com>\r\n\r\nHi.\r\n\r\nWe lost the game.  Are you  hungry yet?\r\n\r\n\r\n")


def openssl(*args, input=None):
    return subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, input=input,
                          timeout=60).stdout


def key_path(cfg, selector, domain=DEFAULT_DOMAIN):
    return cfg / "domains" / domain / f"dkim:{selector}.pem"


def dns_line(out):
    """(name, value) from chasquid-util's `<name>\\tTXT\\t"<value>"` line."""
    m = re.fullmatch(r'([^\t]+)\tTXT\t"([^"]+)"', out.strip().splitlines()[-1])
    assert m, out
    return m.group(1), m.group(2)


def public_p(pem_path, algorithm):
    """The p= value openssl derives: raw 32 bytes for Ed25519, SPKI for RSA."""
    spki = openssl("pkey", "-in", pem_path, "-pubout", "-outform", "DER")
    return base64.b64encode(spki[-32:] if algorithm == "ed25519" else spki).decode()


def dnsfunc(records):
    def lookup(name, timeout=5):
        return records.get(name.decode().rstrip("."), b"")
    return lookup


# ---------------------------------------------------------------- keygen / dns


@pytest.mark.parametrize("algo, bits", [("ed25519", None), ("rsa3072", 3072), ("rsa4096", 4096), ("", 3072)])
def test_keygen_writes_a_pkcs8_key_and_prints_its_record(ours, config_dir, algo, bits):
    args = ["dkim-keygen", DEFAULT_DOMAIN, "sel"] + ([f"--algo={algo}"] if algo else [])
    rc, out, err = run(ours, f"-C={config_dir}", *args)
    assert (rc, err) == (0, ""), err
    path = key_path(config_dir, "sel")
    assert out.startswith(f'Key written to "{path}"\n\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o660 & ~current_umask()
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    kind = "ed25519" if algo == "ed25519" else "rsa"
    name, value = dns_line(out)
    assert name == f"sel._domainkey.{DEFAULT_DOMAIN}"
    assert value == f"v=DKIM1; k={kind}; p={public_p(path, kind)}"
    if bits:
        assert f"Private-Key: ({bits} bit" in openssl("pkey", "-in", path, "-noout", "-text").decode()
    # dkim-dns gives the same line again.
    rc2, out2, err2 = run(ours, f"-C={config_dir}", "dkim-dns", DEFAULT_DOMAIN)
    assert (rc2, err2) == (0, "") and out2 == out.split("\n\n", 1)[1]


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_keygen_default_selector_is_todays_date(ours, config_dir):
    rc, out, err = run(ours, f"-C={config_dir}", "dkim-keygen", DEFAULT_DOMAIN, "--algo=ed25519")
    assert rc == 0, err
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    assert key_path(config_dir, today).exists()
    assert dns_line(out)[0] == f"{today}._domainkey.{DEFAULT_DOMAIN}"


def test_keygen_never_overwrites(ours, config_dir):
    assert run(ours, f"-C={config_dir}", "dkim-keygen", DEFAULT_DOMAIN, "s", "--algo=ed25519")[0] == 0
    before = key_path(config_dir, "s").read_bytes()
    rc, out, err = run(ours, f"-C={config_dir}", "dkim-keygen", DEFAULT_DOMAIN, "s", "--algo=ed25519")
    assert (rc, out) == (1, "")
    assert err == f'Error: key already exists at "{key_path(config_dir, "s")}"\n'
    assert key_path(config_dir, "s").read_bytes() == before


@pytest.mark.parametrize("args, error", [
    (["dkim-keygen"], "Error: missing domain parameter"),
    (["dkim-keygen", DEFAULT_DOMAIN, "x", "--algo=dsa"], 'Error: unsupported algorithm "dsa"'),
    (["dkim-dns"], "Error: missing domain parameter"),
])
def test_errors(ours, config_dir, args, error):
    assert run(ours, f"-C={config_dir}", *args) == (1, "", error + "\n")


def test_dns_without_keys(ours, config_dir):
    rc, out, err = run(ours, f"-C={config_dir}", "dkim-dns", DEFAULT_DOMAIN)
    assert (rc, out) == (1, "")
    assert err == f'No DKIM keys found in "{config_dir}/domains/{DEFAULT_DOMAIN}/dkim:*.pem"\n'


def test_dns_of_an_openssl_key(ours, config_dir):
    path = key_path(config_dir, "o")
    openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    rc, out, err = run(ours, f"-C={config_dir}", "dkim-dns", DEFAULT_DOMAIN, "o", str(path))
    assert rc == 0, err
    assert out == f'o._domainkey.{DEFAULT_DOMAIN}\tTXT\t"v=DKIM1; k=rsa; p={public_p(path, "rsa")}"\n'


# ---------------------------------------------------------------- interop


@pytest.fixture(params=["ed25519", "rsa3072"])
def key(request, ours, config_dir):
    """A key made by dkim-keygen, and its record."""
    rc, out, err = run(ours, f"-C={config_dir}", "dkim-keygen", DEFAULT_DOMAIN, "k", f"--algo={request.param}")
    assert rc == 0, err
    return key_path(config_dir, "k"), dns_line(out)


def util_stdin(ours, *args, input):
    p = subprocess.run([str(ours), *args], input=input, capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode()


def test_what_we_sign_dkimpy_verifies(ours, config_dir, key):
    path, (name, value) = key
    rc, header, err = util_stdin(ours, f"-C={config_dir}", "dkim-sign", input=MESSAGE)
    assert rc == 0, err
    assert header.startswith(b"DKIM-Signature: v=1; a=") and header.endswith(b";\r\n")
    signed = header + MESSAGE
    assert dkim.verify(signed, dnsfunc=dnsfunc({name: value.encode()}))
    # A changed body or a header added on top fails.
    assert not dkim.verify(signed.replace(b"hungry", b"angry"), dnsfunc=dnsfunc({name: value.encode()}))
    assert not dkim.verify(header + b"Subject: other\r\n" + MESSAGE, dnsfunc=dnsfunc({name: value.encode()}))


def test_sign_finds_the_domain_from_the_message(ours, config_dir, key):
    rc, header, err = util_stdin(ours, f"-C={config_dir}", "dkim-sign", input=MESSAGE.replace(b"\r\n", b"\n"))
    assert rc == 0, err
    assert b"d=example.com; s=k;" in header


@pytest.mark.parametrize("algorithm", ["ed25519-sha256", "rsa-sha256"])
@pytest.mark.parametrize("canonicalize", [(b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple")])
def test_what_dkimpy_signs_we_verify(ours, tmp_path, algorithm, canonicalize):
    if algorithm == "ed25519-sha256":
        openssl("genpkey", "-algorithm", "ed25519", "-out", tmp_path / "k.pem")
        der = openssl("pkey", "-in", tmp_path / "k.pem", "-outform", "DER")
        private = base64.b64encode(der[-32:])
        record = f"v=DKIM1; k=ed25519; p={public_p(tmp_path / 'k.pem', 'ed25519')}"
    else:
        openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", tmp_path / "k.pem")
        private = (tmp_path / "k.pem").read_bytes()
        record = f"v=DKIM1; k=rsa; p={public_p(tmp_path / 'k.pem', 'rsa')}"
    signature = dkim.sign(MESSAGE, b"sel", b"example.com", private, canonicalize=canonicalize,
                          signature_algorithm=algorithm.encode())
    rc, out, err = util_stdin(ours, "dkim-verify", f"--txt={record}", input=signature + MESSAGE)
    assert rc == 0, err
    text = out.decode()
    assert text.startswith("Authentication-Results: ")
    assert re.search(r"\r\n\t;dkim=pass  header\.b=\S{12}  header\.d=example\.com\r\n", text), text
    # Tampered: a fail with chasquid's reason.
    rc, out, err = util_stdin(ours, "dkim-verify", f"--txt={record}",
                              input=signature + MESSAGE.replace(b"game", b"gamE"))
    assert rc == 0, err
    assert ';dkim=fail  reason="body hash mismatch' in out.decode()


def test_verify_without_signatures_is_none(ours):
    rc, out, err = util_stdin(ours, "dkim-verify", "--txt=v=DKIM1; p=", input=MESSAGE)
    assert rc == 0, err
    assert out.decode().endswith("\r\n\t;dkim=none\r\n\t\n")
