# bonsai: `make run` installs what is missing, builds and serves;
# `make test` installs, builds and runs every test.
PYTHON    ?= /usr/bin/python3
BUILD_DIR ?= build
JOBS      ?= $(shell nproc)
LISTEN    ?= 0.0.0.0:50051
SERVER     = $(BUILD_DIR)/bin/bonsai-server
# Fuzzing: clang with ASan + UBSan in a build of its own (tests/fuzz/).
FUZZ_DIR          ?= build-fuzz
FUZZ_SECONDS      ?= 600
FUZZ_TEST_SECONDS ?= 25

.PHONY: deps build stubs run test unit-test e2e-test fuzz-build fuzz fuzz-test bench soak image-test clean

deps:
	bash deploy/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

# After a proto change: copy the regenerated Python stubs into the client
# package, where they are committed (a unit test fails while they differ).
stubs: build
	cp $(BUILD_DIR)/proto/gen/python/bonsai/v1/compressor_pb2.py \
	   $(BUILD_DIR)/proto/gen/python/bonsai/v1/compressor_pb2_grpc.py client/python/bonsai/v1/

run: build
	$(SERVER) --listen=$(LISTEN)

unit-test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

e2e-test: build
	BONSAI_SERVER=$(abspath $(SERVER)) PYTHONPATH=$(CURDIR)/client/python \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

$(FUZZ_DIR)/CMakeCache.txt:
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DBONSAI_FUZZ=ON -DBONSAI_BUILD_BENCH=OFF

# The fuzz targets, and the unit tests again under both sanitizers.
fuzz-build: deps $(FUZZ_DIR)/CMakeCache.txt
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target bonsai-fuzz-targets bonsai-unit-tests

# In `make test`: the unit tests under ASan + UBSan, then each target for
# FUZZ_TEST_SECONDS; any finding fails.
fuzz-test: fuzz-build
	cd $(FUZZ_DIR) && ctest --output-on-failure -j $(JOBS)
	bash tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_TEST_SECONDS)

# Long runs (FUZZ_SECONDS per target; FUZZ_TARGETS="onnx" for one).
fuzz: fuzz-build
	bash tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

test: unit-test e2e-test fuzz-test

bench: build
	BONSAI_SERVER=$(abspath $(SERVER)) PYTHONPATH=$(CURDIR)/client/python \
	  $(PYTHON) bench/run_all.py --build-dir $(BUILD_DIR)

# The load-and-fault suite (bench/soak.py): 50 clients for 10 minutes with
# cancels, vanishing, stalling and hostile clients; never in `make test`.
# SOAK_ARGS="--clients 8 --minutes 1 --max-size-mib 16" for a short run.
SOAK_ARGS ?=
soak: build
	BONSAI_SERVER=$(abspath $(SERVER)) PYTHONPATH=$(CURDIR)/client/python \
	  $(PYTHON) bench/soak.py --json $(BUILD_DIR)/soak-results.json $(SOAK_ARGS)

# Builds the Dockerfile with buildah and exercises the image (root; see the script).
image-test:
	bash deploy/docker/image-test.sh

clean:
	rm -rf $(BUILD_DIR) $(FUZZ_DIR)
