# bonsai: `make run` installs what is missing, builds and serves;
# `make test` installs, builds and runs every test.
PYTHON    ?= /usr/bin/python3
BUILD_DIR ?= build
JOBS      ?= $(shell nproc)
LISTEN    ?= 0.0.0.0:50051
SERVER     = $(BUILD_DIR)/bin/bonsai-server

.PHONY: deps build run test unit-test e2e-test bench image-test clean

deps:
	bash deploy/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	$(SERVER) --listen=$(LISTEN)

unit-test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

e2e-test: build
	BONSAI_SERVER=$(abspath $(SERVER)) PYTHONPATH=$(CURDIR)/client/python \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

test: unit-test e2e-test

bench: build
	BONSAI_SERVER=$(abspath $(SERVER)) PYTHONPATH=$(CURDIR)/client/python \
	  $(PYTHON) bench/run_all.py --build-dir $(BUILD_DIR)

# Builds the Dockerfile with buildah and exercises the image (root; see the script).
image-test:
	bash deploy/docker/image-test.sh

clean:
	rm -rf $(BUILD_DIR)
