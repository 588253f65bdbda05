# reprlab — the two commands: `make serve` (main job) and `make test`.
# Everything is installed into .venv by this Makefile; nothing else is needed by hand.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# The CPU build of torch that this machine carries on disk. GPU users: see README
# ("GPU"), e.g. `make setup TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url <cuda index>"`.
TORCH_SPEC  ?= torch==2.13.0
PIP_TORCH_ARGS ?=
HOST        ?= 127.0.0.1
PORT        ?= 5006
TWIN        ?= data/twin_default
SCALE       ?= smoke
STAMP       := $(VENV)/.reprlab-installed

APPS := $(wildcard widgets/twin_explorer.py widgets/texture_studio.py)
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: setup serve twin lab test bench lint browser clean help

help:
	@echo "make serve   build .venv if missing, serve the twin explorer + texture studio on $(HOST):$(PORT)"
	@echo "make test    build .venv if missing, run unit, notebook (smoke) and app tests"
	@echo "make lab     JupyterLab on notebooks/"
	@echo "make twin    rebuild the default twin bundle into $(TWIN) (~45 min on 2 idle cores)"
	@echo "make bench   run the benchmarks (JSON into bench/results/)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# --warm runs both apps once at start-up (4-6 s before the server listens), so the first visitor's
# page does not pay the imports: first twin-explorer page 0.7-0.9 s server-side instead of 2.7-4.0 s.
serve: $(STAMP)
	$(BIN)/panel serve $(APPS) --address $(HOST) --port $(PORT) --warm \
		--allow-websocket-origin=$(HOST):$(PORT) --allow-websocket-origin=localhost:$(PORT) \
		--args --twin $(TWIN)

twin: $(STAMP)
	$(BIN)/python -m reprlab v1 twin --scale default --out $(TWIN)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=$(HOST)

# Debian's chromium for the real-browser app tests (root + apt only; otherwise the tests
# skip with a reason, and under CI=true they fail).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install chromium; browser tests will skip (fail under CI=true)"; \
	else echo "warning: chromium missing and not installable here; browser tests will skip"; fi

test: $(STAMP) browser
	REPRLAB_SCALE=$(SCALE) $(BIN)/python -m pytest tests $(NOTEBOOKS) --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=1200 -p no:cacheprovider

bench: $(STAMP)
	mkdir -p bench/results
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check lib tests widgets bench notebooks

clean:
	rm -rf $(VENV) .pytest_cache
