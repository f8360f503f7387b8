# Two commands do all set-up on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

demo: $(VENV)/.installed
	$(PY) examples/semi_automated.py

# pytest exits 5 when it collected no test; that is not a failure of the code.
test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules deeppick tests || [ $$? -eq 5 ]

install: $(VENV)/.installed

# torch first, pinned to the local CPU wheel: a bare `torch` requirement would pull CUDA packages.
$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info demo-output
