# Firmware version string, reported at boot and in heartbeats.
VERSION = "0.1.0"
