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


class QueryError(UsageError):
    """A query that cannot run as written: where it is wrong, and what was probably meant.

    `line` and `column` are 1-based (0 when the error has no place in the text); `str()` is
    the one-line message and `caret()` the query line with a caret under the position.

    >>> err = QueryError("no table 'runz'", line=1, column=15, query="SELECT * FROM runz", hint="did you mean 'runs'?")
    >>> print(err)
    line 1, column 15: no table 'runz'
    >>> print(err.caret())
      SELECT * FROM runz
                    ^
    """

    def __init__(
        self, message: str, *, line: int = 0, column: int = 0, query: str = "", hint: str | None = None,
        length: int = 1,
    ) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message, hint=hint)
        self.problem = message
        self.line = line
        self.column = column
        self.query = query
        self.length = max(1, length)

    def caret(self) -> str:
        """The query line the error is on, with `^` under the span; empty without a position."""
        lines = self.query.splitlines()
        if not self.line or self.line > len(lines):
            return ""
        text = lines[self.line - 1].expandtabs(1)
        marks = "^" * min(self.length, max(1, len(text) - self.column + 1))
        return f"  {text}\n  {' ' * (self.column - 1)}{marks}"


class TransactionLogError(SourceError):
    """A W&B `.wandb` transaction log braid cannot read: names the file and the byte offset."""

    def __init__(self, path: str, message: str, *, offset: int, hint: str | None = None) -> None:
        super().__init__(path, f"{message} (at offset {offset})", hint=hint)
        self.path = path
        self.offset = offset


class MigrationUsageError(UsageError):
    """A migration that cannot be run as asked: an unknown source or target, or a direction braid
    does not migrate yet."""


class MigrationError(BraidError):
    """A migration that stopped part-way; the id map keeps what was done, so re-running the same
    command continues where it stopped."""

    def __init__(self, source: str, target: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"migrating {source!r} to {target!r}: {message}", hint=hint)
        self.source = source
        self.target = target


class MigrationTargetError(MigrationError):
    """The target failed mid-way (unreachable, refused a write)."""
