"""Write docs/query.md from the declarations: `python -m braid.unify.query.docs [PATH]`."""

from __future__ import annotations

import sys
from pathlib import Path

from ._reference import reference


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else Path("docs/query.md")
    target.write_text(reference(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
