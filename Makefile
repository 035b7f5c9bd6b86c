# Set-up and entry points. Every target creates (or reuses) the virtual
# environment in $(VENV) and installs the package with its test extra.
VENV ?= .venv
PYTHON ?= python3
# A constraints file for the install (empty: the newest versions setup.cfg allows).
CONSTRAINTS ?=
PY := $(VENV)/bin/python
ARGS ?= --dataset=mnist --preset=mnist_gans_in_action --labels=100 --data_dir=../shared/data/mnist --epochs=2 --steps_per_epoch=200

.PHONY: install test test-oldest train benchmark

# uv installs the same packages as pip, in parallel: 34-67 s against pip's
# 75-104 s, back to back on 2 cores (downloads and byte-compiling included).
$(VENV)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -e '.[test]' \
		$(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $@

install: $(VENV)/.installed

# The tests are single-threaded CPU work: one pytest worker per core; a worker
# that runs out of tests takes half of the other's queue (worksteal).
test: $(VENV)/.installed
	$(PY) -m pytest -q -rs -n auto --dist worksteal

# The suite on the oldest versions setup.cfg allows, in an environment of its own.
test-oldest:
	$(MAKE) test VENV=.venv-oldest CONSTRAINTS=constraints-oldest.txt

train: $(VENV)/.installed
	$(PY) -m sgan_keras.train $(ARGS)

benchmark: $(VENV)/.installed
	$(PY) experiments/benchmark_input_pipeline.py
	$(PY) experiments/benchmark.py --batch_sizes=100
