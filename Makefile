# The two commands (see README): `make demo` and `make test`. Both run set-up first (idempotent).
DEMO_OUT ?= demo_out
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/medsegsuite demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q Testing/Python
