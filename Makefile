# Two commands on a fresh machine with Python 3, a C compiler and git:
#   make demo   - set everything up and run the streaming demo
#   make test   - set everything up and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
# Compile the kernel for this machine's CPU (see setup.py); 0 for a portable build.
export I2V_NATIVE ?= 1

.PHONY: demo test install build bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with the test extra; re-run when the build inputs change.
$(STAMP): $(BIN)/python setup.py pyproject.toml $(wildcard cython_src/i2v_stream/*.pyx cython_src/i2v_stream/*.pxd cython_src/i2v_stream/*.h)
	$(BIN)/python -m pip install --quiet "setuptools>=68" wheel "Cython>=3.0" "numpy>=1.26" "scipy>=1.11"
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

build: $(STAMP)
	$(BIN)/python setup.py build_ext --inplace -q --force

demo: $(STAMP)
	$(BIN)/python -m services.demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_quality_speed.py

clean:
	rm -rf build *.egg-info i2v_stream/*.so cython_src/i2v_stream/*.c
