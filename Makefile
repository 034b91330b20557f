# Entry points. Everything installs its Debian dependencies first (scripts/setup.sh is a
# no-op when all are present), then builds with CMake into build/ (or build-<sanitizer>/).
JOBS    ?= $(shell nproc)
WERROR  ?= OFF
CMAKE   := cmake
CTEST   := ctest --output-on-failure --no-tests=error -j$(JOBS)

PREFIX  ?= /usr/local
DESTDIR ?=

.PHONY: all setup build demo test install test-asan test-tsan fuzz torture bench format clean

all: build

setup:
	@bash scripts/setup.sh

build/CMakeCache.txt: | setup
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release -DBIGARRAY_WERROR=$(WERROR)

build: setup build/CMakeCache.txt
	$(CMAKE) -B build -DBIGARRAY_WERROR=$(WERROR) >/dev/null
	$(CMAKE) --build build -j$(JOBS)

demo: build
	./build/bin/bigarray-demo

test: build
	cd build && $(CTEST)

# Headers, libbigarray.so and .a, the tool, CMake and pkg-config files, the Python module, under
# $(DESTDIR)$(PREFIX) (README.md, "Install"). Installing for real as root refreshes the dynamic
# linker's cache, so that programs find libbigarray.so in /usr/local/lib.
install: build
	DESTDIR="$(DESTDIR)" $(CMAKE) --install build --prefix "$(PREFIX)"
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then ldconfig; fi

# ASan + UBSan over the whole suite (but the tests labelled no-asan). Without the Python module:
# an instrumented one cannot be loaded by /usr/bin/python3, so its tests are no-asan anyway.
test-asan: setup
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBIGARRAY_WERROR=ON -DBIGARRAY_SANITIZE=address,undefined -DBIGARRAY_PYTHON=OFF
	$(CMAKE) --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:handle_segv=0:handle_sigbus=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 $(CTEST) -LE no-asan

# TSan (clang) over the threaded tests (ctest label "threads").
TSAN_TARGETS := storage_conformance_test lmdb_store_test pager_test pager_mapped_test pager_slot_mapped_test database_test watch_test
test-tsan: setup
	CC=clang CXX=clang++ $(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DBIGARRAY_WERROR=ON -DBIGARRAY_SANITIZE=thread
	$(CMAKE) --build build-tsan -j$(JOBS) --target $(TSAN_TARGETS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:handle_segv=0:handle_sigbus=0:die_after_fork=0:suppressions=$(CURDIR)/tests/tsan.supp $(CTEST) -L threads

# libFuzzer targets, each run for FUZZ_SECONDS on a copy of its seed corpus.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := fuzz_open_db npy_fuzz
fuzz: setup
	CC=clang CXX=clang++ $(CMAKE) -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBIGARRAY_FUZZ=ON
	$(CMAKE) --build build-fuzz -j$(JOBS) --target $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	  rm -rf build-fuzz/corpus-$$t && mkdir -p build-fuzz/corpus-$$t && cp -r $$(case $$t in npy_fuzz) echo tests/cli/data;; *) echo tests/fuzz/corpus/$${t#fuzz_};; esac)/. build-fuzz/corpus-$$t/; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=0:handle_segv=0:handle_sigbus=0 ./build-fuzz/bin/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 build-fuzz/corpus-$$t > build-fuzz/$$t.log 2>&1; \
	  rc=$$?; tail -12 build-fuzz/$$t.log; [ $$rc -eq 0 ] || { echo "fuzz: $$t FAILED (exit $$rc)"; exit 1; }; \
	done

# The full damage sweep (docs/reliability.md, "The damage sweep"): every byte of every structural
# page of a small database damaged, one copy at a time (~49,000 cases; about an hour on 2 busy
# cores); `make test` runs a short sweep (~560 cases). Extra arguments: SWEEP_ARGS (e.g. --kind meta).
SWEEP_ARGS ?=
torture: build
	./build/bin/damage_sweep --full --jobs $(JOBS) $(SWEEP_ARGS)

bench: build
	./build/bin/bigarray-bench

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	rm -rf build build-asan build-tsan build-fuzz
