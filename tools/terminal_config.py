"""A terminal's config judged on the host by the terminal's own code: firmware/config.py
`validate`, strict (what a freshly flashed terminal would refuse), run under the pinned
MicroPython unix port. Only checks the device cannot make stay on the host, with their callers
(`cx flash`, `cx emu`): that the files the config names lie beside it, that it is provisioned."""

from __future__ import annotations

import json

from tools import firmware

# Runs inside micropython with firmware/ on MICROPYPATH and the temporary folder as cwd.
_DRIVER = r'''# config check driver (written by tools/terminal_config.py): config.validate, strict.
import json

import config
import fsutil


def run():
    f = open("config.json", "rb")
    try:
        data = f.read()
    finally:
        f.close()
    cfg, why = fsutil.parse_json(data)
    if why is not None:
        return {"reason": why}
    try:
        config.validate(cfg)  # no `problems` list: every damaged field is a refusal
    except config.ConfigError as e:
        # Which entries, named as a load from flash names them ("trust[1] pub"), for the message.
        problems = []
        try:
            config.validate(fsutil.parse_json(data)[0], problems)
        except config.ConfigError:
            pass
        return {"reason": e.reason, "problems": problems}
    return {"reason": None, "problems": []}

'''

WHAT = {
    "not an object": "not a JSON object",
    "mqtt": "mqtt host/port",
    "mqtt tls": "mqtt tls (true or false)",
    "mqtt ca": "mqtt ca (the CA file name beside the config, as cx fleet provision --tls-ca "
               "writes)",
    "web port": "web port (1..65535)",
    "web pass": "web pass (pbkdf2-sha256$<iterations>$<salt>$<hash>, as cx fleet provision "
                "--web-password-file writes it)",
}
"""firmware/config.py ConfigError reasons that need more words for a person; the others (id,
region, trust pub, profile, volume …) name the field as they are."""


def check(cfg: object) -> tuple[str | None, list[str]]:
    """(the ConfigError reason of firmware/config.py validate(cfg), strict, or None when the
    terminal accepts it; the entries it names, e.g. "trust[1] pub"). firmware.NoMicroPython /
    FirmwareError when the check itself cannot run."""
    res, _ = firmware.run(_DRIVER, {"config.json": json.dumps(cfg)},
                          "the terminal's config check")
    reason = res.get("reason")
    return (None if reason is None else str(reason)), [str(x) for x in res.get("problems", [])]


def refusal(cfg: object) -> str | None:
    """The ConfigError reason of check(cfg), None when the terminal accepts it."""
    return check(cfg)[0]


def describe(reason: str) -> str:
    """A refusal reason in the words of a one-line CLI error: `bad <describe(reason)>`."""
    return WHAT.get(reason, reason)
