# `make test` and friends create .venv from the requirements when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

VALIDATORS := tests/validators

.PHONY: test venv validators clean demo studio

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

# Third-party validators from npm (asl-validator), pinned by the lock file; the tests run them.
$(VALIDATORS)/node_modules/.installed: $(VALIDATORS)/package.json $(VALIDATORS)/package-lock.json
	npm ci --prefix $(VALIDATORS) --no-audit --no-fund --silent
	touch $@

validators: $(VALIDATORS)/node_modules/.installed

test: venv validators
	$(BIN)/ruff check --quiet --select F --exclude $(VENV) .
	$(BIN)/python -m pytest

# The whole loop locally on a synthetic stream (2,500 users, about 320,000 records; under a minute on 2 cores);
# report, chart and data in demo-output/.
demo: venv
	$(BIN)/python -m cli demo

# The rules studio (docs/studio.md) on rules/demo.csv, previewing on the demo's events: `make demo` writes
# demo-output/events.jsonl first (this target does not run it: it says so and stops).
STUDIO_EVENTS := demo-output/events.jsonl
studio: venv
	@test -f $(STUDIO_EVENTS) || { echo "make studio: $(STUDIO_EVENTS) is missing: run \`make demo\` first (it writes the sample events the studio previews on)" >&2; exit 1; }
	$(BIN)/python -m cli studio --rules rules/demo.csv --events $(STUDIO_EVENTS)

# Also what the tools write: the demo's demo-output/ (its default --out) and out/ (git-ignored local outputs).
clean:
	rm -rf $(VENV) $(VALIDATORS)/node_modules .pytest_cache .hypothesis .ruff_cache demo-output out
