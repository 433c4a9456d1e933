# Built-in alert tones (siren, alarm, chime), synthesised chunk by chunk into the audio output.
import math
from array import array

from micropython import const

TONES = ("siren", "alarm", "chime")
MIN_TONE_MS = const(3000)  # each tone plays at least 3 s per repeat (alerts.md §5)

CHUNK = const(320)  # samples per out.write(): 20 ms at 16 kHz, one buffer lent by the player
PEAK = const(32000)  # amplitude at volume 100: full scale with a little headroom

SIREN_LOW = const(500)  # Hz, sweep bounds (alerts.md §5)
SIREN_HIGH = const(1500)
ALARM_A = const(853)  # Hz, sounded together (alerts.md §5)
ALARM_B = const(960)
CHIME_NOTES = (1047, 880, 698)  # Hz, C6 A5 F5, one third of the tone each, descending
_CHIME_DECAY = const(31293)  # Q15 envelope factor per chunk: about -20 dB over one note

# Wavetable oscillator: 256-entry sine in Q14, 24-bit phase (8 bits index, 16 bits fraction).
# Every product stays below 2**30, a small int on the ESP32, so no sample allocates.
_TAB_BITS = const(8)
_FRAC = const(16)
_PHASE_MASK = const(0xFFFFFF)
_Q = const(14)

_SINE = array("h", (int(16383 * math.sin(2 * math.pi * i / 256)) for i in range(1 << _TAB_BITS)))


class ToneError(ValueError):
    """An unknown tone name; reason is "tone_unknown"."""

    def __init__(self, reason, name=None):
        super().__init__(reason, name)
        self.reason = reason


def _inc(freq, rate):
    # phase increment per sample; split so freq << 24 never becomes a big int
    return ((freq << _FRAC) // rate) << _TAB_BITS


def _gain(volume):
    if volume <= 0:
        return 0
    if volume >= 100:
        return PEAK
    return PEAK * volume // 100


def _sine(b, ph, inc, g):
    # one oscillator into the whole chunk (little-endian int16); returns the phase to resume at
    tab = _SINE
    for j in range(0, len(b), 2):
        s = (tab[ph >> _FRAC] * g) >> _Q
        b[j] = s & 0xFF
        b[j + 1] = (s >> 8) & 0xFF
        ph = (ph + inc) & _PHASE_MASK
    return ph


def _pair(b, pa, ia, pb, ib, g):
    # two oscillators summed, each at half the gain so the sum cannot clip
    tab = _SINE
    for j in range(0, len(b), 2):
        s = ((tab[pa >> _FRAC] + tab[pb >> _FRAC]) * g) >> (_Q + 1)
        b[j] = s & 0xFF
        b[j + 1] = (s >> 8) & 0xFF
        pa = (pa + ia) & _PHASE_MASK
        pb = (pb + ib) & _PHASE_MASK
    return pa, pb


async def play_tone(out, name, volume, buf=None):
    """Write MIN_TONE_MS of the named tone to out (AudioOut), amplitude scaled by volume 0..100.
    buf: the CHUNK * 2 bytes the samples are made in (the player lends the clip cache's play
    buffer: one speaker, one sound at a time); None allocates them."""
    if name not in TONES:
        raise ToneError("tone_unknown", name)
    rate = out.rate
    g = _gain(volume)
    b = bytearray(CHUNK * 2) if buf is None else buf
    chunks = MIN_TONE_MS * rate // (1000 * CHUNK)  # 150 at 16 kHz: exactly 3 s
    if name == "siren":
        # 1.5 s up, 1.5 s down; the pitch steps every chunk (20 ms), inaudible as steps
        half = chunks // 2
        ph = 0
        for k in range(chunks):
            step = k if k < half else chunks - 1 - k
            f = SIREN_LOW + (SIREN_HIGH - SIREN_LOW) * step // (half - 1)
            ph = _sine(b, ph, _inc(f, rate), g)
            await out.write(b)
    elif name == "alarm":
        ia = _inc(ALARM_A, rate)
        ib = _inc(ALARM_B, rate)
        pa = pb = 0
        for _ in range(chunks):
            pa, pb = _pair(b, pa, ia, pb, ib, g)
            await out.write(b)
    else:
        per = chunks // len(CHIME_NOTES)
        for f in CHIME_NOTES:
            inc = _inc(f, rate)
            ph = 0
            env = 1 << 15
            for _ in range(per):
                ph = _sine(b, ph, inc, (g * env) >> 15)
                env = (env * _CHIME_DECAY) >> 15
                await out.write(b)
        for _ in range(chunks - per * len(CHIME_NOTES)):
            _silence(b)
            await out.write(b)


async def play_beeps(out, beeps, volume, buf=None):
    """Write beeps, a sequence of (Hz, ms) with 0 Hz for a pause, to out at volume 0..100 (the
    state in beeps, docs/web.md "Button"). Each part is rounded to whole 20 ms chunks."""
    rate = out.rate
    g = _gain(volume)
    b = bytearray(CHUNK * 2) if buf is None else buf
    for f, ms in beeps:
        inc = _inc(f, rate) if f > 0 else 0
        ph = 0
        for _ in range(ms * rate // (1000 * CHUNK)):
            if inc:
                ph = _sine(b, ph, inc, g)
            else:
                _silence(b)
            await out.write(b)


def _silence(b):
    for j in range(len(b)):
        b[j] = 0
