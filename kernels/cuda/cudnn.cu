// cudnn.cu — loading cuDNN at run time, and one cuDNN handle per device (sao_cudnn.h).
//
// libsao_cuda.so is not linked against cuDNN: a GPU machine may have none, or another 9.x than
// the headers', and a missing library must never stop the backend from loading. The first call
// that wants cuDNN dlopens $SAO_CUDNN_LIB, else "libcudnn.so.9" (the loader's search: RUNPATH,
// LD_LIBRARY_PATH, ld.so.cache), takes the functions of SAO_CUDNN_FUNCS from it with
// dlsym and checks that cudnnGetVersion says 9.x. Any failure is remembered as a sentence
// (sao_cudnn(&why), sao.cuda.conv_backend()) and the convolutions keep their im2col + cuBLASLt
// path. The library stays loaded for the life of the process (handles live until it ends).
//
// Handles: one per device, made by the first call on that device under a lock (cudnnCreate is
// slow and allocates), then bound to sao_cuda_stream() at every call, so cuDNN's work is ordered
// with every other launch. A device where cudnnCreate fails (e.g. a cuDNN sub-library that does
// not load) makes cuDNN unusable for the process, with the reason, rather than failing each conv.
#include "sao_cudnn.h"
#include <atomic>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef SAO_CUDNN_LINKED
// The emulated backend (spec/support/cuda_emu): its fake cuDNN is linked in; these stand-ins of
// dlopen / dlsym / dlerror (declared by the fake cudnn.h) find its functions by name, and fail as
// dlopen does for a missing path or with EMU_NO_CUDNN=1.
#define LIB_OPEN(path) emu_cudnn_open(path)
#define LIB_SYM(lib, name) emu_cudnn_sym(lib, name)
#define LIB_ERROR() emu_cudnn_error()
#else
#include <dlfcn.h>
#define LIB_OPEN(path) dlopen(path, RTLD_NOW | RTLD_LOCAL)
#define LIB_SYM(lib, name) dlsym(lib, name)
#define LIB_ERROR() dlerror()
#endif

namespace {

const int MAX_DEVICES = 64;
const char *const FALLBACK = "the convolutions run as im2col + cuBLASLt GEMMs";

sao_cudnn_api api;                 // filled once by load()
bool loaded;                       // api is complete and the version is 9.x
char load_why[1024];               // when not: why
pthread_once_t once = PTHREAD_ONCE_INIT;

pthread_mutex_t handle_lock = PTHREAD_MUTEX_INITIALIZER;   // guards handles
cudnnHandle_t handles[MAX_DEVICES];
std::atomic<bool> broken;          // cudnnCreate failed somewhere: cuDNN unusable for the process
char broken_why[1024];             // written once, before broken is set

void load() {
    const char *env = getenv("SAO_CUDNN_LIB");
    const char *path = env && *env ? env : "libcudnn.so.9";
    void *lib = LIB_OPEN(path);
    if (!lib) {
        const char *e = LIB_ERROR();
        snprintf(load_why, sizeof load_why, "cuDNN could not be loaded: %s (install cuDNN 9, or set "
                 "SAO_CUDNN_LIB to its libcudnn.so.9); %s", e ? e : path, FALLBACK);
        return;
    }
    // each function by its name; the first one missing is named
#define SAO_CUDNN_LOAD(name)                                                                       \
    api.name = (decltype(api.name))LIB_SYM(lib, #name);                                           \
    if (!api.name) {                                                                               \
        snprintf(load_why, sizeof load_why, "cuDNN at %s has no %s (sao needs cuDNN 9's legacy "   \
                 "convolution and backend APIs); %s", path, #name, FALLBACK);                      \
        return;                                                                                    \
    }
    SAO_CUDNN_FUNCS(SAO_CUDNN_LOAD)
#undef SAO_CUDNN_LOAD
    size_t v = api.cudnnGetVersion();   // 9.19.0 is 91900
    if (v / 10000 != 9) {
        snprintf(load_why, sizeof load_why, "cuDNN at %s is version %zu.%zu.%zu, sao needs 9.x (set "
                 "SAO_CUDNN_LIB to a cuDNN 9 libcudnn.so.9); %s", path, v / 10000, v / 100 % 100,
                 v % 100, FALLBACK);
        return;
    }
    loaded = true;   // never dlclosed
}

}  // namespace

const sao_cudnn_api *sao_cudnn(const char **why) {
    pthread_once(&once, load);
    const char *no = !loaded ? load_why : broken.load(std::memory_order_acquire) ? broken_why : NULL;
    if (why) *why = no;
    return no ? NULL : &api;
}

int sao_cudnn_handle(sao_ctx *ctx, const char *op, cudnnHandle_t *out) {
    const sao_cudnn_api *a = sao_cudnn(NULL);
    if (!a) return 1;
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    if (dev < 0 || dev >= MAX_DEVICES)
        return sao_err(ctx, op, "device %d: sao's cuDNN handles cover devices 0..%d (raise MAX_DEVICES in %s)",
                       dev, MAX_DEVICES - 1, __FILE__);
    pthread_mutex_lock(&handle_lock);
    if (!handles[dev] && !broken.load(std::memory_order_acquire)) {
        cudnnStatus_t st = a->cudnnCreate(&handles[dev]);
        if (st != CUDNN_STATUS_SUCCESS) {
            handles[dev] = NULL;
            snprintf(broken_why, sizeof broken_why, "cuDNN %zu loaded but cudnnCreate failed on device %d: %s "
                     "(status %d: are all of cuDNN's libraries next to libcudnn.so.9?); %s", a->cudnnGetVersion(),
                     dev, a->cudnnGetErrorString(st), (int)st, FALLBACK);
            broken.store(true, std::memory_order_release);
        }
    }
    cudnnHandle_t h = handles[dev];
    pthread_mutex_unlock(&handle_lock);
    if (!h) return 1;
    CUDNN_TRY(ctx, op, a, cudnnSetStream(h, sao_cuda_stream()));
    *out = h;
    return 0;
}

// sao_cuda_attn.h: whether cuDNN is loaded (loading it on the first call), its version
extern "C" const char *sao_cuda_cudnn_status(int64_t *version) {
    const char *why = NULL;
    const sao_cudnn_api *a = sao_cudnn(&why);
    if (version) *version = a ? (int64_t)a->cudnnGetVersion() : 0;
    return why;
}
