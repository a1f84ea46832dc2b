# dsonas — top-level Makefile.
#
#   make            build build/dsonas and the test binaries
#   make test       install deps (Debian, root), build, run every test
#   make run        install deps, build, run the main job on its built-in default
#   make bench      speed/memory benchmark -> bench/results/latest.json
#   make asan       unit tests under AddressSanitizer + UBSan
#   make deps       utils/install-deps.sh (idempotent)
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
ARCH_FLAGS  ?= -march=x86-64-v3
OPT         ?= -O3
OPENBLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas) /usr/include)
OPENBLAS_LIB ?= -lopenblas
BOOST_DIR   ?=
HDF5_INC    ?= $(firstword $(wildcard /usr/include/hdf5/serial) /usr/include)
HDF5_LIBDIR ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/hdf5/serial) /usr/lib)
PYTHON      ?= /usr/bin/python3
NPROC       := $(shell nproc 2>/dev/null || echo 2)

# ---- CUDA autodetection ------------------------------------------------------
HAVE_NVCC  := $(shell test -x $(NVCC) && echo 1)
HAVE_CUDNN := $(shell test -f $(CUDA_HOME)/include/cudnn.h && echo 1)
ifeq ($(HAVE_NVCC)$(HAVE_CUDNN),11)
  USE_CUDA ?= 1
else
  USE_CUDA ?= 0
endif

CPPFLAGS := -Iinclude -isystem $(OPENBLAS_INC) -isystem $(HDF5_INC) $(if $(BOOST_DIR),-isystem $(BOOST_DIR)/include)
CXXFLAGS := -std=c++17 $(OPT) $(ARCH_FLAGS) -g -fopenmp -Wall -Wextra -Wshadow -Wno-unused-parameter \
            -MMD -MP $(EXTRA_CXXFLAGS)
LDFLAGS  := -fopenmp $(if $(BOOST_DIR),-L$(BOOST_DIR)/lib) $(EXTRA_LDFLAGS)
LDLIBS   := -lboost_program_options -L$(HDF5_LIBDIR) -lhdf5 -Wl,-rpath,$(HDF5_LIBDIR) $(OPENBLAS_LIB) -lz -lpthread

LIB_SRCS := $(shell find src -name '*.cpp' ! -path 'src/run/main.cpp' ! -path 'src/backend/cuda/*' | sort)
CU_SRCS  := $(shell find src/backend/cuda -name '*.cu' 2>/dev/null | sort)
CUDA_HOST_SRCS := $(shell find src/backend/cuda -name '*.cpp' 2>/dev/null | sort)

ifeq ($(USE_CUDA),1)
  CPPFLAGS += -DDSONAS_USE_CUDA=1
  LIB_SRCS += $(CUDA_HOST_SRCS)
  NVCCFLAGS := -std=c++17 -O3 -Iinclude -I$(CUDA_HOME)/include -arch=sm_$(CUDA_ARCH) -Xcompiler -fopenmp,-Wall -MMD -MP
  LDLIBS   += -L$(CUDA_HOME)/lib64 -lcudnn -lcublas -lcudart -lnccl -Wl,-rpath,$(CUDA_HOME)/lib64
  CU_OBJS  := $(CU_SRCS:%.cu=$(BUILD)/obj/%.o)
endif

LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/obj/%.o) $(CU_OBJS)
LIB       := $(BUILD)/libdsonas.a
BIN       := $(BUILD)/dsonas
TEST_SRCS := $(sort $(wildcard tests/unit/*.cpp))
TEST_OBJS := $(TEST_SRCS:%.cpp=$(BUILD)/obj/%.o)
TEST_BIN  := $(BUILD)/tests/unit_tests
TOOL_SRCS := $(sort $(wildcard tests/bench/*.cpp))
TOOL_BINS := $(TOOL_SRCS:tests/bench/%.cpp=$(BUILD)/tests/%)

.PHONY: all deps test unit-test python-test e2e-test run bench asan clean info
all: info $(BIN) $(TEST_BIN) $(TOOL_BINS)

info:
	@echo "dsonas build: USE_CUDA=$(USE_CUDA) (nvcc:$(if $(HAVE_NVCC),found,missing) cudnn:$(if $(HAVE_CUDNN),found,missing)) CXX=$(CXX) BUILD=$(BUILD)"

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

$(BUILD)/tests/%: $(BUILD)/obj/tests/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

deps:
	@./utils/install-deps.sh

# The README's test command.  Every test prints its own verdict; a CUDA test
# without a GPU says it was skipped.
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@$(MAKE) --no-print-directory unit-test python-test e2e-test
	@echo "make test: all test suites passed"

unit-test: $(TEST_BIN)
	OMP_NUM_THREADS=2 $(TEST_BIN) --gtest_brief=1

python-test: $(BIN) $(TOOL_BINS)
	$(PYTHON) tests/bench/test_twin.py --build $(BUILD)
	DSONAS_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/python

e2e-test: $(BIN)
	bash tests/e2e/run_all.sh $(BUILD)
	bash tests/e2e/slurm.sh $(BUILD)

# The main job: pretrain + search on Fashion-MNIST (jobs/fmnist.cfg), into a new
# folder runs/fmnist_<UTC time> (an existing run is never overwritten).
RUN_DIR ?= runs/fmnist_$(shell date -u +%Y%m%d_%H%M%S)
run: deps
	@$(MAKE) --no-print-directory -j$(NPROC) $(BIN)
	$(BIN) pretrain --config jobs/fmnist.cfg --out $(RUN_DIR)/pretrain
	$(BIN) search --config jobs/fmnist.cfg --out $(RUN_DIR)/search --init $(RUN_DIR)/pretrain
	@echo "make run: results in $(RUN_DIR)"

bench: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	$(PYTHON) tests/bench/bench.py --build $(BUILD) --out bench/results/latest.json

asan:
	@$(MAKE) --no-print-directory -j$(NPROC) BUILD=build-asan OPT="-O1" \
	  EXTRA_CXXFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" USE_CUDA=0 build-asan/tests/unit_tests
	ASAN_OPTIONS=detect_leaks=1 OMP_NUM_THREADS=2 build-asan/tests/unit_tests --gtest_brief=1

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
