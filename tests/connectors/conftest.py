"""Fixtures shared by the connector tests."""

from __future__ import annotations

import pytest

from braid.connectors.wandb import _native


@pytest.fixture(params=["compiled", "python"])
def both_decoders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the compiled W&B log decoder (`_logdecode.c`) and on the Python reference."""
    if request.param == "python":
        monkeypatch.setattr(_native, "decoder", None)
    elif _native.decoder is None:
        pytest.skip("the compiled decoder is not built (or BRAID_WANDB_PURE is set)")
    return str(request.param)
