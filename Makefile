# Two entry points that work on a fresh machine with make and Python 3.11+: `make test` and `make demo`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
DATA ?= ../shared/data/physionet2019/physionet2019_dev.tar.xz
PORT ?= 8000
DASHBOARD_PORT ?= 8501
# extra pytest arguments, e.g. `make test PYTEST_ARGS="tests/service -x"`
PYTEST_ARGS ?=

.PHONY: install test demo serve train-demo clean

$(BIN)/.installed: pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; $(PY) is " + sys.version.split()[0] + ": pass PY=python3.11 (or newer)")'
	@echo ">>> [1/3] creating the virtual environment $(VENV)"
	$(PY) -m venv $(VENV)
	@echo ">>> [2/3] installing PyTorch ($(TORCH_SPEC)); the largest download, a minute or two"
	$(BIN)/pip install --progress-bar on "$(TORCH_SPEC)"
	@echo ">>> [3/3] installing the project and its extras (ONNX Runtime, FastAPI, Streamlit, pytest, ...); about a minute"
	$(BIN)/pip install --progress-bar on -e ".[train,serve,dashboard,dev]"
	touch $@

install: $(BIN)/.installed

# PostgreSQL tests run against $SEPSIS_TEST_PG_URL when it is set (empty: SQLite only), else against
# database `test` on a server answering at 127.0.0.1:5432 (created if missing), else they skip.
test: install
	@url="$${SEPSIS_TEST_PG_URL-$$($(BIN)/python -m devtools.databases)}"; \
	if [ -n "$$url" ]; then dbs="SQLite and PostgreSQL ($${url##*@})"; \
	else dbs="SQLite only: the PostgreSQL tests skip (set SEPSIS_TEST_PG_URL=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"; fi; \
	echo ">>> databases under test: $$dbs"; \
	SEPSIS_TEST_PG_URL="$$url" $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	echo ">>> databases tested: $$dbs"; exit $$rc

# the service (SQLite, shipped model) + a replay of real stays + the dashboard
demo: install
	$(BIN)/python scripts/demo.py --data $(DATA) --port $(PORT) --dashboard-port $(DASHBOARD_PORT)

# the service alone (SQLite file under .cache/service/, the default shipped model); keys with
# `.venv/bin/python -m service keys create --role admin`
serve: install
	@echo ">>> the service on http://127.0.0.1:$(PORT) (API docs at /docs); a key: $(BIN)/python -m service keys create --role admin; Ctrl-C stops it"
	$(BIN)/python -m service --host 127.0.0.1 --port $(PORT)

# a few minutes of real sepsis training on the CPU; test-split metrics printed, files under runs/demo/
train-demo: install
	$(BIN)/python -m training sepsis demo --data $(DATA)

# what the commands above made; runs/ beyond runs/demo/ holds your own training runs and stays
clean:
	rm -rf $(VENV) .cache .pytest_cache runs/demo
