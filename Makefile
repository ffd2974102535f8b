# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if needed and install flowstore with its test and ptlflow extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.14.1/torchvision==0.29.1 come from this machine's disk (see README)
	$(PIP) install -q -e '.[test,ptlflow]'
	# ptlflow itself without its deps: it requires opencv-python, which would overwrite
	# opencv-contrib's cv2 (and with it cv2.optflow, needed for TV-L1)
	$(PIP) install -q --no-deps ptlflow==0.4.2
	# X3D (flowstore[video]): pytorchvideo's models only, without its deps
	$(PIP) install -q -e '.[video]' && $(PIP) install -q --no-deps pytorchvideo==0.1.5
	$(PY) -c "import cv2, cv2.optflow, ptlflow, torch, torchvision; print('cv2', cv2.__version__, '| torch', torch.__version__, '| ptlflow ok')"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(VENV)/bin/flowstore run pipelines/demo.toml

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/codecs.py

clean:
	rm -rf demo_out .pytest_cache
