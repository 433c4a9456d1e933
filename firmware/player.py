# Plays one accepted alert: amplifier, warm-up, audio `repeat` times, hold (alerts.md §5).
import asyncio
import gc

from clip import ClipError
from micropython import const
from tones import CHUNK, TONES, play_beeps, play_tone

MAX_REPEAT = const(20)  # alerts.md §3 `repeat` 1..20
FALLBACK = "siren"  # what plays when the clip cannot (alerts.md §5)
RAMP_MS = const(20)  # a preempted programme's fade to silence (one 20 ms chunk at most)
UNTIL_REPEAT = const(10000)
_BLANK = bytes(CHUNK * 2)  # 20 ms of silence: a live chunk lost or late  # a programme's clip repeats until its end time, not a count


class Player:
    """One output chain: an Amplifier, an AudioOut and a ClipCache, used by one play at a time
    (the arbiter awaits a cancelled play before starting the next)."""

    def __init__(self, amp, out, clips, log=None):
        self._amp = amp
        self._out = out
        self._clips = clips
        # tones are made in the clips' play buffer: a clip and a tone never play at once
        self._tone_buf = memoryview(clips.play_buf)[:CHUNK * 2]
        self._log = log
        self._owner = None  # the play whose begin() the output last saw, until its end()
        self._live = [0]  # the volume of the clip playing now, read at every chunk
        self.source = None  # what the output plays now ("tone:siren", "clip:<sha256>", …)

    async def play(self, alert, on_playing):
        """Play alert (dict: id, audio, volume, repeat); on_playing(reason) is called once right
        before the first sample, reason None or why the siren replaced the clip. Returns None,
        or a reason code when something unexpected stopped the playback (logged). A cancel
        stops the audio at once; the amplifier still goes off after its hold."""
        me = object()
        claimed = False
        warm = None
        try:
            aid = alert.get("id")
            audio = alert.get("audio")
            volume = _clamp(alert.get("volume", 100), 0, 100, 100)
            repeat = _clamp(alert.get("repeat", 1), 1, MAX_REPEAT, 1)
            # the amplifier warms up while the clip downloads: it sounds either way (siren)
            claimed = True
            warm = asyncio.create_task(self._amp.on())
            tone, path, source, reason = await self._choose(audio)
            await warm
            warm = None
            out = self._out
            out.volume(volume)
            gc.collect()  # quiet point: nothing is streaming yet
            try:
                on_playing(reason)
            except Exception as e:
                self._note("player_error", alert=aid, where="on_playing", error=repr(e))
            if self._owner is not None:
                out.end("preempted")  # a play that never unwound: keep start/stop paired
            self._owner = me
            self.source = source
            self._live = [volume]
            out.begin(source, aid)
            until = alert.get("until")
            if source.startswith("live:"):  # a live announcement (live.py): until it ends
                s = audio["live"]
                s.why = await s.play(out, volume, self._tone_buf, _BLANK)
            elif until is None:
                await self._sounds(aid, tone, path, source, volume, repeat)
            else:
                # a programme (docs/broadcast.md §2): its clip again and again until its end
                import board

                left = int((until - board.epoch()) * 1000)
                try:
                    await asyncio.wait_for_ms(self._sounds(aid, tone, path, source, volume,
                                                           UNTIL_REPEAT), max(left, 1))
                except asyncio.TimeoutError:
                    pass
            await out.drain()
            self._end(me, "done")
            return None
        except asyncio.CancelledError:
            if self._owner is me and alert.get("kind") not in ("alert", "test"):
                await self._ramp()  # a programme or the operator's own: never a click
            self._end(me, "preempted")
            raise
        except Exception as e:
            self._note("player_error", alert=alert.get("id") if isinstance(alert, dict) else None,
                      error=repr(e))
            self._end(me, "error")
            return "play_failed"
        finally:
            if warm is not None:
                warm.cancel()
            if claimed:
                self._amp.release()

    async def _sounds(self, aid, tone, path, source, volume, repeat):
        out = self._out
        for _ in range(repeat):
            if path:
                try:
                    await self._clips.play(path, out, volume, self._live)
                    continue
                except Exception as e:
                    # vanished or damaged since the fetch; the siren carries the alert
                    self._note("clip_play_failed", alert=aid, error=repr(e))
                    if isinstance(e, ClipError) and e.reason == "clip_bad_format" and \
                            source.startswith("clip:"):
                        self._clips.discard(path, "bad header")
                    path = None
                    # out.begin() already named the clip as the source; a local file
                    # that fails is silence, never a siren that would sound like a warning
                    tone = FALLBACK if source.startswith("clip:") else []
            if isinstance(tone, list):
                if not tone:
                    return  # silence: nothing more to play
                await play_beeps(out, tone, volume, self._tone_buf)
            else:
                await play_tone(out, tone, volume, self._tone_buf)

    async def _ramp(self):
        # From the last sample written down to zero over RAMP_MS (docs/broadcast.md §5), so a
        # preempted programme ends in a ramp, not a step; costs the warning RAMP_MS.
        out = self._out
        n = out.rate * RAMP_MS // 1000
        if n > CHUNK:
            n = CHUNK
        buf = self._tone_buf
        if not ramp_down(buf, getattr(out, "last", 0), n):
            return
        try:
            await out.write(buf[:2 * n])
        except Exception:
            pass

    def set_volume(self, v):
        """Apply volume v at once: to the output (its `volume` event) and to the clip playing
        now, from its next chunk on. For the local volume (firmware/local.py), which calls it
        only while nothing or a local item plays."""
        if self._owner is not None:
            self._live[0] = v
        self._out.volume(v)

    async def _choose(self, audio):
        # (tone, clip path or None, source for out.begin, reason for on_playing). A local item
        # (firmware/local.py) names a file on flash ("file") or a list of beeps ("beeps").
        if isinstance(audio, dict) and "file" in audio:
            return [], audio["file"], "file:" + audio["file"], None
        if isinstance(audio, dict) and "live" in audio:
            return None, None, "live:" + audio["live"].id, None
        if isinstance(audio, dict) and "beeps" in audio:
            return audio["beeps"], None, "tone:beeps", None
        if isinstance(audio, dict) and "clip" in audio:
            c = audio["clip"]
            try:
                if not isinstance(c, dict):
                    raise ClipError("clip_bad_url", "clip")
                path = await self._clips.fetch(c.get("url"), c.get("sha256"), c.get("bytes"))
                return None, path, "clip:" + c["sha256"].lower(), None
            except ClipError as e:
                self._note("clip_fallback", reason=e.reason, detail=e.detail)
                return FALLBACK, None, "tone:" + FALLBACK, e.reason
            except Exception as e:  # a bug must not silence the alert: it still gets the siren
                self._note("clip_fallback", reason="clip_fetch_failed", detail=repr(e))
                return FALLBACK, None, "tone:" + FALLBACK, "clip_fetch_failed"
        tone = audio.get("tone") if isinstance(audio, dict) else None
        if tone in TONES:
            return tone, None, "tone:" + tone, None
        self._note("tone_fallback", tone=tone)
        return FALLBACK, None, "tone:" + FALLBACK, "tone_unknown"

    def _note(self, ev, **fields):
        # logging must never be what lets an exception escape play()
        if self._log is not None:
            try:
                self._log(ev, **fields)
            except Exception:
                pass

    def _end(self, me, why):
        if self._owner is me:
            self._owner = None
            self.source = None
            self._out.end(why)


def ramp_down(buf, v, n):
    """n samples into buf (int16 little-endian) from v, the output's `last` (a 16-bit pattern),
    down to 0 in a straight line, the last one 0; returns v as a signed int (0: nothing written,
    the output is silent already). A preemption's ramp (above) and a lost live chunk's (live.py).
    |v * n| < 2**30: small ints on the ESP32; no allocation."""
    if v & 0x8000:
        v -= 0x10000
    if v:
        for i in range(n):
            x = v * (n - 1 - i) // n
            buf[2 * i] = x & 0xFF
            buf[2 * i + 1] = (x >> 8) & 0xFF
    return v


def _clamp(v, lo, hi, default):
    if not isinstance(v, int) or isinstance(v, bool):
        return default
    return lo if v < lo else hi if v > hi else v

