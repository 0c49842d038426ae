# sdpa.h - build, test, install.
#
#   make            build everything into build/
#   make run        one OLMo-2-7B attention layer (ARGS="..." are passed on)
#   make test       test suite, compile tests, two-copies test, example,
#                   ASan+UBSan, TSan and valgrind runs, the fuzzers (60 s
#                   each) and a 20 s soak
#   make fuzz       the libFuzzer harnesses, FUZZ_TIME=300 s each
#   make soak       the randomized memory soak, SOAK_TIME=180 s
#   make bench      benchmarks (bench, then bench-kernels)
#   make bench-kscales  int8 KV cache: key scales per token / per channel, accuracy
#   make bench-hugepages  F16 KV cache decode on malloc's blocks vs transparent huge pages
#   make plan-data  the trade-off map on this machine (bench --map) into DATA=build/plan
#   make plots      PNGs from DATA into PLOTS (gnuplot; bench/plots.py)
#   make bench-kernels  plain / auto-vectorised / intrinsics version of each
#                   core loop, timed side by side
#   make bench SLEEF=1, make bench-kernels SLEEF=1  the same, plus the
#                   built-in exp against SLEEF's (needs libsleef-dev)
#   make test-sleef the suite built with -DSDPA_USE_SLEEF -lsleef (part of
#                   make test; skipped without libsleef-dev)
#   make install    PREFIX=/usr/local (DESTDIR honoured); make uninstall
#   make check-cmake  CMake build + ctest + install + find_package/pkg-config consumers
#   make CROSS=aarch64-linux-gnu-   cross-build everything into build/aarch64/
#                   (any target: `make CROSS=... test-unit` runs under qemu)
#   make test-arm   cross-build for AArch64 and run the suite, compile tests and
#                   examples under qemu-aarch64 on several CPU models
#
# The library is one header; everything here is a test, an example or packaging.
# No -march flags in the build of record: its binaries must run on any CPU of
# the architecture, so faster code paths are chosen at run time, never here.

# Cross builds: CROSS is the toolchain prefix (aarch64-linux-gnu-). The
# outputs go to build/<arch>/, never mixed with the native build/, and are
# linked statically so that qemu-<arch> runs them without a target sysroot
# (and they run as they are on a board with another glibc). RUN is the
# command line that runs a built program: qemu-<arch> -cpu $(QEMU_CPU) when
# cross-building, nothing natively. A CC or CXX given on the command line
# still wins over $(CROSS)gcc, $(CROSS)g++.
CROSS ?=
ifneq ($(CROSS),)
CROSS_ARCH := $(firstword $(subst -, ,$(CROSS)))
CC      := $(CROSS)gcc
CXX     := $(CROSS)g++
LDFLAGS ?= -static
QEMU     ?= qemu-$(CROSS_ARCH)
QEMU_CPU ?= max
RUN      ?= $(QEMU) -cpu $(QEMU_CPU)
else
RUN      ?=
endif
R = $(if $(strip $(RUN)),$(strip $(RUN)) )

# make predefines CC and CXX; replace only those built-in defaults.
ifeq ($(origin CC),default)
CC = cc
endif
ifeq ($(origin CXX),default)
CXX = c++
endif
CFLAGS   ?= -O3 -g -std=c99 -Wall -Wextra
CPPFLAGS ?=
LDFLAGS  ?=
LDLIBS   ?= -lm -pthread
DL_LIBS  ?= -ldl

PREFIX     ?= /usr/local
DESTDIR    ?=
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share
PKGCONFIGDIR ?= $(DATADIR)/pkgconfig
CMAKEDIR   ?= $(DATADIR)/cmake/sdpa

B       := build$(if $(CROSS),/$(CROSS_ARCH))
HEADER  := include/sdpa.h
INC     := -Iinclude
VERSION := $(shell sed -n 's/^\#define SDPA_VERSION_STRING "\(.*\)"/\1/p' $(HEADER))

PROGRAMS := $(B)/olmo_layer $(B)/test_sdpa $(B)/bench $(B)/bench_kernels $(B)/bench_decode $(B)/bench_kscales $(B)/bench_hugepages $(B)/simple $(B)/decode $(B)/two_copies

.PHONY: plan-data plots test-bench-map
.PHONY: all run test bench bench-decode bench-kscales bench-hugepages bench-kernels bench-kernels-clang install uninstall clean check-cmake \
        test-unit test-unit-bin test-clang test-bf16-emu test-compile test-two-copies test-simple test-decode test-sanitize test-tsan \
        compile-tests test-arm asm check-asm test-sleef sleef-bins test-hwy test-hwy-arm bench-hwy \
        fuzz fuzz-build test-fuzz test-valgrind soak test-soak

all: $(PROGRAMS)

$(B) $(B)/compile $(B)/asan $(B)/tsan:
	@mkdir -p $@

# ---------------------------------------------------------------- programs
$(B)/olmo_layer: examples/olmo_layer.c bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/decode: examples/decode.c $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/simple: examples/simple.c $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/test_sdpa: tests/test_sdpa.c tests/test_kv.h tests/test_plan.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

# The suite with bf16 mode forced on for BF16 inputs, its products in plain C:
# the packing that the AMX and AVX512-BF16 kernels rely on, tested on any CPU.
$(B)/test_sdpa_bf16emu: tests/test_sdpa.c tests/test_kv.h tests/test_plan.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DSDPA__TEST_BF16_SCALAR $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/bench: bench/bench.c bench/map.h bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS) $(DL_LIBS)

# The library as a shared object with one flat entry point, for
# bench/torch_sdpa.py (ctypes): PyTorch beside sdpa.h in one process.
$(B)/libsdpa_bench.so: bench/shim.c $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -shared $(INC) $< -o $@ $(LDLIBS)

$(B)/bench_decode: bench/decode.c bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/bench_kscales: bench/kv_kscales.c bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(B)/bench_hugepages: bench/kv_hugepages.c bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

# The compiler and flags are printed by the binary: they decide what the
# auto-vectoriser could do with the plain and autovec versions.
$(B)/bench_kernels: bench/kernels.c bench/plain_kernels.h bench/common.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DBK_CFLAGS='"$(strip $(CFLAGS))"' $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

# SLEEF=1: the benches also link bench/sleef_copy.c, a second copy of the
# header built with SDPA_USE_SLEEF, and time its exp beside the built-in one
# in the same process (bench: section 7; bench-kernels: the +sleef rows).
# Their binaries go to $(B)/sleef/.
SLEEF ?=
BB := $(B)$(if $(SLEEF),/sleef)
SLEEF_COPY := bench/sleef_copy.c bench/sleef_copy.h
$(B)/sleef/bench: bench/bench.c bench/map.h bench/common.h $(SLEEF_COPY) $(HEADER)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DBENCH_SLEEF $(INC) bench/bench.c bench/sleef_copy.c -o $@ \
	    $(LDFLAGS) -lsleef $(LDLIBS) $(DL_LIBS)
$(B)/sleef/bench_kernels: bench/kernels.c bench/plain_kernels.h bench/common.h $(SLEEF_COPY) $(HEADER)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DBENCH_SLEEF -DBK_CFLAGS='"$(strip $(CFLAGS))"' $(INC) \
	    bench/kernels.c bench/sleef_copy.c -o $@ $(LDFLAGS) -lsleef $(LDLIBS)

# The same with clang, to compare what the two auto-vectorisers made of the
# plain and autovec versions (make bench-kernels-clang; README: Reading the
# assembly).
$(B)/clang/bench_kernels: bench/kernels.c bench/plain_kernels.h bench/common.h $(HEADER)
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(CFLAGS) -DBK_CFLAGS='"$(strip $(CFLAGS))"' $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

TWO_COPIES_SRC := tests/two_copies_a.c tests/two_copies_b.c tests/two_copies_main.c
$(B)/two_copies: $(TWO_COPIES_SRC) $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $(TWO_COPIES_SRC) -o $@ $(LDFLAGS) $(LDLIBS)

run: $(B)/olmo_layer
	$(R)./$(B)/olmo_layer $(ARGS)

bench: $(BB)/bench $(BB)/bench_kernels $(B)/bench_decode
	$(R)./$(BB)/bench $(ARGS)
	$(R)./$(BB)/bench_kernels $(ARGS)
	$(R)./$(B)/bench_decode $(ARGS)

# The trade-off map (issue 6; README: The Goldilocks planner): every mode of
# bench/map.h on this machine, short, into $(DATA); make plots draws the PNGs
# from such a folder (bench/plan_run.sh makes one on a bigger machine) into
# $(PLOTS) with gnuplot.
DATA  ?= build/plan
PLOTS ?= $(DATA)
PLOT_TITLE ?= $(shell lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(shell nproc) threads
plan-data: $(B)/bench $(B)/libsdpa_bench.so
	$(R)./$(B)/bench --map --out $(DATA) --json $(DATA)/bench.json $(ARGS)

plots:
	python3 bench/plots.py $(DATA) $(PLOTS) --title "$(PLOT_TITLE)"

# CI: the map's correctness parts, short (checks, parity across every path,
# dtype, int8 mode and KV storage, memory table); no timing is judged.
test-bench-map: $(B)/bench
	$(R)./$(B)/bench --parity --memory --quick --no-torch --threads 2

bench-decode: $(B)/bench_decode
	$(R)./$(B)/bench_decode $(ARGS)

bench-kscales: $(B)/bench_kscales
	$(R)./$(B)/bench_kscales $(ARGS)

bench-hugepages: $(B)/bench_hugepages
	$(R)./$(B)/bench_hugepages $(ARGS)

bench-kernels: $(BB)/bench_kernels
	$(R)./$(BB)/bench_kernels $(ARGS)

bench-kernels-clang:
	@command -v clang >/dev/null 2>&1 || { echo "bench-kernels-clang: clang is not installed"; exit 1; }
	@$(MAKE) --no-print-directory $(B)/clang/bench_kernels
	$(R)./$(B)/clang/bench_kernels $(ARGS)

# ---------------------------------------------------------------- tests
# Each step runs even when an earlier one failed; the failures are listed at
# the end and make exits non-zero.
# Cross builds leave out the sanitizer, valgrind, fuzz and soak steps: their
# runtimes (and the soak's RSS check) do not work
# under qemu's user-mode emulation; test-sleef (see there); and
# test-bf16-emu, which emulates the x86 AMX path's bf16 packing in plain C:
# nothing in it depends on the target, the x86 run covers it, and under
# qemu it cost 140 s of test-arm's longest job.
TEST_STEPS := $(strip test-unit test-clang $(if $(CROSS),,test-sleef test-bf16-emu) test-compile test-two-copies \
              test-simple test-decode $(if $(CROSS),,test-bench-map) check-asm \
              $(if $(CROSS),,test-sanitize test-tsan test-valgrind test-fuzz test-soak test-cuda))

test:
	@failed=""; times=""; \
	for s in $(TEST_STEPS); do \
	    echo "==> make $$s"; t0=$$(date +%s); \
	    $(MAKE) --no-print-directory $$s || failed="$$failed $$s"; \
	    times="$$times $$s $$(( $$(date +%s) - t0 ))s"; \
	done; \
	echo "make test: times:$$times"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: all steps passed ($(TEST_STEPS))"

# TEST_ARGS="mask" runs only the groups whose name contains it.
# The suite once per code path this build and CPU can run (scalar, avx2;
# scalar, neon), each forced through SDPA_PATH; TEST_PATHS="auto" (or a
# list of names) runs those instead of every path --paths prints.
# The paths run TEST_JOBS at a time (default 2: the suite is mostly one
# thread, and results do not depend on the threads around it), each into a
# log that is printed, in path order, when it ends; TEST_JOBS=1 runs them
# one after another as they print.
TEST_PATHS ?=
TEST_JOBS ?= 2
TU_BIN ?= $(B)/test_sdpa
TU_ARGS ?= $(TEST_ARGS)
test-unit: $(B)/test_sdpa
	@$(MAKE) --no-print-directory test-unit-bin TU_BIN=$(B)/test_sdpa TU_ARGS="$(TEST_ARGS)"
test-unit-bin:
	@set -e; paths="$(TEST_PATHS)"; [ -n "$$paths" ] || paths=$$($(R)./$(TU_BIN) --paths); \
	test -n "$$paths" || { echo "test-unit: $(R)./$(TU_BIN) --paths printed no path"; exit 1; }; \
	if [ "$(TEST_JOBS)" -le 1 ] || [ "$$(echo $$paths | wc -w)" -le 1 ]; then \
	    for p in $$paths; do \
	        echo "SDPA_PATH=$$p $(R)./$(TU_BIN) $(TU_ARGS)"; \
	        SDPA_PATH=$$p $(R)./$(TU_BIN) $(TU_ARGS); \
	    done; \
	    exit 0; \
	fi; \
	d=$$(mktemp -d); n=0; \
	for p in $$paths; do \
	    { if SDPA_PATH=$$p $(R)./$(TU_BIN) $(TU_ARGS) > $$d/$$p.log 2>&1; then echo 0; else echo 1; fi > $$d/$$p.rc; } & \
	    n=$$((n + 1)); if [ $$n -ge $(TEST_JOBS) ]; then wait; n=0; fi; \
	done; \
	wait; rc=0; \
	for p in $$paths; do \
	    echo "SDPA_PATH=$$p $(R)./$(TU_BIN) $(TU_ARGS)"; \
	    cat $$d/$$p.log; \
	    [ "$$(cat $$d/$$p.rc 2>/dev/null)" = 0 ] || { echo "test-unit: SDPA_PATH=$$p FAILED"; rc=1; }; \
	done; \
	rm -rf $$d; exit $$rc

# make test-clang: the suite built with clang (same flags; --target=<triple>
# when cross-building, clang reusing the cross gcc's libraries) and run as
# test-unit runs it: Apple silicon and many Linux users compile with clang,
# and clang and gcc differ where it shows in the last bits (clang 14 fused
# a * b + c where FMA was enabled, until the header turned contraction off).
# Under emulation the groups no kernel or compiler choice reaches
# (PATHFREE_GROUPS) and those that check option semantics over the same
# kernels (SEMANTIC_GROUPS, below) are left out. Skipped without clang; a failure when
# CI=true.
CLANG_T := clang$(if $(CROSS), --target=$(patsubst %-,%,$(CROSS)))
$(B)/clang/test_sdpa: tests/test_sdpa.c tests/test_kv.h tests/test_plan.h $(HEADER)
	@mkdir -p $(@D)
	$(CLANG_T) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)
CLANG_TEST_ARGS = $(TEST_ARGS)$(if $(CROSS),$(foreach g,$(PATHFREE_GROUPS) $(SEMANTIC_GROUPS), --skip $(g)))
test-clang:
	@if ! command -v clang >/dev/null 2>&1; then \
	    echo "test-clang: SKIPPED: clang is not installed (Debian: apt-get install clang)"; \
	    if [ "$${CI:-}" = true ]; then echo "test-clang: FAILED: CI=true, where it may not be skipped"; exit 1; fi; \
	    exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(B)/clang/test_sdpa && \
	$(MAKE) --no-print-directory test-unit-bin TU_BIN=$(B)/clang/test_sdpa TU_ARGS="$(CLANG_TEST_ARGS)"

test-bf16-emu: $(B)/test_sdpa_bf16emu
	$(R)./$(B)/test_sdpa_bf16emu $(TEST_ARGS)

test-two-copies: $(B)/two_copies
	$(R)./$(B)/two_copies

# examples/decode.c, short: every storage type prefills and decodes.
test-decode: $(B)/decode
	$(R)./$(B)/decode 64 16

# The README shows examples/simple.c verbatim; this keeps the two the same.
test-simple: $(B)/simple
	$(R)./$(B)/simple
	@sed -n '/^<!-- begin examples\/simple.c/,/^<!-- end examples\/simple.c/p' README.md \
	    | sed '1,2d;$$d' | sed '$$d' | diff -u examples/simple.c - \
	    && echo "README.md shows examples/simple.c as it is: ok" \
	    || { echo "README.md's copy of examples/simple.c differs (diff above)"; exit 1; }

# Compile tests: the header with its implementation as C99/C11 and C++11/C++17,
# under every compiler that is installed, warning-free with -Werror; each
# binary also runs a small smoke test. gcc and g++ are required, clang and
# clang++ are used when present (falls back to $(CC)/$(CXX) if gcc is absent).
# Cross builds use $(CC) and $(CXX), and clang/clang++ --target=<triple>
# when installed (clang reuses the cross gcc's libraries); C++ gets
# -pedantic there too. CT_CMD_<name> is the command for a compiler whose name
# is not its command line.
have = $(shell command -v $(1) 2>/dev/null)
ifeq ($(CROSS),)
CT_CCS  := $(or $(foreach c,gcc clang,$(if $(call have,$(c)),$(c))),$(CC))
CT_CXXS := $(or $(foreach c,g++ clang++,$(if $(call have,$(c)),$(c))),$(CXX))
CT_CXXWARN := -O2 -Wall -Wextra -Werror
else
CT_CCS  := $(CC) $(if $(call have,clang),clang)
CT_CXXS := $(CXX) $(if $(call have,clang++),clang++)
CT_CMD_clang   = clang --target=$(patsubst %-,%,$(CROSS))
CT_CMD_clang++ = clang++ --target=$(patsubst %-,%,$(CROSS))
CT_CXXWARN := -O2 -pedantic -Wall -Wextra -Werror
endif
ct_cmd = $(or $(CT_CMD_$(1)),$(1))
CT_CWARN   := -O2 -pedantic -Wall -Wextra -Werror
CT_BINS :=

# $(1) compiler, $(2) variant name, $(3) flags
define ct_c
$(B)/compile/$(1)-$(2): tests/compile_c99.c $(HEADER) | $(B)/compile
	$$(call ct_cmd,$(1)) $(CT_CWARN) $(3) $(INC) $$< -o $$@ $(LDFLAGS) $(LDLIBS)
CT_BINS += $(B)/compile/$(1)-$(2)
endef
define ct_cxx
$(B)/compile/$(1)-$(2): tests/compile_cxx.cpp $(HEADER) | $(B)/compile
	$$(call ct_cmd,$(1)) $(CT_CXXWARN) $(3) $(INC) $$< -o $$@ $(LDFLAGS) $(LDLIBS)
CT_BINS += $(B)/compile/$(1)-$(2)
endef

$(foreach c,$(CT_CCS),\
  $(eval $(call ct_c,$(c),c99,-std=c99))\
  $(eval $(call ct_c,$(c),c11,-std=c11))\
  $(eval $(call ct_c,$(c),c99-no-threads,-std=c99 -DSDPA_NO_THREADS))\
  $(eval $(call ct_c,$(c),c99-static,-std=c99 -DSDPA_STATIC))\
  $(eval $(call ct_c,$(c),c99-no-simd,-std=c99 -DSDPA_NO_SIMD))\
  $(eval $(call ct_c,$(c),c99-no-avx512,-std=c99 -DSDPA_NO_AVX512))\
  $(eval $(call ct_c,$(c),c99-system-first,-std=c99 -DCOMPILE_TEST_SYSTEM_FIRST)))
$(foreach c,$(CT_CXXS),\
  $(eval $(call ct_cxx,$(c),cxx11,-std=c++11))\
  $(eval $(call ct_cxx,$(c),cxx17,-std=c++17))\
  $(eval $(call ct_cxx,$(c),cxx11-no-threads,-std=c++11 -DSDPA_NO_THREADS))\
  $(eval $(call ct_cxx,$(c),cxx17-static,-std=c++17 -DSDPA_STATIC))\
  $(eval $(call ct_cxx,$(c),cxx17-no-avx2,-std=c++17 -DSDPA_NO_AVX2))\
  $(eval $(call ct_cxx,$(c),cxx17-no-amx,-std=c++17 -DSDPA_NO_AMX)))

# The README's example, held to the same standard.
define ct_example
$(B)/compile/$(1)-simple: examples/simple.c $(HEADER) | $(B)/compile
	$$(call ct_cmd,$(1)) $(CT_CWARN) -std=c99 $(INC) $$< -o $$@ $(LDFLAGS) $(LDLIBS)
CT_BINS += $(B)/compile/$(1)-simple
endef
$(foreach c,$(CT_CCS),$(eval $(call ct_example,$(c))))

# AArch64 builds: the header without its NEON path, as SDPA_NO_NEON gives it.
ifneq ($(filter aarch64%,$(CROSS_ARCH)),)
$(foreach c,$(CT_CCS),$(eval $(call ct_c,$(c),c99-no-neon,-std=c99 -DSDPA_NO_NEON)))
endif

# gcc's OpenMP build of the threading layer (the header switches to OpenMP
# when _OPENMP is defined). Linked -static (cross builds), libgomp makes ld
# warn that its dlopen needs the same glibc at run time: expected, harmless
# (libgomp only dlopens offload plugins, which this never uses).
ifneq ($(filter gcc $(CROSS)gcc,$(CT_CCS)),)
$(eval $(call ct_c,$(filter gcc $(CROSS)gcc,$(CT_CCS)),c99-openmp,-std=c99 -fopenmp))
endif

# A C++ file that only includes the declarations, linked with the
# implementation compiled as C: checks the extern "C" linkage.
CT_CC1  := $(firstword $(CT_CCS))
CT_CXX1 := $(firstword $(CT_CXXS))
$(B)/compile/impl-c.o: tests/compile_c99.c $(HEADER) | $(B)/compile
	$(CT_CC1) $(CT_CWARN) -std=c99 -DCOMPILE_TEST_NO_MAIN $(INC) -c $< -o $@
$(B)/compile/decl-cxx.o: tests/compile_cxx.cpp $(HEADER) | $(B)/compile
	$(CT_CXX1) $(CT_CXXWARN) -std=c++11 -DCOMPILE_TEST_DECL_ONLY $(INC) -c $< -o $@
$(B)/compile/cxx-links-c: $(B)/compile/decl-cxx.o $(B)/compile/impl-c.o
	$(CT_CXX1) $^ -o $@ $(LDFLAGS) $(LDLIBS)
CT_BINS += $(B)/compile/cxx-links-c

compile-tests: $(CT_BINS)

test-compile: $(CT_BINS)
	@fail=0; for t in $(CT_BINS); do \
	    if out=$$($(R)./$$t 2>&1); then echo "compile test $$t: ok"; \
	    else echo "$$out"; echo "compile test $$t: FAILED"; fail=1; fi; \
	done; exit $$fail

# SDPA_USE_SLEEF: the suite with SLEEF's vector exp, once per path as in
# test-unit (its exp tests then hold the SIMD kernels to SLEEF's 1 ulp and to
# SLEEF's own bits), and the header compiled with it by each compiler, also
# with -mavx2 and -mavx512* (sleef.h declares its x86 functions only when
# the flags enable their ISA; the header declares them otherwise). The
# -m builds are linked, not run (this CPU may lack the ISA).
# Without sleef.h and libsleef: skipped, or a failure under CI=true unless
# SDPA_CI_NO_SLEEF is set (.ci/run sets it where apt has no libsleef-dev).
# Not in cross builds: they link statically, and Debian's libsleef-dev has
# no static library (nor is an arm64 sleef.h installed for the cross gcc).
SLEEF_CT_BINS :=
SLEEF_CT_RUN  :=
SLEEF_AVX2    := -mavx2 -mfma -mf16c
SLEEF_AVX512  := $(SLEEF_AVX2) -mavx512f -mavx512bw -mavx512vl -mavx512dq
# $(1) compiler, $(2) variant name, $(3) source, $(4) warnings, $(5) flags, $(6) run: y or empty
define ct_sleef
$(B)/compile-sleef/$(1)-$(2): $(3) $(HEADER)
	@mkdir -p $$(@D)
	$$(call ct_cmd,$(1)) $(4) -DSDPA_USE_SLEEF $(5) $(INC) $$< -o $$@ $(LDFLAGS) -lsleef $(LDLIBS)
SLEEF_CT_BINS += $(B)/compile-sleef/$(1)-$(2)
SLEEF_CT_RUN += $(if $(6),$(B)/compile-sleef/$(1)-$(2))
endef
$(foreach c,$(CT_CCS),\
  $(eval $(call ct_sleef,$(c),c99,tests/compile_c99.c,$(CT_CWARN),-std=c99,y))\
  $(eval $(call ct_sleef,$(c),c99-static,tests/compile_c99.c,$(CT_CWARN),-std=c99 -DSDPA_STATIC,y))\
  $(eval $(call ct_sleef,$(c),c99-no-avx512,tests/compile_c99.c,$(CT_CWARN),-std=c99 -DSDPA_NO_AVX512,y))\
  $(eval $(call ct_sleef,$(c),c99-no-simd,tests/compile_c99.c,$(CT_CWARN),-std=c99 -DSDPA_NO_SIMD,y))\
  $(eval $(call ct_sleef,$(c),c99-mavx2,tests/compile_c99.c,$(CT_CWARN),-std=c99 $(SLEEF_AVX2),))\
  $(eval $(call ct_sleef,$(c),c99-mavx512,tests/compile_c99.c,$(CT_CWARN),-std=c99 $(SLEEF_AVX512),)))
$(foreach c,$(CT_CXXS),\
  $(eval $(call ct_sleef,$(c),cxx11,tests/compile_cxx.cpp,$(CT_CXXWARN),-std=c++11,y))\
  $(eval $(call ct_sleef,$(c),cxx17-mavx512,tests/compile_cxx.cpp,$(CT_CXXWARN),-std=c++17 $(SLEEF_AVX512),)))

sleef-bins: $(B)/test_sdpa_sleef $(SLEEF_CT_BINS)

$(B)/test_sdpa_sleef: tests/test_sdpa.c tests/test_kv.h tests/test_plan.h $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DSDPA_USE_SLEEF $(INC) $< -o $@ $(LDFLAGS) -lsleef $(LDLIBS)

# The suite on the SIMD paths only (TEST_PATHS= picks others): SLEEF replaces
# their vector exp; the scalar path has none and is the same code with or
# without it (make test-unit runs it).
test-sleef:
	@if [ -n "$(CROSS)" ]; then \
	    echo "test-sleef: skipped: SLEEF is left out of cross builds (static links; no static libsleef)"; exit 0; \
	fi; \
	mkdir -p $(B); \
	printf '#include <sleef.h>\nint main(void) { return Sleef_expf_u10(0.0f) != 1.0f; }\n' > $(B)/sleef_probe.c; \
	if ! { $(CC) $(B)/sleef_probe.c -o $(B)/sleef_probe -lsleef -lm >/dev/null 2>&1 && ./$(B)/sleef_probe; }; then \
	    echo "test-sleef: skipped: libsleef-dev not installed (Debian: apt-get install libsleef-dev)"; \
	    if [ "$${CI:-}" = true ] && [ -z "$${SDPA_CI_NO_SLEEF:-}" ]; then \
	        echo "test-sleef: FAILED: CI=true, where SLEEF may not be skipped (SDPA_CI_NO_SLEEF=1 allows it)"; exit 1; \
	    fi; \
	    exit 0; \
	fi; \
	$(MAKE) --no-print-directory sleef-bins || exit 1; \
	paths="$(TEST_PATHS)"; [ -n "$$paths" ] || paths=$$(./$(B)/test_sdpa_sleef --paths | grep -v '^scalar$$'); \
	for p in $$paths; do \
	    echo "SDPA_PATH=$$p ./$(B)/test_sdpa_sleef $(TEST_ARGS)"; \
	    SDPA_PATH=$$p ./$(B)/test_sdpa_sleef $(TEST_ARGS) || exit 1; \
	done; \
	for t in $(SLEEF_CT_RUN); do \
	    if out=$$(./$$t 2>&1); then echo "compile test $$t (SDPA_USE_SLEEF): ok"; \
	    else echo "$$out"; echo "compile test $$t (SDPA_USE_SLEEF): FAILED"; exit 1; fi; \
	done; \
	echo "compile tests built, not run (ISA flags): $(filter-out $(SLEEF_CT_RUN),$(SLEEF_CT_BINS))"

# ASan+UBSan build of the suite, run with --quick (and of the two-copies and
# smoke tests); float-cast-overflow named, as gcc's "undefined" leaves it out
# (a NaN cast to an integer in the KV cache's rounding was found with it). gcc first, then clang, then $(CC): the first whose sanitizer
# runtime links and runs is used. Without one the step is skipped with a
# message, except under CI=true where it fails. The suite runs in full on
# the default path; the reruns on each other path leave out the groups named
# in SAN_SKIP (those that depend on no kernel, PATHFREE_GROUPS below), as
# test-arm does; SAN_SKIP= keeps them. The three programs build in one make
# (its -j applies), and the suite's runs go TEST_JOBS at a time, as in
# test-unit, each log printed whole in order.
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer \
             -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
SAN_ENV   := ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1 \
             UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
SAN_CC    ?= gcc
# Test groups whose code paths do not depend on the SIMD path or the CPU:
# error codes, threads and pools, hooks, allocation failures, memory
# accounting, workspace, the planner (names as test_sdpa --skip takes them).
PATHFREE_GROUPS := errors thread hook concurrent allocat memory workspace planner
# Groups that check option semantics (tile shapes, causal, varlen, large
# logits, ALiBi, masks, softcap, score_mod, windows, the decode's heads per
# task) on top of kernels that the other groups drive as well: their code is
# the same C on every path and model, so the native runs (gcc and clang, every
# path) and the ARM run on max with gcc cover it. Under emulation the other
# ARM runs leave them out (about 40% of an ARM model's time).
SEMANTIC_GROUPS := tile causal seqlens logits alibi BOOL softcap score_mod additive sliding task
SAN_SKIP  ?= $(PATHFREE_GROUPS)
SAN_BINS  := $(B)/asan/test_sdpa $(B)/asan/two_copies $(B)/asan/smoke

$(B)/asan/test_sdpa: tests/test_sdpa.c tests/test_kv.h tests/test_plan.h $(HEADER) | $(B)/asan
	$(SAN_CC) -std=c99 -Wall -Wextra $(SAN_FLAGS) $(INC) $< -o $@ $(LDLIBS)
$(B)/asan/two_copies: $(TWO_COPIES_SRC) $(HEADER) | $(B)/asan
	$(SAN_CC) -std=c99 -Wall -Wextra $(SAN_FLAGS) $(INC) $(TWO_COPIES_SRC) -o $@ $(LDLIBS)
$(B)/asan/smoke: tests/compile_c99.c tests/compile_smoke.h $(HEADER) | $(B)/asan
	$(SAN_CC) -std=c99 -Wall -Wextra $(SAN_FLAGS) $(INC) $< -o $@ $(LDLIBS)

# $(call pick_cc,candidates,flags,dir,outputs): sets shell variable cc to the
# first candidate that builds and runs an empty program with those flags, and
# removes the outputs when the choice differs from the last run's.
pick_cc = mkdir -p $(3); cc=""; for c in $(1); do \
	    command -v $$c >/dev/null 2>&1 || continue; \
	    printf 'int main(void){return 0;}\n' > $(3)/probe.c; \
	    if $$c $(2) $(3)/probe.c -o $(3)/probe >/dev/null 2>&1 && ./$(3)/probe >/dev/null 2>&1; \
	    then cc=$$c; break; fi; \
	done; \
	if [ -n "$$cc" ] && [ "$$cc" != "$$(cat $(3)/cc 2>/dev/null)" ]; then \
	    rm -f $(4); echo "$$cc" > $(3)/cc; fi

test-sanitize: | $(B)/asan
	@$(call pick_cc,gcc clang $(CC),$(SAN_FLAGS),$(B)/asan,$(SAN_BINS)); \
	if [ -z "$$cc" ]; then \
	    echo "test-sanitize: no compiler with a working ASan+UBSan runtime (Debian: apt-get install gcc)"; \
	    if [ "$${CI:-}" = true ]; then exit 1; fi; \
	    echo "test-sanitize: SKIPPED"; exit 0; \
	fi; \
	$(MAKE) --no-print-directory SAN_CC=$$cc $(SAN_BINS) || exit 1; \
	for t in two_copies smoke; do \
	    echo "$(SAN_ENV) ./$(B)/asan/$$t"; \
	    $(SAN_ENV) ./$(B)/asan/$$t || exit 1; \
	done; \
	skip=""; for g in $(SAN_SKIP); do skip="$$skip --skip $$g"; done; \
	last=$$(./$(B)/asan/test_sdpa --paths | tail -n1); \
	runs="auto"; for p in $$(./$(B)/asan/test_sdpa --paths); do [ "$$p" = "$$last" ] || runs="$$runs $$p"; done; \
	d=$$(mktemp -d); n=0; \
	for p in $$runs; do \
	    a="--quick"; [ "$$p" = auto ] || a="--quick$$skip"; \
	    echo "SDPA_PATH=$$p $(SAN_ENV) ./$(B)/asan/test_sdpa $$a" > $$d/$$p.log; \
	    { if SDPA_PATH=$$p $(SAN_ENV) ./$(B)/asan/test_sdpa $$a >> $$d/$$p.log 2>&1; then echo 0; else echo 1; fi > $$d/$$p.rc; } & \
	    n=$$((n + 1)); if [ $$n -ge $(TEST_JOBS) ]; then wait; n=0; fi; \
	done; \
	wait; rc=0; \
	for p in $$runs; do \
	    cat $$d/$$p.log; \
	    [ "$$(cat $$d/$$p.rc 2>/dev/null)" = 0 ] || { echo "test-sanitize: SDPA_PATH=$$p FAILED"; rc=1; }; \
	done; \
	rm -rf $$d; exit $$rc

# ThreadSanitizer over the programs that call the library from several
# threads at once. Skipped (not failed) where no TSan runtime works: TSan
# depends on the kernel's address-space layout as much as on the compiler.
TSAN_FLAGS := -O1 -g -fsanitize=thread
TSAN_CC  ?= gcc
TSAN_CXX ?= g++
TSAN_BINS := $(B)/tsan/two_copies $(B)/tsan/compile_cxx $(B)/tsan/test_sdpa
# The suite's threaded groups: sdpa_pool itself (every task once, three
# callers on one pool, pinned pools), sdpa_attention from 4 threads at once, an
# application thread pool through parallel_for, and the KV cache from 4
# threads (each on its own cache, then all reading one shared cache).
TSAN_GROUPS := "thread pool" "concurrent calls" "parallel_for hook" "kv cache threads"
$(B)/tsan/test_sdpa: tests/test_sdpa.c tests/test_kv.h $(HEADER) | $(B)/tsan
	$(TSAN_CC) -std=c99 -Wall -Wextra $(TSAN_FLAGS) $(INC) $< -o $@ $(LDLIBS)
$(B)/tsan/two_copies: $(TWO_COPIES_SRC) $(HEADER) | $(B)/tsan
	$(TSAN_CC) -std=c99 -Wall -Wextra $(TSAN_FLAGS) $(INC) $(TWO_COPIES_SRC) -o $@ $(LDLIBS)
$(B)/tsan/compile_cxx: tests/compile_cxx.cpp tests/compile_smoke.h $(HEADER) | $(B)/tsan
	$(TSAN_CXX) -std=c++11 -Wall -Wextra $(TSAN_FLAGS) $(INC) $< -o $@ $(LDLIBS)

test-tsan: | $(B)/tsan
	@$(call pick_cc,gcc clang,$(TSAN_FLAGS),$(B)/tsan,$(TSAN_BINS)); \
	if [ -z "$$cc" ]; then echo "test-tsan: no working ThreadSanitizer here: SKIPPED"; exit 0; fi; \
	if [ "$$cc" = clang ]; then cxx=clang++; else cxx=g++; fi; \
	$(MAKE) --no-print-directory TSAN_CC=$$cc TSAN_CXX=$$cxx $(TSAN_BINS) && \
	echo "./$(B)/tsan/two_copies" && TSAN_OPTIONS=halt_on_error=1 ./$(B)/tsan/two_copies && \
	echo "./$(B)/tsan/compile_cxx" && TSAN_OPTIONS=halt_on_error=1 ./$(B)/tsan/compile_cxx && \
	echo "./$(B)/tsan/test_sdpa --quick $(TSAN_GROUPS)" && \
	TSAN_OPTIONS=halt_on_error=1 ./$(B)/tsan/test_sdpa --quick $(TSAN_GROUPS)

# ---------------------------------------------------------------- valgrind
# memcheck over the suite on the paths valgrind can run (it has no AVX-512:
# scalar and avx2 on x86, scalar and neon on AArch64; a path is forced with
# SDPA_PATH, both at once on the two cores), with --quick and the groups that
# reach the most code per second: argument errors, strided layouts, empty
# sizes, NaN/Inf, fully masked rows, allocation failures, the KV cache
# operations, the cache's kernels (their inputs allocated exactly), the int8
# P.V kernels and the int8 helpers (about 1 s natively,
# 30x that here).
# Any memcheck error or definite/indirect leak fails (--error-exitcode).
# Skipped without valgrind, except under CI=true.
VALGRIND   ?= valgrind
VG_FLAGS   := -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
              --show-leak-kinds=definite,indirect
VG_GROUPS  := errors "strided layouts" "empty sizes" NaN/Inf "fully masked" "allocation failures" \
              "kv cache operations" "kv cache pages" "kv cache kernels" "P.V kernels" "int8 quantize"
$(B)/valgrind/test_sdpa: tests/test_sdpa.c tests/test_kv.h $(HEADER)
	@mkdir -p $(@D)
	$(CC) -std=c99 -O1 -g -Wall -Wextra $(INC) $< -o $@ $(LDLIBS)

test-valgrind:
	@if ! command -v $(VALGRIND) >/dev/null 2>&1; then \
	    echo "test-valgrind: SKIPPED: valgrind not installed (Debian: apt-get install valgrind)"; \
	    if [ "$${CI:-}" = true ]; then echo "test-valgrind: FAILED: CI=true, where it may not be skipped"; exit 1; fi; \
	    exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(B)/valgrind/test_sdpa || exit 1; \
	paths=$$(./$(B)/valgrind/test_sdpa --paths | grep -v 'avx512\|amx'); pids=""; \
	for p in $$paths; do \
	    echo "SDPA_PATH=$$p SDPA_TEST_QUICK=1 $(VALGRIND) $(VG_FLAGS) ./$(B)/valgrind/test_sdpa $(VG_GROUPS) > $(B)/valgrind/$$p.log"; \
	    SDPA_PATH=$$p SDPA_TEST_QUICK=1 $(VALGRIND) $(VG_FLAGS) ./$(B)/valgrind/test_sdpa $(VG_GROUPS) \
	        > $(B)/valgrind/$$p.log 2>&1 & pids="$$pids $$!"; \
	done; \
	fail=0; for pid in $$pids; do wait $$pid || fail=1; done; \
	for p in $$paths; do echo "--- valgrind, path $$p:"; grep -v '^\[ OK \]' $(B)/valgrind/$$p.log; done; \
	if [ $$fail -ne 0 ]; then echo "test-valgrind: FAILED (logs: $(B)/valgrind/*.log)"; exit 1; fi; \
	echo "test-valgrind: memcheck clean on paths:" $$paths

# ---------------------------------------------------------------- soak
# tests/soak.c: a randomized workload (sdpa_attention, the KV cache in a
# decode loop with evictions, int8 round trips) for SOAK_TIME seconds, that
# fails when the allocator is not given everything back, the caches outgrow
# their bounded tokens, or the resident set grows after the warm-up.
# make soak: 180 s; make test-soak (part of make test): SOAK_CI_TIME, 20 s.
SOAK_TIME    ?= 180
SOAK_CI_TIME ?= 20
$(B)/soak: tests/soak.c $(HEADER) | $(B)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) $< -o $@ $(LDFLAGS) $(LDLIBS)

soak: $(B)/soak
	$(R)./$(B)/soak $(SOAK_TIME)

test-soak: $(B)/soak
	$(R)./$(B)/soak $(SOAK_CI_TIME)

# ---------------------------------------------------------------- fuzzing
# libFuzzer harnesses (tests/fuzz/): sdpa_attention against a float64
# reference, KV cache operation sequences against a model, int8 quantize /
# dequantize round trips; each with a seed corpus in tests/fuzz/corpus/ that
# holds the inputs of the bugs they found. Built with clang's
# -fsanitize=fuzzer,address,undefined (Debian: clang and libclang-rt-14-dev);
# comparison tracing is left out (-fno-sanitize-coverage=trace-cmp): it cost
# 5x the executions in the library's inner loops.
#   make fuzz         each harness FUZZ_TIME seconds (default 300), in turn
#   make test-fuzz    (part of make test) the seeds replayed, then the three
#                     at once for FUZZ_CI_TIME seconds (default 60)
# A failing input lands in $(B)/fuzz/crashes/; rerun it with
# ./$(B)/fuzz/fuzz_NAME FILE (FUZZ_VERBOSE=1 prints the decoded call).
FUZZ_CC      ?= clang
comma := ,
FUZZ_FLAGS   := -std=c99 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-coverage=trace-cmp \
                -fno-sanitize-recover=all -Wall -Wextra
FUZZ_NAMES   := attention kv_cache quant
FUZZ_BINS    := $(FUZZ_NAMES:%=$(B)/fuzz/fuzz_%)
FUZZ_TIME    ?= 300
FUZZ_CI_TIME ?= 60

# The library is compiled once (fuzz_lib.o), with coverage but without
# libFuzzer's main, and linked into each harness.
$(B)/fuzz/fuzz_lib.o: tests/fuzz/fuzz_lib.c $(HEADER)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(subst fuzzer$(comma),fuzzer-no-link$(comma),$(FUZZ_FLAGS)) $(INC) -c $< -o $@
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(B)/fuzz/fuzz_lib.o $(HEADER)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(INC) $< $(B)/fuzz/fuzz_lib.o -o $@ -lm -pthread

# Sets shell variable ok when $(FUZZ_CC) links a libFuzzer program.
fuzz_probe = mkdir -p $(B)/fuzz; ok=""; \
	printf '\#include <stddef.h>\n\#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
	    > $(B)/fuzz/probe.c; \
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $(B)/fuzz/probe.c -o $(B)/fuzz/probe >/dev/null 2>&1 && ok=1

fuzz-build:
	@$(call fuzz_probe); \
	if [ -z "$$ok" ]; then echo "fuzz-build: $(FUZZ_CC) cannot link -fsanitize=fuzzer (Debian: apt-get install clang libclang-rt-14-dev)"; exit 1; fi; \
	$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	tests/fuzz/run.sh $(B)/fuzz $(FUZZ_TIME) serial $(FUZZ_NAMES)

test-fuzz:
	@$(call fuzz_probe); \
	if [ -z "$$ok" ]; then \
	    echo "test-fuzz: SKIPPED: $(FUZZ_CC) cannot link -fsanitize=fuzzer (Debian: apt-get install clang libclang-rt-14-dev)"; \
	    if [ "$${CI:-}" = true ]; then echo "test-fuzz: FAILED: CI=true, where the fuzzers may not be skipped"; exit 1; fi; \
	    exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(FUZZ_BINS) && tests/fuzz/run.sh $(B)/fuzz $(FUZZ_CI_TIME) parallel $(FUZZ_NAMES)

# ---------------------------------------------------------------- ARM
# make test-arm: cross-build everything for AArch64 into build/aarch64/
# (static, see CROSS above), then run it under qemu-aarch64 on several CPU
# models. The runs are jobs that two workers take in turn (two cores; more at
# once slows the threaded tests under emulation); each job's output goes to
# build/aarch64/test-arm-<model>-<path>.log, printed when all are done.
# The models: max (every feature qemu knows), cortex-a76 (dotprod, fp16
# arithmetic: Pi 5, Graviton 2's N1 class) and cortex-a53 (plain ARMv8.0: no
# dotprod, no fp16 arithmetic).
# On the models in ARM_ALL_PATHS_CPUS (max) the cross build's whole
# `make test` runs with the suite on the path AUTO picks (neon): the suite,
# the suite built by clang (test-clang, without PATHFREE_GROUPS), the
# compile tests (C99/C11, C++11/C++17, -pedantic -Werror, each running
# the smoke test), the two-copies test, examples/simple and examples/decode,
# check-asm; and a second job runs the suite on each other path (scalar).
# Besides the suite on neon none of that depends on the CPU model, so on the
# other models only the suite runs, once, on the path AUTO picks (neon),
# which still forces every path through a few float64-checked cases and
# checks the NEON kernels (dotprod or not, fp16 or not) against the scalar
# ones. Those runs, and the other paths' runs on max, leave out the groups
# named in ARM_SKIP (error codes, threads and pools, hooks, allocation
# failures, memory accounting, the planner: nothing there depends on the
# kernels or the CPU model; and the option-semantics groups,
# SEMANTIC_GROUPS: the same C over the same kernels; the full run on max
# covers both).
# Every model then runs examples/olmo_layer on a small shape (it checks
# itself against float64).
# Under emulation the suite runs ~20x slower than natively, hence --quick
# (~2-3 min per job on the 2-core Zen 3, ~9 for max's; ~10.5 min in all);
# ARM_TEST_ARGS= runs the full suite.
# ARM_CPUS="cortex-a72 neoverse-n1" picks other models,
# ARM_ALL_PATHS_CPUS="max cortex-a53" runs everything on more of them,
# ARM_SKIP= leaves nothing out.
# Without the cross compilers or qemu: SKIPPED, or a failure under CI=true.
ARM_CROSS     ?= aarch64-linux-gnu-
ARM_QEMU      ?= qemu-aarch64
ARM_CPUS      ?= max cortex-a76 cortex-a53
ARM_ALL_PATHS_CPUS ?= max
ARM_TEST_ARGS ?= --quick
ARM_SKIP      ?= $(PATHFREE_GROUPS) $(SEMANTIC_GROUPS)
ARM_B         := build/$(firstword $(subst -, ,$(ARM_CROSS)))
ARM_VARS      := CROSS=$(ARM_CROSS) QEMU=$(ARM_QEMU)

test-arm:
	@missing=""; \
	for t in $(ARM_CROSS)gcc $(ARM_CROSS)g++ $(ARM_QEMU); do \
	    command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "test-arm: SKIPPED: not installed:$$missing (Debian: apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user)"; \
	    if [ "$${CI:-}" = true ]; then echo "test-arm: FAILED: CI=true, where the AArch64 tests may not be skipped"; exit 1; fi; \
	    exit 0; \
	fi; \
	failed=""; t0=$$(date +%s); \
	echo "==> make CROSS=$(ARM_CROSS) all compile-tests"; \
	$(MAKE) --no-print-directory $(ARM_VARS) all compile-tests || failed="$$failed build"; \
	times="build $$(( $$(date +%s) - t0 ))s"; \
	if [ -z "$$failed" ]; then \
	    skip=""; for g in $(ARM_SKIP); do skip="$$skip --skip $$g"; done; \
	    one() { cpu=$$1; tp=$$2; t1=$$(date +%s); rc=0; \
	        if [ "$$3" = all ]; then steps=test; args="$(ARM_TEST_ARGS)"; \
	        else steps=test-unit; args="$(ARM_TEST_ARGS)$$skip"; fi; \
	        echo "==> make CROSS=$(ARM_CROSS) QEMU_CPU=$$cpu TEST_PATHS=$$tp TEST_ARGS='$$args' $$steps"; \
	        $(MAKE) --no-print-directory $(ARM_VARS) QEMU_CPU=$$cpu TEST_ARGS="$$args" \
	            TEST_PATHS="$$tp" $$steps || rc=1; \
	        if [ "$$tp" = auto ]; then \
	            echo "$(ARM_QEMU) -cpu $$cpu ./$(ARM_B)/olmo_layer --seq 256 --heads 4 --no-naive"; \
	            $(ARM_QEMU) -cpu $$cpu ./$(ARM_B)/olmo_layer --seq 256 --heads 4 --no-naive || rc=$$((rc + 2)); \
	        fi; \
	        echo "$$rc $$(( $$(date +%s) - t1 ))" > $(ARM_B)/test-arm-$$cpu-$$tp.rc; }; \
	    jobs=""; others=""; \
	    for cpu in $(ARM_CPUS); do \
	        case " $(ARM_ALL_PATHS_CPUS) " in \
	        *" $$cpu "*) jobs="$$jobs $$cpu:auto:all"; \
	            for p in $$($(ARM_QEMU) -cpu $$cpu ./$(ARM_B)/test_sdpa --paths | sed '$$d'); do \
	                others="$$others $$cpu:$$p:some"; done;; \
	        *) others="$$others $$cpu:auto:some";; \
	        esac; \
	    done; \
	    jobs="$$jobs$$others"; \
	    rm -rf $(ARM_B)/test-arm.claims $(ARM_B)/test-arm-*.rc; mkdir -p $(ARM_B)/test-arm.claims; \
	    worker() { for j in $$jobs; do \
	        mkdir $(ARM_B)/test-arm.claims/$$j 2>/dev/null || continue; \
	        set -- $$(echo $$j | tr : ' '); \
	        one $$1 $$2 $$3 > $(ARM_B)/test-arm-$$1-$$2.log 2>&1; done; }; \
	    worker & worker & wait; \
	    for j in $$jobs; do \
	        set -- $$(echo $$j | tr : ' '); \
	        echo "======== qemu-aarch64 -cpu $$1, path $$2 ($(ARM_B)/test-arm-$$1-$$2.log)"; \
	        cat $(ARM_B)/test-arm-$$1-$$2.log; \
	        read rc secs < $(ARM_B)/test-arm-$$1-$$2.rc || { rc=1; secs=?; }; \
	        case $$rc in 0) ;; 2) failed="$$failed $$1:olmo_layer";; 3) failed="$$failed $$1/$$2 $$1:olmo_layer";; \
	            *) failed="$$failed $$1/$$2";; esac; \
	        times="$$times, $$1/$$2 $${secs}s"; \
	    done; \
	fi; \
	echo "test-arm: times: $$times (two workers); total $$(( $$(date +%s) - t0 ))s"; \
	if [ -n "$$failed" ]; then echo "test-arm: FAILED:$$failed"; exit 1; fi; \
	echo "test-arm: all passed on $(ARM_CPUS)"

# ---------------------------------------------------------------- Highway
# The Highway backend (include/sdpa_hwy.h), optional: not in make all, make
# test or test-arm. Needs Highway's headers and libhwy (Debian: libhwy-dev;
# for test-hwy-arm also libhwy-dev:arm64, see .ci/run). Its implementation
# file, tests/hwy_impl.cc, is C++17 built without -march flags (Highway
# compiles each target with its own attributes); the tests and the bench
# are C99 linked with it and -lhwy, dynamically (Debian ships no libhwy.a).
#   make test-hwy      the suite (tests/test_hwy.c) on every Highway target
#                      this CPU runs, forced in turn, plus compile checks:
#                      the implementation warning-free (-Werror) under g++
#                      and clang++, the declarations as C99 and C++11
#   make test-hwy-arm  the suite cross-built for AArch64 and run under
#                      qemu-aarch64 at SVE vector lengths of 16, 32 and 64
#                      bytes, each run on the targets that length adds
#                      (HWY_ARM_RUNS), --quick with HWY_ARM_ARGS's groups
#   make bench-hwy     bench/hwy.c: Highway targets against sdpa.h's paths
# Without Highway: SKIPPED, or a failure under CI=true.
HWY_CXXFLAGS ?= -O2 -g -std=c++17 -Wall -Wextra -Werror
HWY_LIBS     ?= -lhwy
HB := $(B)/hwy

# test_hwy.c includes test_sdpa.c for its harness and groups; the groups it
# does not run are dead code there, where gcc's inliner warns about sdpa.h's
# int8 helpers (array bounds, loop bounds) as it does not in test_sdpa.
HWY_TEST_WNO := -Wno-unused-function -Wno-array-bounds -Wno-aggressive-loop-optimizations
$(HB)/hwy_impl.o: tests/hwy_impl.cc include/sdpa_hwy.h $(HEADER)
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) $(HWY_CXXFLAGS) $(INC) -c $< -o $@
$(HB)/test_hwy: tests/test_hwy.c tests/test_sdpa.c tests/test_kv.h include/sdpa_hwy.h $(HEADER) $(HB)/hwy_impl.o
	$(CC) $(CPPFLAGS) $(CFLAGS) $(HWY_TEST_WNO) $(INC) -c $< -o $@.o
	$(CXX) $@.o $(HB)/hwy_impl.o -o $@ $(HWY_LIBS) $(LDLIBS)
$(HB)/bench_hwy: bench/hwy.c bench/common.h include/sdpa_hwy.h $(HEADER) $(HB)/hwy_impl.o
	$(CC) $(CPPFLAGS) $(CFLAGS) $(INC) -c $< -o $@.o
	$(CXX) $@.o $(HB)/hwy_impl.o -o $@ $(HWY_LIBS) $(LDLIBS)

# Compile checks: the implementation under clang++ too with -Werror (the
# build above is $(CXX)'s, -Werror as well: Highway's headers are included,
# its 1.0.3 quirks show here first), and the declarations alone as C99 and
# C++11, -pedantic -Werror.
HWY_CT := $(HB)/ct-clang++.o $(HB)/ct-decl-c99.o $(HB)/ct-decl-cxx11.o
$(HB)/ct-clang++.o: tests/hwy_impl.cc include/sdpa_hwy.h $(HEADER)
	@mkdir -p $(@D)
	@c=$(patsubst ct-%.o,%,$(@F)); if ! command -v $$c >/dev/null 2>&1; then echo "$$c: not installed, skipped"; touch $@; \
	else echo "$$c -std=c++17 -O2 -Wall -Wextra -Werror -c $<"; $$c -std=c++17 -O2 -Wall -Wextra -Werror $(INC) -c $< -o $@; fi
$(HB)/ct-decl-c99.o: include/sdpa_hwy.h $(HEADER)
	@mkdir -p $(@D)
	$(CC) -std=c99 -pedantic -Wall -Wextra -Werror $(INC) -x c -c $< -o $@
$(HB)/ct-decl-cxx11.o: include/sdpa_hwy.h $(HEADER)
	@mkdir -p $(@D)
	$(CXX) -std=c++11 -pedantic -Wall -Wextra -Werror $(INC) -x c++ -c $< -o $@

# 0 when $(1) (a C++ compiler) finds Highway's headers
hwy_found = printf '\043include <hwy/highway.h>\n' | $(1) -std=c++17 -x c++ -E - >/dev/null 2>&1
hwy_skip = echo "$(1): SKIPPED: $(2)"; \
	if [ "$${CI:-}" = true ]; then echo "$(1): FAILED: CI=true, where the Highway tests may not be skipped"; exit 1; fi; exit 0

test-hwy:
	@$(call hwy_found,$(CXX)) || { $(call hwy_skip,test-hwy,no Highway headers for $(CXX) (Debian: apt-get install libhwy-dev)); }; \
	t0=$$(date +%s); \
	$(MAKE) --no-print-directory $(HB)/test_hwy $(HWY_CT) || exit 1; \
	echo "$(R)./$(HB)/test_hwy $(TEST_ARGS)"; $(R)./$(HB)/test_hwy $(TEST_ARGS) || exit 1; \
	echo "test-hwy: passed in $$(( $$(date +%s) - t0 ))s"

bench-hwy:
	@$(call hwy_found,$(CXX)) || { echo "bench-hwy: no Highway headers for $(CXX) (Debian: apt-get install libhwy-dev)"; exit 1; }; \
	$(MAKE) --no-print-directory $(HB)/bench_hwy && echo "$(R)./$(HB)/bench_hwy $(ARGS)" && $(R)./$(HB)/bench_hwy $(ARGS)

# AArch64: runs <vector length in bytes>:<targets, comma-separated>. Each
# length runs the targets whose code it changes: SVE2_128 exists only at 16,
# SVE_256 only at 32; SVE and SVE2 at every length; NEON once. qemu-aarch64
# runs the dynamic binary without -L: the arm64 loader and libraries come
# from Debian's multiarch packages (libhwy-dev:arm64 pulls them in); the
# cross toolchain's own libc under /usr/aarch64-linux-gnu is a different
# build, and mixing the two hangs pthread_create under qemu.
HWY_ARM_RUNS ?= 16:NEON,SVE2_128,SVE,SVE2 32:SVE_256,SVE,SVE2 64:SVE,SVE2
# Under qemu SVE runs ~50x slower than natively: each target gets its
# kernel tests (which cover every tail, dtype and vector length) and the
# cheaper attention groups (~10 s of CPU each; all groups: ~3 min per target).
HWY_ARM_ARGS ?= --quick hwy errors GQA strided alibi score_mod NaN/Inf fully empty
HWY_ARM_B    := $(ARM_B)/hwy

test-hwy-arm:
	@missing=""; \
	for t in $(ARM_CROSS)gcc $(ARM_CROSS)g++ $(ARM_QEMU); do \
	    command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; \
	done; \
	[ -z "$$missing" ] || { $(call hwy_skip,test-hwy-arm,not installed:$$missing); }; \
	$(call hwy_found,$(ARM_CROSS)g++) && [ -e /usr/lib/aarch64-linux-gnu/libhwy.so ] || \
	    { $(call hwy_skip,test-hwy-arm,no arm64 libhwy (Debian: dpkg --add-architecture arm64; apt-get install libhwy-dev:arm64)); }; \
	t0=$$(date +%s); \
	$(MAKE) --no-print-directory $(ARM_VARS) $(HWY_ARM_B)/test_hwy || exit 1; \
	failed=""; pids=""; \
	for run in $(HWY_ARM_RUNS); do \
	    vl=$${run%%:*}; tg=$$(echo "$${run#*:}" | tr , ' '); \
	    ( echo "SDPA_HWY_TARGETS=\"$$tg\" $(ARM_QEMU) -cpu max,sve-default-vector-length=$$vl ./$(HWY_ARM_B)/test_hwy $(HWY_ARM_ARGS)"; \
	      SDPA_HWY_TARGETS="$$tg" $(ARM_QEMU) -cpu max,sve-default-vector-length=$$vl ./$(HWY_ARM_B)/test_hwy $(HWY_ARM_ARGS); \
	      echo $$? > $(HWY_ARM_B)/vl$$vl.rc ) > $(HWY_ARM_B)/vl$$vl.log 2>&1 & \
	done; \
	wait; \
	for run in $(HWY_ARM_RUNS); do \
	    vl=$${run%%:*}; echo "======== vector length $$vl bytes ($(HWY_ARM_B)/vl$$vl.log)"; cat $(HWY_ARM_B)/vl$$vl.log; \
	    [ "$$(cat $(HWY_ARM_B)/vl$$vl.rc 2>/dev/null)" = 0 ] || failed="$$failed vl$$vl"; \
	done; \
	echo "test-hwy-arm: $$(( $$(date +%s) - t0 ))s (vector lengths in parallel)"; \
	if [ -n "$$failed" ]; then echo "test-hwy-arm: FAILED:$$failed"; exit 1; fi; \
	echo "test-hwy-arm: all passed ($(HWY_ARM_RUNS))"

# ---------------------------------------------------------------- install
# The header, a pkg-config file and CMake package files (the same layout as
# CMake's install; the files are arch-independent, hence share/).
# Paths under PREFIX are written relative to it (pkg-config's ${prefix}, the
# CMake files' own directory), so an installed tree can be moved.
empty :=
space := $(empty) $(empty)
PC_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
ifneq ($(filter $(PREFIX)/%,$(CMAKEDIR)),)
CM_UP := $(subst $(space),,$(foreach d,$(subst /, ,$(patsubst $(PREFIX)/%,%,$(CMAKEDIR))),../))
CM_INCLUDEDIR := $(patsubst $(PREFIX)/%,$${CMAKE_CURRENT_LIST_DIR}/$(CM_UP)%,$(INCLUDEDIR))
else
CM_INCLUDEDIR := $(INCLUDEDIR)
endif

# Generated files are written straight into the destination: they depend on
# PREFIX, which make cannot track as a prerequisite.
install:
	@test -n "$(VERSION)" || { echo "install: no SDPA_VERSION_STRING in $(HEADER)"; exit 1; }
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	install -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/sdpa.h
	sed -e 's|@SDPA_PC_PREFIX@|$(PREFIX)|g' \
	    -e 's|@SDPA_PC_INCLUDEDIR@|$(PC_INCLUDEDIR)|g' \
	    -e 's|@PROJECT_VERSION@|$(VERSION)|g' sdpa.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/sdpa.pc
	install -m 644 cmake/sdpaConfig.cmake $(DESTDIR)$(CMAKEDIR)/sdpaConfig.cmake
	sed -e 's|@PROJECT_VERSION@|$(VERSION)|g' cmake/sdpaConfigVersion.cmake.in \
	    > $(DESTDIR)$(CMAKEDIR)/sdpaConfigVersion.cmake
	sed -e 's|@SDPA_INCLUDEDIR@|$(CM_INCLUDEDIR)|g' cmake/sdpaTargets-make.cmake.in \
	    > $(DESTDIR)$(CMAKEDIR)/sdpaTargets.cmake
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/sdpa.pc $(DESTDIR)$(CMAKEDIR)/sdpaConfigVersion.cmake \
	    $(DESTDIR)$(CMAKEDIR)/sdpaTargets.cmake

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/sdpa.h $(DESTDIR)$(PKGCONFIGDIR)/sdpa.pc
	rm -f $(DESTDIR)$(CMAKEDIR)/sdpaConfig.cmake $(DESTDIR)$(CMAKEDIR)/sdpaConfigVersion.cmake \
	      $(DESTDIR)$(CMAKEDIR)/sdpaTargets.cmake $(DESTDIR)$(CMAKEDIR)/sdpaTargets-*.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null

# ---------------------------------------------------------------- cmake
# Configure, build and ctest the CMake project in build/cmake, install it to a
# scratch prefix, then build and run tests/cmake_consumer against it through
# find_package(sdpa) and through pkg-config; the same for `make install`.
CMAKE   ?= cmake
CTEST   ?= ctest
CTEST_ARGS ?=
CM      := $(B)/cmake
CM_ABS   = $(abspath $(CM))

check-cmake:
	rm -rf $(CM)
	$(CMAKE) -S . -B $(CM)/build -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_INSTALL_PREFIX=$(CM_ABS)/prefix -DSDPA_BUILD_EXAMPLES=ON -DSDPA_BUILD_BENCH=ON
	$(CMAKE) --build $(CM)/build -j 2
	cd $(CM)/build && $(CTEST) --output-on-failure $(CTEST_ARGS)
	$(CMAKE) --install $(CM)/build
	@echo "==> consumer: find_package(sdpa) from the CMake install"
	$(CMAKE) -S tests/cmake_consumer -B $(CM)/consumer -DCMAKE_PREFIX_PATH=$(CM_ABS)/prefix
	$(CMAKE) --build $(CM)/consumer
	./$(CM)/consumer/consumer
	@echo "==> consumer: pkg-config from the CMake install"
	PKG_CONFIG_PATH=$(CM_ABS)/prefix/share/pkgconfig pkg-config --cflags --libs sdpa
	$(CC) tests/cmake_consumer/main.c -o $(CM)/consumer-pc \
	    $$(PKG_CONFIG_PATH=$(CM_ABS)/prefix/share/pkgconfig pkg-config --cflags --libs sdpa)
	./$(CM)/consumer-pc
	@echo "==> consumer: find_package(sdpa) and pkg-config from make install DESTDIR=... PREFIX=/opt/sdpa"
	$(MAKE) --no-print-directory install DESTDIR=$(CM_ABS)/destdir PREFIX=/opt/sdpa
	$(CMAKE) -S tests/cmake_consumer -B $(CM)/consumer-make -DCMAKE_PREFIX_PATH=$(CM_ABS)/destdir/opt/sdpa
	$(CMAKE) --build $(CM)/consumer-make
	./$(CM)/consumer-make/consumer
	$(CC) tests/cmake_consumer/main.c -o $(CM)/consumer-make-pc \
	    $$(PKG_CONFIG_PATH=$(CM_ABS)/destdir/opt/sdpa/share/pkgconfig \
	       pkg-config --define-variable=prefix=$(CM_ABS)/destdir/opt/sdpa --cflags --libs sdpa)
	./$(CM)/consumer-make-pc
	$(MAKE) --no-print-directory uninstall DESTDIR=$(CM_ABS)/destdir PREFIX=/opt/sdpa
	@test -z "$$(find $(CM)/destdir -type f)" || { echo "uninstall left files:"; find $(CM)/destdir -type f; exit 1; }
	@echo "==> consumer: add_subdirectory(sdpa source tree)"
	$(CMAKE) -S tests/cmake_consumer -B $(CM)/consumer-subdir -DSDPA_SOURCE_DIR=$(CURDIR)
	$(CMAKE) --build $(CM)/consumer-subdir
	./$(CM)/consumer-subdir/consumer
	@echo "check-cmake: all passed"

clean:
	rm -rf $(B)

# ---------------------------------------------------------------- CUDA
# make test-cuda: include/sdpa_cuda.h compiled by nvcc for sm_80 and sm_90
# (tests/cuda/test_cuda.cu, the implementation included; the two archs in
# parallel), then its host-side checks. Where a GPU answers (nvidia-smi -L) the
# full build runs every device check too; elsewhere (CI) the build defines
# SDPA_CUDA_FEW_KERNELS: every kernel template compiled at one parameter set
# (not the ~50 instantiations), no launches, and the device checks print
# "skipped". Without nvcc the step prints a skip line and passes.
# make bench-cuda (on a GPU machine): build, tests, compute-sanitizer, bench table.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
NVCC_ARCHS ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a
# Measured on the 2-core dev machine: the check build 18-19 s wall (36-44 s when it was loaded), the
# full build 114 s (cicc and ptxas about 60 s each per arch there).
NVCC_TEST_FLAGS ?=
.PHONY: test-cuda bench-cuda
$(B)/cuda:
	@mkdir -p $@
$(B)/cuda/cpu_impl.o: tests/cuda/cpu_impl.c $(HEADER) | $(B)/cuda
	$(CC) -O2 -std=c99 $(INC) -c $< -o $@
$(B)/cuda/test_cuda: tests/cuda/test_cuda.cu include/sdpa_cuda.h $(HEADER) $(B)/cuda/cpu_impl.o | $(B)/cuda
	$(NVCC) -O2 -std=c++17 $(INC) $(NVCC_ARCHS) $(NVCC_TEST_FLAGS) --threads 2 -Xcompiler -Wall tests/cuda/test_cuda.cu $(B)/cuda/cpu_impl.o -o $@ -lm -lpthread
$(B)/cuda/test_cuda_check: tests/cuda/test_cuda.cu include/sdpa_cuda.h $(HEADER) $(B)/cuda/cpu_impl.o | $(B)/cuda
	$(NVCC) -O2 -std=c++17 $(INC) -DSDPA_CUDA_FEW_KERNELS $(NVCC_ARCHS) $(NVCC_TEST_FLAGS) --threads 2 -Xcompiler -Wall tests/cuda/test_cuda.cu $(B)/cuda/cpu_impl.o -o $@ -lm -lpthread
test-cuda:
	@if [ -z "$(NVCC)" ]; then echo "test-cuda: skipped: nvcc not found (CUDA Toolkit not installed)"; exit 0; fi; \
	if nvidia-smi -L >/dev/null 2>&1; then t=test_cuda; else t=test_cuda_check; fi; \
	start=$$(date +%s); \
	$(MAKE) --no-print-directory $(B)/cuda/$$t || exit 1; \
	echo "test-cuda: nvcc build ($$t) took $$(( $$(date +%s) - start )) s"; \
	./$(B)/cuda/$$t
bench-cuda:
	sh bench/cuda/run.sh

# ---------------------------------------------------------------- assembly
# make asm: per kernel and per path (plain_* from bench/plain_kernels.h, the
# portable sdpa__*, the intrinsics sdpa__*_avx2), the annotated disassembly
# (source interleaved), the vectoriser's remarks on its loops from gcc and
# clang, and an instruction-mix summary, under $(B)/asm/ (README: Reading the
# assembly). make check-asm: each SIMD kernel must contain the instructions
# it promises (ymm FMAs, F16C converts, masked tails; with
# CROSS=aarch64-linux-gnu-, fmla and fcvtl in the NEON kernels' inner
# loops), read from the object.
asm:
	CC="$(CC)" OBJDUMP="$(CROSS)objdump" tests/asm.sh dump $(B)/asm

check-asm:
	CC="$(CC)" OBJDUMP="$(CROSS)objdump" tests/asm.sh check $(B)/asm
