# Strict base64url without padding (RFC 7515 §2, alerts.md §1), canonical only (RFC 4648 §3.5).
import binascii


class B64Error(ValueError):
    pass


def decode(s):
    """Decode base64url text (str or bytes); raise B64Error on any non-alphabet byte, a bad
    length, or unused bits set in the last character (so one byte string has one encoding:
    otherwise 4 or 16 spellings of the same signature decode alike)."""
    if isinstance(s, str):
        s = s.encode()
    n = len(s)
    if n % 4 == 1:
        raise B64Error("bad length")
    for c in s:
        # A-Z a-z 0-9 - _
        if not (65 <= c <= 90 or 97 <= c <= 122 or 48 <= c <= 57 or c == 45 or c == 95):
            raise B64Error("bad character")
    if n % 4:
        c = s[n - 1]
        if 65 <= c <= 90:
            v = c - 65
        elif 97 <= c <= 122:
            v = c - 71
        elif 48 <= c <= 57:
            v = c + 4
        else:
            v = 62 if c == 45 else 63
        # 2 chars carry 1 byte (4 unused bits), 3 chars carry 2 bytes (2 unused bits)
        if v & (15 if n % 4 == 2 else 3):
            raise B64Error("non-canonical")
    s = s.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-n % 4)
    try:
        return binascii.a2b_base64(s)
    except ValueError:
        raise B64Error("undecodable")
