"""Crash safety (issue 18): the daemon is SIGKILLed at random moments while
clients send in parallel and the queue delivers, then started again.

Proven at the end, for a seed printed at the start (CRASH_SEED=<n> runs
the same kill moments and messages again; CRASH_ROUNDS sets the rounds):
  - every message that got a 250 is delivered to each recipient;
  - none is delivered twice, unless a killed daemon's mail log shows its
    delivery in flight (queued or loaded, but not `all done`) at the kill;
  - every delivered copy is whole (a delivery agent whose input was cut
    by our death must not deliver what it got);
  - after each restart the queue holds only whole m:/d: pairs, and what a
    kill left half-written was removed and said so in the log.
"""

import functools
import hashlib
import os
import random
import re
import smtplib
import threading
import time

import deployed
from server import ChasquidServer, maildir_deliver_bin

RECIPIENTS = ["user@example.com", "recv@example.com"]


@functools.lru_cache(maxsize=None)
def body(tag, size):
    """A body only `tag` has: lines of its hash chain."""
    lines, h, length = [], tag.encode(), 0
    while length < size:
        h = hashlib.sha256(h).hexdigest().encode()
        lines.append(h.decode())
        length += len(h) + 2
    return "\r\n".join(lines) + "\r\n"


def message(tag, size):
    return (f"Subject: {tag}\r\nMessage-ID: <{tag}@crash.test>\r\n\r\n" + body(tag, size)).encode()


class Load:
    """Clients sending until told to stop; records which tags got a 250."""

    def __init__(self, srv, rng, clients=4):
        self.srv, self.rng, self.clients = srv, rng, clients
        self.accepted = {}  # tag -> reply text
        self.sizes = {}
        self.counter = 0
        self.lock = threading.Lock()

    def next_tag(self):
        with self.lock:
            self.counter += 1
            n = self.counter
            # Mostly small, some large enough to be mid-DATA or mid-delivery at the kill.
            size = self.rng.choice([300, 2_000, 20_000, 200_000, 1_500_000])
            tag = f"m{n}"
            self.sizes[tag] = size
            return tag, size

    def client(self, stop):
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.srv.smtp_port, local_hostname="client.test",
                                  timeout=10) as c:
                    c.ehlo()
                    for _ in range(5):
                        if stop.is_set():
                            return
                        tag, size = self.next_tag()
                        # The sender carries the tag, so the mail log ties it to its queue ID.
                        c.mail(f"{tag}@sender.test")
                        for r in RECIPIENTS:
                            c.rcpt(r)
                        code, text = c.data(message(tag, size))
                        if code == 250:
                            with self.lock:
                                self.accepted[tag] = text
            except (OSError, smtplib.SMTPException):
                time.sleep(0.02)

    def run_until_killed(self, kill_after):
        stop = threading.Event()
        threads = [threading.Thread(target=self.client, args=(stop,)) for _ in range(self.clients)]
        for t in threads:
            t.start()
        time.sleep(kill_after)
        self.kills = getattr(self, "kills", []) + [time.time()]
        self.srv.kill9()
        stop.set()
        for t in threads:
            t.join(30)


def slow_reading_mda(srv):
    """maildir-deliver behind a reader that takes its input slowly, as a
    busy MDA would, so that kills often land while one is reading: one fed
    through a pipe would then see its input end early and deliver the part
    it got (the bug this test guards against)."""
    script = srv.base / "slow-mda"
    script.write_text(
        f"#!{deployed.hook_python()}\n"
        "import os, sys, tempfile, time\n"
        "data = bytearray()\n"
        "while True:\n"
        "    chunk = sys.stdin.buffer.read1(16384)\n"
        "    if not chunk:\n"
        "        break\n"
        "    data += chunk\n"
        "    time.sleep(0.003)\n"
        "# What it got, as a file, to maildir-deliver in its place (exec: no\n"
        "# pipe of ours that could end early in turn).\n"
        "f = tempfile.TemporaryFile()\n"
        "f.write(data)\n"
        "f.seek(0)\n"
        "os.dup2(f.fileno(), 0)\n"
        f"os.execv({str(maildir_deliver_bin())!r}, [{str(maildir_deliver_bin())!r}] + sys.argv[1:])\n")
    script.chmod(0o755)
    return str(script)


def queue_state(srv):
    names = srv.queue_files()
    envelopes = {n[2:] for n in names if n.startswith("m:")}
    data = {n[2:] for n in names if n.startswith("d:")}
    leftovers = [n for n in names if n.startswith(".") or (n.startswith("d:") and n[2:] not in envelopes)]
    return envelopes, data, leftovers


def test_sigkill_at_random_moments_loses_and_damages_nothing():
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rounds = int(os.environ.get("CRASH_ROUNDS", "5"))
    print(f"crash test seed: {seed} (CRASH_SEED={seed} repeats it), rounds: {rounds}")
    rng = random.Random(seed)
    srv = ChasquidServer()
    srv.write_conf(mda_bin=slow_reading_mda(srv))
    try:
        load = Load(srv, rng)
        segments = []  # each killed daemon's part of the mail log
        leftovers_seen = 0
        for i in range(rounds):
            start = len(srv.mail_log())
            srv.start()
            if i > 0:
                # What the last kill left: removed at start-up, and said.
                # Every envelope has its data (a d: alone is a removal in
                # progress: m: goes first).
                envelopes, data, _ = queue_state(srv)
                assert envelopes <= data, f"seed {seed}: envelopes without data after restart: {envelopes - data}"
                assert not [n for n in srv.queue_files() if n.startswith(".")], f"seed {seed}"
                for name in left_before:
                    if name.startswith("d:"):
                        assert f"Queue: {name}: data without an envelope" in srv.stderr(), (seed, name)
                if any(n.startswith(".") for n in left_before):
                    assert "partly written file(s)" in srv.stderr(), (seed, left_before)
            load.run_until_killed(rng.uniform(0.3, 2.5))
            segments.append(srv.mail_log()[start:])
            _, _, left_before = queue_state(srv)
            leftovers_seen += len(left_before)

        # The last start: everything still queued is delivered.
        srv.start()
        srv.wait_for(lambda: srv.queue_files() == [], 120, "an empty queue")
        log = srv.mail_log()

        ids = {}  # tag -> queue IDs it was queued under (one, unless a 250 was lost)
        for m in re.finditer(r" (\S+) from=(m\d+)@sender\.test ", log):
            ids.setdefault(m.group(2), set()).add(m.group(1))

        def in_flight_at_kills(queue_id):
            return sum(1 for seg in segments
                       if f" {queue_id} from=" in seg and not re.search(rf" {queue_id} from=\S+ all done", seg))

        assert load.accepted, f"seed {seed}: no message accepted at all"
        for user in ("user", "recv"):
            copies = {}
            new = srv.maildir(user) / "new"
            mtimes = {p.read_bytes(): p.stat().st_mtime for p in new.iterdir()}
            for data in srv.messages(user):
                m = re.search(rb"Message-ID: <(m\d+)@crash\.test>", data)
                assert m, f"seed {seed}: a delivered message without its Message-ID: {data[:300]!r}"
                tag = m.group(1).decode()
                copies[tag] = copies.get(tag, 0) + 1
                got = data.split(b"\n\n", 1)[1].replace(b"\r\n", b"\n")
                want = body(tag, load.sizes[tag]).replace("\r\n", "\n").encode()
                history = [line for line in log.splitlines() for q in ids.get(tag, ()) if f" {q} " in line]
                assert got == want, (f"seed {seed}: {tag} for {user} delivered damaged ({len(got)} of {len(want)} "
                                     f"bytes), accepted: {tag in load.accepted}, its log: {history}, delivered at {mtimes.get(data)}, "
                                     f"kills at {load.kills}, copies: {sum(1 for d in mtimes if f'<{tag}@'.encode() in d)}")
            for tag in load.accepted:
                assert copies.get(tag, 0) >= 1, f"seed {seed}: {tag} got a 250 but never reached {user}"
            for tag, n in copies.items():
                allowed = 1 + sum(in_flight_at_kills(q) for q in ids.get(tag, ()))
                history = [line for line in log.splitlines() for q in ids.get(tag, ()) if f" {q} " in line]
                assert n <= allowed, (f"seed {seed}: {tag} delivered {n} times to {user}, in flight at {allowed - 1} "
                                      f"kills; its log: {history}; kills at {load.kills}")
        print(f"seed {seed}: {len(load.accepted)} accepted of {load.counter} sent over {rounds} kills, {leftovers_seen} half-written files left by them")
    finally:
        srv.cleanup()
