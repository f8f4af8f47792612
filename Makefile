# lightning-rec: `make demo` (set up + run the pipeline on the bundled data) and `make test`.
# torch is installed first as the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
# Elsewhere, point pip at the CPU wheels: make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/lightning-rec
OUT := outputs/demo
DEMO_EPOCHS ?= 8

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	rm -rf $(OUT)
	$(CLI) fit -c configs/sasrec-ml-latest-small.yaml --trainer.default_root_dir $(OUT) --trainer.max_epochs $(DEMO_EPOCHS)
	$(CLI) test -c configs/sasrec-ml-latest-small.yaml --trainer.default_root_dir $(OUT) --ckpt_path $(OUT)/checkpoints/best.ckpt
	$(CLI) recommend -c configs/sasrec-ml-latest-small.yaml --ckpt_path $(OUT)/checkpoints/best.ckpt --user 1

test: setup
	$(VENV)/bin/pytest

clean:
	rm -rf outputs lightning_logs .pytest_cache
