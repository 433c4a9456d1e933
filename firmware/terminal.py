# The terminal: load config, wire alert intake -> verifier -> arbiter -> player, run. Started by
# the boot selector (agent/selector.py, main.py on the flash) with `terminal.main()`.
import asyncio
import gc
import time

import board
import config
from evlog import EventLog
from micropython import const
from version import VERSION

FEED_MS = const(1000)


class Terminal:
    """The wiring: each part built once and handed the few others it works with."""

    def __init__(self, cfg, log, tls_ctx=None, lights=None):
        import alert
        import amp
        import arbiter
        import clip
        import clock
        import ed25519
        import intake
        import lights as lights_
        import link
        import local
        import player
        import region
        import seen
        from mqtt import MQTTClient

        self.cfg = cfg
        self.log = log
        self.id = cfg["id"]
        self.lights = lights or lights_.Lights(board.led)
        self.clock = clock.Clock(log)
        if not self.clock.synced:
            log("clock_unsynced")
        ed25519.precompute()  # the 1.5 KB base table needs one contiguous block: take it early
        verifier = alert.Verifier(cfg["trust"], cfg["region"], seen.Seen(log=log), self.clock)
        self.intake = intake.Intake(self.id, verifier, self.clock, log, self._shown)
        self.intake.pressure = self._pressure
        warm, hold = amp.PROFILES[cfg["profile"]]
        self.amp = amp.Amplifier(
            board.amp_pin(),
            cfg["warmup_ms"] if cfg["warmup_ms"] is not None else warm,
            cfg["hold_ms"] if cfg["hold_ms"] is not None else hold,
        )
        self.out = board.AudioOut()
        m = cfg["mqtt"]
        host, port = m["host"], m["port"]
        self.modem = None
        uart = board.modem_uart()  # None: no 4G module fitted
        if uart is not None:
            import modem

            self.modem = modem.Modem(uart[0], uart[1], apn=cfg["apn"], log=log)
        tls = None
        if tls_ctx is not None:
            import tlsstream

            # the broker's certificate must name the host the terminal dials (docs/link.md "TLS")
            tls = lambda r, w, path: tlsstream.wrap(tls_ctx, r, w, host, log, path)

        self.link = link.Link(
            board.open_tcp, self.modem, log, host, port,
            hysteresis_ms=cfg["link_hysteresis_s"] * 1000,
            probe_ms=cfg["ip_probe_ms"],
            ip_keepalive=cfg["keepalive"],
            g4_keepalive=cfg["keepalive_4g"],
            tls=tls,
        )
        self.clips = clip.ClipCache("clips", cfg["clip_cache_bytes"], self.link.open_stream, log)
        self.player = player.Player(self.amp, self.out, self.clips, log)
        self.arbiter = arbiter.Arbiter(self.player, self.intake.receipt, self.clock, log)
        self.mqtt = MQTTClient(
            self.id,
            lambda: self.link.open(host, port),
            user=m.get("user"),
            password=m.get("password"),
            keepalive=cfg["keepalive"],
            clean=False,
            queue_max=cfg["queue_max"],
            backoff_max_ms=cfg["reconnect_max_ms"],
            will=("eb/dev/%s/state" % self.id, b"offline", 1, True),
            log=log,
        )
        self.link.attach(self.mqtt)
        for p in region.prefixes(cfg["region"]):  # alerts.md §6, docs/broadcast.md §4
            self.mqtt.subscribe("eb/alert/" + p, 1)
        for p in region.prefixes(cfg["region"]):
            self.mqtt.subscribe("eb/daily/" + p, 1)
            self.mqtt.subscribe("eb/live/" + p, 0)  # chunks are QoS 0: late is lost anyway
        self._cmd_topic = "eb/dev/%s/cmd" % self.id
        self.mqtt.subscribe(self._cmd_topic, 1)
        import ota

        from agent import Agent

        self.ota = ota.Updater(cfg, log, clock=self.clock, link=self.link, mqtt=self.mqtt,
                               arbiter=self.arbiter, send_event=self.intake.send_event,
                               pending=self._alert_coming)
        self.agent = Agent(cfg, log, mqtt=self.mqtt, link=self.link, clock=self.clock,
                           amp=self.amp, arbiter=self.arbiter, modem=self.modem,
                           counts=self.intake.counts, last_alert=lambda: self.intake.last_alert,
                           send_event=self.intake.send_event, applied=self.apply, ota=self.ota,
                           lights=self.lights)
        self.local = local.Local(cfg, self.arbiter, self.player, self.clock, log, self.lights,
                                 lambda: self.link.path if self.mqtt.connected else "none",
                                 self.agent.faults, self.intake.send_event)
        import daily
        import programme
        from ring import Ring

        self.schedules = daily.Schedules(cfg["trust"], cfg["region"], self.clock, log)
        self.programmes = programme.Programmes(self.schedules, self.arbiter, self.clips,
                                               self.clock, log, self.intake.send_event)
        import live

        self.live = live.Live(cfg["trust"], cfg["region"], verifier.seen, self.clock,
                              self.arbiter, log, self.intake.send_event,
                              lambda: self.link.path)
        self._daily_in = Ring(4)  # schedules waiting to be verified (retained: one per tier)
        self._daily_ev = asyncio.Event()
        from button import Button

        self.button = Button(board.button(), self.local.press)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_oversize = self._on_oversize

    def _on_message(self, topic, payload, retain):
        if topic == self._cmd_topic:
            self.agent.on_cmd(payload)
        elif topic.startswith("eb/alert/"):
            self.intake.put(payload)
        elif topic.startswith("eb/live/"):
            try:
                self.live.take(payload)  # a chunk is stored, a header or batch verified now
            except MemoryError:
                pass  # a lost chunk is 20 ms of silence
            except Exception as e:
                self.log("live_error", error=repr(e))
        elif topic.startswith("eb/daily/"):
            if self._daily_in.put(payload):
                self.log("daily_full")
            self._daily_ev.set()

    def _alert_coming(self):
        # An envelope not yet verified, or an inbound packet half read (it may be an alert):
        # the OTA download's next step waits for either (agent/ota.py, alerts first).
        return self.intake.pending() or self.mqtt.receiving()

    def _on_oversize(self, topic, length):
        if topic is None or topic.startswith("eb/alert/"):
            self.intake.oversize(length)

    def _shown(self, v, status):
        # The lights follow the speaker: alert while an alert or a test plays.
        if status == "playing":
            self.lights.set("alert", True)
        elif status in ("done", "cancelled", "preempted") and self.arbiter.current in (None, v):
            self.lights.set("alert", False)

    def apply(self, key):
        """A setting the agent changed in cfg (a fleet command): take it up now."""
        c = self.cfg
        if key == "profile":
            import amp

            warm, hold = amp.PROFILES[c["profile"]]
            self.amp.warmup_ms = c["warmup_ms"] if c["warmup_ms"] is not None else warm
            self.amp.hold_ms = c["hold_ms"] if c["hold_ms"] is not None else hold
        else:  # link timings and keep-alives (hb_s and volume are read where they are used)
            lk = self.link
            lk.hysteresis_ms = c["link_hysteresis_s"] * 1000
            lk.probe_ms = c["ip_probe_ms"]
            lk.set_keepalives(c["keepalive"], c["keepalive_4g"])

    async def run(self, held_ms=None):
        """held_ms: ticks at boot when the button was down then (recovery mode, docs/web.md)."""
        import upkeep

        i, log = self.intake, self.log
        tasks = [
            asyncio.create_task(self.mqtt.run()),
            asyncio.create_task(i.verify_task(self.arbiter)),
            asyncio.create_task(i.send_task(self.mqtt)),
            asyncio.create_task(upkeep.link_task(self.id, self.mqtt, self.link, self.clock, log,
                                                 self.lights)),
            asyncio.create_task(self.link.run()),
            asyncio.create_task(upkeep.clock_task(self.modem, self.clock, log)),
            asyncio.create_task(self.agent.heartbeat_task()),
            asyncio.create_task(self.agent.health_task()),
            asyncio.create_task(upkeep.idle_task(i, self.arbiter, self.mqtt, self.link,
                                                 self.modem, log)),
            asyncio.create_task(board.bus_task()),
            asyncio.create_task(self.button.run()),
            asyncio.create_task(self.clips.audit()),
            asyncio.create_task(self.ota.boot_task()),
        ]
        if self.modem is not None:
            tasks.append(asyncio.create_task(self.modem.run()))
        if held_ms is not None:
            tasks.append(asyncio.create_task(self.local.recovery_task(self.button, held_ms)))
        tasks.append(asyncio.create_task(self._daily()))
        tasks.append(asyncio.create_task(self.live.task(self.intake.pending)))
        tasks.append(asyncio.create_task(self.programmes.run()))
        tasks.append(asyncio.create_task(self._web()))  # the last: after alert intake is up
        await asyncio.gather(*tasks)

    async def _daily(self):
        # Schedules (docs/broadcast.md §3): those on flash verified again first, then each one
        # the broker delivers, one at a time, never while an alert waits to be verified.
        for name in self.schedules.stored():  # one signature each, alerts first between them
            while self.intake.pending():
                await asyncio.sleep_ms(20)
            await asyncio.sleep_ms(0)
            self.schedules.load_one(name)
        while True:
            if not len(self._daily_in):
                self._daily_ev.clear()
                await self._daily_ev.wait()
                continue
            while self.intake.pending():
                await asyncio.sleep_ms(20)
            env = self._daily_in.get()
            try:
                v = self.schedules.check(env)
            except MemoryError:
                self.log("daily_no_memory", bytes=len(env))
                continue
            del env
            self.log("schedule_" + v.status, schedule=v.id, kid=v.kid, reason=v.reason)
            self.intake.send_event({"schedule": v.id, "kid": v.kid, "area": v.area,
                                    "version": v.version, "status": v.status,
                                    "reason": v.reason, "t": self.clock.now()})
            if v.sched is not None:
                self.programmes.accepted(v.sched)
            await asyncio.sleep_ms(0)

    def _pressure(self):
        # a verification ran out of heap: the page lets go of its connections (web.Web.shed)
        w = getattr(self, "web", None)
        if w is not None:
            w.shed()

    async def _web(self):
        # The local page (docs/web.md): its own task, never on an alert's path; a page that
        # cannot start (no port, no heap) is logged and the terminal goes on sounding alerts.
        await asyncio.sleep_ms(0)
        try:
            import web

            await web.run(self.cfg, self.log, self, self.local)
        except Exception as e:
            self.log("web_error", where="start", error=repr(e))


async def _feed(wdt):
    # The watchdog is fed only while the event loop runs: a stuck loop reboots the board.
    while True:
        wdt.feed()
        await asyncio.sleep_ms(FEED_MS)


async def _fault_mode(wdt):
    # No trustworthy config: stay silent, show the fault, keep the board alive for a technician.
    import lights

    lights.Lights(board.led).fault("config", True)
    await _feed(wdt)


def _tls_context(m, log):
    # The broker's CA, read once at boot. None (logged) when it is missing or unreadable: the
    # terminal then never falls back to plain MQTT, it waits in fault mode for a technician.
    import tlsstream
    from fsutil import read_bytes

    ca = read_bytes(m["ca"])
    if not ca:
        log("fault", reason="tls_ca_missing", file=m["ca"])
        return None
    try:
        return tlsstream.context(ca)
    except tlsstream.TLSError as e:
        log("fault", reason="tls_ca_invalid", file=m["ca"], detail=e.detail)
        return None


async def _main():
    log = EventLog()
    held_ms = time.ticks_ms() if board.button()() else None  # held through boot: recovery?
    board.event("boot", {"cause": board.boot_cause(), "version": VERSION})
    log("boot", cause=board.boot_cause(), version=VERSION, button=held_ms is not None)
    cfg, source = config.load(log)
    wdt = board.WDT(cfg["wdt_ms"] if cfg else config.DEFAULTS["wdt_ms"])
    if cfg is None:
        log("fault", reason="no_valid_config")
        await _fault_mode(wdt)
        return
    import lights

    lit = lights.Lights(board.led)
    lit.fault("config", source == "backup")
    tls_ctx = None
    if cfg["mqtt"].get("tls"):
        tls_ctx = _tls_context(cfg["mqtt"], log)
        if tls_ctx is None:
            await _fault_mode(wdt)
            return
    gc.collect()
    term = Terminal(cfg, log, tls_ctx, lit)
    gc.collect()
    import fe25519

    # fast: the unrolled native field, or the small fallback when IRAM was short (docs/verify.md)
    log("ready", id=cfg["id"], region=cfg["region"], alloc=gc.mem_alloc(), free=gc.mem_free(),
        field="fast" if fe25519.FAST else "small")
    asyncio.create_task(_feed(wdt))
    await term.run(held_ms)


def main():
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass

