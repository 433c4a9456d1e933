# Terminal config: load with validation, fall back to the last good copy, save power-safely.
import json

import b64
import region
from fsutil import note_damage, parse_json, read_bounded, read_bytes, write_atomic
from limits import MAX_ID, MAX_KID, MAX_SCOPE, MAX_USES
from micropython import const

PATH = "config.json"
BACKUP = "config.bak"  # the last copy that loaded and validated
MAX_NAME = 32  # a file named by the config (the TLS CA) lies beside it: a plain name, no path

# Optional keys and their defaults (specs/emulator.md "Config"); documented in docs/config.md.
DEFAULTS = {
    "profile": "horn",  # "horn" (village loudspeaker) or "column" (town sound column)
    "warmup_ms": None,  # None: the profile's default (amp.PROFILES)
    "hold_ms": None,
    "keepalive": 60,  # MQTT keep-alive over IP, s
    "wdt_ms": 15000,  # watchdog timeout
    "queue_max": 64,  # offline receipts kept
    "clip_cache_bytes": 1048576,
    "keepalive_4g": 240,  # MQTT keep-alive over 4G, s (docs/link.md: metered cost)
    "ip_probe_ms": 1500,  # on IP: ping after this much silence, declared dead after twice it
    "link_hysteresis_s": 60,  # IP must stay healthy this long before leaving 4G
    "reconnect_max_ms": 10000,  # longest wait between reconnect attempts
    "apn": "cmnet",  # 4G access point name
    "hb_s": 60,  # heartbeat interval on IP, s (docs/fleet-protocol.md)
    "hb_4g_s": 900,  # on 4G (metered), s
    "volume": 80,  # local broadcast and self-test reference volume
    "line_open_ma": 50,  # speaker-line current while playing below this: line open
    "line_short_ma": 4000,  # above this: line shorted
    "mains_mv": 13000,  # supply at or above: on mains (charger float voltage)
    "battery_low_mv": 11500,  # below: battery low
    "ota_trial_s": 300,  # a new version must reach the fleet and pass its self-test in this
    "ota_stall_s": 120,  # an OTA download that gains no byte for this long ends `unreachable`
}


# (low, high) of every optional integer key; warmup_ms and hold_ms may also be None. A value out
# of range or of the wrong type is a damaged field: strict validation refuses the config, a load
# from flash replaces the field by its default (logged, counted) and keeps the rest.
RANGES = {
    "warmup_ms": (0, 10000),
    "hold_ms": (0, 600000),
    "keepalive": (1, 65535),
    "wdt_ms": (1000, 600000),
    "queue_max": (1, 1024),
    "clip_cache_bytes": (0, 67108864),
    "keepalive_4g": (1, 65535),
    "ip_probe_ms": (100, 600000),
    "link_hysteresis_s": (0, 86400),
    "reconnect_max_ms": (100, 3600000),
    "hb_s": (1, 86400),
    "hb_4g_s": (1, 86400),
    "volume": (0, 100),
    "line_open_ma": (0, 100000),
    "line_short_ma": (0, 100000),
    "mains_mv": (0, 100000),
    "battery_low_mv": (0, 100000),
    "ota_trial_s": (10, 3600),
    "ota_stall_s": (5, 3600),
}
MAX_FILE = const(65536)  # bytes of config.json: a bigger file is damage, never read into the heap
MAX_ANCHORS = const(32)
_ID_CHARS = "._:-"  # beside A-Z a-z 0-9: the device id names MQTT topics, so no / + # or blanks


class ConfigError(ValueError):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _int_in(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _anchor_problem(a):
    # None when a is a usable trust anchor (alerts.md §2), else what is wrong with it
    if not isinstance(a, dict):
        return "not an object"
    kid = a.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID:
        return "kid"
    try:
        if len(b64.decode(a.get("pub"))) != 32:
            return "pub"
    except (b64.B64Error, TypeError):
        return "pub"
    sc = a.get("scope")
    if not isinstance(sc, list) or not 1 <= len(sc) <= MAX_SCOPE:
        return "scope"
    for p in sc:
        if not isinstance(p, str) or not 2 <= len(p) <= 12 or not p.isdigit():
            return "scope"
    use = a.get("use")
    if not isinstance(use, list) or not 1 <= len(use) <= MAX_USES:
        return "use"
    for u in use:
        if not isinstance(u, str) or not 1 <= len(u) <= 16:
            return "use"
    return None


def _check_tls(m):
    # "tls": true asks for MQTT over TLS, verified against the CA certificate (DER) in the flash
    # file "ca"; absent or false is plain MQTT, as before (docs/provisioning.md "TLS").
    tls = m.get("tls", False)
    if not isinstance(tls, bool):
        raise ConfigError("mqtt tls")
    if tls:
        ca = m.get("ca")
        if not isinstance(ca, str) or not 1 <= len(ca) <= MAX_NAME or "/" in ca or ca[0] == ".":
            raise ConfigError("mqtt ca")


def web_hash(s):
    """(iterations, salt, hash) of a password hash string `pbkdf2-sha256$<iter>$<salt>$<hash>`
    (docs/web.md "Config and files": salt 16 and hash 32 bytes in unpadded base64url, iterations
    1,000..100,000), or None when s is not one."""
    if not isinstance(s, str) or len(s) > 96:
        return None
    parts = s.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2-sha256" or not parts[1].isdigit() \
            or len(parts[1]) > 6 or parts[1][0] == "0":
        return None
    n = int(parts[1])
    try:
        salt, h = b64.decode(parts[2]), b64.decode(parts[3])
    except b64.B64Error:
        return None
    if not 1000 <= n <= 100000 or len(salt) != 16 or len(h) != 32:
        return None
    return n, salt, h


def _check_web(w):
    # "web" is optional (docs/web.md): without a password the page offers nothing
    if w is None:
        return
    if not isinstance(w, dict) or ("pass" in w and web_hash(w["pass"]) is None):
        raise ConfigError("web pass")
    if "port" in w and not _int_in(w["port"], 1, 65535):
        raise ConfigError("web port")
    if "ap_key" in w and not ap_key_ok(w["ap_key"]):
        raise ConfigError("web ap_key")


def ap_key_ok(k):
    """The recovery access point's WPA2 passphrase (docs/web.md "Recovery mode"): 8..63
    printable ASCII characters, as WPA2-PSK takes them."""
    if not isinstance(k, str) or not 8 <= len(k) <= 63:
        return False
    for c in k:
        if not 32 <= ord(c) < 127:
            return False
    return True


def _valid_id(s):
    if not isinstance(s, str) or not 1 <= len(s) <= MAX_ID:
        return False
    for c in s:
        if not (c.isalpha() and ord(c) < 128 or c.isdigit() or c in _ID_CHARS):
            return False
    return True


def _optional_problem(k, v):
    if k == "profile":
        return None if v in ("horn", "column") else k
    if k == "apn":
        return None if isinstance(v, str) and 1 <= len(v) <= 64 and " " not in v else k
    if v is None and DEFAULTS[k] is None:
        return None
    lo, hi = RANGES[k]
    return None if _int_in(v, lo, hi) else k


def validate(cfg, problems=None):
    """Raise ConfigError(reason) unless cfg is a usable config; return it with defaults filled.
    With a list `problems` (a load from flash), a damaged trust anchor is dropped and a damaged
    optional field reset to its default, each named in `problems`; without it, both raise."""
    if not isinstance(cfg, dict):
        raise ConfigError("not an object")
    if not _valid_id(cfg.get("id")):
        raise ConfigError("id")
    if not region.valid_code(cfg.get("region")):
        raise ConfigError("region")
    trust = cfg.get("trust")
    if not isinstance(trust, list) or len(trust) > MAX_ANCHORS:
        raise ConfigError("trust")
    good = []
    for i in range(len(trust)):
        why = _anchor_problem(trust[i])
        if why is None:
            good.append(trust[i])
        elif problems is None:
            raise ConfigError("trust " + why)
        else:
            problems.append("trust[%d] %s" % (i, why))
    cfg["trust"] = good
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not isinstance(m.get("host"), str) or not m["host"] \
            or not _int_in(m.get("port"), 1, 65535):
        raise ConfigError("mqtt")
    for k in ("user", "password"):
        if m.get(k) is not None and not isinstance(m[k], str):
            raise ConfigError("mqtt " + k)
    _check_tls(m)
    _check_web(cfg.get("web"))
    for k, default in DEFAULTS.items():
        if k not in cfg:
            cfg[k] = default
        elif _optional_problem(k, cfg[k]) is not None:
            if problems is None:
                raise ConfigError(k)
            problems.append(k)
            cfg[k] = default
    return cfg


def _parse(data, why, problems):
    if why is None:
        v, why = parse_json(data)
    if why is not None:
        raise ConfigError(why)
    return validate(v, problems)


def load(log=None):
    """(config or None, source): source is "config", "backup" (main copy damaged) or "none".
    A copy with damaged entries loses only those (fsutil.note_damage: logged and counted) when
    the other copy has no clean version to offer; the damaged original is kept as
    config.json.bad and config.json rewritten, so the next boot starts clean."""
    data, why = read_bounded(PATH, MAX_FILE)
    main_problems = []
    cfg = None
    try:
        cfg = _parse(data, why, main_problems)
        if not main_problems:
            if read_bytes(BACKUP) != data:
                write_atomic(BACKUP, data)
            return cfg, "config"
        main_reason = main_problems[0]
    except ConfigError as e:
        main_reason = e.reason
    bdata, bwhy = read_bounded(BACKUP, MAX_FILE)
    bak_problems = []
    try:
        bak = _parse(bdata, bwhy, bak_problems)
    except ConfigError as e:
        bak, bak_reason = None, e.reason
    if bak is not None and (not bak_problems or cfg is None):
        if log:
            log("config_restored", reason=main_reason)
        note_damage(log, PATH, main_reason, len(main_problems) or 1)
        for p in bak_problems:
            note_damage(log, BACKUP, p)
        cfg, source, fixed = bak, "backup", bdata if not bak_problems else None
    elif cfg is not None:
        # the backup is no better: keep the main copy, without its damaged entries
        for p in main_problems:
            note_damage(log, PATH, p)
        source, fixed = "config", None
    else:
        if log:
            log("config_invalid", reason=main_reason, backup=bak_reason)
        return None, "none"
    try:
        if data is not None:
            write_atomic(PATH + ".bad", data)  # kept for the technician
        write_atomic(PATH, fixed if fixed is not None else json.dumps(cfg).encode())
    except OSError as e:  # a failing flash: run on what was loaded, report it next boot again
        print("config: rewrite failed", e)
    return cfg, source


def save(cfg):
    data = json.dumps(cfg).encode()
    validate(json.loads(data))
    write_atomic(PATH, data)
    write_atomic(BACKUP, data)
