# The two set-up paths of the README, plus helpers. VENV may point anywhere (CI uses a fresh one).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test install system-deps assets

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e ".[test,data]"

# System libraries the tests need (FluidSynth for the corpus generator), installed only when missing.
system-deps:
	bash scripts/system-deps.sh

# The asset packages of the full corpus (SoundFonts, pictures): see docs/corpus.md.
assets:
	bash scripts/install-assets.sh

# The main job on the committed demo clip, with the shipped detector and AVPC weights.
demo: install
	$(VENV)/bin/avsep separate demo/corpus/duet/cello+flute/syn001209.mp4 -o demo-stems --force

test: system-deps install
	$(PY) -m ruff check --select F,E9 avsep_cli tests benchmarks
	$(PY) -m pytest -q
