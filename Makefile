# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MODEL ?= featherface-v1
TARGET ?= cpu
PRECISION ?=

.PHONY: demo test eval validate engine bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
