# Every target creates or reuses .venv and installs what it needs: torch pinned first (constraints.txt keeps it
# at the local CPU build), then convoplan with its extras.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED ?= ../shared/data

.PHONY: install demo test lint format data bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job, on the built-in animals world (nothing to download).
demo: $(STAMP)
	$(BIN)/convoplan demo

## The test suite (pytest exits non-zero, 5, when it collects no test, and make fails with it).
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check convoplan tests bench
	$(BIN)/ruff format --check convoplan tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format convoplan tests bench
	$(BIN)/ruff check --fix convoplan tests bench

## Convert both real corpora to canonical JSONL under runs/data and print their statistics.
data: $(STAMP)
	$(BIN)/convoplan data convert --corpus persuasion --src $(SHARED)/persuasionforgood --out runs/data/persuasion.jsonl
	$(BIN)/convoplan data convert --corpus star --src $(SHARED)/star --out runs/data/star.jsonl --flows runs/data/star_flows.json
	$(BIN)/convoplan data stats runs/data/persuasion.jsonl
	$(BIN)/convoplan data stats runs/data/star.jsonl

bench: $(STAMP)
	$(BIN)/python bench/convert_star.py --src $(SHARED)/star
	$(BIN)/python bench/world_property.py --conversations 1000
	$(BIN)/python bench/fusion.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
