# 4G path: the supervisor of a SIMCom SIM7600 (sim7600.py) on a UART, driven through the AT engine
# (at.py), and TCP streams over the module's own socket service (modemstream.py); docs/modem.md.
import asyncio
from time import ticks_diff, ticks_ms

from at import ATEngine, ModemError, ints, last
from backoff import Backoff
from micropython import const
from modemstream import Stream
from sim7600 import SIM7600

_NET_MS = const(20000)  # NETOPEN / NETCLOSE / CIPOPEN result URC (PDP activation, TCP handshake)
_REG_WAIT_MS = const(30000)  # registration search within one bring-up before it fails
_REG_POLL_MS = const(2000)  # AT+CEREG? while searching
_IDLE_POLL_MS = const(30000)  # AT+CEREG?/AT+CSQ while online: UART only, no network bytes
_MAX_SOFT = const(3)  # consecutive garbled/error/timeout polls tolerated while online
_MAX_HOST = const(128)
_MIN_YEAR = const(2020)  # an earlier AT+CCLK? year means the module has no network time


class Modem(ATEngine):
    """The 4G path's supervisor: brings the module up, watches it, on loss tears down and retries;
    opens TCP streams through it (modemstream.Stream) and reads the network clock."""

    # Tunable per instance (tests shorten them).
    backoff_min_ms = 1000
    backoff_max_ms = 30000
    poll_ms = _IDLE_POLL_MS

    def __init__(self, reader, writer, *, apn="cmnet", log=None, cmd_timeout_ms=5000, max_links=2,
                 profile=None):
        ATEngine.__init__(self, reader, writer, log, cmd_timeout_ms, max_links,
                          profile or SIM7600())
        self.down = asyncio.Event()
        self.down.set()
        self._apn = apn
        self.state = "off"
        self.rssi = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._stop = False
        self._rx_task = None
        self._sup = None

    # --- application API ---------------------------------------------------------------

    async def run(self):
        """Supervisor: bring the module up, watch it, on loss tear down and retry. Forever."""
        self._stop = False
        self._sup = asyncio.current_task()
        if self._rx_task is None:
            self._rx_task = asyncio.create_task(self._rx())
        b = Backoff(self.backoff_min_ms, self.backoff_max_ms)  # read now: tests shorten them
        while not self._stop:
            t0 = ticks_ms()
            try:
                await self._bring_up()
                await self._watch()
                reason = "stopped"
            except asyncio.CancelledError:
                if not self._stop:  # deinit() has already torn down
                    self._go_down("stopped")
                raise
            except ModemError as ex:
                reason = ex.reason
            except Exception as ex:  # a bug must not end the 4G path for good
                reason = "internal:%s" % (ex,)
            self._go_down(reason)
            if ticks_diff(ticks_ms(), t0) > 2 * self.poll_ms:
                b.reset()  # it had been up for a while: retry soon
            await asyncio.sleep_ms(b.next_ms())

    async def open_tcp(self, host, port):
        """A TCP connection through the module: (reader, writer), one stream object."""
        if not self.ready.is_set():
            raise ModemError("not_ready")
        _check_host(host, port)
        i = 0
        while i < len(self._links) and self._links[i] is not None:
            i += 1
        if i == len(self._links):
            raise ModemError("busy")
        s = Stream(self, i)
        self._links[i] = s
        p = self.profile
        try:
            cmd = p.open % (i, host, port)
            got = await self._cmd(cmd, None, p.OPEN, ms=max(self._tmo, _NET_MS))
            f = ints(last(got, p.OPEN), p.OPEN, 2)
            if f[0] != i:
                raise ModemError("garbled", "link")
            if f[1]:
                raise ModemError("open_failed", f[1])
        except BaseException as ex:
            s._kill("closed")
            if isinstance(ex, ModemError) and ex.reason not in ("timeout", "garbled"):
                self._links[i] = None  # the module answered: the link is not open there
            else:
                # No answer (timeout, garble, or the caller gave up: CancelledError), so the
                # module may open it yet; a link open there but free here refuses every later
                # CIPOPEN on its number (+CIPOPEN: i,4). The slot stays taken until it is closed.
                asyncio.create_task(s._release())
            raise
        return s, s

    async def network_time(self):
        """Unix epoch seconds from the module's network clock (AT+CCLK?), None if it has none."""
        if self._rx_task is None:
            raise ModemError("not_ready")
        got = await self._cmd("AT+CCLK?", b"+CCLK: ")
        return _cclk(last(got, b"+CCLK: "))

    def deinit(self):
        self._stop = True
        self._go_down("deinit")
        for t in (self._sup, self._rx_task):
            if t is not None and t is not asyncio.current_task():
                t.cancel()
        self._sup = self._rx_task = None

    # --- supervisor ----------------------------------------------------------------------

    async def _bring_up(self):
        p = self.profile
        self.state = "off"
        self._lost = None
        async with self._lock:
            await self._resync()
        await self._retry("ATE0")
        for c, required in p.setup:
            try:
                await self._retry(c)
            except ModemError as ex:
                if required or ex.reason != "error":
                    raise
        got = await self._retry("AT+CPIN?", b"+CPIN: ")
        if last(got, b"+CPIN: ") != b"+CPIN: READY":
            raise ModemError("no_sim")
        self.state = "searching"
        await self._csq()
        t0 = ticks_ms()
        while not await self._registered():
            if ticks_diff(ticks_ms(), t0) > _REG_WAIT_MS:
                raise ModemError("not_registered")
            await asyncio.sleep_ms(_REG_POLL_MS)
        self.state = "registered"
        await self._retry(p.apn % self._apn)
        got = await self._retry(p.net_query, p.NET)
        if ints(last(got, p.NET), p.NET, 1)[0]:
            try:  # left open by an earlier session: sockets of a dead past
                await self._cmd(p.net_close, None, p.NETCLOSE, ms=_NET_MS)
            except ModemError:
                pass
        await self._retry(p.rx_mode)
        got = await self._cmd(p.net_open, None, p.NET, ms=max(self._tmo, _NET_MS))
        if ints(last(got, p.NET), p.NET, 1)[0]:
            raise ModemError("net_open_failed")
        if self._lost:
            raise ModemError(self._lost)
        self.state = "online"
        self.down.clear()
        self.ready.set()
        self._log("modem_up", rssi=self.rssi)

    async def _watch(self):
        soft = 0
        while not self._stop:
            if self._lost:
                raise ModemError(self._lost)
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), 1000 if soft else self.poll_ms)
            except asyncio.TimeoutError:
                pass
            if self._lost:
                raise ModemError(self._lost)
            try:
                if not await self._registered():
                    raise ModemError("not_registered")
                await self._csq()
                soft = 0
            except ModemError as ex:
                if ex.reason not in ("garbled", "error", "timeout"):
                    raise
                soft += 1
                self._log("modem_error", where="poll", reason=ex.reason)
                if soft >= _MAX_SOFT:
                    raise

    def _go_down(self, reason):
        was = self.ready.is_set()
        self.ready.clear()
        self.down.set()
        if reason == "no_sim":
            self.state = "no_sim"
        elif reason == "not_registered":
            self.state = "searching"
        else:
            self.state = "off"
        for i in range(len(self._links)):
            s = self._links[i]
            if s is not None:
                self._links[i] = None
                s._kill(reason)
        self._log("modem_down", reason=reason, was_up=was)

    async def _registered(self):
        got = await self._retry("AT+CEREG?", b"+CEREG: ")
        f = ints(last(got, b"+CEREG: "), b"+CEREG: ", 2)
        return f[1] == 1 or f[1] == 5  # home or roaming

    async def _csq(self):
        got = await self._retry("AT+CSQ", b"+CSQ: ")
        rssi = ints(last(got, b"+CSQ: "), b"+CSQ: ", 2)[0]
        if rssi == 99:
            self.rssi = None
        elif 0 <= rssi <= 31:
            self.rssi = rssi
        else:
            raise ModemError("garbled", "csq")

    async def _retry(self, cmd, want=None):
        # bring-up and polls: a garbled or lost reply is asked again (after a resync)
        n = 0
        while True:
            try:
                return await self._cmd(cmd, want)
            except ModemError as ex:
                n += 1
                if ex.reason not in ("garbled", "timeout") or n >= _MAX_SOFT:
                    raise
                self._log("modem_error", where=cmd, reason=ex.reason)

    # --- streams ---------------------------------------------------------------------------

    async def _fetch(self, s):
        # One CIPRXGET=2 into s's empty buffer; the bytes count only once OK closed the reply.
        s._pending = False
        try:
            await self._cmd(self.profile.recv % (s.link, len(s._buf)), self.profile.RECV, raw=s)
        except ModemError as ex:
            if ex.reason == "error" or s._eof:
                return  # "+IP ERROR: No data", or the link is gone: EOF once the buffer is empty
            s._kill(ex.reason)
            raise
        n = self._raw_n
        if n < 0:
            return  # OK without a header: nothing
        s._i = 0
        s._n = n
        # `or`: a +CIPRXGET: 1 URC that came while this read was under way (new data after the
        # module's buffer ran empty) set _pending; the module sends it once, so losing it here
        # stalled the link until the 5 s poll (a live stream over 4G found it: docs/modem.md)
        s._pending = self._raw_rest > 0 or s._pending
        self.bytes_in += n

    async def _send(self, s, mv):
        p = self.profile
        n = len(mv)
        got = await self._cmd(p.send % (s.link, n), p.SEND, p.SEND, data=mv)
        f = ints(last(got, p.SEND), p.SEND, 3)  # <link>,<requested>,<sent>
        if f[0] != s.link or f[2] != n:
            raise ModemError("send_failed", f[2])
        self.bytes_out += n

    async def _close_link(self, i):
        p = self.profile
        try:
            await self._cmd(p.close % i, None, p.CLOSE)
        except ModemError:
            pass  # already closed by the peer, or the module went away: NETCLOSE clears it


def _check_host(host, port):
    if not isinstance(host, str) or not 0 < len(host) <= _MAX_HOST:
        raise ModemError("bad_host")
    for c in host:
        if c == '"' or ord(c) <= 32 or ord(c) >= 127:
            raise ModemError("bad_host")  # it goes between quotes in the AT command
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ModemError("bad_host", "port")


def _cclk(line):
    # +CCLK: "yy/MM/dd,hh:mm:ss±zz", local time, zz in quarter hours east of UTC
    s = line[7:].strip()
    if (len(s) != 22 or s[0] != 34 or s[21] != 34 or s[18] not in (43, 45) or s[3] != 47
            or s[6] != 47 or s[9] != 44 or s[12] != 58 or s[15] != 58):
        raise ModemError("garbled", "cclk")
    v = []
    for a in (1, 4, 7, 10, 13, 16, 19):
        d0, d1 = s[a] - 48, s[a + 1] - 48
        if not (0 <= d0 <= 9 and 0 <= d1 <= 9):
            raise ModemError("garbled", "cclk")
        v.append(d0 * 10 + d1)
    y, mo, d, h, mi, sec, zz = v
    y += 2000 if y < 80 else 1900  # an unset SIM7600 clock reads 80/01/06 (1980)
    if y < _MIN_YEAR:
        return None
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and sec < 61 and zz <= 56):
        raise ModemError("garbled", "cclk")
    if s[18] == 45:
        zz = -zz
    return _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - zz * 900


def _days(y, m, d):
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
