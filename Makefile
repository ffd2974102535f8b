# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv if needed and install flowstore with its test, ptlflow, interop, ray and video extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# free space the venv needs (torch, ptlflow and the rest installed: about 6.7 GB, plus pip's cache)
VENV_NEED_GB ?= 8

.PHONY: demo demo-sz-table test venv clean bench gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import os, shutil, sys; need = float('$(VENV_NEED_GB)'); where = os.path.abspath('$(VENV)'); \
	free = shutil.disk_usage(os.path.dirname(where)).free / 2**30; \
	sys.exit(0 if free >= need else 'error: the venv needs about %g GB free in %s, only %.1f GB are free there: free space (or VENV=/other/disk/.venv)' % (need, where, free))" \
	|| exit 2
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.14.1/torchvision==0.29.1 come from this machine's disk (see README)
	$(PIP) install -q -e '.[test,ptlflow,interop,ray,video]'
	# ptlflow, mmaction2 and pytorchvideo without their deps: they require opencv-python (or old pins), which would overwrite
	# opencv-contrib's cv2 (and with it cv2.optflow, needed for TV-L1)
	$(PIP) install -q --no-deps ptlflow==0.4.2 mmaction2==1.2.0 pytorchvideo==0.1.5
	# mmengine (interop) pulls opencv-python in: take it out and restore the contrib cv2 folder
	if $(PIP) show -q opencv-python 2>/dev/null; then $(PIP) uninstall -q -y opencv-python && \
	  $(PIP) install -q --force-reinstall --no-deps "opencv-contrib-python-headless==$$($(PIP) show opencv-contrib-python-headless | sed -n 's/^Version: //p')"; fi
	$(PY) -c "import cv2, cv2.optflow, ptlflow, torch, torchvision, webdataset, mmaction.datasets, pytorchvideo.models.x3d; print('cv2', cv2.__version__, '| torch', torch.__version__, '| ptlflow, mmaction2, webdataset, pytorchvideo ok')"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: venv
	$(VENV)/bin/flowstore run pipelines/demo.toml

# Simonyan & Zisserman's temporal-net and fusion tables on the demo data (demo_sz_out/sz_table.md)
demo-sz-table: venv
	$(VENV)/bin/flowstore run pipelines/demo_sz_table.toml

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/codecs.py

# on a GPU machine: no install step, whatever python3 is there (see docs/benchmarks.md, GPU check)
gpu-check:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu_check.py $(if $(OUT),--out $(OUT),)

clean:
	rm -rf demo_out demo_sz_out .pytest_cache
