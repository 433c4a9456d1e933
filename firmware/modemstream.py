# One TCP link through the 4G module as an asyncio stream (reader and writer in one object), in
# the module's manual receive mode: bytes wait in the module until a read asks (docs/modem.md).
import asyncio

from at import ModemError
from micropython import const

CHUNK = const(1460)  # payload bytes per CIPSEND / CIPRXGET=2: one TCP segment
MAX_TX = const(20480)  # bytes a stream buffers between write() and drain(): an MQTT packet
_RX_POLL_MS = const(5000)  # a waiting reader asks CIPRXGET=2 anyway, in case a URC was lost


class Stream:
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
