# Sound-column terminal board: the horn terminal's controller board (board_horn.py, flashed beside
# this file) driving a built-in PCM5102A -> TPA3116D2 class-D amplifier. hardware/README.md.
import board_horn as _h

# The controller board and its pin map are the horn's; what differs is the audio stage:
# - GPIO12 drives the TPA3116D2's SDZ (enable) instead of a mains relay: the amplifier is ready
#   in tens of ms, hence the "column" profile's 100 ms warm-up (amp.PROFILES, config "profile").
# - the line sense is an INA181A2 (gain 50) on a 10 mOhm shunt in the amplifier's 24 V supply:
#   0.5 V per A, so 2 mA per mV at the ADC.
_h._LINE_MA_PER_MV.update({"num": 2, "den": 1})

from board_horn import *  # the API; pins and scales above are already set

NAME = "column"
