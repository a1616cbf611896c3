"""The README's "try it" command, as a normal user (issue 12 §1): a copy of
scripts/run-example and example/config, owned by an unprivileged user and
run as that user, starts the server, accepts mail from swaks on port 1025
and on the submission port with AUTH, and delivers it to the example's
Maildir. CHASQUID_BIN_DIR gives it the built programs (no second build).

It uses the example's fixed ports (1025, 1587, 1465, 1099 for monitoring).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import deployed
import processes
import server as S

PORTS = (1025, 1587, 1465, 1099)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def example():
    if any(port_open(p) for p in PORTS):
        pytest.fail(f"one of the example's ports {PORTS} is taken on this machine")
    work = Path(tempfile.mkdtemp(prefix="cqexample", dir="/tmp"))
    os.chmod(work, 0o755)
    shutil.copytree(S.REPO_ROOT / "scripts", work / "scripts")
    shutil.copytree(S.REPO_ROOT / "example" / "config", work / "example" / "config")
    bins = work / "installed"
    bins.mkdir()
    for name, path in (("chasquid", S.binary("CHASQUID", ".build/debug/chasquid")),
                       ("chasquid-util", S.chasquid_util_bin()),
                       ("maildir-deliver", S.binary("MAILDIR_DELIVER", ".build/debug/maildir-deliver"))):
        shutil.copy2(path, bins / name)
        os.chmod(bins / name, 0o755)
    deployed.own_state(work)
    log = open(work / "output.log", "wb")
    proc = subprocess.Popen(
        ["bash", "scripts/run-example"], cwd=str(work), stdin=subprocess.DEVNULL,
        stdout=log, stderr=log, env=deployed.daemon_env({"CHASQUID_BIN_DIR": str(bins)}),
        **deployed.popen_user())
    try:
        deadline = time.monotonic() + 60
        while not all(port_open(p) for p in PORTS[:3]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"run-example did not start (exit {proc.poll()}):\n"
                                     + (work / "output.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield work, proc
    finally:
        processes.stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def test_run_example_as_a_normal_user_accepts_and_delivers(example):
    work, proc = example
    # bash execs chasquid: the pid is the daemon's, and it is not root.
    uids = deployed.process_uids(proc.pid)
    uid = uids[0]
    assert uid != 0 and uid == (deployed.account() or (os.getuid(),))[0], uids
    assert Path(f"/proc/{proc.pid}/exe").resolve().name == "chasquid"

    plain = subprocess.run(
        ["swaks", "--server", "127.0.0.1:1025", "--from", "someone@remote.org",
         "--to", "user@example.com", "--header", "Subject: example-plain"],
        capture_output=True, timeout=60)
    assert plain.returncode == 0, plain.stdout.decode() + plain.stderr.decode()
    submitted = subprocess.run(
        ["swaks", "--server", "127.0.0.1:1587", "-tls", "--auth", "PLAIN",
         "--auth-user", "user@example.com", "--auth-password", "secret",
         "--from", "user@example.com", "--to", "user@example.com",
         "--header", "Subject: example-submitted"],
        capture_output=True, timeout=60)
    assert submitted.returncode == 0, submitted.stdout.decode() + submitted.stderr.decode()

    new = work / "example" / "run" / "mail" / "user" / "new"
    deadline = time.monotonic() + 30
    while True:
        texts = [p.read_bytes() for p in new.iterdir()] if new.is_dir() else []
        if (any(b"Subject: example-plain" in t for t in texts)
                and any(b"Subject: example-submitted" in t for t in texts)):
            break
        assert time.monotonic() < deadline, (work / "output.log").read_text(errors="replace")
        time.sleep(0.2)
    assert proc.poll() is None
