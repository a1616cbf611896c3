"""The shipped fail2ban filter (etc/fail2ban/filter.d/chasquid.conf) against
the real daemon log, checked with the real `fail2ban-regex`.

Contract: COMPAT.md §11.5. A daemon started with `-logfile=<path>` (lines
prefixed `YYYY-MM-DD HH:MM:SS.uuuuuu `) is provoked with a failed AUTH, a
relay refusal, an unknown command, too many errors and an HTTP request, plus
clean sessions; then fail2ban-regex must match exactly the provoked lines,
each with host 127.0.0.1. The same messages are also checked in the forms
fail2ban sees from syslog (/var/log/syslog, traditional and RFC 3339 dates)
and from the journal (`host chasquid[pid]: message`, no date in the text).

The filter is loaded the way an installed one is: copied next to the system's
filter.d/common.conf (its `before = common.conf`).

Needs fail2ban (`apt-get install fail2ban`); skipped without it, except in
CI (CI set), where it fails.
"""

import datetime
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import base64
from pathlib import Path

import pytest

import server as S
from server import ChasquidServer
from smtpraw import RawSMTP, no_verify_context

FILTER = S.REPO_ROOT / "etc" / "fail2ban" / "filter.d" / "chasquid.conf"
JAIL = S.REPO_ROOT / "etc" / "fail2ban" / "jail.d" / "chasquid.conf"
FAIL2BAN_REGEX = shutil.which("fail2ban-regex")
COMMON_CONF = Path(os.environ.get("FAIL2BAN_COMMON_CONF", "/etc/fail2ban/filter.d/common.conf"))

_missing = None
if not FAIL2BAN_REGEX:
    _missing = "fail2ban-regex not installed (apt-get install fail2ban)"
elif not COMMON_CONF.is_file():
    _missing = f"fail2ban's {COMMON_CONF} not found"

# Skipped on a developer machine without fail2ban; never in CI, which
# installs it (.ci/run): there a missing tool fails the run.
pytestmark = pytest.mark.skipif(bool(_missing) and not os.environ.get("CI"), reason=_missing or "")

# `YYYY-MM-DD HH:MM:SS.uuuuuu ` at the start of every -logfile line.
TS = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


# ---------------------------------------------------------------- helpers


def plain_b64(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def run_regex(log, filter_path, *options):
    """fail2ban-regex [options] <log> <filter>; returns its stdout."""
    p = subprocess.run([FAIL2BAN_REGEX, *options, str(log), str(filter_path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"fail2ban-regex failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def matches(log, filter_path, *options):
    """[(ip, line)] for every matched line, in order (`-o`)."""
    out = run_regex(log, filter_path, "-o", "<ip>\t<matches>", *options)
    result = []
    for line in out.splitlines():
        if "\t" in line:
            ip, text = line.split("\t", 1)
            result.append((ip, text))
    return result


def summary(out):
    """(lines, matched, missed) from fail2ban-regex's `Lines:` summary."""
    m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(3)), int(m.group(4))


def section(out, title):
    """The lines of a `|- Matched line(s):` / `|- Missed line(s):` block."""
    m = re.search(rf"^\|- {title} line\(s\):\n((?:\|  .*\n)*)", out, re.M)
    return [l[3:] for l in m.group(1).splitlines()] if m else []


def syslog_date(now):
    return f"{MONTHS[now.month - 1]} {now.day:2d} {now:%H:%M:%S}"


# ---------------------------------------------------------------- fixtures


class Provoked:
    """What the module fixture did: the log file, the local port of each
    session, and the messages (without timestamp) of the log file."""


@pytest.fixture(scope="module")
def f2b_filter(tmp_path_factory):
    """Our filter, installed next to the system's common.conf."""
    if _missing:
        pytest.fail(f"{_missing} (CI is set: fail2ban must be installed; see .ci/run)", pytrace=False)
    d = tmp_path_factory.mktemp("fail2ban") / "filter.d"
    d.mkdir()
    shutil.copyfile(COMMON_CONF, d / "common.conf")
    shutil.copyfile(FILTER, d / "chasquid.conf")
    return d / "chasquid.conf"


@pytest.fixture(scope="module")
def provoked(f2b_filter, tmp_path_factory):
    # In the daemon's own base (given to the daemon user), as an installed
    # system's /var/log/chasquid is the mail user's.
    base = Path(tempfile.mkdtemp(prefix="cqs", dir="/tmp"))
    logfile = base / "chasquid.log"
    srv = ChasquidServer(base=base, flags=[f"-logfile={logfile}", "-v=1"])
    r = Provoked()
    # Kept for the tests after the daemon's base is gone.
    r.logfile = tmp_path_factory.mktemp("f2blog") / "chasquid.log"
    try:
        srv.start()

        # Clean session 1: submission, STARTTLS, AUTH, one message.
        with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=20) as s:
            r.good_submission = s.sock.getsockname()[1]
            s.starttls(context=no_verify_context())
            s.login(S.USER, S.PASSWORD)
            s.sendmail(S.USER, [S.USER], b"Subject: fine\r\n\r\nAll good.\r\n")
        # Clean session 2: port 25, mail to a local user, RSET, NOOP.
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, local_hostname="client.test", timeout=20) as s:
            r.good_smtp = s.sock.getsockname()[1]
            s.sendmail("sender@sender.invalid", [S.USER], b"Subject: fine too\r\n\r\nAll good.\r\n")
            assert s.rset()[0] == 250
            assert s.noop()[0] == 250
        srv.wait_for_messages(2)

        # Failed AUTH on the submission port, after STARTTLS.
        with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test", timeout=20) as s:
            r.auth = s.sock.getsockname()[1]
            s.starttls(context=no_verify_context())
            s.ehlo()
            code, _ = s.docmd("AUTH", "PLAIN " + plain_b64(S.USER, "wrong password"))
            assert code == 535

        # Relay refused on port 25.
        c = RawSMTP(srv.smtp_port, timeout=20)
        r.relay = c.local_port
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        code, text = c.cmd("RCPT TO:<someone@remote.invalid>")
        assert (code, text.split("\n")[-1]) == (503, "5.7.1 Relay not allowed")
        assert c.cmd("QUIT")[0] == 221
        c.close()

        # An unknown command.
        c = RawSMTP(srv.smtp_port, timeout=20)
        r.unknown = c.local_port
        assert c.reply()[0] == 220
        assert c.cmd("XYZZY plugh")[0] == 500
        assert c.cmd("QUIT")[0] == 221
        c.close()

        # An error outside the filter's list (EHLO with no argument): logged,
        # but not matched.
        c = RawSMTP(srv.smtp_port, timeout=20)
        r.ehlo = c.local_port
        assert c.reply()[0] == 220
        assert c.cmd("EHLO")[0] == 501
        assert c.cmd("QUIT")[0] == 221
        c.close()

        # Too many errors: the third error is replaced by 421 and closes.
        c = RawSMTP(srv.smtp_port, timeout=20)
        r.errors = c.local_port
        assert c.reply()[0] == 220
        assert c.cmd("FOOBAR1")[0] == 500
        assert c.cmd("RCPT TO:<user@example.com>")[0] == 503  # before MAIL
        assert c.cmd("FOOBAR3")[0] == 421
        c.assert_closed()
        c.close()

        # HTTP on the SMTP port.
        c = RawSMTP(srv.smtp_port, timeout=20)
        r.http = c.local_port
        c.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert c.reply()[0] == 220
        assert c.reply()[0] == 502
        c.assert_closed()
        c.close()

        for port, text in ((r.errors, "too many errors"), (r.http, "http command")):
            srv.wait_for(lambda: f"SMTP.Conn 127.0.0.1:{port}: error: {text}"
                         in logfile.read_text(errors="replace"), what=f"{text} line")
    finally:
        srv.stop()
        r.stderr = srv.stderr()
        if logfile.exists():
            shutil.copyfile(logfile, r.logfile)
        srv.cleanup()

    r.text = r.logfile.read_text(errors="replace")
    r.lines = r.text.splitlines()
    bad = [l for l in r.lines if not re.match(rf"{TS} ", l)]
    assert not bad, f"log file lines without the timestamp prefix: {bad}"
    r.messages = [re.sub(rf"^{TS} ", "", l) for l in r.lines]
    return r


def expected(r):
    """The matched lines, in order, as Go chasquid logs them: every error
    reply logs `<CMD> failed: ...`, the third one too, before `too many
    errors`; HTTP logs only `http command`."""
    return [
        f"SMTP.Conn 127.0.0.1:{r.auth}: error: AUTH failed: 535  5.7.8 Incorrect user or password",
        f"SMTP.Conn 127.0.0.1:{r.relay}: error: RCPT failed: 503  5.7.1 Relay not allowed",
        f'SMTP.Conn 127.0.0.1:{r.unknown}: error: unknown<\\"XYZZY\\"> failed: 500  5.5.1 Unknown command',
        f'SMTP.Conn 127.0.0.1:{r.errors}: error: unknown<\\"FOOBAR\\"> failed: 500  5.5.1 Unknown command',
        f"SMTP.Conn 127.0.0.1:{r.errors}: error: RCPT failed: 503  5.5.1 Sender not yet given",
        f'SMTP.Conn 127.0.0.1:{r.errors}: error: unknown<\\"FOOBAR\\"> failed: 500  5.5.1 Unknown command',
        f"SMTP.Conn 127.0.0.1:{r.errors}: error: too many errors, breaking connection",
        f"SMTP.Conn 127.0.0.1:{r.http}: error: http command, closing connection",
    ]


def strip_ts(line):
    return re.sub(rf"^{TS} ", "", line)


# ---------------------------------------------------------------- tests


def test_filter_file_layout():
    text = FILTER.read_text()
    assert re.search(r"^\[INCLUDES\]\s*\nbefore = common\.conf$", text, re.M), text
    assert re.search(r"^_daemon = chasquid$", text, re.M)
    assert re.search(r"^failregex = .*<ADDR>", text, re.M)
    assert re.search(r"^ignoreregex =\s*$", text, re.M)
    jail = JAIL.read_text()
    assert re.search(r"^\[chasquid\]$", jail, re.M)
    assert re.search(r"^enabled = false$", jail, re.M)
    assert re.search(r"^filter = chasquid$", jail, re.M)
    assert re.search(r"^port = smtp,submission,submissions$", jail, re.M)


def test_jail_loads(f2b_filter, tmp_path):
    """The sample jail, once enabled, loads with the filter: fail2ban-client
    -d (dump the configuration, start nothing) on a copy of /etc/fail2ban."""
    client = shutil.which("fail2ban-client")
    assert client, "fail2ban-client not installed"
    conf = tmp_path / "fail2ban"
    shutil.copytree(COMMON_CONF.parents[1], conf, symlinks=True)
    jail_d = conf / "jail.d"
    shutil.rmtree(jail_d)
    jail_d.mkdir()
    # Only our jail: the distribution's ones may need logs that are absent.
    (jail_d / "00-none.conf").write_text("[DEFAULT]\nenabled = false\n")
    (jail_d / "chasquid.conf").write_text(
        re.sub(r"^enabled = false$", "enabled = true", JAIL.read_text(), flags=re.M))
    shutil.copyfile(FILTER, conf / "filter.d" / "chasquid.conf")
    p = subprocess.run([client, "-c", str(conf), "-d"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p
    out = p.stdout
    assert "['add', 'chasquid', 'systemd']" in out, out
    assert "['set', 'chasquid', 'addjournalmatch', '_SYSTEMD_UNIT=chasquid.service']" in out, out
    assert "['port', 'smtp,submission,submissions']" in out, out
    assert re.search(r"\['set', 'chasquid', 'addfailregex', '.*SMTP\\\\.Conn <ADDR>", out), out
    assert not re.search(r"\['add', '(?!chasquid')", out), out


def test_fail2ban_version(f2b_filter):
    p = subprocess.run([FAIL2BAN_REGEX, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p
    print(p.stdout.strip())
    assert re.match(r"fail2ban-regex \d+\.\d+", p.stdout), p.stdout


def test_daemon_log_has_contract_lines(provoked):
    """Each provoked failure produced its §11.5 line, exactly."""
    r = provoked
    messages = r.messages
    for line in expected(r):
        if line.startswith(f"SMTP.Conn 127.0.0.1:{r.errors}:"):
            continue  # test_logfile_count_as_go
        assert line in messages, f"missing {line!r} in the log:\n{r.text}"
    assert f"SMTP.Conn 127.0.0.1:{r.errors}: error: too many errors, breaking connection" in messages
    # The EHLO error is logged too (the filter leaves it alone).
    assert any(m.startswith(f"SMTP.Conn 127.0.0.1:{r.ehlo}: error: EHLO failed: 501") for m in messages), r.text
    # Clean sessions log no error lines.
    for port in (r.good_submission, r.good_smtp):
        assert not [m for m in messages if f"127.0.0.1:{port}: error:" in m], r.text


def test_logfile_matches(provoked, f2b_filter):
    r = provoked
    out = run_regex(r.logfile, f2b_filter, "--print-all-matched", "--print-all-missed")
    lines, matched, missed = summary(out)
    assert lines == len(r.lines), out
    got = [strip_ts(l) for l in section(out, "Matched")]
    # Every matched line is a provoked one, from a provoked session.
    provoked_ports = {r.auth, r.relay, r.unknown, r.errors, r.http}
    for line in got:
        m = re.match(r"SMTP\.Conn 127\.0\.0\.1:(\d+): error: ", line)
        assert m and int(m.group(1)) in provoked_ports, f"unexpected match {line!r}\n{out}"
    # Every provoked line the daemon wrote matched.
    written = [m for m in r.messages
               if re.match(rf"SMTP\.Conn 127\.0\.0\.1:({'|'.join(map(str, provoked_ports))}): error: ", m)]
    assert got == written, out
    assert matched == len(written) and missed == lines - matched, out
    # Nothing of the clean sessions or of the EHLO error matched.
    for port in (r.good_submission, r.good_smtp, r.ehlo):
        assert not [l for l in got if f":{port}:" in l], out
    assert any(f":{r.ehlo}: error: EHLO failed" in l for l in section(out, "Missed")), out
    # And the set is the expected one (see also the third-error test).
    for line in expected(r):
        if not line.startswith(f"SMTP.Conn 127.0.0.1:{r.errors}:"):
            assert line in got, f"{line!r} not matched:\n{out}"
    assert f"SMTP.Conn 127.0.0.1:{r.errors}: error: too many errors, breaking connection" in got


def test_logfile_matches_host(provoked, f2b_filter):
    r = provoked
    found = matches(r.logfile, f2b_filter)
    assert found, "no matches"
    assert {ip for ip, _ in found} == {"127.0.0.1"}, found
    assert [strip_ts(text) for _, text in found] == [
        m for m in r.messages if re.match(r"SMTP\.Conn 127\.0\.0\.1:\d+: error: ", m)
        and not re.search(r"error: EHLO failed", m)], found


def test_logfile_count_as_go(provoked, f2b_filter):
    """The hits a provoked client earns, as with Go chasquid: 8 (1 AUTH +
    1 RCPT + 1 unknown + 4 for the too-many-errors session + 1 HTTP). Go
    logs the third error's `<CMD> failed` line and then `too many errors`,
    so fail2ban counts both (maxretry is reached sooner)."""
    found = matches(provoked.logfile, f2b_filter)
    got = [strip_ts(text) for _, text in found]
    want = expected(provoked)
    assert got == want, (f"{len(got)} hits, Go chasquid gives {len(want)}:\n  got:  "
                         + "\n        ".join(got) + "\n  want: " + "\n        ".join(want))


@pytest.mark.parametrize("form", ["syslog", "syslog-rfc3339", "journal", "journal-logtime"])
def test_syslog_and_journal_forms(provoked, f2b_filter, tmp_path, form):
    """The same messages as /var/log/syslog (-logtosyslog; Debian's rsyslog
    writes RFC 3339 dates by default since bookworm, traditional ones
    before) and as fail2ban's systemd backend presents journal entries
    (`host ident[pid]: message`, date kept apart; -logtime on stderr leaves
    a date inside the message)."""
    r = provoked
    now = datetime.datetime.now().astimezone().replace(microsecond=123456)
    filter_arg = str(f2b_filter)
    if form == "syslog":
        prefix, options = f"{syslog_date(now)} mailhost chasquid[123]: ", ()
    elif form == "syslog-rfc3339":
        prefix, options = f"{now.isoformat()} mailhost chasquid[123]: ", ()
    else:
        # As the jail's "backend = systemd" reads it: logtype journal, and
        # the date comes from the journal entry, not from the text.
        filter_arg += "[logtype=journal]"
        options = ("-d", "{NONE}")
        prefix = "mailhost chasquid[123]: "
        if form == "journal-logtime":
            prefix += f"{now:%Y-%m-%d %H:%M:%S.%f} "
    log = tmp_path / "syslog"
    # Other daemons' lines in between must not match.
    other = "other[9]: SMTP.Conn 127.0.0.2:1: error: AUTH failed: 535  5.7.8 x"
    other_prefix = prefix.replace("chasquid[123]: ", "")
    lines = [prefix + m for m in r.messages] + [other_prefix + other]
    log.write_text("\n".join(lines) + "\n")
    found = matches(log, filter_arg, *options)
    want = [m for m in r.messages
            if re.match(r"SMTP\.Conn 127\.0\.0\.1:\d+: error: ", m) and "error: EHLO failed" not in m]
    assert want
    assert [ip for ip, _ in found] == ["127.0.0.1"] * len(want), found
    got = [text[text.index("SMTP.Conn "):] for _, text in found]
    assert got == want, found
