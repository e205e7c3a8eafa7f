"""One error root with specific subclasses that carry where things went wrong.

The CLI prints `str(error)` as one line (plus `hint` when there is one) and exits with
`exit_code`: 2 for usage and query errors, 1 for source and catalog failures.
"""

from __future__ import annotations


class BraidError(Exception):
    """Root of every error braid reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(BraidError):
    """The user asked for something braid cannot do as asked."""

    exit_code = 2


class ConfigError(UsageError):
    """braid.toml is missing, unreadable or wrong."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path


class NodeNotFound(UsageError):
    """A node id that is not in the catalog."""

    def __init__(self, node: str, suggestions: list[str], *, why: str | None = None) -> None:
        hint = "did you mean: " + ", ".join(suggestions) if suggestions else None
        super().__init__(f"no node {node!r} in the catalog" + (f": {why}" if why else ""), hint=hint)
        self.node = node
        self.suggestions = suggestions


class SourceError(BraidError):
    """Reading a source failed; names the source and where."""

    def __init__(self, source: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"source {source!r}: {message}", hint=hint)
        self.source = source


class SourceUnreachable(SourceError):
    """The server or database did not answer."""


class SourceAuthError(SourceError):
    """The source refused our credentials."""


class SchemaVersionError(SourceError):
    """The store's schema is one braid does not know."""


class CatalogError(BraidError):
    """The catalog on disk cannot be read or written."""

    def __init__(self, path: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"catalog {path}: {message}", hint=hint)
        self.path = path


class CatalogCorrupt(CatalogError):
    """A manifest or table file is damaged."""


class CatalogLocked(CatalogError):
    """Another writer holds the catalog."""


class CatalogMoved(CatalogError):
    """The generation this reader holds was superseded and its files collected."""


class CatalogMissing(CatalogError):
    """No catalog has been synced at that path yet."""
