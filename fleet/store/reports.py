"""Reports: per town, terminals online, offline, with faults, on 4G, firmware versions; and the
bad-message counters (`cx fleet report`)."""

from __future__ import annotations

from collections import Counter, defaultdict

from fleet.model import FAULT_KINDS, BadCount, Device, DeviceState, Report, TownReport
from fleet.store.registry import Registry


class Reports(Registry):
    """What an admin reads of the whole fleet or a region."""

    def bad_counts(self) -> list[BadCount]:
        with self.transaction(write=False) as tx:
            rows = tx.execute("SELECT kind, device, topic, count, last_at FROM bad_messages "
                              "ORDER BY kind, device, topic").fetchall()
        return [BadCount(k, d, t, int(n), at) for k, d, t, n, at in rows]

    def report(self, region: str | None = None) -> Report:
        """Per town: terminals, online, offline, with a fault alarm, on 4G, firmware versions;
        and every bad-message counter."""
        devices = self.devices(region)
        towns: dict[str, list[Device]] = defaultdict(list)
        for d in devices:
            towns[d.town].append(d)
        out = []
        for town in sorted(towns):
            ds = towns[town]
            out.append(TownReport(
                town=town, terminals=len(ds),
                online=sum(d.state == DeviceState.ONLINE for d in ds),
                offline=sum(d.state == DeviceState.OFFLINE for d in ds),
                faults=sum(any(k in FAULT_KINDS for k in d.alarms) for d in ds),
                on_4g=sum(d.link == "4g" and d.state == DeviceState.ONLINE for d in ds),
                versions=dict(sorted(Counter(d.version or "-" for d in ds).items()))))
        return Report(out, self.bad_counts())
