# dynfusion_ros — the two commands are `make demo` and `make test`; both build the
# environment first when needed. Everything the project needs is installed here.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
READY  := $(VENV)/.dynfusion-env-ready
PYTEST_ARGS ?=

# This machine's pip.conf names local indexes that may be absent; pip warns once per
# package about each. Only those lines are dropped; errors still fail the build.
PIP_NOISE := ^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory.$$

INTERFACE_SOURCES := $(shell find interfaces -type f 2>/dev/null)

.PHONY: env demo test lint format bench clean distclean help

help:
	@echo "make demo    build the environment if needed, replay a simulated drive through the nodes"
	@echo "make test    build the environment if needed, run the test suite"
	@echo "make env     create .venv: ROS 2 Jazzy wheels, torch (CPU), interfaces, this package"
	@echo "make lint    ruff check and format check (make format fixes)"
	@echo "make bench   conversion, simulation, detector, gate and node benchmarks (prints figures)"
	@echo "make clean   remove build trees; make distclean also removes .venv"

env: $(READY)

# One stamp for the whole environment: it is rebuilt only when one of its inputs changes,
# so a second `make env` (and every `make test`) does nothing.
$(READY): requirements.txt requirements-devkit.txt setup.py setup.cfg package.xml tools/build_ros_env.py $(INTERFACE_SOURCES) \
		$(wildcard launch config models)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[env] updating $(VENV): pinned requirements, ROS interfaces, this package (about a minute when new)"
	$(PIP) install -q -r requirements.txt 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PIP) install -q --no-deps -r requirements-devkit.txt 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	$(PY) tools/build_ros_env.py --prefix $(VENV)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(PY) -c "import rclpy, vision_msgs.msg, dynfusion_msgs.msg, torch, cv2, rosbags, dynfusion_ros; \
		import nuscenes.eval.detection.algo" \
		&& echo "[env] ready: $(VENV)"
	@touch $@

demo: $(READY)
	$(PY) -m dynfusion_ros.cli demo

test: $(READY)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(READY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(READY)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(READY)
	$(PY) bench/bench_convert.py
	$(PY) bench/bench_simulate.py
	$(PY) bench/bench_detector.py
	$(PY) bench/bench_gate.py
	$(PY) bench/bench_nodes.py

clean:
	rm -rf build install log .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
