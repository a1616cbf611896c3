"""Runs tests/dnsserver/dnsserver.py, a real DNS server (UDP and TCP) that
answers from a zone the test controls.

    with DNSServer({"example.net": {"TXT": ["v=spf1 -all"]}}) as dns:
        srv = ChasquidServer(flags=[dns.chasquid_flag])
        ...
        dns.set_zone({...})          # replace every record
        dns.update("x.example.net", {"A": ["127.0.0.1"]})   # one name
        dns.remove("x.example.net")
        dns.queries()                # [("udp", "example.net", "TXT"), ...]

Zone format and per-name behaviours ("_drop", "_servfail", "_refused",
"_truncate"): see the docstring of dnsserver.py. A zone change is seen by the
very next query. The conftest fixture `dns_server` gives a started server
with an empty zone (every name NXDOMAIN) for one test; for a module-scoped
server use this class directly.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import processes

DNSSERVER = Path(__file__).resolve().parents[1] / "dnsserver" / "dnsserver.py"


class DNSServer:
    """One dnsserver.py process.

    Attributes, once started: port, addr, address ("127.0.0.1:53" form,
    IPv6 in brackets), chasquid_flag ("-testing__dns_addr=<address>"),
    zone_path, log_path, proc.
    """

    def __init__(self, zone=None, addr="127.0.0.1", port=0, drop_all=False, ttl=0, base=None):
        self.addr = addr
        self.requested_port = port
        self.drop_all = drop_all
        self.ttl = ttl
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="cqdns"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.zone_path = self.base / "zone.json"
        self.log_path = self.base / "queries.log"
        self.stderr_path = self.base / "dnsserver.stderr"
        self.port = None
        self.proc = None
        self._lock = threading.Lock()
        self._zone = {}
        self.set_zone(zone or {})

    # ---- process control ----

    def start(self, timeout=15):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [sys.executable, str(DNSSERVER), "--zone", str(self.zone_path),
               "--port", str(self.requested_port), "--addr", self.addr,
               "--log", str(self.log_path), "--ttl", str(self.ttl)]
        if self.drop_all:
            cmd.append("--drop-all")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err)
        # Read the "port N" line without blocking forever.
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        text = line[0].decode("utf-8", "replace").strip() if line else ""
        if not text.startswith("port "):
            self.stop()
            raise RuntimeError(f"dnsserver did not start (got {text!r}):\n{self.stderr()}")
        self.port = int(text.split()[1])
        return self

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        status = processes.stop(self.proc, timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return status

    def cleanup(self):
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # ---- where it listens ----

    @property
    def address(self):
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{host}:{self.port}"

    @property
    def chasquid_flag(self):
        """The daemon flag that sends all of chasquid's DNS queries here."""
        return f"-testing__dns_addr={self.address}"

    # ---- the zone ----

    @property
    def zone(self):
        """A copy of the current zone dict."""
        with self._lock:
            return copy.deepcopy(self._zone)

    def set_zone(self, zone):
        """Replaces the whole zone; the next query sees it."""
        with self._lock:
            self._zone = copy.deepcopy(zone)
            self._write()

    def update(self, name, records):
        """Sets (replaces) the records and behaviours of one name."""
        with self._lock:
            self._zone[name] = copy.deepcopy(records)
            self._write()

    def remove(self, name):
        """Removes a name (it becomes NXDOMAIN)."""
        with self._lock:
            self._zone.pop(name, None)
            self._write()

    def _write(self):
        fd, tmp = tempfile.mkstemp(prefix=".zone", dir=self.base)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._zone, f, indent=1, ensure_ascii=False)
        os.replace(tmp, self.zone_path)

    # ---- observation ----

    def queries(self):
        """Every query so far: [(transport, qname, type)], qname lowercase
        without the trailing dot, type as text ("TXT")."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [tuple(line.split(" ", 2)) for line in text.splitlines() if line]

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
