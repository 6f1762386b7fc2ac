# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CAREFLOW_HOME ?= $(CURDIR)/instance

.PHONY: run test bench bench-import reliability scale install contracts clean translations screenshots

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

run: install
	mkdir -p $(CAREFLOW_HOME)
	$(BIN)/careflow demo
	$(BIN)/careflow run --demo-mail

# Prism serves the vendors' published API contracts to the connector tests (needs npm).
contracts:
	@if command -v npm >/dev/null 2>&1; then \
		[ node_modules/.bin/prism -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the vendor-contract tests will be skipped"; fi

test: install contracts
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/engine.py

# 100,000 customer rows cleaned, de-duplicated and committed on SQLite (goal: under 60 s).
bench-import: install
	$(BIN)/python bench/import.py

reliability: install
	CAREFLOW_SWEEP=full $(BIN)/pytest -q tests/reliability
	CAREFLOW_SCALE_N=10000 $(BIN)/pytest -q tests/scale

# The distributed mode at full size: 10,000 instances on 4 workers and 2 schedulers (PostgreSQL, Redis, RabbitMQ).
scale: install
	CAREFLOW_SCALE_N=10000 $(BIN)/pytest -q tests/scale

clean:
	rm -rf $(VENV) instance

# Re-extract the web pages' strings, merge them into the catalogs and compile the .mo files
# (both are committed; tests/unit/test_translations.py checks the .mo are current).
translations: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -o engine/translations/messages.pot --no-location --sort-output --project Careflow --omit-header .
	$(BIN)/pybabel update -i engine/translations/messages.pot -d engine/translations --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d engine/translations --use-fuzzy
	$(BIN)/pybabel extract -F admin/babel.cfg -k _l -o admin/translations/messages.pot --no-location --sort-output --project Careflow --omit-header .
	$(BIN)/pybabel update -i admin/translations/messages.pot -d admin/translations --no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile -d admin/translations --use-fuzzy

# Refresh the screenshots in docs/images (the browser tests, writing where the user guides read).
screenshots: install
	CAREFLOW_SCREENSHOTS=1 $(BIN)/pytest -q tests/browser/test_employees.py -k screenshots
	CAREFLOW_SCREENSHOTS=1 $(BIN)/pytest -q tests/browser/test_designer.py tests/browser/test_form_designer.py
	CAREFLOW_SCREENSHOTS=1 $(BIN)/pytest -q tests/browser/test_admin_pages.py -k every_admin_page
