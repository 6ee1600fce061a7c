# The two commands a newcomer needs:  make demo   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint typecheck unit bench clean setup image image-test ansible-test ansible-lint

demo:            ## set up, then run a local fleet demo (Ctrl-C stops it)
	@scripts/bootstrap.sh runtime
	$(VENV)/bin/edge-agent demo

test:            ## set up (apt packages when root), then lint, type-check and run every test
	@scripts/bootstrap.sh test
	$(MAKE) --no-print-directory lint typecheck unit

setup:
	@scripts/bootstrap.sh test

lint:
	$(VENV)/bin/ruff check agent harness tests bench
	$(VENV)/bin/ruff format --check agent harness tests bench

typecheck:
	$(VENV)/bin/mypy

unit:
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench:           ## print the figures (see bench/)
	@scripts/bootstrap.sh test
	$(PY) bench/checks.py

image:           ## build the Raspberry Pi image, as root (image/out/; see docs/image.md)
	@bash image/build.sh

image-test:      ## as root: boot the built image under QEMU (2 virt VMs, then an emulated Pi 4) and check it; after make image
	@python3 -u image/boot_test.py $(IMAGE_TEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info harness/build harness/*.egg-info .mypy_cache .ruff_cache

ansible-test:    ## as root: the Ansible role and playbooks against 3 real hosts (nspawn containers); see docs/ansible.md
	bash ansible/tests/run.sh

ansible-lint:    ## ansible-lint (production profile) on ansible/
	@bash ansible/scripts/setup-venv.sh
	cd ansible && PATH="$$PWD/.venv/bin:$$PATH" .venv/bin/ansible-lint
