"""Live announcements end to end (docs/broadcast.md §7): a stream of IMA ADPCM chunks with signed
batches of their hashes, sent in real time through the real broker to an emulated terminal.
Forged, replayed and out-of-scope chunks never reach the speaker (a 440 Hz stream with 3 kHz
chunks injected: no 3 kHz in speaker.wav); lost chunks are silence, faded out and in (no step
at a gap's edges); a stalled stream ends."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import wave
from pathlib import Path
from typing import Any

from rig import CX, REGION, Rig, Term

from tools import adpcm, live
from tools.envelope import KeyPair

RATE = 16000


def tone(seconds: float, freq: float, amp: int = 8000) -> list[bytes]:
    n = int(seconds * RATE)
    pcm = b"".join(int(amp * math.sin(2 * math.pi * freq * i / RATE)).to_bytes(2, "little",
                                                                                signed=True)
                   for i in range(n))
    return [pcm[i:i + live.PCM_BYTES].ljust(live.PCM_BYTES, b"\0")
            for i in range(0, len(pcm), live.PCM_BYTES)]


def power(samples: list[int], freq: float) -> float:
    w = 2 * math.pi * freq / RATE
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + c * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - c * s1 * s2) / max(1, len(samples)) ** 2


def live_terminal(rig: Rig) -> tuple[Term, KeyPair, KeyPair]:
    county = KeyPair.generate("root", "county-341122-live", ["341122"], ["daily"])
    village = KeyPair.generate("root", "village-341122100201-live", ["341122100201"], ["daily"])
    t = rig.terminal("t1", trust=[rig.root.anchor(), county.anchor(), village.anchor()],
                     hold_ms=200)
    return t, county, village


def publisher(rig: Rig, topics: list[str]) -> Any:
    def pub(payload: bytes | str, qos: int) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        for tp in topics:
            info = rig.pub.publish(tp, data, qos=qos)
            if qos:
                info.wait_for_publish(5)
    return pub


def done(rig: Rig, sid: str, timeout: float = 30) -> dict[str, Any]:
    return rig.rx.wait(lambda r: r.get("live") == sid and r["status"] in ("done", "preempted"),
                       timeout)


def test_forged_replayed_and_out_of_scope_chunks_never_reach_the_speaker(rig: Rig) -> None:
    t, county, village = live_terminal(rig)
    s = live.Stream(county, ["341122000000"], volume=100)
    msgs = list(s.messages(tone(3.0, 440.0)))
    forged_blocks = adpcm.encode(b"".join(tone(0.4, 3000.0, 12000)))
    # a village key may not address the county: its stream is refused out_of_scope
    wide = live.Stream(village, ["341122000000"])
    pub = publisher(rig, s.topics)
    pub(wide.header, 1)
    r = rig.rx.wait(lambda r: r.get("live") == wide.id)
    assert (r["status"], r["reason"]) == ("rejected", "out_of_scope"), r

    sent: list[bytes] = []

    def with_attacks(m: list[tuple[float, bytes | str, int]]) -> Any:
        for due, payload, qos in m:
            if isinstance(payload, bytes) and payload[0] == live.CHUNK_TYPE:
                seq = int.from_bytes(payload[1 + live.TAG:1 + live.TAG + 4], "big")
                if 20 <= seq < 40:  # a forged 3 kHz chunk with the stream's own tag, first
                    yield due, live.chunk(s.tag, seq, forged_blocks[seq - 20]), 0
                if seq in (60, 61) and sent:  # an old genuine chunk again, under a new number
                    yield due, sent[0][:1 + live.TAG] + seq.to_bytes(4, "big") + sent[0][13:], 0
                sent.append(payload)
                if 45 <= seq < 55:  # the genuine chunk twice: a replay plays once
                    yield due, payload, 0
            yield due, payload, qos
        # a whole batch forged by a key that is not the header's
        yield 0, live.batch(village, s.id, 0, sent[:25]), 1

    live.send(with_attacks(msgs), pub)
    r = done(rig, s.id)
    assert (r["status"], r["reason"]) == ("done", "ended"), r
    statuses = [x["status"] for x in rig.rx.items if x.get("live") == s.id]
    assert statuses == ["accepted", "playing", "done"], statuses
    rate, samples = t.samples()
    tail = samples[-int(3.2 * rate):]
    assert power(tail, 3000.0) * 1000 < power(tail, 440.0), "3 kHz reached the speaker"
    assert r["chunks"] >= 140 and r["refused"] <= 2, r  # 150 chunks: the two re-numbered ones


def test_lost_chunks_are_silence_faded_in_and_out_and_a_stalled_stream_ends_by_itself(
        rig: Rig) -> None:
    t, county, _village = live_terminal(rig)
    s = live.Stream(county, [REGION], volume=100)
    msgs = list(s.messages(tone(2.0, 440.0)))
    rnd = random.Random(7)
    lossy = [(d, p, q) for d, p, q in msgs
             if not (q == 0 and rnd.random() < 0.10)]  # 10 % of the chunks lost
    j0 = t.sample_count()
    live.send(lossy, publisher(rig, s.topics))
    r = done(rig, s.id)
    assert (r["status"], r["reason"]) == ("done", "ended"), r
    kept = {int.from_bytes(p[1 + live.TAG:1 + live.TAG + 4], "big") for _d, p, q in lossy
            if q == 0}
    lost = [k for k in range(100) if k not in kept]
    # every lost chunk is a silent one; on a loaded machine a chunk or two may also come late
    # (late is silent too), so the count is not pinned to the losses alone
    assert lost and r["chunks"] + r["silent"] == 100, (r, lost)
    assert len(lost) <= r["silent"] <= len(lost) + 3, (r, lost)
    # silence, not noise: nothing louder than the tone; chunk k is samples 320k.. of the stream
    # (then at most one 20 ms fade after its last chunk)
    _rate, sp = t.samples()
    sp = sp[j0:]
    assert 100 * 320 <= len(sp) <= 101 * 320, len(sp)
    assert max(abs(x) for x in sp) <= 8800  # the tone is 8000; ADPCM overshoots a little
    gaps = [k for k in lost if k - 1 not in lost]
    after = {next(k for k in range(a, 101) if k not in lost) for a in gaps}
    # the tone's own largest step: inside the played chunks, past any fade-in (a block's first
    # 64 samples after a gap, and the stream's first)
    step = max(abs(sp[i] - sp[i - 1]) for k in kept
               for i in range(320 * k + (64 if k in after or k == 0 else 1), 320 * k + 320))
    assert 1000 < step < 2000, step  # 440 Hz at 8000: 1382 between samples, ADPCM adds a bit
    for a in gaps:
        b = next(k for k in range(a, 101) if k not in lost)  # the first chunk played after
        # a gap holds nothing but the last signed sample's fade (4 ms) and exact zeros
        assert not any(sp[320 * a + 64:320 * b]), (a, b, sp[320 * a + 64:320 * b])
        # no click at its edges: from the last played sample into the fade, and from the
        # fade's end to the first samples after the gap, no step bigger than the tone's own
        edges = [*range(max(1, 320 * a - 8), 320 * a + 72), *range(320 * b, 320 * b + 72)]
        worst = max((abs(sp[i] - sp[i - 1]), i) for i in edges if i < len(sp))
        assert worst[0] <= step, (a, b, worst, step)

    # a stream whose sender stops without its end marker ends after its stall time
    s2 = live.Stream(county, [REGION], volume=100)
    cut = [m for m in s2.messages(tone(2.0, 440.0))][:40]
    n = len(t.events())
    live.send(cut, publisher(rig, s2.topics))
    r = done(rig, s2.id, 20)
    assert (r["status"], r["reason"]) == ("done", "stalled"), r
    t.wait_event(lambda e: e["dev"] == "amp" and e["value"] == 0, 10, n)


def test_cx_broadcast_live_streams_a_wav_file_the_terminal_plays(rig: Rig, tmp_path: Path) -> None:
    # the county's key of use alert,daily made by `cx keys`, certified by a province root
    root, key, trust = tmp_path / "root.json", tmp_path / "county.json", tmp_path / "trust.json"
    cx("keys", "root", "--kid", "prov-34-root-live", "--scope", "34", "--use", "alert,daily",
       "--out", root)
    cx("keys", "issuer", "--kid", "cty-341122-live", "--root", root, "--scope", "341122",
       "--use", "alert,daily", "--out", key)
    cx("keys", "anchors", root, "--out", trust)
    rig.terminal("t1", trust=[rig.root.anchor(), *json.loads(trust.read_text())], hold_ms=200)
    wav = tmp_path / "notice.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(tone(1.5, 440.0)))
    r = cx("broadcast", "live", "--regions", "341122000000", "--input", wav, "--key", key,
           "--id", "live-cli-1", "--broker", f"{rig.broker.host}:{rig.broker.port}")
    assert "live live-cli-1:" in r.stdout and "messages sent" in r.stdout, r.stdout
    got = done(rig, "live-cli-1")
    assert (got["status"], got["reason"]) == ("done", "ended") and got["chunks"] >= 70, got
    # a key without use daily is refused before anything is sent
    alerts_only = tmp_path / "alerts.json"
    cx("keys", "issuer", "--kid", "cty-341122-alerts", "--root", root, "--scope", "341122",
       "--use", "alert", "--out", alerts_only)
    r = cx("broadcast", "live", "--regions", "341122000000", "--input", wav, "--key",
           alerts_only, "--broker", f"{rig.broker.host}:{rig.broker.port}", ok=False)
    assert r.returncode == 1 and "not for daily" in r.stderr, r.stderr


def cx(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(CX), *map(str, args)], capture_output=True, text=True, timeout=60,
                       check=False)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_a_warning_takes_the_horn_from_a_live_announcement_with_a_ramp(rig: Rig) -> None:
    t, county, _village = live_terminal(rig)
    s = live.Stream(county, [REGION], volume=100)
    sent: dict[str, Any] = {}

    def with_warning(m: list[tuple[float, bytes | str, int]]) -> Any:
        for due, payload, qos in m:
            yield due, payload, qos
            if isinstance(payload, bytes) and payload[0] == live.CHUNK_TYPE and not sent \
                    and int.from_bytes(payload[1 + live.TAG:1 + live.TAG + 4], "big") == 100:
                sent["alert"] = rig.send_alert(level=2, tone="siren")

    live.send(with_warning(list(s.messages(tone(4.0, 440.0)))), publisher(rig, s.topics))
    r = done(rig, s.id)
    assert (r["status"], r["reason"]) == ("preempted", "alert"), r
    aid = sent["alert"]["id"]
    rig.rx.wait(lambda x: x.get("alert") == aid and x["status"] == "done", 30)
    assert rig.rx.statuses(aid) == ["accepted", "playing", "done"]
    # the announcement ramps down to silence before the siren starts (no click); from 0.5 s in,
    # past the stream's own fade-in
    rate, sp = t.samples()
    first = next(i for i in range(rate // 2, len(sp)) if abs(sp[i] - sp[i - 1]) > 2500)
    assert sp[first - 1] == 0 and abs(sp[first - 2]) < 100, sp[first - 40:first + 2]


def on_4g(rig: Rig, *latency: str) -> tuple[Term, dict[str, Any]]:
    """A terminal with its IP line cut (its modem's network delayed by `modem latency`, if
    given) that has played 4 s of a county stream to its end; its `done` receipt."""
    t, county, _village = live_terminal(rig)
    n = len(t.events())
    assert t.ctl("link", "ip", "down") == "ok"
    t.wait_event(lambda e: e["dev"] == "link" and e["value"] == "4g", 90, n)
    if latency:
        assert t.ctl("modem", "latency", *latency) == "ok"
    rig.wait_answering(t.id, t.cfg["region"])
    s = live.Stream(county, [REGION], volume=100)
    live.send(list(s.messages(tone(4.0, 440.0))), publisher(rig, s.topics))
    r = done(rig, s.id, 40)
    assert (r["status"], r["reason"]) == ("done", "ended"), r
    return t, r


def test_a_live_announcement_plays_whole_over_4g_with_the_village_line_cut(rig: Rig) -> None:
    # Before the modem driver kept a +CIPRXGET: 1 that came during a read, the link went quiet
    # until its 5 s poll and the stream ended `stalled` after a few dozen chunks; before it took
    # a '>' prompt with that URC after it in one read (at.py), MQTT dropped 2 s into the stream
    # on a loaded machine and only 55 chunks played (stop 18's CI).
    t, r = on_4g(rig)
    assert r["chunks"] >= 190 and r["silent"] <= 10, r  # 200 chunks over the emulated SIM7600
    modem = json.loads(t.ctl("modem", "status"))
    assert modem["bytes_down"] > 4 * 8200, modem  # the audio did come over 4G


def test_over_4g_the_jitter_buffer_absorbs_a_slow_cell(rig: Rig) -> None:
    # A rural cell: every byte each way 100 ms late plus up to 350 ms more (in order). A batch
    # can come 350 ms later than the first did: with IP's 150 ms of patience its chunks would be
    # silence; over 4G 360 ms of silence lead the stream (live.LEAD_4G) and the whole stream plays.
    t, r = on_4g(rig, "100", "350")
    assert r["chunks"] >= 196 and r["silent"] <= 4, r
    # The horn: 360 ms of zeros, then the stream's 200 blocks of 20 ms (played or silent; a chunk
    # right behind the header may be silent, taken before the header verified), and the ramp
    # down of the last one played.
    rate, sp = t.samples()
    lead, block = rate * 360 // 1000, rate * 20 // 1000
    assert not any(sp[:lead]), next(i for i, v in enumerate(sp) if v)
    assert len(sp) - lead in (200 * block, 201 * block), len(sp) - lead


def test_fifty_terminals_on_one_live_stream_all_play_it(rig: Rig, tmp_path: Path) -> None:
    county = KeyPair.generate("root", "county-341122-live-50", ["341122"], ["daily"])
    tpl = tmp_path / "tpl.json"
    tpl.write_text(json.dumps(rig.config(hold_ms=200, trust=[rig.root.anchor(),
                                                             county.anchor()])))
    folder = tmp_path / "fleet"
    out = open(tmp_path / "fleet.out", "wb")
    p = subprocess.Popen([CX, "emu", "fleet", "--count", "50", "--dir", str(folder),
                          "--config-template", str(tpl)], stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    ids = [f"T{int(REGION) + i:012d}-01" for i in range(50)]
    try:
        for i in ids:  # each online, its SUBSCRIBEs at the broker: it answers a probe
            rig.wait_answering(i, i[1:13], 180)
        s = live.Stream(county, [REGION[:6] + "000000"], volume=100)
        live.send(list(s.messages(tone(3.0, 440.0))), publisher(rig, s.topics))
        got: dict[str, dict[str, Any]] = {}
        for i in ids:
            got[i] = rig.rx.wait(lambda r, i=i: r["_dev"] == i and r.get("live") == s.id
                                 and r["status"] in ("done", "preempted"), 60)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out.close()
    # played to its end; on these 2 shared cores a few chunks may come late (silence, counted)
    ended = [i for i, r in got.items() if r["reason"] == "ended" and r["chunks"] >= 120]
    assert len(ended) == 50, {i: (r["reason"], r["chunks"], r["silent"]) for i, r in got.items()
                              if i not in ended}
