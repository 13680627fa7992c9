# lockstep — the commands a newcomer needs. Every target installs what it needs first.
#   make demo    install deps, build Release, run the main job
#   make test    install deps, build, run every test (Release, then ASan+UBSan)
#   make test-tsan  ThreadSanitizer on the threaded parts (comm, DDP reducer); not in `make test`
#   make bench   build and run the benchmarks against their peers
#   make format / make lint

JOBS ?= $(shell nproc)
BUILD ?= build
RELEASE := $(BUILD)/release
ASAN := $(BUILD)/asan
TSAN := $(BUILD)/tsan
# The tests whose threads TSan checks: the native process groups and the DDP reducer.
TSAN_TESTS ?= comm_collectives_test ddp_parts_test ddp_features_test ddp_equivalence_test
CMAKE_FLAGS ?=
CTEST_FLAGS ?= --output-on-failure --timeout 600 -j $(JOBS)
# The LibTorch adapter is left out of the sanitizer build (-DLOCKSTEP_WITH_TORCH=OFF): its
# headers compile slowly and LibTorch itself is not built with ASan; Release runs its tests.
# Labels run under the sanitizers (the slow ones run once, in Release; so do the libFuzzer
# harnesses, which clang++ builds with their own sanitizers in either build).
ASAN_LABELS ?= unit|multiproc

.PHONY: all deps build build-asan demo test install-python test-release test-asan test-tsan bench format lint clean

all: build

deps:
	scripts/install-deps

$(RELEASE)/build.ninja:
	cmake -S . -B $(RELEASE) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

$(ASAN)/build.ninja:
	cmake -S . -B $(ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_SANITIZE=ON \
	  -DLOCKSTEP_BUILD_BENCH=OFF -DLOCKSTEP_BUILD_FUZZERS=OFF -DLOCKSTEP_WITH_TORCH=OFF $(CMAKE_FLAGS)

build: deps $(RELEASE)/build.ninja
	cmake --build $(RELEASE) -j $(JOBS)

build-asan: deps $(ASAN)/build.ninja
	cmake --build $(ASAN) -j $(JOBS)

# lockstep_torch into /usr/bin/python3's site directory (python/CMakeLists.txt): afterwards
# `import lockstep_torch` works from any directory.
install-python: deps $(RELEASE)/build.ninja
	cmake --build $(RELEASE) -j $(JOBS) --target lockstep_torch_ext
	cmake --install $(RELEASE) --component python

demo: build
	scripts/demo $(RELEASE)

test: test-release test-asan

test-release: build
	ctest --test-dir $(RELEASE) $(CTEST_FLAGS)

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  ctest --test-dir $(ASAN) $(CTEST_FLAGS) -L '$(ASAN_LABELS)'

$(TSAN)/build.ninja:
	cmake -S . -B $(TSAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLOCKSTEP_TSAN=ON \
	  -DLOCKSTEP_BUILD_BENCH=OFF -DLOCKSTEP_BUILD_FUZZERS=OFF $(CMAKE_FLAGS)

test-tsan: deps $(TSAN)/build.ninja
	cmake --build $(TSAN) -j $(JOBS) --target $(TSAN_TESTS)
	set -e; for t in $(TSAN_TESTS); do \
	  bin=$$(find $(TSAN)/tests -name $$t -type f -perm -u+x | head -1); echo "== $$bin"; \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $$bin --gtest_brief=1; done

bench: build
	scripts/install-deps --bench
	scripts/bench-all $(RELEASE)

format:
	git ls-files '*.h' '*.cpp' '*.c' | xargs clang-format -i

# clang-tidy on the C++ files changed against main (or all with LINT_ALL=1).
lint: $(RELEASE)/build.ninja
	@files=$$(if [ -n "$(LINT_ALL)" ]; then git ls-files 'src/*.cpp' 'apps/*.cpp'; \
	  else git diff --name-only --diff-filter=d HEAD -- 'src/*.cpp' 'apps/*.cpp'; fi); \
	if [ -z "$$files" ]; then echo "lint: no changed C++ files"; exit 0; fi; \
	clang-tidy -p $(RELEASE) --quiet $$files

clean:
	rm -rf $(BUILD)
