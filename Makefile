# Set-up and the two jobs, on a fresh machine: `make demo` and `make test`.
# Everything goes into .venv; PYTHON picks the interpreter that creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-oldest-python bench clean board-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[$*]'
	touch $@

# The demo runs on an emulated Cortex-M4 board when QEMU and the Arm toolchain are here, else on host.
DEMO_BOARD ?= mps2-an386
BOARD_PACKAGES := qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi

demo: $(VENV)/.installed-tvm
	@if command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1; then \
		$(BIN)/microtvm demo --board $(DEMO_BOARD); \
	else \
		echo "make demo: no Arm toolchain or QEMU here, so the demo runs on host; for the emulated board: apt-get install $(BOARD_PACKAGES)" >&2; \
		$(BIN)/microtvm demo; \
	fi

# The emulated-board tests need QEMU and the Arm toolchain: installed here when we may (root with
# apt-get, as on CI), else named with the command to run.
board-tools:
	@if ! command -v arm-none-eabi-gcc >/dev/null 2>&1 || ! command -v qemu-system-arm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BOARD_PACKAGES); \
		else \
			echo "make test: the emulated-board tests need $(BOARD_PACKAGES); run: sudo apt-get install $(BOARD_PACKAGES)" >&2; exit 1; \
		fi; \
	fi

test: board-tools $(VENV)/.installed-tvm,test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The oldest Python we support (3.10: apache-tvm's floor too), without the tvm extra, to keep CI
# short: the tvm tests are deselected there; they run under `make test`.
OLDEST_PYTHON ?= python3.10
test-oldest-python:
	$(OLDEST_PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q -e '.[test]'
	.venv-oldest/bin/python -m pytest -q -p no:cacheprovider --without-tvm $(PYTEST_ARGS)

bench: $(VENV)/.installed-tvm,test
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
