# The two commands the README opens with, and the benchmarks.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

# the compiled extensions are built by the editable install: rebuilt when their sources change
$(BIN)/braid: pyproject.toml connectors/wandb/_logdecode.c unify/_walk.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench]"
	@touch $@

setup: $(BIN)/braid

demo: setup
	rm -rf braid-demo
	$(BIN)/braid demo braid-demo

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25

bench: setup
	$(BIN)/python bench/bench_traversal.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_dvc_history.py
	$(BIN)/python bench/bench_verify.py
	$(BIN)/python bench/bench_query.py
	$(BIN)/python bench/bench_wandb_log.py
	$(BIN)/python bench/bench_migrate.py

clean:
	rm -rf $(VENV) braid-demo .pytest_cache
