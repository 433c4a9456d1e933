"""The terminal's own rule modules, loaded on the host as they are (plain Python, no `machine`,
no `micropython`): where a rule exists on the device, the host reads that file instead of keeping
a copy (firmware/limits.py, firmware/region.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
_LOADED: dict[str, ModuleType] = {}


def load(name: str) -> ModuleType:
    """firmware/<name>.py as a module of its own (cached); ImportError when it cannot be read."""
    mod = _LOADED.get(name)
    if mod is None:
        path = FIRMWARE / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"cunxiang_firmware_{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the terminal's {name} from {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _LOADED[name] = mod
    return mod
