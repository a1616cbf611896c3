"""Operating the daemon: systemd socket activation, SIGHUP reloads."""

import os
import signal
import socket
import subprocess
import time

import pytest

import deployed
import server as S
from server import ChasquidServer


def read_greeting(port, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        return s.recv(1024).decode()


def cert_fingerprint(port, servername):
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername],
        input=b"", capture_output=True, timeout=30).stdout
    cert = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                          input=out, capture_output=True, timeout=30).stdout.decode()
    assert "Fingerprint" in cert, out
    return cert.strip()


@pytest.fixture
def srv():
    server = ChasquidServer()
    yield server
    server.cleanup()


def test_systemd_socket_activation(srv):
    """Sockets passed in LISTEN_FDS, named by LISTEN_FDNAMES (COMPAT.md §11.3)."""
    smtp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    smtp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    smtp.bind(("127.0.0.1", 0))
    smtp.listen(16)
    submission = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    submission.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    submission.bind(("127.0.0.1", 0))
    submission.listen(16)
    smtp_port, submission_port = smtp.getsockname()[1], submission.getsockname()[1]

    conf = srv.conf_text().replace(
        f'smtp_address: "127.0.0.1:{srv.smtp_port}"', 'smtp_address: "systemd"').replace(
        f'submission_address: "127.0.0.1:{srv.submission_port}"', 'submission_address: "systemd"')
    (srv.config_dir / "chasquid.conf").write_text(conf)

    def child_setup():
        os.dup2(smtp.fileno(), 3)
        os.dup2(submission.fileno(), 4)

    srv.deploy()
    env = deployed.daemon_env({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "smtp:submission"})
    with open(srv.stderr_path, "ab") as err:
        # LISTEN_PID is the pid of the shell, which execs the daemon (as
        # systemd sets it for the process it starts).
        proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"',
             str(S.chasquid_bin()), f"-config_dir={srv.config_dir}", S.empty_dns_flag()],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(3, 4),
            preexec_fn=child_setup, env=env, **deployed.popen_user())
    try:
        deadline = time.monotonic() + 30
        while f"127.0.0.1:{srv.tls_port}" not in srv.mail_log():
            assert proc.poll() is None, srv.stderr()
            assert time.monotonic() < deadline, srv.stderr()
            time.sleep(0.05)
        assert read_greeting(smtp_port).startswith("220 mail.example.com ESMTP")
        assert read_greeting(submission_port).startswith("220 ")
        # Each socket serves its own mode: submission wants AUTH before MAIL.
        with socket.create_connection(("127.0.0.1", submission_port), timeout=10) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(b"EHLO x\r\nMAIL FROM:<a@b.com>\r\n")
            f.flush()
            lines = [f.readline() for _ in range(9)]
            assert lines[-1].startswith(b"550 5.7.9"), lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        smtp.close()
        submission.close()


def test_systemd_pid_mismatch_is_fatal(srv):
    srv.deploy()
    env = deployed.daemon_env({"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    result = subprocess.run([str(S.chasquid_bin()), f"-config_dir={srv.config_dir}"],
                            env=env, capture_output=True, timeout=30, **deployed.popen_user())
    assert result.returncode == 1
    assert b"Error getting systemd listeners" in result.stderr


def test_sighup_reloads_aliases_and_certificates(srv):
    srv.start()
    before = cert_fingerprint(srv.tls_port, S.HOSTNAME)

    # A renewed certificate (certbot replaced the files) and a new alias.
    S.make_cert(srv.config_dir / "certs" / S.HOSTNAME, S.HOSTNAME)
    aliases = srv.config_dir / "domains" / S.DOMAIN / "aliases"
    aliases.write_text(aliases.read_text() + "\nnewalias: user\n")
    srv.reload()
    srv.wait_for(lambda: "Received SIGHUP" in srv.stderr(), what="SIGHUP handled")

    after = cert_fingerprint(srv.tls_port, S.HOSTNAME)
    assert after != before, "the renewed certificate is served without a restart"
    out = subprocess.run(
        [str(S.chasquid_util_bin()), f"-C={srv.config_dir}", "aliases-resolve", "newalias@example.com"],
        capture_output=True, timeout=30, cwd=str(srv.base))
    assert out.stdout.decode() == "(email)  user@example.com\n", out


def test_a_broken_reload_keeps_serving(srv):
    srv.start()
    aliases = srv.config_dir / "domains" / S.DOMAIN / "aliases"
    aliases.write_text("this line has no colon\n")
    srv.reload()
    srv.wait_for(lambda: "keeping the previous ones" in srv.stderr(), what="reload error logged")
    assert srv.proc.poll() is None
    assert read_greeting(srv.smtp_port).startswith("220 ")
    assert "line 1: missing ':'" in srv.stderr()


def test_sigterm_drains_transactions_in_progress(srv):
    """SIGTERM: idle sessions get 421, a message in DATA is finished and
    queued, then the daemon exits 0 (COMPAT.md §22.1)."""
    srv.start()

    def session():
        s = socket.create_connection(("127.0.0.1", srv.smtp_port), timeout=10)
        f = s.makefile("rwb")
        assert f.readline().startswith(b"220")
        f.write(b"HELO client\r\n")
        f.flush()
        assert f.readline().startswith(b"250")
        return s, f

    idle, idle_f = session()
    busy, busy_f = session()
    busy_f.write(b"MAIL FROM:<a@remote.org>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
    busy_f.flush()
    assert [busy_f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    busy_f.write(b"Subject: drained\r\n\r\nfirst half\r\n")
    busy_f.flush()
    time.sleep(0.3)

    srv.proc.send_signal(signal.SIGTERM)
    assert idle_f.readline().startswith(b"421 4.3.2"), "an idle session is told to come back later"
    assert idle_f.readline() == b"", "and closed"
    assert srv.proc.poll() is None, "the daemon waits for the message in DATA"

    busy_f.write(b"second half\r\n.\r\n")
    busy_f.flush()
    assert busy_f.readline().startswith(b"250 2.0.0"), "the message is accepted"
    assert busy_f.readline().startswith(b"421 4.3.2")
    assert srv.proc.wait(timeout=15) == 0
    idle.close()
    busy.close()

    # It was queued before the 250, so a restart delivers it.
    srv.start()
    srv.wait_for(lambda: any(b"drained" in m for m in srv.messages()), what="drained message delivered")
