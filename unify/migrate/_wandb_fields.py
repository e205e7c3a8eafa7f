"""What a W&B run can hold, and how each source field gets there: the declaration
(`WANDB_FIELDS`, with `TAG_FIELDS`, `WANDB_STATUS`, `CONFIG`) that the writer, the expected
report (`_wandb_fates`) and the read-back verification (`_wandb_verify`) all follow, the texts
the report gives, and W&B's own naming rules (project, artifact and collection names, run ids).
"""

from __future__ import annotations

import hashlib
import re

from braid.connectors.mlflow._normalise import GIT_BRANCH, GIT_COMMIT, GIT_REMOTE, PARENT, RUN_NAME, USER

from ._plan import (DELETED, EXPERIMENT_EMPTY, METRIC_MODEL_DELETED, MODEL_NO_RUN, MODEL_NOT_CARRIED,
                    MODEL_RUN_NOT_MIGRATED, PARENT_NOT_MIGRATED, RUN_DELETED, How)
from ._sources import SOURCE_STATUS_TAG

NOTE = "mlflow.note.content"
# W&B's own limits (wandb.init refuses values outside them)
MAX_TAG_LENGTH = 64
MAX_PROJECT_LENGTH = 128
PROJECT_FORBIDDEN = re.compile(r"[/\\#?%:]")
DEFAULT_PROJECT = "uncategorized"  # W&B's name for runs without a project
# history keys the SDK writes itself; config keys it keeps for itself
RESERVED_METRIC_KEYS = ("_step", "_timestamp", "_runtime")
RESERVED_PARAM_KEYS = ("_wandb",)
# braid's own config namespace: what the source knew that a W&B run has no field for
CONFIG = "braid"
# each run's files are one artifact of this type, named this prefix and the W&B run id; W&B's
# reader calls a type other than dataset/model an `artifact`
ARTIFACT_TYPE = "run-files"
ARTIFACT_PREFIX = "run-"
# each MLflow 3 LoggedModel is an artifact of this type (W&B's reader makes it a `model` node),
# named after the model; a registry version links it into the collection named after its
# registered model, in this registry of the target's organization
MODEL_TYPE = "model"
REGISTRY = "wandb-registry-model"
# what a W&B artifact or collection name cannot hold (the SDK refuses '/', ':' names a version),
# and its length
ARTIFACT_NAME_FORBIDDEN = re.compile(r"[^\w.-]")
MAX_ARTIFACT_NAME = 128
# the alias W&B gives the newest link of a collection itself (MLflow reserves it too)
LATEST = "latest"

# MLflow status (W&B and DVC sources are shaped as MLflow first, `_sources.STATUS`) -> the W&B
# status the exit code gives; statuses not listed become "crashed"
WANDB_STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed", "RUNNING": "crashed",
                "SCHEDULED": "crashed"}
EXACT_STATUS = ("FINISHED", "FAILED")
# W&B status -> the exit code run.finish records (braid's W&B reader: 0 finished, 254 crashed, else failed)
EXIT_CODES = {"finished": 0, "failed": 1, "crashed": 254}
# tags that become a W&B field instead of a tag: tag -> field
TAG_FIELDS = {RUN_NAME: "name", USER: "user", GIT_COMMIT: "git_commit", GIT_REMOTE: "git_remote",
              GIT_BRANCH: "git_branch", NOTE: "notes", PARENT: "parent", SOURCE_STATUS_TAG: "status"}

# why and how, once: the declaration below, the writer and the report all use these
RUN_ID = (f"the W&B run id is a hash of the source name and run id (stable across re-runs); the source id "
          f"is config {CONFIG}.source_id")
TIMES = (f"the W&B run starts when braid writes it (wandb.init stamps its own start time; a server's run, when it "
         f"is uploaded): the original start and end are config {CONFIG}.started_at / {CONFIG}.ended_at; history "
         "rows keep their original _timestamp")
STATUS_HOW = ("as the exit code of run.finish: "
              + ", ".join(f"{s} {EXIT_CODES[w]} ({w})" for s, w in WANDB_STATUS.items())
              + f" (the SDK writes a folder only for a run it finished); the original, when not the same, is config "
                f"{CONFIG}.source_status")
TAG_AS_FIELD = (f"an MLflow system tag becomes a W&B field: {RUN_NAME} the name, {USER} the username, "
                f"{GIT_COMMIT} and {GIT_REMOTE} the git record, {NOTE} the notes; {GIT_BRANCH} is config "
                f"{CONFIG}.git_branch (W&B records no branch)")
TAG_IN_CONFIG = (f"a tag with a value, or longer than {MAX_TAG_LENGTH} characters, is config {CONFIG}.tags.<key>: "
                 f"W&B tags are labels of 1 to {MAX_TAG_LENGTH} characters")
PARENT_LINK = (f"W&B has no parent runs: config {CONFIG}.parent_id names the parent's W&B run id, and a parent "
               "and its descendants share one W&B group (the top parent's run id)")
DATASETS = (f"W&B runs record inputs as artifacts they used, and a dataset input holds no bytes braid could log as "
            f"one (offline runs cannot use artifacts at all): each dataset's name, digest, source, schema, profile "
            f"and input tags are config {CONFIG}.datasets")
ARTIFACT_BYTES = (f"each run's files are one W&B artifact of the run (type {ARTIFACT_TYPE!r}, named "
                  f"{ARTIFACT_PREFIX}<W&B run id>), at their source paths, every path checked to stay inside the "
                  "artifact folder; the SDK stages the bytes for `wandb sync`")
MODEL_ARTIFACT = (f"each MLflow 3 LoggedModel is a W&B artifact of type {MODEL_TYPE!r} logged by its run, named "
                  f"after the model (characters W&B names cannot hold become '-'); its params, tags, model_type, "
                  f"status and source model id are the artifact's metadata ({CONFIG}.source_id)")
OFFLINE_LINK = ("an offline W&B run cannot link an artifact into a registry (link_artifact raises): a folder target "
                "holds the model artifact, `wandb sync` and a link on the server are left to you")
LINKED = (f"a version links its model's W&B artifact into the registry collection named after the registered model "
          f"({REGISTRY}/<name>), in version order (W&B numbers a collection's links v0, v1... as they are made): "
          f"its logged model's artifact, or, for an MLflow 2 version (a `runs:/<run>/<path>` source, or one under "
          f"the run's artifact root), the run's <path> folder, logged by the run as a {MODEL_TYPE!r} artifact named "
          f"after the registered model (every path checked; the source and the versions naming it in its metadata)")
SHARED_LINK = ("another version of the registered model points at the same model, so at the same W&B artifact version, "
               "and a W&B registry collection holds an artifact version once (linking it again returns that link): "
               "this version is that link, with its aliases and stage added; its own version number is lost")
NO_MODEL = ("the version's source is neither a logged model nor a folder of a run's files (`runs:/<run>/<path>` or "
            "under the run's artifact root): W&B links model artifacts, and braid has none to log for it")
VERSION_MODEL_NOT_MIGRATED = "the logged model or the run the version points at is not part of this migration"
# a stage input another migrated run wrote: the consumer uses the producer's run-files artifact
USED = (f"a file a run read that another migrated run wrote (a DVC output of an earlier stage execution): the run uses "
        f"that producer run's {ARTIFACT_TYPE!r} artifact (run.use_artifact through the public API once both are "
        f"on the server; an offline folder cannot record it), so W&B's lineage shows the edge")
OFFLINE_USE = (f"a file a run read that another migrated run wrote: an offline W&B run cannot use an artifact "
               f"(use_artifact raises TypeError); the producer's {ARTIFACT_TYPE!r} artifact is in the folder, and the "
               f"use needs a W&B server target")
NO_LINKED_VERSION = "none of its versions is linked (see model_version)"
# a run's links to logged models (MLflow's inputs table) and the metrics logged against them
MODEL_OUTPUT = (f"the run produced the logged model: the model's {MODEL_TYPE!r} artifact is logged by the run's W&B "
                f"run (W&B's logged_by, braid's `output` edge), in a folder as on a server; the step MLflow records "
                f"with the output is not carried (W&B logs an artifact at no step)")
OTHER_OUTPUT = ("the run is recorded as producing a model another run logged (MLflow's log_outputs): a W&B artifact "
                "is logged by one run, the model's own (its source_run_id)")
MODEL_USED = (f"the run uses the model's {MODEL_TYPE!r} artifact (run.use_artifact through the public API once both "
              f"runs are on the server), so W&B's lineage shows the model as the run's input (an `input` edge)")
OFFLINE_MODEL_USE = (f"an offline W&B run cannot use an artifact (use_artifact raises TypeError): the model's "
                     f"{MODEL_TYPE!r} artifact is in the folder, and the use needs a W&B server target")
MODEL_METRIC_HISTORY = ("a W&B history row names no model: the metric's link to the model (and its dataset name and "
                        "digest) is lost; its value travels as its run's history point, where the run holds one "
                        "(counted under metric_point)")
LINK_OUTSIDE = "its run or its model is not part of this migration"
# the rows of a deleted run stay behind with it (the same case in every kind of a run's rows)
LEFT_WITH_RUN = {"deleted_run": ("not_carried", RUN_DELETED)}

# entity kind -> field (or case) -> (how, why): what happens on the way into a W&B run folder.
# `history` names each metric point's case and `tag_fates` each tag's; the report counts them here.
WANDB_FIELDS: dict[str, dict[str, tuple[How, str]]] = {
    "experiment": {
        "name": ("carried", "an experiment (a DVC repository) becomes the W&B project of that name"),
        "renamed": ("transformed", f"renamed: W&B project names cannot hold / \\ # ? % : (each becomes '-') nor "
                                   f"more than {MAX_PROJECT_LENGTH} characters"),
        "project": ("transformed", f"on a W&B server, every run goes into the project the target names (`project`): "
                                   f"braid reads one project of a server; the experiment's name is config "
                                   f"{CONFIG}.experiment"),
        "tags": ("not_carried", "experiment tags: W&B projects have no tags the SDK can write"),
        # an experiment no planned run is in (and its tags), as the MLflow target's report says
        "deleted": ("not_carried", DELETED),
        "empty": ("not_carried", EXPERIMENT_EMPTY),
    },
    "run": {"id": ("transformed", RUN_ID), "lifecycle_stage": ("not_carried", DELETED)},
    "run_detail": {
        "name": ("carried", "as the display name; a run without a name shows its W&B run id"),
        "user": ("carried", "as the W&B username"),
        "git_commit": ("carried", "commit and remote URL in the W&B run's git record"),
        "times": ("transformed", TIMES),
        "status": ("transformed", STATUS_HOW),
        "group": ("transformed", "a parent run and its descendants share the W&B group of the top parent's id"),
        "job_type": ("transformed", "a DVC stage execution's job type is its stage name, an experiment's "
                                    "'experiment'; MLflow runs have none"),
        "host": ("not_carried", "host and environment: the W&B run's describe the process that wrote the folder"),
    },
    "param": {
        "value": ("carried", "as a config value, the text in full (W&B has no 6,000-character limit)"),
        "reserved": ("not_carried", f"a config key W&B or braid keeps for itself (_wandb, {CONFIG}, {CONFIG}.*)"),
        **LEFT_WITH_RUN,
    },
    "metric_point": {
        "value": ("carried", "a history row at the original step with the original _timestamp; NaN and ±inf as "
                             "they are"),
        "timestamp": ("transformed", "a W&B history row has one _timestamp: this point shares its step with a "
                                     "later one and takes that point's timestamp"),
        "same_step": ("not_carried", "another value of this metric at the same step: a W&B history row holds one "
                                     "value per key (the last logged is kept)"),
        "negative_step": ("not_carried", "a negative step: W&B history steps start at 0 (the SDK drops the row)"),
        "reserved": ("not_carried", f"a history key W&B writes itself ({', '.join(RESERVED_METRIC_KEYS)})"),
        **LEFT_WITH_RUN,
    },
    "tag": {
        "label": ("carried", "a tag without a value becomes a W&B tag"),
        "config": ("transformed", TAG_IN_CONFIG),
        "field": ("transformed", TAG_AS_FIELD),
        **LEFT_WITH_RUN,
    },
    "parent_link": {"parent": ("transformed", PARENT_LINK),
                    "outside": ("not_carried", f"{PARENT_NOT_MIGRATED} (its source id is config "
                                               f"{CONFIG}.source_parent_id)"),
                    **LEFT_WITH_RUN},
    "dataset_input": {"dataset": ("transformed", DATASETS),
                      "used": ("transformed", f"{USED}; its name and digest are config {CONFIG}.datasets too"),
                      "offline": ("transformed", f"config {CONFIG}.datasets only: {OFFLINE_USE}"),
                      **LEFT_WITH_RUN},
    "dataset_output": {"dataset": ("transformed", f"a dataset a run wrote: its files are in the run's "
                                                  f"{ARTIFACT_TYPE!r} artifact (artifact bytes), not a W&B dataset "
                                                  f"artifact of its own")},
    "other_output": {"file": ("transformed", f"a model or file a run wrote: its files are in the run's "
                                             f"{ARTIFACT_TYPE!r} artifact (artifact bytes), not a W&B artifact of "
                                             f"its own")},
    "unlinked_file": {"file": ("not_carried", "a dataset, model or file no migrated run read or wrote (e.g. a "
                                              "DVC-tracked file no stage uses, and the files inside it): braid writes "
                                              f"files into W&B only as a run's {ARTIFACT_TYPE!r} artifact")},
    "other_input": {"file": ("not_carried", "a model or file a run read that no migrated run wrote: W&B runs record "
                                            "inputs as artifacts they used, and braid logs none for it"),
                    "used": ("transformed", USED),
                    "offline": ("not_carried", OFFLINE_USE)},
    "artifact": {"bytes": ("carried", ARTIFACT_BYTES),
                 "model_files": ("carried", f"a logged model's files are its {MODEL_TYPE!r} artifact's, at their "
                                            f"source paths, every path checked"),
                 **LEFT_WITH_RUN,
                 "model_left": ("not_carried", MODEL_NOT_CARRIED)},
    "logged_model": {"model": ("transformed", MODEL_ARTIFACT),
                     "outside": ("not_carried", MODEL_RUN_NOT_MIGRATED),
                     "no_run": ("not_carried", MODEL_NO_RUN),
                     "deleted": ("not_carried", DELETED)},
    # registry entries, by the case `version_fates` gives each version
    "registered_model": {"link": ("transformed", f"the W&B registry collection {REGISTRY}/<name> (made by the "
                                                 f"first link)"),
                         "offline": ("not_carried", OFFLINE_LINK),
                         "unlinked": ("not_carried", NO_LINKED_VERSION),
                         "tags": ("not_carried", f"a registered model's tags: braid writes none on the {REGISTRY} "
                                                 f"collection a link makes"),
                         "description": ("not_carried", f"a registered model's description: braid writes none on "
                                                        f"the {REGISTRY} collection a link makes")},
    "model_version": {"link": ("transformed", LINKED),
                      "offline": ("not_carried", OFFLINE_LINK),
                      "shared": ("transformed", SHARED_LINK),
                      "no_model": ("not_carried", NO_MODEL),
                      "outside": ("not_carried", VERSION_MODEL_NOT_MIGRATED),
                      "source_registry": ("not_carried", "a DVC model registry entry names no model artifact "
                                                         "braid logs"),
                      "tags": ("not_carried", "a model version's tags: a W&B registry link holds only aliases"),
                      "description": ("not_carried", "a model version's description: a W&B registry link holds "
                                                     "only aliases")},
    # a run's links to logged models (`_wandb_fates.model_link_cases`); a link whose run or model
    # stays behind is `outside`, with the plan's reason (`Plan.model_links`)
    "model_output": {"logged_by": ("transformed", MODEL_OUTPUT),
                     "other_run": ("not_carried", OTHER_OUTPUT),
                     "outside": ("not_carried", LINK_OUTSIDE),
                     **LEFT_WITH_RUN},
    "model_input": {"used": ("carried", MODEL_USED),
                    "offline": ("not_carried", OFFLINE_MODEL_USE),
                    "outside": ("not_carried", LINK_OUTSIDE),
                    **LEFT_WITH_RUN},
    "model_metric": {"history": ("not_carried", MODEL_METRIC_HISTORY),
                     "outside": ("not_carried", LINK_OUTSIDE),
                     "deleted_model": ("not_carried", METRIC_MODEL_DELETED)},
    "alias": {"link": ("carried", "an alias of the link"),
              "stage": ("transformed", "an MLflow stage is an alias of the link (W&B has no stages)"),
              "offline": ("not_carried", OFFLINE_LINK),
              "unlinked": ("not_carried", "its version is not linked (see model_version)")},
}
# the metric point cases that are written
WRITTEN = ("value", "timestamp")


# -- W&B names ----------------------------------------------------------------------------------

def wandb_run_id(source: str, run_uuid: str) -> str:
    """The W&B run id of a source run: the same for every migration of that run.

    >>> wandb_run_id("old", "0123abcd")
    'b7d8440734da7710be05'
    """
    return hashlib.blake2b(f"{source}\x00{run_uuid}".encode(), digest_size=10).hexdigest()


def artifact_name(wid: str) -> str:
    """The W&B artifact holding the files of the run `wid`."""
    return ARTIFACT_PREFIX + wid


def wandb_name(name: str) -> str:
    """A name W&B takes for an artifact or a registry collection.

    >>> wandb_name("churn/model: v2")
    'churn-model--v2'
    """
    return ARTIFACT_NAME_FORBIDDEN.sub("-", name)[:MAX_ARTIFACT_NAME] or MODEL_TYPE


def project_name(experiment: str | None) -> str:
    """The W&B project an experiment becomes.

    >>> project_name("team/churn: v2")
    'team-churn- v2'
    """
    return PROJECT_FORBIDDEN.sub("-", experiment or "")[:MAX_PROJECT_LENGTH] or DEFAULT_PROJECT

