"""A Mosquitto that runs `cx fleet broker-config`'s files for freshly provisioned devices: the
setup the ACL and login tests share. Terminals on `port`, dispatcher and fleet on
`service_port` (both on loopback)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fleet.provision import Device, broker_config, provision
from fleet.store import Store
from tools.broker import Broker, free_port

TRUST = [{"kid": "r1", "pub": "A" * 43, "scope": ["34"], "use": ["alert"]}]
"""A trust anchor for configs whose alerts the test never verifies."""


class AclBroker:
    def __init__(self, tmp: Path, devices: list[Device], trust: list[dict[str, Any]] = TRUST
                 ) -> None:
        self.tmp = tmp
        self.port, self.service_port = free_port(), free_port()
        store = Store.open(str(tmp / "fleet.sqlite"))
        try:
            provision(devices, trust=trust, broker=("127.0.0.1", self.port), out=tmp / "devs",
                      store=store)
        finally:
            store.close()
        broker_config(tmp / "devs" / "credentials.json", tmp / "conf", port=self.port,
                      bind="127.0.0.1", service=("127.0.0.1", self.service_port))
        conf = (tmp / "conf" / "mosquitto.conf").read_text()
        # Started as root, Mosquitto drops to the `mosquitto` user, which cannot enter pytest's
        # private tmp folders (production: --broker-user, docs/provisioning.md).
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.broker = Broker(tmp / "broker", port=self.port,
                             config=conf + "persistence false\n" + as_root)
        self.terminals = f"127.0.0.1:{self.port}"
        self.services = f"127.0.0.1:{self.service_port}"  # the dispatcher's and fleet's

    def config(self, d: Device) -> dict[str, Any]:
        return json.loads((self.tmp / "devs" / d.id / "config.json").read_text())

    def password(self, d: Device) -> str:
        return self.config(d)["mqtt"]["password"]

    def stop(self) -> None:
        self.broker.stop()
