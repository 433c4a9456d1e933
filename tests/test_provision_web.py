"""The local page's password at provisioning (docs/web.md "Config and files", docs/provisioning.md):
given for one terminal or generated for many into a 0600 sheet, written into the config only as a
salted PBKDF2-SHA256 hash the terminal's own config check accepts, never printed; no password
means no provisioning, and every bad password file is one line and nothing written. Passwords are
made at test time, never committed."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_mpy
from test_provision import DEV, TRUST, cx_fleet, mode

from tools import webpass
from tools.terminal_config import check as terminal_check

CX = str(Path(sys.executable).parent / "cx")
HASH_RE = re.compile(r"pbkdf2-sha256\$4096\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{43})\Z")
REGION = "341122100201"


def secret(n: int = 16) -> str:
    """A password made now (letters and digits), so none is ever in the repository."""
    return secrets.token_urlsafe(n)[:n]


@pytest.fixture
def env(tmp_path: Path) -> Any:
    (tmp_path / "anchors.json").write_text(json.dumps(TRUST))
    ns = type("Env", (), {})()
    ns.tmp, ns.out, ns.db = tmp_path, tmp_path / "devs", tmp_path / "fleet.sqlite"

    def provision(*extra: str) -> tuple[int, str]:
        return cx_fleet("provision", *extra, "--trust", str(tmp_path / "anchors.json"),
                        "--broker", "mqtt.example:1883", "--db", str(ns.db), "--out", str(ns.out))

    def pwfile(data: bytes | str, name: str = "pw.txt") -> str:
        p = tmp_path / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(p)

    ns.provision, ns.pwfile = provision, pwfile
    return ns


def config(env: Any, dev: str = DEV) -> dict[str, Any]:
    return json.loads((env.out / dev / "config.json").read_text())


def salt_of(stored: str) -> bytes:
    m = HASH_RE.match(stored)
    assert m, stored
    return base64.urlsafe_b64decode(m.group(1) + "==")


def nothing_written(env: Any) -> bool:
    return not env.out.exists() and not env.db.exists() and \
        not list(env.tmp.glob("*.csv"))


# ------------------------------------------------------------------------- one terminal, a file


def test_the_password_is_in_the_config_only_as_its_salted_iterated_hash(env: Any,
                                                                        capfd: Any) -> None:
    password = secret()
    assert env.provision(DEV, "--region", REGION, "--web-password-file",
                         env.pwfile(password + "\n")) == (0, "")
    out, err = capfd.readouterr()
    stored = config(env)["web"]["pass"]
    assert HASH_RE.match(stored) and len(salt_of(stored)) == 16
    assert webpass.verify(password, stored) and not webpass.verify(password + "x", stored)
    for text in ((env.out / DEV / "config.json").read_text(),
                 (env.out / "credentials.json").read_text(), out, err):
        assert password not in text
    assert "page password: from" in out and "kept only as a hash" in out


def test_the_terminals_own_config_check_accepts_the_config_with_its_page_password(
        env: Any) -> None:
    assert env.provision(DEV, "--region", REGION, "--web-password-file",
                         env.pwfile(secret()))[0] == 0
    path = env.out / DEV / "config.json"
    assert terminal_check(json.loads(path.read_text())) == (None, [])
    r = run_mpy(f"import config, json\ncfg = config.validate(json.loads(open({str(path)!r}).read()))"
                "\nprint(cfg['web']['pass'][:18])", path=[ROOT / "firmware"])
    assert r.returncode == 0 and r.stdout.split() == ["pbkdf2-sha256$4096"], r.stderr


def test_the_same_password_on_two_terminals_gets_two_salts(env: Any) -> None:
    pw = env.pwfile(secret())
    assert env.provision(DEV, "--region", REGION, "--web-password-file", pw)[0] == 0
    assert env.provision("T2", "--region", REGION, "--web-password-file", pw)[0] == 0
    a, b = config(env)["web"]["pass"], config(env, "T2")["web"]["pass"]
    assert a != b and salt_of(a) != salt_of(b)


@pytest.mark.parametrize("password", [
    "x" * 8, "y" * 64, "村响广播室的本地广播密码", "with inner spaces ok", "pässwörd-ü"])
def test_every_password_of_8_to_64_characters_of_utf8_is_taken(env: Any, password: str) -> None:
    assert env.provision(DEV, "--region", REGION, "--web-password-file",
                         env.pwfile(password)) == (0, "")
    stored = config(env)["web"]["pass"]
    iterations, salt, digest = webpass.parse_hash(stored)
    assert digest == webpass.derive(password, salt, iterations)  # PBKDF2 over its UTF-8 bytes


def test_a_utf8_bom_and_a_windows_line_end_are_not_part_of_the_password(env: Any) -> None:
    password = secret()
    assert env.provision(DEV, "--region", REGION, "--web-password-file",
                         env.pwfile(b"\xef\xbb\xbf" + password.encode() + b"\r\n"))[0] == 0
    assert webpass.verify(password, config(env)["web"]["pass"])


def test_stdin_gives_the_password_through_the_real_command(env: Any) -> None:
    password = secret(20)
    r = subprocess.run([CX, "fleet", "provision", DEV, "--region", REGION, "--web-password-file",
                        "-", "--trust", str(env.tmp / "anchors.json"), "--broker",
                        "mqtt.example:1883", "--db", str(env.db), "--out", str(env.out)],
                       input=password + "\n", capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert webpass.verify(password, config(env)["web"]["pass"])
    assert password not in r.stdout + r.stderr and "from stdin" in r.stdout


# ------------------------------------------------------------------------- bad password input

BAD_FILES = [
    ("short", "abcdefg", "is too short (7 characters): at least 8"),
    ("long", "a" * 65, "is too long (65 characters): at most 64"),
    ("non-utf8", b"\xff\xfepassword\n", "is not UTF-8 text"),
    ("empty", b"", "empty"),
    ("only-newline", b"\n", "empty"),
    ("two-lines", "first-line\nsecond-line\n", "more than one line"),
    ("control", "pass\tword1", "control character"),
    ("blank-end", "password1 \n", "begins or ends with a blank"),
    ("huge", b"a" * 10_000, "is over 4096 bytes"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in BAD_FILES],
                         ids=[i for i, _, _ in BAD_FILES])
def test_a_bad_password_file_is_one_line_and_writes_nothing(env: Any, data: bytes | str,
                                                            message: str) -> None:
    path = env.pwfile(data)
    code, err = env.provision(DEV, "--region", REGION, "--web-password-file", path)
    assert code == 1 and f"--web-password-file {path}: the password" in err, err
    assert message in err and "\n" not in err
    if isinstance(data, str) and len(data) > 3:
        assert data.strip() not in err  # the refusal never shows the password
    assert nothing_written(env)


def test_a_missing_password_file_or_a_folder_is_refused(env: Any) -> None:
    for path, why in ((env.tmp / "none.txt", "No such file"), (env.tmp, "Is a directory")):
        code, err = env.provision(DEV, "--region", REGION, "--web-password-file", str(path))
        assert code == 1 and f"cannot read --web-password-file {path}: {why}" in err, err
        assert "\n" not in err and nothing_written(env)


def test_an_empty_stdin_is_refused(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, err = env.provision(DEV, "--region", REGION, "--web-password-file", "-")
    assert code == 1 and "--web-password-file - (stdin): the password" in err and "empty" in err
    assert nothing_written(env)


def test_no_page_password_refuses_to_provision_naming_both_flags(env: Any) -> None:
    code, err = env.provision(DEV, "--region", REGION)
    assert code == 2 and "none exists by default" in err and "\n" not in err
    assert "--web-password-file FILE" in err and "--web-passwords OUT.csv" in err
    assert nothing_written(env)


def test_one_password_for_a_whole_csv_or_both_flags_at_once_is_a_usage_error(env: Any) -> None:
    (env.tmp / "county.txt").write_text(f"{DEV},{REGION}\nT2,{REGION}\n")
    pw = env.pwfile(secret())
    code, err = env.provision("--from-csv", str(env.tmp / "county.txt"),
                              "--web-password-file", pw)
    assert code == 2 and "with --from-csv use --web-passwords OUT.csv" in err
    code, err = env.provision(DEV, "--region", REGION, "--web-password-file", pw,
                              "--web-passwords", str(env.tmp / "p.csv"))
    assert code == 2 and "not allowed with argument" in err and "\n" not in err
    assert nothing_written(env)


# ------------------------------------------------------------------------- many terminals, a sheet


def test_generated_passwords_go_to_a_private_sheet_one_per_terminal(env: Any,
                                                                    capfd: Any) -> None:
    ids = [f"T3411221002{i:02d}-01" for i in range(20)]
    (env.tmp / "county.txt").write_text("".join(f"T3411221002{i:02d}-01,3411221002{i:02d}\n"
                                                for i in range(20)))
    sheet = env.tmp / "pages.csv"
    assert env.provision("--from-csv", str(env.tmp / "county.txt"),
                         "--web-passwords", str(sheet)) == (0, "")
    out, err = capfd.readouterr()
    assert mode(sheet) == 0o600 and f"page passwords: {sheet}" in out
    rows = list(csv.reader(sheet.read_text().splitlines()))
    assert rows[0] == ["id", "password"] and [r[0] for r in rows[1:]] == ids
    passwords = dict(rows[1:])
    assert len(set(passwords.values())) == 20
    salts = set()
    for dev, pw in passwords.items():
        assert re.fullmatch(r"[a-hjkmnp-z2-9]{4}-[a-hjkmnp-z2-9]{4}-[a-hjkmnp-z2-9]{4}", pw)
        stored = config(env, dev)["web"]["pass"]
        assert webpass.verify(pw, stored)
        salts.add(salt_of(stored))
        assert pw not in out + err + (env.out / "credentials.json").read_text()
    assert len(salts) == 20


def test_each_terminal_gets_its_own_recovery_wifi_key_on_a_private_label(env: Any,
                                                                         capfd: Any) -> None:
    ids = [f"T3411221002{i:02d}-01" for i in range(5)]
    (env.tmp / "county.txt").write_text("".join(f"{d},{d[1:13]}\n" for d in ids))
    assert env.provision("--from-csv", str(env.tmp / "county.txt"),
                         "--web-passwords", str(env.tmp / "pages.csv")) == (0, "")
    out, _err = capfd.readouterr()
    assert f"labels: {env.out}/<id>/label.txt" in out
    keys = set()
    for dev in ids:
        label = env.out / dev / "label.txt"
        assert mode(label) == 0o600
        key = config(env, dev)["web"]["ap_key"]
        assert re.fullmatch(r"[a-hjkmnp-z2-9]{4}-[a-hjkmnp-z2-9]{4}-[a-hjkmnp-z2-9]{4}", key)
        assert label.read_text() == (f"{dev}\nrecovery Wi-Fi (hold the button through "
                                     f"power-on): cunxiang-{dev}\nkey: {key}\n")
        assert key not in out
        keys.add(key)
    assert len(keys) == 5
    # the terminal's own config check takes it; a key WPA2 would refuse is refused
    cfg = config(env, ids[0])
    assert terminal_check(cfg)[0] is None
    for bad in ["short", "x" * 64, "tab\there-ok"]:
        cfg["web"]["ap_key"] = bad
        assert terminal_check(cfg)[0] == "web ap_key", bad


def test_an_existing_sheet_is_never_overwritten(env: Any) -> None:
    sheet = env.tmp / "pages.csv"
    sheet.write_text("id,password\nT9,kept-for-the-village\n")
    code, err = env.provision(DEV, "--region", REGION, "--web-passwords", str(sheet))
    assert code == 1 and f"--web-passwords {sheet} exists already" in err and "\n" not in err
    assert sheet.read_text() == "id,password\nT9,kept-for-the-village\n"
    assert not env.out.exists()
    code, err = env.provision(DEV, "--region", REGION, "--web-passwords",
                              str(env.tmp / "no" / "pages.csv"))
    assert code == 1 and "no folder" in err and not env.out.exists()


def test_force_gives_a_new_page_password_from_a_new_sheet(env: Any) -> None:
    assert env.provision(DEV, "--region", REGION, "--web-passwords", str(env.tmp / "a.csv"))[0] == 0
    before = config(env)["web"]["pass"]
    assert env.provision(DEV, "--region", REGION, "--force", "--web-passwords",
                         str(env.tmp / "b.csv"))[0] == 0
    after = config(env)["web"]["pass"]
    new = dict(list(csv.reader((env.tmp / "b.csv").read_text().splitlines()))[1:])[DEV]
    assert after != before and webpass.verify(new, after)


# ------------------------------------------------------------------------- the hash itself

# RFC 7914 §11, PBKDF2-HMAC-SHA256 with dkLen 64: the device's PBKDF2 is held to the same.
RFC7914 = [
    ("passwd", b"salt", 1,
     ("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
      "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783")),
    ("Password", b"NaCl", 80000,
     ("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
      "a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d")),
]


@pytest.mark.parametrize(("password", "salt", "iterations", "want"), RFC7914)
def test_the_host_pbkdf2_matches_rfc7914(password: str, salt: bytes, iterations: int,
                                         want: str) -> None:
    assert webpass.derive(password, salt, iterations, 64).hex() == want
    # web.pass keeps the first 32 bytes: PBKDF2's first block, the same for any dkLen >= 32
    assert webpass.derive(password, salt, iterations).hex() == want[:64]


def test_the_stored_string_has_exactly_the_documented_form() -> None:
    salt = os.urandom(16)
    password = secret()
    stored = webpass.hash_password(password, salt=salt)
    scheme, iterations, s, h = stored.split("$")
    assert (scheme, iterations) == ("pbkdf2-sha256", "4096") and "=" not in stored
    assert base64.urlsafe_b64decode(s + "==") == salt
    assert base64.urlsafe_b64decode(h + "=") == webpass.derive(password, salt, 4096)
    assert webpass.parse_hash(stored) == (4096, salt, webpass.derive(password, salt, 4096))


@pytest.mark.parametrize("mangle", [
    lambda s: s.replace("pbkdf2-sha256", "pbkdf2-sha512"),
    lambda s: s.replace("$4096$", "$999$"),
    lambda s: s.replace("$4096$", "$100001$"),
    lambda s: s.replace("$4096$", "$04096$"),
    lambda s: s + "=",
    lambda s: s.rsplit("$", 1)[0] + "$" + "A" * 42,  # 31 bytes of hash
    lambda s: "$".join(s.split("$")[:2] + ["A" * 21] + s.split("$")[3:]),  # 15 bytes of salt
    lambda s: s[:-1] + ("D" if s.endswith("B") else "B"),  # bits past the 32nd byte
    lambda s: s.replace("$", "$ ", 1),
], ids=["scheme", "few-iterations", "many-iterations", "leading-zero", "padded", "short-hash",
        "short-salt", "non-canonical", "blank"])
def test_a_malformed_stored_string_is_refused(mangle: Any) -> None:
    stored = webpass.hash_password(secret(), salt=b"\x00" * 16)
    with pytest.raises(webpass.WebPassError):
        webpass.parse_hash(mangle(stored))


# ------------------------------------------------------------------------- the terminal's side

needs_webauth = pytest.mark.skipif(not (ROOT / "firmware" / "webauth.py").exists(),
                                   reason="firmware/webauth.py (the device's check) not there yet")

_DEVICE_CHECK = r'''
import asyncio, json
import config, webauth
cfg = config.validate(json.loads(open(CONFIG).read()))
auth = webauth.Auth(cfg, lambda ev, **kw: None)
out = [asyncio.run(auth.check(p)) for p in TRIES]
u = asyncio.run(webauth.pbkdf2("passwd", b"salt", 1))
v = asyncio.run(webauth.pbkdf2("Password", b"NaCl", 80000))
asyncio.run(auth.set_password(NEW))
print(json.dumps({"check": out, "rfc": [u.hex(), v.hex()], "pass": open("web/pass").read()}))
'''


@needs_webauth
@pytest.mark.parametrize("password", ["村响广播室的本地广播密码", None], ids=["chinese", "generated"])
def test_the_terminal_accepts_the_host_made_hash_and_the_host_reads_the_terminals(
        env: Any, password: str | None) -> None:
    """Both directions: firmware/webauth.py (under MicroPython) logs in with the password whose
    hash provisioning wrote, refuses another; the hash it writes for a changed password is one
    tools/webpass.py verifies; and its PBKDF2 gives RFC 7914 §11's first block."""
    if password is None:
        sheet = env.tmp / "pages.csv"
        assert env.provision(DEV, "--region", REGION, "--web-passwords", str(sheet))[0] == 0
        password = sheet.read_text().splitlines()[1].split(",")[1]
    else:
        assert env.provision(DEV, "--region", REGION, "--web-password-file",
                             env.pwfile(password))[0] == 0
    new = secret(12)
    flash = env.tmp / "flash"
    flash.mkdir()
    script = (f"CONFIG = {str(env.out / DEV / 'config.json')!r}\n"
              f"TRIES = {[password, password + '!', password[:-1]]!r}\nNEW = {new!r}\n"
              + _DEVICE_CHECK)
    r = run_mpy(script, cwd=flash, path=[ROOT / "firmware"], timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["check"] == ["ok", "wrong", "wrong"]
    assert res["rfc"] == [want[:64] for _, _, _, want in RFC7914]
    assert webpass.parse_hash(res["pass"])[0] == 4096 and webpass.verify(new, res["pass"])


@pytest.mark.skipif("def web_hash" not in (ROOT / "firmware" / "config.py").read_text(),
                    reason="firmware/config.py does not check web.pass yet")
def test_the_terminals_config_check_refuses_a_page_password_that_is_not_a_hash(
        env: Any) -> None:
    assert env.provision(DEV, "--region", REGION, "--web-password-file",
                         env.pwfile(secret()))[0] == 0
    cfg = config(env)
    good = cfg["web"]["pass"]
    for bad in (secret(), good.replace("$4096$", "$999$"), good.rsplit("$", 1)[0] + "$AAAA"):
        cfg["web"]["pass"] = bad
        assert terminal_check(cfg)[0] == "web pass", bad
