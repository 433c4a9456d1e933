# 4G path: asyncio AT-command engine for a SIMCom SIM7600 on a UART, and TCP streams over the
# module's own socket service in manual receive mode (docs/modem.md).
import asyncio
from time import ticks_diff, ticks_ms

import evlog
from backoff import Backoff
from micropython import const

MAX_LINE = const(256)  # longest reply line kept; a longer one is discarded whole ("garbled")
CHUNK = const(1460)  # payload bytes per CIPSEND / CIPRXGET=2: one TCP segment
MAX_TX = const(20480)  # bytes a stream buffers between write() and drain(): an MQTT packet
MAX_REPLY_LINES = const(8)  # information lines one command may return before it is garbled
_RX_BUF = const(256)  # UART read buffer
_SYNC_TRIES = const(5)  # "AT" attempts of a resync before the module counts as not answering
_SYNC_MS = const(1000)  # wait for OK per resync attempt
_QUIET_MS = const(100)  # input silence that ends the flush of a resync
_FLUSH_MS = const(2000)  # longest flush: a module spewing garbage is still resynced
_NET_MS = const(20000)  # NETOPEN / NETCLOSE / CIPOPEN result URC (PDP activation, TCP handshake)
_REG_WAIT_MS = const(30000)  # registration search within one bring-up before it fails
_REG_POLL_MS = const(2000)  # AT+CEREG? while searching
_RX_POLL_MS = const(5000)  # a waiting reader asks CIPRXGET=2 anyway, in case a URC was lost
_IDLE_POLL_MS = const(30000)  # AT+CEREG?/AT+CSQ while online: UART only, no network bytes
_MAX_SOFT = const(3)  # consecutive garbled/error/timeout polls tolerated while online
_MAX_HOST = const(128)
_MIN_YEAR = const(2020)  # an earlier AT+CCLK? year means the module has no network time


class ModemError(OSError):
    """A modem failure; .reason is a short code for the log: timeout, no_answer, no_sim,
    not_registered, error, garbled, closed, busy, not_ready, open_failed, send_failed,
    net_open_failed, net_closed, bad_host, overflow. An OSError, so stream users that handle
    socket errors (clip.py) handle it too."""

    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SIM7600:
    """SIMCom SIM7600 (CE/E/SA, A7600 alike): the command strings and reply formats of the TCP
    service, so another family (Quectel EC20: QIOPEN/QISEND/QIRD) is a class like this one."""

    name = "SIM7600"
    # (command, required) after ATE0; optional ones may be missing on older firmware
    setup = (("AT+CMEE=1", True), ("AT+CEREG=1", False), ("AT+CTZU=1", False))
    rx_mode = "AT+CIPRXGET=1"  # manual receive: data waits in the module until asked for
    net_query = "AT+NETOPEN?"
    net_open = "AT+NETOPEN"
    net_close = "AT+NETCLOSE"
    NET = b"+NETOPEN: "
    NETCLOSE = b"+NETCLOSE: "
    OPEN = b"+CIPOPEN: "
    SEND = b"+CIPSEND: "
    RECV = b"+CIPRXGET: 2,"
    CLOSE = b"+CIPCLOSE: "
    URC_DATA = b"+CIPRXGET: 1,"  # +CIPRXGET: 1,<link>: data waits
    URC_CLOSED = b"+IPCLOSE: "  # +IPCLOSE: <link>,<reason>: closed by the peer or the network
    URC_NET = b"+CIPEVENT: "  # +CIPEVENT: NETWORK CLOSED UNEXPECTEDLY
    URC_SIM = (b"+SIMCARD: NOT AVAILABLE", b"+CPIN: NOT READY")
    ERRORS = (b"+CME ERROR: ", b"+CMS ERROR: ")
    IP_ERROR = b"+IP ERROR: "  # precedes ERROR with a text reason

    def apn(self, apn):
        return 'AT+CGDCONT=1,"IP","%s"' % apn

    def open(self, link, host, port):
        return 'AT+CIPOPEN=%d,"TCP","%s",%d' % (link, host, port)

    def send(self, link, n):
        return "AT+CIPSEND=%d,%d" % (link, n)

    def recv(self, link, n):
        return "AT+CIPRXGET=2,%d,%d" % (link, n)

    def close(self, link):
        return "AT+CIPCLOSE=%d" % link

    def error_reason(self, line):
        # +CME ERROR: 10 (numeric, CMEE=1) or "SIM not inserted" (verbose, CMEE=2)
        if line.endswith(b" 10") or b"SIM not inserted" in line:
            return "no_sim"
        return "error"


class Modem:
    # Tunable per instance (tests shorten them).
    backoff_min_ms = 1000
    backoff_max_ms = 30000
    poll_ms = _IDLE_POLL_MS

    def __init__(self, reader, writer, *, apn="cmnet", log=None, cmd_timeout_ms=5000, max_links=2,
                 profile=None):
        self._r = reader
        self._w = writer
        self._readinto = getattr(reader, "readinto", None)
        self._apn = apn
        self._logf = log
        self._tmo = cmd_timeout_ms
        self.profile = profile or SIM7600()
        self.ready = asyncio.Event()
        self.down = asyncio.Event()
        self.down.set()
        self.state = "off"
        self.rssi = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.garbled = 0  # reply lines discarded as garbled or overlong
        self._links = [None] * max_links  # type: list
        self._listeners = []
        self._lock = asyncio.Lock()
        self._rbuf = bytearray(_RX_BUF)
        self._rmv = memoryview(self._rbuf)
        self._line = bytearray(MAX_LINE)
        self._lmv = memoryview(self._line)
        self._ln = 0
        self._over = False
        self._rx_ms = 0
        self._discard = False
        self._desync = False
        # the one command in flight (self._lock)
        self._busy = False
        self._want = None
        self._until = None
        self._got = []
        self._ok = False
        self._seen = False
        self._fail = None
        self._done = asyncio.Event()
        self._prompt = asyncio.Event()
        self._prompt_wait = False
        self._raw = None  # link receiving the raw bytes of CIPRXGET=2
        self._raw_max = 0
        self._raw_left = 0
        self._raw_pos = 0
        self._raw_n = -1
        self._raw_rest = 0
        self._lost = None  # reason a URC reported the path lost
        self._wake = asyncio.Event()
        self._stop = False
        self._rx_task = None
        self._sup = None

    # --- application API ---------------------------------------------------------------

    def listen(self, fn):
        """fn(line: bytes) is called with every unsolicited result code (URC) line."""
        self._listeners.append(fn)

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
        s = _Stream(self, i)
        self._links[i] = s
        p = self.profile
        try:
            got = await self._cmd(p.open(i, host, port), None, p.OPEN, ms=max(self._tmo, _NET_MS))
            f = _ints(_last(got, p.OPEN), p.OPEN, 2)
            if f[0] != i:
                raise ModemError("garbled", "link")
            if f[1]:
                raise ModemError("open_failed", f[1])
        except BaseException as ex:
            self._links[i] = None
            s._kill("closed")
            if isinstance(ex, ModemError) and ex.reason in ("timeout", "garbled"):
                asyncio.create_task(self._close_link(i))  # it may open later: free it
            raise
        return s, s

    async def network_time(self):
        """Unix epoch seconds from the module's network clock (AT+CCLK?), None if it has none."""
        if self._rx_task is None:
            raise ModemError("not_ready")
        got = await self._cmd("AT+CCLK?", b"+CCLK: ")
        return _cclk(_last(got, b"+CCLK: "))

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
        if _last(got, b"+CPIN: ") != b"+CPIN: READY":
            raise ModemError("no_sim")
        self.state = "searching"
        await self._csq()
        t0 = ticks_ms()
        while not await self._registered():
            if ticks_diff(ticks_ms(), t0) > _REG_WAIT_MS:
                raise ModemError("not_registered")
            await asyncio.sleep_ms(_REG_POLL_MS)
        self.state = "registered"
        await self._retry(p.apn(self._apn))
        got = await self._retry(p.net_query, p.NET)
        if _ints(_last(got, p.NET), p.NET, 1)[0]:
            try:  # left open by an earlier session: sockets of a dead past
                await self._cmd(p.net_close, None, p.NETCLOSE, ms=_NET_MS)
            except ModemError:
                pass
        await self._retry(p.rx_mode)
        got = await self._cmd(p.net_open, None, p.NET, ms=max(self._tmo, _NET_MS))
        if _ints(_last(got, p.NET), p.NET, 1)[0]:
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
        f = _ints(_last(got, b"+CEREG: "), b"+CEREG: ", 2)
        return f[1] == 1 or f[1] == 5  # home or roaming

    async def _csq(self):
        got = await self._retry("AT+CSQ", b"+CSQ: ")
        rssi = _ints(_last(got, b"+CSQ: "), b"+CSQ: ", 2)[0]
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

    # --- command engine ------------------------------------------------------------------

    async def _cmd(self, cmd, want=None, until=None, data=None, raw=None, ms=0):
        """One command: returns the lines starting with want or until. until names a line that
        must follow OK before the command is done (result URCs like +NETOPEN: 0). data is sent
        after the '>' prompt; raw (a stream) takes the bytes of a CIPRXGET=2 reply."""
        async with self._lock:
            if self._desync:
                await self._resync()
            return await self._exchange(cmd, want, until, data, raw, ms or self._tmo)

    async def _exchange(self, cmd, want, until, data, raw, ms):
        self._want = want
        self._until = until
        self._got = []
        self._ok = self._seen = False
        self._fail = None
        self._raw = raw
        self._raw_max = len(raw._buf) if raw is not None else 0
        self._raw_left = self._raw_pos = 0
        self._raw_n = -1
        self._done.clear()
        self._prompt.clear()
        self._prompt_wait = data is not None
        self._busy = True
        w = self._w
        try:
            w.write(cmd.encode() + b"\r")
            await asyncio.wait_for_ms(w.drain(), ms)
            if data is not None:
                await asyncio.wait_for_ms(self._prompt.wait(), ms)
                if self._fail is None:
                    w.write(data)
                    await asyncio.wait_for_ms(w.drain(), ms)
            await asyncio.wait_for_ms(self._done.wait(), ms)
        except asyncio.TimeoutError:
            self._desync = True
            self._wake.set()
            raise ModemError("timeout", cmd)
        except asyncio.CancelledError:
            self._desync = True  # the reply, or the module waiting for data, is still out there
            raise
        finally:
            self._busy = False
            self._raw = None
            self._raw_left = 0
            self._prompt_wait = False
        if self._fail is not None:
            if self._fail == "garbled":
                self._desync = True  # raw bytes of unknown length may follow a bad header
            raise ModemError(self._fail, cmd)
        return self._got

    async def _resync(self):
        # Lock held. Drop whatever is in flight, then "AT" until the module answers OK.
        self._discard = True
        self._raw_left = 0
        self._ln = 0
        self._over = False
        try:
            self._w.write(b"\x1b")  # ends a data prompt the module may still wait in
            await asyncio.wait_for_ms(self._w.drain(), _SYNC_MS)
        except Exception:
            pass
        self._rx_ms = t0 = ticks_ms()
        while ticks_diff(ticks_ms(), self._rx_ms) < _QUIET_MS:
            if ticks_diff(ticks_ms(), t0) > _FLUSH_MS:
                break
            await asyncio.sleep_ms(20)
        self._discard = False
        self._ln = 0
        self._over = False
        for _ in range(_SYNC_TRIES):
            try:
                await self._exchange("AT", None, None, None, None, _SYNC_MS)
                if self._desync:
                    self._log("modem_resync")
                self._desync = False
                return
            except ModemError:
                pass
        self._desync = True
        raise ModemError("no_answer")

    async def _rx(self):
        # The only reader of the UART: reply lines to the command in flight, URCs to listeners,
        # raw CIPRXGET bytes into their stream's buffer.
        mv = self._rmv
        ri = self._readinto
        while True:
            try:
                if ri is not None:
                    n = await ri(mv)
                else:
                    d = await self._r.read(_RX_BUF)
                    n = len(d) if d else 0
                    if n:
                        mv[:n] = d
            except asyncio.CancelledError:
                raise
            except Exception as ex:
                self._log("modem_error", where="uart", reason=str(ex))
                n = 0
            if not n:
                await asyncio.sleep_ms(10)  # UART timeout=0 / pty VMIN=0: nothing there yet
                continue
            self._rx_ms = ticks_ms()
            if not self._discard:
                self._feed(n)

    def _feed(self, n):
        buf = self._rbuf
        mv = self._rmv
        i = 0
        while i < n:
            if self._raw_left:
                k = min(self._raw_left, n - i)
                s = self._raw
                if s is not None:
                    p = self._raw_pos
                    s._mv[p:p + k] = mv[i:i + k]
                self._raw_pos += k
                self._raw_left -= k
                i += k
                continue
            j = buf.find(b"\n", i, n)
            if j < 0:
                self._append(i, n)
                if self._prompt_wait and self._ln and self._line[0] == 0x3E:  # '>'
                    self._prompt_wait = False
                    self._ln = 0
                    self._prompt.set()
                return
            self._append(i, j)
            i = j + 1
            self._end_line()

    def _append(self, i, j):
        k = j - i
        if not k or self._over:
            return
        if self._ln + k > MAX_LINE:
            self._over = True  # the rest of this line is dropped up to its newline
            return
        self._lmv[self._ln:self._ln + k] = self._rmv[i:j]
        self._ln += k

    def _end_line(self):
        n = self._ln
        over = self._over
        self._ln = 0
        self._over = False
        if over:
            self._garbled("overlong line")
            return
        b = self._line
        while n and b[n - 1] in (13, 32):  # CR, space
            n -= 1
        if not n:
            return
        line = bytes(self._lmv[:n])
        try:
            self._on_line(line)
        except Exception as ex:  # a parser bug must not end the reader
            self._garbled(str(ex))

    def _garbled(self, why):
        self.garbled += 1
        self._log("modem_error", where="rx", reason="garbled", detail=why)
        if self._busy:
            self._end("garbled")

    def _on_line(self, line):
        p = self.profile
        if self._busy:
            if line == b"OK":
                self._ok = True
                self._check()
                return
            if line == b"ERROR":
                self._end("error")
                return
            for e in p.ERRORS:
                if line.startswith(e):
                    self._end(p.error_reason(line))
                    return
            w, u = self._want, self._until
            if ((w is not None and line.startswith(w)) or (u is not None and line.startswith(u))) \
                    and not (line.startswith(b"+CEREG: ") and b"," not in line):  # URC form
                if len(self._got) >= MAX_REPLY_LINES:
                    self._end("garbled")
                    return
                self._got.append(line)
                if u is not None and line.startswith(u):
                    self._seen = True
                if self._raw is not None and line.startswith(p.RECV):
                    self._start_raw(line)
                self._check()
                return
            if line.startswith(p.IP_ERROR):
                return  # the text of the ERROR that follows
        self._urc(line)

    def _start_raw(self, line):
        f = _parse_ints(line, self.profile.RECV, 3)  # <link>,<n>,<rest>
        s = self._raw
        if f is None or s is None or f[0] != s.link or not 0 <= f[1] <= self._raw_max or f[2] < 0:
            self._garbled("recv header")
            return
        self._raw_n = f[1]
        self._raw_rest = f[2]
        self._raw_left = f[1]
        self._raw_pos = 0

    def _check(self):
        # A result line (+CIPSEND:, +CIPOPEN:, +NETOPEN:) comes after OK and settles the command
        # by itself, so a garbled OK before it costs nothing.
        if self._seen or (self._ok and self._until is None):
            self._done.set()

    def _end(self, reason):
        if self._fail is None:
            self._fail = reason
        self._prompt_wait = False
        self._prompt.set()
        self._done.set()

    def _urc(self, line):
        p = self.profile
        if line.startswith(p.URC_DATA):
            s = self._link(line, p.URC_DATA)
            if s is not None:
                s._pending = True
                s._ev.set()
        elif line.startswith(p.URC_CLOSED):
            s = self._link(line, p.URC_CLOSED)
            if s is not None:
                s._eof = True
                s._pending = True  # what the peer sent before closing is still to be read
                s._ev.set()
        elif line.startswith(b"+CEREG: "):
            f = _parse_ints(line, b"+CEREG: ", 1)
            if f is not None and len(f) == 1 and f[0] != 1 and f[0] != 5:
                self._lose("not_registered")
        elif line.startswith(p.URC_NET):
            self._lose("net_closed")
        elif line.startswith(p.URC_SIM):  # either of the tuple (no tuple built per line)
            self._lose("no_sim")
        for fn in self._listeners:
            try:
                fn(line)
            except Exception as ex:
                self._log("modem_error", where="listener", reason=str(ex))

    def _link(self, line, prefix):
        f = _parse_ints(line, prefix, 1)
        if f is None or not 0 <= f[0] < len(self._links):
            return None
        return self._links[f[0]]

    def _log(self, event, **fields):
        evlog.call(self._logf, event, **fields)

    def _lose(self, reason):
        if self.ready.is_set() and self._lost is None:
            self._lost = reason
            self._wake.set()

    # --- streams ---------------------------------------------------------------------------

    async def _fetch(self, s):
        # One CIPRXGET=2 into s's empty buffer; the bytes count only once OK closed the reply.
        s._pending = False
        try:
            await self._cmd(self.profile.recv(s.link, len(s._buf)), self.profile.RECV, raw=s)
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
        s._pending = self._raw_rest > 0
        self.bytes_in += n

    async def _send(self, s, mv):
        p = self.profile
        n = len(mv)
        got = await self._cmd(p.send(s.link, n), p.SEND, p.SEND, data=mv)
        f = _ints(_last(got, p.SEND), p.SEND, 3)  # <link>,<requested>,<sent>
        if f[0] != s.link or f[2] != n:
            raise ModemError("send_failed", f[2])
        self.bytes_out += n

    async def _close_link(self, i):
        p = self.profile
        try:
            await self._cmd(p.close(i), None, p.CLOSE)
        except ModemError:
            pass  # already closed by the peer, or the module went away: NETCLOSE clears it


class _Stream:
    """One TCP link, used as both the reader and the writer of an asyncio stream pair."""

    def __init__(self, modem, link):
        self._m = modem
        self.link = link
        self._buf = bytearray(CHUNK)
        self._mv = memoryview(self._buf)
        self._i = self._n = 0
        self._pending = False  # the module holds data for us
        self._eof = False  # the peer closed: EOF once the module has nothing left
        self._err = None  # the path broke: reads and writes raise ModemError(_err)
        self._closed = False
        self._ev = asyncio.Event()
        self._out = bytearray()
        self._released = asyncio.Event()

    async def readinto(self, buf):
        while True:
            k = self._n - self._i
            if k > 0:
                if k > len(buf):
                    k = len(buf)
                buf[:k] = self._mv[self._i:self._i + k]
                self._i += k
                return k
            if self._err is not None:
                raise ModemError(self._err)
            if self._closed:
                return 0
            if self._pending:
                await self._m._fetch(self)
                continue
            if self._eof:
                return 0
            self._ev.clear()
            try:
                await asyncio.wait_for_ms(self._ev.wait(), _RX_POLL_MS)
            except asyncio.TimeoutError:
                self._pending = True  # a lost +CIPRXGET: 1 URC must not stall us forever

    async def read(self, n=-1):
        if n < 0 or n > CHUNK:
            n = CHUNK
        b = bytearray(n)
        k = await self.readinto(b)
        return bytes(b[:k])

    async def readexactly(self, n):
        b = bytearray(n)
        mv = memoryview(b)
        i = 0
        while i < n:
            k = await self.readinto(mv[i:])
            if not k:
                raise EOFError
            i += k
        return bytes(b)

    async def readline(self):
        out = bytearray()
        one = bytearray(1)
        while len(out) < MAX_TX:
            if not await self.readinto(one):
                break
            out += one
            if one[0] == 10:
                break
        return bytes(out)

    def write(self, b):
        if len(self._out) + len(b) > MAX_TX:
            raise ModemError("overflow")
        self._out += b

    async def drain(self):
        n = len(self._out)
        if not n:
            return
        if self._err is not None:
            raise ModemError(self._err)
        if self._closed or self._eof:
            self._out = bytearray()
            raise ModemError("closed")
        out = self._out
        self._out = bytearray()
        mv = memoryview(out)
        i = 0
        try:
            while i < n:
                k = n - i if n - i < CHUNK else CHUNK
                await self._m._send(self, mv[i:i + k])
                i += k
        except BaseException as ex:
            # part of the bytes may have left: this byte stream cannot be trusted any more
            self._kill(ex.reason if isinstance(ex, ModemError) else "closed")
            self.close()
            raise

    def close(self):
        if self._closed:
            return
        self._closed = True
        self._ev.set()
        asyncio.create_task(self._release())

    async def wait_closed(self):
        self.close()
        await self._released.wait()

    async def _release(self):
        m = self._m
        try:
            if m._links[self.link] is self:
                await m._close_link(self.link)
        finally:
            if m._links[self.link] is self:
                m._links[self.link] = None
            self._released.set()

    def _kill(self, reason):
        if self._err is None:
            self._err = "closed" if reason == "stopped" else reason
        self._ev.set()
        if self._m._links[self.link] is not self:
            self._released.set()


def _check_host(host, port):
    if not isinstance(host, str) or not 0 < len(host) <= _MAX_HOST:
        raise ModemError("bad_host")
    for c in host:
        if c == '"' or ord(c) <= 32 or ord(c) >= 127:
            raise ModemError("bad_host")  # it goes between quotes in the AT command
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ModemError("bad_host", "port")


def _last(lines, prefix):
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(prefix):
            return lines[i]
    raise ModemError("garbled", prefix)


def _parse_ints(line, prefix, n):
    # The first n comma-separated decimal fields after prefix, or None when malformed.
    try:
        parts = line[len(prefix):].split(b",")
        if len(parts) < n:
            return None
        out = []
        for k in range(n):
            t = parts[k].strip()
            if not t or len(t) > 6:
                return None
            for c in t:
                if c < 48 or c > 57:
                    return None
            out.append(int(t))
        return out
    except Exception:
        return None


def _ints(line, prefix, n):
    f = _parse_ints(line, prefix, n)
    if f is None:
        raise ModemError("garbled", line[:40])
    return f


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
