# Accepted (issuer kid, id) pairs, remembered until expiry across reboots (alerts.md §4 rule 11).
# Two copies on flash, each replaced by rename (fsutil.write_atomic): a power cut leaves every copy
# whole, and a copy damaged otherwise (bit rot, a technician's edit) is outvoted by the other.
# Before an alert plays only its own entry is written: one line appended to a journal (seen.jnl),
# about 150 bytes instead of a whole copy (up to 45 KB); the copies take it in at the next quiet
# moment, and the journal is removed once the main copy holds it. Boot merges all three.
import json

from fsutil import append, note_damage, read_bounded, read_json, remove, write_atomic
from limits import MAX_EPOCH, MAX_ID, MAX_KID
from micropython import const

PATH = "seen.json"
MAX_SEEN = const(256)  # entries kept; when full the one expiring first is forgotten
MAX_FILE = const(65536)  # bytes: 256 entries are under 45 KB; a bigger file is damage, not read
_HASH_LEN = const(16)  # hex chars of the envelope hash (alert.py: first 8 bytes of SHA-256)
MAX_JOURNAL = const(32)  # lines; one more add() writes the main copy whole instead
MAX_JOURNAL_FILE = const(16384)  # bytes: 32 lines are under 6 KB; a bigger file is damage


def _entry_ok(e):
    # [kid, id, expires, hash] exactly as add() writes them; anything else never reaches rule 11
    if not isinstance(e, list) or len(e) != 4:
        return False
    kid, aid, exp, h = e
    if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID or "\n" in kid:
        return False
    if not isinstance(aid, str) or not 1 <= len(aid) <= MAX_ID:
        return False
    if not isinstance(exp, int) or isinstance(exp, bool) or not 0 < exp <= MAX_EPOCH:
        return False
    if not isinstance(h, str) or len(h) != _HASH_LEN:
        return False
    for c in h:
        if c not in "0123456789abcdef":
            return False
    return True


class Seen:
    def __init__(self, path=PATH, log=None):
        self.path = path
        stem = path[:-5] if path.endswith(".json") else path  # noqa: FURB188 (not in MicroPython)
        self.backup = stem + ".bak"
        self.journal = stem + ".jnl"
        self._jn = 0  # lines in the journal
        self._now = 0  # the clock at the last add(), for the prune at the quiet moment
        self.lost = None  # why neither copy could be used, when a store existed (main reports it)
        self._e = {}  # kid + "\n" + id -> [expires, envelope hash hex]
        self._by_hash = {}
        self._backup_due = False
        self._main_due = False  # an add() whose write failed: flush() writes the main copy
        found = usable = 0
        damaged = False
        for p in (path, self.backup):
            v, why = read_json(p, MAX_FILE)
            if why == "missing":
                continue
            found += 1
            if why is not None or not isinstance(v, list):
                note_damage(log, p, why or "not a list")
                damaged = True
                continue
            usable += 1
            bad = 0
            for e in v:
                if not self._take(e):
                    bad += 1
            if bad:
                note_damage(log, p, "bad entries", bad)
                damaged = True
            del v
        jn, bad, why = self._replay()
        if bad:
            note_damage(log, self.journal, why, bad)
            damaged = True
        if jn:
            self._jn = jn
            self._main_due = True  # the copies take the journal in at the first quiet moment
        if found and not usable:
            # Alerts accepted before may sound again if redelivered (docs/firmware.md).
            self.lost = "no usable copy"
            note_damage(log, path, "lost")
        elif usable == 1 and not damaged:
            self._backup_due = True  # one copy only (first boot after an update): make the other
        while len(self._e) > MAX_SEEN:
            self._drop_first()
        self._rehash()
        if damaged:
            self._write(True, True)  # never carry a bad entry into the next boot

    def __len__(self):
        return len(self._e)

    def has(self, kid, aid, now):
        e = self._e.get(kid + "\n" + aid)
        return e is not None and e[0] > now

    def has_bytes(self, h, now):
        exp = self._by_hash.get(h)
        return exp is not None and exp > now

    def add(self, kid, aid, expires, h, now):
        k = kid + "\n" + aid
        try:
            self._e[k] = [expires, h]
            self._by_hash[h] = expires
            self._now = now
            # expired entries go at the quiet moment (flush: _prune rebuilds both tables, a few
            # tens of KB); here only the bound, without a new table: the entry expiring first
            if len(self._e) > MAX_SEEN:
                self._drop_first()
        except MemoryError:
            # undone, so the caller's retry (intake.py) does not find its own envelope remembered
            self._e.pop(k, None)
            self._by_hash.pop(h, None)
            raise
        # Only the entry itself before the alert plays (it guards against a replay after a
        # reboot): a line in the journal; the copies follow at the next quiet moment (flush), so
        # the warning is not delayed by a whole copy. A full journal: the main copy, as before.
        if self._jn >= MAX_JOURNAL:
            self._write(True, False)
            return
        try:
            append(self.journal, json.dumps([kid, aid, expires, h]).encode() + b"\n")
            self._jn += 1
            self._main_due = True
        except (OSError, MemoryError) as e:
            print("seen: journal write failed", repr(e))
            self._write(True, False)

    def due(self):
        """A copy on flash is behind the store in RAM."""
        return self._main_due or self._backup_due

    def flush(self):
        """Bring the copies up to date, one copy per call (called when idle, every second while
        one is behind): the main copy first, which also ends the journal, then the backup."""
        if self._main_due:
            try:
                self._prune(self._now)
            except MemoryError:
                pass  # written unpruned: has() checks the expiry anyway
            self._write(True, False)
        elif self._backup_due:
            self._write(False, True)

    def _replay(self):
        # (lines taken, lines dropped, why) from the journal; the later expiry wins, as for the
        # copies. A journal too large to be ours (or unreadable) is dropped whole, unread.
        data, why = read_bounded(self.journal, MAX_JOURNAL_FILE)
        if why == "missing":
            return 0, 0, None
        if why is not None or data is None:
            return 0, 1, why or "unreadable"
        n = bad = 0
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                e = json.loads(line)
            except Exception:  # a torn last line, bit rot
                e = None
            if self._take(e):
                n += 1
            else:
                bad += 1
        return n, bad, "bad entries"

    def _take(self, e):
        # one entry read from flash, if well formed; of two for one (kid, id) the later expiry wins
        if not _entry_ok(e):
            return False
        k = e[0] + "\n" + e[1]
        old = self._e.get(k)
        if old is None or old[0] < e[2]:
            self._e[k] = [e[2], e[3]]
        return True

    def _write(self, main, backup):
        # Streamed entry by entry: the whole store as one buffer (up to 45 KB) is an allocation a
        # fragmented heap cannot always give (docs/web.md "Heap under a hostile page").
        try:
            if main:
                write_atomic(self.path, self._dump)
                self._main_due = False
                # the main copy holds every entry of the journal now; if the removal fails, the
                # lines are read again at boot, which changes nothing
                if remove(self.journal):
                    self._jn = 0
            if backup:
                write_atomic(self.backup, self._dump)
            self._backup_due = not backup
        except (OSError, MemoryError) as e:
            # a full or failing flash, or no heap, must not stop the alert: logged, and retried
            # at the next quiet moment (flush); the entry is remembered in RAM meanwhile
            print("seen: write failed", repr(e))
            self._main_due = self._main_due or main
            self._backup_due = True

    def _dump(self, f):
        f.write(b"[")
        sep = b""
        for k, v in self._e.items():
            kid_, aid_ = k.split("\n", 1)
            f.write(sep)
            f.write(json.dumps([kid_, aid_, v[0], v[1]]).encode())
            sep = b","
        f.write(b"]")

    def _prune(self, now):
        # rebuilt rather than deleted from: a dict never shrinks its table in place
        e = {}
        for k, v in self._e.items():
            if v[0] > now:
                e[k] = v
        self._e = e
        while len(self._e) > MAX_SEEN:
            self._drop_first()
        self._rehash()

    def _drop_first(self):
        # over the keys, not items(): items() makes a tuple per entry (8 KB for a full store, on
        # an alert's path); a key's lookup allocates nothing
        e = self._e
        first = None
        low = 0
        for k in e:
            exp = e[k][0]
            if first is None or exp < low:
                first = k
                low = exp
        self._by_hash.pop(e.pop(first)[1], None)

    def _rehash(self):
        self._by_hash = {}
        for v in self._e.values():
            self._by_hash[v[1]] = v[0]

