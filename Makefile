# dsonas — top-level Makefile.
#
#   make            build build/dsonas and the test binaries
#   make test       install deps (Debian, root), build, run every test
#   make run        install deps, build, run the main job on its built-in default
#   make bench      speed/memory benchmark -> bench/results/latest.json
#   make test-matrix  the unit suite under every OpenBLAS kernel, SIMD path and
#                   thread count a cluster brings, default and -march=native builds
#   make sanitize   unit, MPI and e2e suites under ASan + UBSan, and ThreadSanitizer
#                   (make asan / make tsan for one of them)
#   make odr        a -flto -Wodr build (One Definition Rule)
#   make check-layers  includes follow the layers of docs/architecture.md (in make test)
#   make lint       clang-format and clang-tidy, clean (in make test)
#   make fuzz       libFuzzer campaigns over every parser of outside input
#   make deps       utils/install-deps.sh (idempotent)
#   make install    PREFIX=/opt/dsonas/0.6.0 [DESTDIR=] [MODULEFILES=] [MODULE_DEPS=]:
#                   binary, jobs, Slurm scripts, tools, docs, man page, Lmod and
#                   Environment Modules modulefiles; make uninstall (same variables)
#
# Toggles and locations (override on the command line or in the environment;
# on a cluster point them at your modules — make never installs anything):
#   USE_CUDA=0|1    CUDA backend (default: 1 when nvcc and cuDNN are found)
#   CXX, NVCC, CUDA_HOME, CUDA_ARCH, OPENBLAS_INC, OPENBLAS_LIB, BOOST_DIR,
#   HDF5_INC, HDF5_LIBDIR
#   ARCH_FLAGS      CPU code generation (default x86-64-v3: AVX2 + FMA)
#   BUILD           build folder (default build)

BUILD       ?= build
CXX         ?= g++
CUDA_HOME   ?= /usr/local/cuda
NVCC        ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCH   ?= 90
# cuDNN / NCCL locations (default: inside CUDA_HOME; on the GPU machine the
# Python wheels' folders, see tests/gpu/run_on_gpu.sh).  CUDART_LIB may be
# "-lcudart_static -ldl -lrt" for binaries that carry no libcudart.
CUDNN_INC   ?= $(CUDA_HOME)/include
CUDNN_LIB   ?= $(CUDA_HOME)/lib64
NCCL_INC    ?= $(CUDA_HOME)/include
NCCL_LIB    ?= $(CUDA_HOME)/lib64
CUDART_LIB  ?= -lcudart
ARCH_FLAGS  ?= -march=x86-64-v3
OPT         ?= -O3
OPENBLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas) /usr/include)
OPENBLAS_LIB ?= -lopenblas
BOOST_DIR   ?=
HDF5_INC    ?= $(firstword $(wildcard /usr/include/hdf5/serial) /usr/include)
HDF5_LIBDIR ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/hdf5/serial) /usr/lib)
PYTHON      ?= /usr/bin/python3
MPICXX      ?= mpicxx
NPROC       := $(shell nproc 2>/dev/null || echo 2)

# ---- CUDA autodetection ------------------------------------------------------
HAVE_NVCC  := $(shell test -x $(NVCC) && echo 1)
HAVE_CUDNN := $(shell test -f $(CUDNN_INC)/cudnn.h && echo 1)
ifeq ($(HAVE_NVCC)$(HAVE_CUDNN),11)
  USE_CUDA ?= 1
else
  USE_CUDA ?= 0
endif

# ---- MPI (Open MPI's wrapper tells the flags; USE_MPI=0 builds a one-rank binary)
HAVE_MPI := $(shell command -v $(MPICXX) >/dev/null 2>&1 && echo 1)
ifeq ($(HAVE_MPI),1)
  USE_MPI ?= 1
else
  USE_MPI ?= 0
endif
ifeq ($(USE_MPI),1)
  MPI_CPPFLAGS := -DDSONAS_USE_MPI=1 $(patsubst -I%,-isystem %,$(filter -I%,$(shell $(MPICXX) --showme:compile)))
  MPI_LIBS     := $(shell $(MPICXX) --showme:link)
endif

CPPFLAGS := -Iinclude $(MPI_CPPFLAGS) -isystem $(OPENBLAS_INC) -isystem $(HDF5_INC) $(if $(BOOST_DIR),-isystem $(BOOST_DIR)/include)
CXXFLAGS := -std=c++17 $(OPT) $(ARCH_FLAGS) -g -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter \
            -MMD -MP $(EXTRA_CXXFLAGS)
LDFLAGS  := -fopenmp $(if $(BOOST_DIR),-L$(BOOST_DIR)/lib) $(EXTRA_LDFLAGS)
LDLIBS   := $(MPI_LIBS) -lboost_program_options -L$(HDF5_LIBDIR) -lhdf5 -Wl,-rpath,$(HDF5_LIBDIR) $(OPENBLAS_LIB) -lturbojpeg -lz -lpthread

LIB_SRCS := $(shell find src -name '*.cpp' ! -path 'src/run/main.cpp' ! -path 'src/backend/cuda/*' | sort)
CU_SRCS  := $(shell find src -name '*.cu' 2>/dev/null | sort)
CUDA_HOST_SRCS := $(shell find src/backend/cuda -name '*.cpp' 2>/dev/null | sort)

ifeq ($(USE_CUDA),1)
  CPPFLAGS += -DDSONAS_USE_CUDA=1
  LIB_SRCS += $(CUDA_HOST_SRCS)
  NVCCFLAGS := -std=c++17 -O3 -Iinclude -I$(CUDA_HOME)/include -I$(CUDNN_INC) -I$(NCCL_INC) -arch=sm_$(CUDA_ARCH) -Xcompiler -fopenmp,-Wall -MMD -MP $(EXTRA_NVCCFLAGS)
  LDLIBS   += -L$(CUDNN_LIB) -L$(NCCL_LIB) -L$(CUDA_HOME)/lib64 -lcudnn -lcublas $(CUDART_LIB) -lnccl -Wl,-rpath,$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDNN_LIB) -Wl,-rpath,$(NCCL_LIB)
  CU_OBJS  := $(CU_SRCS:%.cu=$(BUILD)/obj/%.o)
endif

LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/obj/%.o) $(CU_OBJS)

# ---- version: `dsonas --version`, also the dsonas_version attribute of every HDF5
# file dsonas writes.  BUILD/version.inc is rewritten only when the commit, the
# tree's clean/dirty state or these build options change (utils/version-inc.sh).
# COMMIT=text replaces the git commit (two builds compared byte for byte: same COMMIT).
VERSION       := 0.6.0
COMMIT        ?=
VERSION_INC   := $(BUILD)/version.inc
VERSION_BUILD := $(ARCH_FLAGS) $(OPT), USE_MPI=$(USE_MPI), USE_CUDA=$(USE_CUDA)$(if $(filter 1,$(USE_CUDA)), (sm_$(CUDA_ARCH)))$(if $(strip $(EXTRA_CXXFLAGS)), extra: $(strip $(EXTRA_CXXFLAGS)))
ifeq ($(filter clean,$(MAKECMDGOALS)),)
  $(shell sh utils/version-inc.sh '$(VERSION_INC)' '$(VERSION)' '$(VERSION_BUILD)' '$(COMMIT)')
endif
$(BUILD)/obj/src/core/version.o: $(VERSION_INC)
$(BUILD)/obj/src/core/version.o: CPPFLAGS += -I$(BUILD)
LIB       := $(BUILD)/libdsonas.a
BIN       := $(BUILD)/dsonas
TEST_SRCS := $(sort $(wildcard tests/unit/*.cpp))
TEST_OBJS := $(TEST_SRCS:%.cpp=$(BUILD)/obj/%.o)
TEST_BIN  := $(BUILD)/tests/unit_tests
MPI_TEST_SRCS := $(sort $(wildcard tests/mpi/*.cpp))
MPI_TEST_BIN  := $(if $(filter 1,$(USE_MPI)),$(BUILD)/tests/mpi_tests)
TOOL_SRCS := $(sort $(wildcard tests/bench/*.cpp))
TOOL_BINS := $(TOOL_SRCS:tests/bench/%.cpp=$(BUILD)/tests/%)
# CUDA backend tests (tests/gpu): built with USE_CUDA=1; every test skips, and
# says so, where no GPU is present.
GPU_TEST_SRCS := $(sort $(wildcard tests/gpu/*.cpp))
GPU_TEST_OBJS := $(GPU_TEST_SRCS:%.cpp=$(BUILD)/obj/%.o)
GPU_TEST_BIN  := $(if $(filter 1,$(USE_CUDA)),$(BUILD)/tests/gpu_tests)

# Fuzz harnesses (tests/fuzz/fuzz_<name>.cpp, one reader of outside input each):
# replay_<name> (any compiler) runs stored inputs as a regression test in make test;
# fuzz_<name> (clang, -fsanitize=fuzzer) is the libFuzzer campaign of make fuzz.
FUZZ_NAMES   := $(sort $(patsubst tests/fuzz/fuzz_%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp)))
REPLAY_BINS  := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)
FUZZER_BINS  := $(FUZZ_NAMES:%=$(BUILD)/tests/fuzz_%)

.PHONY: install uninstall all deps test check-layers lint unit-test unit-matrix test-matrix mpi-test python-test e2e-test fuzz-replay fuzz fuzzers run bench asan tsan sanitize odr clean info
all: info $(BIN) $(TEST_BIN) $(MPI_TEST_BIN) $(TOOL_BINS) $(GPU_TEST_BIN) $(REPLAY_BINS)

info:
	@echo "dsonas build: USE_MPI=$(USE_MPI) USE_CUDA=$(USE_CUDA) (nvcc:$(if $(HAVE_NVCC),found,missing) cudnn:$(if $(HAVE_CUDNN),found,missing)) CXX=$(CXX) BUILD=$(BUILD)"

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(BUILD)/obj/src/run/main.o $(LIB)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(TEST_BIN): $(TEST_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -lgtest -lgtest_main -o $@

$(BUILD)/tests/gpu_tests: $(GPU_TEST_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -lgtest -lgtest_main -o $@

$(BUILD)/tests/mpi_tests: $(MPI_TEST_SRCS:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -lgtest -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/fuzz_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@
fuzzers: $(FUZZER_BINS)
# keep the harness objects (they are intermediate files of two pattern rules)
.SECONDARY:

deps:
	@./utils/install-deps.sh

# ---- make install / uninstall (utils/install.sh: the layout, the modulefiles, the manifest)
PREFIX      ?= /usr/local
DESTDIR     ?=
MODULEFILES ?= $(PREFIX)/modulefiles
MODULE_DEPS ?=
MAN_PAGE    := $(BUILD)/dsonas.1
$(MAN_PAGE): $(BIN) utils/make-man.sh
	bash utils/make-man.sh $(BIN) $@ $(VERSION)
install: $(BIN) $(MAN_PAGE)
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' MODULEFILES='$(MODULEFILES)' MODULE_DEPS='$(MODULE_DEPS)' \
	  VERSION='$(VERSION)' bash utils/install.sh install $(BIN) $(MAN_PAGE)
uninstall:
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' MODULEFILES='$(MODULEFILES)' VERSION='$(VERSION)' \
	  bash utils/install.sh uninstall

# The README's test command.  Every test prints its own verdict; a CUDA test
# without a GPU says it was skipped.
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@$(MAKE) --no-print-directory check-layers lint unit-test unit-matrix fuzz-replay mpi-test python-test e2e-test
	@echo "make test: all test suites passed"

unit-test: $(TEST_BIN) $(GPU_TEST_BIN)
	OMP_NUM_THREADS=2 $(TEST_BIN) --gtest_brief=1
	@if [ -x "$(GPU_TEST_BIN)" ]; then echo "OMP_NUM_THREADS=2 $(GPU_TEST_BIN)"; OMP_NUM_THREADS=2 $(GPU_TEST_BIN); fi

# The unit suite under 5 other machine settings (OpenBLAS kernel, AVX-512 switch,
# 1-3 threads): a numerical test that passes only under this machine's settings
# fails here, not on the next user's machine.  test-matrix: all 24 settings, on the
# default build and on a -march=native build.
unit-matrix: $(TEST_BIN)
	bash tests/matrix.sh --quick
test-matrix: $(TEST_BIN)
	bash tests/matrix.sh

# Every stored fuzz input (the seed corpora of real files, what the campaigns kept,
# every crash input found) through its harness: a regression test, no libFuzzer.
# Inputs that crash libhdf5 itself (tests/fuzz/hdf5-crashes) are replayed through the
# protected path only: the seal must refuse them before HDF5 sees them.
fuzz-replay: $(REPLAY_BINS)
	@for n in $(FUZZ_NAMES); do \
	  dirs=$$(ls -d tests/fuzz/corpus/$$n tests/fuzz/crashes/$$n 2>/dev/null); \
	  if [ -z "$$dirs" ]; then echo "fuzz-replay: no stored inputs for $$n" >&2; exit 1; fi; \
	  printf '%-12s ' $$n; timeout 300 $(BUILD)/tests/replay_$$n $$dirs || { echo "fuzz-replay: $$n failed or hung"; exit 1; }; \
	  if [ -d tests/fuzz/hdf5-crashes/$$n ]; then \
	    printf '%-12s ' "$$n (files that crash libhdf5, through the seal)"; \
	    DSONAS_FUZZ_PROTECTED_ONLY=1 timeout 300 $(BUILD)/tests/replay_$$n tests/fuzz/hdf5-crashes/$$n || exit 1; fi; \
	done

# libFuzzer campaigns under ASan + UBSan (clang): FUZZ_SECONDS per harness (default
# 900), FUZZ_JOBS at once; new inputs are merged (minimised) into tests/fuzz/corpus.
fuzz: deps
	bash tests/fuzz/run.sh

# Open MPI refuses root without these two; --oversubscribe: 2 ranks on any core count.
MPIRUN ?= OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none
export MPIRUN

mpi-test: $(BIN) $(MPI_TEST_BIN)
	@if [ "$(USE_MPI)" != 1 ]; then echo "mpi-test: SKIPPED (built with USE_MPI=0)"; \
	else echo "$(MPIRUN) -np 2 $(MPI_TEST_BIN)"; OMP_NUM_THREADS=1 $(MPIRUN) -np 2 $(MPI_TEST_BIN) --gtest_brief=1 && \
	bash tests/e2e/mpi.sh $(BUILD); fi

# clang-format (.clang-format) over every C++/CUDA source, clang-tidy over src/*.cpp
# (the chosen checks and why the others are off: utils/lint.sh); findings in $(BUILD)/lint-*.txt.
lint:
	@mkdir -p $(BUILD)
	bash utils/lint.sh "$(CPPFLAGS) -I$(BUILD) -std=c++17 $(ARCH_FLAGS) -fopenmp"

# Includes run down the layers of docs/architecture.md, vendor headers stay in their layer.
check-layers:
	$(PYTHON) utils/check_layers.py

python-test: $(BIN) $(TOOL_BINS)
	$(PYTHON) tests/bench/test_twin.py --build $(BUILD)
	DSONAS_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/python

e2e-test: $(BIN) $(GPU_TEST_BIN)
	bash tests/e2e/run_all.sh $(BUILD)
	bash tests/e2e/pipeline.sh $(BUILD)
	bash tests/e2e/export.sh $(BUILD)
	bash tests/e2e/study.sh $(BUILD)
	bash tests/e2e/jobs.sh $(BUILD)
	bash tests/e2e/slurm.sh $(BUILD)
	bash tests/e2e/install.sh $(BUILD)
	bash tests/gpu/test_bundle_check.sh
	bash tests/gpu/test_device_script.sh $(BUILD)

# The main job: the whole method (pipeline: pretrain → search → derive → retrain →
# eval, plus the hand-made baseline → report.md) on Fashion-MNIST with 2 MPI
# ranks (jobs/fmnist_demo.cfg), into a new folder runs/fmnist_<UTC time> (an
# existing run is never overwritten).  RUN_CONFIG / RUN_RANKS / RUN_DIR override.
RUN_DIR    ?= runs/fmnist_$(shell date -u +%Y%m%d_%H%M%S)
RUN_CONFIG ?= jobs/fmnist_demo.cfg
RUN_RANKS  ?= 2
run: deps
	@$(MAKE) --no-print-directory -j$(NPROC) $(BIN)
	OMP_NUM_THREADS=1 $(MPIRUN) -np $(RUN_RANKS) $(BIN) pipeline --config $(RUN_CONFIG) --out $(RUN_DIR)
	@echo "make run: results in $(RUN_DIR) (report: $(RUN_DIR)/report.md)"

bench: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	$(PYTHON) tests/bench/bench.py --build $(BUILD) --out bench/results/latest.json

# Sanitizers over the suites (tests/sanitize.sh): asan = ASan + UBSan over the unit,
# MPI and e2e suites and the stored fuzz inputs; tsan = ThreadSanitizer over the unit
# suite and the e2e runs (thread pool, prefetch thread, loader workers, signals,
# deadlines); sanitize = both.  Any sanitizer report fails the run.
asan: deps
	bash tests/sanitize.sh asan
tsan: deps
	bash tests/sanitize.sh tsan
sanitize: deps
	bash tests/sanitize.sh all

# One Definition Rule: a link-time-optimised build with -Wodr must be silent (types
# private to a .cpp live in anonymous namespaces).
odr:
	@$(MAKE) --no-print-directory -j$(NPROC) BUILD=build-lto USE_CUDA=0 EXTRA_CXXFLAGS="-flto=auto -Werror=odr" \
	  EXTRA_LDFLAGS="-flto=auto -Werror=odr" build-lto/dsonas build-lto/tests/unit_tests build-lto/tests/mpi_tests
	@echo "odr: the -flto -Wodr build is clean"

clean:
	rm -rf build build-asan build-tsan build-native build-fuzz build-lto

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
