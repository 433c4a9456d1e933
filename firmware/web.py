# The local page's HTTP server (docs/web.md): microdot's app behind our own request reader, with
# the limits of "Security limits", a bounded connection count and idle/whole-request timeouts,
# so that no client, slow or many, can hold the event loop or the heap away from alert intake.
import asyncio
import json
import time

import board
import webauth
import webpage as P
from microdot import Microdot, Request, Response
from microdot.microdot import NoCaseDict
from micropython import const

MAX_LINE = const(1024)  # request line, and each header line
MAX_HEADERS = const(32)
MAX_HEAD = const(4096)  # all header lines together
MAX_FORM = const(2048)  # an urlencoded form body
MAX_WAV = const(1048576)  # the local announcement (limits.MAX_CLIP, ~32 s at 16 kHz)
MAX_UPLOAD = const(1052672)  # MAX_WAV plus 4 KB of multipart overhead
MAX_CONN = const(4)  # a fifth connection is answered 503 and closed
IDLE_MS = const(10000)  # no byte for this long: the client is dropped
WHOLE_MS = const(30000)  # a whole request (an upload: UPLOAD_MS)
UPLOAD_MS = const(120000)
CHUNK = const(512)  # the reader's and the upload's fixed buffer
YIELD_LINES = const(8)  # log lines parsed between two yields to alert intake
WAIT_ALERTS_MS = const(2000)  # the page waits at most this long for envelopes to be verified
LINGER_MS = const(50)  # a refused client's request is read this long before the close
SHED_MS = const(5000)  # after a verification ran out of heap, every connection is answered 503
ANNOUNCE = "local/announce.wav"
COOKIE = "cxs"
_BUSY = "终端正忙,请稍后再试。 The terminal is busy: try again in a moment.\n".encode()
_503 = b"HTTP/1.0 503 Busy\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: %d" \
    b"\r\nRetry-After: 10\r\n\r\n%s" % (len(_BUSY), _BUSY)


class HTTPError(Exception):
    def __init__(self, status, key):
        super().__init__(key)
        self.status = status
        self.key = key


class _Reader:
    """The client's bytes through one fixed buffer: lines bounded, every read under the idle and
    the whole-request deadline, the body bounded by Content-Length (a shorter one is `cut`)."""

    def __init__(self, stream):
        self.s = stream
        self.buf = bytearray(CHUNK)
        self.mv = memoryview(self.buf)
        self.lo = self.hi = 0
        self.left = -1  # body bytes still to come; -1: the head is being read
        self.deadline = time.ticks_add(time.ticks_ms(), WHOLE_MS)

    def extend(self, ms):
        self.deadline = time.ticks_add(time.ticks_ms(), ms)

    async def _fill(self):
        wait = time.ticks_diff(self.deadline, time.ticks_ms())
        if wait <= 0:
            raise HTTPError(408, "timeout")
        try:
            n = await asyncio.wait_for_ms(self.s.readinto(self.mv), min(wait, IDLE_MS))
        except asyncio.TimeoutError:
            raise HTTPError(408, "timeout")
        if not n:
            raise HTTPError(400, "cut")
        self.lo, self.hi = 0, n

    async def readline(self, limit, key):
        out = b""
        while True:
            if self.lo == self.hi:
                await self._fill()
            i = self.buf.find(b"\n", self.lo, self.hi)
            end = self.hi if i < 0 else i + 1
            if len(out) + end - self.lo > limit:
                raise HTTPError(414 if key == "line_long" else 431, key)
            out += self.mv[self.lo:end]
            self.lo = end
            if i >= 0:
                return out

    async def read(self, n=-1):
        """n body bytes (fewer only at the body's end; n < 0: what one read brings). Never a
        short read mid-body: microdot's multipart parser takes one for the whole and then
        misses a boundary split across two reads (an upload refused at random, as TCP happens
        to cut it). Past the body's end (a multipart body without its closing boundary) the
        request is malformed: that parser would ask again forever."""
        if self.left <= 0:
            raise HTTPError(400, "bad_form")
        if self.lo == self.hi:
            await self._fill()
        if n < 0:
            n = self.hi - self.lo
        if n > self.left:
            n = self.left
        out = b""
        while len(out) < n:
            if self.lo == self.hi:
                await self._fill()
            k = min(n - len(out), self.hi - self.lo)
            out += self.mv[self.lo:self.lo + k]
            self.lo += k
        self.left -= n
        return out

    async def readexactly(self, n):
        return await self.read(n) if n > 0 else b""


class _Writer:
    def __init__(self, w):
        self.w = w

    async def awrite(self, data):
        self.w.write(data)
        await asyncio.wait_for_ms(self.w.drain(), IDLE_MS)

    async def aclose(self):
        pass


async def _close(writer):
    # close() alone leaves the socket open on this asyncio (wait_closed() closes it): a client
    # answered 503 would wait for the end of the answer until the socket is collected
    try:
        writer.close()
        await writer.wait_closed()
    except Exception:
        pass


async def _maybe(r):
    # the Local API's actions may be plain functions or coroutines (docs/web.md "Actions")
    if r is not None and hasattr(r, "send"):
        return await r
    return r


def _peer(writer):
    # the client's IPv4 address as text, when the port tells it
    try:
        p = writer.get_extra_info("peername")
        if isinstance(p, tuple):
            return p[0]
        if isinstance(p, (bytes, bytearray)) and len(p) >= 8:  # a raw sockaddr_in
            return "%d.%d.%d.%d" % (p[4], p[5], p[6], p[7])
    except Exception:
        pass
    return None


def _tail(path, nbytes):
    """The whole lines in the last nbytes of a file (oldest first)."""
    try:
        f = open(path, "rb")
    except OSError:
        return []
    try:
        size = f.seek(0, 2)
        f.seek(size - nbytes if size > nbytes else 0)
        data = f.read(nbytes)
    finally:
        f.close()
    lines = data.split(b"\n")
    if size > nbytes:
        lines.pop(0)
    return [ln for ln in lines if ln]


class Web(Microdot):
    def __init__(self, cfg, log, term, local=None):
        super().__init__()
        self.cfg = cfg
        self.log = log
        self.term = term
        self.local = local
        self.auth = webauth.Auth(cfg, log)
        self.active = 0  # connections being served
        self.refused = 0  # connections answered 503
        self.dropped = 0  # connections lost while answering
        self.shed_count = 0  # times alert intake ran out of heap and the page let go (shed)
        self._shed_at = None  # ticks_ms of the last shed: 503 to everyone for SHED_MS after
        self._tasks = []  # the tasks serving a connection now (at most MAX_CONN)
        self._alerts = None  # (receipts logged, last alerts): see last_alerts()
        import webroutes

        webroutes.routes(self)

    def shed(self):
        """Alert intake ran out of heap (intake.py): end every connection being served, so its
        buffers can be collected, and answer 503 to new ones for SHED_MS."""
        if not self._shedding():
            self.log("web_shed", conns=self.active)
        self.shed_count += 1
        self._shed_at = time.ticks_ms()
        for t in self._tasks:
            t.cancel()  # CancelledError at its next await; handle_request's finally closes

    def _shedding(self):
        if self._shed_at is None:
            return False
        if time.ticks_diff(time.ticks_ms(), self._shed_at) < SHED_MS:
            return True
        self._shed_at = None
        return False

    async def handle_request(self, reader, writer):
        if self.active >= MAX_CONN or self._shedding():
            self.refused += 1
            try:
                writer.write(_503)
                await asyncio.wait_for_ms(writer.drain(), 1000)
                # the request's bytes read, not left unread: closing on them resets the
                # connection, and the client may lose the answer (TCP RST) before reading it
                await asyncio.wait_for_ms(reader.read(MAX_LINE), LINGER_MS)
            except Exception:
                pass
            await _close(writer)
            return
        self.active += 1
        task = asyncio.current_task()
        self._tasks.append(task)
        try:
            await self._serve(reader, writer)
        except OSError:  # a client gone mid-answer: counted, not logged (no log flood)
            self.dropped += 1
        except Exception as e:  # a client's trouble never reaches the terminal
            self.log("web_error", error=repr(e))
        finally:
            self.active -= 1
            self._tasks.remove(task)
            await _close(writer)

    async def _serve(self, reader, writer):
        rd, w = _Reader(reader), _Writer(writer)
        req = None
        try:
            req = await self._request(rd, w)
            if req is None:
                return
            await self.alerts_first()
            res = await self.dispatch_request(req)
        except HTTPError as e:
            if e.key in ("timeout", "cut"):
                return  # nobody is listening any more: drop the connection
            res = await self.error(req, e)
        await res.write(w)  # type: ignore (our _Writer has the one method used)

    async def alerts_first(self):
        """Yield to the loop; while envelopes wait to be verified, wait for them (bounded): the
        page never holds the loop while an alert is on its way (alerts.md §5)."""
        await asyncio.sleep_ms(0)
        intake = getattr(self.term, "intake", None)
        if intake is None:
            return
        t0 = time.ticks_ms()
        while intake.pending() and time.ticks_diff(time.ticks_ms(), t0) < WAIT_ALERTS_MS:
            await asyncio.sleep_ms(10)

    async def _request(self, rd, w):
        try:
            line = (await rd.readline(MAX_LINE, "line_long")).decode().split()
        except HTTPError as e:
            if e.key == "cut":
                return None  # connected and closed without a request
            raise
        except ValueError:  # not UTF-8
            raise HTTPError(400, "bad_request")
        if len(line) != 3 or not line[2].startswith("HTTP/1.") or line[1][:1] != "/":
            raise HTTPError(400, "bad_request")
        headers = NoCaseDict()
        total = 0
        while True:
            h = await rd.readline(MAX_LINE, "header_long")
            total += len(h)
            if total > MAX_HEAD or len(headers) >= MAX_HEADERS:
                raise HTTPError(431, "header_long")
            if h in (b"\r\n", b"\n"):
                break
            try:
                k, v = h.decode().split(":", 1)
            except ValueError:
                raise HTTPError(400, "bad_request")
            headers[k.strip()] = v.strip()
        cl = headers.get("Content-Length", "0")
        if not cl.isdigit() or len(cl) > 9 or "Transfer-Encoding" in headers:
            raise HTTPError(400, "bad_request")
        rd.left = int(cl)
        path = line[1].split("?", 1)[0]
        body, stream = b"", None
        if path == "/upload" and line[0] == "POST":
            if rd.left > MAX_UPLOAD:
                raise HTTPError(413, "too_large")
            stream = rd
        elif rd.left > MAX_FORM:
            raise HTTPError(413, "form_large")
        else:
            body = await rd.readexactly(rd.left)
        try:
            req = Request(self, ("", 0), line[0], line[1], line[2][5:], headers, body=body,
                          stream=stream, sock=(rd, w))
        except ValueError:
            raise HTTPError(400, "bad_request")
        req.max_content_length = MAX_UPLOAD
        req.g.rd = rd
        req.g.peer = _peer(w.w)
        return req

    @property
    def recovery(self):
        # recovery mode (docs/web.md): a password reset without the old one
        return self.local is not None and self.local.recovery

    # --- helpers the routes share -------------------------------------------------------------

    def lang(self, req):
        return "en" if req is not None and req.cookies.get("lang") == "en" else "zh"

    def html(self, parts, status=200):
        """A page's sections (webpage.page()) as one response: written section by section,
        each write yielding to the loop."""
        parts = [x.encode() for x in parts]
        h = {"Content-Type": "text/html; charset=UTF-8",
             "Content-Length": str(sum(len(x) for x in parts)), "Cache-Control": "no-store",
             "X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'"}
        return Response(iter(parts), status, h)  # type: ignore (microdot takes any iterator)

    async def error(self, req, e):
        lang = self.lang(req)
        s = self.auth.session(req.cookies.get(COOKIE)) if req is not None else None
        if s is not None and e.status < 500:
            return self.html(await self.status_page(lang, s[2], err=P.t(lang, e.key)), e.status)
        return self.html(P.page(lang, P.t(lang, "title"), '<p><a href="/">%s</a></p>'
                                % P.t(lang, "back"), err=P.t(lang, e.key)), e.status)

    def form(self, req):
        try:
            f = req.form
        except ValueError:  # bad %-escapes or not UTF-8
            raise HTTPError(400, "bad_form")
        return f or {}

    def same_site(self, req):
        # a browser names where a form came from: another site's is refused (docs/web.md)
        site = req.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = req.headers.get("Origin")
        return origin is None or origin == "http://" + req.headers.get("Host", "")

    async def last_alerts(self):
        """The last 8 alerts as (t, kind, level, final status), newest first, from the log's
        receipts; parsed again only when a receipt was logged since (a reload costs nothing),
        yielding every YIELD_LINES lines. Envelopes ignored (for another village, duplicates)
        are none of the operator's business."""
        key = self.log.counts.get("receipt", 0) if hasattr(self.log, "counts") else None
        if key is not None and self._alerts is not None and self._alerts[0] == key:
            return self._alerts[1]
        alerts = {}
        order = []
        n = 0
        for ln in _tail(self.log.path, 8192):
            if b'"receipt"' not in ln:
                continue
            n += 1
            if n % YIELD_LINES == 0:
                await asyncio.sleep_ms(0)
            try:
                e = json.loads(ln)
            except ValueError:
                continue
            st = e.get("status")
            if st == "ignored":
                continue
            a = e.get("alert") or "-"
            r = alerts.get(a)
            if r is None:
                r = alerts[a] = [e.get("t"), e.get("kind"), e.get("level"), None]
                order.append(a)
            if r[1] is None:
                r[1], r[2] = e.get("kind"), e.get("level")
            r[3] = st if e.get("reason") is None else "%s:%s" % (st, e["reason"])
        out = [tuple(alerts[a]) for a in order[-8:]]
        out.reverse()
        self._alerts = (key, out)
        return out

    async def status_data(self):
        term = self.term
        hb = term.agent.heartbeat()
        cur = term.arbiter.current
        playing = None
        if cur is not None:
            playing = (cur.payload.get("kind"), cur.payload.get("level"), getattr(cur, "what", None))
        alerts = await self.last_alerts()
        faults = [k for k, v in term.agent.faults.items() if v]
        vol = self.local.volume if self.local is not None else self.cfg["volume"]
        try:  # the announcement's length, from its data chunk (16-bit mono 16 kHz)
            ann = self.local.seconds(ANNOUNCE) if self.local is not None else None
        except Exception:
            ann = None
        return {"link": hb["link"] if term.mqtt.connected else "offline", "rssi": hb["rssi"],
                "volume": vol, "playing": playing, "announce": ann, "alerts": alerts,
                "faults": faults, "v": hb["v"], "up": hb["up"]}

    async def status_page(self, lang, csrf, msg=None, err=None):
        st = await self.status_data()
        await asyncio.sleep_ms(0)
        return P.status(lang, csrf, st, msg, err)


async def run(cfg, log, term, local):
    """The page's one task: listen on board.web_port() (config web.port, 80 on the boards) and
    serve until cancelled; the emulator hears a `web` event with the URL."""
    port = board.web_port((cfg.get("web") or {}).get("port", 80))
    host = getattr(board, "WEB_HOST", "0.0.0.0")
    app = Web(cfg, log, term, local)
    term.web = app
    await asyncio.start_server(app.handle_request, host, port, backlog=8)
    log("web_listen", port=port)
    board.event("web", {"url": "http://%s:%d/" % (host, port)})
    while True:
        await asyncio.sleep(3600)
