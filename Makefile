# dynfusion_ros — the two commands are `make demo` and `make test`; both build the
# environment first when needed. Everything the project needs is installed here.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
READY  := $(VENV)/.dynfusion-env-ready
PYTEST_ARGS ?=

INTERFACE_SOURCES := $(shell find interfaces -type f 2>/dev/null)

.PHONY: env test lint format bench clean distclean help

help:
	@echo "make test    build the environment if needed, run the test suite"
	@echo "make env     create .venv: ROS 2 Jazzy wheels, torch (CPU), interfaces, this package"
	@echo "make lint    ruff check"
	@echo "make bench   conversion benchmarks (prints figures)"
	@echo "make clean   remove build trees; make distclean also removes .venv"

env: $(READY)

# One stamp for the whole environment: it is rebuilt only when one of its inputs changes,
# so a second `make env` (and every `make test`) does nothing.
$(READY): requirements.txt setup.py setup.cfg package.xml tools/build_ros_env.py $(INTERFACE_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PY) tools/build_ros_env.py --prefix $(VENV)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@$(PY) -c "import rclpy, vision_msgs.msg, dynfusion_msgs.msg, torch, cv2, rosbags, dynfusion_ros" \
		&& echo "[env] ready: $(VENV)"
	@touch $@

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

clean:
	rm -rf build install log .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
