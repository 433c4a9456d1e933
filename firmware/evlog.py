# Persistent event log: JSON lines on flash, rotated at a size limit, also echoed to the console.
import json
import os
import time

from micropython import const

MAX_BYTES = const(65536)  # per file; one older generation is kept (log.1.jsonl)


def call(logf, ev, **fields):
    """Log through logf (an EventLog, or a test's function) when there is one; a failing log
    never breaks its caller (the MQTT client, the modem driver, TLS)."""
    if logf is not None:
        try:
            logf(ev, **fields)
        except Exception:
            pass


class EventLog:
    def __init__(self, path="log.jsonl", max_bytes=MAX_BYTES, clock=None):
        self.path = path
        self.max_bytes = max_bytes
        self.clock = clock or time.time
        self.counts = {}
        self._torn = False
        try:
            self._size = os.stat(path)[6]
        except OSError:
            self._size = 0
        if self._size:
            # A power cut mid-append leaves a line without its newline: the next line must not
            # be glued to it, or both are lost to whoever reads the log (fleet, local page).
            try:
                f = open(path, "rb")
                try:
                    f.seek(self._size - 1)
                    self._torn = f.read(1) != b"\n"
                finally:
                    f.close()
            except OSError:
                pass

    def __call__(self, ev, **fields):
        self.counts[ev] = self.counts.get(ev, 0) + 1
        fields["t"] = self.clock()
        fields["ev"] = ev
        try:
            line = json.dumps(fields) + "\n"
        except Exception:
            line = json.dumps({"t": fields["t"], "ev": ev, "unprintable": True}) + "\n"
        print(line, end="")
        if self._torn:
            self._torn = False
            line = "\n" + line
        try:
            if self._size + len(line) > self.max_bytes:
                try:
                    os.rename(self.path, self.path[:-6] + ".1.jsonl")
                except OSError:
                    pass
                self._size = 0
            f = open(self.path, "a")
            f.write(line)
            f.close()
            self._size += len(line)
        except OSError as e:
            # a full or failing flash must not stop the terminal from sounding alerts
            print("evlog: write failed", e)
