# Two entry points that work on a fresh machine with only Python: `make test` and `make demo`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DATA ?= ../shared/data/physionet2019/physionet2019_dev.tar.xz

.PHONY: install test demo train-demo clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,serve,dashboard,dev]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest

# the service (SQLite, shipped model) + a replay of real stays + the dashboard
demo: install
	$(BIN)/python scripts/demo.py --data $(DATA)

# a few minutes of real sepsis training on the CPU, metrics printed
train-demo: install
	$(BIN)/python -m training sepsis demo --data $(DATA)

clean:
	rm -rf $(VENV) .cache .pytest_cache
