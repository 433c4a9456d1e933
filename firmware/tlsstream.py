# MQTT over TLS on either path: mbedTLS (the ssl module) over any asyncio stream pair, an IP
# socket or a 4G modem link alike (docs/link.md "TLS", docs/decisions.md).
import asyncio
import io
import ssl

import evlog
from micropython import const

_IN = const(2048)  # ciphertext taken from the transport per read; mbedTLS reassembles records

# mbedTLS certificate verification messages (x509_crt_verify_info) -> reason codes for the log,
# most specific first: several flags may be set at once.
_CERT = (
    ("expired", "cert_expired"),
    ("future", "cert_not_yet_valid"),
    ("Common Name", "cert_wrong_host"),
    ("not correctly signed", "cert_untrusted"),
    ("revoked", "cert_revoked"),
)


class TLSError(OSError):
    """A TLS failure; .reason is a short code for the log, .detail what mbedTLS said."""

    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def context(ca):
    """A client context trusting only the DER certificate `ca` (bytes); TLSError("ca_invalid")
    when mbedTLS cannot read it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # the unix and ESP32 ports default to CERT_NONE
    try:
        ctx.load_verify_locations(cadata=ca)
    except Exception as e:
        raise TLSError("ca_invalid", str(e).strip())
    return ctx


def _reason(e):
    if isinstance(e, TLSError):
        return e
    msg = str(e).strip()
    if isinstance(e, ValueError):  # the ssl module raises certificate failures as ValueError
        for key, code in _CERT:
            if key in msg:
                return TLSError(code, msg)
        return TLSError("cert_invalid", msg)
    if isinstance(e, MemoryError):
        return TLSError("no_memory")
    return TLSError("tls_error", msg or repr(e))


class _Pipe(io.IOBase):
    """mbedTLS's transport: ciphertext in from a buffer the stream fills, out to a buffer the
    stream forwards. Never blocks: an empty buffer is EAGAIN, which mbedTLS reports as 'want
    read' and the stream answers by awaiting the transport. Nothing here may raise: an exception
    inside a callback would unwind through mbedTLS."""

    def __init__(self):
        self.buf = bytearray(_IN)
        self.mv = memoryview(self.buf)
        self.i = self.n = 0
        self.out = bytearray()

    def readinto(self, b):
        k = self.n - self.i
        if k <= 0:
            return None
        if k > len(b):
            k = len(b)
        b[:k] = self.mv[self.i:self.i + k]
        self.i += k
        return k

    def write(self, b):
        self.out += b
        return len(b)

    def ioctl(self, req, arg):
        return 0


class TLSStream:
    """A TLS client session over the stream pair (r, w), used as both reader and writer like
    the transports it wraps (readinto/read, write + drain, close).

    The handshake runs in the first drain(), carrying the first bytes written (the MQTT
    CONNECT), as MicroPython's own asyncio TLS streams do: the ssl module has no handshake call
    that could be awaited apart. It verifies the broker's certificate against the CA and its name
    against `host`; a failure raises TLSError(reason) there and is logged as `tls_fail`."""

    def __init__(self, ctx, r, w, host, log=None, path=None):
        self._r = r
        self._w = w
        self._log = log
        self._path = path
        self._p = _Pipe()
        self._s = ctx.wrap_socket(self._p, server_hostname=host, do_handshake_on_connect=False)
        self._ok = False  # handshake done
        self._first = None  # bytes written before it: they complete it
        self._closed = False  # mbedTLS's session is freed: never call into it again

    def _fail(self, e):
        e = _reason(e)
        if not self._ok:
            evlog.call(self._log, "tls_fail", path=self._path, reason=e.reason, detail=e.detail)
        return e

    async def _handshake(self, first):
        while True:
            if self._closed:
                raise TLSError("closed")
            try:
                n = self._s.write(first)
            except Exception as e:
                raise self._fail(e)
            await self._push()
            if n is not None:
                break
            if not await self._fill():
                raise self._fail(TLSError("eof"))  # the broker hung up mid-handshake
        self._ok = True
        self._first = None
        if n < len(first):
            self.write(memoryview(first)[n:])

    def _forward(self):
        o = self._p.out
        if o:
            self._w.write(o)  # both transports copy or send at once
            self._p.out = bytearray()

    async def _push(self):
        if self._p.out:
            self._forward()
            await self._w.drain()

    async def _fill(self):
        # Called only when mbedTLS has consumed everything: refill from the start.
        p = self._p
        k = await self._r.readinto(p.mv)
        if not k:
            return False
        p.i = 0
        p.n = k
        return True

    async def readinto(self, buf):
        while True:
            if self._closed:
                raise TLSError("closed")
            try:
                n = self._s.readinto(buf)
            except Exception as e:
                raise self._fail(e)
            self._forward()  # a post-handshake message may need an answer; the next drain sends it
            if n is not None:
                return n  # 0: the broker closed the session
            if not await self._fill():
                return 0

    async def read(self, n=-1):
        b = bytearray(n if 0 < n < _IN else _IN)
        k = await self.readinto(b)
        return bytes(b[:k])

    def write(self, b):
        if not self._ok:
            # kept (copied: callers reuse their buffers) until drain() completes the handshake
            self._first = bytes(b) if self._first is None else self._first + b
            return
        if self._closed:
            raise TLSError("closed")
        mv = memoryview(b)
        i = 0
        try:
            while i < len(mv):
                k = self._s.write(mv[i:])
                if k is None:  # mbedTLS wants input mid-session (renegotiation is off)
                    raise TLSError("tls_stalled")
                i += k
        except Exception as e:
            raise _reason(e)
        self._forward()

    async def drain(self):
        first = self._first
        if not self._ok and first is not None:
            await self._handshake(first)
        await self._w.drain()

    def close(self):
        if not self._closed:
            self._closed = True
            try:
                self._s.close()  # frees mbedTLS's buffers now, not at the next collection
            except Exception:
                pass
        self._w.close()

    async def wait_closed(self):
        self.close()
        await self._w.wait_closed()


def wrap(ctx, r, w, host, log=None, path=None):
    """(stream, stream) that carry TLS over (r, w); the handshake runs in the first drain()."""
    try:
        s = TLSStream(ctx, r, w, host, log, path)
    except Exception as e:  # no memory for mbedTLS's session: the connection is of no use
        w.close()
        asyncio.create_task(_wait_closed(w))  # MicroPython's Stream closes in wait_closed()
        raise _reason(e)
    return s, s


async def _wait_closed(w):
    try:
        await w.wait_closed()
    except Exception:
        pass
