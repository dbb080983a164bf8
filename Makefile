# Two entry points that do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-record clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; install it first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e '.[cpu,dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job end to end on CPU defaults (10-15 minutes on 2 cores): latency table, teacher, supernet with FAD,
# search under a budget, finalists measured, best exported and benchmarked -> outputs/pipeline/report.md.
demo: setup
	$(PY) cli.py pipeline --out outputs/pipeline

# The whole suite (what CI runs); `make test-fast` skips the tests marked slow (under 3 minutes on 2 cores).
test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The standard benchmark suite on this machine (RAFT, raft-s, raft-k at 384x512, 12 iterations, PyTorch eager
# vs ONNX Runtime CPU, measured interleaved; about 4 minutes on 2 cores): reports in outputs/bench/suite/ (ignored).
bench: setup
	$(PY) -m bench.suite

# The same suite into the committed reference bench/results/suite/: only when a new reference is wanted.
bench-record: setup
	$(PY) -m bench.suite --record

clean:
	rm -rf outputs .pytest_cache
