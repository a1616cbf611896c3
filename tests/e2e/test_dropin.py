"""Drop-in texts: what chasquid 1.18 says where admins, scripts and
monitoring look (issue 12 §2-§5), with the daemon run as it is deployed
(unprivileged, see deployed.py).

Start-up errors are Go's `<op> <path>: <errno text>` with the path as the
admin wrote it; the queue log lines are chasquid's; refusals and delivery
errors carry chasquid's words.
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

import deployed
import server as S
from server import ChasquidServer
from smtpraw import RawSMTP


@pytest.fixture
def srv():
    server = ChasquidServer()
    yield server
    server.cleanup()


def start_fails(srv, config_dir=None, timeout=30):
    """Runs the daemon (as deployed) on srv's layout, expecting it to refuse
    to start; returns its output. config_dir as given (relative to base)."""
    srv.deploy()
    cmd = [str(S.chasquid_bin()), f"-config_dir={config_dir or srv.config_dir}", S.empty_dns_flag()]
    p = subprocess.run(cmd, cwd=str(srv.base), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env=deployed.daemon_env(), **deployed.popen_user())
    out = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, f"exit {p.returncode}:\n{out}"
    return out


def set_conf(srv, **replace):
    """Rewrites chasquid.conf with some fields replaced (value None drops it)."""
    lines = []
    for line in srv.conf_text().splitlines():
        key = line.split(":", 1)[0]
        if key in replace:
            if replace[key] is not None:
                lines.append(f"{key}: {replace[key]}")
            replace[key] = "done" if replace[key] is not None else None
            continue
        lines.append(line)
    lines += [f"{k}: {v}" for k, v in replace.items() if v not in ("done", None)]
    (srv.config_dir / "chasquid.conf").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- unprivileged


def test_the_daemon_runs_unprivileged_and_serves_every_connection(srv):
    """As Debian runs it (User=mail): no uid of the daemon is 0, it cannot
    write its config, and one listener serves many connections in turn and
    at once, delivering through the MDA as that user (issue 12 §1: an
    unprivileged daemon used to close every connection at once)."""
    srv.start()
    uids = deployed.process_uids(srv.proc.pid)
    assert 0 not in uids, uids
    if deployed.as_root():
        assert set(uids) == {deployed.account()[0]}, uids
        denied = deployed.run_as_daemon_user(
            ["sh", "-c", f"echo x >> {srv.config_dir}/chasquid.conf"], capture_output=True, timeout=30)
        assert denied.returncode != 0, "the config is writable by the daemon"

    # In turn, then several open at once, on each of the three listeners.
    for port, tls in ((srv.smtp_port, False), (srv.submission_port, False),
                      (srv.tls_port, True), (srv.smtp_port, False)):
        c = RawSMTP(port, tls=tls, server_hostname=S.HOSTNAME if tls else None)
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        if port == srv.smtp_port:
            c.starttls(server_hostname=S.HOSTNAME)
            assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("QUIT")[0] == 221
        c.close()
    clients = [RawSMTP(srv.smtp_port) for _ in range(8)]
    try:
        for c in clients:
            assert c.reply()[0] == 220
        for i, c in enumerate(clients):
            assert c.cmd("EHLO client.test")[0] == 250
            assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
            assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            assert c.cmd(f"Subject: parallel {i}\r\n\r\nbody\r\n.")[0] == 250
    finally:
        for c in clients:
            c.close()
    srv.wait_for_messages(8)
    assert srv.proc.poll() is None
    err = srv.stderr() + srv.mail_log()
    assert "setting up the connection failed" not in err, err
    assert "ended:" not in err, err


# ---------------------------------------------------------------- start-up errors


def test_missing_config_is_named_as_given(srv):
    (srv.config_dir / "chasquid.conf").unlink()
    out = start_fails(srv, config_dir="conf")
    # chasquid's words, as chasquid-util says them too.
    assert ('Error loading config: failed to read config at "conf/chasquid.conf": '
            "open conf/chasquid.conf: no such file or directory") in out, out


def test_missing_and_empty_certs(srv):
    shutil.rmtree(srv.config_dir / "certs")
    out = start_fails(srv)
    assert 'Error reading "certs/" directory: open certs/: no such file or directory' in out, out
    (srv.config_dir / "certs").mkdir()
    out = start_fails(srv)
    assert 'No entries found in "certs/"' in out, out


def test_unopenable_mail_log(srv):
    set_conf(srv, mail_log_path='"/proc/no-such-dir/mail_log"')
    out = start_fails(srv)
    assert "open /proc/no-such-dir/mail_log: no such file or directory" in out, out


@pytest.mark.parametrize("name, message", [
    ("domaininfo", "mkdir ../data/domaininfo: not a directory"),
    ("queue", "Error initializing queue: mkdir ../data/queue: not a directory"),
])
def test_a_state_path_that_is_not_a_directory_refuses_to_start(srv, name, message):
    """A file where the queue or domaininfo directory should be: chasquid
    refuses to start; before, the queue case started on an empty queue."""
    set_conf(srv, data_dir='"../data"')
    (srv.data_dir / name).write_text("not a directory\n")
    out = start_fails(srv)
    assert message in out, out


def test_empty_listening_address(srv):
    set_conf(srv, submission_address='""')
    out = start_fails(srv)
    assert "Invalid empty listening address for submission" in out, out


@pytest.mark.parametrize("file", ["users", "aliases"])
def test_unreadable_users_and_aliases_files(srv, file):
    path = srv.config_dir / "domains" / S.DOMAIN / file
    srv.deploy()
    # Readable by root only: the daemon's user cannot open it.
    os.chmod(path, 0o600)
    if not deployed.as_root():
        os.chmod(path, 0o000)
    orig_deploy = srv.deploy
    srv.deploy = lambda: None
    try:
        out = start_fails(srv)
    finally:
        srv.deploy = orig_deploy
    assert f"{file} file error: open domains/{S.DOMAIN}/{file}: permission denied" in out, out


# ---------------------------------------------------------------- replies


def test_rcpt_too_long_and_lone_delimiter_domains(srv):
    srv.start()
    c = RawSMTP(srv.smtp_port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@xn--->") == (501, "5.1.8 Malformed sender domain (IDNA conversion failed)")
    assert c.cmd("MAIL FROM:<someone@sender.test>")[0] == 250
    assert c.cmd("RCPT TO:<user@xn--->") == (501, "5.1.2 Malformed destination domain (IDNA conversion failed)")
    c.cmd("QUIT")
    # A new session: three errors use up a session's budget.
    c = RawSMTP(srv.smtp_port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<someone@sender.test>")[0] == 250
    address = "u" * (321 - len("@example.com")) + "@example.com"
    assert len(address) == 321
    assert c.cmd(f"RCPT TO:<{address}>") == (501, "5.1.3 Destination address too long")
    # The session goes on.
    assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
    c.cmd("QUIT")


# ---------------------------------------------------------------- logs


def test_queue_log_lines(srv):
    srv.start()
    c = RawSMTP(srv.smtp_port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<someone@sender.test>")
    assert c.cmd(f"RCPT TO:<{S.USER}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    code, text = c.cmd("Subject: queue log\r\n\r\nhello\r\n.")
    assert code == 250, text
    qid = text.split()[-1]
    c.cmd("QUIT")
    srv.wait_for(lambda: f"Queue.SendLoop {qid}: all done" in srv.stderr(), what="all done logged")
    err = srv.stderr()
    assert f"Queue.SendLoop {qid}: from someone@sender.test" in err, err
    assert f"Queue.SendLoop {qid}: {S.USER} sent" in err, err


def test_relative_logfile_survives_rotation_and_a_failed_reopen_is_logged(srv):
    """-logfile relative to where the daemon was started (not the config
    dir), reopened on SIGHUP after rotation; a reopen that fails is said."""
    srv.flags = ["-logfile=daemon.log"]
    srv.start()
    log = srv.base / "daemon.log"
    srv.wait_for(lambda: log.exists() and "listening" in log.read_text(), what="log file written")
    assert not (srv.config_dir / "daemon.log").exists()
    log.rename(srv.base / "daemon.log.1")
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_for(lambda: log.exists() and "Received SIGHUP" in (srv.base / "daemon.log.1").read_text(),
                 what="a new log file after SIGHUP")
    c = RawSMTP(srv.smtp_port)
    c.reply()
    c.cmd("NO-SUCH-VERB")
    srv.wait_for(lambda: "SMTP.Conn" in log.read_text(), what="a session's error in the new file")

    # Now the reopen cannot create the file: the daemon says so, in the
    # file it still has open.
    log.rename(srv.base / "daemon.log.2")
    mode = srv.base.stat().st_mode
    os.chmod(srv.base, 0o555)
    try:
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for(lambda: "Error reopening log file" in (srv.base / "daemon.log.2").read_text(),
                     what="the failed reopen logged")
    finally:
        os.chmod(srv.base, mode)
    text = (srv.base / "daemon.log.2").read_text()
    assert f"Error reopening log file: open {srv.base}/daemon.log: permission denied" in text, text


# ---------------------------------------------------------------- chasquid-util


def test_password_prompt_reads_typed_ahead_input_through_a_pty(srv):
    """Fed through a pty before the prompt (as `script` does), the password
    is read: the terminal mode changes without flushing typed-ahead input."""
    util = S.chasquid_util_bin()
    p = subprocess.run(
        ["script", "-qfec", f"{util} -C={srv.config_dir} authenticate {S.USER}", "/dev/null"],
        input=f"{S.PASSWORD}\n{S.PASSWORD}\n".encode(), capture_output=True, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    assert "Authentication succeeded" in out, out
    assert "Error reading password" not in out, out
    # The terminal is left as it was: echo is back on after the prompt
    # (stty inside the same pty after chasquid-util).
    p = subprocess.run(
        ["script", "-qfec", f"sh -c '{util} -C={srv.config_dir} authenticate {S.USER}; stty -a'", "/dev/null"],
        input=f"{S.PASSWORD}\n{S.PASSWORD}\n".encode(), capture_output=True, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    assert re.search(r"(?<![-\w])echo(?![\w])", out), out


# ---------------------------------------------------------------- hooks and pipes


def test_alias_resolve_hook_failure_is_gos_exec_error(srv):
    hooks = srv.config_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    hook = hooks / "alias-resolve"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    srv.start()
    p = srv.util("aliases-resolve", "nobody-here@example.com")
    out = p.stdout.decode() + p.stderr.decode()
    assert "Error resolving: exit status 1" in out, out
    assert "alias-resolve hook" not in out, out


def test_failing_pipe_alias_records_exit_status(srv):
    aliases = srv.config_dir / "domains" / S.DOMAIN / "aliases"
    aliases.write_text(aliases.read_text() + "broken: | /bin/false\n")
    srv.start()
    c = RawSMTP(srv.smtp_port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<someone@sender.test>")
    assert c.cmd("RCPT TO:<broken@example.com>")[0] == 250
    c.cmd("DATA")
    code, text = c.cmd("Subject: pipe\r\n\r\nhello\r\n.")
    assert code == 250, text
    c.cmd("QUIT")
    srv.wait_for(lambda: "/bin/false failed" in srv.mail_log(), what="the pipe failure in the mail log")
    line = next(l for l in srv.mail_log().splitlines() if "/bin/false failed" in l)
    assert line.endswith("(permanent): exit status 1"), line
    assert "pipe delivery failed" not in srv.mail_log()
