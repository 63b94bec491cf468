# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# exactly the pinned versions in constraints.txt (tested in CI) before running.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser backends demo demo-connected test lint typecheck pytest bench bench-ingest bench-checks bench-speed bench-state bench-models bench-allocate bench-ope bench-diagnose bench-run bench-shapes bench-push bench-serve bench-connect bench-models-scale bench-scale bench-history clean lock

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The report test opens report.html in Debian's Chromium (Playwright drives it; nothing
# downloads a browser of its own). Installed once, from Debian's packages, when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; } || \
	  echo "warning: could not install chromium (not root?); the browser test will skip"

demo: $(STAMP)
	$(BIN)/signalloop demo

# the connected loop without credentials: the demo account served as Meta and Google on a local
# sandbox, pulled, run ([run] pull = true) and applied as a dry run
demo-connected: $(STAMP)
	$(BIN)/signalloop demo --connected

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# tests/test_backends.py starts its own PostgreSQL (Debian's server binaries) and a local Spark
# (Java 17): installed once from Debian's packages when missing; under CI=true the tests fail
# without them.
backends:
	@{ command -v initdb >/dev/null 2>&1 || test -x /usr/lib/postgresql/15/bin/initdb; } || { \
	  echo "installing Debian's postgresql for the backend tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql >/dev/null; } || \
	  echo "warning: could not install postgresql (not root?); the postgres tests will skip"
	@command -v java >/dev/null 2>&1 || { \
	  echo "installing Debian's Java 17 for the PySpark tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    openjdk-17-jre-headless >/dev/null; } || \
	  echo "warning: could not install Java 17 (not root?); the PySpark tests will skip"

# Two workers, one test file each; schemathesis gives its 18 property tests one node id,
# which xdist would run once, so that file runs after, in one process.
pytest: $(STAMP) browser backends
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15 --ignore=tests/test_web_schema.py
	$(BIN)/pytest -q -n 0 tests/test_web_schema.py

test: lint typecheck pytest

bench: bench-ingest bench-checks bench-speed bench-state bench-models bench-allocate bench-ope bench-diagnose bench-run bench-shapes bench-push bench-serve bench-connect bench-models-scale bench-scale bench-history

bench-state: $(STAMP)
	$(BIN)/python benchmarks/phase_quality.py --seeds 20
	$(BIN)/python benchmarks/fatigue_quality.py --seeds 20
	$(BIN)/python benchmarks/nowcast_quality.py --seeds 20

bench-models: $(STAMP)
	$(BIN)/python benchmarks/models_quality.py --seeds 5

bench-allocate: $(STAMP)
	$(BIN)/python benchmarks/allocate_quality.py --seeds 200

bench-ope: $(STAMP)
	$(BIN)/python benchmarks/ope_quality.py

bench-diagnose: $(STAMP)
	$(BIN)/python benchmarks/diagnose_quality.py --seeds 20 --workers 2

bench-run: $(STAMP)
	$(BIN)/python benchmarks/run_loop.py

bench-shapes: $(STAMP)
	$(BIN)/python benchmarks/shapes_quality.py --seeds 20 --workers 2
	$(BIN)/python benchmarks/allocate_quality.py --shapes --seeds 20 --workers 2

bench-push: $(STAMP)
	$(BIN)/python benchmarks/push_speed.py

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve_speed.py

# pulling a 90-day, 200-campaign, 2,000-ad account from the local stand-ins (Meta and Google),
# and the guarded policy applying its own budgets through `signalloop apply` in the time loop
# against a weekly human re-budget (learning resets); about 10 min
bench-connect: $(STAMP)
	$(BIN)/python benchmarks/connect_speed.py --seeds 10

# the daily run at 10 and 100 campaigns, first run and next day (about 25 min; 1,000 with
# --campaigns 10,100,1000 takes hours); accounts cached in /tmp/signalloop-scale
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py --campaigns 10,100

bench-history: $(STAMP)
	$(BIN)/python benchmarks/history.py --campaigns 100 --history 45,67,89 --repeat 3

bench-models-scale: $(STAMP)
	$(BIN)/python benchmarks/models_scale.py
	$(BIN)/python benchmarks/frame_sample.py

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-checks: $(STAMP)
	$(BIN)/python benchmarks/checks_quality.py --seeds 20

bench-speed: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/checks_speed.py

# Refresh the pins after changing dependencies in pyproject.toml (then run `make test`).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^signalloop' > constraints.txt

clean:
	rm -rf $(VENV) signalloop-demo signalloop-report .pytest_cache .mypy_cache .ruff_cache
