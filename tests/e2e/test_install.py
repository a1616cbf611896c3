"""Installation (docs/install.md): `make install-binaries` and `make
install-config-skeleton` with DESTDIR and PREFIX, the systemd units
(`systemd-analyze verify`, and socket activation through
`systemd-socket-activate` with the units' own socket names), the man
pages (`man -l`), and a fresh install that starts and delivers.

The binaries come from the debug build the suite already made (the
Makefile's SWIFT=true BUILD_DIR=.build/debug), so no release build runs
here.
"""

import os
import pwd
import re
import shutil
import smtplib
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import deployed
import processes
import server as S

REPO = S.REPO_ROOT
PROGRAMS = ["chasquid", "chasquid-util", "mda-lmtp", "maildir-deliver", "smtp-check"]
UNITS = ["chasquid.service", "chasquid-smtp.socket", "chasquid-submission.socket", "chasquid-submission_tls.socket"]


def util(*args):
    p = S.run_bin(list(args), text=True)
    return p.returncode, p.stdout, p.stderr


def make(*targets, **variables):
    args = ["make", "-s", "-C", str(REPO), *targets, "SWIFT=true", "BUILD_DIR=.build/debug",
            *[f"{k}={v}" for k, v in variables.items()]]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def tmpdir():
    d = Path(tempfile.mkdtemp(prefix="inst"))
    d.chmod(0o755)
    return d


@pytest.fixture
def destdir():
    d = tmpdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_destdir_layout(destdir):
    make("install-binaries", "install-config-skeleton", DESTDIR=destdir, PREFIX="/usr")
    for p in PROGRAMS:
        assert mode(destdir / "usr/bin" / p) == 0o755, p
    for page in ["man1/chasquid.1", "man1/chasquid-util.1", "man1/mda-lmtp.1", "man1/maildir-deliver.1", "man1/smtp-check.1",
                 "man5/chasquid.conf.5"]:
        assert (destdir / "usr/share/man" / page).is_file(), page
    conf = destdir / "etc/chasquid"
    assert (conf / "chasquid.conf").is_file() and (conf / "certs").is_dir() and (conf / "domains").is_dir()
    assert mode(conf / "hooks/post-data") == 0o755
    assert (conf / "hooks/post-data").read_bytes() == (REPO / "etc/chasquid/hooks/post-data").read_bytes()
    assert (destdir / "etc/fail2ban/filter.d/chasquid.conf").is_file()
    data = destdir / "var/lib/chasquid"
    assert mode(data) == 0o700
    if os.geteuid() == 0:
        assert data.stat().st_uid == pwd.getpwnam("mail").pw_uid
    service = (destdir / "etc/systemd/system/chasquid.service").read_text()
    # The paths inside the units are the installed ones, without DESTDIR.
    assert "ExecStart=/usr/bin/chasquid -config_dir=/etc/chasquid\n" in service
    assert "User=mail\n" in service and "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in service
    assert str(destdir) not in service


def test_the_skeleton_never_overwrites_an_admins_files(destdir):
    make("install-config-skeleton", DESTDIR=destdir)
    conf = destdir / "etc/chasquid/chasquid.conf"
    conf.write_text('hostname: "mine"\n')
    unit = destdir / "etc/systemd/system/chasquid.service"
    unit.write_text("# edited\n")
    make("install-config-skeleton", DESTDIR=destdir)
    assert conf.read_text() == 'hostname: "mine"\n'
    assert unit.read_text() == "# edited\n"


def test_the_example_config_is_valid_and_all_defaults(destdir):
    """Every line of the example is a comment: the effective config is
    the defaults, and uncommenting a whole field's example parses."""
    make("install-config-skeleton", DESTDIR=destdir)
    conf_dir = destdir / "etc/chasquid"
    text = (conf_dir / "chasquid.conf").read_text()
    assert all(line.startswith("#") or not line.strip() for line in text.splitlines())
    rc, out, err = util(S.chasquid_util_bin(), f"-C={conf_dir}", "print-config")
    assert rc == 0, err
    assert re.search(r'^data_dir: +"/var/lib/chasquid"$', out, re.M)
    # Uncommented, the example values all parse.
    examples = "\n".join(line[1:] for line in text.splitlines()
                         if re.match(r"#[a-z_]+: ", line) and "mda-lmtp" not in line)
    (conf_dir / "chasquid.conf").write_text(examples + "\n")
    rc, out, err = util(S.chasquid_util_bin(), f"-C={conf_dir}", "print-config")
    assert rc == 0, err + examples


@pytest.mark.parametrize("page", ["chasquid.1", "chasquid-util.1", "mda-lmtp.1", "maildir-deliver.1", "smtp-check.1",
                                  "chasquid.conf.5"])
def test_man_pages_render_without_warnings(page):
    p = subprocess.run(["man", "--warnings", "-l", str(REPO / "man" / page)], capture_output=True,
                       env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""},
                       timeout=60)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    name = page.rsplit(".", 1)[0].upper()
    assert name.encode() in p.stdout and b"DESCRIPTION" in p.stdout


def test_systemd_units_verify():
    d = tmpdir()
    try:
        # ExecStart must exist for verify: install for real under d.
        make("install-binaries", "install-config-skeleton", PREFIX=d / "usr", SYSCONFDIR=d / "etc",
             LOCALSTATEDIR=d / "var")
        units = d / "etc/systemd/system"
        p = subprocess.run(["systemd-analyze", "verify", *[str(units / u) for u in UNITS]],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
        # And verify does catch a broken unit, so the check above means something.
        broken = units / "chasquid.service"
        broken.write_text(broken.read_text().replace("Type=simple", "Tpye=simple"))
        p = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True,
                           timeout=120)
        assert "Unknown key" in p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def socket_names(units_dir):
    """{FileDescriptorName: ListenStream} from the installed .socket units."""
    names = {}
    for u in UNITS[1:]:
        text = (units_dir / u).read_text()
        names[re.search(r"^FileDescriptorName=(\S+)$", text, re.M).group(1)] = \
            re.search(r"^ListenStream=(\S+)$", text, re.M).group(1)
    return names


@pytest.mark.skipif(not deployed.as_root() and not os.environ.get("CI"), reason="needs root to install as mail")
def test_a_fresh_install_starts_through_socket_activation_and_delivers():
    d = tmpdir()
    proc = None
    try:
        make("install-binaries", "install-config-skeleton", PREFIX=d / "usr", SYSCONFDIR=d / "etc",
             LOCALSTATEDIR=d / "var")
        conf = d / "etc/chasquid"
        bindir = d / "usr/bin"
        # What an admin does next: a certificate, a domain, a user, the MDA.
        cache = S.cached_certs()
        shutil.copytree(cache / S.HOSTNAME, conf / "certs" / S.HOSTNAME)
        (conf / "domains/example.com").mkdir()
        rc, out, err = util(bindir / "chasquid-util", f"-C={conf}", "user-add", S.USER,
                            f"--password={S.PASSWORD}")
        assert rc == 0, err
        mail = d / "mail"
        mail.mkdir()
        with open(conf / "chasquid.conf", "a") as f:
            f.write(f'hostname: "{S.HOSTNAME}"\n'
                    f'data_dir: "{d}/var/lib/chasquid"\n'
                    f'mail_log_path: "{d}/mail.log"\n'
                    f'mail_delivery_agent_bin: "{bindir}/maildir-deliver"\n'
                    f'mail_delivery_agent_args: "{mail}/%to_user%"\n')
        # The installed owners: config readable by the daemon user, state its own.
        deployed.own_config(conf)
        deployed.own_state(d / "var/lib/chasquid")
        deployed.own_state(mail)
        (d / "mail.log").touch()
        deployed.own_state(d / "mail.log")

        names = socket_names(d / "etc/systemd/system")
        assert names == {"smtp": "25", "submission": "587", "submission_tls": "465"}
        ports = {name: S.free_port() for name in names}
        ids = deployed.account()
        # systemd-socket-activate binds the sockets (the units' names, our
        # ports) and execs the daemon as the daemon user, keeping its pid.
        cmd = ["systemd-socket-activate"]
        for name, port in ports.items():
            cmd += ["-l", f"127.0.0.1:{port}"]
        cmd += ["--fdname=" + ":".join(ports), "setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}",
                "--clear-groups", str(bindir / "chasquid"), f"-config_dir={conf}", S.empty_dns_flag(),
                "-testing__outgoing_smtp_port=1"]
        log = open(d / "stderr.log", "wb")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(d))
        # It binds, then starts the daemon on the first connection, which
        # waits in the backlog meanwhile: as systemd does.
        deadline = time.monotonic() + 30
        while (d / "stderr.log").read_bytes().count(b"Listening on") < 3:
            assert proc.poll() is None, (d / "stderr.log").read_text()
            assert time.monotonic() < deadline, (d / "stderr.log").read_text()
            time.sleep(0.1)
        subject = f"install-{uuid.uuid4().hex[:8]}"
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as c:
            c.sendmail("someone@sender.invalid", [S.USER], f"Subject: {subject}\r\n\r\nhello\r\n")
        S.wait_for(lambda: any(subject in p.read_text() for p in (mail / "user/new").glob("*"))
                   if (mail / "user/new").is_dir() else False, 30, "delivery")
        log_text = (d / "stderr.log").read_text()
        # Each named socket reached its listener (COMPAT.md: systemd addresses).
        for mode in ["SMTP", "submission", "submission+TLS"]:
            assert re.search(rf"Server listening on .* \({re.escape(mode)}\)", log_text), log_text
        assert deployed.process_uids(proc.pid)[0] == ids[0], "the daemon runs as the daemon user"
    finally:
        if proc is not None:
            processes.stop(proc)
        shutil.rmtree(d, ignore_errors=True)
