"""The compiled traversal walk (`_walk.c`) when it was built and is not turned off, else None.

The extension is optional (a machine without a compiler installs without it) and only makes
the walk faster: `traversal.reach` and `reach_many` run their numpy code, the reference,
whenever it is missing or declines a call (returns None). `BRAID_WALK_PURE=1` in the
environment forces the numpy path; tests set `walker` to None for the same.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("BRAID_WALK_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _walk
    except ImportError:
        return None
    return _walk


walker: ModuleType | None = _load()
