"""Talking to a daemon's monitoring server (ChasquidServer(monitoring=True))."""

import http.client
import json


def request(srv, path, method="GET", body=None, headers=None):
    """(status, headers {lowercase: value}, body text) from the monitoring
    server. headers: sent as given (a Host among them replaces the default)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.mon_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data.decode("utf-8")
    finally:
        conn.close()


def get(srv, path):
    """The body of a 200 GET."""
    status, _, text = request(srv, path)
    assert status == 200, f"GET {path}: {status}\n{text[:2000]}"
    return text


def debug_vars(srv):
    """/debug/vars as a dict."""
    return json.loads(get(srv, "/debug/vars"))


def wait_idle(srv):
    """No SMTP connection open (the gauge is 0): the counters of finished
    sessions are final."""
    srv.wait_for(lambda: debug_vars(srv).get("chasquid/smtp_in_open_connections", 0) == 0,
                 30, "no open SMTP connection")
