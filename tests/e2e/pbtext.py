"""A small, schema-less reader for protobuf text format, enough to inspect
the users files chasquid-util writes (COMPAT.md §4, §6), plus a writer for
hand-made users files, and scrypt checks done with Python's hashlib.

A message is a list of (field name, value) pairs. A value is bytes (string
literals, undecoded), int, float, a bare identifier (str: enums, true/false)
or a nested message (list).
"""

import hashlib
import os
import re

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>-?(?:0[xX][0-9a-fA-F]+|\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+|\d+(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:,;-])
    """,
    re.VERBOSE,
)


class ParseError(Exception):
    pass


def _unescape(body):
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        i += 1
        e = body[i]
        simple = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", "'": b"'",
                  '"': b'"', "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v", "?": b"?"}
        if e in simple:
            out += simple[e]
            i += 1
        elif e in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 1:])
            out.append(int(m.group(0), 16))
            i += 1 + len(m.group(0))
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i:])
            out.append(int(m.group(0), 8) & 0xFF)
            i += len(m.group(0))
        elif e == "u":
            out += chr(int(body[i + 1:i + 5], 16)).encode("utf-8")
            i += 5
        elif e == "U":
            out += chr(int(body[i + 1:i + 9], 16)).encode("utf-8")
            i += 9
        else:
            raise ParseError(f"bad escape \\{e}")
    return bytes(out)


def _tokens(text):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"unexpected input at offset {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            yield kind, m.group(0)


class _Parser:
    def __init__(self, text):
        self.toks = list(_tokens(text))
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, value=None):
        tok = self.peek()
        if tok[0] is None or (value is not None and tok[1] != value):
            raise ParseError(f"expected {value!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def message(self, close=None):
        fields = []
        while True:
            kind, val = self.peek()
            if kind is None:
                if close is not None:
                    raise ParseError(f"missing {close!r}")
                return fields
            if close is not None and val == close:
                self.i += 1
                return fields
            if kind != "ident":
                raise ParseError(f"expected a field name, found {val!r}")
            self.i += 1
            name = val
            colon = self.peek()[1] == ":"
            if colon:
                self.i += 1
            if self.peek()[1] == "[":
                self.i += 1
                while self.peek()[1] != "]":
                    fields.append((name, self.value()))
                    if self.peek()[1] == ",":
                        self.i += 1
                self.i += 1
            else:
                if not colon and self.peek()[1] not in ("{", "<"):
                    raise ParseError(f"missing ':' after {name}")
                fields.append((name, self.value()))
            if self.peek()[1] in (",", ";"):
                self.i += 1

    def value(self):
        kind, val = self.peek()
        if val == "{":
            self.i += 1
            return self.message("}")
        if val == "<":
            self.i += 1
            return self.message(">")
        if kind == "str":
            out = b""
            while self.peek()[0] == "str":
                out += _unescape(self.take()[1][1:-1])
            return out
        if val == "-":
            self.i += 1
            kind, val = self.take()
            val = "-" + val
        elif kind == "num":
            self.i += 1
        if kind == "num":
            v = val.rstrip("fF")
            if re.fullmatch(r"-?0[xX][0-9a-fA-F]+", v):
                return int(v, 16)
            if re.fullmatch(r"-?0[0-7]+", v):
                return int(v, 8)
            if re.fullmatch(r"-?\d+", v):
                return int(v)
            return float(v)
        if kind == "ident":
            self.i += 1
            return val
        raise ParseError(f"unexpected {val!r}")


def parse(text):
    """Parses protobuf text format into a list of (name, value) pairs."""
    return _Parser(text).message()


def get(msg, name, default=None):
    for k, v in msg:
        if k == name:
            return v
    return default


def get_all(msg, name):
    return [v for k, v in msg if k == name]


def load_users(path):
    """Reads a users file (§6 ProtoDB) into {user: (scheme, fields)}.

    `scheme` is "scrypt", "plain", "denied" or None; `fields` is a dict of
    the scheme's fields. Keys are the UTF-8 decoded map keys.
    """
    with open(path, encoding="utf-8") as f:
        msg = parse(f.read())
    users = {}
    for name, entry in msg:
        if name != "users":
            raise ParseError(f"unknown top-level field {name!r}")
        key = get(entry, "key", b"").decode("utf-8")
        value = get(entry, "value", [])
        if key in users:
            raise ParseError(f"duplicate key {key!r}")
        if not value:
            users[key] = (None, {})
            continue
        if len(value) != 1:
            raise ParseError(f"{key!r}: expected one scheme, found {value!r}")
        scheme, fields = value[0]
        users[key] = (scheme, dict(fields))
    return users


def scrypt_key(password, salt, log_n=14, r=8, p=1, key_len=32):
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hashlib.scrypt(password, salt=salt, n=1 << log_n, r=r, p=p,
                          dklen=key_len, maxmem=1 << 27)


def scrypt_matches(fields, password):
    """Checks a stored `scrypt` entry against `password`, independently of
    the tool that wrote it."""
    return scrypt_key(password, fields["salt"], fields["logN"], fields["r"],
                      fields["p"], fields["keyLen"]) == fields["encrypted"]


def quote_bytes(b):
    """A text-format "..." literal: printable ASCII as is, the rest octal."""
    out = []
    for c in b:
        if c in (0x22, 0x5C):
            out.append("\\" + chr(c))
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\%03o" % c)
    return '"' + "".join(out) + '"'


def scrypt_entry_text(user, password, salt=None):
    """One `users { ... }` map entry with an scrypt hash computed here."""
    salt = os.urandom(16) if salt is None else salt
    enc = scrypt_key(password, salt)
    return (
        "users {\n"
        f"  key: {quote_bytes(user.encode('utf-8'))}\n"
        "  value {\n"
        "    scrypt {\n"
        "      logN: 14\n      r: 8\n      p: 1\n      keyLen: 32\n"
        f"      salt: {quote_bytes(salt)}\n"
        f"      encrypted: {quote_bytes(enc)}\n"
        "    }\n  }\n}\n"
    )
