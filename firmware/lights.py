# The terminal's lights: one state at a time, the most important that applies (docs/web.md
# "Lights"). Every part says what it knows here; only this module calls board.led().
ORDER = ("recovery", "alert", "local", "fault")  # above the link's own state (ip, 4g, offline)
FAULTS = ("line_open", "line_short", "battery_low", "config")  # agent fault names that light red


class Lights:
    """Lights(show): show(state) is board.led. set(name, on) for a name of ORDER, fault(name,
    active) for the agent's faults (and "config": running on the backup copy), link(path) with
    "ip", "4g" or "offline". `state` is what is shown."""

    def __init__(self, show):
        self._show = show
        self._on = {}
        self._faults = {}
        self._path = "offline"
        self.state = None

    def set(self, name, on):
        self._on[name] = on
        self._update()

    def fault(self, name, active):
        if name in FAULTS:
            self._faults[name] = active
            self._on["fault"] = True in self._faults.values()
            self._update()

    def link(self, path):
        self._path = path if path in ("ip", "4g") else "offline"
        self._update()

    def _update(self):
        s = self._path
        for name in ORDER:
            if self._on.get(name):
                s = name
                break
        if s != self.state:
            self.state = s
            self._show(s)
