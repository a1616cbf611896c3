"""Cross-compatibility with Debian's chasquid-util (1.11), both ways: users
files written by one tool are read by the other, and print-config agrees.

Debian's 1.11 differs from the 1.18 contract in ways these tests avoid: it
only takes `-C=<dir>`, prints "Database loaded" without a count, prints its
errors on stdout, knows no `denied` entries (1.13) and no config fields
after number 16 (max_queue_items, give_up_send_after).
"""

from collections import Counter

import pytest

import pbtext
from conftest import run, users_path, write_config

NAMES = ["alice", "ñandú", "Ñandú-Two", "josé.pérez", "user+tag"]


def auth(binary, cfg, address, password):
    return run(binary, f"-C={cfg}", "authenticate", address, f"--password={password}")


def debian_add(debian, cfg, address, password):
    rc, out, err = run(debian, f"-C={cfg}", "user-add", address, f"--password={password}")
    assert rc == 0, (out, err)
    assert "Added user" in out


def ours_add(ours, cfg, address, password):
    rc, out, err = run(ours, f"-C={cfg}", "user-add", address, f"--password={password}")
    assert (rc, err) == (0, ""), (out, err)
    assert out.endswith("Added user\n")


def debian_auth_ok(debian, cfg, address, password):
    rc, out, err = auth(debian, cfg, address, password)
    return rc == 0 and "Authentication succeeded" in out


def ours_auth_ok(ours, cfg, address, password):
    rc, out, err = auth(ours, cfg, address, password)
    if rc == 0:
        assert (out, err) == ("Authentication succeeded\n", "")
        return True
    assert (rc, out, err) == (1, "", "Authentication failed\n")
    return False


@pytest.mark.parametrize("name", NAMES)
def test_debian_user_authenticates_with_ours(ours, debian, config_dir, name):
    debian_add(debian, config_dir, f"{name}@example.com", f"pw-{name}")
    assert ours_auth_ok(ours, config_dir, f"{name}@example.com", f"pw-{name}")
    assert not ours_auth_ok(ours, config_dir, f"{name}@example.com", f"pw-{name}x")


def test_debian_normalised_names_match_ours(ours, debian, config_dir):
    # Both tools normalise the same way: a name added by Debian in one form
    # authenticates with ours in another form.
    debian_add(debian, config_dir, "Ñandú@example.com", "pw")
    assert list(pbtext.load_users(users_path(config_dir))) == ["ñandú"]
    assert ours_auth_ok(ours, config_dir, "ñandú@example.com", "pw")
    assert ours_auth_ok(ours, config_dir, "ÑANDÚ@example.com", "pw")


def test_debian_file_non_ascii_domain(ours, debian, config_dir):
    debian_add(debian, config_dir, "ñandú@ñandú.example", "pw")
    assert ours_auth_ok(ours, config_dir, "ñandú@ñandú.example", "pw")
    rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "ñandú.example")
    assert (rc, out, err) == (0, "Database loaded (1 users)\n", "")


@pytest.mark.parametrize("name", NAMES)
def test_our_user_authenticates_with_debian(ours, debian, config_dir, name):
    ours_add(ours, config_dir, f"{name}@example.com", f"pw-{name}")
    assert debian_auth_ok(debian, config_dir, f"{name}@example.com", f"pw-{name}")
    assert not debian_auth_ok(debian, config_dir, f"{name}@example.com", "wrong")


def test_our_multi_user_file_passes_debian_check(ours, debian, config_dir):
    passwords = {n: f"pw-{i}-{n}" for i, n in enumerate(NAMES)}
    for n, pw in passwords.items():
        ours_add(ours, config_dir, f"{n}@example.com", pw)
    # Overwrite one, to exercise a rewrite of a multi-entry file.
    passwords["alice"] = "new alice pw"
    ours_add(ours, config_dir, "alice@example.com", passwords["alice"])

    rc, out, err = run(debian, f"-C={config_dir}", "check-userdb", "example.com")
    assert rc == 0, (out, err)
    assert out.startswith("Database loaded")
    for n, pw in passwords.items():
        assert debian_auth_ok(debian, config_dir, f"{n}@example.com", pw), n
    assert not debian_auth_ok(debian, config_dir, "alice@example.com", "pw-0-alice")


def test_ours_removes_from_debian_file(ours, debian, config_dir):
    users = {"alice": "a-pw", "bob": "b-pw", "ñandú": "ñ-pw", "carol": "c-pw"}
    for n, pw in users.items():
        debian_add(debian, config_dir, f"{n}@example.com", pw)
    rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "bob@example.com")
    assert (rc, out, err) == (0, "Removed user\n", "")
    rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "Ñandú@example.com")
    assert (rc, out, err) == (0, "Removed user\n", "")

    rc, out, err = run(debian, f"-C={config_dir}", "check-userdb", "example.com")
    assert rc == 0, (out, err)
    assert debian_auth_ok(debian, config_dir, "alice@example.com", "a-pw")
    assert debian_auth_ok(debian, config_dir, "carol@example.com", "c-pw")
    assert not debian_auth_ok(debian, config_dir, "bob@example.com", "b-pw")
    assert not debian_auth_ok(debian, config_dir, "ñandú@example.com", "ñ-pw")
    assert sorted(pbtext.load_users(users_path(config_dir))) == ["alice", "carol"]


def test_debian_adds_to_our_file(ours, debian, config_dir):
    ours_add(ours, config_dir, "alice@example.com", "a-pw")
    debian_add(debian, config_dir, "bob@example.com", "b-pw")
    ours_add(ours, config_dir, "carol@example.com", "c-pw")
    for n in ("alice", "bob", "carol"):
        assert ours_auth_ok(ours, config_dir, f"{n}@example.com", f"{n[0]}-pw")
        assert debian_auth_ok(debian, config_dir, f"{n}@example.com", f"{n[0]}-pw")
    rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
    assert (rc, out, err) == (0, "Database loaded (3 users)\n", "")


def test_debian_count_matches_ours(ours, debian, config_dir):
    for i in range(4):
        debian_add(debian, config_dir, f"u{i}@example.com", "pw")
    rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
    assert (rc, out, err) == (0, "Database loaded (4 users)\n", "")


def test_empty_password_option(ours, debian, config_dir):
    # `--password=` is an option with an empty value: the password is "".
    debian_add(debian, config_dir, "empty@example.com", "")
    assert debian_auth_ok(debian, config_dir, "empty@example.com", "")
    assert ours_auth_ok(ours, config_dir, "empty@example.com", "")
    assert not ours_auth_ok(ours, config_dir, "empty@example.com", "x")

    ours_add(ours, config_dir, "empty2@example.com", "")
    assert debian_auth_ok(debian, config_dir, "empty2@example.com", "")


def test_same_errors_for_missing_domain(ours, debian, config_dir):
    # Messages match; Debian 1.11 prints errors on stdout, ours on stderr.
    for args in (["user-add", "nodomain", "--password=x"], ["user-remove", "nodomain"],
                 ["authenticate", "nodomain", "--password=x"]):
        d_rc, d_out, d_err = run(debian, f"-C={config_dir}", *args)
        o_rc, o_out, o_err = run(ours, f"-C={config_dir}", *args)
        assert (d_rc, o_rc) == (1, 1)
        assert o_out == ""
        assert o_err == (d_out + d_err)


def test_same_error_for_missing_users_file(ours, debian, config_dir):
    for args in (["user-remove", "a@example.com"], ["authenticate", "a@example.com", "--password=x"]):
        d_rc, d_out, d_err = run(debian, f"-C={config_dir}", *args)
        o_rc, o_out, o_err = run(ours, f"-C={config_dir}", *args)
        assert (d_rc, o_rc) == (1, 1)
        assert o_err.startswith("Error loading database: ")
        assert (d_out + d_err).startswith("Error loading database: ")


# --------------------------------------------------------------------------
# print-config
# --------------------------------------------------------------------------

FULL_CONFIG_1_11 = """\
# Every field chasquid 1.11 knows (numbers 1 to 16).
hostname: "mx.example.org"
max_data_size_mb: 25
smtp_address: [":2025", "127.0.0.1:25"]
submission_address: ":587"
submission_address: ":1587"
submission_over_tls_address: ":465"
monitoring_address: "127.0.0.1:1099"
mail_delivery_agent_bin: "/usr/bin/procmail"
mail_delivery_agent_args: ["-d", "%to_user%", 'with "quotes"', "tab\\there", "back\\\\slash"]
data_dir: "/var/lib/cq"
suffix_separators: ""
drop_characters: "-."
mail_log_path: "<stdout>"
dovecot_auth: true
dovecot_userdb_path: "/run/dovecot/auth-userdb"
dovecot_client_path: "/run/dovecot/auth-client"
haproxy_incoming: true
"""

CONFIGS = {
    "full": FULL_CONFIG_1_11,
    "minimal": 'hostname: "h.example"\n',
    "empty_optionals": 'hostname: "h"\nsuffix_separators: ""\ndrop_characters: ""\n',
    "zeros_keep_defaults": 'hostname: "h"\nmax_data_size_mb: 0\ndovecot_auth: false\nmail_log_path: ""\n',
    "empty_file": "",
    "angle_braces_and_comments": (
        "hostname: 'x.example' # trailing comment\n"
        "smtp_address: \":25\" smtp_address: ':26'\n"
        'data_dir: "/d" "ata"\n'
    ),
}


def pairs(out):
    result = Counter()
    for line in out.split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        assert sep, f"not a key: value line: {line!r}"
        result[(key.strip(), value.strip())] += 1
    return result


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_print_config_matches_debian(ours, debian, config_dir, name):
    write_config(config_dir, CONFIGS[name])
    d_rc, d_out, d_err = run(debian, f"-C={config_dir}", "print-config")
    assert d_rc == 0, (d_out, d_err)
    o_rc, o_out, o_err = run(ours, f"-C={config_dir}", "print-config")
    assert (o_rc, o_err) == (0, ""), o_out

    ours_pairs = pairs(o_out)
    extra = {k: v for k, v in ours_pairs.items() if k[0] in ("max_queue_items", "give_up_send_after")}
    assert sorted(extra) == [("give_up_send_after", '"20h"'), ("max_queue_items", "200")]
    for k in extra:
        del ours_pairs[k]
    assert ours_pairs == pairs(d_out)
    # Both end with a blank line.
    assert o_out.endswith("\n\n") and d_out.endswith("\n\n")


def test_print_config_same_key_order(ours, debian, config_dir):
    write_config(config_dir, FULL_CONFIG_1_11)
    _, d_out, _ = run(debian, f"-C={config_dir}", "print-config")
    _, o_out, _ = run(ours, f"-C={config_dir}", "print-config")

    def keys(out):
        return [l.split(":", 1)[0] for l in out.split("\n") if l.strip()]

    ours_keys = [k for k in keys(o_out) if k not in ("max_queue_items", "give_up_send_after")]
    assert ours_keys == keys(d_out)


def test_print_config_both_reject_unknown_field(ours, debian, config_dir):
    write_config(config_dir, 'hostname: "h"\nno_such_field: 1\n')
    d_rc, d_out, d_err = run(debian, f"-C={config_dir}", "print-config")
    o_rc, o_out, o_err = run(ours, f"-C={config_dir}", "print-config")
    assert (d_rc, o_rc) == (1, 1)
    assert (d_out + d_err).startswith("Error loading config: parsing config: ")
    assert o_err.startswith("Error loading config: parsing config: ")
    assert "no_such_field" in o_err
