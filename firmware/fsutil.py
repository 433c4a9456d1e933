# Files on flash: power-safe writes, bounded JSON reads, and the record of damage found on load.
import json
import os


def write_atomic(path, data):
    """Replace path with data so a power cut leaves either the old or the new file, never half.
    data is bytes, or a function that writes the content to the open file (no one big buffer)."""
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        if callable(data):
            data(f)
        else:
            f.write(data)
        f.flush()
    finally:
        f.close()
    # rename over an existing file is atomic on POSIX and on LittleFS (the ESP32 filesystem)
    os.rename(tmp, path)


def append(path, data):
    """Add data at the end of path (created if missing), closed before it returns. On LittleFS a
    file's new length is committed whole at close, so a power cut keeps it or loses it, never
    half; on other filesystems a torn last line is possible, and readers drop it."""
    f = open(path, "ab")
    try:
        f.write(data)
    finally:
        f.close()


def remove(path):
    """Remove path; True if it is gone (or never was)."""
    try:
        os.remove(path)
    except OSError:
        return size(path) < 0
    return True


def size(path):
    """The file's size in bytes, or -1 when it does not exist."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def read_bytes(path):
    """The file's bytes, or None when it does not exist or cannot be read."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        return f.read()
    finally:
        f.close()


# Damage found in persisted files since boot: file name -> entries dropped or copies discarded.
# The agent reports it (heartbeat "files", a "storage" fault event per record); docs/firmware.md
# "Files on flash" says what each file falls back to.
damaged = {}
records = []  # (file, reason, count) in the order found, at most MAX_RECORDS
MAX_RECORDS = 16


def read_bounded(path, max_bytes):
    """(bytes, None), or (None, reason) with reason "missing", "too_large" or "unreadable". A file
    past max_bytes is never read: it could not be meant, and might not fit the heap."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return None, "missing"
    if size > max_bytes:
        return None, "too_large"
    data = read_bytes(path)
    if data is None:
        return None, "unreadable"
    return data, None


def parse_json(data):
    """(value, None) or (None, "not JSON")."""
    try:
        return json.loads(data), None
    except Exception:  # bad JSON or UTF-8, nesting too deep, MemoryError
        return None, "not JSON"


def read_json(path, max_bytes):
    """(value, None), or (None, reason): a read_bounded reason, or "not JSON"."""
    data, why = read_bounded(path, max_bytes)
    if why is not None:
        return None, why
    return parse_json(data)


def note_damage(log, name, reason, count=1):
    """Record (and log) that `count` entries of file `name` were dropped, or the file discarded."""
    damaged[name] = damaged.get(name, 0) + count
    if len(records) < MAX_RECORDS:
        records.append((name, reason, count))
    if log is not None:
        try:
            log("file_damaged", file=name, reason=reason, dropped=count)
        except Exception:
            pass
