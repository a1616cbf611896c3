"""End-to-end tests of our chasquid-util's offline commands (COMPAT.md §17,
with the file formats of §2-§7), run as a subprocess against real files.

Errors go to stderr with exit 1, success to stdout with exit 0.
"""

import hashlib
import os
import socket
import stat

import pytest

import pbtext
from conftest import (
    DEFAULT_DOMAIN,
    DEFAULT_HOSTNAME,
    run,
    users_path,
    write_config,
)

USAGE_MARK = "Usage:"


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def add(ours, cfg, address, password="secret", *extra):
    rc, out, err = run(ours, f"-C={cfg}", "user-add", address, f"--password={password}", *extra)
    assert (rc, err) == (0, ""), (out, err)
    assert out.endswith("Added user\n")


def auth(ours, cfg, address, password):
    return run(ours, f"-C={cfg}", "authenticate", address, f"--password={password}")


def assert_auth_ok(ours, cfg, address, password):
    assert auth(ours, cfg, address, password) == (0, "Authentication succeeded\n", "")


def assert_auth_fails(ours, cfg, address, password):
    assert auth(ours, cfg, address, password) == (1, "", "Authentication failed\n")


def no_temp_files(directory):
    return [n for n in os.listdir(directory) if n.startswith(".")]


# --------------------------------------------------------------------------
# user-add
# --------------------------------------------------------------------------


class TestUserAdd:
    def test_new_domain_creates_the_directory(self, ours, config_dir):
        domain_dir = config_dir / "domains" / "new.example"
        assert not domain_dir.exists()
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@new.example", "--password=passwd")
        assert (rc, out, err) == (0, "Creating database\nAdded user\n", "")
        assert domain_dir.is_dir()
        assert mode(domain_dir) == 0o755
        users = domain_dir / "users"
        assert mode(users) == 0o660
        db = pbtext.load_users(users)
        assert list(db) == ["user"]
        scheme, fields = db["user"]
        assert scheme == "scrypt"
        # §7: logN 14, r 8, p 1, keyLen 32, 16-byte salt.
        assert (fields["logN"], fields["r"], fields["p"], fields["keyLen"]) == (14, 8, 1, 32)
        assert len(fields["salt"]) == 16
        assert len(fields["encrypted"]) == 32
        # The hash is real scrypt, checked independently with hashlib.
        assert pbtext.scrypt_matches(fields, "passwd")
        assert not pbtext.scrypt_matches(fields, "passwd2")
        assert_auth_ok(ours, config_dir, "user@new.example", "passwd")

    def test_existing_domain_dir_is_not_announced(self, ours, config_dir):
        # The domain dir exists (empty): only a missing dir is "created".
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", "--password=pw")
        assert (rc, out, err) == (0, "Added user\n", "")
        assert mode(users_path(config_dir)) == 0o660

    def test_salts_differ(self, ours, config_dir):
        add(ours, config_dir, "a@example.com", "same")
        add(ours, config_dir, "b@example.com", "same")
        db = pbtext.load_users(users_path(config_dir))
        assert db["a"][1]["salt"] != db["b"][1]["salt"]
        assert db["a"][1]["encrypted"] != db["b"][1]["encrypted"]

    def test_receive_only_stores_denied(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "receive@example.com", "--receive_only")
        assert (rc, out, err) == (0, "Added user\n", "")
        db = pbtext.load_users(users_path(config_dir))
        assert db == {"receive": ("denied", {})}
        # A denied user exists but never authenticates, whatever the password.
        assert_auth_fails(ours, config_dir, "receive@example.com", "x")
        assert_auth_fails(ours, config_dir, "receive@example.com", "passwd")
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (0, "Database loaded (1 users)\n", "")

    def test_receive_only_and_password_conflict(self, ours, config_dir):
        rc, out, err = run(
            ours, f"-C={config_dir}", "user-add", "xxx@example.com", "--password=passwd", "--receive_only"
        )
        assert (rc, out, err) == (1, "", "Cannot specify both --receive_only and --password\n")
        assert not users_path(config_dir).exists()

    def test_receive_only_and_password_conflict_any_order(self, ours, config_dir):
        rc, out, err = run(
            ours, "--receive_only", f"-C={config_dir}", "user-add", "--password=x", "xxx@example.com"
        )
        assert (rc, out, err) == (1, "", "Cannot specify both --receive_only and --password\n")

    @pytest.mark.parametrize("address", ["badarg", "user", "user@"])
    def test_domain_missing(self, ours, config_dir, address):
        before = sorted(p.name for p in (config_dir / "domains").iterdir())
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", address, "--password=passwd")
        assert (rc, out, err) == (1, "", "Domain missing, username should be of the form 'user@domain'\n")
        # Nothing is written anywhere under domains/.
        assert sorted(p.name for p in (config_dir / "domains").iterdir()) == before
        assert not (config_dir / "domains" / "users").exists()

    def test_domain_missing_without_argument(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add")
        assert (rc, out, err) == (1, "", "Domain missing, username should be of the form 'user@domain'\n")

    def test_overwrites_existing_user(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "first")
        add(ours, config_dir, "other@example.com", "other")
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", "--password=second")
        assert (rc, out, err) == (0, "Added user\n", "")
        assert_auth_fails(ours, config_dir, "user@example.com", "first")
        assert_auth_ok(ours, config_dir, "user@example.com", "second")
        assert_auth_ok(ours, config_dir, "other@example.com", "other")
        db = pbtext.load_users(users_path(config_dir))
        assert sorted(db) == ["other", "user"]

    def test_overwrite_with_receive_only(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "pw")
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", "--receive_only")
        assert (rc, out, err) == (0, "Added user\n", "")
        assert pbtext.load_users(users_path(config_dir))["user"] == ("denied", {})
        assert_auth_fails(ours, config_dir, "user@example.com", "pw")

    def test_name_is_normalised(self, ours, config_dir):
        add(ours, config_dir, "Ñandú@example.com", "pw")
        db = pbtext.load_users(users_path(config_dir))
        assert list(db) == ["ñandú"]
        # The raw file holds the normalised UTF-8 key (possibly escaped).
        assert pbtext.scrypt_matches(db["ñandú"][1], "pw")
        assert_auth_ok(ours, config_dir, "ñandú@example.com", "pw")
        assert_auth_ok(ours, config_dir, "ÑANDÚ@example.com", "pw")
        assert_auth_fails(ours, config_dir, "nandu@example.com", "pw")

    def test_decomposed_name_is_composed(self, ours, config_dir):
        # "n" + COMBINING TILDE, "u" + COMBINING ACUTE: NFC gives ñandú.
        add(ours, config_dir, "N\u0303andu\u0301@example.com", "pw")
        assert list(pbtext.load_users(users_path(config_dir))) == ["ñandú"]

    def test_fullwidth_name_is_width_mapped(self, ours, config_dir):
        add(ours, config_dir, "\uff41\uff42\uff43@example.com", "pw")  # ａｂｃ
        assert list(pbtext.load_users(users_path(config_dir))) == ["abc"]

    def test_domain_is_used_as_typed(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "u@Mixed.Example", "--password=pw")
        assert (rc, out, err) == (0, "Creating database\nAdded user\n", "")
        assert (config_dir / "domains" / "Mixed.Example" / "users").is_file()

    def test_an_existing_variant_directory_is_used(self, ours, config_dir):
        # The directory the daemon reads for the domain (issue 19), not a
        # second one under the name as typed.
        (config_dir / "domains" / "mixed.example").mkdir(parents=True)
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "u@Mixed.Example", "--password=pw")
        directory = config_dir / "domains" / "mixed.example"
        assert (rc, out, err) == (0, f'Using "{directory}" for domain "Mixed.Example"\nAdded user\n', "")
        assert (directory / "users").is_file()
        assert not (config_dir / "domains" / "Mixed.Example").exists()

    def test_an_existing_directory_is_used_as_typed(self, ours, config_dir):
        (config_dir / "domains" / "Mixed.Example").mkdir(parents=True)
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "u@Mixed.Example", "--password=pw")
        assert (rc, out, err) == (0, "Added user\n", "")
        assert (config_dir / "domains" / "Mixed.Example" / "users").is_file()

    @pytest.mark.parametrize("user", ["bad user", "♚", "a\tb", "Ⅳ"])
    def test_invalid_name(self, ours, config_dir, user):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", f"{user}@example.com", "--password=pw")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error normalizing user: ")
        assert err.endswith("\n") and err.count("\n") == 1
        assert len(err) > len("Error normalizing user: \n")
        assert not users_path(config_dir).exists()

    def test_invalid_name_leaves_the_file_alone(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "pw")
        before = users_path(config_dir).read_bytes()
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "bad user@example.com", "--password=pw")
        assert rc == 1 and err.startswith("Error normalizing user: ")
        assert users_path(config_dir).read_bytes() == before

    def test_password_from_stdin(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", input="s3cret\ns3cret\n")
        assert (rc, err) == (0, ""), (out, err)
        assert "Password: " in out
        assert out.index("Password: ") < out.index("Confirm password: ")
        assert out.endswith("Added user\n")
        assert "s3cret" not in out
        assert_auth_ok(ours, config_dir, "user@example.com", "s3cret")

    def test_password_from_stdin_mismatch(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", input="one\ntwo\n")
        assert rc == 1
        assert err == "Passwords don't match\n"
        assert "Added user" not in out
        assert not users_path(config_dir).exists()

    def test_empty_password_option(self, ours, config_dir):
        # "--password=" is the option with an empty value (name=value, §17):
        # the password is "", nothing is prompted.
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "u@example.com", "--password=")
        assert (rc, out, err) == (0, "Added user\n", "")
        scheme, fields = pbtext.load_users(users_path(config_dir))["u"]
        assert scheme == "scrypt" and pbtext.scrypt_matches(fields, "")
        assert_auth_ok(ours, config_dir, "u@example.com", "")
        assert_auth_fails(ours, config_dir, "u@example.com", "x")

    def test_password_with_equals_and_spaces(self, ours, config_dir):
        # Only the first "=" splits an option.
        add(ours, config_dir, "user@example.com", "a=b c=d")
        assert_auth_ok(ours, config_dir, "user@example.com", "a=b c=d")
        assert_auth_fails(ours, config_dir, "user@example.com", "a")

    def test_single_dash_password_is_not_an_option_name(self, ours, config_dir):
        # Names match literally: "-password=x" is some other option, so the
        # tool asks for the password, and stdin has nothing.
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "user@example.com", "-password=x")
        assert rc == 1
        assert "Added user" not in out
        assert not users_path(config_dir).exists()

    def test_keeps_other_users(self, ours, config_dir):
        names = ["alice", "bob", "ñandú", "carol"]
        for n in names:
            add(ours, config_dir, f"{n}@example.com", f"pw-{n}")
        db = pbtext.load_users(users_path(config_dir))
        assert sorted(db) == sorted(names)
        for n in names:
            assert pbtext.scrypt_matches(db[n][1], f"pw-{n}")

    def test_rewrite_keeps_the_mode(self, ours, config_dir):
        # Issue 2 asks writes to keep the file's owner and mode, so an admin's
        # chmod survives (chasquid resets it to 0660; docs/architecture.md).
        add(ours, config_dir, "a@example.com")
        path = users_path(config_dir)
        os.chmod(path, 0o600)
        add(ours, config_dir, "b@example.com")
        assert mode(path) == 0o600

    @pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
    def test_rewrite_keeps_the_owner(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        path = users_path(config_dir)
        os.chown(path, 4242, 4343)
        add(ours, config_dir, "b@example.com")
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (4242, 4343)
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "a@example.com")
        assert rc == 0
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (4242, 4343)

    def test_atomic_write_leaves_no_temp_files(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        add(ours, config_dir, "b@example.com")
        domain_dir = users_path(config_dir).parent
        assert no_temp_files(domain_dir) == []
        assert os.listdir(domain_dir) == ["users"]
        rc, _, _ = run(ours, f"-C={config_dir}", "user-remove", "a@example.com")
        assert rc == 0
        assert os.listdir(domain_dir) == ["users"]

    def test_rewrite_is_a_new_inode(self, ours, config_dir):
        # Atomic: the new content is renamed over the old file, so a reader
        # holding the old file never sees a half-written one.
        add(ours, config_dir, "a@example.com")
        path = users_path(config_dir)
        with open(path, "rb") as old:
            old_content = old.read()
            old_ino = os.fstat(old.fileno()).st_ino
            add(ours, config_dir, "b@example.com")
            old.seek(0)
            assert old.read() == old_content
        assert os.stat(path).st_ino != old_ino

    def test_malformed_database(self, ours, config_dir):
        path = users_path(config_dir)
        path.write_text("this is not { a protobuf\n")
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "a@example.com", "--password=x")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading database: ")
        assert path.read_text() == "this is not { a protobuf\n"


# --------------------------------------------------------------------------
# user-remove
# --------------------------------------------------------------------------


class TestUserRemove:
    def test_removes_one_user(self, ours, config_dir):
        add(ours, config_dir, "a@example.com", "pa")
        add(ours, config_dir, "b@example.com", "pb")
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "a@example.com")
        assert (rc, out, err) == (0, "Removed user\n", "")
        assert list(pbtext.load_users(users_path(config_dir))) == ["b"]
        assert_auth_fails(ours, config_dir, "a@example.com", "pa")
        assert_auth_ok(ours, config_dir, "b@example.com", "pb")
        assert mode(users_path(config_dir)) == 0o660

    def test_unknown_user(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        before = users_path(config_dir).read_bytes()
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "unknown@example.com")
        assert (rc, out, err) == (1, "", "Unknown user\n")
        assert users_path(config_dir).read_bytes() == before

    def test_removing_twice(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        assert run(ours, f"-C={config_dir}", "user-remove", "a@example.com") == (0, "Removed user\n", "")
        assert run(ours, f"-C={config_dir}", "user-remove", "a@example.com") == (1, "", "Unknown user\n")
        assert pbtext.load_users(users_path(config_dir)) == {}

    def test_missing_database(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "a@nowhere.example")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading database: ")
        assert not (config_dir / "domains" / "nowhere.example").exists()

    def test_missing_users_file_in_existing_domain(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "a@example.com")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading database: ")
        assert not users_path(config_dir).exists()

    def test_name_is_normalised(self, ours, config_dir):
        add(ours, config_dir, "ñandú@example.com")
        add(ours, config_dir, "x@example.com")
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "ÑANDÚ@example.com")
        assert (rc, out, err) == (0, "Removed user\n", "")
        assert list(pbtext.load_users(users_path(config_dir))) == ["x"]

    def test_denied_user_can_be_removed(self, ours, config_dir):
        rc, _, _ = run(ours, f"-C={config_dir}", "user-add", "r@example.com", "--receive_only")
        assert rc == 0
        assert run(ours, f"-C={config_dir}", "user-remove", "r@example.com") == (0, "Removed user\n", "")

    def test_domain_missing(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "nodomain")
        assert (rc, out, err) == (1, "", "Domain missing, username should be of the form 'user@domain'\n")

    def test_invalid_name(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        rc, out, err = run(ours, f"-C={config_dir}", "user-remove", "bad user@example.com")
        assert rc == 1 and out == ""
        assert err.startswith("Error normalizing user: ")


# --------------------------------------------------------------------------
# authenticate
# --------------------------------------------------------------------------


class TestAuthenticate:
    def test_success_and_failure(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "passwd")
        assert_auth_ok(ours, config_dir, "user@example.com", "passwd")
        assert_auth_fails(ours, config_dir, "user@example.com", "abcd")
        assert_auth_fails(ours, config_dir, "user@example.com", "passwd ")
        assert_auth_fails(ours, config_dir, "user@example.com", "PASSWD")

    def test_unknown_user(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "passwd")
        assert_auth_fails(ours, config_dir, "other@example.com", "passwd")

    def test_denied_user_never_authenticates(self, ours, config_dir):
        rc, _, _ = run(ours, f"-C={config_dir}", "user-add", "receive@example.com", "--receive_only")
        assert rc == 0
        for pw in ("passwd", "x", "denied"):
            assert_auth_fails(ours, config_dir, "receive@example.com", pw)

    def test_unknown_domain(self, ours, config_dir):
        rc, out, err = auth(ours, config_dir, "user@unknown.example", "passwd")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading database: ")
        assert not (config_dir / "domains" / "unknown.example").exists()

    def test_domain_missing(self, ours, config_dir):
        rc, out, err = auth(ours, config_dir, "user", "passwd")
        assert (rc, out, err) == (1, "", "Domain missing, username should be of the form 'user@domain'\n")

    def test_password_from_stdin(self, ours, config_dir):
        # §17: without --password it prompts twice, like user-add.
        add(ours, config_dir, "user@example.com", "passwd")
        rc, out, err = run(ours, f"-C={config_dir}", "authenticate", "user@example.com", input="passwd\npasswd\n")
        assert (rc, err) == (0, ""), (out, err)
        assert out.index("Password: ") < out.index("Confirm password: ")
        assert out.endswith("Authentication succeeded\n")

    def test_password_from_stdin_mismatch(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "passwd")
        rc, out, err = run(ours, f"-C={config_dir}", "authenticate", "user@example.com", input="passwd\nother\n")
        assert (rc, err) == (1, "Passwords don't match\n")
        assert "Authentication succeeded" not in out

    def test_wrong_password_from_stdin(self, ours, config_dir):
        add(ours, config_dir, "user@example.com", "passwd")
        rc, out, err = run(ours, f"-C={config_dir}", "authenticate", "user@example.com", input="nope\nnope\n")
        assert (rc, err) == (1, "Authentication failed\n")

    def test_hand_written_file(self, ours, config_dir):
        # §4 syntax variants, as an admin or another tool may write them:
        # comments, single quotes, <> braces, optional ':' before '{',
        # adjacent strings, a plain (debug) entry and an empty (no scheme) one.
        text = (
            "# users of example.com\n"
            + pbtext.scrypt_entry_text("alice", "alice-pw")
            + "users <\n  key: 'pl' 'ain'\n  value: < plain: < password: \"pl\\x61in-pw\" > >\n>\n"
            + "users { key: \"noscheme\" value {} }\n"
            + "users {\n  key: \"\\303\\261and\\303\\272\"  # ñandú in octal\n  value {\n    denied {}\n  }\n}\n"
        )
        users_path(config_dir).write_text(text, encoding="utf-8")
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (0, "Database loaded (4 users)\n", "")
        assert_auth_ok(ours, config_dir, "alice@example.com", "alice-pw")
        assert_auth_fails(ours, config_dir, "alice@example.com", "alice")
        assert_auth_ok(ours, config_dir, "plain@example.com", "plain-pw")
        assert_auth_fails(ours, config_dir, "plain@example.com", "plain")
        assert_auth_fails(ours, config_dir, "noscheme@example.com", "x")
        assert_auth_fails(ours, config_dir, "ñandú@example.com", "x")

    def test_stored_parameters_are_used(self, ours, config_dir):
        # Checking uses the stored parameters, not the defaults (§7).
        salt = b"0123456789abcdef"
        enc = hashlib.scrypt(b"pw", salt=salt, n=1 << 10, r=4, p=2, dklen=20)
        users_path(config_dir).write_text(
            "users { key: \"u\" value { scrypt { logN: 10 r: 4 p: 2 keyLen: 20 "
            f"salt: {pbtext.quote_bytes(salt)} encrypted: {pbtext.quote_bytes(enc)} }} }} }}\n"
        )
        assert_auth_ok(ours, config_dir, "u@example.com", "pw")
        assert_auth_fails(ours, config_dir, "u@example.com", "pw2")


# --------------------------------------------------------------------------
# check-userdb
# --------------------------------------------------------------------------


class TestCheckUserDB:
    def test_counts_users(self, ours, config_dir):
        add(ours, config_dir, "a@example.com")
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (0, "Database loaded (1 users)\n", "")
        add(ours, config_dir, "b@example.com")
        rc, _, _ = run(ours, f"-C={config_dir}", "user-add", "c@example.com", "--receive_only")
        assert rc == 0
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (0, "Database loaded (3 users)\n", "")

    def test_empty_file(self, ours, config_dir):
        users_path(config_dir).write_text("")
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (0, "Database loaded (0 users)\n", "")

    def test_missing_file(self, ours, config_dir):
        path = users_path(config_dir)
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert (rc, out, err) == (1, "", f'Error: file "{path}" does not exist\n')

    def test_missing_domain_dir(self, ours, config_dir):
        path = config_dir / "domains" / "nowhere.example" / "users"
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "nowhere.example")
        assert (rc, out, err) == (1, "", f'Error: file "{path}" does not exist\n')

    @pytest.mark.parametrize(
        "content",
        [
            "this is not { a protobuf\n",
            'users { key: "a" value { scrypt { logN: 14 } }\n',  # unbalanced
            'users { key: "a" value { bogus {} } }\n',  # unknown field
            'unknown_top_level: 1\n',
            'users { key: "a" value { scrypt { logN: "x" } } }\n',  # wrong type
        ],
    )
    def test_malformed_file(self, ours, config_dir, content):
        users_path(config_dir).write_text(content)
        rc, out, err = run(ours, f"-C={config_dir}", "check-userdb", "example.com")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading database: ")


# --------------------------------------------------------------------------
# print-config
# --------------------------------------------------------------------------


def config_pairs(out):
    """print-config output as (key, value) pairs, in order; the spaces after
    the colon vary (Go prints one or two)."""
    pairs = []
    for line in out.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        assert sep, f"not a key: value line: {line!r}"
        pairs.append((key, value.strip()))
    return pairs


DEFAULT_PAIRS_AFTER_HOSTNAME = [
    ("max_data_size_mb", "50"),
    ("smtp_address", '"systemd"'),
    ("submission_address", '"systemd"'),
    ("submission_over_tls_address", '"systemd"'),
    ("mail_delivery_agent_bin", '"maildrop"'),
    ("mail_delivery_agent_args", '"-f"'),
    ("mail_delivery_agent_args", '"%from%"'),
    ("mail_delivery_agent_args", '"-d"'),
    ("mail_delivery_agent_args", '"%to_user%"'),
    ("data_dir", '"/var/lib/chasquid"'),
    ("suffix_separators", '"+"'),
    ("drop_characters", '"."'),
    ("mail_log_path", '"<syslog>"'),
    ("max_queue_items", "200"),
    ("give_up_send_after", '"20h"'),
]


class TestPrintConfig:
    def test_defaults(self, ours, config_dir):
        write_config(config_dir, 'hostname: "mx.example.com"\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert (rc, err) == (0, "")
        assert out.endswith("\n\n") and not out.endswith("\n\n\n")
        for line in out[:-2].split("\n"):
            assert line.split(":", 1)[1].startswith(" "), line
        assert config_pairs(out) == [("hostname", '"mx.example.com"')] + DEFAULT_PAIRS_AFTER_HOSTNAME

    def test_empty_file_uses_os_hostname(self, ours, config_dir):
        write_config(config_dir, "")
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert (rc, err) == (0, "")
        pairs = config_pairs(out)
        assert pairs[0] == ("hostname", f'"{socket.gethostname()}"')
        assert pairs[1:] == DEFAULT_PAIRS_AFTER_HOSTNAME

    def test_file_values(self, ours, config_dir):
        write_config(
            config_dir,
            "# a comment\n"
            'hostname: "mx.example.org"\n'
            "max_data_size_mb: 25\n"
            'smtp_address: [":2025", "127.0.0.1:25"]\n'
            'submission_address: ":587"\n'
            'monitoring_address: "127.0.0.1:1099"\n'
            "mail_delivery_agent_args: ['-d', \"%to_user%\"]\n"
            'data_dir: "/var/lib/cq"\n'
            'suffix_separators: ""\n'
            'drop_characters: "-."\n'
            'mail_log_path: "<stdout>"\n'
            "dovecot_auth: true\n"
            "haproxy_incoming: true\n"
            "max_queue_items: 50\n"
            'give_up_send_after: "1h30m"\n',
        )
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert (rc, err) == (0, "")
        assert out.endswith("\n\n")
        assert config_pairs(out) == [
            ("hostname", '"mx.example.org"'),
            ("max_data_size_mb", "25"),
            ("smtp_address", '":2025"'),
            ("smtp_address", '"127.0.0.1:25"'),
            ("submission_address", '":587"'),
            ("submission_over_tls_address", '"systemd"'),
            ("monitoring_address", '"127.0.0.1:1099"'),
            ("mail_delivery_agent_bin", '"maildrop"'),
            ("mail_delivery_agent_args", '"-d"'),
            ("mail_delivery_agent_args", '"%to_user%"'),
            ("data_dir", '"/var/lib/cq"'),
            ("suffix_separators", '""'),
            ("drop_characters", '"-."'),
            ("mail_log_path", '"<stdout>"'),
            ("dovecot_auth", "true"),
            ("haproxy_incoming", "true"),
            ("max_queue_items", "50"),
            ("give_up_send_after", '"1h30m"'),
        ]

    def test_empty_optional_strings_are_printed(self, ours, config_dir):
        write_config(config_dir, 'hostname: "h"\nsuffix_separators: ""\ndrop_characters: ""\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert (rc, err) == (0, "")
        pairs = config_pairs(out)
        assert ("suffix_separators", '""') in pairs
        assert ("drop_characters", '""') in pairs

    def test_unset_values_keep_defaults(self, ours, config_dir):
        # Layering (§3): 0, "" and false do not override the defaults.
        write_config(
            config_dir,
            'hostname: "h"\nmax_data_size_mb: 0\nmail_delivery_agent_bin: ""\n'
            "dovecot_auth: false\nmax_queue_items: 0\nsmtp_address: []\n",
        )
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert (rc, err) == (0, "")
        assert config_pairs(out) == [("hostname", '"h"')] + DEFAULT_PAIRS_AFTER_HOSTNAME

    def test_missing_config_dir(self, ours, tmp_path):
        missing = tmp_path / "nonexistent"
        rc, out, err = run(ours, f"-C={missing}", "print-config")
        assert rc == 1
        assert out == ""
        assert err.startswith(f'Error loading config: failed to read config at "{missing}/chasquid.conf": ')
        assert err.endswith("\n") and err.count("\n") == 1

    def test_unknown_field(self, ours, config_dir):
        path = write_config(config_dir, 'hostname: "h"\nno_such_field: 1\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading config: parsing config: ")
        assert str(path) in err
        assert "line 2" in err
        assert "no_such_field" in err

    def test_unknown_field_read_by_swift_only(self, ours, config_dir):
        # A field chasquid never had, even with a valid value type.
        write_config(config_dir, 'hostname: "h"\n\n\nsmtp_addresses: ":25"\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1 and out == ""
        assert "parsing config:" in err and "line 4" in err and "smtp_addresses" in err

    def test_wrong_type(self, ours, config_dir):
        path = write_config(config_dir, 'hostname: "h"\n\nmax_data_size_mb: "x"\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading config: parsing config: ")
        assert str(path) in err
        assert "line 3" in err
        assert "max_data_size_mb" in err

    def test_wrong_type_bool(self, ours, config_dir):
        write_config(config_dir, 'dovecot_auth: "yes"\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1 and out == ""
        assert "parsing config:" in err and "line 1" in err and "dovecot_auth" in err

    def test_syntax_error(self, ours, config_dir):
        write_config(config_dir, 'hostname: "h\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1 and out == ""
        assert err.startswith("Error loading config: parsing config: ")

    @pytest.mark.parametrize("value", ["3d", "20", "x", "1h30"])
    def test_invalid_give_up_send_after(self, ours, config_dir, value):
        write_config(config_dir, f'hostname: "h"\ngive_up_send_after: "{value}"\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1
        assert out == ""
        assert err.startswith("Error loading config: ")
        assert "give_up_send_after" in err
        assert "invalid give_up_send_after value" in err

    def test_negative_max_data_size(self, ours, config_dir):
        write_config(config_dir, 'hostname: "h"\nmax_data_size_mb: -1\n')
        rc, out, err = run(ours, f"-C={config_dir}", "print-config")
        assert rc == 1, out
        assert out == ""
        assert err.startswith("Error loading config: ")
        assert "max_data_size_mb" in err

    def test_config_error_in_rpc_commands(self, ours, config_dir):
        write_config(config_dir, "no_such_field: 1\n")
        for args in (["aliases-resolve", "a@b.com"], ["domaininfo-remove", "b.com"]):
            rc, out, err = run(ours, f"-C={config_dir}", *args)
            assert rc == 1 and out == ""
            assert err.startswith("Error loading config: parsing config: ")

    def test_missing_config_in_rpc_commands(self, ours, tmp_path):
        missing = tmp_path / "nonexistent"
        for args in (["aliases-resolve", "a@b.com"], ["domaininfo-remove", "b.com"]):
            rc, out, err = run(ours, f"--config_dir={missing}", *args)
            assert rc == 1 and out == ""
            assert err.startswith(f'Error loading config: failed to read config at "{missing}/chasquid.conf": ')


# --------------------------------------------------------------------------
# Arguments and options
# --------------------------------------------------------------------------


@pytest.fixture
def with_user(ours, config_dir):
    add(ours, config_dir, "user@example.com", "pw")
    return config_dir


class TestArguments:
    EXPECTED = (0, "Database loaded (1 users)\n", "")

    def test_option_first(self, ours, with_user):
        assert run(ours, f"-C={with_user}", "check-userdb", "example.com") == self.EXPECTED

    def test_option_between(self, ours, with_user):
        assert run(ours, "check-userdb", f"-C={with_user}", "example.com") == self.EXPECTED

    def test_option_last(self, ours, with_user):
        assert run(ours, "check-userdb", "example.com", f"-C={with_user}") == self.EXPECTED

    def test_options_anywhere_in_user_add(self, ours, config_dir):
        rc, out, err = run(ours, "--password=pw", "user-add", f"-C={config_dir}", "u@example.com")
        assert (rc, out, err) == (0, "Added user\n", "")
        assert_auth_ok(ours, config_dir, "u@example.com", "pw")

    def test_separate_C_value(self, ours, with_user):
        assert run(ours, "-C", str(with_user), "check-userdb", "example.com") == self.EXPECTED
        assert run(ours, "check-userdb", "example.com", "-C", str(with_user)) == self.EXPECTED

    def test_config_dir(self, ours, with_user):
        assert run(ours, f"--config_dir={with_user}", "check-userdb", "example.com") == self.EXPECTED

    def test_separate_config_dir_value(self, ours, with_user):
        assert run(ours, "--config_dir", str(with_user), "check-userdb", "example.com") == self.EXPECTED

    def test_deprecated_configdir_warns(self, ours, with_user):
        rc, out, err = run(ours, f"--configdir={with_user}", "check-userdb", "example.com")
        assert (rc, out, err) == (
            0,
            "Database loaded (1 users)\n",
            "Option --configdir is deprecated, use --config_dir instead\n",
        )

    def test_configdir_precedence(self, ours, tmp_path):
        # --configdir beats -C, which beats --config_dir.
        dirs = {}
        for name, n in (("configdir", 1), ("C", 2), ("config_dir", 3)):
            d = tmp_path / name
            (d / "domains" / "example.com").mkdir(parents=True)
            pbtext_entries = "".join(
                pbtext.scrypt_entry_text(f"u{i}", "pw", salt=bytes(16)) for i in range(n)
            )
            (d / "domains" / "example.com" / "users").write_text(pbtext_entries)
            dirs[name] = d

        def count(*opts):
            rc, out, err = run(ours, *opts, "check-userdb", "example.com")
            assert rc == 0, err
            return out

        all3 = (f"--config_dir={dirs['config_dir']}", f"-C={dirs['C']}", f"--configdir={dirs['configdir']}")
        assert count(*all3) == "Database loaded (1 users)\n"
        assert count(*reversed(all3)) == "Database loaded (1 users)\n"
        assert count(all3[0], all3[1]) == "Database loaded (2 users)\n"
        assert count(all3[1], all3[0]) == "Database loaded (2 users)\n"
        assert count(all3[0]) == "Database loaded (3 users)\n"

    def test_default_config_dir(self, ours, tmp_path):
        # Without an option the config dir is /etc/chasquid.
        rc, out, err = run(ours, "check-userdb", "no-such-domain.invalid")
        assert (rc, out, err) == (
            1,
            "",
            'Error: file "/etc/chasquid/domains/no-such-domain.invalid/users" does not exist\n',
        )

    def test_help(self, ours):
        rc, out, err = run(ours, "--help")
        assert (rc, err) == (0, "")
        assert USAGE_MARK in out
        for cmd in ("user-add", "user-remove", "authenticate", "check-userdb",
                    "aliases-resolve", "domaininfo-remove", "print-config"):
            assert cmd in out

    def test_help_wins_over_a_command(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "user-add", "u@example.com", "--password=x", "--help")
        assert (rc, err) == (0, "")
        assert USAGE_MARK in out
        assert not users_path(config_dir).exists()

    def test_unknown_subcommand(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "x")
        assert rc == 1
        assert out == 'Unknown argument "x"\n'
        assert USAGE_MARK in err

    def test_removed_aliases_add(self, ours, config_dir):
        rc, out, err = run(ours, f"-C={config_dir}", "aliases-add", "a@example.com", "b@example.com")
        assert rc == 1
        assert out == 'Unknown argument "aliases-add"\n'
        assert USAGE_MARK in err
