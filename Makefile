# Two commands for a new user: `make demo` and `make test`. Both build .venv from this repository.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-unit test-integration test-system test-slow configs lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv  ## write the demo data, fit the default detector, test, report (replaces an earlier demo in runs/demo)
	$(BIN)/scgan demo --output runs/demo --overwrite

test: venv  ## the default test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-unit: venv  ## tests that train nothing (seconds)
	$(BIN)/python -m pytest -q -m "unit and not slow"

test-integration: venv  ## tests that train tiny models in-process
	$(BIN)/python -m pytest -q -m "integration and not slow"

test-system: venv  ## tests that start processes (subprocess, DDP, process pools) or run the CLI end to end
	$(BIN)/python -m pytest -q -m "system and not slow"

test-slow: venv  ## real-data and long tests (need ../shared/data)
	$(BIN)/python -m pytest -q -m slow

configs: venv  ## regenerate src/scgan/configs/*.yaml from the config schema and presets
	$(BIN)/python -c "from scgan.config.commented import write_preset_files; write_preset_files()"

lint: venv  ## ruff: unused imports, import order, the usual errors
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
