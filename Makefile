# Two commands do all set-up on a fresh machine:
#   make demo   # install into .venv (first time only), then run the main job on bundled real data
#   make test   # install into .venv (first time only), then run the whole test suite
#
# pip runs with --isolated so the machine's pip configuration is ignored: it can point at a local
# CPU-only torch wheel with which torchvision cannot import. The registry's torch build works on
# machines without a GPU.

VENV   ?= .venv
PYTHON ?= python3
PIP     = $(VENV)/bin/pip --isolated
STAMP   = $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --progress-bar off -c constraints.txt -e ".[dev]"
	$(VENV)/bin/python -c "import torch, torchvision, nni, optuna, nni_udc; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| nni', nni.__version__, '| optuna', optuna.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nni-udc pareto examples/udc-digits.yaml

# The test suite starts a throwaway PostgreSQL server of its own (tests/postgres_server.py), so make
# sure one is installed (Debian's package, installed with apt-get when missing).
test: $(STAMP) lint
	bash scripts/ensure-postgres.sh
	$(VENV)/bin/pytest

# ruff and mypy, configured in pyproject.toml (versions pinned in constraints.txt); `make test` runs both first
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
