# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv, install torch==2.13.0 first (the CPU wheel; a looser pin pulls a CUDA build),
# then the project with its dev extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aurl-installed

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: prepare the embedded Bach chorales (cached) and generate pieces with the shipped model.
demo: setup
	$(BIN)/aurl prepare bach --out data/bach
	$(BIN)/aurl generate --num 4 --bars 16 --out out/demo
	$(BIN)/aurl interpolate tests/data/bach/bwv319.mid tests/data/bach/bwv425.mid --steps 6 --bars 8 --out out/demo_interpolate

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
