"""The compiled decoder (`_logdecode.c`) when it was built and is not turned off, else None.

The extension is optional (a machine without a compiler installs without it) and only ever
takes the common case faster: `_txlog._scan` and `_bulk` fall back to their Python code, the
reference, whenever it is missing or gives up on a batch. `BRAID_WANDB_PURE=1` in the
environment forces the Python path; tests set `decoder` to None for the same.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("BRAID_WANDB_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _logdecode
    except ImportError:
        return None
    return _logdecode


decoder: ModuleType | None = _load()
