# Accepted (issuer kid, id) pairs, remembered until expiry across reboots (alerts.md §4 rule 11).
import json

from fsutil import read_bytes, write_atomic
from micropython import const

PATH = "seen.json"
MAX_SEEN = const(256)  # entries kept; when full the one expiring first is forgotten


class Seen:
    def __init__(self, path=PATH):
        self.path = path
        self._e = {}  # kid + "\n" + id -> [expires, envelope hash hex]
        self._by_hash = {}
        try:
            for kid, aid, exp, h in json.loads(read_bytes(path) or b"[]"):
                self._e[kid + "\n" + aid] = [exp, h]
                self._by_hash[h] = exp
        except Exception:
            pass  # no file yet, or unreadable: start empty (verification still protects us)

    def __len__(self):
        return len(self._e)

    def has(self, kid, aid, now):
        e = self._e.get(kid + "\n" + aid)
        return e is not None and e[0] > now

    def has_bytes(self, h, now):
        exp = self._by_hash.get(h)
        return exp is not None and exp > now

    def add(self, kid, aid, expires, h, now):
        self._e[kid + "\n" + aid] = [expires, h]
        self._by_hash[h] = expires
        self._prune(now)
        out = []
        for k, v in self._e.items():
            kid_, aid_ = k.split("\n", 1)
            out.append([kid_, aid_, v[0], v[1]])
        write_atomic(self.path, json.dumps(out).encode())

    def _prune(self, now):
        # rebuilt rather than deleted from: a dict never shrinks its table in place
        e = {}
        for k, v in self._e.items():
            if v[0] > now:
                e[k] = v
        self._e = e
        while len(self._e) > MAX_SEEN:
            first = None
            for k, v in self._e.items():
                if first is None or v[0] < self._e[first][0]:
                    first = k
            del self._e[first]
        self._by_hash = {}
        for v in self._e.values():
            self._by_hash[v[1]] = v[0]
