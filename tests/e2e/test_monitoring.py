"""End-to-end tests of the monitoring HTTP server (COMPAT.md §19, §22.17),
checked with real tools: Prometheus' promtool, the strict OpenMetrics parser
of the Python prometheus_client, and headless Chromium.

Every daemon listens on loopback only: `monitoring_address` gets a free port
of 127.0.0.1 through `extra_conf`.

    scripted   (module)  one scripted plain SMTP session (EHLO, XYZZY, MAIL,
                         RCPT, DATA, QUIT) plus an HTTP "GET /" on port 25;
                         /metrics and /debug/vars are scraped once it is over
    queued     (module)  one submitted message, to a local and a remote
                         recipient; the remote one stays queued (the outgoing
                         port is 1) with a temporary error
    others               their own daemon, stopped at the end of the test

promtool (Debian `prometheus`), prometheus_client (pip) and Chromium (Debian
`chromium`) are installed by .ci/run. A test that needs one is skipped when
it is missing on a developer machine, but fails in CI (CI set).
"""

import base64
import html
import json
import os
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import pytest

import mta
from monitoring import get, request, wait_idle
import server as S
from server import ChasquidServer
from smtpraw import RawSMTP, no_verify_context

IN_CI = bool(os.environ.get("CI"))

METRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# The last three lines of /metrics, exactly as expvarom writes them (§19).
TRAILER = [
    "# HELP generated_by expvarom",
    '# HELP ignored_variables ["chasquid_sourceDateStr" "chasquid_version" "cmdline" "memstats"]',
    "# EOF",
]

# The non-numeric expvar variables: only in /debug/vars (§19).
IGNORED_VARS = ["chasquid/sourceDateStr", "chasquid/version", "cmdline", "memstats"]

# Families we added (§22.17): typed, snake_case.
HISTOGRAMS = ["chasquid_delivery_attempt_duration_seconds",
              "chasquid_smtp_in_session_duration_seconds"]
GAUGES = ["chasquid_queue_items", "chasquid_smtp_in_open_connections"]

# chasquid's own counters (§19): untyped, with their camelCase names.
CHASQUID_COUNTERS = [
    "chasquid_aliases_hookResults", "chasquid_queue_deliverAttempts",
    "chasquid_queue_dsnQueued", "chasquid_queue_itemsWritten", "chasquid_queue_putCount",
    "chasquid_smtpIn_commandCount", "chasquid_smtpIn_loopsDetected",
    "chasquid_smtpIn_responseCodeCount", "chasquid_smtpIn_spfResultCount",
    "chasquid_smtpIn_tlsCount", "chasquid_smtpIn_wrongProtoCount",
]


def uid():
    return uuid.uuid4().hex[:12]


# ---------------------------------------------------------------- tools


def tool(name, path):
    """The tool's path; skips when it is missing, except in CI (fails)."""
    found = shutil.which(name) or (path if os.access(path, os.X_OK) else None)
    if found:
        return found
    why = f"{name} is not installed ({path}); .ci/run installs it"
    if IN_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def openmetrics_parser():
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        why = "prometheus_client is not installed (pip install prometheus_client)"
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return text_string_to_metric_families


# ---------------------------------------------------------------- daemon and HTTP


def start_monitored(**kwargs):
    """A started ChasquidServer with the monitoring server on .mon_port."""
    srv = ChasquidServer(monitoring=True, **kwargs)
    try:
        srv.start()
        assert f"Monitoring HTTP server listening on 127.0.0.1:{srv.mon_port}" in srv.stderr()
    except BaseException:
        srv.cleanup()
        raise
    return srv


def listening_tcp_ports(pid):
    """The TCP ports the process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


# ---------------------------------------------------------------- page readers


def metric_lines(text, family):
    """The sample lines of one family (histograms: _bucket, _sum, _count)."""
    pat = re.compile(rf"^{re.escape(family)}(_bucket|_sum|_count)?[{{ ]")
    return [l for l in text.splitlines() if pat.match(l)]


def sample_values(text, family):
    """{label part ('' or '{k="v"}'): float} for an untyped or gauge family."""
    out = {}
    for line in metric_lines(text, family):
        key, value = line.rsplit(" ", 1)
        out[key[len(family):]] = float(value)
    return out


def code_counts(text):
    """responseCodeCount as {code: count}."""
    return {int(re.fullmatch(r'\{code="(\d+)"\}', k).group(1)): v
            for k, v in sample_values(text, "chasquid_smtpIn_responseCodeCount").items()}


def family_sequence(text):
    """The family each non-trailer line belongs to, in order (histogram
    sample names are folded into their family)."""
    typed = set(re.findall(r"^# TYPE (\S+) histogram$", text, re.M))
    seq = []
    for line in text.splitlines()[:-len(TRAILER)]:
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split(" ")[2]
        else:
            assert not line.startswith("#"), f"unexpected comment line {line!r}"
            name = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0)
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in typed:
                    name = name[: -len(suffix)]
        seq.append(name)
    return seq


def trace_events(page):
    """The event messages of the (first) trace block in a page, unescaped."""
    return [html.unescape(m) for m in re.findall(r'<td class="mono">(.*?)</td>', page, re.S)]


def trace_links(page):
    """Every trace id a page links to, in order."""
    return [int(t) for t in re.findall(r'href="/debug/traces\?trace=(\d+)"', page)]


def trace_id_for_client(srv, port):
    """The SMTP.Conn trace of the connection from 127.0.0.1:<port>."""
    page = get(srv, "/debug/traces?fam=SMTP.Conn&b=0")
    m = re.search(rf'<a href="/debug/traces\?trace=(\d+)"><code>127\.0\.0\.1:{port}</code></a>', page)
    assert m, f"no SMTP.Conn trace titled 127.0.0.1:{port} in bucket 0:\n{page}"
    return int(m.group(1))


def protocol_lines(events):
    """Commands in full, replies as '< <code>' (reply texts are ours)."""
    out = []
    for e in events:
        first = e.split("\n")[0]
        if first.startswith("> "):
            out.append(first)
        elif first.startswith("< "):
            out.append(first[:5])
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scripted():
    """A daemon after one scripted SMTP session and one HTTP request on port 25.

    Attributes: srv, before (/metrics before the sessions), metrics,
    headers (of /metrics), vars_text, session_port, http_port, marker, qid.
    """
    srv = start_monitored()
    try:
        env = type("Env", (), {})()
        env.srv = srv
        wait_idle(srv)  # start()'s own connection probes are over
        env.before = get(srv, "/metrics")
        env.marker = f"BODY-{uid()}"

        c = RawSMTP(srv.smtp_port, timeout=30)
        env.session_port = c.local_port
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("XYZZY")[0] == 500
        assert c.cmd("MAIL FROM:<sender@sender.invalid>")[0] == 250
        assert c.cmd(f"RCPT TO:<{srv.user}>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, text = c.cmd(f"Subject: scripted\r\n\r\n{env.marker}\r\n.")
        assert code == 250, text
        assert c.cmd("QUIT")[0] == 221
        c.close()

        # An HTTP client that found the SMTP port (wrongProtoCount).
        h = RawSMTP(srv.smtp_port, timeout=30)
        env.http_port = h.local_port
        assert h.reply()[0] == 220
        assert h.cmd("GET / HTTP/1.0")[0] == 502
        h.close()

        env.qid = mta.queued_id(srv, env.session_port)
        srv.wait_for_messages(1)
        # Local delivery counted, no connection left: nothing moves any more.
        srv.wait_for(lambda: 'chasquid_queue_deliverAttempts{recipient_type="email:local"} 1'
                     in get(srv, "/metrics"), 30, "the local delivery attempt")
        wait_idle(srv)
        _, env.headers, env.metrics = request(srv, "/metrics")
        env.vars_text = get(srv, "/debug/vars")
        yield env
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def queued():
    """A daemon with one queued message: delivered to the local user, kept
    for someone@example.org after a failed first attempt.

    Attributes: srv, qid, marker, remote.
    """
    srv = start_monitored()
    try:
        env = type("Env", (), {})()
        env.srv = srv
        env.marker = f"QUEUEBODY-{uid()}"
        env.remote = "someone@example.org"
        msg = mta.make_message("queued", f"{env.marker}\n", sender=srv.user, to=env.remote)
        env.qid = mta.submit(srv, [env.remote, srv.user], msg)
        srv.wait_for_messages(1)
        mta.wait_for_attempt(srv, env.qid, env.remote, "failed (temporary)")
        yield env
    finally:
        srv.cleanup()


@pytest.fixture
def mon():
    srv = start_monitored()
    yield srv
    srv.cleanup()


# ---------------------------------------------------------------- /metrics


def test_metrics_counters_after_scripted_session(scripted):
    """The session is counted exactly, in chasquid's names and label forms."""
    m = scripted.metrics
    assert scripted.headers["content-type"] == METRICS_CONTENT_TYPE

    # QUIT and the HTTP verb are not commands; the unknown verb is quoted,
    # and the quotes escaped as \" in the label value.
    assert metric_lines(m, "chasquid_smtpIn_commandCount") == [
        'chasquid_smtpIn_commandCount{command="DATA"} 1',
        'chasquid_smtpIn_commandCount{command="EHLO"} 1',
        'chasquid_smtpIn_commandCount{command="MAIL"} 1',
        'chasquid_smtpIn_commandCount{command="RCPT"} 1',
        'chasquid_smtpIn_commandCount{command="unknown<\\"XYZZY\\">"} 1',
    ]
    assert metric_lines(m, "chasquid_smtpIn_wrongProtoCount") == [
        'chasquid_smtpIn_wrongProtoCount{command="GET"} 1']
    assert metric_lines(m, "chasquid_smtpIn_tlsCount") == [
        'chasquid_smtpIn_tlsCount{status="plain"} 1']
    assert metric_lines(m, "chasquid_queue_putCount") == ["chasquid_queue_putCount 1"]
    assert metric_lines(m, "chasquid_queue_deliverAttempts") == [
        'chasquid_queue_deliverAttempts{recipient_type="email:local"} 1']
    assert metric_lines(m, "chasquid_smtpIn_spfResultCount") == [
        'chasquid_smtpIn_spfResultCount{result="none"} 1']

    # Response codes, compared with the baseline taken after start()'s
    # connection probes: 250 for EHLO, MAIL, RCPT and the data. (Greetings,
    # code 220, are the subject of test_response_code_count_like_chasquid.)
    before, after = code_counts(scripted.before), code_counts(m)
    assert set(before) <= {220}, scripted.before
    delta = {c: after.get(c, 0) - before.get(c, 0) for c in after if c != 220}
    assert {c: n for c, n in delta.items() if n} == {221: 1, 250: 4, 354: 1, 500: 1, 502: 1}
    for line in metric_lines(m, "chasquid_smtpIn_responseCodeCount"):
        assert re.fullmatch(r'chasquid_smtpIn_responseCodeCount\{code="\d{3}"\} \d+', line), line

    # Counters stay untyped integers (a typed counter would need _total).
    assert not re.search(r"^# TYPE \S+ counter$", m, re.M)
    for fam in CHASQUID_COUNTERS:
        assert f"# TYPE {fam} " not in m, fam
    for fam in CHASQUID_COUNTERS:
        for line in metric_lines(m, fam):
            assert re.fullmatch(r"\S+ \d+", line), f"not an integer counter: {line!r}"

    # Our gauges and histograms are typed.
    for fam in GAUGES:
        assert f"# TYPE {fam} gauge\n" in m, fam
    assert metric_lines(m, "chasquid_smtp_in_open_connections") == [
        "chasquid_smtp_in_open_connections 0.0"]
    assert sample_values(m, "chasquid_queue_items") == {"": 0.0}
    for fam in HISTOGRAMS:
        assert f"# TYPE {fam} histogram\n" in m, fam
    assert ('chasquid_delivery_attempt_duration_seconds_count{recipient_type="email:local"} 1'
            in m.splitlines())
    # Connections by listener mode: at least the two on port 25.
    smtp_count = re.search(r'^chasquid_smtp_in_session_duration_seconds_count\{mode="SMTP"\} (\d+)$',
                           m, re.M)
    assert smtp_count and int(smtp_count.group(1)) >= 2, m


def test_response_code_count_like_chasquid(mon):
    """responseCodeCount counts the replies to commands, as chasquid's
    writeResponse does: not the greeting (chasquid writes it with
    printfLine), but the 220 that answers STARTTLS, which the trace shows
    like any other reply."""
    wait_idle(mon)
    base = code_counts(get(mon, "/metrics"))

    def delta():
        now = code_counts(get(mon, "/metrics"))
        return {c: n - base.get(c, 0) for c, n in now.items() if n != base.get(c, 0)}

    c = RawSMTP(mon.smtp_port, timeout=30)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    assert c.cmd("QUIT")[0] == 221
    c.close()
    wait_idle(mon)
    plain = delta()

    with smtplib.SMTP("127.0.0.1", mon.smtp_port, local_hostname="client.test", timeout=60) as s:
        s.starttls(context=no_verify_context())
        s.ehlo("client.test")
        port = s.sock.getsockname()[1]
    wait_idle(mon)
    both = delta()
    events = trace_events(get(mon, f"/debug/traces?trace={trace_id_for_client(mon, port)}"))
    lines = protocol_lines(events)
    after_starttls = lines[lines.index("> STARTTLS") + 1]

    # All three checked before failing, so one run shows every difference.
    problems = []
    if plain != {250: 1, 221: 1}:
        problems.append(f"EHLO+QUIT session counted {plain}, want {{250: 1, 221: 1}} "
                        "(the greeting is not a reply to a command)")
    if both != {220: 1, 250: 3, 221: 2}:
        problems.append(f"after a STARTTLS session too: {both}, want {{220: 1, 250: 3, 221: 2}} "
                        "(the STARTTLS 220 is counted)")
    if after_starttls != "< 220":
        problems.append(f"the trace shows {after_starttls!r} after '> STARTTLS', not its 220 reply")
    assert not problems, "\n".join(problems) + f"\ntrace: {events}"


def test_metrics_layout_sorted_with_help_and_trailer(scripted):
    """Families sorted by name, each contiguous and led by its # HELP; the
    expvarom trailer exactly; # EOF last, then nothing."""
    m = scripted.metrics
    assert m.endswith("\n# EOF\n")
    lines = m.splitlines()
    assert lines[-3:] == TRAILER
    assert "\n\n" not in m, "blank line in the exposition"

    seq = family_sequence(m)
    order = []
    for name in seq:
        if not order or order[-1] != name:
            assert name not in order, f"family {name} is split: {order}"
            order.append(name)
    assert order == sorted(order), order
    for fam in CHASQUID_COUNTERS + GAUGES + HISTOGRAMS + ["chasquid_sourceDateTimestamp"]:
        assert fam in order, fam

    # Each family starts with its HELP line, then (gauges, histograms) TYPE.
    body = lines[:-3]
    for fam in order:
        first = next(i for i, n in enumerate(seq) if n == fam)
        assert body[first].startswith(f"# HELP {fam} "), (fam, body[first])
        assert len(body[first]) > len(f"# HELP {fam} "), f"empty help for {fam}"
    assert sum(1 for l in lines if l.startswith("# EOF")) == 1


def test_promtool_check_metrics(scripted):
    """promtool parses the exposition; its only complaints are the camelCase
    names that COMPAT §19 fixes, never one of our snake_case families."""
    promtool = tool("promtool", "/usr/bin/promtool")
    p = subprocess.run([promtool, "check", "metrics"], input=scripted.metrics.encode(),
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode != 1, f"promtool could not parse /metrics:\n{out}"
    assert p.returncode in (0, 3), f"promtool exited {p.returncode}:\n{out}"
    problems = [l for l in out.splitlines() if l.strip()]
    if p.returncode == 3:
        assert problems, "exit 3 without a reported problem"
    named = set()
    for line in problems:
        name, _, what = line.partition(" ")
        named.add(name)
        assert re.search(r"[A-Z]", name), f"problem with a snake_case metric: {line!r}"
        assert what == "metric names should be written in 'snake_case' not 'camelCase'", line
    for fam in GAUGES + HISTOGRAMS:
        assert fam not in named, fam
    # And the lint did look at the file: chasquid's names were seen.
    assert "chasquid_smtpIn_commandCount" in named, out


def test_openmetrics_strict_parser(scripted):
    """prometheus_client's OpenMetrics parser accepts the whole text (it is
    strict: # EOF, histogram buckets, label escaping)."""
    parse = openmetrics_parser()
    families = {f.name: f for f in parse(scripted.metrics)}

    for fam in HISTOGRAMS:
        assert families[fam].type == "histogram", fam
    for fam in GAUGES:
        assert families[fam].type == "gauge", fam
    for fam in CHASQUID_COUNTERS:
        assert families[fam].type == "unknown", fam

    cmds = {s.labels["command"]: s.value for s in families["chasquid_smtpIn_commandCount"].samples}
    assert cmds == {"DATA": 1, "EHLO": 1, "MAIL": 1, "RCPT": 1, 'unknown<"XYZZY">': 1}

    # Histograms: each label set has rising buckets ending in +Inf, and its
    # _count equals the +Inf bucket.
    for fam in HISTOGRAMS:
        series = {}
        for s in families[fam].samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(labels, []).append(s)
        assert series, fam
        for labels, samples in series.items():
            buckets = [s for s in samples if s.name.endswith("_bucket")]
            count = [s.value for s in samples if s.name.endswith("_count")]
            assert buckets[-1].labels["le"] == "+Inf", (fam, labels)
            values = [b.value for b in buckets]
            assert values == sorted(values), (fam, labels, values)
            assert count == [buckets[-1].value], (fam, labels)
    local = [s for s in families["chasquid_delivery_attempt_duration_seconds"].samples
             if s.name.endswith("_count") and s.labels.get("recipient_type") == "email:local"]
    assert [s.value for s in local] == [1]


# ---------------------------------------------------------------- /debug/vars


def test_debug_vars_json(scripted):
    """Go's expvar JSON: the same counts as /metrics, plus the strings,
    cmdline and memstats that /metrics leaves out."""
    v = json.loads(scripted.vars_text)
    srv = scripted.srv

    assert v["chasquid/smtpIn/commandCount"] == {
        "DATA": 1, "EHLO": 1, "MAIL": 1, "RCPT": 1, 'unknown<"XYZZY">': 1}
    assert v["chasquid/smtpIn/wrongProtoCount"] == {"GET": 1}
    assert v["chasquid/smtpIn/tlsCount"] == {"plain": 1}
    assert v["chasquid/queue/putCount"] == 1
    assert v["chasquid/queue/deliverAttempts"] == {"email:local": 1}

    assert v["cmdline"] == [str(a) for a in srv.proc.args]
    version = S.run_bin([S.chasquid_bin(), "-version"]).stdout.decode()
    assert isinstance(v["chasquid/version"], str) and v["chasquid/version"]
    assert v["chasquid/version"] in version
    assert isinstance(v["chasquid/sourceDateStr"], str) and v["chasquid/sourceDateStr"] in version
    assert isinstance(v["chasquid/sourceDateTimestamp"], int) and v["chasquid/sourceDateTimestamp"] > 0
    assert isinstance(v["memstats"], dict) and v["memstats"]
    numbers = [x for x in v["memstats"].values() if isinstance(x, (int, float))]
    assert numbers and any(x > 0 for x in numbers), v["memstats"]

    # Every numeric variable is in /metrics under its converted name, with
    # the same values; the others are the trailer's ignored_variables.
    for key in IGNORED_VARS:
        assert key in v, key
    m = scripted.metrics
    for key, value in v.items():
        if key in IGNORED_VARS:
            continue
        name = re.sub(r"[^A-Za-z0-9_]", "_", key)
        got = sample_values(m, name)
        if isinstance(value, dict):
            label = re.search(rf"^{re.escape(name)}\{{(\w+)=", m, re.M).group(1)
            want = {'{%s="%s"}' % (label, k.replace("\\", "\\\\").replace('"', '\\"')): float(n)
                    for k, n in value.items()}
            assert got == want, (key, got, want)
        else:
            assert got == {"": float(value)}, (key, got, value)


# ---------------------------------------------------------------- traces


def test_trace_of_smtp_session(scripted):
    """The session's SMTP.Conn trace, found by its client port, shows the
    commands and the reply codes in order, and not the message body."""
    srv = scripted.srv
    tid = trace_id_for_client(srv, scripted.session_port)
    page = get(srv, f"/debug/traces?trace={tid}")
    assert re.search(rf"<h1>SMTP\.Conn 127\.0\.0\.1:{scripted.session_port}\b", page), page[:3000]

    events = trace_events(page)
    assert events[0] == f"SMTP connection from 127.0.0.1:{scripted.session_port}", events
    assert protocol_lines(events) == [
        "< 220",
        "> EHLO client.test",
        "< 250",
        "> XYZZY",
        "< 500",
        "> MAIL FROM:<sender@sender.invalid>",
        "< 250",
        f"> RCPT TO:<{srv.user}>",
        "< 250",
        "> DATA",
        "< 354",
        "< 250",
        "> QUIT",
        "< 221",
    ], events
    assert any(scripted.qid in e for e in events), f"queue ID {scripted.qid} not in {events}"
    assert scripted.marker not in page

    # The HTTP request on port 25 has its own trace.
    tid = trace_id_for_client(srv, scripted.http_port)
    events = trace_events(get(srv, f"/debug/traces?trace={tid}"))
    assert protocol_lines(events) == ["< 220", "> GET / HTTP/1.0", "< 502"], events

    # Unknown trace ids and buckets are 404s, not errors of the server.
    assert request(srv, "/debug/traces?trace=987654321")[0] == 404
    assert request(srv, "/debug/traces?fam=SMTP.Conn&b=99")[0] == 404


def test_trace_titles_for_short_connections(mon):
    """A client that connects and goes away at once (a port scan, a health
    check, an HTTP client on port 25) still gets a trace titled with its
    ip:port, as chasquid's conn.RemoteAddr() always is, never "unknown"."""
    ports = []
    # Four, so that with start()'s probes (three, more when a loaded
    # machine makes it look again) all fit in the ten traces kept per
    # latency bucket.
    for i in range(4):
        s = socket.create_connection(("127.0.0.1", mon.smtp_port), timeout=10)
        ports.append(s.getsockname()[1])
        if i % 2:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.close()
    # The gauge can read 0 before the server has even accepted the four
    # (they close at once): wait for their traces rather than for idleness.
    def titles():
        page = get(mon, "/debug/traces?fam=SMTP.Conn&b=0")
        return re.findall(r'<a href="/debug/traces\?trace=\d+"><code>([^<]*)</code></a>', page)
    mon.wait_for(lambda: all(f"127.0.0.1:{port}" in titles() for port in ports), 30, "the four traces")
    wait_idle(mon)
    titles = titles()
    assert "unknown" not in titles, titles
    for port in ports:
        assert f"127.0.0.1:{port}" in titles, (port, titles)


def all_monitoring_pages(srv):
    """{path: body} for every page that could show what a client sent: the
    traces summary, every family in every bucket, every trace linked from
    them, and /, /metrics, /debug/vars, /debug/queue, /queue."""
    pages = {}
    summary = get(srv, "/debug/traces")
    pages["/debug/traces"] = summary
    families = re.findall(r"<tr[^>]*><td><code>([^<]+)</code></td>", summary)
    assert {"SMTP.Conn", "Queue.Item", "Delivery"} <= set(families), summary
    linked = [html.unescape(h) for h in re.findall(r'href="(/debug/traces\?fam=[^"]+)"', summary)]
    listings = set(linked)
    for fam in families:
        for b in ["active", "errors", *map(str, range(8))]:
            listings.add(f"/debug/traces?fam={fam}&b={b}")
    trace_ids = set()
    for path in sorted(listings):
        body = get(srv, path)
        pages[path] = body
        trace_ids.update(trace_links(body))
    assert trace_ids
    for tid in sorted(trace_ids):
        path = f"/debug/traces?trace={tid}"
        body = get(srv, path)
        pages[path] = body
        for child in trace_links(body):  # parents and children too
            if f"/debug/traces?trace={child}" not in pages:
                pages[f"/debug/traces?trace={child}"] = get(srv, f"/debug/traces?trace={child}")
    for path in ["/", "/metrics", "/debug/vars", "/debug/queue", "/queue"]:
        pages[path] = get(srv, path)
    return pages


def test_redaction_of_credentials_and_bodies():
    """AUTH secrets (PLAIN with and without an initial response, LOGIN in two
    steps, a wrong password) and message bodies appear on no page."""
    srv = ChasquidServer(monitoring=True)
    try:
        # A user of our own with a password no page could show by chance.
        password = f"Pw-{uid()}-{uid()}"
        wrong = f"Wrong-{uid()}"
        user = f"redact@{srv.domain}"
        p = srv.util("user-add", user, f"--password={password}")
        assert p.returncode == 0, p.stderr
        srv.start()

        marker = f"SECRETBODY-{uid()}"
        header_marker = f"SECRETSUBJECT-{uid()}"
        ctx = no_verify_context()
        ports = []

        # 1. smtplib: AUTH PLAIN with an initial response (STARTTLS), then a
        # message to a local and a remote recipient (it stays queued).
        with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test",
                          timeout=60) as s:
            s.starttls(context=ctx)
            s.ehlo("client.test")
            s.login(user, password)
            ports.append(s.sock.getsockname()[1])
            msg = mta.make_message(header_marker, f"{marker}\n", sender=user,
                                   to="someone@example.org")
            assert s.sendmail(user, ["someone@example.org", srv.user], mta.crlf(msg)) == {}

        plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()

        def session(lines):
            """Runs [(line, code)] after STARTTLS on the submission port."""
            with smtplib.SMTP("127.0.0.1", srv.submission_port, local_hostname="client.test",
                              timeout=60) as s:
                s.starttls(context=ctx)
                s.ehlo("client.test")
                ports.append(s.sock.getsockname()[1])
                for line, code in lines:
                    got = s.docmd(line)
                    assert got[0] == code, (line, got)

        # 2. AUTH PLAIN, the response on its own line.
        session([("AUTH PLAIN", 334), (plain, 235)])
        # 3. AUTH LOGIN: user name, then password, each on its own line.
        session([("AUTH LOGIN", 334), (base64.b64encode(user.encode()).decode(), 334),
                 (base64.b64encode(password.encode()).decode(), 235)])
        # 4. The test user's password, and a wrong one (an error trace).
        session([("AUTH PLAIN " + base64.b64encode(f"\0{srv.user}\0{S.PASSWORD}".encode()).decode(), 235)])
        session([("AUTH LOGIN", 334), (base64.b64encode(user.encode()).decode(), 334),
                 (base64.b64encode(wrong.encode()).decode(), 535)])

        srv.wait_for_messages(1)
        wait_idle(srv)

        # The traces did record those sessions, with the secrets replaced.
        shown = {}
        for p_ in ports:
            tid = trace_id_for_client(srv, p_)
            shown[p_] = protocol_lines(trace_events(get(srv, f"/debug/traces?trace={tid}")))
        assert "> AUTH PLAIN (initial response not shown)" in shown[ports[0]], shown[ports[0]]
        assert "> AUTH PLAIN (initial response not shown)" in shown[ports[3]], shown[ports[3]]
        assert shown[ports[1]][-6:-2] == ["> AUTH PLAIN", "< 334", "> (AUTH response not shown)",
                                           "< 235"], shown[ports[1]]
        assert shown[ports[2]][-8:-2] == ["> AUTH LOGIN", "< 334", "> (AUTH response not shown)",
                                           "< 334", "> (AUTH response not shown)", "< 235"], shown[ports[2]]
        assert shown[ports[4]][-8:-2] == ["> AUTH LOGIN", "< 334", "> (AUTH response not shown)",
                                           "< 334", "> (AUTH response not shown)", "< 535"], shown[ports[4]]

        secrets = {
            "password": password,
            "wrong password": wrong,
            "test user's password": S.PASSWORD,
            "password (base64)": base64.b64encode(password.encode()).decode(),
            "wrong password (base64)": base64.b64encode(wrong.encode()).decode(),
            "test user's password (base64)": base64.b64encode(S.PASSWORD.encode()).decode(),
            "PLAIN response": plain,
            "test user's PLAIN response": base64.b64encode(f"\0{srv.user}\0{S.PASSWORD}".encode()).decode(),
            "body marker": marker,
            "subject marker": header_marker,
        }
        pages = all_monitoring_pages(srv)
        assert len(pages) > 20, sorted(pages)
        leaks = [(what, path) for path, body in pages.items()
                 for what, secret in secrets.items() if secret in body]
        assert not leaks, leaks
    finally:
        srv.cleanup()


# ---------------------------------------------------------------- queue


def test_debug_queue_text(queued):
    """/debug/queue: chasquid's DumpString text. The header, then per item
    `created at`, `from`, `to`, and per recipient `<STATUS> <addr> (<TYPE>)`
    with its original address and Go-quoted last failure, the same as the
    envelope on disk; never the body."""
    srv = queued.srv
    status, headers, text = request(srv, "/debug/queue")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    lines = text.splitlines()
    assert lines[:2] == ["# Queue status", ""]
    assert re.fullmatch(r"date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [+-]\d{4} \S+", lines[2]), text
    assert lines[3:5] == ["length: 1", ""]
    assert queued.marker not in text

    items = re.findall(r"^## Item (\S+)$", text, re.M)
    assert items == [queued.qid], text
    block = text.split(f"## Item {queued.qid}\n", 1)[1].splitlines()
    assert re.fullmatch(r"created at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [+-]\d{4} \S+", block[0]), block
    assert block[1] == f"from: {srv.user}"
    on_disk = mta.queue_item(srv, queued.qid)
    assert block[2] == "to: [" + " ".join(on_disk["to"]) + "]"
    # Three lines per recipient, in the envelope's order.
    for index, rcpt in enumerate(on_disk["rcpt"]):
        got = block[3 + 3 * index: 6 + 3 * index]
        assert got[0] == f"{rcpt['status']} {rcpt['address']} ({rcpt['type']})", got
        assert got[1] == f"  original address: {rcpt['original_address']}", got
        # Go's %q; the same as JSON for these ASCII texts.
        assert got[2] == "  last failure: " + json.dumps(rcpt["last_failure_message"]), got
    remote = next(r for r in on_disk["rcpt"] if r["address"] == queued.remote)
    assert remote.get("last_failure_message"), remote


def test_queue_page_and_its_traces(queued):
    """/queue shows the item: recipients, their status and last error, and a
    link to its Queue.Item trace, which links to the Delivery children."""
    srv = queued.srv
    page = get(srv, "/queue")
    assert queued.marker not in page
    assert f"<code>{queued.qid}</code>" in page
    row = re.search(r'<tr[^>]*><td class="mono">someone@example\.org</td><td>(\w+)</td>'
                    r"<td>(\w+)</td><td>([^<]*)</td></tr>", page)
    assert row, page
    assert row.group(1) == "EMAIL"
    assert row.group(2) == "PENDING"
    last_error = html.unescape(row.group(3))
    disk_remote = next(r for r in mta.queue_item(srv, queued.qid)["rcpt"]
                       if r["address"] == queued.remote)
    assert last_error and last_error == disk_remote["last_failure_message"]
    assert re.search(rf'<td class="mono">{re.escape(srv.user)}</td><td>EMAIL</td><td>SENT</td>', page)

    # The item's trace, then its delivery attempts.
    m = re.search(r'<th>Trace</th><td><a href="/debug/traces\?trace=(\d+)">', page)
    assert m, page
    item_page = get(srv, f"/debug/traces?trace={m.group(1)}")
    assert re.search(rf"<h1>Queue\.Item {queued.qid}\b", item_page), item_page[:3000]
    children = re.findall(r'<li><a href="/debug/traces\?trace=(\d+)">Delivery <code>([^<]*)</code></a></li>',
                          item_page)
    titles = {html.unescape(t): int(i) for i, t in children}
    assert f"{queued.qid} to {queued.remote}" in titles, children
    assert f"{queued.qid} to {srv.user}" in titles, children
    events = trace_events(item_page)
    assert any(queued.remote in e and "temporary" in e for e in events), events

    child = get(srv, f"/debug/traces?trace={titles[f'{queued.qid} to {queued.remote}']}")
    assert f'Part of <a href="/debug/traces?trace={m.group(1)}">Queue.Item <code>{queued.qid}</code>' in child
    child_events = trace_events(child)
    assert any(queued.remote in e for e in child_events), child_events
    assert '<tr class="error">' in child, "the failed attempt is not marked as an error"


# ---------------------------------------------------------------- /exit, 404, off


def test_exit_unknown_paths_and_methods(mon):
    """Unknown paths are 404; GET /exit is 405 and leaves the daemon up;
    POST /exit answers `OK exiting` and the daemon exits with status 0."""
    for path in ["/nonexistent", "/debug/nonexistent", "/metricsx", "/queue/x"]:
        status, _, _ = request(mon, path)
        assert status == 404, path

    # It listens on the three SMTP ports and the monitoring port, nothing else.
    assert listening_tcp_ports(mon.proc.pid) == {
        mon.smtp_port, mon.submission_port, mon.tls_port, mon.mon_port}

    status, headers, _ = request(mon, "/exit")
    assert status == 405
    assert "POST" in headers.get("allow", "")
    time.sleep(0.5)
    assert mon.proc.poll() is None, "GET /exit stopped the daemon"
    assert request(mon, "/metrics")[0] == 200

    # A raw request, read to the end: the reply must be complete before the
    # daemon goes away.
    with socket.create_connection(("127.0.0.1", mon.mon_port), timeout=30) as s:
        s.sendall(b"POST /exit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        raw = b""
        try:
            while chunk := s.recv(65536):
                raw += chunk
        except ConnectionResetError:
            pass
    assert mon.proc.wait(timeout=30) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mon.mon_port), timeout=5).close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), f"POST /exit got {raw!r}"
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length and int(length.group(1)) == len(body), f"truncated reply: {raw!r}"
    assert body.strip() == b"OK exiting", raw


def test_monitoring_off_by_default():
    """Without monitoring_address nothing but the SMTP ports listens, and no
    monitoring line is logged."""
    srv = ChasquidServer()
    try:
        srv.start()
        time.sleep(0.5)
        assert "monitoring" not in srv.stderr().lower(), srv.stderr()
        assert listening_tcp_ports(srv.proc.pid) == {
            srv.smtp_port, srv.submission_port, srv.tls_port}
    finally:
        srv.cleanup()


# ---------------------------------------------------------------- Chromium


def output_dir(tmp_path):
    """Where screenshots go: $CHASQUID_TEST_OUTPUT, else the test's tmp dir."""
    configured = os.environ.get("CHASQUID_TEST_OUTPUT")
    d = Path(configured) if configured else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_chromium(chromium, args, home):
    """Headless Chromium with a private profile; returns CompletedProcess."""
    profile = tempfile.mkdtemp(prefix="chromium-profile", dir=home)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    env = {**os.environ, "HOME": str(home)}
    try:
        return subprocess.run(cmd, capture_output=True, timeout=90, env=env, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_info(path):
    """(width, height, distinct byte values in the image data) of a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, i = b"", 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        if data[i + 4:i + 8] == b"IDAT":
            idat += data[i + 8:i + 8 + length]
        i += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_chromium_renders_pages(queued, tmp_path):
    """Headless Chromium loads /, /queue and a trace page: each screenshot
    is a real 1280x900 picture, and the rendered DOM of an SMTP trace holds
    the session's commands."""
    chromium = tool("chromium", "/usr/bin/chromium")
    srv = queued.srv
    home = tmp_path / "home"
    home.mkdir()
    out = output_dir(tmp_path)
    base = f"http://127.0.0.1:{srv.mon_port}"

    item_trace = re.search(r'<th>Trace</th><td><a href="(/debug/traces\?trace=\d+)">', get(srv, "/queue"))
    assert item_trace
    pages = {"index": "/", "queue": "/queue", "trace": html.unescape(item_trace.group(1)),
             "traces": "/debug/traces"}
    for name, path in pages.items():
        png = out / f"monitoring-{name}.png"
        if png.exists():
            png.unlink()
        p = run_chromium(chromium, [f"--screenshot={png}", "--window-size=1280,900", base + path], home)
        assert p.returncode == 0, p.stderr.decode()[-3000:]
        assert png.is_file(), f"no screenshot of {path}: {p.stderr.decode()[-3000:]}"
        width, height, distinct = png_info(png)
        assert (width, height) == (1280, 900), (path, width, height)
        assert png.stat().st_size > 20_000, (path, png.stat().st_size)
        assert distinct > 16, f"{path}: the screenshot looks blank"

    # The DOM after Chromium parsed and rendered the SMTP session's trace.
    tid = None
    for port_match in re.finditer(r'<a href="/debug/traces\?trace=(\d+)"><code>127\.0\.0\.1:\d+</code>',
                                  get(srv, "/debug/traces?fam=SMTP.Conn&b=0")):
        page = get(srv, f"/debug/traces?trace={port_match.group(1)}")
        if "MAIL FROM:" in html.unescape(page):
            tid = port_match.group(1)
            break
    assert tid, "no SMTP.Conn trace with a MAIL command"
    p = run_chromium(chromium, ["--dump-dom", f"{base}/debug/traces?trace={tid}"], home)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    dom = p.stdout.decode("utf-8", "replace")
    assert "<title>SMTP.Conn 127.0.0.1:" in dom, dom[:2000]
    for text in [f"&gt; MAIL FROM:&lt;{srv.user}&gt;", f"&gt; RCPT TO:&lt;{queued.remote}&gt;",
                 "&gt; DATA", "&gt; AUTH PLAIN (initial response not shown)", "&gt; QUIT"]:
        assert text in dom, text
    assert queued.marker not in dom
