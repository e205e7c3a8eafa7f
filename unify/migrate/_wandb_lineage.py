"""What `wandb sync` of an offline run folder cannot send, made after the upload through the
public API (`wandb.Api()`): registry links and the artifacts a run used (the run-files artifact
of the run that wrote a DVC stage's input, the model artifact of a logged model an MLflow run
used). An offline run can do neither (`link_artifact` raises NotImplementedError,
`use_artifact` TypeError), so each is made on the server once the runs involved are there
whole, and recorded in the id map as it is made: a re-run makes nothing twice.

What W&B does, which braid follows:

- A registry collection holds an artifact version once: linking the same version again returns
  the link it has (its aliases added), and does not number a new one (the emulator does the same;
  the SDK's `Artifact.link` sends every call as `LinkArtifact`). So the versions of a registered
  model that point at one model (one W&B artifact version) are linked once, with all their
  aliases, and each maps to that link (`shared` in WANDB_FIELDS).
- `Run.use_artifact(artifact)` of the public API records a used artifact (`UseArtifact`) of an
  existing run; braid's W&B reader gives it as an `input` edge.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import polars as pl

from ._idmap import IdMap
from ._plan import Plan
from ._wandb_fates import input_producers, model_link_cases
from ._wandb_fields import ARTIFACT_TYPE, CONFIG, MODEL_TYPE, REGISTRY, artifact_name, wandb_name, wandb_run_id
from ._wandb_models import LINKED_CASES, link_groups, version_fates
from ._wandb_upload import ApiTarget, Server, public_api

# the id map's records, in a consumer run's entry, of the producers whose artifact it used and of
# the logged models whose model artifact it used
USED, USED_MODELS = "used", "used_models"


def link_versions(plan: Plan, server: Server, idmap: IdMap, *, created: Counter[str], reused: Counter[str]) -> None:
    """Link each registry version whose model travelled (`version_fates`) into the registry
    collection named after its registered model, with its aliases and stage, in version order:
    one link per model of a registered model, made once (its versions `shared`). The id map's
    `model_versions` section records each version's link as it is made; a link some of whose
    versions the map lacks (a kill right after it, a version added to the source since) is made
    again, which W&B takes as the same link, its aliases added."""
    versions = version_fates(plan, server=True).filter(pl.col("case").is_in(LINKED_CASES))
    links = link_groups(versions)
    todo = [ln for ln in links.iter_rows(named=True)
            if any(idmap.get("model_versions", f"{ln['name']}/{v}") is None for v in ln["version"])]
    reused["registry links"] += links.height - len(todo)
    if not todo:
        return
    t, found = server.target, {}
    with public_api(t) as api:
        for ln in todo:
            wid = wandb_run_id(plan.source, ln["run_uuid"][0])
            where = f"{REGISTRY}/{wandb_name(ln['name'])}"
            try:
                if ln["key"] not in found:
                    found |= model_artifacts(api, t, plan.source, wid)
                artifact = found.get(ln["key"])
                if artifact is None:
                    raise ValueError(f"the run {t.entity}/{t.project}/{wid} logged no model artifact of {ln['key']}")
                link = artifact.link(where, aliases=ln["aliases"])
            except Exception as exc:  # the client's errors have no common base: one line, whatever it raised
                raise server.error(
                    f"{t.url}: linking version {ln['version'][0]} of registered model {ln['name']!r} into {where} "
                    f"failed: {_first_line(exc)}",
                    hint="the runs are on the server; run the same migration again to link the rest") from None
            for version in ln["version"]:
                idmap.set("model_versions", f"{ln['name']}/{version}", f"{where}:{link.version}")
            idmap.save()
            created["registry links"] += 1


def model_artifacts(api: Any, target: ApiTarget, source: str, wid: str) -> dict[str, Any]:
    """The model artifacts run `wid` logged on the server, by the source model id in their metadata
    (a logged model's id, or an MLflow 2 model's `runs:/<run>/<path>`)."""
    out = {}
    for artifact in api.run(f"{target.entity}/{target.project}/{wid}").logged_artifacts():
        meta = (artifact.metadata or {}).get(CONFIG) or {}
        if artifact.type == MODEL_TYPE and meta.get("source") == source:
            out[meta.get("source_id")] = artifact
    return out


def use_inputs(plan: Plan, tool: str, server: Server, idmap: IdMap, *, created: Counter[str],
               reused: Counter[str]) -> None:
    """Make each planned run use the run-files artifact of every planned run that wrote one of its
    inputs (`input_producers`), once per (consumer, producer): the id map records each use in the
    consumer's run entry (`used`: producer -> the artifact version) as it is made. A producer that
    logged no run-files artifact (none of its files could be copied) is skipped: the read-back
    check reports the use as missing."""
    uses = input_producers(plan, tool).select("consumer", "producer").unique(maintain_order=True)
    t, logged = server.target, {}

    def find(api: Any, producer: str) -> Any | None:
        if producer not in logged:
            logged[producer] = run_files_artifact(api, t, wandb_run_id(plan.source, producer))
        return logged[producer]

    _use_artifacts(plan, server, idmap, uses.rows(), record=USED, find=find, what="artifact uses",
                   describe=lambda p: f"the artifact of run {wandb_run_id(plan.source, p)}",
                   created=created, reused=reused)


def use_models(plan: Plan, server: Server, idmap: IdMap, *, created: Counter[str], reused: Counter[str]) -> None:
    """Make each planned run use the model artifact of every logged model it used in the source
    (MLflow's model inputs that travel, `model_link_cases`), found by its source model id among
    the artifacts of the run that logged it (`model_artifacts`), once per (consumer, model): the id
    map records each use in the consumer's run entry (`used_models`: model id -> the artifact
    version) as it is made. A model whose artifact is not on the server is skipped: the read-back
    check reports the use as missing."""
    uses = model_link_cases(plan, "model_input", server=True).filter(pl.col("case") == "used") \
        .select("run_uuid", "model_id").unique(maintain_order=True)
    logger = dict(plan.logged_models().select("model_id", "source_run_id").iter_rows())
    t, found = server.target, {}

    def find(api: Any, model: str) -> Any | None:
        if model not in found:
            found.update(model_artifacts(api, t, plan.source, wandb_run_id(plan.source, logger[model])))
        return found.get(model)

    _use_artifacts(plan, server, idmap, uses.rows(), record=USED_MODELS, find=find, what="model uses",
                   describe=lambda m: f"the model artifact of logged model {m}", created=created, reused=reused)


def _use_artifacts(plan: Plan, server: Server, idmap: IdMap, uses: list[tuple[str, str]], *, record: str,
                   find: Callable[[Any, str], Any | None], what: str, describe: Callable[[str], str],
                   created: Counter[str], reused: Counter[str]) -> None:
    """Make each (consumer run, source key) of `uses` a used artifact of the consumer's W&B run:
    the artifact `find` gives for the key (None: skipped), recorded in the consumer's run entry
    of the id map (`record`: key -> the artifact version) as it is made, so a re-run makes none
    twice; `what` names them in the created and reused tallies."""
    todo = [(c, k) for c, k in uses if k not in (idmap.get("runs", c) or {}).get(record, {})]
    if len(uses) > len(todo):
        reused[what] += len(uses) - len(todo)
    if not todo:
        return
    t = server.target
    with public_api(t) as api:
        for consumer, key in todo:
            wid = wandb_run_id(plan.source, consumer)
            try:
                artifact = find(api, key)
                if artifact is None:
                    continue
                api.run(f"{t.entity}/{t.project}/{wid}").use_artifact(artifact)
            except Exception as exc:  # the client's errors have no common base: one line, whatever it raised
                raise server.error(
                    f"{t.url}: run {t.entity}/{t.project}/{wid} using {describe(key)} failed: {_first_line(exc)}",
                    hint="the runs are on the server; run the same migration again to record the rest") from None
            entry = idmap.get("runs", consumer)
            idmap.set("runs", consumer, {**entry, record: {**entry.get(record, {}), key: artifact.qualified_name}})
            idmap.save()
            created[what] += 1


def run_files_artifact(api: Any, target: ApiTarget, wid: str) -> Any | None:
    """The run-files artifact run `wid` logged on the server (None: it logged none)."""
    for artifact in api.run(f"{target.entity}/{target.project}/{wid}").logged_artifacts():
        if artifact.type == ARTIFACT_TYPE and artifact.name.split(":")[0] == artifact_name(wid):
            return artifact
    return None


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
