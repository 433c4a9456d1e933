# Alert intake (alerts.md §4-§6): envelopes from MQTT, one at a time through the verifier to the
# arbiter; every verdict and play status out as a receipt on eb/dev/<id>/event.
import asyncio
import gc
import json

from alert import Verdict
from micropython import const
from ring import Ring

INTAKE_MAX = const(16)  # envelopes waiting for verification; beyond, the oldest is dropped
RECEIPTS_MAX = const(64)  # receipts waiting for the MQTT client; beyond, the oldest is dropped
NOMEM_TRIES = const(4)  # verifications of one envelope that ran out of heap before it is given up
NOMEM_WAIT_MS = const(50)  # between them, after the page was told to let go (pressure)


def _nothing():
    pass


class Intake:
    """Both queues are bounded and drop their oldest (counted in `dropped`). The two tasks are
    handed the arbiter and the MQTT client (both are built after, with receipt() in hand);
    `shown(item, status)` is told each receipt (the terminal's LEDs)."""

    def __init__(self, dev_id, verifier, clock, log, shown):
        self.verifier = verifier
        self.clock = clock
        self.log = log
        self._shown = shown
        self._topic = "eb/dev/%s/event" % dev_id
        self.counts = {}  # "status" or "status:reason" -> receipts sent (the heartbeat's counts)
        self.last_alert = None  # id of the last accepted envelope
        self.activity = 0  # envelopes taken in since boot
        self.no_memory = 0  # envelopes given up after NOMEM_TRIES verifications without heap
        self.pressure = _nothing  # called when a verification ran out of heap (the page sheds)
        self._in = Ring(INTAKE_MAX)
        self._in_ev = asyncio.Event()
        self._out = Ring(RECEIPTS_MAX)  # receipts and events (send_event), alerts.md §6
        self._out_ev = asyncio.Event()

    @property
    def dropped(self):
        return self._in.dropped + self._out.dropped

    def idle(self):
        """Nothing waiting to be verified or sent."""
        return not len(self._in) and not len(self._out)

    def pending(self):
        """Envelopes waiting to be verified: the page waits for them (alerts first)."""
        return len(self._in)

    def put(self, envelope):
        """An envelope from an alert topic (bytes); verified in the order taken in."""
        if self._in.put(envelope):
            self.log("intake_full")
        self._in_ev.set()

    def oversize(self, length):
        # alerts.md §4 rule 1, for envelopes too big to even hold (the MQTT client dropped them)
        self.activity += 1
        v = Verdict("rejected", "too_large")
        self.receipt(v, v.status, v.reason)
        self.log("alert_rejected", alert=None, kid=None, reason="too_large", bytes=length)

    def receipt(self, v, status, reason):
        key = status if reason is None else status + ":" + reason
        self.counts[key] = self.counts.get(key, 0) + 1
        r = {"alert": v.id, "kid": v.kid, "status": status, "reason": reason, "t": self.clock.now()}
        p = v.payload or {}  # kind and level for the page's last alerts (docs/web.md "Page")
        self.log("receipt", alert=v.id, status=status, reason=reason, kind=p.get("kind"),
                 level=p.get("level"))
        self.send_event(r)
        self._shown(v, status)

    def send_event(self, ev):
        """A JSON event (receipt, fault, …) on the bounded queue to eb/dev/<id>/event."""
        self._out.put(json.dumps(ev))
        self._out_ev.set()

    async def verify_task(self, arbiter):
        while True:
            if not len(self._in):
                self._in_ev.clear()
                await self._in_ev.wait()
                continue
            env = self._in.get()
            self.activity += 1
            v = await self._check(env)
            del env
            if v is None:
                continue
            self.receipt(v, v.status, v.reason)
            if v.status == "accepted":
                self.last_alert = v.id
                self.clock.persist()
                if v.payload["kind"] == "cancel":
                    arbiter.cancel(v)
                else:
                    arbiter.submit(v)
                    # No collection here: the play task switches the amplifier on a few turns
                    # of the loop later (two sleeps were not enough: this collection ran first)
                    # and collects itself once it is on (player.py). Its time grows with the
                    # heap in use (an update downloading) and must not delay a warning.
                    await asyncio.sleep_ms(0)
                    continue
            else:
                self.log("alert_" + v.status, alert=v.id, kid=v.kid, reason=v.reason)
            gc.collect()
            await asyncio.sleep_ms(0)

    async def _check(self, env):
        # A MemoryError is the heap's fault, not the envelope's: never a `malformed` receipt.
        # Collect, let the page drop its connections, and verify again; when the heap still
        # cannot hold one verification, no verdict of alerts.md §4 is true, so no receipt is
        # sent: the envelope is logged and counted (heartbeat "no_memory") instead.
        for _ in range(NOMEM_TRIES):
            try:
                return self.verifier.check(env)
            except MemoryError:
                try:
                    self.pressure()
                except Exception:
                    pass
                gc.collect()
                await asyncio.sleep_ms(NOMEM_WAIT_MS)
        self.no_memory += 1
        self.counts["no_memory"] = self.no_memory
        self.log("alert_no_memory", bytes=len(env))
        return None

    async def send_task(self, mqtt):
        while True:
            if not len(self._out):
                self._out_ev.clear()
                await self._out_ev.wait()
                continue
            # the MQTT client queues QoS 1 messages itself while offline (bounded)
            await mqtt.publish(self._topic, self._out.get().encode(), 1)
