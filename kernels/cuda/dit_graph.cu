// dit_graph.cu — the DiT's device forward as a CUDA graph (sao_dit_graphs, runtime/dit.c).
//
// A sampling loop calls the forward a hundred times with the same shapes; each call launches
// ~30 kernels per block (about 750 at SAO's depth), and each launch costs the host a few
// microseconds plus a cuBLASLt descriptor set-up. Captured once, the same work is one
// cudaGraphLaunch. dit.c runs the device part of the forward (everything between putting the
// inputs into the workspace and fetching the output) in one of three modes:
//
//   eager      the kernels run as usual; when the call succeeds the model remembers its key (shapes,
//              CFG settings, workspace and weight addresses, GEMM precision, attention kernels)
//              and the allocator's
//              free count: it is "warm" (every scratch it needs has been grown)
//   capturing  the next call with the same key, nothing freed since: the same launches go to this
//              model's capture stream (cuda_internal.h's sao_cuda_stream) and become a graph,
//              which is instantiated and launched
//   replayed   later calls with that key, nothing freed since: one cudaGraphLaunch
//
// A graph bakes in addresses, so it may only replay while every block it touches still belongs
// to it: any free anywhere (sao_cuda_free_count) makes the next call eager again, and the one
// after that captures anew. The inputs always go to the same workspace addresses before the
// launch, and the output is fetched after it; the capture stream is a blocking stream, ordered
// with the legacy stream's copies on both sides. If capture fails (an API that cannot be captured,
// an allocation inside the forward), the model says why (sao_dit_graph_stats) and stays eager.
#include "cuda_internal.h"
extern "C" {
#include "dit_internal.h"
#include "sao_cuda.h"
#include "sao_cuda_attn.h"
}
#include <stdio.h>
#include <stdlib.h>

struct dit_graph {
    dit_graph_key key;      // the calls this state is about
    int64_t frees;          // sao_cuda_free_count when the key's last call ended (or was captured)
    bool warm;              // an eager call with this key succeeded and nothing was freed since
    cudaGraphExec_t exec;   // the captured forward, or NULL
    cudaStream_t stream;    // capture and replay stream (blocking) on the model's device
};

static bool same_key(const dit_graph_key *a, const dit_graph_key *b) {
    return a->B == b->B && a->T == b->T && a->L == b->L && a->Bx == b->Bx && a->scale == b->scale &&
           a->phi == b->phi && a->ws == b->ws && a->weights == b->weights && a->precision == b->precision &&
           a->lt == b->lt && a->attn == b->attn;
}

static void drop_exec(dit_graph *g) {
    if (g->exec) cudaGraphExecDestroy(g->exec);
    g->exec = NULL;
}

// Capture does not work for this model: record why, stay eager from now on.
static void give_up(sao_dit *m, const char *why) {
    snprintf(m->graph_why, sizeof m->graph_why, "%s", why);
    drop_exec(m->graph);
    cudaGetLastError();   // a refused capture leaves a (non-sticky) error behind
}

extern "C" int dit_graph_begin(sao_ctx *ctx, sao_dit *m, const dit_graph_key *key) {
    const char *op = "dit_forward";
    if (m->graph_why[0]) return DIT_GRAPH_EAGER;
    if (!m->graph && !(m->graph = (dit_graph *)calloc(1, sizeof(dit_graph))))
        return sao_err(ctx, op, "out of memory");
    dit_graph *g = m->graph;
    dit_graph_key k = *key;
    k.precision = sao_cuda_gemm_precision(-1);
    k.lt = sao_cuda_gemm_use_lt(-1);
    k.attn = sao_cuda_attention_impl(ctx, NULL);
    bool same = same_key(&k, &g->key) && g->frees == sao_cuda_free_count();
    if (same && g->exec) {
        CUDA_TRY(ctx, op, cudaGraphLaunch(g->exec, g->stream));
        m->graph_replays++;
        return DIT_GRAPH_REPLAYED;
    }
    if (same && g->warm) {
        if (!g->stream) CUDA_TRY(ctx, op, cudaStreamCreateWithFlags(&g->stream, cudaStreamDefault));
        cudaError_t e = cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal);
        if (e != cudaSuccess) {
            char why[160];
            snprintf(why, sizeof why, "cudaStreamBeginCapture: %s", cudaGetErrorString(e));
            give_up(m, why);
            return DIT_GRAPH_EAGER;
        }
        sao_cuda_cur_stream = g->stream;
        sao_cuda_capturing = true;
        return DIT_GRAPH_CAPTURING;
    }
    drop_exec(g);
    g->key = k;
    g->warm = false;
    return DIT_GRAPH_EAGER;
}

extern "C" int dit_graph_end(sao_ctx *ctx, sao_dit *m, int mode, int rc) {
    const char *op = "dit_forward";
    dit_graph *g = m->graph;
    if (!g) return 0;
    if (mode == DIT_GRAPH_EAGER) {
        if (rc == 0) {
            g->warm = true;
            g->frees = sao_cuda_free_count();
        }
        return 0;
    }
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
    sao_cuda_cur_stream = 0;
    sao_cuda_capturing = false;
    char why[sizeof m->graph_why] = "";
    cudaGraphExec_t exec = NULL;
    if (rc != 0)
        snprintf(why, sizeof why, "a call failed while capturing: %s", sao_ctx_error(ctx));
    else if (e != cudaSuccess)
        snprintf(why, sizeof why, "cudaStreamEndCapture: %s", cudaGetErrorString(e));
    else if ((e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess)
        snprintf(why, sizeof why, "cudaGraphInstantiate: %s", cudaGetErrorString(e));
    if (graph) cudaGraphDestroy(graph);
    if (why[0]) {
        give_up(m, why);
        return 1;   // the caller runs the forward eagerly
    }
    g->exec = exec;
    g->frees = sao_cuda_free_count();
    m->graph_captures++;
    CUDA_TRY(ctx, op, cudaGraphLaunch(exec, g->stream));   // capturing ran nothing: this call's work
    return 0;
}

extern "C" void dit_graph_release(sao_dit *m) {
    dit_graph *g = m->graph;
    if (!g) return;
    drop_exec(g);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
    m->graph = NULL;
}
