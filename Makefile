# ucfpipe: `make demo` runs the whole pipeline offline on a generated dataset, `make test` runs the tests.
# Both create .venv and install what they need on first use. Real data: `make extract train eval report`.
PYTHON ?= python3
VENV ?= .venv
# pip extra that provides the Keras backend: cpu = tensorflow-cpu, gpu = tensorflow[and-cuda].
# With JAX installed yourself (KERAS_BACKEND=jax), use BACKEND=jax: no such extra, so nothing more is added.
BACKEND ?= cpu
PY := $(VENV)/bin/python
UCFPIPE := $(VENV)/bin/ucfpipe

# The real dataset (see README): UCF-101/ and ucfTrainTestlist/ under $(DATA).
DATA ?= data
VIDEOS ?= $(DATA)/UCF-101
SPLITS ?= $(DATA)/ucfTrainTestlist
FEATURES ?= features/ucf101
RUNS ?= runs
SPLIT_NUMBERS ?= 1 2 3

# The offline demo: a synthetic dataset, random VGG16 weights, small frames.
DEMO ?= demo

.PHONY: setup demo test extract train eval report clean-demo

setup: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(BACKEND),test]"
	touch $@

test: setup
	$(PY) -m pytest -q

extract: setup
	$(UCFPIPE) extract --config stages/extract.toml --videos $(VIDEOS) --splits $(SPLITS) --out $(FEATURES)

clean-demo:
	rm -rf $(DEMO)
