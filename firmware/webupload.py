# The local announcement's upload (docs/web.md "Config and files"): the multipart body streamed
# through a fixed-size read into local/announce.wav.part, checked by the Local API, then renamed;
# a cut, oversized or bad upload leaves nothing half-written.
import os

import webauth
from fsutil import remove
from microdot.microdot import HTTPException
from microdot.multipart import FileUpload, FormDataIter
from web import ANNOUNCE, CHUNK, MAX_WAV, UPLOAD_MS, HTTPError, _maybe

PART = ANNOUNCE + ".part"
MARGIN = 8192  # bytes of flash kept free beyond the upload itself


def _free():
    try:
        st = os.statvfs(".")
        return st[0] * st[4]
    except (OSError, AttributeError):
        return -1


async def _save(fu, length, local):
    try:
        os.mkdir("local")
    except OSError:
        pass
    free = _free()
    if 0 <= free < length + MARGIN:
        return "flash_full"
    n = 0
    try:
        f = open(PART, "wb")
        try:
            while True:
                b = await fu.read(CHUNK)
                if not b:
                    break
                n += len(b)
                if n > MAX_WAV:
                    raise HTTPError(413, "too_large")
                f.write(b)
        finally:
            f.close()
        if n == 0:
            remove(PART)
            return "no_file"
        why = await _maybe(local.store(PART))  # check_wav(), then the rename; removed if bad
        if why is not None:
            remove(PART)
            return "not_wav" if why in ("bad_format", "empty", "truncated", "missing") else why
    except OSError:  # the flash filled up (ENOSPC) or failed
        remove(PART)
        return "flash_full"
    except BaseException:
        remove(PART)
        raise
    return None


def form_iter(req):
    """microdot's multipart parser over our reader. Its buffer holds CHUNK bytes beyond the
    boundary's length, as each file read takes (a read longer than its buffer_size, 256 by
    default, can swallow a boundary split at the buffer's end), and the reader fills every read
    in full (web._Reader.read): together a boundary is always seen whole."""
    it = FormDataIter(req)
    it.buffer_size = CHUNK
    return it


async def receive(app, req, s, local):
    """None (stored) or the reason it was not; HTTPError for a refused request."""
    req.g.rd.extend(UPLOAD_MS)
    it = form_iter(req)
    if it.buffer is None:
        raise HTTPError(400, "bad_form")
    csrf = False
    why = "no_file"
    try:
        async for name, value in it:  # type: ignore (an async iterator on MicroPython)
            if isinstance(value, FileUpload):
                if not csrf:
                    raise HTTPError(403, "csrf")
                if name != "file" or why != "no_file":
                    raise HTTPError(400, "bad_form")
                why = await _save(value, req.content_length, local)
                if why is not None and why != "no_file":
                    break
            elif name == "csrf":
                csrf = webauth.same(value, s[2])
                if not csrf:
                    raise HTTPError(403, "csrf")
    except (ValueError, HTTPException):  # not UTF-8, a malformed part
        remove(PART)
        raise HTTPError(400, "bad_form")
    if not csrf:
        raise HTTPError(403, "csrf")
    if why is None:
        app.log("web_upload", bytes=req.content_length)
    return why
