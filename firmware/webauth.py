# The local page's password, sessions, CSRF tokens and the persistent login lockout (docs/web.md
# "Security limits"). The hash check yields to the event loop so a login never delays an alert.
import asyncio
import binascii
import hashlib
import json
import os
import time

import config
from fsutil import read_json, write_atomic
from micropython import const

PASS_FILE = "web/pass"  # a password changed on the page; wins over config.json's while valid
LOCK_FILE = "web/lock.json"
ITERATIONS = const(4096)  # what a password changed here is hashed with (as cx fleet provision)
YIELD_EVERY = const(32)  # PBKDF2 iterations between two turns of the event loop
MAX_SESSIONS = const(4)
IDLE_S = const(900)  # a session unused this long is gone
MAX_AGE_S = const(28800)  # and any session after 8 h
MAX_LOGIN_TOKENS = const(8)  # login forms handed out and not yet used
FAILS_BEFORE_LOCK = const(5)
LOCK_FIRST_S = const(60)  # doubling with each further failure ...
LOCK_MAX_S = const(3600)  # ... up to an hour
MIN_CHARS = const(8)
MAX_CHARS = const(64)


def _token():
    return binascii.hexlify(os.urandom(16)).decode()


def same(a, b):
    """Constant-time comparison of two byte strings (or str)."""
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


async def pbkdf2(password, salt, iterations):
    """PBKDF2-HMAC-SHA256, one 32-byte block (RFC 8018 §5.2), SHA-256 in C; the loop yields
    every YIELD_EVERY iterations (4,096 take ~136 ms on the unix port)."""
    key = password.encode() if isinstance(password, str) else password
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)

    def hmac(msg):
        h = hashlib.sha256(ipad)
        h.update(msg)
        o = hashlib.sha256(opad)
        o.update(h.digest())
        return o.digest()

    u = hmac(salt + b"\x00\x00\x00\x01")
    acc = int.from_bytes(u, "big")
    for i in range(1, iterations):
        u = hmac(u)
        acc ^= int.from_bytes(u, "big")
        if i % YIELD_EVERY == 0:
            await asyncio.sleep_ms(0)
    return acc.to_bytes(32, "big")


def _b64(data):
    return binascii.b2a_base64(data).strip().replace(b"+", b"-").replace(b"/", b"_") \
        .rstrip(b"=").decode()


def stored(cfg):
    """The password hash string in force: web/pass when valid, else config.json's, else None."""
    try:
        f = open(PASS_FILE)
        try:
            s = f.read(128).strip()
        finally:
            f.close()
        if config.web_hash(s) is not None:
            return s
    except OSError:
        pass
    w = cfg.get("web") or {}
    s = w.get("pass")
    return s if config.web_hash(s) is not None else None


def _mkdir(d):
    try:
        os.mkdir(d)
    except OSError:
        pass


class Auth:
    """Sessions in RAM (token -> [created, used, csrf]), the lockout on flash."""

    def __init__(self, cfg, log, now=time.time):
        self.cfg = cfg
        self.log = log
        self.now = now
        self.sessions = {}
        self.login_tokens = []  # (token, issued)
        self._busy = False  # one hash at a time: four parallel logins cannot hog the loop
        v, _ = read_json(LOCK_FILE, 256)
        self.fails = 0
        self.until = 0
        if isinstance(v, dict):
            f, left = v.get("fails"), v.get("left")
            if isinstance(f, int) and 0 <= f < 10000:
                self.fails = f
            if isinstance(left, int) and 0 < left <= LOCK_MAX_S:
                self.until = self.now() + left  # a reboot never shortens a lock

    @property
    def has_password(self):
        return stored(self.cfg) is not None

    def locked_for(self):
        """Seconds the login stays locked (0: open)."""
        left = self.until - self.now()
        return int(left) + 1 if left > 0 else 0

    def _save_lock(self, left):
        _mkdir("web")
        try:
            write_atomic(LOCK_FILE, json.dumps({"fails": self.fails, "left": left}).encode())
        except OSError as e:
            self.log("web_error", where="lock", error=repr(e))

    def unlock(self):
        """A password reset in recovery mode also ends a lockout."""
        self.fails = 0
        self.until = 0
        self._save_lock(0)

    def login_token(self):
        t = _token()
        self.login_tokens.append((t, self.now()))
        while len(self.login_tokens) > MAX_LOGIN_TOKENS:
            self.login_tokens.pop(0)
        return t

    def take_login_token(self, t):
        for i in range(len(self.login_tokens)):
            tok, when = self.login_tokens[i]
            if same(tok, t or "") and self.now() - when < IDLE_S:
                self.login_tokens.pop(i)
                return True
        return False

    async def check(self, password):
        """"ok", "wrong", "locked", "busy" or "unset"."""
        s = stored(self.cfg)
        if s is None:
            return "unset"
        if self.locked_for():
            return "locked"
        if self._busy:
            return "busy"
        n, salt, want = config.web_hash(s) or (0, b"", b"")
        self._busy = True
        try:
            got = await pbkdf2(password, salt, n)
        finally:
            self._busy = False
        if same(got, want):
            if self.fails:
                self.fails = 0
                self._save_lock(0)
            return "ok"
        self.fails += 1
        left = 0
        if self.fails >= FAILS_BEFORE_LOCK:
            left = LOCK_FIRST_S << min(self.fails - FAILS_BEFORE_LOCK, 6)
            if left > LOCK_MAX_S:
                left = LOCK_MAX_S
            self.until = self.now() + left
        self._save_lock(left)
        self.log("web_login_failed", fails=self.fails, locked_s=left)
        return "locked" if left else "wrong"

    def open_session(self):
        now = self.now()
        t = _token()
        self.sessions[t] = [now, now, _token()]
        while len(self.sessions) > MAX_SESSIONS:
            oldest = None
            for k, v in self.sessions.items():
                if oldest is None or v[1] < self.sessions[oldest][1]:
                    oldest = k
            del self.sessions[oldest]
        return t

    def session(self, token):
        """The session's [created, used, csrf] or None; a used one is kept alive."""
        if not token:
            return None
        now = self.now()
        for k in list(self.sessions):
            v = self.sessions[k]
            if now - v[1] > IDLE_S or now - v[0] > MAX_AGE_S:
                del self.sessions[k]
        for k, v in self.sessions.items():
            if same(k, token):
                v[1] = now
                return v
        return None

    def close_session(self, token):
        for k in list(self.sessions):
            if same(k, token or ""):
                del self.sessions[k]

    async def set_password(self, new):
        """Hash `new` and store it in web/pass (atomically). Returns None or a reason."""
        if not MIN_CHARS <= len(new) <= MAX_CHARS:
            return "pass_length"
        if self._busy:
            return "busy"
        salt = os.urandom(16)
        self._busy = True
        try:
            h = await pbkdf2(new, salt, ITERATIONS)
        finally:
            self._busy = False
        _mkdir("web")
        try:
            write_atomic(PASS_FILE, ("pbkdf2-sha256$%d$%s$%s" % (ITERATIONS, _b64(salt),
                                                                 _b64(h))).encode())
        except OSError:
            return "flash_full"
        self.log("web_password_changed")
        return None
