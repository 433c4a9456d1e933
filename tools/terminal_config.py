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
        return {"reason": e.reason}
    return {"reason": None}

'''

WHAT = {
    "not an object": "not a JSON object",
    "mqtt": "mqtt host/port",
    "mqtt tls": "mqtt tls (true or false)",
    "mqtt ca": "mqtt ca (the CA file name beside the config, as cx fleet provision --tls-ca "
               "writes)",
}
"""firmware/config.py ConfigError reasons that need more words for a person; the others (id,
region, trust pub, profile, volume …) name the field as they are."""


def refusal(cfg: object) -> str | None:
    """The ConfigError reason of firmware/config.py validate(cfg) (strict), None when the terminal
    accepts it. firmware.NoMicroPython / FirmwareError when the check itself cannot run."""
    res, _ = firmware.run(_DRIVER, {"config.json": json.dumps(cfg)},
                          "the terminal's config check")
    reason = res.get("reason")
    return None if reason is None else str(reason)


def describe(reason: str) -> str:
    """A refusal reason in the words of a one-line CLI error: `bad <describe(reason)>`."""
    return WHAT.get(reason, reason)
