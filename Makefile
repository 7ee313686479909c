# Every target bootstraps .venv from nothing; only python3 and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench bench-quick lock clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/shax serve --host 127.0.0.1 --port 8000 --model-repository examples/model_repository

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# the pages' screenshots in docs/screenshots (the browser tests take them)
screenshots: $(STAMP)
	SHAX_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_browser.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

# docker/requirements.lock: the image's dependencies with hashes, from pyproject.toml's server extra
lock: $(STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
	  --allow-unsafe --no-emit-find-links --build-deps-for wheel --extra server \
	  --output-file docker/requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
