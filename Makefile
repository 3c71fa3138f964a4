# Two entry points (see README): `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 0.0.0.0
PORT ?= 9090
# the oldest Python the project supports (requires-python): vermin checks the standard-library names against it, ruff
# (target-version) the syntax, mypy (python_version) the types
PYTHON_OLDEST := 3.10
# the packages mypy checks (the no-torch floors and the service; the rest is checked as far as they import it)
TYPED := -p adaptiveclick.labelstudio -p adaptiveclick.storage -p adaptiveclick.backend -p adaptiveclick.annotate

# an AVX2-only CPU (Zen 3, most laptops) emulated on a newer one: our detection, oneDNN, OpenVINO, MKL, fbgemm and
# ATen capped (OpenVINO's MLAS GEMMs ignore every cap: see ops/cpu_features.py)
AVX2_ONLY := ADAPTIVECLICK_MAX_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
# the tests whose paths depend on the instruction set (kernels, precisions, variants, batching)
ISA_TESTS := tests/unit/test_cpu_inference.py tests/unit/test_cpu_defaults.py tests/unit/test_box_segmenter.py \
	tests/integration/test_cpu_inference_parity.py tests/integration/test_cpu_inference_benchmark.py \
	tests/integration/test_openvino_engine.py tests/integration/test_ops_cpu_kernel.py \
	tests/integration/test_ops_build.py tests/integration/test_ops_openvino.py

# checkov (the Kubernetes manifests' security scan) lives in its own environment: its pins (boto3, packaging,
# networkx) conflict with the project's
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION := 3.3.30

.PHONY: serve test test-unit test-integration test-e2e test-avx2 docs lint format typecheck install clean tools nginx

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

install: $(STAMP)

# what the integration tests need besides the project: nginx from Debian (the multi-replica test; installed with
# apt-get when missing, which needs root, as in CI) and checkov in $(CHECKOV_VENV)
tools: nginx $(CHECKOV_VENV)/.installed

nginx:
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light; }

$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

serve: $(STAMP)
	$(BIN)/adaptiveclick serve --host $(HOST) --port $(PORT)

# the whole suite, tier by tier (a tier's folder is its marker): unit (pure, seconds), integration (processes,
# compilers, servers on loopback), the instruction-set-dependent tests as on an AVX2-only CPU, then end-to-end (the
# real Label Studio). (pytest's exit code 5 means PYTEST_ARGS selected no test of that tier: not a failure)
test: test-unit test-integration test-avx2 test-e2e

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS) || [ $$? -eq 5 ]

# the instruction-set-dependent tests again as on an AVX2-only CPU (`make test` with $(AVX2_ONLY) runs them all)
test-avx2: $(STAMP)
	env $(AVX2_ONLY) $(BIN)/python -m pytest $(PYTEST_ARGS) $(ISA_TESTS) || [ $$? -eq 5 ]

# the newest Python (pyenv's): the project's wheel installed with the test extra into a new venv outside the
# checkout, then the unit tier and tests/wheel (console script, kernel build, one click through serve) against it
PYTHON_NEWEST ?= 3.13
.PHONY: test-wheel
test-wheel:
	PYTHON_NEWEST=$(PYTHON_NEWEST) PYTEST_ARGS="$(PYTEST_ARGS)" .ci/test-wheel

# the image and the compose set-up, built and run for real with podman (deploy/test-image.sh: the CPU image, the
# CVAT function image, the compose quick start with Label Studio); apt-get installs podman & co. as root under CI
.PHONY: test-image
test-image: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) deploy/test-image.sh all

# the documentation site, into site/: a broken link, a missing anchor or page, or a missing snippet fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)
	$(BIN)/vermin --quiet --no-tips --violations --eval-annotations -t=$(PYTHON_OLDEST)- $$(git ls-files '*.py')

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy $(TYPED)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) build *.egg-info
