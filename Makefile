# The README's two commands: `make train` and `make test`. Each sets itself up
# (virtual environment, CPU torch, the extension build) and is safe to run twice.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned so that pip takes the local CPU wheel instead of pulling a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup train test bench studio gpu-check clean

# Every other dependency comes from setup.py's extras (the one list: .[test,build]), installed
# with the package but without its extension; then the extension is built against that torch.
$(VENV)/.installed: setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	INADE_NO_EXTENSION=1 $(PY) -m pip install -q -e ".[test,build]"
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) train.py $(ARGS)

test: setup
	$(PY) -m pytest -q tests $(ARGS)

# Every benchmark, then the tables of README.md / docs/PERFORMANCE.md and the plots
# (matplotlib: the `bench` extra, which the `test` extra of make setup includes).
bench: setup
	$(PY) -m bench $(ARGS)

# INADE Studio on http://127.0.0.1:8000/ (the `make train` checkpoint unless ARGS="--checkpoint C ...").
studio: setup
	$(PY) -m inade.studio $(ARGS)

# The whole GPU verification in one call (bench/gpu_check.py), on a CUDA machine whose python3
# already has torch and triton: no set-up, no registry. GPU_CHECK_OUT=DIR, ARGS=--quick | --dry-run.
GPU_CHECK_OUT ?= gpu-check
gpu-check:
	PYTHONUNBUFFERED=1 $(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m bench.gpu_check --out $(GPU_CHECK_OUT) $(ARGS)

clean:
	rm -rf build *.egg-info inade/_C*.so
