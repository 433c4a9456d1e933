# Strict base64url without padding (RFC 7515 §2, alerts.md §1).
import binascii


class B64Error(ValueError):
    pass


def decode(s):
    """Decode base64url text (str or bytes); raise B64Error on any non-alphabet byte or bad length."""
    if isinstance(s, str):
        s = s.encode()
    n = len(s)
    if n % 4 == 1:
        raise B64Error("bad length")
    for c in s:
        # A-Z a-z 0-9 - _
        if not (65 <= c <= 90 or 97 <= c <= 122 or 48 <= c <= 57 or c == 45 or c == 95):
            raise B64Error("bad character")
    s = s.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-n % 4)
    try:
        return binascii.a2b_base64(s)
    except ValueError:
        raise B64Error("undecodable")


def encode(b):
    return binascii.b2a_base64(b).rstrip(b"\n=").replace(b"+", b"-").replace(b"/", b"_").decode()
