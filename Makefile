# The two commands of the README. Each creates the virtual environment on first use
# (Python >= 3.11 as python3) and installs ptyopt into it; nothing else is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench-forward bench-engines bench-scale bench-profile bench-batched bench-peers \
	bench-device \
	peers-env peers-env-torch \
	transfer clean-cache

# Peer packages, each in its own virtual environment under $(PEERS_DIR) (what
# ptyopt.peers looks for as $$PTYOPT_PEERS_DIR, default .peers/), pinned versions.
PEERS_DIR ?= .peers
PEER_PINS_phaser := "phaserEM[jax]==0.3.1"
PEER_PINS_py4dstem := "py4DSTEM==0.14.18"

run: $(STAMP)
	$(BIN)/python -m ptyopt study=quickstart
	$(BIN)/python -m ptyopt report study=quickstart

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

bench-forward: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.forward

bench-engines: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.engines

bench-scale: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.scale

bench-profile: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.profile

bench-batched: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.batched_trials

bench-device: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.device_suite

bench-peers: $(STAMP)
	PTYOPT_PEERS_DIR=$(abspath $(PEERS_DIR)) $(BIN)/python -m ptyopt.benchmarks.peers

peers-env: $(PEERS_DIR)/phaser/.installed $(PEERS_DIR)/py4dstem/.installed

# Optional torch peers (PtyRAD, pty-chi): both import torchvision, whose PyPI build does
# not load beside the CPU torch 2.13.0 on this machine's disk; torch 2.14.1 with
# torchvision 0.29.1 (a CUDA build, about 5.5 GB, that runs on the CPU) does. Their
# packages go in without dependencies (PtyRAD's list includes jupyter), then what they
# import.
peers-env-torch: $(PEERS_DIR)/ptyrad/.installed $(PEERS_DIR)/ptychi/.installed

TORCH_PINS := torch==2.14.1 torchvision==0.29.1
TORCH_PEER_PINS_ptyrad := ptyrad==1.0.0
TORCH_PEER_DEPS_ptyrad := numpy h5py pyyaml pydantic scipy matplotlib tifffile optuna zarr \
	accelerate scikit-learn
TORCH_PEER_PINS_ptychi := ptychi==2.2.0
TORCH_PEER_DEPS_ptychi := "numpy>=2.1" h5py pandas "pydantic>=2,<3" scikit-image scikit-learn \
	scipy tqdm "matplotlib>=3.10.6"

$(PEERS_DIR)/ptyrad/.installed $(PEERS_DIR)/ptychi/.installed: $(PEERS_DIR)/%/.installed:
	$(PYTHON) -m venv $(PEERS_DIR)/$*
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet $(TORCH_PINS)
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet --no-deps $(TORCH_PEER_PINS_$*)
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet $(TORCH_PEER_DEPS_$*)
	touch $@

$(PEERS_DIR)/%/.installed:
	$(PYTHON) -m venv $(PEERS_DIR)/$*
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_DIR)/$*/bin/python -m pip install --quiet $(PEER_PINS_$*)
	touch $@

transfer: $(STAMP)
	$(BIN)/python -m ptyopt.benchmarks.transfer

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

clean-cache:
	rm -rf simulations/cache .jax_cache
