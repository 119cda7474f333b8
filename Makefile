# The course's commands: `make course` runs every notebook, `make test` runs the checks CI runs,
# `make book` builds the course's website.
SHELL := /bin/bash
# Python 3.11, 3.12 or 3.13 (the versions run: docs/python-versions.md); 3.11 where there is one.
PYTHON ?= $(shell command -v python3.11 || command -v python3.13 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE_STAMP := $(VENV)/.installed-scale
BOOK_STAMP := $(VENV)/.installed-book
NBGRADER := $(VENV)/nbgrader
MODE ?= $(or $(DQN_COURSE_MODE),workshop)
TARGET ?= td-lambda
SEED ?= 0
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
# Headless rendering (pygame) and a non-interactive matplotlib for scripted runs.
export SDL_VIDEODRIVER ?= dummy
export PYTHONUNBUFFERED := 1

.PHONY: course train test check book exercises lab scale lint format clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else f"The course runs on Python 3.11 to 3.13, not {sys.version.split()[0]}: set PYTHON=/path/to/python3.11 (or 3.12, 3.13)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Ray, for `python -m helpers sweep` (optional for the course; the tests use it)
$(SCALE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,scale]'
	@touch $(SCALE_STAMP)

## course: execute every notebook in order ($(MODE) mode) into outputs/
course: $(STAMP)
	@mkdir -p outputs
	@rm -f outputs/notebook-times-$(MODE).txt
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb ($(MODE) mode)"; \
		start=$$(date +%s); \
		DQN_COURSE_MODE=$(MODE) $(BIN)/jupyter nbconvert --to notebook --execute \
			--ExecutePreprocessor.timeout=3600 --output-dir outputs "$$nb" || exit 1; \
		seconds=$$(( $$(date +%s) - start )); \
		$(BIN)/python book/site_builder.py record "$$nb" $(MODE); \
		echo "   done in $$seconds s"; \
		echo "$$(basename $$nb .ipynb) $$seconds" >> outputs/notebook-times-$(MODE).txt; \
	done
	@echo "Executed notebooks, logs and plots are in outputs/"
	@$(BIN)/python -c 'from helpers.video import report_video; report_video()'

## train: one training run from a terminal, e.g. `make train SEED=21` ($(TARGET), $(MODE) mode, seed
## $(SEED)) into outputs/runs/; the notebooks' training, without the notebooks
train: $(STAMP)
	$(BIN)/python -m helpers train --target $(TARGET) --mode $(MODE) --seed $(SEED) \
		--out outputs/runs/$(MODE)-$(TARGET)-seed$(SEED)

## test: unit tests, lint, then every notebook in smoke mode (what CI runs)
test: $(STAMP) $(SCALE_STAMP) $(BOOK_STAMP) $(NBGRADER)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory book MODE=smoke  # the site that tests/test_site.py opens
	$(BIN)/python -m pytest -rs --durations=20 tests
	rm -rf build/test-outputs
	DQN_COURSE_MODE=smoke DQN_COURSE_OUTPUT_DIR=$(CURDIR)/build/test-outputs \
		$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider notebooks

# Jupyter Book 1, for `make book` (optional for the course; the tests use it)
$(BOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,book]'
	@touch $(BOOK_STAMP)

## book: the course as a website in build/site/, from the notebooks executed in $(MODE) mode
## (outputs/ when `make course` left them current, otherwise executed again into build/book/)
book: $(BOOK_STAMP) $(NBGRADER)/.installed
	$(BIN)/python book/site_builder.py build --mode $(MODE)

## check: the quick lane for everyday work: lint and the unit tests not marked slow (make test
## runs everything)
check: $(STAMP) $(NBGRADER)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -rs -m "not slow" tests

# nbgrader and the packages it needs beyond the course's, importable only with PYTHONPATH set
$(NBGRADER)/.installed: $(STAMP)
	rm -rf $(NBGRADER)
	$(BIN)/python -m pip install --quiet --no-deps --target $(NBGRADER) $$($(BIN)/python -c \
		'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["exercises"])')
	@touch $@

## exercises: the learners' copies of the notebooks, solutions replaced by blanks, in exercises/
exercises: $(NBGRADER)/.installed
	rm -rf exercises
	PYTHONPATH=$(NBGRADER) $(BIN)/jupyter nbconvert --to notebook --output-dir exercises \
		--Exporter.preprocessors='["nbgrader.preprocessors.ClearSolutions"]' $(NOTEBOOKS)
	@echo "Exercise copies in exercises/: .venv/bin/jupyter lab exercises opens them (solutions: notebooks/)"

## scale: install Ray for multi-seed sweeps (python -m helpers sweep)
scale: $(SCALE_STAMP)

## lab: open JupyterLab on the notebooks
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf build outputs
