"""Test support for mail between servers: a test certificate authority, fake
SMTP peers with chosen failure modes, and readers for the files remote
delivery leaves behind (domaininfo levels, queue envelopes, DSNs).

    ca = test_ca()                            # once per session
    cert_dir = ca.issue(["mx.b.test"])        # certs/<name>/ layout
    ca.issue(["mx.b.test"], expired=True)     # for TLS_INSECURE cases
    srv = ChasquidServer(hostname="mx.b.test", domain="b.test",
                         certs={"mx.b.test": cert_dir},
                         extra_env={"SSL_CERT_FILE": str(ca.cert_path)})

    peer = FakeSMTPPeer(next_loopback(), port, tls=cert_dir,
                        replies={"RCPT": ["451 4.7.1 later"]}).start()
    d = peer.wait_for_delivery(b"marker")     # a Delivery
    d.mail_from, d.rcpts, d.wire, d.data, d.tls, peer.sessions[0].transcript

Fake peers listen on 127.0.0.N: the daemon's `-testing__outgoing_smtp_port`
is one port for every MX, so each peer gets its own loopback address on
that port, and the test DNS zone points the MX names there (Linux answers
on all of 127.0.0.0/8 without configuration).
"""

import atexit
import email
import email.policy
import email.utils
import http.server
import itertools
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pbtext
import server as S
from smtpraw import no_verify_context  # re-exported: mta.no_verify_context

CRLF = b"\r\n"


def wait_for(predicate, timeout=30, what="condition", interval=0.05):
    return S.wait_for(predicate, timeout, what, interval)


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------- certificates


def _openssl(*args, cwd=None):
    p = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))}: {p.stderr.decode(errors='replace')}")
    return p.stdout


_CA_CONF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = any_name
copy_extensions = copy
unique_subject = no
[ any_name ]
commonName = supplied
"""


class TestCA:
    """A throwaway certificate authority made with openssl. `cert_path` is
    its certificate (a PEM bundle for SSL_CERT_FILE or smtp_tls_CAfile).

    issue(names) returns a directory with fullchain.pem (leaf + CA),
    cert.pem (leaf only) and privkey.pem: certbot's layout, ready for
    certs/<name>/ or any TLS server. Results are cached by arguments."""

    __test__ = False  # not a pytest class

    def __init__(self, base=None):
        self.base = Path(base or tempfile.mkdtemp(prefix="cqca"))
        # ca.pem is handed to unprivileged daemons (SSL_CERT_FILE): the
        # directory is searchable by all; the keys stay 0600.
        os.chmod(self.base, 0o755)
        (self.base / "issued").mkdir(parents=True, exist_ok=True)
        (self.base / "index.txt").write_text("")
        (self.base / "serial").write_text("1000\n")
        (self.base / "ca.cnf").write_text(_CA_CONF.format(dir=self.base))
        self.cert_path = self.base / "ca.pem"
        self.key_path = self.base / "ca.key"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                 "-subj", "/CN=chasquid test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", self.key_path, "-out", self.cert_path)
        self._issued = {}
        self._lock = threading.Lock()
        self._count = itertools.count(1)

    def issue(self, names, expired=False):
        """A certificate for DNS `names` (the first is the CN). expired=True
        gives one that was valid for January 2020 only."""
        names = tuple(names)
        key = (names, expired)
        with self._lock:
            if key in self._issued:
                return self._issued[key]
            d = self.base / f"leaf{next(self._count)}-{names[0]}{'-expired' if expired else ''}"
            d.mkdir()
            san = ",".join(f"DNS:{n}" for n in names)
            _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
                     "-addext", f"subjectAltName={san}",
                     "-addext", "extendedKeyUsage=serverAuth",
                     "-keyout", d / "privkey.pem", "-out", d / "req.csr")
            dates = (["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"] if expired
                     else ["-days", "30"])
            _openssl("ca", "-batch", "-notext", "-config", self.base / "ca.cnf",
                     "-cert", self.cert_path, "-keyfile", self.key_path,
                     "-in", d / "req.csr", "-out", d / "cert.pem", *dates)
            (d / "fullchain.pem").write_bytes((d / "cert.pem").read_bytes() + self.cert_path.read_bytes())
            self._issued[key] = d
            return d

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)


_CA = None


def test_ca():
    """The session's CA (made on first use, removed at exit)."""
    global _CA
    if _CA is None:
        _CA = TestCA()
        atexit.register(_CA.cleanup)
    return _CA


test_ca.__test__ = False

_SELF_SIGNED = {}


def self_signed(name):
    """A self-signed certificate for `name`, trusted by nobody (cached)."""
    if name not in _SELF_SIGNED:
        d = Path(tempfile.mkdtemp(prefix="cqself"))
        atexit.register(shutil.rmtree, d, True)
        S.make_cert(d, name)
        _SELF_SIGNED[name] = d
    return _SELF_SIGNED[name]


class PolicyHost:
    """An HTTPS server for MTA-STS policy hosts (mta-sts.<domain>) on
    127.0.0.1:<port>, with a certificate from `cert_dir`. What it answers
    for /.well-known/mta-sts.txt is set with serve(); `host=` gives one
    policy host its own answer (by the request's Host header)."""

    PATH = "/.well-known/mta-sts.txt"

    def __init__(self, cert_dir):
        self.answers = {}
        self.default_policy = ""
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = (self.headers.get("Host") or "").split(":")[0]
                status, ctype, body, length = host.answers.get(
                    (name, self.path), host.answers.get((None, self.path), (404, "text/plain", "not here", True)))
                data = body.encode()
                self.send_response(status)
                if ctype is not None:
                    self.send_header("Content-Type", ctype)
                # Without a length the body ends at the close, which Python
                # makes without TLS's close_notify.
                if length:
                    self.send_header("Content-Length", str(len(data)))
                if 300 <= status < 400:
                    self.send_header("Location", "https://elsewhere.test/")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Path(cert_dir) / "fullchain.pem", Path(cert_dir) / "privkey.pem")
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, body=None, status=200, ctype="text/plain", length=True, host=None):
        body = self.default_policy if body is None else body
        self.answers[(host, self.PATH)] = (status, ctype, body, length)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- addresses


_loopback = itertools.count(10)


def next_loopback():
    """A fresh address in 127.0.0.0/8 for one fake server (127.0.0.10,
    127.0.0.11, ...); 127.0.0.1 is left to the daemons."""
    n = next(_loopback)
    return f"127.0.{n // 250}.{n % 250 + 2}"


# ---------------------------------------------------------------- fake peers


@dataclass
class Delivery:
    """One transaction that reached the end of DATA."""
    mail_from: str          # the address inside MAIL FROM:<...>
    mail_params: str        # what followed it, e.g. "BODY=8BITMIME SMTPUTF8"
    rcpts: list             # accepted RCPT TO addresses
    wire: bytes             # the bytes after 354, up to (not including) ".\r\n"
    data: bytes             # `wire` with dot-stuffing undone
    tls: bool               # the transaction ran under STARTTLS
    reply: str              # our reply to the end of data
    accepted: bool          # that reply was 2xx
    ehlo: str


@dataclass
class Session:
    """One connection: the transcript is [(">" | "<", line bytes without
    CRLF)], ">" for what the peer received, "<" for what it sent. DATA
    contents are not in the transcript (see Delivery.wire)."""
    started: float
    remote: tuple
    transcript: list = field(default_factory=list)
    ehlo: str = None
    tls: bool = False
    tls_version: str = None
    sni: str = None
    tls_error: str = None
    commands: list = field(default_factory=list)   # verbs, in order
    deliveries: list = field(default_factory=list)
    closed_by: str = None   # "peer" (drop/QUIT reply) or "client"


class _Closed(Exception):
    pass


class FakeSMTPPeer:
    """A small SMTP server (threads + sockets + ssl) that records everything.

    Arguments:
      host, port   where to listen (port 0: any free port; see .port).
      name         the name in the greeting and EHLO reply.
      tls          a certificate directory (fullchain.pem + privkey.pem): the
                   peer offers STARTTLS and uses it. None: no STARTTLS.
      extensions   EHLO keywords besides STARTTLS (default: 8BITMIME,
                   PIPELINING, SMTPUTF8, ENHANCEDSTATUSCODES, SIZE).
      replies      {verb: reply} overrides; verbs are GREETING, EHLO, HELO,
                   MAIL, RCPT, DATA (the reply to the DATA command), "."
                   (the reply after the message), STARTTLS, RSET, QUIT.
                   A str is used every time; a list is used one item per
                   command (across connections), then the default. A reply
                   starting with "2"/"3" is treated as success by the peer.
      drop_at      a verb (as above): when it arrives, close the connection
                   without replying. "." drops after the data was read.
      offer_starttls  advertise STARTTLS even without `tls`: STARTTLS then
                   gets replies["STARTTLS"] (default 454); a 220 there is
                   followed by closing the connection (a failed handshake).
    """

    DEFAULT_EXTENSIONS = ("8BITMIME", "PIPELINING", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 52428800")

    def __init__(self, host="127.0.0.1", port=0, *, name="peer.test", tls=None,
                 extensions=DEFAULT_EXTENSIONS, replies=None, drop_at=None,
                 offer_starttls=False):
        self.host = host
        self.requested_port = port
        self.port = None
        self.name = name
        self.tls_dir = Path(tls) if tls else None
        self.extensions = list(extensions)
        self.drop_at = drop_at
        self.offer_starttls = offer_starttls or tls is not None
        self._replies = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                         for k, v in (replies or {}).items()}
        self.sessions = []
        self._lock = threading.Lock()
        self._conns = set()
        self._sock = None
        self._thread = None
        self._stopping = False
        self._ctx = None
        if self.tls_dir:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(self.tls_dir / "fullchain.pem", self.tls_dir / "privkey.pem")
            self._ctx.sni_callback = _record_sni

    # ---- lifecycle

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.requested_port))
        s.listen(32)
        self.port = s.getsockname()[1]
        self._sock = s
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"peer-{self.host}:{self.port}")
        self._thread.start()
        return self

    def stop(self):
        self._stopping = True
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self.start() if self._sock is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    # ---- observation

    @property
    def deliveries(self):
        """Every transaction that reached the end of DATA, oldest first."""
        with self._lock:
            return [d for s in self.sessions for d in s.deliveries]

    @property
    def accepted(self):
        return [d for d in self.deliveries if d.accepted]

    def wait_for_delivery(self, marker=b"", timeout=30):
        """The first accepted delivery whose data contains `marker`."""
        return wait_for(lambda: next((d for d in self.accepted if marker in d.data), None),
                        timeout, f"a delivery with {marker!r} at {self.address}")

    def wait_for_sessions(self, n=1, timeout=30):
        return wait_for(lambda: len(self.sessions) >= n and self.sessions, timeout,
                        f"{n} connection(s) to {self.address}")

    def transcript_text(self):
        out = []
        for i, s in enumerate(self.sessions):
            out.append(f"--- session {i} tls={s.tls}")
            out += [f"{d} {line.decode('utf-8', 'replace')}" for d, line in s.transcript]
        return "\n".join(out)

    # ---- the server

    def _reply_for(self, verb, default):
        with self._lock:
            r = self._replies.get(verb)
            if isinstance(r, list):
                return r.pop(0) if r else default
            return r if r is not None else default

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, remote = self._sock.accept()
            except OSError:
                return
            session = Session(started=time.time(), remote=remote)
            with self._lock:
                self.sessions.append(session)
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, session), daemon=True).start()

    def _serve(self, conn, session):
        io = _LineIO(conn, session)

        def wrapped(old, new):
            with self._lock:
                self._conns.discard(old)
                self._conns.add(new)
        io.on_wrap = wrapped
        try:
            self._dialogue(io, session)
        except _Closed:
            pass
        except (OSError, ssl.SSLError) as e:
            session.tls_error = session.tls_error or f"{type(e).__name__}: {e}"
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._conns.discard(io.sock)
            try:
                io.sock.close()
            except OSError:
                pass

    def _dialogue(self, io, session):
        greeting = self._reply_for("GREETING", f"220 {self.name} ESMTP fake peer")
        io.send(greeting)
        if not greeting.startswith("2"):
            io.read_line_or_eof()
            return
        mail_from, params, rcpts = None, "", []
        while True:
            line = io.read_line()
            text = line.decode("utf-8", "replace")
            verb = text.split(" ", 1)[0].upper()
            session.commands.append(verb)
            if self.drop_at == verb:
                session.closed_by = "peer"
                return
            if verb in ("EHLO", "HELO"):
                session.ehlo = text[5:].strip()
                mail_from, params, rcpts = None, "", []
                reply = self._reply_for(verb, None)
                if reply is None and verb == "EHLO":
                    exts = list(self.extensions)
                    if self.offer_starttls and not session.tls:
                        exts.append("STARTTLS")
                    lines = [f"{self.name} hello {session.ehlo}"] + exts
                    reply = "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{l}"
                                        for i, l in enumerate(lines))
                io.send(reply or f"250 {self.name}")
            elif verb == "STARTTLS":
                if session.tls:
                    io.send("503 5.5.1 already under TLS")
                    continue
                default = "220 2.0.0 ready" if self._ctx else "454 4.7.0 TLS not available"
                reply = self._reply_for("STARTTLS", default)
                io.send(reply)
                if not reply.startswith("2"):
                    continue
                if not self._ctx:
                    session.closed_by = "peer"      # a "handshake" that fails
                    return
                io.start_tls(self._ctx)
                session.tls = True
                session.tls_version = io.sock.version()
                session.sni = getattr(io.sock, "sni_name", None)
                mail_from, params, rcpts = None, "", []
            elif verb == "MAIL":
                m = re.match(r"(?i)MAIL FROM:\s*<([^>]*)>\s*(.*)$", text)
                if not m:
                    io.send("501 5.5.4 syntax: MAIL FROM:<address>")
                    continue
                reply = self._reply_for("MAIL", "250 2.1.0 sender ok")
                if reply.startswith("2"):
                    mail_from, params, rcpts = m.group(1), m.group(2).strip(), []
                io.send(reply)
            elif verb == "RCPT":
                m = re.match(r"(?i)RCPT TO:\s*<([^>]*)>", text)
                if mail_from is None or not m:
                    io.send("503 5.5.1 MAIL first" if mail_from is None else "501 5.5.4 syntax")
                    continue
                reply = self._reply_for("RCPT", "250 2.1.5 recipient ok")
                if reply.startswith("2"):
                    rcpts.append(m.group(1))
                io.send(reply)
            elif verb == "DATA":
                if not rcpts:
                    io.send("503 5.5.1 no valid recipients")
                    continue
                reply = self._reply_for("DATA", "354 go ahead, end with <CRLF>.<CRLF>")
                io.send(reply)
                if not reply.startswith("3"):
                    continue
                wire = io.read_data()
                data = b"".join(l[1:] if l.startswith(b".") else l
                                for l in wire.splitlines(keepends=True))
                if self.drop_at == ".":
                    session.closed_by = "peer"
                    session.deliveries.append(Delivery(mail_from, params, rcpts, wire, data,
                                                       session.tls, "", False, session.ehlo))
                    return
                final = self._reply_for(".", "250 2.0.0 queued by fake peer")
                session.deliveries.append(Delivery(mail_from, params, list(rcpts), wire, data,
                                                   session.tls, final, final.startswith("2"),
                                                   session.ehlo))
                io.send(final)
                mail_from, params, rcpts = None, "", []
            elif verb == "RSET":
                mail_from, params, rcpts = None, "", []
                io.send(self._reply_for("RSET", "250 2.0.0 ok"))
            elif verb == "NOOP":
                io.send("250 2.0.0 ok")
            elif verb == "QUIT":
                io.send(self._reply_for("QUIT", "221 2.0.0 bye"))
                session.closed_by = "peer"
                return
            else:
                io.send("500 5.5.1 unknown command")


def _record_sni(sslsock, server_name, ctx):
    sslsock.sni_name = server_name


class _LineIO:
    """Line reading and writing on a socket that may switch to TLS."""

    def __init__(self, sock, session):
        self.sock = sock
        self.session = session
        self.buf = b""
        self.on_wrap = None
        sock.settimeout(120)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.session.closed_by = self.session.closed_by or "client"
            raise _Closed()
        self.buf += data

    def read_line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        line = line[:-1] if line.endswith(b"\r") else line
        self.session.transcript.append((">", line))
        return line

    def read_line_or_eof(self):
        try:
            return self.read_line()
        except (_Closed, OSError):
            return None

    def read_data(self):
        """Up to CRLF.CRLF; returns the raw bytes before the final ".\\r\\n"."""
        out = bytearray()
        while True:
            while b"\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\n", 1)
            line += b"\n"
            if line == b".\r\n":
                self.session.transcript.append((">", b"."))
                return bytes(out)
            out += line

    def send(self, reply):
        for l in reply.split("\r\n"):
            self.session.transcript.append(("<", l.encode()))
        self.sock.sendall(reply.encode() + CRLF)

    def start_tls(self, ctx):
        # Whatever the client pipelined after STARTTLS is dropped (RFC 3207).
        self.buf = b""
        old = self.sock
        self.sock = ctx.wrap_socket(old, server_side=True)
        if self.on_wrap:
            self.on_wrap(old, self.sock)


# ---------------------------------------------------------------- the daemon's files


def domaininfo_path(server, domain):
    """<data_dir>/domaininfo/s:<Go url.QueryEscape(domain)> (COMPAT §5)."""
    return server.data_dir / "domaininfo" / ("s:" + urllib.parse.quote_plus(domain, safe="-_.~"))


def sec_levels(server, domain):
    """The domain's record as {"name", "incoming", "outgoing"} (absent
    fields are PLAIN), or None when there is no file."""
    path = domaininfo_path(server, domain)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    msg = pbtext.parse(text)
    return {
        "name": pbtext.get(msg, "name", b"").decode("utf-8"),
        "incoming": _level(pbtext.get(msg, "incoming_sec_level", "PLAIN")),
        "outgoing": _level(pbtext.get(msg, "outgoing_sec_level", "PLAIN")),
    }


_LEVELS = ["PLAIN", "TLS_CLIENT", "TLS_INSECURE", "TLS_SECURE"]


def _level(value):
    return _LEVELS[value] if isinstance(value, int) else value


def wait_for_level(server, domain, direction, level, timeout=30):
    """Waits until the domain's file has `direction` ("incoming" or
    "outgoing") at `level`; returns the record."""
    def check():
        rec = sec_levels(server, domain)
        return rec if rec and rec[direction] == level else None
    try:
        return wait_for(check, timeout, f"{direction} level {level} for {domain}")
    except AssertionError:
        raise AssertionError(f"{domaininfo_path(server, domain)}: want {direction}={level}, "
                             f"have {sec_levels(server, domain)}") from None


def queue_item(server, qid):
    """The queue envelope m:<qid> as {"from", "to", "rcpt": [{...}]}, or
    None if it is gone. rcpt entries: address, type, status,
    last_failure_message, original_address, via."""
    path = server.data_dir / "queue" / f"m:{qid}"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    msg = pbtext.parse(text)

    def s(v):
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v

    rcpts = []
    for r in pbtext.get_all(msg, "rcpt"):
        rcpts.append({
            "address": s(pbtext.get(r, "address", b"")),
            "type": pbtext.get(r, "type", "EMAIL"),
            "status": pbtext.get(r, "status", "PENDING"),
            "last_failure_message": s(pbtext.get(r, "last_failure_message", b"")),
            "original_address": s(pbtext.get(r, "original_address", b"")),
            "via": [s(v) for v in pbtext.get_all(r, "via")],
        })
    return {"from": s(pbtext.get(msg, "from", b"")),
            "to": [s(v) for v in pbtext.get_all(msg, "To")], "rcpt": rcpts}


# ---------------------------------------------------------------- sending


def queued_id(server, client_port, timeout=30):
    """The queue ID of the message accepted from 127.0.0.1:<client_port>
    (the mail log's `queued ip=` line)."""
    m = server.wait_for(lambda: re.search(
        rf"^\S+ \S+ (\S+) from=\S* queued ip=127\.0\.0\.1:{client_port} to=\[",
        server.mail_log(), re.M), timeout, f"queued line for client port {client_port}")
    return m.group(1)


def submit(server, rcpts, message, sender=None, smtputf8=False):
    """Authenticated submission (STARTTLS, AUTH PLAIN as server.user) of
    `message` (LF or CRLF bytes). Returns the queue ID."""
    sender = sender or server.user
    opts = ["SMTPUTF8"] if smtputf8 else []
    with smtplib.SMTP("127.0.0.1", server.submission_port, local_hostname="client.test",
                      timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        s.login(server.user, S.PASSWORD)
        port = s.sock.getsockname()[1]
        refused = s.sendmail(sender, rcpts, crlf(message), mail_options=opts)
        assert refused == {}, refused
    return queued_id(server, port)


def send_smtp(server, sender, rcpts, message, starttls=False, helo="client.test"):
    """Unauthenticated SMTP to the daemon's port 25, as another MTA would.
    Returns the queue ID."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname=helo, timeout=60) as s:
        if starttls:
            s.starttls(context=no_verify_context())
            s.ehlo(helo)
        port = s.sock.getsockname()[1]
        refused = s.sendmail(sender, rcpts, crlf(message))
        assert refused == {}, refused
    return queued_id(server, port)


def delivery_lines(server, qid):
    """The mail log's delivery lines for one queue item:
    [(rcpt, "sent" | "failed (temporary): ..." | "failed (permanent): ...")]."""
    out = []
    for m in re.finditer(rf"^\S+ \S+ {re.escape(qid)} from=\S* to=(\S+) (sent|failed \(.*)$",
                         server.mail_log(), re.M):
        out.append((m.group(1), m.group(2)))
    return out


def wait_for_attempt(server, qid, rcpt, outcome, timeout=60):
    """Waits for a delivery line of qid to rcpt whose outcome starts with
    `outcome` ("sent", "failed (temporary)", "failed (permanent)");
    returns the full outcome text."""
    def look():
        for r, o in delivery_lines(server, qid):
            if r == rcpt and o.startswith(outcome):
                return o
        return None
    try:
        return wait_for(look, timeout, f"{qid} to={rcpt} {outcome}")
    except AssertionError:
        raise AssertionError(f"no '{qid} ... to={rcpt} {outcome}' in the mail log; lines for it: "
                             f"{delivery_lines(server, qid)}\n{server.stderr()[-3000:]}") from None


def find_message(server, marker, user="user", timeout=30):
    """A message in user's Maildir containing marker (bytes)."""
    return server.wait_for(lambda: next((m for m in server.messages(user) if marker in m), None),
                           timeout, f"message with {marker!r} for {user}")


def make_message(subject, body="Hello.\n", sender="user@a.test", to="someone@b.test",
                 extra_headers=""):
    """A complete RFC 5322 message (LF line endings): with Date and
    Message-ID, so no MTA on the way adds headers of its own."""
    return (f"From: {sender}\nTo: {to}\nSubject: {subject}\n"
            f"Date: {email.utils.formatdate()}\n"
            f"Message-ID: <{uuid.uuid4().hex}@client.test>\n{extra_headers}\n{body}").encode("utf-8")


def parse_dsn(data):
    """A DSN (bytes) as (headers message, [per-recipient field dicts],
    attached original bytes)."""
    # As text, so that raw UTF-8 in headers (SMTPUTF8 addresses) reads as str.
    msg = email.message_from_string(data.decode("utf-8", "replace"), policy=email.policy.compat32)
    status_blocks, original = [], None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/global-delivery-status", "message/delivery-status"):
            payload = part.get_payload()
            if isinstance(payload, list):    # parsed as a list of header blocks
                text = "\n\n".join(p.as_string() for p in payload)
            else:
                text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
            for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
                fields = {}
                for line in re.sub(r"\n[ \t]+", " ", block).split("\n"):
                    if ":" in line:
                        k, v = line.split(":", 1)
                        fields[k.strip()] = v.strip()
                if "Final-Recipient" in fields or "Original-Recipient" in fields:
                    status_blocks.append(fields)
        elif ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            original = (payload[0].as_string() if isinstance(payload, list) else payload)
            original = original.encode("utf-8") if isinstance(original, str) else original
    return msg, status_blocks, original
