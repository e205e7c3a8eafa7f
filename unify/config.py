"""braid.toml: which sources to read and where the catalog lives.

    catalog = ".braid"            # optional, relative to this file

    [[sources]]
    tool = "mlflow"
    uri = "sqlite:///mlflow.db"   # relative paths are relative to this file

Secrets never belong here: each tool's own environment variables carry them.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .ids import SOURCE_NAME_RE
from .source import SourceSpec

CONFIG_NAME = "braid.toml"
DEFAULT_CATALOG = ".braid"

# tool -> option -> what it means; `braid init` and the error messages are built from this
SOURCE_OPTIONS: dict[str, dict[str, str]] = {
    "mlflow": {
        "uri": "tracking URI: sqlite:///path.db, postgresql://..., mysql://..., or http(s)://server "
               "(default: MLFLOW_TRACKING_URI)",
    },
    "dvc": {
        "repo": "a git repository with DVC (default: the folder of braid.toml)",
        "branches": "local branches whose history to read (default: all)",
        "max_commits": "read at most this many of the newest commits that changed DVC files",
    },
    "wandb": {
        "path": "a folder of W&B run folders (run-*/offline-run-*, at any depth), e.g. \"wandb\"",
        "entity": "W&B entity (team or user); also the entity of offline runs, which record none "
                  "(default: offline)",
        "project": "W&B project: read its runs from the W&B server through the public API (with `entity`; "
                   "the key comes from WANDB_API_KEY)",
        "base_url": "W&B server URL, for self-hosted servers (default: WANDB_BASE_URL, else https://api.wandb.ai)",
        "timeout": "seconds to wait for each W&B API request before retrying it, twice (default: 30)",
    },
}
COMMON_OPTIONS = {"name": "the source's name in node ids (default: the tool)", "tool": "mlflow, wandb or dvc"}
# keys that would put a secret in the file; the message names the variable to use instead
SECRET_KEYS = {"password": "the URL in MLFLOW_TRACKING_URI or the driver's own variable (PGPASSWORD...)",
               "token": "MLFLOW_TRACKING_TOKEN / WANDB_API_KEY", "api_key": "WANDB_API_KEY",
               "secret": "the tool's environment variables"}
URL_PASSWORD_RE = re.compile(r"^[a-z0-9+.-]+://[^/@\s:]*:[^/@\s]+@", re.I)


@dataclass(frozen=True)
class Config:
    """A loaded braid.toml (or the defaults when there is none)."""

    path: Path | None
    catalog: Path
    sources: tuple[SourceSpec, ...]


def find_config(explicit: Path | None = None) -> Path | None:
    """The config to use: the one named, or braid.toml in the current folder."""
    if explicit is not None:
        return explicit
    here = Path.cwd() / CONFIG_NAME
    return here if here.is_file() else None


def load_config(path: Path | None) -> Config:
    """Read and validate a braid.toml; without one, no sources and a catalog in ./.braid."""
    if path is None:
        return Config(None, (Path.cwd() / DEFAULT_CATALOG).resolve(), ())
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("no such file", path=where, hint="run `braid init` to write one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=where) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=where) from None
    base = path.resolve().parent
    unknown = set(data) - {"catalog", "sources"}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r} (expected catalog, [[sources]])", path=where)
    catalog = (base / str(data.get("catalog", DEFAULT_CATALOG))).resolve()
    entries = data.get("sources", [])
    if not isinstance(entries, list):
        raise ConfigError("`sources` must be an array of tables ([[sources]])", path=where)
    specs = tuple(_source(i, entry, base, where) for i, entry in enumerate(entries))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two sources are named {dupes[0]!r}: give each a distinct `name`", path=where)
    return Config(path.resolve(), catalog, specs)


def _source(i: int, entry: Any, base: Path, where: str) -> SourceSpec:
    at = f"sources[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{at} must be a table", path=where)
    tool = entry.get("tool")
    if tool not in SOURCE_OPTIONS:
        known = ", ".join(SOURCE_OPTIONS)
        raise ConfigError(f"{at}: unknown tool {tool!r} (braid reads: {known})", path=where)
    allowed = SOURCE_OPTIONS[tool] | COMMON_OPTIONS
    for key, value in entry.items():
        secret = next((v for k, v in SECRET_KEYS.items() if k in key.lower()), None)
        if secret:
            raise ConfigError(f"{at}.{key}: secrets do not belong in braid.toml; use {secret}", path=where)
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{tool} sources take: {', '.join(allowed)}"
            raise ConfigError(f"{at}: unknown option {key!r}", path=where, hint=hint)
        if isinstance(value, str) and URL_PASSWORD_RE.match(value):
            raise ConfigError(f"{at}.{key}: the URL holds a password; secrets do not belong in "
                              "braid.toml", path=where,
                              hint="leave `uri` out and set MLFLOW_TRACKING_URI, or use PGPASSWORD / a .pgpass file")
    name = entry.get("name", tool)
    if not isinstance(name, str) or not SOURCE_NAME_RE.match(name) or name == "git":
        raise ConfigError(f"{at}: source name {name!r} must start with a letter and hold only "
                          "letters, digits, '.', '_' and '-' (and not be 'git')", path=where)
    options = {k: v for k, v in entry.items() if k not in COMMON_OPTIONS}
    return SourceSpec(name=name, tool=tool, options=options, base_dir=base)


def render_config(sources: list[dict[str, Any]], *, catalog: str = DEFAULT_CATALOG) -> str:
    """A braid.toml for discovered sources.

    >>> print(render_config([{"tool": "mlflow", "name": "mlflow", "uri": "sqlite:///m.db"}]))
    # braid.toml: the sources braid reads (see `braid sync --help`)
    catalog = ".braid"
    <BLANKLINE>
    [[sources]]
    name = "mlflow"
    tool = "mlflow"
    uri = "sqlite:///m.db"
    <BLANKLINE>
    """
    lines = ["# braid.toml: the sources braid reads (see `braid sync --help`)", f'catalog = "{catalog}"', ""]
    for src in sources:
        lines.append("[[sources]]")
        for key in ("name", "tool", *sorted(k for k in src if k not in ("name", "tool"))):
            lines.append(f"{key} = {_toml_str(src[key])}")
        lines.append("")
    return "\n".join(lines)


def _toml_str(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
