# lightning-rec: `make demo` (set up + run the pipeline on the bundled data) and `make test`.
# torch is installed first as the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
# The rest is installed by uv (itself a pip install): about 10 s instead of pip's 2 min here.
# Elsewhere, point pip at the CPU wheels: make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/lightning-rec
OUT := outputs/demo
# Demo budgets (the recipes' own defaults are longer; see each recipe's header).
DEMO_EPOCHS ?= 5
# The hybrid SASRec's 5 epochs take more, larger steps than the recipe's 20: batches of 32 (72 steps an
# epoch), lr 0.005, 20 warm-up steps (the recipe's 100 were more than half of 5 epochs of 36 steps).
# Test NDCG@10 over seeds 0 and 1: 0.0536 and 0.0525 (recipe settings: 0.0453 and 0.0477), the stage
# about 40 s longer (docs/large-models.md, "The demo's budget").
DEMO_BATCH_SIZE ?= 32
DEMO_LR ?= 0.005
DEMO_WARMUP ?= 20
# The simulator at its recipe's 20 epochs (about 45 s): after 3 it clicked like a popularity model (CTR
# 0.45 for popular slates, 0.32 for the supervised policy's; at 20: 0.31 and 0.42), so the RL table
# measured the simulator's bias more than the policies (docs/rl.md, "The demo's environment").
DEMO_SIM_EPOCHS ?= 20
DEMO_PPO_EPOCHS ?= 1
# Windows per PPO update: 9 smaller updates in the demo's one epoch instead of the recipe's 3 (docs/rl.md).
DEMO_PPO_WINDOWS ?= 256
DEMO_META_STEPS ?= 20
DATA := configs/data/ml-latest-small.yaml
HYBRID := configs/hybrid-sasrec-ml-latest-small.yaml
PRETRAINED := $(OUT)/hybrid/checkpoints/best.ckpt
SIMULATOR := $(OUT)/simulator/checkpoints/best.ckpt
# The field's session protocol for PPO and its table (NX_0, first genre as category, N = 4, M = 0, 30 turns).
SESSION := configs/session/ml-latest-small-nx0.yaml

.PHONY: setup demo demo-cold demo-meta test clean

setup: $(VENV)/.installed

# pip -qq: errors only (a machine's pip configuration may warn about every index folder it lacks).
# uv --compile-bytecode: uv, unlike pip, leaves .py files uncompiled, and with PYTHONDONTWRITEBYTECODE set
# (as on CI) every process then recompiles lightning, transformers, scipy... from source:
# `lightning-rec --help` 18.7 s without, 9.1 s with; setup about 35 s longer.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install -qq uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e ".[test]"
	touch $@

# The pipeline on the bundled ml-latest-small: encode item text -> hybrid SASRec -> test and recommend
# -> user simulator -> PPO fine-tuning -> RL evaluation table -> meta-training and the meta-test table.
# PPO and the table play the field's session protocol ($(SESSION)): the table holds R_tra, len_tra, reward
# per turn, CTR and coverage of random, popularity, supervised, epsilon-greedy, the train-tuned category
# re-ranker, PPO and the quit oracle (told the rule: a ceiling), docs/rl.md.
# Short budgets: the tables differ from the recipes' (docs/rl.md, docs/meta.md).
demo: setup
	rm -rf $(OUT)
	$(CLI) predict --data $(DATA) -c configs/encode-ml-latest-small.yaml
	$(CLI) fit -c $(HYBRID) --trainer.default_root_dir $(OUT)/hybrid --trainer.max_epochs $(DEMO_EPOCHS) \
	    --data.init_args.batch_size $(DEMO_BATCH_SIZE) --model.init_args.lr $(DEMO_LR) --model.init_args.warmup_steps $(DEMO_WARMUP)
	$(CLI) test -c $(HYBRID) --trainer.default_root_dir $(OUT)/hybrid --ckpt_path $(PRETRAINED)
	$(CLI) recommend -c $(HYBRID) --ckpt_path $(PRETRAINED) --user 1
	$(CLI) fit -c configs/simulator-ml-latest-small.yaml --trainer.default_root_dir $(OUT)/simulator --trainer.max_epochs $(DEMO_SIM_EPOCHS)
	$(CLI) fit -c configs/ppo-ml-latest-small.yaml -c $(SESSION) --trainer.default_root_dir $(OUT)/ppo --trainer.max_epochs $(DEMO_PPO_EPOCHS) \
	    --model.init_args.windows_per_batch $(DEMO_PPO_WINDOWS) \
	    --model.init_args.pretrained $(PRETRAINED) --model.init_args.simulator $(SIMULATOR)
	$(CLI) test -c configs/rl-evaluation-ml-latest-small.yaml -c $(SESSION) --trainer.default_root_dir $(OUT)/rl-evaluation \
	    --model.init_args.supervised $(PRETRAINED) --model.init_args.simulator $(SIMULATOR) --model.init_args.episodes_per_user 4 \
	    --model.init_args.policies '{ppo: $(OUT)/ppo/checkpoints/last.ckpt}'
	$(MAKE) --no-print-directory demo-cold
	$(MAKE) --no-print-directory demo-meta

# Cold-start items (docs/large-models.md, section 4): 20 % of the items withheld from training, the
# text-only SASRec and the hybrid with configs/cold-items.yaml at the benchmark's 5 epochs, one thread
# each, side by side; the table gives test NDCG@10 on all, warm and cold targets and the paired difference.
COLD := $(PY) benchmarks/encoders.py --no-baselines --cold-fractions 0.2 --epochs $(DEMO_EPOCHS) --workdir $(OUT)/cold-items
demo-cold: setup
	mkdir -p $(OUT)
	$(CLI) predict --data $(DATA) -c configs/encode-ml-latest-small.yaml
	OMP_NUM_THREADS=1 $(COLD) --models sasrec-text --output $(OUT)/cold-items/text > $(OUT)/cold-items-text.log 2>&1 & \
	OMP_NUM_THREADS=1 $(COLD) --models sasrec-hybrid --label hybrid-cold --model-args "-c configs/cold-items.yaml" \
	    --output $(OUT)/cold-items/hybrid > $(OUT)/cold-items-hybrid.log 2>&1; hybrid=$$?; \
	wait $$! && test $$hybrid = 0 || { tail -n 20 $(OUT)/cold-items-*.log; exit 1; }
	$(PY) benchmarks/encoders.py --merge $(OUT)/cold-items/text.json $(OUT)/cold-items/hybrid.json \
	    --epochs $(DEMO_EPOCHS) --output $(OUT)/cold-items/table

# The meta stage alone (again) on the demo's checkpoint: meta-training, then the meta-test table at k = 5
# (curves to 3 inner steps). It starts from the demo's leave-one-out checkpoint (cold_start_users: random),
# so its test users' early events were pretrained on; configs/meta-ml-latest-small.yaml gives the leak-free run.
demo-meta: setup
	OMP_NUM_THREADS=1 $(CLI) fit -c configs/meta-ml-latest-small.yaml --trainer.default_root_dir $(OUT)/meta \
	    --model.init_args.checkpoint $(PRETRAINED) --data.init_args.split leave_one_out --data.init_args.cold_start_users random \
	    --trainer.max_steps $(DEMO_META_STEPS) --trainer.val_check_interval $(DEMO_META_STEPS)
	OMP_NUM_THREADS=1 $(CLI) test -c configs/meta-ml-latest-small.yaml --trainer.default_root_dir $(OUT)/meta \
	    --model.init_args.checkpoint $(PRETRAINED) --data.init_args.split leave_one_out --data.init_args.cold_start_users random \
	    --data.init_args.test_ks '[5]' --model.init_args.curve_steps 3 --ckpt_path $(OUT)/meta/checkpoints/last.ckpt

# Lint and format check first (pyproject.toml [tool.ruff]), then the suite; the last line is pytest's summary
# (-q here, not in pyproject's addopts: `pytest -q` on top of it is -qq, which drops the summary).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

clean:
	rm -rf outputs lightning_logs .pytest_cache
