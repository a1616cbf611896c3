"""The post-data hook we ship (etc/chasquid/hooks/post-data, docs/hooks.md),
with stand-in commands on PATH for greylist, spamc, rspamc and clamdscan:
each branch (accept, temporary and permanent refusal, the headers it adds),
and that a tool that is not installed is skipped. Then once through the
daemon, installed as an admin would install it.
"""

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import server as S
from server import ChasquidServer

HOOK = S.REPO_ROOT / "etc" / "chasquid" / "hooks" / "post-data"
MESSAGE = b"From: a@remote.test\nSubject: test\n\nHello.\n"
# What the hook needs besides the filters; nothing else is on its PATH, so
# a filter installed on this machine cannot change the result.
BASICS = ["cat", "mktemp", "rm", "grep", "cut"]


@pytest.fixture
def bindir(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    for tool in BASICS:
        os.symlink(shutil.which(tool), d / tool)
    # Not in the greylist group unless a test says so.
    stub(d, "groups", 'echo "mail"')
    return d


def stub(bindir, name, body):
    """A stand-in command: records its arguments and stdin, then runs body."""
    path = bindir / name
    path.write_text(f"""#!/bin/bash
printf '%s\\n' "$*" >> "{bindir}/{name}.args"
cat > "{bindir}/{name}.stdin"
{body}
""")
    path.chmod(0o755)


def run_hook(bindir, **env):
    base = {"PATH": str(bindir), "MAIL_FROM": "a@remote.test", "RCPT_TO": "user@example.com",
            "REMOTE_ADDR": "192.0.2.7:4321", "SPF_PASS": "0", "AUTH_AS": "", "TMPDIR": str(bindir.parent)}
    base.update(env)
    p = subprocess.run(["/bin/bash", str(HOOK)], input=MESSAGE, capture_output=True, env=base, timeout=30)
    return p.returncode, p.stdout.decode().splitlines()


def called(bindir, name):
    path = bindir / f"{name}.args"
    return path.read_text().splitlines() if path.exists() else []


def test_with_no_filter_installed_it_accepts_and_adds_nothing(bindir):
    assert run_hook(bindir) == (0, [])
    # Its temporary copy of the message is gone.
    assert not list(bindir.parent.glob("post-data-*"))


class TestGreylist:
    def test_a_stranger_without_spf_is_greylisted(self, bindir):
        stub(bindir, "groups", 'echo "mail greylist"')
        stub(bindir, "greylist", "exit 1")
        assert run_hook(bindir) == (75, ["greylisted, please try again"])
        assert called(bindir, "greylist") == ["update 192.0.2.7 a@remote.test"]

    def test_a_known_triplet_passes_with_a_header(self, bindir):
        stub(bindir, "groups", 'echo "mail greylist"')
        stub(bindir, "greylist", "exit 0")
        assert run_hook(bindir, REMOTE_ADDR="[2001:db8::5]:25") == (0, ["X-Greylist: pass"])
        assert called(bindir, "greylist") == ["update 2001:db8::5 a@remote.test"]

    @pytest.mark.parametrize("env", [{"AUTH_AS": "user@example.com"}, {"SPF_PASS": "1"}])
    def test_authenticated_or_spf_passing_mail_is_not_greylisted(self, bindir, env):
        stub(bindir, "groups", 'echo "mail greylist"')
        stub(bindir, "greylist", "exit 1")
        assert run_hook(bindir, **env) == (0, [])
        assert called(bindir, "greylist") == []

    def test_outside_the_greylist_group_it_is_skipped(self, bindir):
        stub(bindir, "greylist", "exit 1")
        assert run_hook(bindir) == (0, [])
        assert called(bindir, "greylist") == []


class TestSpamAssassin:
    def test_ham_gets_its_score(self, bindir):
        stub(bindir, "spamc", 'echo "2.5/5.0"; exit 0')
        assert run_hook(bindir) == (0, ["X-Spam-Score: 2.5/5.0"])
        assert (bindir / "spamc.stdin").read_bytes() == MESSAGE
        assert called(bindir, "spamc") == ["-c -x"]

    def test_spam_is_refused_permanently(self, bindir):
        stub(bindir, "spamc", 'echo "9.1/5.0"; exit 1')
        assert run_hook(bindir) == (20, ["spam detected"])

    def test_spamd_down_is_temporary(self, bindir):
        stub(bindir, "spamc", 'echo "0/0"; exit 74')
        code, lines = run_hook(bindir)
        assert code == 75 and lines[-1] == "spam filter unavailable (spamc exit 74), please try again"


class TestRspamd:
    @pytest.mark.parametrize("action", ["no action", "add header", "greylist"])
    def test_accepted_actions_are_added_as_a_header(self, bindir, action):
        stub(bindir, "rspamc", f'echo "Results for file: stdin"; echo "Action: {action}"')
        assert run_hook(bindir) == (0, [f"X-Spam-Action: {action}"])
        assert (bindir / "rspamc.stdin").read_bytes() == MESSAGE

    def test_reject_is_refused_permanently(self, bindir):
        stub(bindir, "rspamc", 'echo "Action: reject"')
        assert run_hook(bindir) == (20, ["spam detected"])

    def test_no_answer_is_temporary(self, bindir):
        stub(bindir, "rspamc", "exit 1")
        code, lines = run_hook(bindir)
        assert code == 75 and "please try again" in lines[-1]

    def test_chasquid_rspamd_wins_and_prints_its_own_headers(self, bindir):
        stub(bindir, "chasquid-rspamd", 'echo "X-Spam: no"')
        stub(bindir, "rspamc", 'echo "Action: reject"')
        assert run_hook(bindir) == (0, ["X-Spam: no"])
        assert called(bindir, "rspamc") == []


class TestClamAV:
    def test_clean_mail_is_marked(self, bindir):
        stub(bindir, "clamdscan", "exit 0")
        assert run_hook(bindir) == (0, ["X-Virus-Scanned: pass"])
        assert called(bindir, "clamdscan") == ["--no-summary --infected -"]
        assert (bindir / "clamdscan.stdin").read_bytes() == MESSAGE

    def test_a_virus_is_refused_permanently(self, bindir):
        stub(bindir, "clamdscan", 'echo "stdin: Eicar-Signature FOUND" >&2; exit 1')
        assert run_hook(bindir) == (20, ["virus detected"])

    def test_clamd_down_is_temporary(self, bindir):
        stub(bindir, "clamdscan", "exit 2")
        code, lines = run_hook(bindir)
        assert code == 75 and "please try again" in lines[-1]


def test_all_filters_in_order(bindir):
    stub(bindir, "groups", 'echo "mail greylist"')
    stub(bindir, "greylist", "exit 0")
    stub(bindir, "spamc", 'echo "1.0/5.0"')
    stub(bindir, "rspamc", 'echo "Action: no action"')
    stub(bindir, "clamdscan", "exit 0")
    assert run_hook(bindir) == (0, ["X-Greylist: pass", "X-Spam-Score: 1.0/5.0", "X-Spam-Action: no action",
                                    "X-Virus-Scanned: pass"])


def test_through_the_daemon():
    """Installed as hooks/post-data, run by the daemon as its user: the
    headers reach the delivered message, and a permanent refusal is a 554
    at DATA with the hook's text."""
    # Where the daemon's user can reach it (pytest's tmp_path is 0700).
    top = Path(tempfile.mkdtemp(prefix="hookbin"))
    top.chmod(0o755)
    bindir = top / "bin"
    bindir.mkdir(mode=0o755)
    for tool in BASICS:
        os.symlink(shutil.which(tool), bindir / tool)
    (bindir / "spamc").write_text('#!/bin/bash\nif grep -q VIAGRA; then echo "9/5"; exit 1; fi; echo "0.1/5.0"\n')
    (bindir / "spamc").chmod(0o755)
    s = ChasquidServer(post_data_hook=HOOK.read_text(), extra_env={"PATH": f"{bindir}"})
    try:
        s.start()
        import smtplib
        subject = f"hook-{uuid.uuid4().hex[:8]}"
        with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
            c.sendmail("a@sender.invalid", [S.USER], f"Subject: {subject}\r\n\r\nhello\r\n")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("a@sender.invalid", [S.USER], "Subject: buy\r\n\r\nVIAGRA\r\n")
        assert (refused.value.smtp_code, refused.value.smtp_error) == (554, b"spam detected")
        s.wait_for(lambda: [m for m in s.messages() if subject.encode() in m], 30, "delivery")
        message = [m for m in s.messages() if subject.encode() in m][0]
        assert b"X-Spam-Score: 0.1/5.0" in message
    finally:
        s.cleanup()
        shutil.rmtree(top, ignore_errors=True)
