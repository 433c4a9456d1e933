# The AT-command engine of the 4G path: one command at a time over the module's UART, reply lines,
# URCs, resync after a lost or garbled reply (docs/modem.md). modem.py supervises it.
import asyncio
from time import ticks_diff, ticks_ms

import evlog
from micropython import const

MAX_LINE = const(256)  # longest reply line kept; a longer one is discarded whole ("garbled")
MAX_REPLY_LINES = const(8)  # information lines one command may return before it is garbled
_RX_BUF = const(256)  # UART read buffer
_SYNC_TRIES = const(5)  # "AT" attempts of a resync before the module counts as not answering
_SYNC_MS = const(1000)  # wait for OK per resync attempt
_QUIET_MS = const(100)  # input silence that ends the flush of a resync
_FLUSH_MS = const(2000)  # longest flush: a module spewing garbage is still resynced


class ModemError(OSError):
    """A modem failure; .reason is a short code for the log: timeout, no_answer, no_sim,
    not_registered, error, garbled, closed, busy, not_ready, open_failed, send_failed,
    net_open_failed, net_closed, bad_host, overflow. An OSError, so stream users that handle
    socket errors (clip.py) handle it too."""

    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class ATEngine:
    """The only reader of the module's UART and the one command in flight at a time: reply lines
    to the command, unsolicited result codes (URCs) to the links and the supervisor, raw CIPRXGET
    bytes into their stream's buffer. modem.Modem supervises it and sets `ready` while the
    module is online; a URC that reports the path lost then sets _lost and wakes it."""

    def __init__(self, reader, writer, log, cmd_timeout_ms, max_links, profile):
        self._r = reader
        self._w = writer
        self._readinto = getattr(reader, "readinto", None)
        self._logf = log
        self._tmo = cmd_timeout_ms
        self.profile = profile
        self.ready = asyncio.Event()  # set by the supervisor while the module is online
        self.garbled = 0  # reply lines discarded as garbled or overlong
        self._links = [None] * max_links  # type: list
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
        # The only reader of the UART: reply lines to the command in flight, URCs to _urc,
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
                    self._ln = 0
                    self._got_prompt()
                return
            self._append(i, j)
            i = j + 1
            self._end_line()

    def _got_prompt(self):
        # the '>' of a CIPSEND, at the end of a read ("\r\n> ") or as a line of its own
        self._prompt_wait = False
        self._prompt.set()

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
        if n == 1 and b[0] == 0x3E and self._prompt_wait:
            # the '>' prompt with a line after it in the same read: a URC the module sent while
            # it waited for the data ("\r\n> \r\n+CIPRXGET: 1,0\r\n"). Still the prompt.
            self._got_prompt()
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
        f = parse_ints(line, self.profile.RECV, 3)  # <link>,<n>,<rest>
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
            f = parse_ints(line, b"+CEREG: ", 1)
            if f is not None and len(f) == 1 and f[0] != 1 and f[0] != 5:
                self._lose("not_registered")
        elif line.startswith(p.URC_NET):
            self._lose("net_closed")
        elif line.startswith(p.URC_SIM):  # either of the tuple (no tuple built per line)
            self._lose("no_sim")

    def _link(self, line, prefix):
        f = parse_ints(line, prefix, 1)
        if f is None or not 0 <= f[0] < len(self._links):
            return None
        return self._links[f[0]]

    def _log(self, event, **fields):
        evlog.call(self._logf, event, **fields)

    def _lose(self, reason):
        if self.ready.is_set() and self._lost is None:
            self._lost = reason
            self._wake.set()


def last(lines, prefix):
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(prefix):
            return lines[i]
    raise ModemError("garbled", prefix)


def parse_ints(line, prefix, n):
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


def ints(line, prefix, n):
    f = parse_ints(line, prefix, n)
    if f is None:
        raise ModemError("garbled", line[:40])
    return f
