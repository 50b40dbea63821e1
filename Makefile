# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# The venv is created once; the project is (re)installed only when pyproject.toml changes,
# so re-running never reinstalls torch.
PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=
# The numerics tests run a second time under another vector unit than this machine's best:
# float32 reductions round differently under ATEN_CPU_CAPABILITY=default (no SIMD) than under
# avx2 / avx512, so a tolerance that holds for one summation order only fails here, not on the
# next user's CPU (tests/conftest.py: float_tol).
# (test_gpd_method.py trains whole runs: an integration test, left to the first pass.)
NUMERICS_TESTS := tests/test_losses.py $(filter-out tests/test_gpd_method.py,$(wildcard tests/test_gpd_*.py)) \
                  tests/test_probes_metrics.py tests/test_probes_gap.py
OTHER_CPU_CAPABILITY ?= default

.PHONY: lab-reset help venv test test-all demo lab browser-test bench clean

help:
	@echo "make demo          set up .venv, run the GPD notebook on the embedded Fashion-MNIST subset (one line per"
	@echo "                   epoch in the terminal), write the executed notebook + a one-file HTML report, print the outcome"
	@echo "make test          set up .venv, run the fast test suite (numerics again under ATEN_CPU_CAPABILITY=default)"
	@echo "make test-all      also run the slow tests (not the browser ones)"
	@echo "make lab           start JupyterLab on working copies of notebooks/ (in runs/lab/; make lab-reset refreshes them)"
	@echo "make browser-test  real-browser checks in headless Chromium: explore.ipynb and live progress in JupyterLab,"
	@echo "                   the HTML report alone and offline (needs Debian chromium)"
	@echo "make bench         run the CPU benchmarks in bench/"
	@echo "make clean         remove runs/demo"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	ATEN_CPU_CAPABILITY=$(OTHER_CPU_CAPABILITY) $(PY) -m pytest -q $(PYTEST_ARGS) $(NUMERICS_TESTS)

test-all: $(STAMP)
	$(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

# The GPD notebook on the embedded Fashion-MNIST subset (CPU, offline); everything lands in
# $(DEMO_DIR). Demo preset fashion/demo/gpd_dkd: the shipped resnet20 teacher (no teacher training),
# resnet8 student on 100 images/class, 20 epochs, GPD on DKD; the timing is in README.md.
# `make demo DEMO_DATASET=digits` runs the smaller digits demo (a resnet8x4 teacher trained first).
# WORKBENCH_TERMINAL_PROGRESS=1: the notebook's epoch lines (with the ETA) also reach this terminal
# (papermill shows only its cell counter, replaced here by those lines); the executed notebook and
# the report keep each phase's progress record; the report prints the outcome sentence last.
# (tests/notebooks/test_run_notebooks.py runs this recipe, read from this file, on tiny settings.)
DEMO_DATASET ?= fashion_mnist
DEMO_ARGS ?=
demo: $(STAMP)
	@mkdir -p $(DEMO_DIR)
	WORKBENCH_TERMINAL_PROGRESS=1 $(VENV)/bin/papermill --no-progress-bar notebooks/gpd.ipynb $(DEMO_DIR)/gpd.ipynb \
		-p dataset $(DEMO_DATASET) -p out_dir $(DEMO_DIR) $(DEMO_ARGS)
	$(PY) -m workbench.nb.report $(DEMO_DIR)/gpd.ipynb $(DEMO_DIR)/gpd.html

# JupyterLab on working copies (runs/lab/, made once; `make lab-reset` refreshes them), so autosave
# never writes outputs into the tracked, generated notebooks/*.ipynb.
LAB_DIR ?= runs/lab
lab: $(STAMP)
	@mkdir -p $(LAB_DIR)
	@for f in notebooks/*.ipynb; do test -e $(LAB_DIR)/$$(basename $$f) || cp $$f $(LAB_DIR)/; done
	@echo "working copies in $(LAB_DIR) (the tracked notebooks/ stay clean)"
	$(VENV)/bin/jupyter lab --allow-root --notebook-dir=$(LAB_DIR) --no-browser

lab-reset:
	rm -f $(LAB_DIR)/*.ipynb

# Real-browser check of explore.ipynb: JupyterLab + Debian's chromium driven by Playwright
# (no browser download). Screenshot: runs/browser/explore.png.
browser-test: $(STAMP)
	@test -x /usr/bin/chromium || { echo "needs Debian chromium: apt-get update && apt-get install -y chromium"; exit 1; }
	$(PY) -m pytest -m browser tests/notebooks/test_browser.py -q

bench: $(STAMP)
	$(PY) bench/bench_methods.py

clean:
	rm -rf runs/demo .pytest_cache
