"""aliases-resolve and domaininfo-remove against a fake local RPC server
(COMPAT.md §16, §17): a Python thread serving <data_dir>/localrpc-v1.
"""

import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import DEFAULT_HOSTNAME, run, write_config


class FakeRPCServer:
    """Serves the Unix socket: for each connection, reads one request line
    and answers with the next scripted reply (a line without CRLF), or
    `None` to close without answering."""

    def __init__(self, path, replies):
        self.path = str(path)
        self.replies = list(replies)
        self.requests = []
        self.errors = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.sock.settimeout(30)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            for reply in self.replies:
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(10)
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data)
                    if reply is not None:
                        conn.sendall(reply.encode("utf-8") + b"\r\n")
        except Exception as e:  # reported by close()
            self.errors.append(e)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def short_data_dir():
    # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be
    # longer than that, so the data dir lives directly under /tmp.
    d = tempfile.mkdtemp(prefix="cqrpc", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rpc_config(config_dir, short_data_dir):
    write_config(config_dir, f'hostname: "{DEFAULT_HOSTNAME}"\ndata_dir: "{short_data_dir}"\n')
    return config_dir


@pytest.fixture
def serve(short_data_dir):
    servers = []

    def start(*replies, data_dir=None):
        path = Path(data_dir or short_data_dir) / "localrpc-v1"
        assert len(str(path)) < 100
        server = FakeRPCServer(path, replies)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def test_aliases_resolve(ours, rpc_config, serve):
    server = serve("200 %28email%29=r1%40r1.com&%28pipe%29=cmd+args&%28email%29=r2%40x.com")
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert server.requests == [b"AliasResolve Address=a%40b.com\r\n"]
    assert (rc, err) == (0, "")
    assert out == "(email)  r1@r1.com\n(email)  r2@x.com\n(pipe)  cmd args\n"


def test_aliases_resolve_sorts_by_type(ours, rpc_config, serve):
    # Types come out as (email), (forward), (pipe); within a type, in the
    # reply's order.
    serve(
        "200 %28pipe%29=p1&%28forward%29=f%40x.com&%28email%29=z%40z.com"
        "&%28pipe%29=p0&%28email%29=a%40a.com"
    )
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert (rc, err) == (0, "")
    assert out == (
        "(email)  z@z.com\n"
        "(email)  a@a.com\n"
        "(forward)  f@x.com\n"
        "(pipe)  p1\n"
        "(pipe)  p0\n"
    )


def test_aliases_resolve_encodes_the_address(ours, rpc_config, serve):
    # Go url.Values.Encode: QueryEscape, "+" as %2B, space as "+", UTF-8
    # bytes as uppercase %XX. The address is sent as typed (not normalised).
    server = serve("200 %28email%29=x%40y.com")
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "Ñu+tag@B.com")
    assert server.requests == [b"AliasResolve Address=%C3%91u%2Btag%40B.com\r\n"]
    assert (rc, out, err) == (0, "(email)  x@y.com\n", "")


def test_aliases_resolve_empty_reply(ours, rpc_config, serve):
    serve("200 ")
    assert run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com") == (0, "", "")


def test_aliases_resolve_error(ours, rpc_config, serve):
    serve("500 some error")
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert (rc, out, err) == (1, "", "Error resolving: some error\n")


def test_aliases_resolve_without_server(ours, rpc_config):
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert rc == 1
    assert out == ""
    assert err.startswith("Error resolving:")


def test_aliases_resolve_server_closes(ours, rpc_config, serve):
    serve(None)
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert rc == 1
    assert out == ""
    assert err.startswith("Error resolving:")


def test_relative_data_dir_is_relative_to_the_config_dir(ours, short_data_dir, serve):
    # As the daemon resolves it (issue 19; chasquid-util took it relative to
    # the caller's cwd): the same socket from any directory.
    config_dir = short_data_dir / "c"
    (config_dir / "d").mkdir(parents=True)
    write_config(config_dir, 'hostname: "h"\ndata_dir: "d"\n')
    server = serve("200 %28email%29=r%40r.com", "200 %28email%29=r%40r.com", data_dir=config_dir / "d")
    for cwd in ("/", short_data_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "aliases-resolve", "a@b.com", cwd=cwd)
        assert (rc, out, err) == (0, "(email)  r@r.com\n", "")
    assert server.requests == [b"AliasResolve Address=a%40b.com\r\n"] * 2


def test_aliases_resolve_says_when_the_daemon_is_not_running(ours, rpc_config, short_data_dir):
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    socket_path = f"{short_data_dir}/localrpc-v1"
    assert (rc, out) == (1, "")
    assert err == (f"Error resolving: is chasquid running? no server at {socket_path} "
                   f"(dial unix {socket_path}: connect: no such file or directory)\n")


def test_domaininfo_remove(ours, rpc_config, serve):
    server = serve("200 ")
    rc, out, err = run(ours, f"-C={rpc_config}", "domaininfo-remove", "example.com")
    assert server.requests == [b"DomaininfoClear Domain=example.com\r\n"]
    assert (rc, out, err) == (0, "", "")


def test_domaininfo_remove_error(ours, rpc_config, serve):
    serve("500 does not exist")
    rc, out, err = run(ours, f"-C={rpc_config}", "domaininfo-remove", "example.com")
    assert (rc, out, err) == (1, "", "Error removing domaininfo entry: does not exist\n")


def test_domaininfo_remove_without_server(ours, rpc_config):
    rc, out, err = run(ours, f"-C={rpc_config}", "domaininfo-remove", "example.com")
    assert rc == 1
    assert out == ""
    assert err.startswith("Error removing domaininfo entry:")


def test_unknown_method_reply(ours, rpc_config, serve):
    serve("500 unknown method")
    rc, out, err = run(ours, f"-C={rpc_config}", "aliases-resolve", "a@b.com")
    assert (rc, out, err) == (1, "", "Error resolving: unknown method\n")
