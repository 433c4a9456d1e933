"""`cx alert verify` as an operator runs it: the terminal's own verifier (firmware/alert.py under
micropython) explains each verdict of alerts.md §4."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tools.envelope import KeyPair, make_alert_payload, sign_alert, sign_jws
from tools.keys import new_issuer

CX = str(Path(sys.executable).parent / "cx") if (Path(sys.executable).parent / "cx").exists() \
    else (shutil.which("cx") or "cx")
TERMINAL = "341122100201"
NEIGHBOUR = "341122100202"  # another village of the same town
NOW = int(time.time())


class World:
    """Keys made at test time, a terminal config, a trust list, and a folder for envelopes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert"])
        self.issuer = new_issuer(self.root, "cty-341122", ["341122"], ["alert"],
                                 NOW - 300, NOW + 30 * 86400)
        self.config = tmp / "terminal.json"
        self.config.write_text(json.dumps({
            "id": f"T{TERMINAL}-01", "region": TERMINAL, "trust": [self.root.anchor()],
            "mqtt": {"host": "127.0.0.1", "port": 1883}}))
        self.trust = tmp / "trust.json"
        self.trust.write_text(json.dumps([self.root.anchor()]))
        self.n = 0

    def payload(self, **kw: Any) -> dict[str, Any]:
        kw.setdefault("regions", [TERMINAL[:6] + "000000"])
        kw.setdefault("level", 2)
        kw.setdefault("tone", "siren")
        kw.setdefault("issued", NOW)
        return make_alert_payload(**kw)

    def file(self, envelope: str | bytes) -> Path:
        self.n += 1
        f = self.tmp / f"env{self.n}.txt"
        f.write_bytes(envelope if isinstance(envelope, bytes) else envelope.encode() + b"\n")
        return f


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("verify"))


def cx(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, "alert", "verify", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def verdict(w: World, envelope: str | bytes, *flags: str) -> dict[str, Any]:
    r = cx(w.file(envelope), "--config", w.config, "--json", *flags)
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert r.returncode == (0 if out["status"] == "accepted" else 1), (r.returncode, out)
    return out


def flip(sig: str) -> str:
    i = len(sig) // 2
    return sig[:i] + ("B" if sig[i] == "A" else "A") + sig[i + 1:]


def test_valid_alert_is_accepted_and_explained(w: World) -> None:
    p = w.payload(regions=[TERMINAL[:6] + "000000", NEIGHBOUR], level=1, expires_in=7200)
    r = cx(w.file(sign_alert(w.issuer, p)), "--config", w.config)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0] == "accepted"
    assert "cty-341122 (certified by prov-34-root)" in out
    assert p["id"] in out
    assert "alert, level 1 (red)" in out
    assert f"{TERMINAL[:6]}000000, {NEIGHBOUR}" in out
    exp_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p["expires"]))
    assert exp_utc in out
    covers = next(line for line in out.splitlines() if line.strip().startswith("covers"))
    assert f"{TERMINAL[:6]}000000" in covers and NEIGHBOUR not in covers.split("(")[0]
    assert "rule 11" in out and "nothing is remembered" in out


def test_json_output_parses_with_verifier_payload(w: World) -> None:
    p = w.payload(level=3)
    env = sign_alert(w.issuer, p)
    out = verdict(w, env)
    assert {k: out[k] for k in ("status", "reason", "rule", "kid", "id")} == {
        "status": "accepted", "reason": None, "rule": None, "kid": "cty-341122", "id": p["id"]}
    assert out["payload"]["volume"] == 80  # the default the terminal fills in for level 3
    assert out["remembered"] is False


def test_same_envelope_twice_is_accepted_twice_nothing_remembered(w: World) -> None:
    f = w.file(sign_alert(w.issuer, w.payload()))
    for _ in range(2):
        assert cx(f, "--config", w.config).returncode == 0


def test_stdin_and_trust_list_with_region(w: World) -> None:
    env = sign_alert(w.issuer, w.payload())
    r = cx("-", "--trust", w.trust, "--region", TERMINAL, "--json", stdin="  " + env + "\n\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "accepted"


def test_root_signing_directly_is_accepted(w: World) -> None:
    out = verdict(w, sign_alert(w.root, w.payload(regions=["340000000000"])))
    assert (out["status"], out["kid"]) == ("accepted", "prov-34-root")


def test_tampered_signature_is_rejected_bad_signature(w: World) -> None:
    head, _, sig = sign_alert(w.issuer, w.payload()).rpartition(".")
    out = verdict(w, head + "." + flip(sig))
    assert (out["status"], out["reason"], out["rule"]) == ("rejected", "bad_signature", 6)
    assert out["payload"] is None  # nothing unverified passes for the issuer's


def test_tampered_signature_human_output_marks_payload_unverified(w: World) -> None:
    head, _, sig = sign_alert(w.issuer, w.payload()).rpartition(".")
    r = cx(w.file(head + "." + flip(sig)), "--config", w.config)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "rejected: bad_signature"
    assert "rule 6 failed: the alert signature verifies" in r.stdout
    assert "NOT VERIFIED" in r.stdout


def test_expired_alert_is_rejected_expired(w: World) -> None:
    p = w.payload(expires_in=600)
    out = verdict(w, sign_alert(w.issuer, p), "--now", str(p["expires"] + 1))
    assert (out["status"], out["reason"], out["rule"]) == ("rejected", "expired", 10)
    assert out["payload"]["id"] == p["id"]  # signature verified: the payload is shown


def test_unsynced_clock_skips_rule_9(w: World) -> None:
    p = w.payload(issued=NOW + 3600)
    env = sign_alert(w.issuer, p)
    out = verdict(w, env, "--now", str(NOW))
    assert (out["reason"], out["rule"]) == ("not_yet_valid", 9)
    assert verdict(w, env, "--now", str(NOW), "--unsynced")["status"] == "accepted"


def test_region_outside_signer_scope_is_rejected_out_of_scope(w: World) -> None:
    p = w.payload(regions=["341100000000"])
    r = cx(w.file(sign_alert(w.issuer, p)), "--config", w.config)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "rejected: out_of_scope"
    assert "rule 8 failed" in r.stdout
    assert "341100000000 (not within the scope)" in r.stdout
    out = verdict(w, sign_alert(w.issuer, p))
    assert (out["reason"], out["rule"], out["scope"]) == ("out_of_scope", 8, ["341122"])


def test_key_not_in_trust_is_rejected_unknown_key(w: World) -> None:
    stranger = KeyPair.generate("root", "prov-35-root", ["34"], ["alert"])
    out = verdict(w, sign_alert(stranger, w.payload()))
    assert (out["status"], out["reason"], out["rule"], out["kid"]) == (
        "rejected", "unknown_key", 4, "prov-35-root")


@pytest.mark.parametrize("garbage", [b"garbage", b"a.b", b"!!!.###.$$$", b""])
def test_garbage_is_rejected_malformed(w: World, garbage: bytes) -> None:
    out = verdict(w, garbage)
    assert (out["status"], out["reason"], out["rule"], out["id"]) == (
        "rejected", "malformed", 2, None)


def test_oversized_envelope_is_rejected_too_large(w: World) -> None:
    assert w.issuer.priv is not None
    p = w.payload()
    p["pad"] = "x" * 9000
    env = sign_jws(w.issuer.priv, {"alg": "EdDSA", "typ": "eb-alert", "kid": w.issuer.kid,
                                   "crt": w.issuer.crt}, p)
    out = verdict(w, env)
    assert (out["status"], out["reason"], out["rule"]) == ("rejected", "too_large", 1)


def test_alert_for_another_village_is_ignored_not_for_me(w: World) -> None:
    p = w.payload(regions=[NEIGHBOUR])
    r = cx(w.file(sign_alert(w.issuer, p)), "--config", w.config)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "ignored: not_for_me"
    assert "rule 12 failed: some region covers this terminal" in r.stdout
    out = verdict(w, sign_alert(w.issuer, p))
    assert (out["status"], out["reason"], out["rule"], out["covers"]) == (
        "ignored", "not_for_me", 12, [])


def one_line_error(r: subprocess.CompletedProcess[str], text: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cx: error: ") and text in lines[0], lines[0]


def test_usage_errors_exit_2_with_one_line(w: World, tmp_path: Path) -> None:
    env = w.file(sign_alert(w.issuer, w.payload()))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    bad_anchor = tmp_path / "anchors.json"
    bad_anchor.write_text(json.dumps([{"kid": "x"}]))
    one_line_error(cx(tmp_path / "missing.txt", "--config", w.config), "missing.txt")
    one_line_error(cx(env, "--config", tmp_path / "nope.json"), "nope.json")
    one_line_error(cx(env, "--config", bad_json), "not valid JSON")
    one_line_error(cx(env), "give --config")
    one_line_error(cx(env, "--trust", w.trust), "give --config")
    one_line_error(cx(env, "--config", w.config, "--trust", w.trust), "not both")
    one_line_error(cx(env, "--config", w.config, "--bogus"), "unrecognized arguments: --bogus")
    one_line_error(cx(env, "--config", w.config, "--now", "soon"), "--now")
    one_line_error(cx(env, "--trust", w.trust, "--region", "3411"), "--region")
    one_line_error(cx(env, "--trust", bad_anchor, "--region", TERMINAL), "trust")
    one_line_error(cx(env, "--trust", w.config, "--region", TERMINAL), "JSON array")
    one_line_error(cx("--config", w.config), "FILE")
