# Firmware version string, reported at boot and in heartbeats.
VERSION = "0.1.0"
TRIAL = False  # set by the boot selector: this version runs on trial (docs/ota.md)
