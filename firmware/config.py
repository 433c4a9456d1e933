# Terminal config: load with validation, fall back to the last good copy, save power-safely.
import json

from fsutil import read_bytes, write_atomic
import region

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
}


class ConfigError(ValueError):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _check_anchor(a):
    if not isinstance(a, dict):
        raise ConfigError("trust entry not an object")
    kid = a.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= 64:
        raise ConfigError("trust kid")
    if not isinstance(a.get("pub"), str):
        raise ConfigError("trust pub")
    for k in ("scope", "use"):
        v = a.get(k)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ConfigError("trust " + k)


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


def validate(cfg):
    """Raise ConfigError(reason) unless cfg is a usable config; return it with defaults filled."""
    if not isinstance(cfg, dict):
        raise ConfigError("not an object")
    if not isinstance(cfg.get("id"), str) or not 1 <= len(cfg["id"]) <= 64:
        raise ConfigError("id")
    if not region.valid_code(cfg.get("region")):
        raise ConfigError("region")
    trust = cfg.get("trust")
    if not isinstance(trust, list):
        raise ConfigError("trust")
    for a in trust:
        _check_anchor(a)
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not isinstance(m.get("host"), str) or not isinstance(m.get("port"), int):
        raise ConfigError("mqtt")
    _check_tls(m)
    for k in DEFAULTS:
        if k not in cfg:
            cfg[k] = DEFAULTS[k]
    if cfg["profile"] not in ("horn", "column"):
        raise ConfigError("profile")
    return cfg


def _parse(data):
    if data is None:
        raise ConfigError("missing")
    try:
        cfg = json.loads(data)
    except Exception:
        raise ConfigError("not JSON")
    return validate(cfg)


def load(log=None):
    """(config or None, source): source is "config", "backup" (main copy corrupt) or "none"."""
    data = read_bytes(PATH)
    try:
        cfg = _parse(data)
        if read_bytes(BACKUP) != data:
            write_atomic(BACKUP, data)
        return cfg, "config"
    except ConfigError as e:
        main_reason = e.reason
    bak = read_bytes(BACKUP)
    try:
        cfg = _parse(bak)
    except ConfigError as e:
        if log:
            log("config_invalid", reason=main_reason, backup=e.reason)
        return None, "none"
    if log:
        log("config_restored", reason=main_reason)
    if data is not None:
        write_atomic(PATH + ".bad", data)  # kept for the technician
    write_atomic(PATH, bak)
    return cfg, "backup"


def save(cfg):
    data = json.dumps(cfg).encode()
    validate(json.loads(data))
    write_atomic(PATH, data)
    write_atomic(BACKUP, data)
