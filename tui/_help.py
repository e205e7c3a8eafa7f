"""The help screen, generated from the BINDINGS of every screen and widget of the app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static


def _bindings_of(owner: type[DOMNode], inherit: bool) -> dict[str, list[Binding]]:
    if inherit:
        return owner._merge_bindings().key_to_bindings
    found: dict[str, list[Binding]] = {}
    for binding in Binding.make_bindings(owner.__dict__.get("BINDINGS", [])):
        found.setdefault(binding.key, []).append(binding)
    return found


def binding_rows(owner: type[DOMNode], *, inherit: bool = True) -> list[Binding]:
    """Every binding `owner` declares (and, with `inherit`, inherits) that has a description,
    one per action."""
    seen: set[str] = set()
    rows = []
    for bindings in _bindings_of(owner, inherit).values():
        for binding in bindings:
            if binding.description and binding.action not in seen:
                seen.add(binding.action)
                rows.append(binding)
    return rows


def keys_of(owner: type[DOMNode], action: str, *, inherit: bool = True) -> list[str]:
    """All keys bound to `action` on `owner` (a binding may list several, `right,l`)."""
    return [key for key, bindings in _bindings_of(owner, inherit).items()
            if any(b.action == action for b in bindings)]


class HelpScreen(ModalScreen[None]):
    """Every key binding, by where it applies."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", tooltip="Close the help"),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: thick $accent;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, sections: Sequence[tuple[str, type[DOMNode], bool]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "braid tui: keys (mouse works too: click, scroll)"
            for title, owner, inherit in self.sections:
                yield Static(self._table(title, owner, inherit))

    def _table(self, title: str, owner: type[DOMNode], inherit: bool) -> Table:
        table = Table(title=Text(title, style="bold"), title_justify="left", box=None, show_header=False,
                      padding=(0, 1), expand=True)
        table.add_column(style="bold #f5b400", no_wrap=True, width=16)
        table.add_column(width=26)
        table.add_column(style="dim", ratio=1)
        for binding in binding_rows(owner, inherit=inherit):
            keys = " ".join(self.app.get_key_display(Binding(k, binding.action))
                            for k in keys_of(owner, binding.action, inherit=inherit))
            table.add_row(keys, binding.description, binding.tooltip or "")
        return table


__all__ = ["HelpScreen", "binding_rows"]
