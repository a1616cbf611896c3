"""Runs the daemons as they are deployed: unprivileged, with an installed
system's owners and modes (DEVELOPERS.md: "Run it as it is deployed").

Where the tests run as root (CI), every daemon runs as DAEMON_USER, a system
user made on first use, like Debian's `mail`:
  - the config tree is root:DAEMON_USER, directories 0750 and files 0640
    (0750 if executable): readable by the daemon, not writable;
  - the state (data_dir, Maildirs, the mail log) is owned by DAEMON_USER;
  - the binaries are installed copies, 0755 under a 0755 directory, so a
    checkout inside a root-only directory still runs.
Run as any other user, the daemon is that user and nothing is changed.
"""

import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

DAEMON_USER = "chasquid-test"


def as_root():
    return os.geteuid() == 0


_account = None


def account():
    """(uid, gid) of the daemon user, made if missing; None unless root."""
    global _account
    if not as_root():
        return None
    if _account is None:
        try:
            entry = pwd.getpwnam(DAEMON_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", DAEMON_USER],
                check=True, capture_output=True, timeout=60)
            entry = pwd.getpwnam(DAEMON_USER)
        _account = (entry.pw_uid, entry.pw_gid)
    return _account


def popen_user():
    """subprocess keyword arguments that drop to the daemon user."""
    ids = account()
    if ids is None:
        return {}
    return {"user": ids[0], "group": ids[1], "extra_groups": []}


def daemon_env(extra=None):
    """The environment of a daemon: ours, with the daemon user's HOME and
    USER where it runs as that user (as systemd's User= gives)."""
    env = {**os.environ}
    if account() is not None:
        env.update(HOME="/nonexistent", USER=DAEMON_USER, LOGNAME=DAEMON_USER)
    env.update(extra or {})
    return env


def run_as_daemon_user(cmd, **kwargs):
    """subprocess.run as the daemon user (for checks of what it can read)."""
    return subprocess.run(cmd, **popen_user(), **kwargs)


def own_config(config_dir):
    """root:DAEMON_USER, 0750 directories, 0640 files (0750 executables)."""
    ids = account()
    if ids is None:
        return
    for root, dirs, files in os.walk(config_dir):
        os.chown(root, 0, ids[1])
        os.chmod(root, 0o750)
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            os.chown(path, 0, ids[1])
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, 0o750 if executable else 0o640)


def own_state(base, skip=None):
    """Gives `base` and everything under it, except `skip`, to the daemon
    user, keeping modes."""
    ids = account()
    if ids is None:
        return
    base, skip = Path(base), Path(skip) if skip else None
    os.chown(base, *ids)
    for root, dirs, files in os.walk(base):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chown(path, *ids, follow_symlinks=False)


_installed_dir = None
_installed = {}


def installed(path):
    """Where the daemon user can run `path` from: the path itself unless
    root, else a copy in a 0755 directory (made once per session, again if
    the build changed the binary)."""
    global _installed_dir
    path = Path(path)
    if not as_root() or not path.is_file():
        return path
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key in _installed:
        return _installed[key]
    if _installed_dir is None:
        _installed_dir = Path(tempfile.mkdtemp(prefix="cqbin"))
        os.chmod(_installed_dir, 0o755)
        atexit.register(shutil.rmtree, _installed_dir, True)
    target_dir = _installed_dir / str(len(_installed))
    target_dir.mkdir(mode=0o755)
    target = target_dir / path.name
    shutil.copy2(path, target)
    os.chmod(target, 0o755)
    _installed[key] = target
    return target


def hook_python():
    """An interpreter for test hooks that the daemon user can execute: the
    system's python3 where the daemons drop to DAEMON_USER (the test runner's
    own interpreter may live under a home directory it can't read)."""
    import sys
    if as_root():
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(candidate, os.X_OK):
                return candidate
    return sys.executable


def process_uids(pid):
    """The real, effective, saved and filesystem uids of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")
