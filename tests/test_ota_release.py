"""`cx ota build`, `cx ota verify` and `cx ota diff` (ota.md §1-3, docs/ota.md "Releases"): a
release of this checkout decoded field by field, its files inflated and imported under the
pinned micropython, a one-module change costing one module, the signer refused when a terminal
would refuse it, and the terminal's own rules (agent/otacheck.py) explaining each verdict.
Keys are made here, at test time."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tools import release, terminal_files
from tools.envelope import KeyPair, b64d, b64e, decode_jws, json_bytes, verify_jws
from tools.keys import new_issuer, save_keyfile

CX = str(Path(sys.executable).parent / "cx")
MICROPYTHON = str(Path(sys.executable).parent / "micropython")
TERMINAL = "341122100201"
COUNTY = "341122000000"
OTHER = "341123100201"  # the next county: not covered by COUNTY
NOW = int(time.time())
ISSUED = NOW - 60


def cx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CX, *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=cwd)


def one_line(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cx: error: "), r.stderr
    return lines[0]


class World:
    """Roots and issuers for ota and for alerts only, their key files and trust lists, and a
    release of this checkout built by `cx ota build`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = KeyPair.generate("root", "prov-34-root", ["34"], ["alert", "ota"])
        self.issuer = new_issuer(self.root, "cty-341122-ota", ["341122"], ["ota"],
                                 NOW - 300, NOW + 86400)
        self.alert_issuer = new_issuer(self.root, "cty-341122-alert", ["341122"], ["alert"],
                                       NOW - 300, NOW + 86400)
        self.alert_root = KeyPair.generate("root", "prov-34-alerts", ["34"], ["alert"])
        for name, kp in (("root", self.root), ("issuer", self.issuer),
                         ("alert_issuer", self.alert_issuer), ("alert_root", self.alert_root)):
            save_keyfile(tmp / f"{name}.json", kp)
        self.trust = tmp / "trust.json"
        self.trust.write_text(json.dumps([self.root.anchor(), self.alert_root.anchor()]))
        self.alert_trust = tmp / "alert-trust.json"
        self.alert_trust.write_text(json.dumps([self.alert_root.anchor()]))
        self.rel = tmp / "rel-1.0.0"
        r = cx("ota", "build", "--version", "1.0.0", "--regions", COUNTY, "--key",
               str(tmp / "issuer.json"), "--out", str(self.rel), "--issued", str(ISSUED))
        assert r.returncode == 0, r.stderr
        self.build_out = r.stdout
        self.n = 0

    def manifest(self, jws: str) -> Path:
        self.n += 1
        p = self.tmp / f"manifest-{self.n}.jws"
        p.write_text(jws + "\n")
        return p

    def small(self, key: KeyPair | None = None, *, regions: list[str] | None = None,
              version: str = "1.0.0", **kw: Any) -> str:
        """A manifest of two tiny files signed by `key` (default the ota issuer), built past
        the host's own checks (for the refusals only a terminal makes)."""
        key = key or self.issuer
        files = [("version.mpy", b"v"), ("limits.mpy", b"l")]
        payload = release.make_payload(files, version=version, min_version=kw.get("min_version"),
                                       regions_=regions or [COUNTY], issued=ISSUED,
                                       downgrade=kw.get("downgrade"))
        return release.sign_manifest(key, key.crt, payload)

    def verify(self, target: Path, *extra: str, running: str = "0.1.0",
               region: str = TERMINAL, trust: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
        return cx("ota", "verify", str(target), "--trust", str(trust or self.trust),
                  "--running", running, "--region", region, "--now", str(NOW), *extra)


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("ota"))


# --- build ----------------------------------------------------------------------------------


def test_the_manifest_holds_every_field_of_ota_md_section_1(w: World) -> None:
    jws = (w.rel / "manifest.jws").read_text().strip()
    assert len(jws) <= 16384
    header, body, _ = decode_jws(jws)
    assert header == {"alg": "EdDSA", "typ": "eb-ota", "kid": w.issuer.kid, "crt": w.issuer.crt}
    assert verify_jws(w.issuer.pub, jws)
    p = json.loads(body)
    assert set(p) == {"product", "version", "issued", "regions", "files"}  # no min, no downgrade
    assert (p["product"], p["version"], p["issued"], p["regions"]) == \
        ("cunxiang-terminal", "1.0.0", ISSUED, [COUNTY])
    expect = sorted(name[:-3] + ".mpy" for _, name in terminal_files.release_files())
    assert [f["path"] for f in p["files"]] == expect
    assert "main.mpy" not in expect and "selector.mpy" not in expect
    for f in p["files"]:
        assert set(f) == {"path", "bytes", "sha256"}
        assert len(f["sha256"]) == 64 and f["sha256"] == f["sha256"].lower()
    assert "release 1.0.0" in w.build_out and str(w.rel) in w.build_out


def test_every_file_inflates_to_what_the_manifest_names(w: World) -> None:
    p = json.loads(decode_jws((w.rel / "manifest.jws").read_text().strip())[1])
    by_sha = {f["sha256"]: f for f in p["files"]}
    blobs = sorted((w.rel / "files").iterdir())
    assert {b.name for b in blobs} == {f"{s}.z" for s in by_sha}
    summary = json.loads((w.rel / "release.json").read_text())
    zsizes = {f["sha256"]: f["zbytes"] for f in summary["files"]}
    for b in blobs:
        z = b.read_bytes()
        assert z[0] & 0x0F == 8 and (z[0] << 8 | z[1]) % 31 == 0  # RFC 1950 header: deflate
        data = zlib.decompress(z)
        sha = hashlib.sha256(data).hexdigest()
        assert f"{sha}.z" == b.name and by_sha[sha]["bytes"] == len(data)
        assert zsizes[sha] == len(z)
        assert data[:1] == b"M"  # a .mpy file
        window = 1 << ((z[0] >> 4) + 8)  # the smallest window that holds the file
        assert (window >= len(data) or window == 32768) and (window == 512 or
                                                             window < 2 * len(data))
    assert summary["zbytes"] == sum(zsizes.values())
    assert (summary["version"], summary["regions"], summary["issued"], summary["kid"],
            summary["min_version"]) == ("1.0.0", [COUNTY], ISSUED, w.issuer.kid, None)


_IMPORT_ALL = """
import sys
import os
import deflate
import json
sys.path[:] = ["", ".frozen", "stub"]
m = json.load(open("manifest.json"))
for f in m["files"]:
    src = open("files/" + f["sha256"] + ".z", "rb")
    data = deflate.DeflateIO(src, deflate.ZLIB).read()
    src.close()
    if "/" in f["path"]:
        try:
            os.mkdir(f["path"].rsplit("/", 1)[0])
        except OSError:
            pass
    out = open(f["path"], "wb")
    out.write(data)
    out.close()
import board_emu
sys.modules["board"] = board_emu
bad = []
for f in m["files"]:
    name = f["path"][:-4].replace("/", ".")
    try:
        __import__(name)
    except Exception as e:
        bad.append(name + ": " + repr(e))
print(json.dumps({"bad": bad, "n": len(m["files"])}))
"""

# The unix port has no network or esp32 module, nor the ESP32's machine classes: stand-ins that answer
# anything, so board_horn/board_column import as they would on the board.
_STUB = """
class _Any:
    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        return _Any


def __getattr__(name):
    return _Any
"""


def test_each_mpy_inflates_and_imports_under_micropython(w: World, tmp_path: Path) -> None:
    p = json.loads(decode_jws((w.rel / "manifest.jws").read_text().strip())[1])
    shutil.copytree(w.rel / "files", tmp_path / "files")
    (tmp_path / "manifest.json").write_text(json.dumps(p))
    (tmp_path / "t.py").write_text(_IMPORT_ALL)
    (tmp_path / "stub").mkdir()
    for mod in ("network", "machine", "esp32"):
        (tmp_path / "stub" / f"{mod}.py").write_text(_STUB)
    r = subprocess.run([MICROPYTHON, "t.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"bad": [], "n": len(p["files"])}


def test_a_one_module_change_costs_that_module(w: World, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sources = []
    for path, name in terminal_files.release_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / name)
        sources.append((src / name, name))

    def build(version: str, out: str) -> Path:
        jws, blobs, summary = release.build(sources, w.issuer, version=version,
                                            regions_=[COUNTY], issued=ISSUED, now=NOW)
        (tmp_path / out).mkdir()
        release.write(tmp_path / out, jws, blobs, summary)
        return tmp_path / out

    old = build("1.0.0", "old")
    with open(src / "tones.py", "a") as f:
        f.write("\nOTA_TEST_MARK = 1\n")
    new = build("1.0.1", "new")
    r = cx("ota", "diff", str(old), str(new / "release.json"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [f["path"] for f in d["files"]] == ["tones.mpy"]
    assert (d["old"], d["new"], d["count"]) == ("1.0.0", "1.0.1", 1)
    summary = json.loads((new / "release.json").read_text())
    assert d["full_zbytes"] == summary["zbytes"]
    assert d["zbytes"] == next(f["zbytes"] for f in summary["files"] if f["path"] == "tones.mpy")
    assert d["zbytes"] <= 0.10 * d["full_zbytes"]
    human = cx("ota", "diff", str(old), str(new))
    assert human.returncode == 0 and "tones.mpy" in human.stdout
    assert "1 of " in human.stdout.splitlines()[0]


def test_diff_counts_content_at_any_path(w: World) -> None:
    def f(path: str, sha: str, z: int) -> dict[str, Any]:
        return {"path": path, "bytes": 2 * z, "sha256": sha * 64, "zbytes": z}

    old = {"version": "1.0.0", "files": [f("a.mpy", "a", 10), f("b.mpy", "b", 20)]}
    new = {"version": "1.1.0", "files": [f("moved/a.mpy", "a", 10), f("c.mpy", "c", 30),
                                         f("c2.mpy", "c", 30)]}
    d = release.diff(old, new)
    assert [x["path"] for x in d["files"]] == ["c.mpy"]  # a moved: held; c twice: fetched once
    assert (d["zbytes"], d["full_zbytes"]) == (30, 40)


@pytest.mark.parametrize(("key", "words"), [
    ("alert_issuer", "key cty-341122-alert has no use ota"),
    ("alert_root", "key prov-34-alerts has no use ota"),
])
def test_a_key_without_use_ota_is_refused(w: World, tmp_path: Path, key: str,
                                          words: str) -> None:
    line = one_line(cx("ota", "build", "--version", "1.0.0", "--regions", COUNTY, "--key",
                       str(w.tmp / f"{key}.json"), "--out", str(tmp_path / "r")), 2)
    assert words in line
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize(("flags", "words"), [
    (["--version", "1.02.0"], "MAJOR.MINOR.PATCH"),
    (["--version", "1.0"], "MAJOR.MINOR.PATCH"),
    (["--version", "10000.0.0"], "MAJOR.MINOR.PATCH"),
    (["--version", "v1.0.0"], "MAJOR.MINOR.PATCH"),
    (["--min-version", "0.1"], "--min-version"),
    (["--regions", "34112200000"], "12-digit region code"),
    (["--regions", "001122000000"], "12-digit region code"),
    (["--regions", ""], "1..64 region codes"),
    (["--regions", ",".join(f"341122100{i:03d}" for i in range(65))], "1..64 region codes"),
    (["--regions", OTHER], "outside key cty-341122-ota's scope 341122"),
    (["--issued", "-5"], "--issued"),
])
def test_bad_fields_are_refused_in_one_line(w: World, tmp_path: Path, flags: list[str],
                                            words: str) -> None:
    args = {"--version": "1.0.0", "--regions": COUNTY}
    extra = [x for k, v in zip(flags[::2], flags[1::2], strict=True) if k not in args
             for x in (k, v)]
    args.update({k: v for k, v in zip(flags[::2], flags[1::2], strict=True) if k in args})
    line = one_line(cx("ota", "build", *(x for kv in args.items() for x in kv), *extra,
                       "--key", str(w.tmp / "issuer.json"), "--out", str(tmp_path / "r")), 2)
    assert words in line


def test_a_non_empty_out_folder_is_refused(w: World) -> None:
    line = one_line(cx("ota", "build", "--version", "1.0.1", "--regions", COUNTY, "--key",
                       str(w.tmp / "issuer.json"), "--out", str(w.rel)), 2)
    assert "not empty" in line


def test_the_boot_selector_and_an_oversized_manifest_are_refused(w: World,
                                                                 tmp_path: Path) -> None:
    main = tmp_path / "main.py"
    main.write_text("print(1)\n")
    with pytest.raises(release.ReleaseError, match="main.py"):
        release.compile_sources([(main, "main.py")])
    files = [(f"lib/{i:03d}-" + "x" * 50 + ".mpy", bytes([i])) for i in range(200)]
    payload = release.make_payload(files, version="1.0.0", min_version=None, regions_=[COUNTY],
                                   issued=ISSUED, downgrade=None)
    release.check_payload(payload, ["341122"], w.issuer.kid)  # every field is fine ...
    with pytest.raises(release.ReleaseError, match="over the 16384-byte limit"):
        release.sign_manifest(w.issuer, w.issuer.crt, payload)  # ... but it is too large


def test_an_ota_only_key_never_signs_an_alert(w: World) -> None:
    line = one_line(cx("alert", "send", "--key", str(w.tmp / "issuer.json"), "--regions", COUNTY,
                       "--level", "2", "--tone", "siren", "--print"), 1)
    assert "not for alerts" in line


def test_keys_never_grant_a_use_the_root_lacks(w: World, tmp_path: Path) -> None:
    line = one_line(cx("keys", "issuer", "--kid", "i-x", "--root", str(w.tmp / "alert_root.json"),
                       "--scope", "341122", "--use", "ota", "--out", str(tmp_path / "i.json")), 2)
    assert "use ota is not granted by root prov-34-alerts" in line


# --- verify: the terminal's own rules -------------------------------------------------------


def test_a_good_release_is_accepted_for_a_covered_region(w: World) -> None:
    r = w.verify(w.rel)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "accepted"
    assert sum(" ok " in x for x in lines) == 12
    assert any(x.startswith("  rule 13 not checked here") for x in lines)
    j = w.verify(w.rel / "manifest.jws", "--json")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    assert (doc["status"], doc["reason"], doc["rule"], doc["kid"], doc["not_checked"]) == \
        ("accepted", None, None, w.issuer.kid, [13])
    assert doc["payload"]["version"] == "1.0.0" and doc["scope"] == ["341122"]


def _refused(r: subprocess.CompletedProcess[str], reason: str, rule: int) -> None:
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout.splitlines()[0] == f"refused: {reason}"
    assert f"  rule {rule:>2} FAILED" in r.stdout
    assert reason in r.stdout.split("FAILED", 1)[1].splitlines()[0]


def test_another_region_is_not_for_me(w: World) -> None:
    _refused(w.verify(w.rel, region=OTHER), "not_for_me", 9)


def test_a_lower_version_is_a_downgrade_unless_it_says_so(w: World) -> None:
    _refused(w.verify(w.rel, running="1.10.0"), "downgrade", 11)
    ok = w.verify(w.manifest(w.small(downgrade=True)), running="1.10.0")
    assert ok.returncode == 0, ok.stdout


def test_the_same_version_is_refused(w: World) -> None:
    _refused(w.verify(w.rel, running="1.0.0"), "same_version", 10)


def test_a_terminal_below_min_version_is_too_old(w: World) -> None:
    m = w.manifest(w.small(version="2.0.0", min_version="1.0.0"))
    _refused(w.verify(m, running="0.9.9"), "too_old", 12)
    assert w.verify(m, running="1.0.0").returncode == 0


def test_a_tampered_payload_is_a_bad_signature(w: World) -> None:
    h, _, s = w.small().split(".")
    p = json.loads(b64d(w.small().split(".")[1]))
    p["regions"] = ["341122100201"]
    _refused(w.verify(w.manifest(f"{h}.{b64e(json_bytes(p))}.{s}")), "bad_signature", 6)


def test_a_key_the_terminal_does_not_trust_for_ota_is_unknown(w: World) -> None:
    _refused(w.verify(w.rel, trust=w.alert_trust), "unknown_key", 4)
    # an anchor whose use is only alert never signs a release
    _refused(w.verify(w.manifest(w.small(w.alert_root))), "unknown_key", 4)


def test_a_certificate_without_use_ota_is_a_bad_cert(w: World) -> None:
    _refused(w.verify(w.manifest(w.small(w.alert_issuer))), "bad_cert", 5)


def test_a_region_outside_the_signers_scope_is_out_of_scope(w: World) -> None:
    r = w.verify(w.manifest(w.small(regions=[COUNTY, "341123000000"])))
    _refused(r, "out_of_scope", 8)
    assert "341123000000 (not within the scope)" in r.stdout


def test_verify_refuses_unusable_input_in_one_line(w: World, tmp_path: Path) -> None:
    assert "--running" in one_line(w.verify(w.rel, running="1.0"), 2)
    assert "--region" in one_line(w.verify(w.rel, region="3411221002"), 2)
    assert "no-such" in one_line(w.verify(tmp_path / "no-such"), 2)
    bad = tmp_path / "trust.json"
    bad.write_text("{}")
    assert "trust list" in one_line(w.verify(w.rel, trust=bad), 2)
    junk = w.manifest("not a manifest")
    _refused(w.verify(junk), "malformed", 2)


def test_a_certificate_past_its_end_is_a_bad_cert_and_an_oversized_manifest_too_large(
        w: World) -> None:
    m = w.manifest(w.small())
    late = cx("ota", "verify", str(m), "--trust", str(w.trust), "--running", "0.1.0",
              "--region", TERMINAL, "--now", str(NOW + 2 * 86400))
    _refused(late, "bad_cert", 5)
    big = w.manifest("a" * 16385)
    _refused(w.verify(big), "too_large", 1)


def test_diff_refuses_what_is_not_a_release_in_one_line(w: World, tmp_path: Path) -> None:
    (tmp_path / "release.json").write_text('{"files": 3}')
    assert "not a release summary" in one_line(cx("ota", "diff", str(w.rel), str(tmp_path)), 2)
    assert "no-such" in one_line(cx("ota", "diff", str(tmp_path / "no-such"), str(w.rel)), 2)
