"""Benchmark: braid's DVC history reader against DVC's own API over the same 1,000 commits.

Run from the project root:

    .venv/bin/python bench/bench_dvc_history.py [--commits N] [--branch-commits B] [--repo PATH]

    --commits N         commits on `main` that change dvc.lock (default 1000; the first is the
                        real `dvc repro`, the other N-1 are generated)
    --branch-commits B  commits on a second branch `tune`, forked from the middle of main
                        (default 50)
    --repo PATH         reuse the repository at PATH if it exists (it must be one this script
                        built), else build it there and keep it; default: a temporary folder,
                        deleted afterwards
    --repeat R          braid reads to take the best of (default 3)
    --sample K          commits whose outs are compared hash by hash (default 100)
    --profile           also cProfile one braid read and print where the time goes

What it does:
1. Builds a git repository with the real `git init` and `dvc init`, a dvc.yaml with four stages
   (`prep`; `featurize`, a foreach over train/test; `train`; `evaluate` with a metrics file),
   params.yaml and the stages' code, and runs the real `dvc repro` once: that commit's dvc.lock
   is genuine. The other commits are generated: each changes params.yaml (train.lr every
   commit, featurize.max_features every 10th, prep.split every 50th) and carries the dvc.lock
   and metrics.json that `dvc repro` would write, with the outputs' real md5s and sizes (the
   stages' code is run in-process to get their bytes). The generator's lock is checked
   byte for byte against DVC's own lock for the first commit, and samples are round-tripped
   through DVC's YAML writer. All commits go in with one `git fast-import` stream.
2. braid: `braid.connectors.dvc.read_source` on the repository, best of --repeat reads.
3. DVC: `Repo.brancher(all_commits=True)` and, at each revision, `repo.index.stages` with
   every stage's deps, outs (lock hashes) and params: timed once, on a copy of the
   repository, because DVC writes `.dvc/tmp` into the repo it opens.
4. Checks that both read the same history: for --sample commits (plus the branch tips), the
   (path, md5) of every out DVC reports equals braid's `locations` state at that commit; for
   every commit, the stages braid calls executions are exactly those whose lock entry DVC
   reports as changed from the parent commit's, and each such run's outputs in braid's graph
   are the outs DVC reports for that stage.
5. Prints commits, braid seconds, DVC seconds, the ratio DVC / braid and the goal (>= 20x);
   writes the numbers to bench/out/dvc-history-<N>.json (git-ignored).
Exits 1 when the two disagree, 0 otherwise (a missed goal is reported, not an error).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PYTHON = Path(sys.executable)  # the venv's interpreter (not resolved: the symlink selects the venv)
DVC = str(PYTHON.parent / "dvc")
GOAL = 20.0
SOURCE = "bench"
T0 = 1_700_000_000  # the first commit's date; each commit is one minute later
AUTHOR = {"GIT_AUTHOR_NAME": "braid bench", "GIT_AUTHOR_EMAIL": "bench@example.org",
          "GIT_COMMITTER_NAME": "braid bench", "GIT_COMMITTER_EMAIL": "bench@example.org"}
MAIN, BRANCH = "main", "tune"
MARKER = ".braid-bench-dvc-history"  # marks a repository this script built (safe to reuse)

# -- the project ----------------------------------------------------------------------------
# The stages' code. `dvc repro` runs it as a script; the generator execs the same text to get
# each output's bytes for the generated commits, so the md5s in every dvc.lock are real.
PIPELINE_PY = '''\
"""The bench project's stages: each output's bytes from its inputs and params."""
import hashlib
import json
import random
import sys
from pathlib import Path


def prep(raw: bytes, split: float, seed: int) -> bytes:
    rows = raw.decode().splitlines()[1:]
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * split)
    return ("x,y,part\\n" + "".join(f"{r},{'train' if i < cut else 'test'}\\n"
                                    for i, r in enumerate(rows))).encode()


def featurize(prepared: bytes, part: str, max_features: int) -> bytes:
    rows = [r.split(",") for r in prepared.decode().splitlines()[1:]]
    head = ",".join(f"f{j}" for j in range(max_features))
    body = "".join(",".join(str((int(x) * (j + 3)) % 101) for j in range(max_features)) + f",{y}\\n"
                   for x, y, p in rows if p == part)
    return f"{head},y\\n{body}".encode()


def train(features: bytes, lr: float, epochs: int) -> bytes:
    rows = features.decode().splitlines()[1:]
    width = len(rows[0].split(",")) - 1 if rows else 0
    weights = [round(lr * epochs * (j + 1) + len(rows) / 1000, 6) for j in range(width)]
    return json.dumps({"lr": lr, "epochs": epochs, "weights": weights}).encode()


def evaluate(model: bytes, features: bytes) -> bytes:
    score = int(hashlib.md5(model + features).hexdigest()[:8], 16) / 0xFFFFFFFF
    return (json.dumps({"acc": round(0.5 + score / 2, 4), "loss": round(1 - score, 4)}, indent=2)
            + "\\n").encode()


def main(stage: str, *args: str) -> None:
    import yaml

    params = yaml.safe_load(open("params.yaml"))
    read = lambda p: Path(p).read_bytes()

    def write(path: str, data: bytes) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)

    if stage == "prep":
        write("data/prepared.csv", prep(read("data/raw.csv"), params["prep"]["split"], params["prep"]["seed"]))
    elif stage == "featurize":
        write(f"data/features/{args[0]}.csv",
              featurize(read("data/prepared.csv"), args[0], params["featurize"]["max_features"]))
    elif stage == "train":
        write("models/model.pkl", train(read("data/features/train.csv"), params["train"]["lr"],
                                        params["train"]["epochs"]))
    elif stage == "evaluate":
        write("metrics.json", evaluate(read("models/model.pkl"), read("data/features/test.csv")))


if __name__ == "__main__":
    main(*sys.argv[1:])
'''

DVC_YAML = """\
stages:
  prep:
    cmd: python src/pipeline.py prep
    deps:
    - data/raw.csv
    - src/pipeline.py
    params:
    - prep.split
    - prep.seed
    outs:
    - data/prepared.csv
  featurize:
    foreach:
    - train
    - test
    do:
      cmd: python src/pipeline.py featurize ${item}
      deps:
      - data/prepared.csv
      - src/pipeline.py
      params:
      - featurize.max_features
      outs:
      - data/features/${item}.csv
  train:
    cmd: python src/pipeline.py train
    deps:
    - data/features/train.csv
    - src/pipeline.py
    params:
    - train.lr
    - train.epochs
    outs:
    - models/model.pkl
  evaluate:
    cmd: python src/pipeline.py evaluate
    deps:
    - models/model.pkl
    - data/features/test.csv
    - src/pipeline.py
    metrics:
    - metrics.json:
        cache: false
"""

RAW_CSV = "x,y\n" + "".join(f"{i},{(i * 7) % 3}\n" for i in range(200))


@dataclass(frozen=True)
class Params:
    split: float = 0.8
    seed: int = 1
    max_features: int = 4
    lr: float = 0.01
    epochs: int = 10

    def yaml(self) -> str:
        return (f"prep:\n  split: {self.split!r}\n  seed: {self.seed}\nfeaturize:\n  max_features: "
                f"{self.max_features}\ntrain:\n  lr: {self.lr!r}\n  epochs: {self.epochs}\n")


def main_params(i: int) -> Params:
    """params.yaml at main's i-th commit (0: the real `dvc repro`): train.lr changes every commit,
    featurize.max_features every 10th, prep.split every 50th."""
    if i == 0:
        return Params()
    return Params(split=round(0.5 + ((i // 50) % 40) / 100, 2), max_features=4 + (i // 10) % 8,
                  lr=round((100 + i) / 10_000, 4))


def branch_params(fork: Params, j: int) -> Params:
    """The branch's j-th commit (1-based): more epochs, its own learning rates."""
    return Params(split=fork.split, seed=fork.seed, max_features=fork.max_features,
                  lr=round(0.5 + j / 10_000, 4), epochs=20)


# -- 1. the repository ----------------------------------------------------------------------
class Tools:
    """git and dvc in a sealed environment: temporary HOME and DVC config dirs, no analytics,
    no updater, fixed author and dates."""

    def __init__(self, sandbox: Path) -> None:
        for d in ("home", "dvc-global", "dvc-system", "dvc-site"):
            (sandbox / d).mkdir(parents=True, exist_ok=True)
        (sandbox / "dvc-global" / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
        keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")}
        self.env = {**keep, **AUTHOR, "PATH": f"{PYTHON.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "HOME": str(sandbox / "home"), "GIT_CONFIG_NOSYSTEM": "1",
                    "XDG_CONFIG_HOME": str(sandbox / "home" / ".config"),
                    "XDG_CACHE_HOME": str(sandbox / "home" / ".cache"),
                    "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", "DVC_IGNORE_ISATTY": "1",
                    "DVC_GLOBAL_CONFIG_DIR": str(sandbox / "dvc-global"),
                    "DVC_SYSTEM_CONFIG_DIR": str(sandbox / "dvc-system"),
                    "DVC_SITE_CACHE_DIR": str(sandbox / "dvc-site"),
                    "DVC_UPDATER_ENDPOINT": "http://127.0.0.1:9/", "DVC_ANALYTICS_ENDPOINT": "http://127.0.0.1:9/",
                    "PYTHONWARNINGS": "ignore", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_AUTHOR_DATE": f"@{T0} +0000", "GIT_COMMITTER_DATE": f"@{T0} +0000"}

    def __call__(self, cwd: Path, *cmd: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(cmd, cwd=cwd, env=self.env, input=stdin, capture_output=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n"
                               f"{proc.stdout.decode()[-3000:]}\n{proc.stderr.decode()[-3000:]}")
        return proc.stdout.decode()


PARAM_FIELDS = {"prep.split": "split", "prep.seed": "seed", "featurize.max_features": "max_features",
                "train.lr": "lr", "train.epochs": "epochs"}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - DVC's content hash


def _plain(text: str) -> bool:
    """Can this string be written unquoted in YAML and read back as the same string?"""
    import yaml

    if not text or text != text.strip() or "\n" in text or ": " in text or " #" in text:
        return False
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def _scalar(value: Any, quoted: dict[str, str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value not in quoted:
        quoted[value] = value if _plain(value) else "'" + value.replace("'", "''") + "'"
    return quoted[value]


def emit_yaml(data: Mapping[str, Any], quoted: dict[str, str]) -> str:
    """Block-style YAML the way DVC's writer (ruamel, default_flow_style=False) lays out a lock
    file: two-space mappings, sequences at their key's indent. Only the shapes a lock has."""
    lines: list[str] = []

    def mapping(m: Mapping[str, Any], pad: str, first: str | None = None) -> None:
        for n, (key, value) in enumerate(m.items()):
            lead = first if (first is not None and n == 0) else pad
            if isinstance(value, Mapping) and value:
                lines.append(f"{lead}{_scalar(key, quoted)}:")
                mapping(value, pad + "  ")
            elif isinstance(value, list) and value:
                lines.append(f"{lead}{_scalar(key, quoted)}:")
                for item in value:
                    mapping(item, pad + "  ", first=pad + "- ")
            elif isinstance(value, (Mapping, list)):
                lines.append(f"{lead}{_scalar(key, quoted)}: {'{}' if isinstance(value, Mapping) else '[]'}")
            else:
                lines.append(f"{lead}{_scalar(key, quoted)}: {_scalar(value, quoted)}")

    mapping(data, "")
    return "\n".join(lines) + "\n"


class Generator:
    """What `dvc repro` would leave for given params: every file's bytes and the dvc.lock,
    shaped exactly like the lock the real `dvc repro` wrote (its stages, keys and order)."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        self.ns: dict[str, Any] = {"__name__": "bench_pipeline"}
        exec(compile(PIPELINE_PY, "src/pipeline.py", "exec"), self.ns)  # noqa: S102 - our own stage code
        self.template = template
        self.quoted: dict[str, str] = {}
        self._prep: dict[tuple[float, int], bytes] = {}
        self._feat: dict[tuple[str, str, int], bytes] = {}

    def files(self, p: Params) -> dict[str, bytes]:
        ns = self.ns
        raw = RAW_CSV.encode()
        if (p.split, p.seed) not in self._prep:
            self._prep[(p.split, p.seed)] = ns["prep"](raw, p.split, p.seed)
        prepared = self._prep[(p.split, p.seed)]
        key = _md5(prepared)
        for part in ("train", "test"):
            if (key, part, p.max_features) not in self._feat:
                self._feat[(key, part, p.max_features)] = ns["featurize"](prepared, part, p.max_features)
        ftrain, ftest = self._feat[(key, "train", p.max_features)], self._feat[(key, "test", p.max_features)]
        model = ns["train"](ftrain, p.lr, p.epochs)
        return {"data/raw.csv": raw, "src/pipeline.py": PIPELINE_PY.encode(), "data/prepared.csv": prepared,
                "data/features/train.csv": ftrain, "data/features/test.csv": ftest, "models/model.pkl": model,
                "metrics.json": ns["evaluate"](model, ftest), "params.yaml": p.yaml().encode()}

    def lock(self, p: Params, files: Mapping[str, bytes]) -> str:
        info = {path: (_md5(data), len(data)) for path, data in files.items()}
        stages: dict[str, Any] = {}
        for name, entry in self.template["stages"].items():
            new: dict[str, Any] = {}
            for key, value in entry.items():
                if key in ("deps", "outs"):
                    new[key] = [{**e, "md5": info[e["path"]][0], "size": info[e["path"]][1]} for e in value]
                elif key == "params":
                    new[key] = {f: {k: getattr(p, PARAM_FIELDS[k]) for k in keys} for f, keys in value.items()}
                else:
                    new[key] = value
            stages[name] = new
        return emit_yaml({**self.template, "stages": stages}, self.quoted)


def _fast_import_commit(ref: str, mark: int, when: int, message: str, parent: str | None,
                        files: Mapping[str, bytes]) -> bytes:
    who = f"{AUTHOR['GIT_AUTHOR_NAME']} <{AUTHOR['GIT_AUTHOR_EMAIL']}> {when} +0000"
    msg = message.encode()
    parts = [f"commit {ref}\nmark :{mark}\nauthor {who}\ncommitter {who}\ndata {len(msg)}\n".encode(), msg, b"\n"]
    if parent is not None:
        parts.append(f"from {parent}\n".encode())
    for path, data in files.items():
        parts += [f"M 100644 inline {path}\ndata {len(data)}\n".encode(), data, b"\n"]
    return b"".join(parts + [b"\n"])


@dataclass(frozen=True)
class Built:
    repo: Path
    commits: int
    branch_commits: int
    seconds: float
    lock_checked: str  # what the generator's lock was checked against


def build_repo(repo: Path, tools: Tools, commits: int, branch_commits: int) -> Built:
    """The repository: the real `dvc init` and one real `dvc repro`, then generated commits."""
    import yaml

    started = time.perf_counter()
    repo.mkdir(parents=True, exist_ok=True)
    if any(repo.iterdir()):
        raise SystemExit(f"{repo} exists and is not empty (and not a repo this script built)")
    tools(repo, "git", "init", "-q", "-b", MAIN)
    tools(repo, "git", "config", "user.name", AUTHOR["GIT_AUTHOR_NAME"])
    tools(repo, "git", "config", "user.email", AUTHOR["GIT_AUTHOR_EMAIL"])
    tools(repo, "git", "config", "commit.gpgsign", "false")
    tools(repo, DVC, "init", "-q")
    (repo / "src").mkdir()
    (repo / "src" / "pipeline.py").write_text(PIPELINE_PY)
    (repo / "data").mkdir()
    (repo / "data" / "raw.csv").write_text(RAW_CSV)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(main_params(0).yaml())
    tools(repo, DVC, "repro", "-q")
    tools(repo, "git", "add", "-A")
    tools(repo, "git", "commit", "-q", "-m", "dvc init; pipeline; dvc repro")
    first = tools(repo, "git", "rev-parse", "HEAD").strip()

    # the generator must reproduce DVC's own lock, byte for byte, and the real outputs' bytes
    real_lock = (repo / "dvc.lock").read_text()
    template = yaml.load(real_lock, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    gen = Generator(template)
    files0 = gen.files(main_params(0))
    for path, data in files0.items():
        if (repo / path).read_bytes() != data:
            raise RuntimeError(f"the in-process stage code wrote different bytes for {path} than `dvc repro`")
    if gen.lock(main_params(0), files0) != real_lock:
        raise RuntimeError("the generated dvc.lock differs from the one `dvc repro` wrote:\n"
                           f"{gen.lock(main_params(0), files0)}\n---\n{real_lock}")

    # the other commits, in one fast-import stream: params.yaml, dvc.lock, metrics.json
    fork = commits // 2  # the branch leaves main after main's fork-th commit (0-based)
    stream, mark, tip_mark = [], 0, {}
    samples: list[str] = []
    for i in range(1, commits):
        p = main_params(i)
        files = gen.files(p)
        lock = gen.lock(p, files)
        mark += 1
        tip_mark[i] = mark
        stream.append(_fast_import_commit(
            f"refs/heads/{MAIN}", mark, T0 + 60 * i, f"main {i}: lr={p.lr} max_features={p.max_features} "
            f"split={p.split}", first if i == 1 else None,
            {"params.yaml": files["params.yaml"], "dvc.lock": lock.encode(), "metrics.json": files["metrics.json"]}))
        if i % 97 == 1:
            samples.append(lock)
    fork_params = main_params(fork)
    for j in range(1, branch_commits + 1):
        p = branch_params(fork_params, j)
        files = gen.files(p)
        lock = gen.lock(p, files)
        mark += 1
        parent = (first if fork == 0 else f":{tip_mark[fork]}") if j == 1 else None
        stream.append(_fast_import_commit(
            f"refs/heads/{BRANCH}", mark, T0 + 60 * (commits + j), f"{BRANCH} {j}: lr={p.lr} epochs={p.epochs}",
            parent, {"params.yaml": files["params.yaml"], "dvc.lock": lock.encode(),
                     "metrics.json": files["metrics.json"]}))
        if j == branch_commits:
            samples.append(lock)
    if stream:
        tools(repo, "git", "fast-import", "--quiet", "--done", stdin=b"".join(stream) + b"done\n")
    tools(repo, "git", "reset", "-q", "--hard", MAIN)  # the worktree's DVC files match main's tip

    # samples of the generated locks must be what DVC's own YAML writer makes of their content
    from dvc.utils.serialize import dumps_yaml, parse_yaml

    for text in samples:
        if dumps_yaml(parse_yaml(text, "dvc.lock")) != text:
            raise RuntimeError(f"DVC's YAML writer lays out a generated lock differently:\n{text}")
    (repo / ".git" / MARKER).write_text(json.dumps({"commits": commits, "branch_commits": branch_commits}))
    return Built(repo, commits, branch_commits, time.perf_counter() - started,
                 f"byte-equal to `dvc repro`'s lock; {len(samples)} samples round-trip through DVC's YAML writer")


def open_or_build(repo: Path | None, work: Path, tools: Tools, commits: int, branch_commits: int) -> Built:
    if repo is not None and (repo / ".git" / MARKER).is_file():
        meta = json.loads((repo / ".git" / MARKER).read_text())
        if (meta["commits"], meta["branch_commits"]) != (commits, branch_commits):
            raise SystemExit(f"{repo} was built with --commits {meta['commits']} --branch-commits "
                             f"{meta['branch_commits']}; pass those, or another --repo")
        print(f"  reusing {repo}")
        return Built(repo, commits, branch_commits, 0.0, "checked when it was built")
    built = build_repo(repo or work / "repo", tools, commits, branch_commits)
    print(f"  built {built.repo} in {built.seconds:.1f} s ({built.lock_checked})")
    return built


# -- 2. braid -------------------------------------------------------------------------------
def braid_read(repo: Path) -> tuple[float, Any]:
    from braid.connectors.dvc import read_source
    from braid.unify.source import SourceSpec, no_progress

    started = time.perf_counter()
    batch = read_source(SourceSpec(SOURCE, "dvc", {"repo": str(repo)}), previous=None, progress=no_progress)
    return time.perf_counter() - started, batch


# -- 3. DVC's own API -----------------------------------------------------------------------
@dataclass(frozen=True)
class LockEntry:
    """One stage at one revision, as DVC's index reports it."""

    cmd: str
    deps: tuple[tuple[str, str], ...]  # (path, md5), params files left out
    outs: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, str], ...]  # (file, sorted JSON of its values)


def _stage_key(stage: Any) -> str:
    """`stage.addressing` as DVC shows it from the repo root (`prep`, `featurize@train`,
    `sub/dvc.yaml:prep`). At a git revision `addressing` itself is relative to the process's
    cwd (`../../dvc.yaml:prep`), so it is rebuilt from the path in the repo."""
    where = stage.path_in_repo
    return stage.name if where == "dvc.yaml" else f"{where}:{stage.name}"


def dvc_read(repo: Path) -> tuple[float, dict[str, dict[str, LockEntry]]]:
    """rev -> stage -> its lock entry, through `Repo.brancher` and `repo.index.stages`."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    found: dict[str, dict[str, LockEntry]] = {}
    started = time.perf_counter()
    with Repo(str(repo)) as r:
        for rev in r.brancher(all_commits=True, sha_only=True):
            stages = found.setdefault(rev, {})
            for stage in r.index.stages:
                stages[_stage_key(stage)] = LockEntry(
                    stage.cmd,
                    tuple((d.def_path, d.hash_info.value) for d in stage.deps if not isinstance(d, ParamsDependency)),
                    tuple((o.def_path, o.hash_info.value) for o in stage.outs),
                    tuple((p.def_path, json.dumps(p.hash_info.value, sort_keys=True)) for p in stage.params))
    seconds = time.perf_counter() - started
    return seconds, found


# -- 4. the same history --------------------------------------------------------------------
def _split_node(node: str) -> tuple[str, str]:
    """(path, md5) of a `<src>:<kind>/<path>@<md5>` node id."""
    from braid.unify.ids import parse_id

    path, _, md5 = parse_id(node).native.rpartition("@")
    return path, md5


def compare(repo: Path, batch: Any, dvc: Mapping[str, Mapping[str, LockEntry]], sample: int,
            seed: int) -> tuple[list[str], dict[str, int]]:
    """Problems (empty when both read the same history) and what was compared."""
    import polars as pl

    problems: list[str] = []
    git_env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    rev_list = subprocess.run(["git", "rev-list", "--parents", "--all"], cwd=repo, env=git_env,
                              capture_output=True, text=True, check=True).stdout
    parents = {line.split()[0]: line.split()[1:] for line in rev_list.splitlines() if line.strip()}
    tips = subprocess.run(["git", "rev-parse", MAIN, BRANCH], cwd=repo, env=git_env, capture_output=True,
                          text=True, check=True).stdout.split()
    commits = [c for c in dvc if c != "workspace"]
    if set(commits) != set(parents):
        problems.append(f"DVC's brancher read {len(commits)} commits, git has {len(parents)}")
    empty = [(c, s) for c in commits for s, e in dvc[c].items() if not e.outs or any(not h for _, h in e.outs)]
    if empty:
        problems.append(f"{len(empty)} stages without out hashes in DVC's index (lock not loaded?), e.g. {empty[0]}")

    # a) outs at sampled commits: DVC's index against braid's `locations` state
    loc = batch.state["locations"]
    braid_outs: dict[str, set[tuple[str, str]]] = {}
    for commit, path, node in loc.select("commit", "path", "node_id").iter_rows():
        got = _split_node(node)
        if got[0] != path:
            problems.append(f"locations row at {commit[:12]}: path {path} but node {node}")
        braid_outs.setdefault(commit, set()).add(got)
    chosen = sorted(set(random.Random(seed).sample(commits, min(sample, len(commits)))) | set(tips))
    out_mismatch = [c for c in chosen
                    if braid_outs.get(c, set()) != {o for e in dvc[c].values() for o in e.outs}]
    if out_mismatch:
        c = out_mismatch[0]
        want = sorted({o for e in dvc[c].values() for o in e.outs})
        problems.append(f"outs differ at {len(out_mismatch)} of {len(chosen)} sampled commits, e.g. {c[:12]}: "
                        f"DVC {want} braid {sorted(braid_outs.get(c, ()))}")
    if set(braid_outs) != set(commits):
        problems.append(f"braid has locations for {len(braid_outs)} commits, DVC read {len(commits)}")

    # b) executions: a stage ran in a commit where its lock entry differs from every parent's
    expected = {(c, s) for c in commits for s, e in dvc[c].items()
                if not any(dvc.get(p, {}).get(s) == e for p in parents.get(c, []))}
    runs = batch.tables["runs"]
    prefix = f"{SOURCE}:run/"
    braid_runs = {tuple(r.removeprefix(prefix).split("/", 1)) for r in runs["id"].to_list()}
    if braid_runs != expected:
        extra, missing = braid_runs - expected, expected - braid_runs
        problems.append(f"stage executions differ: braid has {len(extra)} DVC does not "
                        f"(e.g. {sorted(extra)[:2]}), misses {len(missing)} (e.g. {sorted(missing)[:2]})")

    # c) each run's outputs in braid's graph are that stage's outs in DVC's index at that commit
    edges = batch.tables["edges"].filter(pl.col("kind") == "output")
    run_outs: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for src, dst in edges.select("src", "dst").iter_rows():
        run_outs.setdefault(tuple(src.removeprefix(prefix).split("/", 1)), set()).add(_split_node(dst))
    bad_runs = [k for k in braid_runs & expected if run_outs.get(k, set()) != set(dvc[k[0]][k[1]].outs)]
    if bad_runs:
        k = bad_runs[0]
        problems.append(f"{len(bad_runs)} runs' outputs differ, e.g. {k}: DVC {dvc[k[0]][k[1]].outs} "
                        f"braid {sorted(run_outs.get(k, ()))}")
    counted = {"commits": len(commits), "sampled_commits": len(chosen),
               "sampled_outs": sum(len(braid_outs.get(c, ())) for c in chosen),
               "executions": len(expected), "run_outputs": sum(len(v) for v in run_outs.values())}
    return problems, counted


# -- profile --------------------------------------------------------------------------------
def profile_read(repo: Path, top: int = 30) -> None:
    prof = cProfile.Profile()
    prof.enable()
    seconds, _ = braid_read(repo)
    prof.disable()
    print(f"\ncProfile of one braid read ({seconds:.2f} s under the profiler)")
    for order, n in (("cumulative", top), ("tottime", 20)):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(n)
        text = buf.getvalue()
        print(f"--- by {order} ---")
        print(text[text.find("   ncalls"):].rstrip())


# -- main -----------------------------------------------------------------------------------
def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (with .git) -> (size, mtime): what a reader must leave alone."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return found


def _sealed_dvc_env(sandbox: Path) -> None:
    """DVC in this process: no analytics, config and site cache inside the sandbox."""
    os.environ.update({"DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1",
                       "DVC_GLOBAL_CONFIG_DIR": str(sandbox / "dvc-global"),
                       "DVC_SYSTEM_CONFIG_DIR": str(sandbox / "dvc-system"),
                       "DVC_SITE_CACHE_DIR": str(sandbox / "dvc-site")})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=1000, help="dvc.lock commits on main (default 1000)")
    ap.add_argument("--branch-commits", type=int, default=50, help=f"commits on the `{BRANCH}` branch (default 50)")
    ap.add_argument("--repo", type=Path, default=None, help="reuse (or build and keep) the repository here")
    ap.add_argument("--repeat", type=int, default=3, help="braid reads to take the best of (default 3)")
    ap.add_argument("--sample", type=int, default=100, help="commits compared out by out (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="cProfile one braid read")
    args = ap.parse_args(argv)
    if args.commits < 1 or args.branch_commits < 0 or args.repeat < 1:
        ap.error("--commits and --repeat must be at least 1, --branch-commits at least 0")

    work = Path(tempfile.mkdtemp(prefix="bench-dvc-history-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    import dvc

    tools = Tools(work / "sandbox")
    _sealed_dvc_env(work / "sandbox")
    total = args.commits + args.branch_commits
    print(f"repository: {args.commits:,} dvc.lock commits on {MAIN} + {args.branch_commits} on {BRANCH} "
          f"= {total:,}; 5 stages (prep, featurize@train/test, train, evaluate)")
    built = open_or_build(args.repo.resolve() if args.repo else None, work, tools, args.commits, args.branch_commits)
    repo = built.repo

    # 2. braid, best of --repeat; it must leave the repository as it was
    before = _listing(repo)
    braid_times, batch = [], None
    for i in range(args.repeat):
        seconds, batch = braid_read(repo)
        braid_times.append(seconds)
        print(f"  braid read {i + 1}/{args.repeat}: {seconds:.3f} s")
    braid_s = min(braid_times)
    assert batch is not None
    untouched = _listing(repo) == before

    # 3. DVC, once, on a copy
    copy = work / "dvc-copy"
    shutil.copytree(repo, copy, symlinks=True)
    print("  DVC: Repo.brancher(all_commits=True) + repo.index.stages at each revision (on a copy) ...")
    dvc_s, dvc_found = dvc_read(copy)
    print(f"  DVC read: {dvc_s:.3f} s ({len(dvc_found):,} revisions incl. the workspace)")

    # 4. the same history
    problems, counted = compare(repo, batch, dvc_found, args.sample, args.seed)
    if not untouched:
        problems.insert(0, "braid's read changed files in the repository")

    # 5. the table
    tables = {k: v.height for k, v in batch.tables.items()}
    nodes = batch.tables["nodes"]
    run_nodes = nodes.filter(nodes["kind"] == "run").height
    ratio = dvc_s / braid_s
    w = 62

    def row(label: str, value: str) -> None:
        print(f"{label:<{w}} {value:>10}")

    print()
    print(f"braid vs DVC's API: {total:,} dvc.lock commits ({args.commits:,} on {MAIN}, "
          f"{args.branch_commits} on {BRANCH}), dvc {dvc.__version__}, {os.cpu_count()} cores")
    row("path", "seconds")
    print("-" * (w + 11))
    row(f"braid read_source (best of {args.repeat})", f"{braid_s:.3f}")
    row("DVC Repo.brancher(all_commits=True) + index.stages (once)", f"{dvc_s:.3f}")
    print("-" * (w + 11))
    row("ratio DVC / braid", f"{ratio:.2f}x")
    row("goal", f">= {GOAL:.0f}x")
    row("verdict", "MET" if ratio >= GOAL else "NOT MET")
    print(f"braid reads: {', '.join(f'{t:.3f}' for t in braid_times)} s; repository left unchanged: {untouched}")
    print(f"braid produced: {run_nodes:,} run nodes, {tables['nodes']:,} nodes, {tables['edges']:,} edges, "
          f"{tables['params']:,} params, {tables['metrics']:,} metric points; "
          f"{batch.state['locations'].height:,} locations")
    result = {
        "commits": total, "main_commits": args.commits, "branch_commits": args.branch_commits,
        "braid_s": braid_s, "braid_times_s": braid_times, "dvc_s": dvc_s, "ratio": ratio, "goal": GOAL,
        "met": ratio >= GOAL, "build_s": built.seconds, "tables": tables, "run_nodes": run_nodes,
        "locations": batch.state["locations"].height, "compared": counted, "problems": problems,
        "dvc": dvc.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"dvc-history-{args.commits}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out.relative_to(HERE.parent)}")
    if problems:
        print("\nHISTORY MISMATCH between braid and DVC's API:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"agreement: OK ({counted['sampled_commits']} sampled commits: {counted['sampled_outs']:,} (path, md5) "
          f"outs equal to braid's locations; over all {counted['commits']:,} commits: "
          f"{counted['executions']:,} stage executions and {counted['run_outputs']:,} run outputs equal)")
    if args.profile:
        profile_read(repo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
