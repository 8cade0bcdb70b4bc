# Two commands on a fresh clone:  `make quickstart`  (set-up + the main job)  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
# CPU pin (see constraints-cpu.txt); `make setup CONSTRAINTS=` for a GPU install.
CONSTRAINTS ?= constraints-cpu.txt
# A local folder holding the canonical dataset archives, used before the network.
MIRROR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup quickstart test bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev,bench]'
	touch $@

quickstart: setup
	ULMFIT_MIRROR=$${ULMFIT_MIRROR:-$(MIRROR)} $(VENV)/bin/ulmfit quickstart

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
