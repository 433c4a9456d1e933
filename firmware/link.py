# Link manager: IP first, 4G fallback at once, back to IP only after it stayed healthy (issue 3).
import asyncio
from time import ticks_diff, ticks_ms

from backoff import jitter
from micropython import const

# Defaults, overridable from config (docs/link.md says what each costs).
HYSTERESIS_MS = const(60000)  # IP must answer this long, and the last switch be this old
CHECK_MS = const(5000)  # while on 4G: how often IP is tried (a TCP connect over IP, no 4G bytes)
CHECK_CONNECT_MS = const(1000)  # a health-check connect slower than this counts as a failure
RECHECK_MS = const(1000)  # once IP answered: tried this often, so a flap between tries is seen
MAX_PENALTY = const(8)  # a failback that did not last multiplies the next hysteresis, up to this
CONNECT_MS = const(3000)  # a connect over IP that takes longer counts as failed
PROBE_MS = const(1500)  # on IP: MQTT ping after this much silence, dead after twice it
IP_KEEPALIVE = const(60)  # s, MQTT keep-alive over IP
G4_KEEPALIVE = const(240)  # s, over 4G: long (metered) but under carriers' NAT idle timeouts


class NoPath(OSError):
    pass


class Link:
    """Chooses the path of the MQTT connection and of clip downloads.

    The MQTT client reconnects through `open()`; losing an IP connection, or failing to make
    one, moves the terminal to 4G at once (a warning may be on its way). While on 4G, `run()`
    tries IP every CHECK_MS and moves back only when IP has answered every try for the
    hysteresis period and the last switch is at least that old, so a flapping line causes at
    most one switch per period.
    """

    def __init__(self, open_ip, modem, log, host, port, hysteresis_ms=HYSTERESIS_MS,
                 check_ms=CHECK_MS, connect_ms=CONNECT_MS, probe_ms=PROBE_MS,
                 ip_keepalive=IP_KEEPALIVE, g4_keepalive=G4_KEEPALIVE, tls=None):
        self._open_ip = open_ip
        # tls: None (plain MQTT) or (reader, writer, path) -> (reader, writer) wrapping a fresh
        # connection in a TLS session (tlsstream.wrap); IP health checks and clips stay TCP
        self._tls = tls
        self.modem = modem
        self._log = log
        self._host = host
        self._port = port
        self.hysteresis_ms = hysteresis_ms
        self.check_ms = check_ms
        self.connect_ms = connect_ms
        self.probe_ms = probe_ms
        self._ka = {"ip": ip_keepalive, "4g": g4_keepalive}
        self.mqtt = None  # attach()ed after the client is built
        self.mode = "ip"  # the path the next connection tries first
        self.path = "none"  # the path of the current MQTT connection
        self.switches = 0  # changes of the path in use between ip and 4g
        self._last = None  # the last path a connection was made over
        self._switch_ms = None  # ticks of the last such change
        self._ip_ok_ms = None  # ticks since when every IP try succeeded (while on 4G)
        self._penalty = 1  # hysteresis multiplier, doubled when a failback did not hold
        self._back_ms = None  # ticks of the last failback to IP

    def set_keepalives(self, ip, g4):
        """Keep-alive per path, s; the next connection takes it."""
        self._ka = {"ip": ip, "4g": g4}

    def attach(self, mqtt):
        """The MQTT client whose connections this link carries (it needs open() first)."""
        self.mqtt = mqtt

    def _modem_ready(self):
        m = self.modem
        return m is not None and m.ready.is_set()

    def _set_mode(self, mode, why):
        if mode == self.mode or (mode == "4g" and self.modem is None):
            return
        self.mode = mode
        self._ip_ok_ms = None
        self._log("link_mode", mode=mode, why=why)

    async def _try_ip(self, host, port):
        return await asyncio.wait_for_ms(self._open_ip(host, port), self.connect_ms)

    def _secure(self, rw, path):
        # The handshake runs in the MQTT client's first drain() and its failure fails the connect
        # like any other (logged as tls_fail); the next open() then treats the IP path as lost.
        if self._tls is None:
            return rw
        return self._tls(rw[0], rw[1], path)

    async def open(self, host, port):
        """The MQTT client's transport: a stream over the best path, or NoPath."""
        if self.path == "ip":
            # the IP connection we had has died; if it was a failback that did not hold for a
            # period, the next one waits longer
            if self._back_ms is not None:
                if ticks_diff(ticks_ms(), self._back_ms) < self._hyst():
                    self._penalty = min(self._penalty * 2, MAX_PENALTY)
                else:
                    self._penalty = 1
                self._back_ms = None
            self._set_mode("4g", "ip_lost")
        self.path = "none"
        if self.mode == "ip" or not self._modem_ready():
            try:
                rw = self._secure(await self._try_ip(host, port), "ip")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._log("link_fail", path="ip", reason=repr(e))
                self._set_mode("4g", "ip_connect_failed")
            else:
                if self.mode != "ip":
                    self._set_mode("ip", "4g_unavailable")
                self._use("ip")
                return rw
        if self._modem_ready():
            try:
                rw = await asyncio.wait_for_ms(self.modem.open_tcp(host, port), 15000)
                rw = self._secure(rw, "4g")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._log("link_fail", path="4g", reason=repr(e))
            else:
                self._use("4g")
                return rw
        raise NoPath("no path")

    async def open_stream(self, host, port):
        """A stream for other traffic (clip downloads) over the path in use now."""
        if self.path == "4g" and self._modem_ready():
            return await self.modem.open_tcp(host, port)
        return await self._try_ip(host, port)

    def _use(self, path):
        self.path = path
        if self._last is not None and path != self._last:
            self.switches += 1
            self._switch_ms = ticks_ms()
        self._last = path
        m = self.mqtt
        if m is not None:
            m.set_keepalive(self._ka[path])
            # free bytes on IP buy fast failure detection; on 4G only the keep-alive runs
            m.probe_ms = self.probe_ms if path == "ip" else 0

    def _hyst(self):
        return self.hysteresis_ms * self._penalty

    async def run(self):
        """While on 4G, watch IP and move back after the hysteresis."""
        while True:
            wait = RECHECK_MS if self._ip_ok_ms is not None else self.check_ms
            await asyncio.sleep_ms(jitter(wait, 255))
            if self.mode != "4g":
                continue
            try:
                # strict: a line that only answers after a retransmit is not healthy
                _, w = await asyncio.wait_for_ms(self._open_ip(self._host, self._port),
                                                 CHECK_CONNECT_MS)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._ip_ok_ms = None
                continue
            w.close()
            await w.wait_closed()
            now = ticks_ms()
            if self._ip_ok_ms is None:
                self._ip_ok_ms = now
                self._log("link_ip_back")
            h = self._hyst()
            if (ticks_diff(now, self._ip_ok_ms) >= h
                    and (self._switch_ms is None or ticks_diff(now, self._switch_ms) >= h)):
                self._set_mode("ip", "ip_stable")
                self._back_ms = now
                if self.mqtt is not None and self.path == "4g":
                    self.mqtt.kick("failback")
