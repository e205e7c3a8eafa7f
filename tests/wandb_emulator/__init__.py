"""A W&B API emulator for tests: the one stand-in braid's tests use.

No W&B server can run here, and in wandb 0.31 the Python client hands its GraphQL to the
`wandb-core` sidecar, which sends it over HTTP: only a real HTTP server can stand in. This
one listens on 127.0.0.1, answers `POST /graphql` by parsing and validating each document
against `schema.graphql` (graphql-core) and executing it against a `ServerState` built from
real run folders written by the wandb SDK, or from what `wandb sync` and the public API upload
to it (`_uploads`), serves the manifests, run files and artifact files its answers point at,
and answers wandb-core's telemetry (`/sdk/otel/v1/...`) with 200.

    state = ServerState.from_run_folders(root / "wandb", entity="team")
    state.use("<run id>", "train-data:v0")                  # facts offline runs cannot record
    state.link("churn-model:v0", collection="churn", aliases=("production",))
    with WandbEmulator(state).running() as emulator:
        api = wandb.Api(overrides={"base_url": emulator.url})

    with WandbEmulator(ServerState()).running() as emulator:  # an empty server to upload to
        subprocess.run(["wandb", "sync", run_folder], env={..., "WANDB_BASE_URL": emulator.url})
"""

from ._queries import from_gid, gid
from ._server import WandbEmulator
from ._state import ServerArtifact, ServerLink, ServerRun, ServerState

__all__ = ["ServerArtifact", "ServerLink", "ServerRun", "ServerState", "WandbEmulator", "from_gid", "gid"]
