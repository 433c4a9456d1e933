# Terminal entry point: load config, wire alert intake -> verifier -> arbiter -> player, run.
import asyncio
import gc
import json

import board
import config
from evlog import EventLog
from micropython import const
from ring import Ring
from version import VERSION

INTAKE_MAX = const(16)  # envelopes waiting for verification; beyond, the oldest is dropped
RECEIPTS_MAX = const(64)  # receipts waiting for the MQTT client; beyond, the oldest is dropped
FEED_MS = const(1000)
IDLE_CHECK_MS = const(1000)


class Terminal:
    def __init__(self, cfg, log, tls_ctx=None):
        import alert
        import amp
        import arbiter
        import clip
        import clock
        import ed25519
        import link
        import player
        import region
        import seen
        from mqtt import MQTTClient

        self.cfg = cfg
        self.log = log
        self.id = cfg["id"]
        self.clock = clock.Clock(log)
        if not self.clock.synced:
            log("clock_unsynced")
        self.stats = {}  # "status" or "status:reason" -> count (heartbeat reports it)
        self.last_alert = None
        self.activity = 0  # envelopes taken in since boot
        ed25519.precompute()  # the 6 KB base table needs one contiguous block: take it early
        self.verifier = alert.Verifier(cfg["trust"], cfg["region"], seen.Seen(log=log), self.clock)
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
        self.arbiter = arbiter.Arbiter(self.player, self.receipt, self.clock, log)
        self._intake = Ring(INTAKE_MAX)
        self._intake_ev = asyncio.Event()
        self._receipts = Ring(RECEIPTS_MAX)  # receipts and events (send_event), alerts.md §6
        self._receipts_ev = asyncio.Event()
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
        for p in region.prefixes(cfg["region"]):  # alerts.md §6
            self.mqtt.subscribe("eb/alert/" + p, 1)
        self._cmd_topic = "eb/dev/%s/cmd" % self.id
        self.mqtt.subscribe(self._cmd_topic, 1)
        from agent import Agent

        self.agent = Agent(cfg, log, mqtt=self.mqtt, link=self.link, clock=self.clock,
                           amp=self.amp, arbiter=self.arbiter, modem=self.modem,
                           counts=self.stats, last_alert=lambda: self.last_alert,
                           send_event=self.send_event, applied=self.apply)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_oversize = self._on_oversize
        self._Verdict = alert.Verdict

    # --- intake ---------------------------------------------------------------------------

    def _on_message(self, topic, payload, retain):
        if topic == self._cmd_topic:
            self.agent.on_cmd(payload)
        elif topic.startswith("eb/alert/"):
            if self._intake.put(payload):
                self.log("intake_full")
            self._intake_ev.set()

    def _on_oversize(self, topic, length):
        # alerts.md §4 rule 1, for envelopes too big to even hold (the MQTT client dropped them)
        if topic is None or topic.startswith("eb/alert/"):
            self.activity += 1
            v = self._Verdict("rejected", "too_large")
            self.receipt(v, v.status, v.reason)
            self.log("alert_rejected", alert=None, kid=None, reason="too_large", bytes=length)

    async def _intake_task(self):
        while True:
            if not len(self._intake):
                self._intake_ev.clear()
                await self._intake_ev.wait()
                continue
            env = self._intake.get()
            self.activity += 1
            v = self.verifier.check(env)
            del env
            self.receipt(v, v.status, v.reason)
            if v.status == "accepted":
                self.last_alert = v.id
                self.clock.persist()
                if v.payload["kind"] == "cancel":
                    self.arbiter.cancel(v)
                else:
                    self.arbiter.submit(v)
            else:
                self.log("alert_" + v.status, alert=v.id, kid=v.kid, reason=v.reason)
            gc.collect()
            await asyncio.sleep_ms(0)

    # --- receipts (alerts.md §6) ------------------------------------------------------------

    def receipt(self, v, status, reason):
        key = status if reason is None else status + ":" + reason
        self.stats[key] = self.stats.get(key, 0) + 1
        r = {"alert": v.id, "kid": v.kid, "status": status, "reason": reason, "t": self.clock.now()}
        self.log("receipt", alert=v.id, status=status, reason=reason)
        self._receipts.put(json.dumps(r))
        self._receipts_ev.set()
        if status == "playing":
            board.led("alert")
        elif status in ("done", "cancelled", "preempted") and self.arbiter.current in (None, v):
            board.led(self.link.path if self.mqtt.connected else "offline")

    def send_event(self, ev):
        """A JSON event (fault, …) on the same bounded queue as the receipts."""
        self._receipts.put(json.dumps(ev))
        self._receipts_ev.set()

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

    async def _receipt_task(self):
        topic = "eb/dev/%s/event" % self.id
        while True:
            if not len(self._receipts):
                self._receipts_ev.clear()
                await self._receipts_ev.wait()
                continue
            # the MQTT client queues QoS 1 messages itself while offline (bounded)
            await self.mqtt.publish(topic, self._receipts.get().encode(), 1)

    async def _link_task(self):
        while True:
            await self.mqtt.up.wait()
            if not self.clock.synced and board.clock_synced():
                self.clock.set_synced()  # NTP answered once the link came up
                self.log("clock_synced")
            path = self.link.path
            board.event("link", path)
            board.led(path)
            self.log("link_up", path=path)
            await self.mqtt.publish("eb/dev/%s/state" % self.id, b"online", 1, True)
            await self.mqtt.down.wait()
            board.event("link", "none")
            board.led("offline")
            self.log("link_down")

    async def _clock_task(self):
        # Time from the 4G network when NTP over IP never answered (alerts.md §4, clock).
        m = self.modem
        while m is not None and not self.clock.synced:
            await m.ready.wait()
            t = await m.network_time()
            if t:
                self.clock.set_network(t)
                self.log("clock_synced", source="4g")
                return
            await asyncio.sleep_ms(60000)

    async def _idle_task(self):
        # After a burst of activity, at the first quiet moment: collect, and record heap use (the
        # memory benchmark and the leak test read these lines). Also notes analogue input changes.
        seen_activity = -1
        adc_last = None
        while True:
            await asyncio.sleep_ms(IDLE_CHECK_MS)
            if self.arbiter.current is None and not len(self._intake) and not len(self._receipts) \
                    and self.activity != seen_activity:
                seen_activity = self.activity
                gc.collect()
                self.log("mem", alloc=gc.mem_alloc(), free=gc.mem_free(),
                         seen=len(self.verifier.seen), envelopes=self.activity)
                m = self.modem
                self.log("counts", receipts=self.stats,
                         dropped=self._intake.dropped + self._receipts.dropped,
                         queued_dropped=self.mqtt.dropped, link=self.link.path,
                         switches=self.link.switches,
                         g4_in=m.bytes_in if m else 0, g4_out=m.bytes_out if m else 0)
                self.clock.persist()
                self.verifier.seen.flush()
            adc_now = (board.adc("line_ma"), board.adc("supply_mv"))
            if adc_now != adc_last:
                adc_last = adc_now
                self.log("analog", line_ma=adc_now[0], supply_mv=adc_now[1])

    async def run(self):
        tasks = [
            asyncio.create_task(self.mqtt.run()),
            asyncio.create_task(self._intake_task()),
            asyncio.create_task(self._receipt_task()),
            asyncio.create_task(self._link_task()),
            asyncio.create_task(self.link.run()),
            asyncio.create_task(self._clock_task()),
            asyncio.create_task(self.agent.heartbeat_task()),
            asyncio.create_task(self.agent.health_task()),
            asyncio.create_task(self._idle_task()),
            asyncio.create_task(board.bus_task(self._on_press)),
            asyncio.create_task(self.clips.audit()),
        ]
        if self.modem is not None:
            tasks.append(asyncio.create_task(self.modem.run()))
        await asyncio.gather(*tasks)

    def _on_press(self, kind):
        # Local operator broadcast arrives with the web-page issue; the press is logged for now.
        self.log("button", kind=kind)


async def _feed(wdt):
    # The watchdog is fed only while the event loop runs: a stuck loop reboots the board.
    while True:
        wdt.feed()
        await asyncio.sleep_ms(FEED_MS)


async def _fault_mode(wdt):
    # No trustworthy config: stay silent, show the fault, keep the board alive for a technician.
    board.led("fault")
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
    board.event("boot", {"cause": board.boot_cause(), "version": VERSION})
    log("boot", cause=board.boot_cause(), version=VERSION)
    cfg, source = config.load(log)
    wdt = board.WDT(cfg["wdt_ms"] if cfg else config.DEFAULTS["wdt_ms"])
    if cfg is None:
        log("fault", reason="no_valid_config")
        await _fault_mode(wdt)
        return
    if source == "backup":
        board.led("fault")
    tls_ctx = None
    if cfg["mqtt"].get("tls"):
        tls_ctx = _tls_context(cfg["mqtt"], log)
        if tls_ctx is None:
            await _fault_mode(wdt)
            return
    gc.collect()
    term = Terminal(cfg, log, tls_ctx)
    gc.collect()
    log("ready", id=cfg["id"], region=cfg["region"], alloc=gc.mem_alloc(), free=gc.mem_free())
    asyncio.create_task(_feed(wdt))
    await term.run()


def main():
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass


main()
