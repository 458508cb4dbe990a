# The two commands of the README:
#   make run    the main job (word2vec on the Wikipedia dump gensim ships, local[*] Spark)
#   make test   the whole test suite
# Both create .venv, install everything into it, and check for Java 17+.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export SPARK_CONF_DIR := $(CURDIR)/spark-conf
export PYSPARK_PYTHON := $(CURDIR)/$(PY)
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(PY)

.PHONY: run test test-fast bench java venv clean

run: java $(STAMP)
	$(PY) examples/word2vec_wikipedia.py $(ARGS)

test: java $(STAMP)
	$(PY) -m pytest -ra --durations=20 $(PYTEST_ARGS)

test-fast: java $(STAMP)
	$(PY) -m pytest -ra -m "not slow" $(PYTEST_ARGS)

bench: java $(STAMP)
	$(PY) benchmarks/server_throughput.py

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,torch]'
	touch $(STAMP)

java:
	@bash .ci/check-java

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
