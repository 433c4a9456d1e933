# Power-safe file writes: the one way firmware replaces a file on flash.
import os


def write_atomic(path, data):
    """Replace path with data so a power cut leaves either the old or the new file, never half."""
    tmp = path + ".tmp"
    f = open(tmp, "wb")
    try:
        f.write(data)
        f.flush()
    finally:
        f.close()
    # rename over an existing file is atomic on POSIX and on LittleFS (the ESP32 filesystem)
    os.rename(tmp, path)


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


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
