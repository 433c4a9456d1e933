"""The local page's password on the host (docs/web.md "Config and files"): the rules a password
given at provisioning must meet, the stored form `pbkdf2-sha256$<iterations>$<salt>$<hash>` that
`config.json` key `web.pass` holds, and random passwords for many terminals. The one place
`cx fleet provision` (fleet/provision.py), the emulator and the tests take them from; the
terminal checks the same string in firmware/config.py and firmware/webauth.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

SCHEME = "pbkdf2-sha256"
ITERATIONS = 4096
"""What provisioning writes (web.md): every guess against a stolen `web.pass` costs 4,096
HMAC-SHA256 rounds, while the terminal pays them once per login (its check yields to alerts)."""
MIN_ITERATIONS, MAX_ITERATIONS = 1000, 100_000
"""The range the terminal accepts (web.md): fewer is too cheap, more stalls a login."""
SALT_BYTES, HASH_BYTES = 16, 32
MIN_CHARS, MAX_CHARS = 8, 64
"""Password length in characters (code points) of UTF-8 text."""
MAX_FILE = 4096
"""Bytes read from a password file: anything bigger is not one line of at most 64 characters."""
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
"""Generated passwords: lowercase and digits without the look-alikes i l o 0 1, so a village
operator types what the county's sheet shows on a phone keyboard without switching case."""
GROUPS, GROUP = 3, 4
"""abcd-efgh-jkmn: 12 characters of 31, about 59 bits; with the lockout, far beyond guessing."""

_B64 = r"[A-Za-z0-9_-]"
_HASH_RE = re.compile(rf"{SCHEME}\$([1-9][0-9]{{0,5}})\$({_B64}{{22}})\$({_B64}{{43}})\Z")


class WebPassError(ValueError):
    """A password or stored hash that is refused; the message says why in one line."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_password(password: str) -> None:
    """Raise WebPassError unless `password` may be provisioned: 8..64 characters, printable (no
    control characters, which no phone keyboard types), no blank at either end (an operator
    could never see it)."""
    n = len(password)
    if n < MIN_CHARS:
        raise WebPassError(f"is too short ({n} characters): at least {MIN_CHARS}")
    if n > MAX_CHARS:
        raise WebPassError(f"is too long ({n} characters): at most {MAX_CHARS}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in password):
        raise WebPassError("holds a control character (a tab, an escape …): letters, digits, "
                           "punctuation and spaces only")
    if password != password.strip():
        raise WebPassError("begins or ends with a blank: remove it")


def read_password(data: bytes) -> str:
    """The password of a password file's bytes: one line of UTF-8 (a UTF-8 BOM and one final line
    ending are dropped), checked by check_password. WebPassError says what is wrong."""
    if not data:
        raise WebPassError("is empty: the file's one line is the password")
    if len(data) > MAX_FILE:
        raise WebPassError(f"is over {MAX_FILE} bytes: one line of at most {MAX_CHARS} "
                           f"characters")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WebPassError("is not UTF-8 text") from None
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            text = text[:-len(end)]
            break
    if "\n" in text or "\r" in text:
        raise WebPassError("holds more than one line: the file's one line is the password")
    if not text:
        raise WebPassError("is empty: the file's one line is the password")
    check_password(text)
    return text


def derive(password: str, salt: bytes, iterations: int, length: int = HASH_BYTES) -> bytes:
    """PBKDF2-HMAC-SHA256 (RFC 8018 §5.2) of the UTF-8 password."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, length)


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = ITERATIONS) -> str:
    """`pbkdf2-sha256$<iterations>$<salt>$<hash>` (unpadded base64url; a fresh 16-byte salt
    from os.urandom unless given), the value of `web.pass`."""
    check_password(password)
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise WebPassError(f"iterations {iterations}: {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise WebPassError(f"salt of {len(salt)} bytes: {SALT_BYTES}")
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(derive(password, salt, iterations))}"


def parse_hash(stored: object) -> tuple[int, bytes, bytes]:
    """(iterations, salt, hash) of a `web.pass` string; WebPassError unless it has exactly the
    documented form (web.md): the scheme, 1,000..100,000 iterations, a 16-byte salt and a 32-byte
    hash in unpadded base64url."""
    m = _HASH_RE.match(stored) if isinstance(stored, str) else None
    if m is None:
        raise WebPassError(f"not {SCHEME}$<iterations>$<salt>$<hash>")
    iterations = int(m.group(1))
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise WebPassError(f"iterations {iterations}: {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    salt, digest = _unb64(m.group(2)), _unb64(m.group(3))
    if _b64(salt) != m.group(2) or _b64(digest) != m.group(3):  # stray bits in the last char
        raise WebPassError("salt or hash is not canonical base64url")
    return iterations, salt, digest


def verify(password: str, stored: str) -> bool:
    """True when `stored` (a valid `web.pass`) is the hash of `password`."""
    iterations, salt, want = parse_hash(stored)
    return hmac.compare_digest(derive(password, salt, iterations), want)


def new_password() -> str:
    """A random password for one terminal, from `secrets`: `abcd-efgh-jkmn` (ALPHABET)."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP))
                    for _ in range(GROUPS))
