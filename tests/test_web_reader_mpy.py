"""The page's request reader (firmware/web.py `_Reader`) under microdot's multipart parser as the
upload uses it (firmware/webupload.py `form_iter`), on the MicroPython unix port: however TCP
cuts an upload into reads, the file arrives whole, for clips and for a WAV whose end falls
where a 512-byte file read used to swallow the closing boundary. Before, the parser could miss a
boundary split across two reads, and some uploads were refused as an invalid form at random
(one in ten of random cuts in the CPython model of it), a 16 KB stereo WAV always."""

from __future__ import annotations

import json
from pathlib import Path

import microdot
import pytest
from conftest import ROOT, run_mpy
from webclient import multipart, stereo_wav, wav_bytes

SCRIPT = """
import asyncio, json, random, sys
import board_emu
sys.modules["board"] = board_emu
import web
import webupload
from microdot.multipart import FileUpload
body = open(%(body)r, "rb").read()
ct = %(ct)r
class Stream:
    # the client's bytes in reads of random size (1..9000, the reader takes 512 at most), as TCP segments may come
    def __init__(self, seed):
        self.d = body
        random.seed(seed)
    async def readinto(self, mv):
        await asyncio.sleep_ms(0)
        n = min(len(mv), len(self.d), random.randint(1, 9000))
        mv[:n] = self.d[:n]
        self.d = self.d[n:]
        return n
class Req:
    def __init__(self, rd):
        self.content_type, self.stream, self.content_length = ct, rd, len(body)
async def one(seed):
    rd = web._Reader(Stream(seed))
    rd.left = len(body)
    got, fields = b"", {}
    async for name, v in webupload.form_iter(Req(rd)):
        if isinstance(v, FileUpload):
            while True:
                b = await v.read(web.CHUNK)
                if not b:
                    break
                got += b
        else:
            fields[name] = v
    return got, fields
async def main():
    out = []
    for seed in range(%(n)d):
        try:
            got, fields = await one(seed)
            out.append(got == open(%(clip)r, "rb").read() and fields == {"csrf": "x" * 32})
        except Exception as e:
            out.append(repr(e))
    print("RESULT " + json.dumps(out))
asyncio.run(main())
"""


@pytest.mark.parametrize("clip", [wav_bytes(0.5), wav_bytes(2.0), stereo_wav()],
                         ids=["0.5s", "2s", "stereo"])
def test_an_upload_arrives_whole_however_tcp_cuts_it(tmp_path: Path, clip: bytes) -> None:
    body, ct = multipart({"csrf": "x" * 32}, {"file": ("通知.wav", clip, "audio/wav")})
    (tmp_path / "body").write_bytes(body)
    (tmp_path / "clip").write_bytes(clip)
    script = SCRIPT % {"body": str(tmp_path / "body"), "clip": str(tmp_path / "clip"),
                       "ct": ct, "n": 60}
    lib = Path(microdot.__file__).resolve().parent.parent
    r = run_mpy(script, cwd=tmp_path, path=[ROOT / "firmware", ROOT / "hardware", lib],
                env={"CX_HW": str(tmp_path)})
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, r.stdout[-800:] + r.stderr[-800:]
    results = json.loads(line[7:])
    assert results == [True] * 60, [x for x in results if x is not True][:5]
