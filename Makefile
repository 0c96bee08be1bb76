# make lab   : set up .venv (first time only) and open JupyterLab on notebooks/
# make test  : set up .venv, run the package tests, then execute every notebook with nbval
# make book  : execute every lesson and render the static HTML book into build/book/ (EXECUTE=0: stored outputs)
# make bench : print the benchmark table and add this machine's section to benchmarks/RESULTS.md
# Extra JupyterLab arguments: make lab ARGS="--no-browser --port 8899"; benchmark options: make bench BENCH_ARGS=--no-notebooks
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := diffusion-lessons
ARGS   ?=
EXECUTE ?= 1
BENCH_ARGS ?=
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup lab test unit notebooks book bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (diffusion-lessons)"
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ARGS)

unit: setup
	$(BIN)/python -m pytest tests -q

notebooks: setup
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks

test: unit notebooks

book: setup
	$(BIN)/python tools/build_book.py --out build/book $(if $(filter 0,$(EXECUTE)),--no-execute,)

bench: setup
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
