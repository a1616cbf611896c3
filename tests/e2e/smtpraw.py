"""Shared low-level SMTP helpers for the end-to-end tests: a TLS client
context that verifies nothing (the test daemons use self-signed
certificates), and a minimal SMTP client over a raw socket.

This module imports nothing from the test modules (nor from mta.py or
server.py), so that any of them can import it without a cycle.
"""

import socket
import ssl


def no_verify_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawSMTP:
    """A minimal SMTP client over a raw socket, for exact replies and for
    things real clients will not do."""

    def __init__(self, port, timeout=10, tls=False, server_hostname=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = no_verify_context().wrap_socket(self.sock, server_hostname=server_hostname)
        self.buf = b""
        # The client side's port: identifies the session in the daemon's logs.
        self.local_port = self.sock.getsockname()[1]

    def readline(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """Returns (code, text) where text has the lines after the code,
        joined with \\n."""
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        return int(lines[-1][:3]), "\n".join(l[4:] for l in lines)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def starttls(self, server_hostname=None):
        code, text = self.cmd("STARTTLS")
        assert code == 220, (code, text)
        assert self.buf == b"", f"plaintext after the STARTTLS reply: {self.buf!r}"
        self.sock = no_verify_context().wrap_socket(self.sock, server_hostname=server_hostname)

    def assert_closed(self, timeout=5):
        """The server closed the connection (EOF or reset), with nothing
        more sent."""
        assert self.buf == b"", f"unexpected data: {self.buf!r}"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
            return
        except socket.timeout:
            raise AssertionError("connection still open")
        assert data == b"", f"connection still open; got {data!r}"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
