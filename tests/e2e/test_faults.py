"""Faults against a real daemon (issue 18): the fault is made to happen,
then the test checks that nothing accepted was lost or damaged and that
the server serves again once the fault is gone.
"""

import os
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

import deployed
import server as S
from server import ChasquidServer, maildir_deliver_bin
from smtpraw import no_verify_context


def message(tag, size):
    body = (f"{tag} " * (size // (len(tag) + 1) + 1))[:size]
    lines = "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    return f"Subject: {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n{lines}\r\n".encode()


def held_mda(srv):
    """An MDA that holds mail (temporary failure, exit 75) until the file
    `allow` exists in srv.base, then delivers with maildir-deliver."""
    script = srv.base / "held-mda"
    script.write_text(f"#!/bin/sh\n[ -e {srv.base}/allow ] || exit 75\n"
                      f'exec {maildir_deliver_bin()} "$@"\n')
    script.chmod(0o755)
    return str(script)


def send(srv, data):
    """(code, text) of the end of DATA; the session must go on after it."""
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=60) as c:
        c.ehlo()
        assert c.mail("sender@sender.invalid")[0] == 250
        assert c.rcpt(S.USER)[0] == 250
        code, text = c.data(data)
        # Whatever the outcome, the client is still served.
        assert c.noop()[0] == 250
        return code, text


@pytest.fixture
def small_disk():
    """A daemon whose data_dir is an 8 MiB tmpfs of its own."""
    if not deployed.as_root():
        pytest.skip("mounting a small file system needs root")
    srv = ChasquidServer()
    srv.write_conf(mda_bin=held_mda(srv))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(srv.data_dir)],
                   check=True, timeout=30)
    try:
        yield srv
    finally:
        srv.stop()
        subprocess.run(["umount", str(srv.data_dir)], timeout=30)
        srv.cleanup()


def fill(path, leave):
    """Fills the file system of `path` until `leave` bytes are free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    st = os.statvfs(path)
    assert st.f_bavail * st.f_frsize <= leave + st.f_frsize


def queue_snapshot(srv):
    q = srv.data_dir / "queue"
    return {p.name: p.read_bytes() for p in q.iterdir()}


def test_a_full_disk_refuses_with_452_and_loses_nothing(small_disk):
    srv = small_disk
    srv.start()
    # Three messages accepted and held in the queue (the MDA refuses for now).
    sent = [message(f"held{i}", 100_000) for i in range(3)]
    for data in sent:
        assert send(srv, data)[0] == 250
    # `completed loop` comes after each envelope's rewrite: the queue is still.
    srv.wait_for(lambda: srv.mail_log().count("completed loop") >= 3, 30, "three held deliveries")
    before = queue_snapshot(srv)
    assert len(before) == 6, before.keys()

    # The disk fills up: the next message gets a 452, and nothing is left behind.
    fill(srv.data_dir, 16 * 1024)
    code, text = send(srv, message("refused", 300_000))
    assert (code, text) == (452, b"4.3.1 Insufficient system storage, try again later")
    assert queue_snapshot(srv) == before
    log = srv.stderr()
    assert "error: queueing the message failed: " in log and "no space left on device" in log, log
    # Our fault, not the client's: fail2ban's filter must not count it.
    assert "DATA failed" not in log, log

    # A restart on the full disk loads the queue, tries the held messages
    # again (their envelopes cannot be rewritten) and damages none of them.
    srv.restart()
    srv.wait_for(lambda: srv.mail_log().count("completed loop") >= 6, 30, "three more held deliveries")
    assert send(srv, message("refused-again", 300_000))[0] == 452
    assert queue_snapshot(srv).keys() == before.keys()
    for name, data in before.items():
        if name.startswith("d:"):
            assert queue_snapshot(srv)[name] == data, name

    # Space comes back: acceptance resumes by itself, no restart.
    (srv.data_dir / "filler").unlink()
    code, _ = send(srv, message("after", 300_000))
    assert code == 250

    # And every accepted message is delivered, once, intact.
    (srv.base / "allow").touch()
    srv.restart()
    srv.wait_for_messages(4, timeout=30)
    delivered = srv.messages()
    assert len(delivered) == 4
    for tag in ("held0", "held1", "held2", "after"):
        matching = [m for m in delivered if f"Message-ID: <{tag}@client.test>".encode() in m]
        assert len(matching) == 1, tag
        body = message(tag, 300_000 if tag == "after" else 100_000).split(b"\r\n\r\n", 1)[1]
        assert matching[0].replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")), tag
    srv.wait_for(lambda: srv.queue_files() == [], 30, "an empty queue")


def test_a_hung_mda_is_killed_with_its_children_retried_and_bounced_only_at_give_up():
    srv = ChasquidServer(
        flags=["-testing__delivery_timeout=1s", "-testing__retry_delay=2s"])
    try:
        # Mail for recv hangs, with a child of its own in the same process
        # group; everyone else's is delivered.
        script = srv.base / "hung-mda"
        script.write_text(
            "#!/bin/sh\n"
            f'case "$1" in */recv)\n'
            f"  sleep 1000 & echo $! >> {srv.base}/children\n"
            "  sleep 1000 ;;\n"
            f'*) exec {maildir_deliver_bin()} "$@" ;;\n'
            "esac\n")
        script.chmod(0o755)
        srv.write_conf(mda_bin=str(script), extra='give_up_send_after: "8s"')
        srv.start()
        with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=30) as c:
            c.starttls(context=no_verify_context())
            c.login(S.USER, S.PASSWORD)
            c.sendmail(S.USER, ["recv@example.com"], message("hung", 1_000))
        start = time.monotonic()

        # Each attempt is cut at its timeout, and its children with it.
        srv.wait_for(lambda: srv.mail_log().count("timed out after 1s") >= 2, 20,
                     f"two timed-out attempts in {srv.mail_log()}")
        children = [int(p) for p in (srv.base / "children").read_text().split()]
        assert len(children) >= 2
        time.sleep(0.5)
        for pid in children[:-1]:
            # Gone, or a zombie where no init reaps (containers).
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            assert "zombie" in status.lower(), (pid, status)
        # No bounce while it is being retried.
        assert srv.messages("user") == []

        # At give-up, exactly one DSN, to the sender, naming the recipient.
        dsn = srv.wait_for_messages(1, user="user", timeout=30)
        assert time.monotonic() - start >= 6, "bounced before give_up_send_after"
        assert b"recv@example.com" in dsn[0] and b"timed out after 1s" in dsn[0], dsn[0][:2000]
        attempts = srv.mail_log().count("to=recv@example.com failed (temporary)")
        assert 3 <= attempts <= 6, srv.mail_log()
        time.sleep(3)
        assert len(srv.messages("user")) == 1
        assert srv.queue_files() == []
    finally:
        srv.cleanup()


def test_a_bounce_that_cannot_be_queued_on_a_full_disk_waits_for_space(small_disk):
    srv = small_disk
    # Mail for recv is held (75) until `allow` exists, then refused for good.
    script = srv.base / "held-mda"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in */recv)\n'
        f"  [ -e {srv.base}/allow ] && exit 1\n"
        "  exit 75 ;;\n"
        f'*) exec {maildir_deliver_bin()} "$@" ;;\n'
        "esac\n")
    script.chmod(0o755)
    srv.flags += ["-testing__retry_delay=1s"]
    srv.start()
    with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, context=no_verify_context(), timeout=30) as c:
        c.login(S.USER, S.PASSWORD)
        c.sendmail(S.USER, ["recv@example.com"], message("bounced", 20_000))
    srv.wait_for(lambda: "completed loop" in srv.mail_log(), 30, "a held delivery")
    fill(srv.data_dir, 4 * 1024)
    (srv.base / "allow").touch()
    # The delivery fails for good, the bounce cannot be written: the
    # message stays queued instead of being dropped unbounced.
    srv.wait_for(lambda: "failed to queue DSN: " in srv.mail_log() and "trying again in 1s" in srv.mail_log(),
                 30, "a DSN waiting for space")
    assert [n for n in srv.queue_files() if n.startswith("m:")], srv.queue_files()
    assert "all done" not in srv.mail_log()
    # Space comes back: the bounce goes out, then the message is removed.
    (srv.data_dir / "filler").unlink()
    dsn = srv.wait_for_messages(1, user="user", timeout=30)
    assert b"recv@example.com" in dsn[0]
    srv.wait_for(lambda: "all done" in srv.mail_log(), 30, "the item removed")
