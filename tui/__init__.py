"""The Textual app for exploring braid's lineage graph (`braid tui`); built on `braid.unify`."""
