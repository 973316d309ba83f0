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

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
