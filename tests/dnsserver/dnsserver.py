#!/usr/bin/env python3
"""An authoritative DNS server for tests, answering from a JSON zone file.

It speaks real DNS over UDP and TCP on one port of a loopback address, so
programs under test can use their normal stub resolver against it.

Usage:
    dnsserver.py --zone ZONE.json [--port 0] [--addr 127.0.0.1]
                 [--log QUERYLOG] [--ttl 0] [--drop-all] [--forge-udp]

When both sockets are listening it prints one line, `port N`, to stdout;
it runs until SIGTERM or SIGINT. With --port 0 it picks a port that is free
for both UDP and TCP.

The zone file is read again for every query and parsed again whenever its
content changed, so a test can change records while the server runs and the
next query sees them. Write it atomically (a temporary file renamed over
it). A zone that does not load is reported on stderr and the previous one
stays in use; at startup it is fatal (exit status 2). Zone format:

    {"example.com": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"],
                     "MX": [[10, "mx.example.com"]],
                     "TXT": ["v=spf1 -all", ["two ", "strings"]],
                     "PTR": ["host.example.com"],
                     "CNAME": "other.example.com"},
     "1.2.0.192.in-addr.arpa": {"PTR": ["example.com"]}}

* Names are case-insensitive, with or without the trailing dot.
* A type's value is a list of records (a single value is one record).
  TXT: a string is one record of one character-string (longer than 255
  bytes, it is split into several); a list of strings is one record of
  several character-strings. MX: [preference, exchange], or the zone-file
  text "10 mx.example.com"; "" or "." is the root (a null MX). Any other
  type (A, AAAA, PTR, CNAME, NS, SRV, CAA, ...) is given in zone-file text;
  names in it are taken as absolute.
* A name that is absent gives NXDOMAIN; a present name without the asked
  type gives NOERROR with no answers.
* CNAME: asked for another type, the answer is the CNAME plus, when the
  target is in the zone, the target's records of that type, following
  chains like a recursive server (up to 8 hops). The rcode is the last
  name's: NXDOMAIN when the chain ends at a name absent from the zone
  (RFC 6604).
* Keys starting with "_" are behaviours of that name (when it is the name
  asked about):
    "_truncate": true   over UDP, always TC=1 and no answers; TCP answers.
    "_drop": true       never answer (TCP: the connection stays open).
    "_servfail": true   SERVFAIL, no answers.
    "_refused": true    REFUSED, no answers.

Every reply echoes the question and the ID, sets QR, AA and RA and copies
RD. EDNS0: a query with an OPT record gets one back; the UDP reply fits in
the size the client advertised (512 without EDNS, and never less than 512),
else it is sent with TC=1 and no records. EDNS versions other than 0 get
BADVERS. A malformed query gets FORMERR when it has a DNS header, and is
ignored otherwise.

Query log (--log): one line per query, appended and flushed before the
reply is sent: `<udp|tcp> <qname lowercase, no trailing dot> <TYPE>`.
"""

import argparse
import errno
import json
import signal
import socket
import struct
import sys
import threading
import traceback

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.ANY.MX
import dns.rrset

MAX_CNAME_HOPS = 8
OUR_UDP_PAYLOAD = 1232
BEHAVIOURS = {"_truncate", "_drop", "_servfail", "_refused"}


class ZoneError(Exception):
    pass


def log_err(msg):
    sys.stderr.write(f"dnsserver: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- zone


def parse_name(text):
    try:
        return dns.name.from_text(text, origin=dns.name.root)
    except Exception as e:
        raise ZoneError(f"bad name {text!r}: {e}") from None


def txt_rdata(entry):
    """One TXT record from a string (one character-string, split at 255
    bytes) or a list of strings (several character-strings)."""
    if isinstance(entry, str):
        data = entry.encode("utf-8")
        strings = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    elif isinstance(entry, list) and all(isinstance(s, str) for s in entry):
        strings = [s.encode("utf-8") for s in entry] or [b""]
        if any(len(s) > 255 for s in strings):
            raise ZoneError("a TXT character-string is longer than 255 bytes")
    else:
        raise ZoneError(f"bad TXT record {entry!r}")
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)


def mx_rdata(entry):
    if isinstance(entry, str):
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.MX, entry,
                                   origin=dns.name.root, relativize=False)
    if (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
            and isinstance(entry[1], str)):
        pref, host = entry
        target = dns.name.root if host in ("", ".") else parse_name(host)
        return dns.rdtypes.ANY.MX.MX(dns.rdataclass.IN, dns.rdatatype.MX, pref, target)
    raise ZoneError(f"bad MX record {entry!r}")


def make_rdata(rdtype, entry):
    if rdtype == dns.rdatatype.TXT:
        return txt_rdata(entry)
    if rdtype == dns.rdatatype.MX:
        return mx_rdata(entry)
    if not isinstance(entry, str):
        raise ZoneError(f"bad {dns.rdatatype.to_text(rdtype)} record {entry!r}")
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, entry,
                               origin=dns.name.root, relativize=False)


class Node:
    """One name: its rdatasets by type, and its behaviours."""

    def __init__(self):
        self.rdatasets = {}
        self.flags = set()


def build_zone(data, ttl):
    """JSON data -> {dns.name.Name: Node}. Raises ZoneError."""
    if not isinstance(data, dict):
        raise ZoneError("the zone must be a JSON object of names")
    zone = {}
    for key, types in data.items():
        name = parse_name(key)
        if not isinstance(types, dict):
            raise ZoneError(f"{key}: must be an object of types")
        node = zone.setdefault(name, Node())
        for tkey, value in types.items():
            where = f"{key} {tkey}"
            if tkey.startswith("_"):
                if tkey not in BEHAVIOURS:
                    raise ZoneError(f"{where}: unknown behaviour (known: {sorted(BEHAVIOURS)})")
                if value:
                    node.flags.add(tkey)
                continue
            try:
                rdtype = dns.rdatatype.from_text(tkey)
            except Exception:
                raise ZoneError(f"{where}: unknown record type") from None
            entries = value if isinstance(value, list) and not (
                rdtype == dns.rdatatype.MX and len(value) == 2 and isinstance(value[0], int)) \
                else [value]
            rds = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype)
            rds.update_ttl(ttl)
            for entry in entries:
                try:
                    rds.add(make_rdata(rdtype, entry))
                except ZoneError as e:
                    raise ZoneError(f"{where}: {e}") from None
                except Exception as e:
                    raise ZoneError(f"{where}: bad record {entry!r}: {e}") from None
            node.rdatasets[rdtype] = rds
    return zone


class Zone:
    """The zone file, re-read on every query and parsed again when its
    bytes change (cheaper than it sounds for a test zone, and immune to
    coarse mtimes). Thread-safe."""

    def __init__(self, path, ttl):
        self.path = path
        self.ttl = ttl
        self.lock = threading.Lock()
        self.raw = None
        self.zone = {}
        self.refresh(fatal=True)

    def refresh(self, fatal=False):
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError as e:
            if fatal:
                raise ZoneError(f"{self.path}: {e}") from None
            return
        with self.lock:
            if raw == self.raw:
                return
            self.raw = raw  # A bad zone is reported once, until it changes.
            try:
                try:
                    data = json.loads(raw)
                except ValueError as e:
                    raise ZoneError(f"invalid JSON: {e}") from None
                self.zone = build_zone(data, self.ttl)
            except ZoneError as e:
                if fatal:
                    raise ZoneError(f"{self.path}: {e}") from None
                log_err(f"{self.path}: {e} (keeping the previous zone)")

    def get(self):
        self.refresh()
        with self.lock:
            return self.zone


# ---------------------------------------------------------------- answers


def formerr_for(wire):
    """A header-only FORMERR for a query we could not parse, or None."""
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    flags = dns.flags.QR | (flags & (0x7800 | dns.flags.RD)) | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)


def fill_answer(response, zone, qname, qtype):
    """Puts the records for (qname, qtype) in the response and sets the
    rcode, following CNAMEs."""
    name = qname
    for _ in range(MAX_CNAME_HOPS + 1):
        node = zone.get(name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return
        cname = node.rdatasets.get(dns.rdatatype.CNAME)
        if cname is not None and qtype != dns.rdatatype.CNAME:
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            name = cname[0].target
            continue
        if qtype == dns.rdatatype.ANY:
            types = list(node.rdatasets)
        else:
            types = [qtype] if qtype in node.rdatasets else []
        for t in types:
            rds = node.rdatasets[t]
            response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
        return
    # A CNAME chain too long (or a loop): what a recursive server gives.
    response.set_rcode(dns.rcode.SERVFAIL)


class Server:
    def __init__(self, zone, query_log=None, drop_all=False, forge_udp=False):
        self.zone = zone
        self.query_log = query_log
        self.log_lock = threading.Lock()
        self.drop_all = drop_all
        self.forge_udp = forge_udp

    def log_query(self, transport, qname, qtype):
        if self.query_log is None:
            return
        name = qname.to_text(omit_final_dot=True).lower() or "."
        with self.log_lock:
            self.query_log.write(f"{transport} {name} {dns.rdatatype.to_text(qtype)}\n")
            self.query_log.flush()

    def handle(self, wire, transport):
        """The reply (bytes) for one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return formerr_for(wire)
        if query.flags & dns.flags.QR:
            return None
        try:
            return self._answer(query, transport)
        except Exception:
            log_err("error answering a query:\n" + traceback.format_exc())
            response = dns.message.make_response(query, recursion_available=True)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _answer(self, query, transport):
        if len(query.question) == 1:
            q = query.question[0]
            self.log_query(transport, q.name, q.rdtype)
        if self.drop_all:
            return None

        response = dns.message.make_response(
            query, recursion_available=True, our_payload=OUR_UDP_PAYLOAD)
        response.flags |= dns.flags.AA
        if query.edns > 0:
            response.use_edns(0, 0, OUR_UDP_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return response.to_wire()
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()

        zone = self.zone.get()
        node = zone.get(q.name)
        flags = node.flags if node is not None else set()
        if "_drop" in flags:
            return None
        if "_servfail" in flags:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if "_refused" in flags:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        if transport == "udp" and "_truncate" in flags:
            response.flags |= dns.flags.TC
            return response.to_wire()

        fill_answer(response, zone, q.name, q.rdtype)

        if transport == "tcp":
            limit = 65535
        elif query.edns >= 0:
            limit = max(512, min(query.payload, 65535))
        else:
            limit = 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.authority = []
            response.additional = []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)


# ---------------------------------------------------------------- sockets


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def bind_pair(addr, port):
    """A listening TCP socket and a UDP socket on the same port."""
    family = family_of(addr)
    attempts = 100 if port == 0 else 1
    for _ in range(attempts):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            tcp.bind((addr, port))
            chosen = tcp.getsockname()[1]
            udp.bind((addr, chosen))
            tcp.listen(64)
            return tcp, udp, chosen
        except OSError as e:
            tcp.close()
            udp.close()
            if port != 0 or e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")


def forged_reply(wire):
    """What an off-path spoofer who guessed the ID would send: the query's
    ID, but an answer for another question (forged.invalid A 192.0.2.66)."""
    query = dns.message.from_wire(wire)
    forged = dns.message.make_query("forged.invalid", "A")
    forged.id = query.id
    response = dns.message.make_response(forged, recursion_available=True)
    response.answer.append(dns.rrset.from_text("forged.invalid.", 0, "IN", "A", "192.0.2.66"))
    return response.to_wire()


def serve_udp(server, sock):
    while True:
        try:
            wire, peer = sock.recvfrom(65535)
        except OSError:
            return  # closed at shutdown
        try:
            reply = server.handle(wire, "udp")
            if reply is not None:
                if server.forge_udp:
                    sock.sendto(forged_reply(wire), peer)
                sock.sendto(reply, peer)
        except Exception:
            log_err("UDP error:\n" + traceback.format_exc())


def recv_exactly(conn, n):
    buf = b""
    while len(buf) < n:
        data = conn.recv(n - len(buf))
        if not data:
            return None
        buf += data
    return buf


def serve_tcp_conn(server, conn):
    try:
        with conn:
            while True:
                head = recv_exactly(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                wire = recv_exactly(conn, length)
                if wire is None:
                    return
                reply = server.handle(wire, "tcp")
                if reply is None:
                    # Dropped query, or garbage without a DNS header: say
                    # nothing and keep reading until the client gives up.
                    continue
                conn.sendall(struct.pack("!H", len(reply)) + reply)
    except OSError:
        pass
    except Exception:
        log_err("TCP error:\n" + traceback.format_exc())


def serve_tcp(server, sock):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError as e:
            if e.errno in (errno.EBADF, errno.EINVAL):
                return  # closed at shutdown
            continue
        threading.Thread(target=serve_tcp_conn, args=(server, conn), daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description="An authoritative DNS server for tests.")
    parser.add_argument("--zone", required=True, help="the zone, a JSON file (re-read when it changes)")
    parser.add_argument("--port", type=int, default=0, help="UDP and TCP port; 0 picks a free one")
    parser.add_argument("--addr", default="127.0.0.1", help="address to listen on (127.0.0.1 or ::1)")
    parser.add_argument("--log", help="append one line per query to this file")
    parser.add_argument("--ttl", type=int, default=0, help="TTL of every record (default 0)")
    parser.add_argument("--drop-all", action="store_true", help="never answer anything")
    parser.add_argument("--forge-udp", action="store_true",
                        help="before each UDP answer, send a forged one (same ID, another question)")
    args = parser.parse_args(argv)

    try:
        zone = Zone(args.zone, args.ttl)
    except ZoneError as e:
        log_err(str(e))
        return 2
    query_log = open(args.log, "a", encoding="utf-8") if args.log else None
    server = Server(zone, query_log, drop_all=args.drop_all, forge_udp=args.forge_udp)
    try:
        tcp, udp, port = bind_pair(args.addr, args.port)
    except OSError as e:
        log_err(f"cannot listen on {args.addr} port {args.port}: {e}")
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # A parent may spawn us with these blocked (threads of a Swift or NIO
    # process block signals, and the mask is inherited): unblock them, or
    # SIGTERM would never stop the server.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    threading.Thread(target=serve_udp, args=(server, udp), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(server, tcp), daemon=True).start()

    sys.stdout.write(f"port {port}\n")
    sys.stdout.flush()
    while not stop.wait(1):
        pass
    tcp.close()
    udp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
