# make lab   : set up .venv (first time only) and open JupyterLab on notebooks/
# make test  : set up .venv, run the package tests, then execute every notebook with nbval
# Extra JupyterLab arguments: make lab ARGS="--no-browser --port 8899"
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
KERNEL := diffusion-lessons
ARGS   ?=
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup lab test unit notebooks clean

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

clean:
	rm -rf $(VENV) build .pytest_cache
