"""agent/otacheck.py under MicroPython: the 13 rules of ota.md §3, each refusal with its reason,
in order (first failure wins), against manifests signed here with keys made at test time."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from tools import firmware
from tools.envelope import KeyPair, make_cert, sign_jws

NOW = int(time.time())
REGION = "341122100201"  # the terminal's village

DRIVER = r'''
import json

import otacheck
import trust


class Clock:
    def __init__(self, t):
        self.t = t

    def now(self):
        return self.t


def run():
    c = json.load(open("case.json"))
    chain = trust.Chain(c["trust"], "ota", Clock(c["now"]))
    out = []
    for m in c["manifests"]:
        reason, p = otacheck.check(m.encode(), chain, c["running"], c["region"], c["free"],
                                   set(c["held"]))
        out.append(reason)
    return {"reasons": out}
'''


def files(n: int = 3) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        data = f"module {i}\n".encode()
        out.append({"path": f"m{i}.mpy", "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest()})
    return out


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    root = KeyPair.generate("root", "county-root", ["341122"], ["alert", "ota"])
    ota = KeyPair.generate("root", "county-ota", ["341122"], ["ota"])
    alert_only = KeyPair.generate("root", "county-alert", ["341122"], ["alert"])
    issuer = KeyPair.generate("issuer", "ota-2026", ["341122"], ["ota"])
    issuer.crt = make_cert(root, issuer.kid, issuer.pub, ["341122"], ["ota"], NOW - 60,
                           NOW + 86400)
    return {"root": root, "ota": ota, "alert_only": alert_only, "issuer": issuer}


def payload(**over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"product": "cunxiang-terminal", "version": "1.2.0", "issued": NOW,
                         "regions": ["341122000000"], "files": files()}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def signed(key: KeyPair, p: dict[str, Any] | bytes, typ: str = "eb-ota",
           crt: str | None = None) -> str:
    assert key.priv is not None
    h: dict[str, Any] = {"alg": "EdDSA", "typ": typ, "kid": key.kid}
    if crt or key.crt:
        h["crt"] = crt or key.crt
    return sign_jws(key.priv, h, p)


def reasons(keys: dict[str, KeyPair], manifests: list[str], running: str = "1.1.0",
            free: int | None = 10_000_000, held: list[str] = ()) -> list[str | None]:
    trust = [keys[k].anchor() for k in ("root", "ota", "alert_only")]
    case = {"trust": trust, "now": NOW, "running": running, "region": REGION, "free": free,
            "held": list(held), "manifests": manifests}
    res, _ = firmware.run(DRIVER, {"case.json": json.dumps(case)}, "the OTA rules")
    return res["reasons"]


def test_a_good_release_passes_every_rule(keys: dict[str, KeyPair]) -> None:
    got = reasons(keys, [signed(keys["ota"], payload()), signed(keys["root"], payload()),
                         signed(keys["issuer"], payload())])
    assert got == [None, None, None]


def test_each_rule_refuses_with_its_reason(keys: dict[str, KeyPair]) -> None:
    ota = keys["ota"]
    good = signed(ota, payload())
    head, _, sig = good.split(".")
    tampered = head + "." + signed(ota, payload(version="9.9.9")).split(".")[1] + "." + sig
    forged_crt = make_cert(keys["alert_only"], "ota-2026", keys["issuer"].pub, ["341122"],
                           ["ota"], NOW - 60, NOW + 86400)
    alert_crt = make_cert(keys["root"], "ota-2026", keys["issuer"].pub, ["341122"], ["alert"],
                          NOW - 60, NOW + 86400)
    cases = [
        ("too_large", signed(ota, payload(pad="x" * 17000))),
        ("malformed", "not.a-manifest"),
        ("malformed", good.replace(".", "", 1)),
        ("bad_alg", signed(ota, payload(), typ="eb-alert")),
        ("unknown_key", signed(keys["alert_only"], payload())),  # an alert-only anchor
        ("unknown_key", signed(keys["issuer"], payload(), crt=forged_crt)),  # its anchor: alert
        ("bad_cert", signed(keys["issuer"], payload(), crt=alert_crt)),  # crt without use ota
        ("bad_signature", tampered),
        ("bad_field", signed(ota, payload(version="1.02.0"))),
        ("bad_field", signed(ota, payload(version="1.2"))),
        ("bad_field", signed(ota, payload(files=[dict(files(1)[0], path="../main.py")]))),
        ("bad_field", signed(ota, payload(files=files(1) + files(1)))),  # a path twice
        ("bad_field", signed(ota, payload(files=[dict(files(1)[0], sha256="A" * 64)]))),
        ("bad_field", signed(ota, payload(files=[]))),
        ("bad_field", signed(ota, payload(regions=["34"]))),
        ("bad_field", signed(ota, payload(downgrade="yes"))),
        ("out_of_scope", signed(ota, payload(regions=["441122000000"]))),
        ("not_for_me", signed(ota, payload(regions=["341122100202"]))),  # the next village
        ("not_for_me", signed(ota, payload(product="other-terminal"))),
        ("same_version", signed(ota, payload(version="1.1.0"))),
        ("downgrade", signed(ota, payload(version="1.0.9"))),
        ("too_old", signed(ota, payload(min_version="1.1.1"))),
        ("no_space", signed(ota, payload(files=[dict(files(1)[0], bytes=5_000_000)]))),
    ]
    assert reasons(keys, [m for _, m in cases]) == [r for r, _ in cases]


def test_versions_compare_as_numbers_and_downgrade_needs_the_flag(keys: dict[str, KeyPair]) -> None:
    ota = keys["ota"]
    got = reasons(keys, [signed(ota, payload(version="1.10.0")),
                         signed(ota, payload(version="1.1.0")),
                         signed(ota, payload(version="1.0.0", downgrade=True))],
                  running="1.9.0")
    assert got == [None, "downgrade", None]  # 1.10.0 is above 1.9.0, not below it


def test_files_held_need_no_room_and_rules_come_in_order(keys: dict[str, KeyPair]) -> None:
    ota = keys["ota"]
    big = [dict(files(1)[0], bytes=5_000_000)]
    held = [big[0]["sha256"]]
    # held: nothing to download, so the 5 MB file needs no room; first failure wins: a release
    # for another region that is also a downgrade is not_for_me (rule 9 before rule 11)
    got = reasons(keys, [signed(ota, payload(files=big)),
                         signed(ota, payload(regions=["341122100202"], version="1.0.0"))],
                  held=held)
    assert got == [None, "not_for_me"]
