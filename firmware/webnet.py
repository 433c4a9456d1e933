# Network settings from the local page (docs/web.md "Network settings"): checked so that a
# setting which would cut the terminal (or the operator) off is refused, stored in net.json,
# handed to board.net_apply() (the boards reconfigure their interface; the emulator records it).
import json

import board
from fsutil import read_json, write_atomic

PATH = "net.json"
KEYS = ("mode", "address", "netmask", "gateway", "dns")


def load():
    v, _ = read_json(PATH, 1024)
    return v if isinstance(v, dict) else {"mode": "dhcp"}


def ip(s):
    """The dotted IPv4 address s as an int, or None."""
    p = s.split(".") if isinstance(s, str) else []
    if len(p) != 4:
        return None
    n = 0
    for x in p:
        if not x.isdigit() or len(x) > 3 or int(x) > 255 or (len(x) > 1 and x[0] == "0"):
            return None
        n = n << 8 | int(x)
    return n


def check(net, peer=None):
    """None when `net` may be stored, else the reason (a webpage message key). `peer`: the
    operator's address; a static subnet that would not hold it cuts them off."""
    if net.get("mode") == "dhcp":
        for k in ("address", "netmask", "gateway", "dns"):
            net[k] = ""
        return None
    if net.get("mode") != "static":
        return "bad_request"
    a, m, g = ip(net.get("address")), ip(net.get("netmask")), ip(net.get("gateway"))
    d = net.get("dns") or ""
    if a is None or g is None or (d and ip(d) is None):
        return "bad_address"
    if m is None or m == 0 or m == 0xFFFFFFFF or (~m & 0xFFFFFFFF) & ((~m & 0xFFFFFFFF) + 1):
        return "bad_netmask"  # not 1..31 contiguous leading ones
    if a & m != g & m:
        return "gw_subnet"
    host = ~m & 0xFFFFFFFF
    if a == g or a & host in (0, host) or g & host in (0, host) or a >> 24 in (0, 127) \
            or a >> 28 >= 14:
        return "host_address"
    p = ip(peer)
    if p is not None and p >> 24 != 127 and p & m != a & m:
        return "cut_off"
    return None


def store(net, log):
    """Write net.json (atomically) and apply it; None or a reason."""
    net = {k: net.get(k) or "" for k in KEYS}
    try:
        write_atomic(PATH, json.dumps(net).encode())
    except OSError:
        return "flash_full"
    log("net_settings", **net)
    apply = getattr(board, "net_apply", None)
    if apply is not None:
        apply(net)
    return None
