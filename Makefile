# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CAREFLOW_HOME ?= $(CURDIR)/instance

.PHONY: run test bench reliability install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

run: install
	mkdir -p $(CAREFLOW_HOME)
	$(BIN)/careflow demo
	$(BIN)/careflow run

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/engine.py

reliability: install
	CAREFLOW_SWEEP=full $(BIN)/pytest -q -m slow tests/reliability

clean:
	rm -rf $(VENV) instance
