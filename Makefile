# The README's commands: `make demo` and `make test` install everything they need first.
VENV ?= .venv
# Python 3.12 where the machine has it: spaCy's 3.11 wheels run its parser about 1.7x
# slower (they take the GIL inside its inner loop), so 3.11 is only the fallback.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.12 /usr/local/bin/python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	# System packages: PostgreSQL (tests on a real server), HAProxy (Serve's fast HTTP ingress),
	# a headless Chromium (the API docs checked in a real browser), Tesseract OCR (scanned
	# pages), a Java 17 runtime (Spark).
	command -v haproxy >/dev/null 2>&1 && command -v chromium-headless-shell >/dev/null 2>&1 && command -v tesseract >/dev/null 2>&1 && test -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata && test -f /usr/share/tesseract-ocr/5/tessdata/deu.traineddata && command -v java >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql haproxy chromium-headless-shell tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu openjdk-17-jre-headless)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# uv installs the project into the venv (about 1 min here; pip takes about 4). Bytecode is
	# compiled at install, as pip does: Ray's processes do not write it, so without it every
	# worker and replica would compile its imports again (the tests took half again as long).
	$(PY) -m pip install -q "uv>=0.13.9,<0.14"
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/preannotate demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Two pytest-xdist workers, each with its own session cluster (tests/conftest.py): the
# tests wait on replicas and Ray heads starting about as much as they compute.
test: lint
	$(PY) -m pytest -q -n 2 --dist worksteal

bench: install
	$(PY) bench/annotate.py
	$(PY) bench/serve.py
	$(PY) bench/bulk.py
	$(PY) bench/train.py

clean:
	rm -rf $(VENV) build *.egg-info
