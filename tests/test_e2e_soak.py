"""Soak: 500 envelopes through one emulated terminal at the default heap leave no heap growth after
collection (no leak), no MemoryError, no restart, a receipt for each, and a terminal that still
sounds an alert."""

from __future__ import annotations

import os
import time
from typing import Any

from rig import REGION, Rig, Term

from tools.emu.run import DEFAULT_HEAP
from tools.envelope import b64e, sign_jws, topics_for

TOTAL = 500
BATCH = 25  # per batch: 10 test alerts each followed by its cancel, 5 invalid envelopes
SEEN_MAX = 256  # firmware/seen.py MAX_SEEN: accepted (kid, id) pairs remembered
# The first heap reading is taken once the seen store is full (13 batches: 260 accepted). Its
# dict never shrinks (a MicroPython dict keeps its table at its high-water size: 4.8 KB at 256
# entries, 1.7 KB at 80 on this 64-bit port), so readings compare like with like only when both
# are taken at the same fill; before that, growth is the store filling up, not a leak.
WARMUP = 13 * BATCH
EXPIRES_IN = 600  # s: no soak entry expires during the run, so the store stays full
GROUP = 8  # envelopes in flight at once, below the terminal's intake bound (intake.INTAKE_MAX 16)
# Growth allowed between the two readings. Both are taken at the same point (idle, after a full
# gc.collect(), the seen store full), so the legitimate state is the same; what is left is
# conservative-GC noise from a stale pointer or two (a few hundred bytes seen). A leak of one
# object per envelope costs at least one 32-byte GC block (64-bit unix port): x 175 envelopes
# after the warm-up = 5.6 KB; one per accepted envelope x 140 = 4.5 KB. 2 KB tells them apart.
MAX_GROWTH = 2048
TOPIC = f"eb/alert/{REGION[:6]}"


def flip(sig: str) -> str:
    i = len(sig) // 2
    return sig[:i] + ("B" if sig[i] == "A" else "A") + sig[i + 1:]


def signed_raw(rig: Rig, p: dict[str, Any]) -> str:
    k = rig.issuer
    assert k.priv is not None
    return sign_jws(k.priv, {"alg": "EdDSA", "typ": "eb-alert", "kid": k.kid, "crt": k.crt}, p)


def invalid(rig: Rig, n: int, i: int) -> tuple[str | bytes, tuple[str, str], str | None]:
    """The i-th invalid envelope of batch n: (envelope, (status, reason), receipt id)."""
    now = int(time.time())
    kind = i % 5
    aid = f"soak-{n}-bad-{i}"
    if kind == 0:
        env, _p = rig.alert(kind="test", level=4, tone="chime", id=aid)
        h, pl, s = env.split(".")
        return f"{h}.{pl}.{flip(s)}", ("rejected", "bad_signature"), None
    if kind == 1:
        env, _p = rig.alert(kind="test", level=4, tone="chime", id=aid, issued=now - 7200,
                            expires=now - 5)
        return env, ("rejected", "expired"), aid
    if kind == 2:
        env, _p = rig.alert(kind="test", level=4, tone="chime", id=aid,
                            regions=["341122200000"])
        return env, ("ignored", "not_for_me"), aid
    if kind == 3:
        junk = [os.urandom(300), b"only.two", b64e(b"[1,2]").encode() + b".e30.AAAA"]
        return junk[(n + i) % 3], ("rejected", "malformed"), None
    p = {"id": aid, "kind": "test", "level": 7, "regions": [REGION[:6] + "000000"],
         "issued": now, "expires": now + 600, "audio": {"tone": "chime"}}
    return signed_raw(rig, p), ("rejected", "bad_field"), aid


def first_receipts(rig: Rig, start: int) -> list[dict[str, Any]]:
    with rig.rx.cond:
        return [r for r in rig.rx.items[start:] if r.get("status") in ("accepted", "rejected",
                                                                         "ignored")]


def send_group(rig: Rig, group: list[tuple[str | bytes, tuple[str, str], str | None]]) -> None:
    """Publish envelopes and wait until each has its first receipt, checking status and reason."""
    start = len(rig.rx.items)
    for env, _want, _aid in group:
        rig.send(env, [TOPIC])
    deadline = time.monotonic() + 30
    while len(first_receipts(rig, start)) < len(group):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(first_receipts(rig, start))} receipts for {len(group)} "
                                 f"envelopes; last: {rig.rx.items[-5:]}")
        time.sleep(0.02)
    got = sorted((r["status"], r["reason"], r["alert"] or "") for r in first_receipts(rig, start))
    want = sorted((s, rs, aid or "") for _e, (s, rs), aid in group)
    assert got == want


def mem_line(rig: Rig, t: Term, envelopes: int, timeout: float = 20) -> dict[str, Any]:
    """The terminal's heap reading taken at its first quiet moment after `envelopes` envelopes of
    the soak's. The rig's probes (rig.py PROBE) it took in count on top: each one it answered."""
    deadline = time.monotonic() + timeout
    while True:
        probes = len(rig.rx.probe_answers(t.id))
        for e in t.log(rotated=True):
            if e.get("ev") == "mem" and e.get("envelopes") == envelopes + probes:
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"no mem line after {envelopes} envelopes: "
                                 f"{[e for e in t.log(rotated=True) if e.get('ev') == 'mem'][-3:]}")
        time.sleep(0.1)


def play_to_end(rig: Rig, t: Term) -> dict[str, Any]:
    """One valid test alert, sounded to the end; returns its payload."""
    n = len(t.events())
    p = rig.send_alert(kind="test", level=4, tone="chime")
    rig.rx.wait(lambda r: r.get("alert") == p["id"] and r["status"] == "done", 30)
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 10, since=n)
    assert [e["value"] for e in t.events()[n:] if e["dev"] == "amp"] == [1, 0]
    return p


def test_500_envelopes_leave_no_heap_growth_and_no_memory_error(rig: Rig) -> None:
    t = rig.terminal("t1", heap=DEFAULT_HEAP, hold_ms=100)
    rx_start = len(rig.rx.items)
    readings: list[tuple[int, dict[str, Any]]] = []
    for n in range(TOTAL // BATCH):
        batch: list[tuple[str | bytes, tuple[str, str], str | None]] = []
        for i in range(10):
            env, p = rig.alert(kind="test", level=4, tone="chime", id=f"soak-{n}-ok-{i}",
                               expires_in=EXPIRES_IN)
            cenv, cp = rig.alert(kind="cancel", refs=[p["id"]], id=f"soak-{n}-cancel-{i}",
                                 expires_in=EXPIRES_IN)
            assert topics_for(p) == topics_for(cp) == [TOPIC]
            batch += [(env, ("accepted", None), p["id"]), (cenv, ("accepted", None), cp["id"])]
        batch += [invalid(rig, n, i) for i in range(5)]
        for k in range(0, len(batch), GROUP):
            send_group(rig, batch[k:k + GROUP])
        sent = (n + 1) * BATCH
        readings.append((sent, mem_line(rig, t, sent)))
    series = [(k, e["alloc"], e["seen"]) for k, e in readings]
    print("(envelopes, alloc, seen):", series)
    base, end = dict(readings)[WARMUP], readings[-1][1]
    assert base["seen"] == end["seen"] == SEEN_MAX, f"(envelopes, alloc, seen) {series}"
    assert end["alloc"] - base["alloc"] < MAX_GROWTH, f"heap grew: (envelopes, alloc, seen) {series}"

    # still sounds an alert, and only the soak's 500 plus this one reached it, each answered once
    play_to_end(rig, t)
    console = t.console()
    assert "MemoryError" not in console and "Traceback" not in console, console[-2000:]
    boots = [e for e in t.events() if e["dev"] == "boot"]
    assert len(boots) == 1, boots
    assert len(first_receipts(rig, rx_start)) == TOTAL + 1
    # the soak's test alerts were cancelled before or while they played, never sounded to the end
    assert not [r for r in rig.rx.items if str(r.get("alert")).startswith("soak-")
                and r["status"] == "done"]
