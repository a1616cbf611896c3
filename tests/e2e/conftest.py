"""Fixtures and helpers for the end-to-end tests of chasquid-util.

The binary under test is ours (the Swift build). Debian's chasquid-util
(1.11, from the `chasquid` package) is the reference for the cross
compatibility tests; those are skipped when it is not installed.

Environment:
  CHASQUID_UTIL          our binary; relative paths are taken from the repo
                         root (default .build/debug/chasquid-util).
  DEBIAN_CHASQUID_UTIL   the reference binary (default: chasquid-util found
                         in /usr/bin, /usr/sbin or /bin).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import server as S
from dnstest import DNSServer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OURS = ".build/debug/chasquid-util"
DEFAULT_HOSTNAME = "mx.example.com"
DEFAULT_DOMAIN = "example.com"

# Every subprocess gets this umask, so directory modes are predictable.
UMASK = 0o022


def _child_setup():
    os.umask(UMASK)


def run(binary, *args, input=None, cwd=None, timeout=60, env=None):
    """Runs `binary args...` and returns (rc, stdout, stderr) as text.

    `input` (str or bytes) is written to stdin; without it stdin is
    /dev/null, so nothing is a terminal and prompts see end of input.
    """
    kwargs = {}
    if input is None:
        kwargs["stdin"] = subprocess.DEVNULL
    else:
        kwargs["input"] = input.encode("utf-8") if isinstance(input, str) else input
    proc = subprocess.run(
        [str(binary), *[str(a) for a in args]],
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        preexec_fn=_child_setup,
        **kwargs,
    )
    return (
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def users_path(config_dir, domain=DEFAULT_DOMAIN):
    return Path(config_dir) / "domains" / domain / "users"


def write_config(config_dir, text):
    """Replaces chasquid.conf in `config_dir` with `text`."""
    path = Path(config_dir) / "chasquid.conf"
    path.write_text(text, encoding="utf-8")
    return path


def default_config_text(data_dir):
    return f'hostname: "{DEFAULT_HOSTNAME}"\ndata_dir: "{data_dir}"\n'


@pytest.fixture(scope="session")
def ours():
    """Path of our chasquid-util."""
    configured = os.environ.get("CHASQUID_UTIL", DEFAULT_OURS)
    path = Path(configured)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"our chasquid-util is not built at {path} "
            "(run `swift build` first, or set CHASQUID_UTIL)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def debian(ours):
    """Path of Debian's reference chasquid-util; skips when absent."""
    configured = os.environ.get("DEBIAN_CHASQUID_UTIL")
    if configured:
        path = shutil.which(configured)
    else:
        path = shutil.which("chasquid-util", path="/usr/bin:/usr/sbin:/bin")
    if not path:
        pytest.skip(
            "Debian's chasquid-util is not installed "
            "(apt-get install chasquid provides /usr/bin/chasquid-util)"
        )
    path = Path(path)
    if path.resolve() == Path(ours).resolve():
        pytest.skip(f"{path} is our own chasquid-util, not Debian's reference")
    return path


@pytest.fixture
def config_dir(tmp_path):
    """A config dir laid out like /etc/chasquid:

        <tmp>/conf/chasquid.conf      hostname + data_dir (<tmp>/data)
        <tmp>/conf/certs/mx.example.com/
        <tmp>/conf/domains/example.com/   (empty: no users file yet)
    """
    conf = tmp_path / "conf"
    (conf / "certs" / DEFAULT_HOSTNAME).mkdir(parents=True)
    (conf / "domains" / DEFAULT_DOMAIN).mkdir(parents=True)
    data = tmp_path / "data"
    data.mkdir()
    write_config(conf, default_config_text(data))
    return conf


@pytest.fixture
def dns_server():
    """A started test DNS server (tests/dnsserver/dnsserver.py) with an empty
    zone, stopped after the test. Use dns_server.set_zone({...}) or
    .update(name, records); pass dns_server.chasquid_flag to the daemon.
    For a server shared by a module, use dnstest.DNSServer directly."""
    server = DNSServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _cleanup_caches():
    """The certificates and users file server.py makes once per session
    are removed at its end."""
    yield
    S.cleanup_caches()
