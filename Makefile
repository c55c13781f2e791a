# sao — build, set-up, tests and benchmarks.
#
#   make deps      install the Debian packages sao needs (apt-get; quiet when all are present)
#   make           build ./sao and build/libsao.so (CUDA backend too when nvcc is found; CUDA=0: CPU only)
#   make run       deps + build + the instrumental recipe on its embedded default
#   make run-trap  deps + build + the trap recipe on its demo beats
#   make test      deps + build, then every spec (busted on LuaJIT); ends with "N passed, N failed, N skipped"
#   make test-gpu  the GPU-tagged specs only (skipped, and counted as such, without a GPU)
#   make test-gpu-emu  the GPU specs on a CPU emulation of the CUDA backend (spec/support/cuda_emu;
#                  slow: about an hour on 2 cores; no GPU or CUDA toolkit needed; EMU_SCHED=reverse
#                  or shuffle:SEED runs every kernel's threads in another order, exposing races)
#   make bench     benchmarks as JSON lines (bench/*.lua)
#   make install PREFIX=/usr/local
#
# Every C file in runtime/ (except main.c) and kernels/cpu/ goes into libsao.so; the ./sao binary
# is runtime/main.c linked against it. Adding a file needs no change here.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
OPT      ?= -O2 -march=native
WERROR   ?= 0
CUDA     ?= auto
VERSION  := 0.1.0

PKGS     := luajit sndfile samplerate libcurl fluidsynth libebur128 fftw3f openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   += -std=gnu11 $(OPT) -g -Wall -Wextra -fPIC -fopenmp -D_GNU_SOURCE -DSAO_VERSION='"$(VERSION)"' \
            -Iruntime/include -Iruntime $(PKG_CFLAGS)
ifeq ($(WERROR),1)
CFLAGS   += -Werror
endif
LDLIBS   := $(PKG_LIBS) -lreadline -lm -lpthread -ldl

# ---- CUDA: auto-detected; CUDA=0 forces a CPU-only build ----------------------------------------
# kernels/cuda/*.cu become build/libsao_cuda.so, the only library linked against the CUDA ones;
# libsao.so loads it on the first CUDA call (runtime/cuda_load.c), so CPU work never pays for it.
# cuDNN is not linked: kernels/cuda/cudnn.cu dlopens libcudnn.so.9 (or $SAO_CUDNN_LIB) when a
# convolution first wants it, so only its headers (cudnn.h, for types) are needed to build.
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
CU_SRCS  := $(wildcard kernels/cuda/*.cu)
ifeq ($(CUDA),0)
USE_CUDA :=
else ifneq ($(NVCC),)
ifneq ($(CU_SRCS),)
USE_CUDA := 1
endif
endif
ifdef USE_CUDA
CFLAGS   += -DSAO_WITH_CUDA -I$(CUDA_HOME)/include
NVFLAGS  := -O2 -std=c++17 -Xcompiler -fPIC -Iruntime/include -Iruntime -DSAO_WITH_CUDA \
            -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
CU_LIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -ldl
CU_OBJS  := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRCS))
CUDA_LIB := $(BUILD)/libsao_cuda.so
endif

LIB_SRCS := $(filter-out runtime/main.c,$(wildcard runtime/*.c)) $(wildcard kernels/cpu/*.c)
LIB_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRCS))
HEADERS  := $(wildcard runtime/include/*.h) $(wildcard runtime/*.h) $(wildcard kernels/cpu/*.h) $(wildcard kernels/cuda/*.h)
# The FFI contract: sao.h and sao_model.h first (others build on them), then the other public
# headers, with '#' lines and
# the `#ifdef __cplusplus ... #endif` blocks dropped.
CDEF_FIRST := runtime/include/sao.h runtime/include/sao_model.h
CDEF_SRCS := $(CDEF_FIRST) $(sort $(filter-out $(CDEF_FIRST),$(wildcard runtime/include/*.h)))

# Objects depend on the flags they were built with: build/.flags is rewritten when they change
# (CUDA=0 vs auto, WERROR=1, OPT=...), so switching never links stale objects.
FLAGS_NOW := $(CFLAGS) | $(NVFLAGS) | $(LDLIBS) | $(CU_LIBS)
ifneq ($(FLAGS_NOW),$(file < $(BUILD)/.flags))
$(shell mkdir -p $(BUILD))
$(file > $(BUILD)/.flags,$(FLAGS_NOW))
endif

.PHONY: all deps run run-trap test test-gpu test-gpu-emu bench install clean
all: sao $(BUILD)/sao_cdef.h $(CUDA_LIB)

$(BUILD)/%.o: %.c $(HEADERS) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(HEADERS) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# -Bsymbolic-functions: the library's calls to its own functions bind inside it, so a second copy
# loaded with SAO_LIB (a CPU-only build tried with ./sao) runs its own code, not the first copy's.
$(BUILD)/libsao.so: $(LIB_OBJS) Makefile
	$(CC) -shared -fopenmp -Wl,-soname,libsao.so -Wl,-Bsymbolic-functions -o $@ $(LIB_OBJS) $(LDLIBS)

# The backend exports one symbol (backend.map); it finds libsao.so next to itself.
$(BUILD)/libsao_cuda.so: $(CU_OBJS) $(BUILD)/libsao.so kernels/cuda/backend.map Makefile
	$(CC) -shared -o $@ $(CU_OBJS) -L$(BUILD) -lsao -Wl,-rpath,'$$ORIGIN' \
	    -Wl,--version-script=kernels/cuda/backend.map $(CU_LIBS) -lstdc++ -lpthread

$(BUILD)/sao_cdef.h: $(CDEF_SRCS) Makefile
	@mkdir -p $(BUILD)
	awk '/^#ifdef __cplusplus/ {skip=1; next} skip && /^#endif/ {skip=0; next} skip {next} \
	     /^[[:space:]]*#/ {next} {print}' $(CDEF_SRCS) > $@

# The binary finds lua/ and build/ next to itself (source tree) or under PREFIX (installed).
sao: $(BUILD)/runtime/main.o $(BUILD)/libsao.so
	$(CC) -fopenmp -o $@ $(BUILD)/runtime/main.o -L$(BUILD) -lsao -Wl,-rpath,'$$ORIGIN/$(BUILD)' \
	    -Wl,-rpath,'$$ORIGIN/../lib' -Wl,-E $(LDLIBS)

# ---- set-up -----------------------------------------------------------------------------------
DEB_PKGS := build-essential pkg-config luajit libluajit-5.1-dev lua-cjson lua-busted \
            libsndfile1-dev libsamplerate0-dev libcurl4-openssl-dev libfluidsynth-dev \
            fluid-soundfont-gm libebur128-dev libfftw3-dev libopenblas-dev libreadline-dev \
            sonic-pi-samples planetblupi-music-midi
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing$$(echo $$missing | tr '\n' ' ' | sed 's/^/ /')"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

run: deps all
	./sao recipes/instrumental.lua

run-trap: deps all
	./sao recipes/trap.lua

test: deps all
	@sh spec/run.sh

test-gpu: deps all
	@sh spec/run.sh --tags=gpu

test-gpu-emu: deps $(BUILD)/libsao.so sao $(BUILD)/sao_cdef.h
	@sh spec/support/cuda_emu/build.sh $(BUILD)/emu $(BUILD)
	@SAO_CUDA_LIB=$(abspath $(BUILD))/emu/libsao_cuda.so sh spec/run.sh --tags=gpu

bench: all
	@for b in bench/*.lua; do ./sao $$b || exit 1; done

install: all
	install -d $(PREFIX)/bin $(PREFIX)/lib $(PREFIX)/share/sao/lua/sao
	install -m 755 $(BUILD)/libsao.so $(CUDA_LIB) $(PREFIX)/lib/
	install -m 755 sao $(PREFIX)/bin/sao
	install -m 644 $(BUILD)/sao_cdef.h $(PREFIX)/share/sao/
	cp -R lua/. $(PREFIX)/share/sao/lua/
	cp -R recipes checkpoints $(PREFIX)/share/sao/

clean:
	rm -rf $(BUILD) sao
