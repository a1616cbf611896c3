"""The admin's first hour (issue 19): each usual mistake is made against a
real daemon or tool, and the test checks that it is named where it was
made, or that no mail is lost to it."""

import contextlib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import server as S
from server import ChasquidServer


def no_verify_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(srv, user, password):
    with smtplib.SMTP("127.0.0.1", srv.submission_port, timeout=30) as c:
        c.ehlo("client.test")
        c.starttls(context=no_verify_context())
        c.ehlo("client.test")
        try:
            c.login(user, password)
            return 235
        except smtplib.SMTPResponseException as e:
            return e.smtp_code


def send(srv, rcpt, subject="hello"):
    """Sends from a stranger over port 25; returns (code, text) of DATA, or
    of the RCPT that refused."""
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=30) as c:
        c.ehlo()
        assert c.docmd("MAIL", "FROM:<someone@remote.test>")[0] == 250
        code, text = c.docmd("RCPT", f"TO:<{rcpt}>")
        if code != 250:
            return code, text.decode()
        code, text = c.data(f"From: someone@remote.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())
        return code, text.decode()


def util(srv, *args):
    p = srv.util(*args)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@pytest.fixture
def srv():
    s = ChasquidServer()
    yield s
    s.cleanup()


def start_fails(srv):
    """Starts the daemon expecting it to refuse; returns its output."""
    with pytest.raises(RuntimeError) as raised:
        srv.start(timeout=30)
    return str(raised.value)


# ------------------------------------------------ mixed case in domains/


def test_mixed_case_user_add_goes_where_the_daemon_looks(srv):
    # The site already has example.org (its aliases); the admin types the
    # domain in mixed case.
    org = srv.config_dir / "domains" / "example.org"
    org.mkdir()
    (org / "aliases").write_text("sales: dave\n")
    rc, out, err = util(srv, "user-add", "Dave@Example.ORG", "--password=pw-dave")
    assert (rc, err) == (0, ""), out
    assert out == f'Using "{org}" for domain "Example.ORG"\nAdded user\n'
    assert not (srv.config_dir / "domains" / "Example.ORG").exists()
    srv.start()
    assert login(srv, "dave@example.org", "pw-dave") == 235
    assert login(srv, "Dave@Example.ORG", "pw-dave") == 235
    assert send(srv, "dave@example.org", "direct")[0] == 250
    assert send(srv, "SALES@example.org", "via alias")[0] == 250
    srv.wait_for_messages(2, user="dave")
    # The tools agree with the daemon.
    assert util(srv, "authenticate", "dave@EXAMPLE.org", "--password=pw-dave")[0] == 0
    assert util(srv, "check-userdb", "Example.ORG")[1] == "Database loaded (1 users)\n"


def test_a_new_mixed_case_domain_works(srv):
    # Created as typed, as chasquid does; the daemon reads it as example.net.
    rc, out, err = util(srv, "user-add", "Eve@Example.NET", "--password=pw")
    assert (rc, out, err) == (0, "Creating database\nAdded user\n", "")
    srv.start()
    assert login(srv, "eve@example.net", "pw") == 235
    # Later users of the domain join it, whatever their case.
    rc, out, err = util(srv, "user-add", "frank@example.net", "--password=pw2")
    net = srv.config_dir / "domains" / "Example.NET"
    assert (rc, out, err) == (0, f'Using "{net}" for domain "example.net"\nAdded user\n', "")
    srv.reload()
    srv.wait_for(lambda: login(srv, "frank@example.net", "pw2") == 235, what="frank after SIGHUP")


def test_variant_directories_are_merged_and_logged(srv):
    # What chasquid-util itself leaves behind: a users file under the name
    # as typed, next to the normalised directory.
    typed = srv.config_dir / "domains" / "Example.ORG"
    normal = srv.config_dir / "domains" / "example.org"
    typed.mkdir()
    normal.mkdir()
    shutil.copyfile(srv.config_dir / "domains" / "example.com" / "users", typed / "users")
    (normal / "aliases").write_text("info: user\n")
    (srv.config_dir / "domains" / "README").write_text("notes\n")
    srv.start()
    assert login(srv, "user@example.org", S.PASSWORD) == 235
    assert send(srv, "info@example.org")[0] == 250
    srv.wait_for_messages(1)
    log = srv.stderr()
    assert ("Domains: example.org: domains/Example.ORG and domains/example.org are the same domain; "
            "their users and aliases are merged") in log
    assert "Domains: domains/README: not a directory, skipped" in log
    # user-remove takes the user out of every directory of the domain.
    rc, out, err = util(srv, "user-remove", "user@example.org")
    assert (rc, out, err) == (0, "Removed user\n", "")
    srv.reload()
    srv.wait_for(lambda: login(srv, "user@example.org", S.PASSWORD) == 535, what="user gone after SIGHUP")


def test_tools_read_variant_directories_as_the_daemon_does(srv):
    typed = srv.config_dir / "domains" / "Example.ORG"
    normal = srv.config_dir / "domains" / "example.org"
    # A user in both directories with different passwords, one only in the
    # variant, and a DKIM key in the variant.
    typed.mkdir()
    for address, password in (("dave@Example.ORG", "old"), ("erin@Example.ORG", "pw")):
        assert util(srv, "user-add", address, f"--password={password}") == (0, "Added user\n", "")
    normal.mkdir()
    assert util(srv, "user-add", "dave@example.org", "--password=new") == (0, "Added user\n", "")
    rc, out, err = util(srv, "dkim-keygen", "Example.ORG", "sel", str(typed / "dkim:sel.pem"), "--algo=ed25519")
    assert rc == 0, (out, err)
    # The daemon's entry is the exactly named directory's.
    assert util(srv, "authenticate", "dave@example.org", "--password=new")[0] == 0
    assert util(srv, "authenticate", "dave@example.org", "--password=old")[0] == 1
    assert util(srv, "authenticate", "erin@example.org", "--password=pw")[0] == 0
    assert util(srv, "check-userdb", "example.org")[1] == "Database loaded (2 users)\n"
    srv.start()
    assert "  example.org (2 users, 0 aliases, 1 DKIM keys)" in srv.stderr()
    assert ('Domains: example.org: 1 user(s) in both domains/Example.ORG and domains/example.org ("dave"); '
            "using domains/example.org") in srv.stderr()
    assert login(srv, "dave@example.org", "new") == 235
    assert login(srv, "dave@example.org", "old") == 535
    # Removed from both, or the daemon would still know the old entry.
    assert util(srv, "user-remove", "dave@Example.ORG") == (0, "Removed user\n", "")
    assert util(srv, "authenticate", "dave@example.org", "--password=old")[0] == 1
    srv.reload()
    srv.wait_for(lambda: login(srv, "dave@example.org", "new") == 535, what="dave gone")
    assert login(srv, "dave@example.org", "old") == 535


@pytest.mark.parametrize("domain,message", [
    ("xn--zz.com", 'Error: invalid domain "xn--zz.com": idna: invalid label "xn--zz" (the daemon refuses'),
    ("../../escape", 'Error: invalid domain "../../escape": it names a directory outside domains/'),
])
def test_user_add_refuses_a_domain_the_daemon_cannot_read(srv, domain, message):
    rc, out, err = util(srv, "user-add", f"u@{domain}", "--password=pw")
    assert (rc, out) == (1, "")
    assert err.startswith(message), err
    assert sorted(p.name for p in (srv.config_dir / "domains").iterdir()) == ["example.com"]
    assert not (srv.base / "escape").exists()


def test_a_new_skip_is_logged_once_by_the_periodic_reload():
    srv = ChasquidServer(flags=["-testing__reload_every=200ms"])
    try:
        srv.start()
        (srv.config_dir / "domains" / "NOTES").write_text("x\n")
        srv.deploy()
        srv.wait_for(lambda: "Domains: domains/NOTES: not a directory, skipped" in srv.stderr(), what="note")
        time.sleep(1)
        assert srv.stderr().count("Domains: domains/NOTES: not a directory, skipped") == 1
    finally:
        srv.cleanup()


# ------------------------------------------------ aliases


def test_an_alias_target_without_domain_is_refused_at_start(srv):
    aliases = srv.config_dir / "domains" / "example.com" / "aliases"
    aliases.write_text("# help desk\nsupport: alice@\n")
    out = start_fails(srv)
    assert ('Error loading domains: aliases file error: "domains/example.com/aliases" line 2: '
            'right-side: address "alice@" has no domain after the @') in out


def test_an_alias_target_without_domain_keeps_the_old_table_on_reload(srv):
    srv.start()
    aliases = srv.config_dir / "domains" / "example.com" / "aliases"
    aliases.write_text("info: user\nsupport: alice@\n")
    srv.reload()
    srv.wait_for(lambda: 'line 2: right-side: address "alice@" has no domain' in srv.stderr(),
                 what="reload error")
    assert "keeping the previous ones" in srv.stderr()
    # The old table still delivers, and nothing went to a stray Maildir.
    assert send(srv, "postmaster@example.com")[0] == 250
    srv.wait_for_messages(1)
    assert sorted(p.name for p in srv.mail_dir.iterdir()) == ["user"]


# ------------------------------------------------ the MDA


def test_a_missing_mda_keeps_mail_queued_until_it_is_installed(srv):
    mda = srv.base / "bin" / "mda"
    srv.write_conf(mda_bin=str(mda))
    srv.start()
    assert f'Warning: mail_delivery_agent_bin "{mda}": no such file or directory' in srv.stderr()
    assert send(srv, "user@example.com", "kept")[0] == 250
    srv.wait_for_log(f"failed (temporary): MDA delivery failed: fork/exec {mda}: no such file or directory")
    assert "permanent" not in srv.mail_log()
    assert [f for f in srv.queue_files() if f.startswith("m:")]
    srv.stop()
    # No bounce went anywhere: the only message is still the queued one.
    assert srv.messages() == []
    # The admin installs it; the mail goes out.
    mda.parent.mkdir()
    shutil.copyfile(S.maildir_deliver_bin(), mda)
    mda.chmod(0o755)
    srv.start()
    msgs = srv.wait_for_messages(1, timeout=60)
    assert b"Subject: kept" in msgs[0]


def test_a_non_executable_mda_is_a_start_up_warning(srv):
    mda = srv.base / "mda"
    mda.write_text("#!/bin/sh\ncat >/dev/null\n")
    mda.chmod(0o644)
    srv.write_conf(mda_bin=str(mda))
    srv.start()
    assert f'Warning: mail_delivery_agent_bin "{mda}" is not an executable file for this user' in srv.stderr()


def test_a_bare_mda_name_not_in_path_is_a_start_up_warning(srv):
    srv.write_conf(mda_bin="no-such-mda")
    srv.start()
    assert 'Warning: mail_delivery_agent_bin "no-such-mda" is not in $PATH (' in srv.stderr()


# ------------------------------------------------ chasquid.conf values


@pytest.mark.parametrize("line,field,message", [
    ('mail_log_path: "<syslog"', "mail_log_path",
     'unknown destination "<syslog": use <syslog>, <stdout>, <stderr> or a file path'),
    ('smtp_address: "127.0.0.1"', "smtp_address",
     'invalid listening address "127.0.0.1": missing port (for example "127.0.0.1:25")'),
    ('submission_address: "127.0.0.1:25252525"', "submission_address",
     'invalid listening address "127.0.0.1:25252525": expected host:port with a port from 0 to 65535'),
])
def test_bad_values_are_refused_by_the_daemon_and_print_config(srv, line, field, message):
    text = srv.conf_text()
    key = line.split(":")[0]
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + ":")] + [line]
    (srv.config_dir / "chasquid.conf").write_text("\n".join(lines) + "\n")
    conf = srv.config_dir / "chasquid.conf"
    where = f'"{conf}" line {len(lines)}: field "{field}": {message}'
    rc, out, err = util(srv, "print-config")
    assert rc == 1 and out == ""
    assert where in err
    assert where in start_fails(srv)
    assert not (srv.config_dir / "<syslog").exists()


# ------------------------------------------------ maildir-deliver


def test_maildir_deliver_help_and_options(tmp_path):
    deliver = str(S.maildir_deliver_bin())
    p = subprocess.run([deliver, "--help"], cwd=tmp_path, capture_output=True, input=b"", timeout=30)
    assert p.returncode == 0
    assert p.stdout.startswith(b"Usage: maildir-deliver <maildir>\n")
    p = subprocess.run([deliver, "--verbose", "box"], cwd=tmp_path, capture_output=True, input=b"x\n",
                       timeout=30)
    # 75, not EX_USAGE: a wrong mail_delivery_agent_args keeps mail queued.
    assert p.returncode == 75
    assert p.stderr.startswith(b'maildir-deliver: unknown option "--verbose"\n')
    # chasquid's default arguments, left in place for maildir-deliver.
    p = subprocess.run([deliver, "-f", "a@b", "-d", "bob"], cwd=tmp_path, capture_output=True, input=b"x\n",
                       timeout=30)
    assert (p.returncode, p.stderr[:40]) == (75, b'maildir-deliver: unknown option "-f"\nUsa')
    assert list(tmp_path.iterdir()) == []
    # A path that starts with "-" after "--".
    p = subprocess.run([deliver, "--", "-box"], cwd=tmp_path, capture_output=True, input=b"m\n", timeout=30)
    assert p.returncode == 0, p.stderr
    assert [f.read_bytes() for f in (tmp_path / "-box" / "new").iterdir()] == [b"m\n"]


# ------------------------------------------------ certificates


def peer_common_name(port, servername):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.recv(1024)
        raw.sendall(b"EHLO client.test\r\n")
        while not raw.recv(4096).decode().rstrip().splitlines()[-1].startswith("250 "):
            pass
        raw.sendall(b"STARTTLS\r\n")
        assert raw.recv(1024).startswith(b"220")
        with no_verify_context().wrap_socket(raw, server_hostname=servername) as tls:
            der = tls.getpeercert(binary_form=True)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der,
                          capture_output=True, timeout=30).stdout.decode()
    return text.strip()


@pytest.mark.parametrize("hostname", [S.HOSTNAME, "MAIL.Example.com."])
def test_no_sni_gets_the_hostname_certificate(hostname):
    certs = Path(tempfile.mkdtemp(prefix="cqsni"))
    try:
        S.make_cert(certs / "aaa.example.net", "aaa.example.net")
        cache = S.cached_certs()
        srv = ChasquidServer(hostname=hostname, certs={"aaa.example.net": certs / "aaa.example.net",
                                                       S.HOSTNAME: cache / S.HOSTNAME})
        try:
            srv.start()
            assert peer_common_name(srv.smtp_port, None) == f"subject=CN = {S.HOSTNAME}"
            assert peer_common_name(srv.smtp_port, "unknown.example") == f"subject=CN = {S.HOSTNAME}"
            assert peer_common_name(srv.smtp_port, "aaa.example.net") == "subject=CN = aaa.example.net"
            assert f"Clients without SNI get the certificate in certs/{S.HOSTNAME}" in srv.stderr()
        finally:
            srv.cleanup()
    finally:
        shutil.rmtree(certs, ignore_errors=True)


def test_a_key_that_does_not_match_names_both_files(srv):
    other = S.cached_certs() / S.OTHER_NAME
    target = srv.config_dir / "certs" / S.HOSTNAME
    shutil.copyfile(other / "privkey.pem", target / "privkey.pem")
    out = start_fails(srv)
    assert (f"Error loading certificate in certs/{S.HOSTNAME}: tls: private key does not match public key "
            f"(certs/{S.HOSTNAME}/privkey.pem is not the key of the first certificate in "
            f"certs/{S.HOSTNAME}/fullchain.pem)") in out


def test_files_without_pem_data_are_named(srv):
    target = srv.config_dir / "certs" / S.HOSTNAME
    (target / "fullchain.pem").write_text("not a certificate\n")
    out = start_fails(srv)
    assert (f"Error loading certificate in certs/{S.HOSTNAME}: tls: failed to find any PEM data in certificate "
            f"input (certs/{S.HOSTNAME}/fullchain.pem)") in out, out
    shutil.copyfile(S.cached_certs() / S.HOSTNAME / "fullchain.pem", target / "fullchain.pem")
    (target / "privkey.pem").write_text("not a key\n")
    out = start_fails(srv)
    assert (f"Error loading certificate in certs/{S.HOSTNAME}: tls: failed to find any PEM data in key input "
            f"(certs/{S.HOSTNAME}/privkey.pem, or the key is encrypted)") in out, out


def test_a_missing_certs_directory_names_the_path(srv):
    shutil.rmtree(srv.config_dir / "certs")
    out = start_fails(srv)
    assert 'Error reading "certs/" directory: open certs/: no such file or directory' in out


# ------------------------------------------------ users file and listeners


def test_a_users_file_typo_names_the_line(srv):
    users = srv.config_dir / "domains" / "example.com" / "users"
    users.write_text('users {\n  key: "bob"\n  value {\n    plaintext { password: "x" }\n  }\n}\n')
    out = start_fails(srv)
    assert (f'users file error: parsing domains/example.com/users: line 4: unknown field "plaintext"') in out


@contextlib.contextmanager
def occupied(port):
    """Another server listening on 127.0.0.1:port."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        yield


def test_a_port_in_use_names_the_listener(srv):
    with occupied(srv.submission_port):
        out = start_fails(srv)
    assert (f"Error listening: listen tcp 127.0.0.1:{srv.submission_port} (submission): bind: address already "
            "in use (another server, or another chasquid, is listening there)") in out


def test_a_monitoring_port_in_use_is_named():
    srv = ChasquidServer(monitoring=True)
    try:
        with occupied(srv.mon_port):
            out = start_fails(srv)
        assert (f"Monitoring server failed: listen tcp 127.0.0.1:{srv.mon_port} (monitoring): bind: address "
                "already in use") in out
    finally:
        srv.cleanup()


# ------------------------------------------------ aliases-resolve and SIGHUP


def test_aliases_resolve_normalises_and_marks_missing_users(srv):
    (srv.config_dir / "domains" / "example.com" / "aliases").write_text("info: user, nobody\n")
    srv.start()
    rc, out, err = util(srv, "aliases-resolve", "Info@EXAMPLE.com")
    assert rc == 0
    assert out == "(email)  user@example.com\n(email)  nobody@example.com\n"
    assert err == ("Warning: nobody@example.com is no user of its domain: its mail goes to the MDA for a user "
                   "that does not exist\n")


def test_sighup_says_what_it_loaded_and_what_needs_a_restart(srv):
    srv.start()
    conf = srv.config_dir / "chasquid.conf"
    conf.write_text(conf.read_text() + "max_data_size_mb: 7\n")
    srv.reload()
    srv.wait_for(lambda: "restart chasquid" in srv.stderr(), what="config change note")
    log = srv.stderr()
    assert "chasquid.conf changed (max_data_size_mb): restart chasquid for that to take effect" in log
    after = log[log.index("Received SIGHUP"):]
    assert "Domains: 1 loaded" in after
    assert "  example.com (2 users, 2 aliases, 0 DKIM keys)" in after
    assert f"Certificate certs/{S.HOSTNAME} for" in after
