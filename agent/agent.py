# Fleet agent: heartbeats, health (speaker line, supply), fault events, commands (fleet-protocol.md).
import asyncio
import gc
import json
import time

import board
import config
import fsutil
from backoff import jitter
from micropython import const
from version import VERSION

HEALTH_MS = const(1000)  # how often the line (while playing) and the supply are read
SELFTEST_VOLUME = const(10)
SETTABLE = {
    # key: (type, low, high) accepted by the `set` command
    "hb_s": (int, 5, 86400),
    "hb_4g_s": (int, 30, 86400),
    "keepalive": (int, 10, 3600),
    "keepalive_4g": (int, 30, 3600),
    "link_hysteresis_s": (int, 1, 86400),
    "ip_probe_ms": (int, 200, 60000),
    "volume": (int, 0, 100),
}


class _Local:
    """A self-test for the arbiter: below every alert and test; its statuses go to `report`
    (the agent), never out as receipts."""

    def __init__(self, now, report):
        self.id = "selftest"
        self.kid = None
        self.scope = ["00"]
        self.report = report
        self.payload = {"id": "selftest", "kind": "selftest", "level": 4, "issued": now,
                        "expires": now + 60, "audio": {"tone": "chime"},
                        "volume": SELFTEST_VOLUME, "repeat": 1}


class Agent:
    """Handed what it reads and drives, not the terminal: the MQTT client (publish, up), the link
    (path), the clock, the amplifier (is_on), the arbiter (current, waiting, submit), the 4G
    modem or None, the terminal's `counts` (status -> receipts) and `last_alert()`, `send_event`
    (the receipts queue) and `applied(key)` (a setting changed: the terminal takes it up)."""

    def __init__(self, cfg, log, *, mqtt, link, clock, amp, arbiter, modem, counts, last_alert,
                 send_event, applied, ota=None, lights=None):
        self.cfg = cfg
        self.log = log
        self.mqtt = mqtt
        self.link = link
        self.clock = clock
        self.amp = amp
        self.arbiter = arbiter
        self.modem = modem
        self.counts = counts
        self.last_alert = last_alert
        self.send_event = send_event
        self.applied = applied
        self.ota = ota  # agent/ota.py Updater: the `ota` command (ota.md §2)
        self.lights = lights  # firmware/lights.py: a fault lights the red LED
        self.id = cfg["id"]
        self.t0 = time.ticks_ms()
        self.line = "unknown"
        self.line_ma = None
        self.supply = "mains"
        self.supply_mv = None
        self.faults = {}  # fault -> active
        self._hb_now = asyncio.Event()
        self._selftest = None  # an asyncio.Event while a self-test runs
        self._damage_sent = 0  # fsutil.records already sent as storage fault events

    # --- heartbeat -----------------------------------------------------------------------

    def hb_interval(self):
        return self.cfg["hb_4g_s"] if self.link.path == "4g" else self.cfg["hb_s"]

    def heartbeat(self):
        m = self.modem
        return {
            "id": self.id, "t": self.clock.now(), "v": VERSION,
            "up": time.ticks_diff(time.ticks_ms(), self.t0) // 1000,
            "reset": board.boot_cause(), "link": self.link.path,
            "rssi": m.rssi if m else None,
            "g4": [m.bytes_in, m.bytes_out] if m else [0, 0],
            "heap": gc.mem_free(), "clock": "synced" if self.clock.synced else "unsynced",
            "amp": 1 if self.amp.is_on else 0, "line": self.line, "line_ma": self.line_ma,
            "supply": self.supply, "supply_mv": self.supply_mv, "counts": self.counts,
            "last_alert": self.last_alert(), "hb_s": self.hb_interval(),
            "files": fsutil.damaged,
            "ota": self.ota.under_way if self.ota is not None else None,
        }

    async def heartbeat_task(self):
        topic = "eb/dev/%s/hb" % self.id
        link = self.link
        while True:
            await self.mqtt.up.wait()
            await self.mqtt.publish(topic, json.dumps(self.heartbeat()).encode(), 0)
            sent = time.ticks_ms()
            path = link.path
            ms = self.hb_interval() * 1000
            due = jitter(ms - ms // 10, ms // 5)  # ±10 %: 2,200 heartbeats do not come in step
            self._hb_now.clear()
            while not self._hb_now.is_set():
                await asyncio.sleep_ms(500)
                if link.path != path:
                    # Tell the fleet at once (which terminals are on 4G now is an admin's first
                    # question); the next interval is the new path's (metered 4G: long).
                    break
                if time.ticks_diff(time.ticks_ms(), sent) >= due:
                    break

    # --- health --------------------------------------------------------------------------

    def _fault(self, name, active, value=None):
        if self.faults.get(name, False) == active:
            return
        self.faults[name] = active
        if self.lights is not None:
            self.lights.fault(name, active)
        self.log("fault_" + ("on" if active else "off"), fault=name, value=value)
        ev = {"fault": name, "active": active, "value": value, "t": self.clock.now()}
        self.send_event(ev)

    def _classify_line(self, ma):
        if ma < self.cfg["line_open_ma"]:
            return "open"
        if ma > self.cfg["line_short_ma"]:
            return "short"
        return "ok"

    def measure(self):
        """Read the supply always, the speaker line while audio drives it."""
        if self.amp.is_on and self.arbiter.current is not None:
            ma = board.adc("line_ma")
            self.line_ma = ma
            line = self._classify_line(ma)
            if line != self.line:
                self.line = line
                self._fault("line_open", line == "open", ma)
                self._fault("line_short", line == "short", ma)
                self._hb_now.set()
        mv = board.adc("supply_mv")
        self.supply_mv = mv
        supply = "mains" if mv >= self.cfg["mains_mv"] else (
            "battery" if mv >= self.cfg["battery_low_mv"] else "low")
        if supply != self.supply:
            self.supply = supply
            self._fault("mains_lost", supply != "mains", mv)
            self._fault("battery_low", supply == "low", mv)
            self._hb_now.set()
        self._fault("clock_unsynced", not self.clock.synced)
        self._report_damage()

    def _report_damage(self):
        # A damaged file found on flash (fsutil.note_damage) is told once, as a `storage` fault
        # event the fleet turns into an alarm for the admin to acknowledge (fleet-protocol.md).
        recs = fsutil.records
        while self._damage_sent < len(recs):
            name, reason, n = recs[self._damage_sent]
            self._damage_sent += 1
            self.send_event({"fault": "storage", "active": True, "value": n, "file": name,
                             "reason": reason, "t": self.clock.now()})
            self._hb_now.set()

    async def health_task(self):
        while True:
            try:
                self.measure()
            except Exception as e:  # a sensor fault must not stop the agent
                self.log("agent_error", where="measure", error=repr(e))
            await asyncio.sleep_ms(HEALTH_MS)

    # --- commands ------------------------------------------------------------------------

    def on_cmd(self, payload):
        asyncio.create_task(self._cmd(payload))

    async def _cmd(self, payload):
        cid = None
        try:
            try:
                c = json.loads(payload)
            except Exception:
                raise CmdError("bad_json")
            if not isinstance(c, dict):
                raise CmdError("bad_json")
            cid = c.get("cid")
            if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
                cid = None
                raise CmdError("no_cid")
            args = c.get("args") or {}
            if not isinstance(args, dict):
                raise CmdError("bad_args")
            op = c.get("op")
            handler = _OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise CmdError("unknown_op")
            result = await handler(self, args)
            self.log("cmd", cid=cid, op=op, ok=True)
            await self._ack(cid, True, None, result)
        except CmdError as e:
            self.log("cmd", cid=cid, ok=False, error=e.reason)
            await self._ack(cid, False, e.reason, None)
        except Exception as e:  # never a crash from a command
            self.log("agent_error", where="cmd", error=repr(e))
            await self._ack(cid, False, "internal", None)

    async def _ack(self, cid, ok, error, result):
        a = {"cid": cid, "ok": ok, "error": error, "result": result, "t": self.clock.now()}
        await self.mqtt.publish("eb/dev/%s/ack" % self.id, json.dumps(a).encode(), 1)

    def _save(self, key, value):
        self.cfg[key] = value
        config.save(self.cfg)

    async def op_status(self, args):
        return self.heartbeat()

    async def op_volume(self, args):
        v = args.get("volume")
        _check_int(v, 0, 100)
        self._save("volume", v)
        return {"volume": v}

    async def op_profile(self, args):
        p = args.get("profile")
        if p not in ("horn", "column"):
            raise CmdError("bad_args")
        self._save("profile", p)
        self.applied("profile")
        return {"profile": p}

    async def op_set(self, args):
        key, value = args.get("key"), args.get("value")
        spec = SETTABLE.get(key) if isinstance(key, str) else None
        if spec is None:
            raise CmdError("bad_args")
        _check_int(value, spec[1], spec[2])
        self._save(key, value)
        self.applied(key)
        self._hb_now.set()
        return {key: value}

    async def op_ota(self, args):
        if self.ota is None:
            raise CmdError("unknown_op")
        reason = self.ota.start(args)
        if reason is not None:
            raise CmdError(reason)  # the §3 reason, or busy / bad_args
        return {"started": True}

    async def op_reboot(self, args):
        asyncio.create_task(_reboot_soon())
        return {"rebooting": True}

    async def op_selftest(self, args):
        arb = self.arbiter
        if arb.current is not None or arb.waiting or self._selftest is not None:
            raise CmdError("busy")
        done = asyncio.Event()
        outcome = []
        self._selftest = done

        def report(item, status, reason):
            if status in ("done", "cancelled", "preempted"):
                outcome.append(status)
                done.set()

        try:
            self.line = "unknown"
            arb.submit(_Local(self.clock.now(), report))
            await asyncio.wait_for_ms(done.wait(), 20000)
        except asyncio.TimeoutError:
            raise CmdError("timeout")
        finally:
            self._selftest = None
        if outcome[0] != "done":
            raise CmdError("busy")  # an alert took over the speaker
        return {"line": self.line, "line_ma": self.line_ma}


class CmdError(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _check_int(v, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise CmdError("bad_args")


async def _reboot_soon():
    await asyncio.sleep_ms(500)  # let the acknowledgement leave
    board.reset()


_OPS = {
    "status": Agent.op_status,
    "volume": Agent.op_volume,
    "profile": Agent.op_profile,
    "set": Agent.op_set,
    "reboot": Agent.op_reboot,
    "ota": Agent.op_ota,
    "selftest": Agent.op_selftest,
}
