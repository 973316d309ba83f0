# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MODEL ?= featherface-v1
TARGET ?= cpu
PRECISION ?=

.PHONY: demo test eval validate engine bench arm64-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/toolchain eval --model $(MODEL)

eval: demo

validate: $(STAMP)
	$(BIN)/toolchain validate --model $(MODEL)

# The whole chain for one target into build/$(MODEL)/$(TARGET)/ (unchanged steps are reused).
engine: $(STAMP)
	$(BIN)/toolchain engine --model $(MODEL) --target $(TARGET) $(if $(PRECISION),--precision $(PRECISION))

# Every stage of V1 and RetinaFace (plus the YuNet peer) against PyTorch; report in build/bench/.
# Passive OpenMP waiting: PyTorch's idle threads must not spin while the stages after it are timed.
bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/toolchain bench --model featherface-v1 --model retinaface-mnet0.25 --json build/bench/bench.json --report build/bench

# The cpu bundle (FP32, INT8) on emulated ARM64 CPUs against x86 (needs root, debootstrap, qemu-user-static;
# builds build/arm64-root once, ~5 min, 620 MB). Not part of `make test`, whose ARM64 test runs once it exists.
arm64-check: $(STAMP)
	$(BIN)/python scripts/arm64_check.py

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
