# The village operator's own actions, one API for the button and the local page (docs/web.md):
# test chime, the local announcement, the local volume, the state in beeps, recovery mode.
"""Local(cfg, arbiter, player, clock, log, lights, path, faults, send_event)

Every action returns None when done, else a reason code (a string) for the page to show:
- chime(): the test chime at TEST_VOLUME. "busy" while anything plays or waits.
- play(): ANNOUNCE (local/announce.wav) at the local volume. "busy"; "no_announcement"; a
  check_wav() reason when the file on flash is not playable.
- stop(): stops the local item playing (or about to). "alert_playing" while an alert or a test
  plays, "busy" during the fleet's self-test, "nothing_playing" when nothing plays.
- beeps(): the state in beeps (beep_plan()) at TEST_VOLUME. "busy".
- set_volume(v): the local volume 0..100 (config key `volume`, kept on flash), for local items
  only; applied at once (a `volume` event) when nothing or a local item plays, else at the next
  local item. "bad_volume"; "flash_failed".
- store(part): check_wav(part), then part becomes ANNOUNCE. The part file is removed when
  refused. "busy" while the announcement plays.
- check_wav(path): None, or "missing", "bad_format" (not RIFF WAV PCM 16-bit mono 16 kHz),
  "empty", "truncated" (the data chunk claims more than the file holds), "too_large" (over
  MAX_WAV bytes of samples).
- press(kind): the button's handler ("short" | "long", firmware/button.py).
Attributes and reads: `volume` (the local volume), `recovery` (True in recovery mode),
state() -> {"playing": None or {"kind": "alert" | "test" | "selftest" | "local", "id", "source"
("tone:siren", "clip:<sha256>", "file:local/announce.wav", "tone:beeps", None while warming
up), "what": "chime" | "announce" | "beeps" for a local item}, "waiting": n, "volume": v,
"recovery": bool, "recovery_left_s": s or None, "announcement": bytes or None, "light": state}.
Local items rank below everything (arbiter kind "local"), never preempt, never wait, are told to
their own report (no receipt goes to the fleet) and every action is in the event log."""
import asyncio
import os
import time

import board
import config
from clip import wav_header
from fsutil import remove, size
from micropython import const

ANNOUNCE = "local/announce.wav"
PART = ANNOUNCE + ".part"  # where the page writes an upload before store()
MAX_WAV = const(1048576)  # bytes of samples in the announcement: about 32 s (docs/web.md limits)
TEST_VOLUME = const(30)  # the test chime and the beeps: low, the operator stands by the horn
RECOVERY_HOLD_MS = const(5000)  # pressed at boot and still pressed this long after: recovery
RECOVERY_MS = const(900000)  # recovery mode lasts 15 min, then a normal restart
_RATE = const(16000)  # board.RATE
_HIGH = const(1200)  # Hz: the path beeps, "no fault"
_LOW = const(500)  # Hz: one per fault
_FAULT_BEEPS = (("line_open", "line_short"), ("mains_lost", "battery_low"), ("clock_unsynced",))


class _Item:
    # an arbiter item (like agent.py's self-test): below every alert and test, told to `report`
    def __init__(self, what, audio, volume, now, report):
        self.id = "local-" + what
        self.kid = None
        self.scope = ["00"]
        self.what = what
        self.report = report
        self.payload = {"id": self.id, "kind": "local", "level": 4, "issued": now,
                        "expires": now + 3600, "audio": audio, "volume": volume, "repeat": 1}


class Local:
    def __init__(self, cfg, arbiter, player, clock, log, lights, path, faults, send_event):
        self.cfg = cfg
        self.arbiter = arbiter
        self.player = player
        self.clock = clock
        self.log = log
        self.lights = lights
        self._path = path  # () -> "ip", "4g" or "none"
        self._faults = faults  # the agent's fault name -> active
        self._send_event = send_event
        self.recovery = False
        self._recovery_end = 0
        self._item = None  # the local item submitted, until its report hears the end
        try:
            os.mkdir("local")
        except OSError:
            pass

    @property
    def volume(self):
        return self.cfg["volume"]

    # --- actions -------------------------------------------------------------------------

    def chime(self):
        return self._submit("chime", {"tone": "chime"}, TEST_VOLUME)

    def play(self):
        why = self.check_wav(ANNOUNCE)
        if why is not None:
            self.log("local", action="announce", refused=why)
            return "no_announcement" if why == "missing" else why
        return self._submit("announce", {"file": ANNOUNCE}, self.volume)

    def beeps(self):
        return self._submit("beeps", {"beeps": self.beep_plan()}, TEST_VOLUME)

    def stop(self):
        it, cur = self._item, self.arbiter.current
        if it is not None and (cur is it or cur is None):
            self.log("local", action="stop", what=it.what)
            self.arbiter.stop(it)
            return None
        why = "nothing_playing"
        if cur is not None:
            why = "busy" if cur.payload["kind"] == "selftest" else "alert_playing"
        self.log("local", action="stop", refused=why)
        return why

    def set_volume(self, v):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 100:
            return "bad_volume"
        old = self.cfg["volume"]
        self.cfg["volume"] = v
        try:
            config.save(self.cfg)
        except Exception as e:
            self.cfg["volume"] = old
            self.log("local", action="volume", refused="flash_failed", error=repr(e))
            return "flash_failed"
        self.log("local", action="volume", volume=v)
        it, cur = self._item, self.arbiter.current
        mine = it is not None and it.what == "announce"
        if it is not None and mine:
            it.payload["volume"] = v  # still warming up: the player reads it at the first sample
        if cur is None or (cur is it and mine):
            self.player.set_volume(v)
        return None

    def store(self, part=PART):
        why = self.check_wav(part)
        if why is None and self._item is not None and self._item.what == "announce":
            why = "busy"
        if why is not None:
            remove(part)
            self.log("local", action="store", refused=why)
            return why
        os.rename(part, ANNOUNCE)
        self.log("local", action="store", bytes=size(ANNOUNCE))
        return None

    def seconds(self, path):
        """The whole seconds of sound in the WAV at path (from its data chunk, whatever the
        header's length), or None when it is missing or not playable."""
        if self.check_wav(path) is not None:
            return None
        f = open(path, "rb")
        try:
            return wav_header(f, bytearray(64), _RATE) // (2 * _RATE)
        finally:
            f.close()

    def check_wav(self, path):
        n_file = size(path)
        if n_file < 0:
            return "missing"
        try:
            f = open(path, "rb")
        except OSError:
            return "missing"
        try:
            n = wav_header(f, bytearray(64), _RATE)
            at = f.tell()
        except Exception:
            return "bad_format"
        finally:
            f.close()
        if n == 0:
            return "empty"
        if n > MAX_WAV:
            return "too_large"
        if at + n > n_file:
            return "truncated"
        return None

    def press(self, kind):
        cur, it = self.arbiter.current, self._item
        if cur is not None and cur is not it:
            self.log("button", kind=kind, did="nothing", playing=cur.payload["kind"])
            return  # docs/web.md "Button": a press during an alert or a test changes nothing
        if kind == "short":
            did = "stop" if it is not None else "chime"
            why = self.stop() if it is not None else self.chime()
        else:
            did = "beeps"
            why = self.beeps()
        self.log("button", kind=kind, did=did, refused=why)

    # --- reads ---------------------------------------------------------------------------

    def beep_plan(self):
        """The state in beeps as (Hz, ms) pairs, 0 Hz a pause (docs/web.md "Button"): 1, 2 or 3
        high beeps for village line, 4G, no link; a pause; a low beep per fault (speaker line,
        supply, clock), or one long high beep when there is none."""
        n = {"ip": 1, "4g": 2}.get(self._path(), 3)
        plan = []
        for _ in range(n):
            plan.append((_HIGH, 150))
            plan.append((0, 250))
        plan.append((0, 750))
        f = self._faults
        bad = 0
        for names in _FAULT_BEEPS:
            for name in names:
                if f.get(name):
                    bad += 1
                    plan.append((_LOW, 400))
                    plan.append((0, 400))
                    break
        if not bad:
            plan.append((_HIGH, 1200))
        return plan

    def state(self):
        cur = self.arbiter.current
        playing = None
        if cur is not None:
            playing = {"kind": cur.payload["kind"], "id": cur.id, "source": self.player.source}
            if isinstance(cur, _Item):
                playing["what"] = cur.what
        left = None
        if self.recovery:
            left = max(0, time.ticks_diff(self._recovery_end, time.ticks_ms()) // 1000)
        ann = size(ANNOUNCE)
        return {"playing": playing, "waiting": len(self.arbiter.waiting), "volume": self.volume,
                "recovery": self.recovery, "recovery_left_s": left,
                "announcement": ann if ann >= 0 else None, "light": self.lights.state}

    # --- recovery mode (docs/web.md "Recovery mode") -------------------------------------

    async def recovery_task(self, button, since_ms):
        """Recovery mode if the button, down at boot (ticks since_ms), is still down 5 s later
        and was never released meanwhile. Nothing is erased; alert intake goes on; after
        RECOVERY_MS the terminal restarts normally."""
        left = RECOVERY_HOLD_MS - time.ticks_diff(time.ticks_ms(), since_ms)
        await asyncio.sleep_ms(max(left, 100))  # at least a debounce after the button's start
        if not button.pressed or button.releases:
            self.log("recovery", entered=False)
            return
        button.consume()  # its release is no long press
        self.recovery = True
        self._recovery_end = time.ticks_add(time.ticks_ms(), RECOVERY_MS)
        self.lights.set("recovery", True)
        self.log("recovery", entered=True, minutes=RECOVERY_MS // 60000)
        self._recovery_ap()
        self._send_event({"fault": "recovery", "active": True, "value": None,
                          "t": self.clock.now()})
        await asyncio.sleep_ms(RECOVERY_MS)
        self.log("recovery", ended=True)
        self._send_event({"fault": "recovery", "active": False, "value": None,
                          "t": self.clock.now()})
        await asyncio.sleep_ms(1000)  # let the event leave
        board.reset()

    # --- inside --------------------------------------------------------------------------

    def _recovery_ap(self):
        # the access point of docs/web.md "Recovery mode": cunxiang-<id> (an SSID holds at most
        # 32 bytes), its key web.ap_key from provisioning; without a key, the LAN only
        key = (self.cfg.get("web") or {}).get("ap_key")
        ssid = ("cunxiang-" + self.cfg["id"])[:32]
        if key is None:
            self.log("recovery_ap", ssid=None, why="no ap_key in the config")
            return
        try:
            addr = board.recovery_ap(ssid, key)
            self.log("recovery_ap", ssid=ssid, address=addr)
        except Exception as e:  # no radio, a driver error: recovery goes on on the LAN
            self.log("recovery_ap", ssid=ssid, error=repr(e))

    def _submit(self, what, audio, volume):
        arb = self.arbiter
        if arb.current is not None or arb.waiting or self._item is not None:
            self.log("local", action=what, refused="busy")
            return "busy"  # docs/web.md "Priority": a local item never waits, never preempts
        it = _Item(what, audio, volume, self.clock.now(), self._report)
        self._item = it
        self.log("local", action=what, volume=volume)
        arb.submit(it)
        return None

    def _report(self, item, status, reason):
        if status == "playing":
            self.lights.set("local", True)
        elif status in ("done", "cancelled", "preempted"):
            if self._item is item:
                self._item = None
            self.lights.set("local", False)
            self.log("local_end", what=item.what, status=status, reason=reason)
