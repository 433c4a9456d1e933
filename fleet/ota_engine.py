"""The rollout engine of `cx ota serve`: every `every` seconds one step of the store
(fleet/store/ota.py: waves, aborts, claims), then the `ota` command (ota.md §2) of each claimed
target published on `eb/dev/<id>/cmd` at QoS 1. The acknowledgements, reports and heartbeats
that move the targets are stored by `cx fleet serve`'s ingestion, not here.

Any number of instances may run on one PostgreSQL database: the claim is the store's conditional
UPDATE, so each command is published by exactly one of them; one killed between its claim and
its publish leaves a `sent` target that goes back to pending after `ack_timeout`.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet import retry
from fleet.errors import StoreError
from fleet.store import Store
from fleet.store.ota import STALL
from tools.mqttsession import BrokerAuth

EVERY = 2.0
"""Seconds between engine steps."""
ACK_TIMEOUT = 60.0
"""Seconds a sent command waits for its acknowledgement before it is sent again."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Engine:
    """One engine instance; `run(stop)` blocks until `stop` is set."""

    def __init__(self, db: str, host: str, port: int, base: str, *, instance: str,
                 every: float = EVERY, ack_timeout: float = ACK_TIMEOUT, stall: float = STALL,
                 auth: BrokerAuth | None = None,
                 log: Callable[[str], None] = _stderr) -> None:
        self.db, self.base, self.instance = db, base.rstrip("/"), instance
        self.host, self.port = host, port
        self.every, self.ack_timeout, self.stall = every, ack_timeout, stall
        self._log = log
        self.sent = 0
        self.steps = 0
        self.connected = threading.Event()
        self._manifests: dict[str, str] = {}
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"cx-ota-{instance}-{secrets.token_hex(3)}")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(1, 30)
        if auth is not None:
            auth.apply(self._client)

    def log(self, text: str) -> None:
        self._log(f"cx ota serve [{self.instance}]: {text}")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.log(f"broker {self.host}:{self.port} refused the connection: {rc}")
            return
        self.connected.set()
        self.log(f"connected to broker {self.host}:{self.port}")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.connected.is_set():
            self.log(f"lost the connection to broker {self.host}:{self.port} ({rc}); "
                     "reconnecting")
        self.connected.clear()

    def run(self, stop: threading.Event) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        store: Store | None = None
        attempt = 0
        try:
            while not stop.is_set():
                if store is None:
                    try:
                        store = Store.open(self.db)
                        attempt = 0
                    except StoreError as e:
                        wait = retry.backoff(attempt)
                        attempt += 1
                        self.log(f"{e}; retrying in {wait:.1f} s")
                        stop.wait(wait)
                        continue
                if self.connected.is_set():
                    try:
                        self.step(store)
                    except StoreError as e:
                        self.log(f"{e}; reconnecting to the database")
                        store.close()
                        store = None
                stop.wait(self.every)
        finally:
            if store is not None:
                store.close()
            self.connected.clear()  # our own DISCONNECT is not "lost the connection"
            self._client.disconnect()
            self._client.loop_stop()

    def step(self, store: Store) -> int:
        """One step: claim, then publish; returns how many commands were published."""
        self.steps += 1
        st = store.step(self.instance, ack_timeout=self.ack_timeout, stall=self.stall,
                        new_cid=lambda: "ota-" + secrets.token_hex(6))
        for line in st.log:
            self.log(line)
        if st.reset:
            self.log(f"{st.reset} commands unacknowledged after {self.ack_timeout:g} s: "
                     "sending them again")
        for s in st.sends:
            manifest = self._manifests.get(s.version)
            if manifest is None:
                manifest = self._manifests[s.version] = store.release(s.version).manifest
            payload = json.dumps({"cid": s.cid, "op": "ota",
                                  "args": {"manifest": manifest, "base": self.base}},
                                 separators=(",", ":"))
            self._client.publish(f"eb/dev/{s.device}/cmd", payload, qos=1)
            self.sent += 1
        return len(st.sends)
