"""The filters dialog: which tools and kinds the search and the lineage tree show, and as of when."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, SelectionList

from braid.unify.schema import NODE_KINDS, TOOLS

from ._model import Filters, parse_as_of


class FiltersScreen(ModalScreen[Filters | None]):
    """Pick tools, kinds and an as_of time; dismisses with the new Filters (None: cancelled)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", tooltip="Close without changing the filters"),
        Binding("ctrl+s", "apply", "Apply", tooltip="Apply the filters"),
        Binding("ctrl+x", "reset", "Clear all", tooltip="Show every tool, kind and time"),
    ]
    DEFAULT_CSS = """
    FiltersScreen { align: center middle; }
    FiltersScreen > Vertical { width: 64; height: auto; border: thick $accent; background: $surface; padding: 0 1; }
    FiltersScreen Horizontal { height: auto; }
    FiltersScreen SelectionList { width: 1fr; height: auto; max-height: 9; }
    FiltersScreen #buttons { margin-top: 1; }
    FiltersScreen Button { margin-right: 1; }
    """

    def __init__(self, current: Filters) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Filters: what search and the lineage tree show (none ticked: all)")
            with Horizontal():
                yield SelectionList[str](*[(t, t, t in self.current.tools) for t in TOOLS], id="tools")
                yield SelectionList[str](*[(k, k, k in self.current.kinds) for k in NODE_KINDS], id="kinds")
            yield Label("as of (ISO 8601, UTC unless a zone is given; empty: now)")
            as_of = self.current.as_of.isoformat() if self.current.as_of else ""
            yield Input(as_of, placeholder="2026-01-31T12:00Z", id="as_of")
            yield Label("", id="problem")
            with Horizontal(id="buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Clear all", id="reset")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#tools", SelectionList).border_title = "tools"
        self.query_one("#kinds", SelectionList).border_title = "kinds"
        self.query_one("#tools", SelectionList).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"apply": self.action_apply, "reset": self.action_reset, "cancel": self.action_cancel}[event.button.id or "cancel"]()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.action_apply()

    def action_apply(self) -> None:
        try:
            as_of = parse_as_of(self.query_one("#as_of", Input).value)
        except ValueError as exc:
            self.query_one("#problem", Label).update(f"[red]as of: {exc}[/]")
            return
        self.dismiss(Filters(
            tools=frozenset(self.query_one("#tools", SelectionList).selected),
            kinds=frozenset(self.query_one("#kinds", SelectionList).selected),
            as_of=as_of,
        ))

    def action_reset(self) -> None:
        self.dismiss(Filters())

    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["FiltersScreen"]
