"""GTO's model registry, read from its git tags.

    churn@v0.1.0          register a version        churn@v0.1.0!        deregister it
    churn#prod#3          assign stage prod (3rd    churn#prod!#4        unassign it
                          event of the artifact)    churn@deprecated#5   deprecate the artifact
    churn#prod            assign (simple form)

Every tag is annotated (author, time, message) and points at the commit whose files the
version registers. Events are folded in order into each version's state; none is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ._git import Ref

# name: letters, digits, -, _, and nested `dir/path:name` forms; evaluated in order
TAG_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("deprecation", re.compile(r"^(?P<name>.+?)@deprecated(?:#(?P<n>\d+))?$")),
    ("deregistration", re.compile(r"^(?P<name>.+?)@(?P<version>v[^@#!]+)!(?:#(?P<n>\d+))?$")),
    ("registration", re.compile(r"^(?P<name>.+?)@(?P<version>v[^@#!]+)$")),
    ("unassignment", re.compile(r"^(?P<name>[^#@]+?)#(?P<stage>[^#@!]+)!(?:#(?P<n>\d+))?$")),
    ("assignment", re.compile(r"^(?P<name>[^#@]+?)#(?P<stage>[^#@!]+)(?:#(?P<n>\d+))?$")),
)


# tags carry whole seconds and `name@deprecated` no counter: within one second, the order that
# can only be right (a version is registered before it gets a stage, and ends after)
SAME_SECOND = {"registration": 0, "assignment": 1, "unassignment": 1, "deregistration": 2, "deprecation": 3}


@dataclass(frozen=True)
class Event:
    event: str
    name: str
    commit: str
    tag: str
    author: str
    author_email: str
    time: datetime | None
    message: str
    version: str | None = None
    stage: str | None = None
    number: int | None = None

    def as_json(self) -> dict[str, object]:
        return {"event": self.event, "version": self.version, "stage": self.stage, "tag": self.tag,
                "commit": self.commit, "author": self.author, "author_email": self.author_email,
                "time": self.time.isoformat() if self.time else None, "message": self.message}


@dataclass
class Version:
    """A registered version's state after every event so far."""

    name: str
    version: str
    commit: str
    registered: Event
    stages: set[str] = field(default_factory=set)
    deregistered: bool = False
    deprecated: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "deprecated" if self.deprecated else "deregistered" if self.deregistered else "registered"


def parse_tag(ref: Ref) -> Event | None:
    """The registry event a tag records, or None for tags that are not GTO's."""
    tag = ref.name.removeprefix("refs/tags/")
    for event, pattern in TAG_FORMS:
        match = pattern.match(tag)
        if match:
            groups = match.groupdict()
            number = groups.get("n")
            return Event(
                event=event, name=groups["name"], commit=ref.target, tag=tag, author=ref.tagger,
                author_email=ref.tagger_email,
                time=datetime.fromtimestamp(ref.tagged, UTC) if ref.tagged is not None else None,
                message=ref.message, version=groups.get("version"), stage=groups.get("stage"),
                number=int(number) if number else None,
            )
    return None


def fold(events: Iterable[Event]) -> list[Version]:
    """Each version's state after its events, in time order (GTO's counter breaks ties)."""
    ordered = sorted(events, key=lambda e: (e.time or datetime.min.replace(tzinfo=UTC), SAME_SECOND[e.event],
                                            e.number or 0, e.tag))
    # GTO's `#N` counts an artifact's events: where tags carry it, it orders them, whatever their
    # timestamps say (tags made within one second, or clocks that disagree)
    for name in {e.name for e in ordered}:
        slots = [i for i, e in enumerate(ordered) if e.name == name and e.number is not None]
        for i, event in zip(slots, sorted((ordered[i] for i in slots), key=lambda e: e.number or 0), strict=True):
            ordered[i] = event
    versions: dict[tuple[str, str], Version] = {}
    by_commit: dict[tuple[str, str], Version] = {}
    for event in ordered:
        if event.event == "registration" and event.version:
            version = Version(event.name, event.version, event.commit, event)
            versions[(event.name, event.version)] = version
            by_commit[(event.name, event.commit)] = version
            version.events.append(event)
        elif event.event == "deregistration":
            target = versions.get((event.name, event.version or ""))
            if target:
                target.deregistered = True
                target.events.append(event)
        elif event.event == "deprecation":
            for version in versions.values():
                if version.name == event.name:
                    version.deprecated = True
                    version.events.append(event)
        else:
            # a stage tag names the commit, and the version registered at that commit
            target = by_commit.get((event.name, event.commit))
            if target is None:
                continue
            if event.event == "assignment":
                # a stage holds one version: the last one assigned to it
                for other in versions.values():
                    if other.name == event.name:
                        other.stages.discard(event.stage or "")
                target.stages.add(event.stage or "")
            else:
                target.stages.discard(event.stage or "")
            target.events.append(event)
    return list(versions.values())
