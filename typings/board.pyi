# Type-check view of the flash's board.py: the firmware is checked against the real ESP32 board
# (hardware/board_horn.py); the emulated board must expose the same names (tests/test_device_gates.py).
from board_horn import *
