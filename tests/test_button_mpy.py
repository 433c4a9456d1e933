"""The operator button on the MicroPython unix port (firmware/button.py, docs/web.md "Button"):
contact bounce is no press, a release under 2 s is short and from 2 s long, a consumed press
(recovery mode) ends silently, and run() polls a live level into presses."""

from __future__ import annotations

import json

from conftest import run_mpy

# Steps a Button through (ms, level) samples 10 ms apart, as run() would read them.
PRELUDE = """
import asyncio, json, time
from button import Button
got = []
def trace(levels, consume_at=None):
    # levels: a string of 0/1, one per 10 ms poll; returns [(ms, kind)]
    got.clear()
    lv = [0]
    b = Button(lambda: lv[0], lambda k: got.append(k))
    out = []
    for i, c in enumerate(levels):
        lv[0] = c == "1"
        if consume_at == i:
            b.consume()
        k = b.poll(i * 10)
        if k:
            out.append((i * 10, k))
    assert [k for _, k in out] == got
    return out, b.pressed, b.releases
"""


def trace(levels: str, consume_at: int | None = None) -> tuple[list[list], bool, int]:
    script = PRELUDE + f"print('R ' + json.dumps(trace({levels!r}, {consume_at!r})))\n"
    r = run_mpy(script)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("R "))
    out, pressed, releases = json.loads(line[2:])
    return out, pressed, releases


def test_bounce_shorter_than_debounce_is_no_press() -> None:
    # 20 ms spikes (two polls) never reach the 30 ms the level must hold
    out, pressed, releases = trace("0" * 5 + ("110" * 10) + "0" * 10)
    assert out == [] and not pressed and releases == 0


def test_short_press_with_bouncing_contacts_is_one_short_press() -> None:
    # bounce at both edges, 300 ms down in between: one short press, at the release
    levels = "0" * 3 + "1010" + "1" * 30 + "0101" + "0" * 10
    out, pressed, releases = trace(levels)
    assert [k for _, k in out] == ["short"] and releases == 1 and not pressed


def test_press_of_two_seconds_is_long_and_just_under_is_short() -> None:
    out, _, _ = trace("0" + "1" * 200 + "0" * 6)  # down 2000 ms
    assert [k for _, k in out] == ["long"]
    out, _, _ = trace("0" + "1" * 195 + "0" * 6)  # down 1950 ms
    assert [k for _, k in out] == ["short"]


def test_long_is_reported_at_release_not_while_held() -> None:
    out, pressed, _ = trace("0" + "1" * 400)
    assert out == [] and pressed


def test_consumed_press_ends_without_a_press_and_the_next_one_counts() -> None:
    levels = "1" * 600 + "0" * 10 + "1" * 20 + "0" * 10
    out, _, releases = trace(levels, consume_at=550)
    assert [k for _, k in out] == ["short"] and releases == 2


def test_run_polls_a_live_level() -> None:
    script = """
import asyncio, time
from button import Button
got = []
lv = [False]
async def main():
    b = Button(lambda: lv[0], got.append)
    t = asyncio.create_task(b.run())
    await asyncio.sleep_ms(50)
    lv[0] = True
    await asyncio.sleep_ms(150)
    lv[0] = False
    await asyncio.sleep_ms(100)
    lv[0] = True
    await asyncio.sleep_ms(2100)
    lv[0] = False
    await asyncio.sleep_ms(100)
    t.cancel()
    print("R", got)
asyncio.run(main())
"""
    r = run_mpy(script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "R ['short', 'long']" in r.stdout
