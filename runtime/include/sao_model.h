/* sao_model.h — model graphs over the kernels: parameter registries, the DiT, the Oobleck VAE, T5
 * and the conditioners (one section per model; each model's file in runtime/ implements it).
 *
 * Loading pattern (every model): `*_new(ctx, config)` builds the model and its parameter
 * registry (upstream state_dict key names without the checkpoint prefix, expected shapes derived
 * from the config); Lua walks a safetensors table and calls sao_params_bind for each key (an
 * unknown name or a wrong shape is an error naming it); sao_params_check reports any parameter
 * still missing. Bound tensors are converted to contiguous f32 (bf16/f16 checkpoints welcome). */
#ifndef SAO_MODEL_H
#define SAO_MODEL_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- parameter registry (params.c) ----------------------------------------------------------- */
typedef struct sao_params sao_params;
int sao_params_count(const sao_params *p);
const char *sao_params_name(const sao_params *p, int i);
int sao_params_ndim(const sao_params *p, int i);
const int64_t *sao_params_shape(const sao_params *p, int i);
sao_tensor *sao_params_tensor(const sao_params *p, int i);   /* NULL until bound; borrowed */
int sao_params_find(const sao_params *p, const char *name);   /* index or -1 */
/* Binds `name` to t (converted to contiguous f32, shape checked). Errors: unknown name, shape. */
int sao_params_bind(sao_ctx *ctx, sao_params *p, const char *name, const sao_tensor *t);
/* 0 when every required parameter is bound, else -1 naming the first missing ones. */
int sao_params_check(sao_ctx *ctx, const sao_params *p);
int64_t sao_params_numel(const sao_params *p);                /* total elements of all params */


/* ---- DiT (dit.c): SAO's DiffusionTransformer, forward --------------------------------------- */
typedef struct sao_dit_config {
    int io_channels;            /* 64 (latent channels) */
    int embed_dim;              /* E = 1536 */
    int depth;                  /* 24 blocks */
    int num_heads;              /* H = 24 (head dim E/H = 64) */
    int cond_token_dim;         /* Dc = 768 (cross-attention K/V heads = Dc / head dim) */
    int global_cond_dim;        /* Dg = 1536 */
    int ff_mult;                /* 4: SwiGLU hidden = ff_mult * E */
    int timestep_features_dim;  /* 256 (128 Fourier frequencies, [cos, sin]) */
} sao_dit_config;
typedef struct sao_dit sao_dit;
sao_dit *sao_dit_new(sao_ctx *ctx, const sao_dit_config *cfg);
void sao_dit_free(sao_dit *m);
sao_params *sao_dit_params(sao_dit *m);
const sao_dit_config *sao_dit_get_config(const sao_dit *m);
/* x [B, io, T] (c_in-scaled), t [B], cross [B, L, Dc] (L = 0: no cross-attention), global [B, Dg]
 * -> out [B, io, T] (v prediction). cfg_scale != 1 runs the doubled CFG batch: the unconditional
 * half's context is uncond [B, L, Dc] (a negative prompt's conditioning, padding rows zero) or,
 * when uncond is NULL, all zero, which skips that half's cross-attention (exact: it adds 0).
 * uncond is not read when cfg_scale is 1. scale_phi is the CFG rescale amount (0 = off). hidden,
 * when not NULL, receives the conditional half's hidden state after every block: [depth, B, 1+T, E].
 * flags: SAO_DIT_DEVICE_IO says that x, t, cross, uncond, global and out are memory of the model's
 * device (a model on a GPU; hidden must then be NULL): the inputs are copied into the workspace and
 * the output out of it on the device, queued on sao's stream, and the call returns without waiting
 * for the GPU (a sampling loop that keeps its state there, lua/sao/sampler.lua). 0: host pointers,
 * and the call returns once out is written. */
enum { SAO_DIT_DEVICE_IO = 1 };
int sao_dit_forward(sao_ctx *ctx, sao_dit *m, const float *x, const float *t, const float *cross,
                    const float *uncond /* may be NULL */, const float *global, int64_t B, int64_t T,
                    int64_t L, double cfg_scale, double scale_phi, float *out /* out */,
                    float *hidden /* out, may be NULL */, int flags);
/* CUDA graphs for a device model's forward (kernels/cuda/dit_graph.cu): on (1) the device work of
 * a forward is captured on the second call with the same shapes and settings and replayed as one
 * launch after that, until anything is freed on the device (then it is captured anew). Not used
 * with hidden states or LoRA adapters, nor on the CPU. Off by default. on < 0 only asks; returns
 * the previous setting. Turning it on again retries a model whose capture failed. */
int sao_dit_graphs(sao_dit *m, int on);
/* Captures made, replays run, and why capture was given up ("" when it was not). */
void sao_dit_graph_stats(const sao_dit *m, int64_t *captures /* out */, int64_t *replays /* out */,
                         const char **why /* out */);
/* The prepended token's parts: timestep embedding temb [B, E] of t [B] and global embedding gemb
 * [B, E] of global [B, Dg] (the token is their sum). */
int sao_dit_token(sao_ctx *ctx, sao_dit *m, const float *t, const float *global, int64_t B,
                  float *temb /* out */, float *gemb /* out */);
/* Weights on a GPU (kernels/cuda/dit_device.cu): copies every parameter the forward reads (all
 * but the zero LayerNorm betas) into one block of CUDA device `device` (caching allocator) and
 * switches the model to the CUDA kernels. sao_dit_forward (unless given SAO_DIT_DEVICE_IO) and
 * sao_dit_token keep taking HOST pointers: the inputs go through a device workspace (cached,
 * grown as needed) and out/hidden come back. The host copies stay (sao_dit_params, state dicts); a parameter rebound after the
 * upload (a new checkpoint loaded) is uploaded again by the next call, but an in-place edit of a
 * host tensor is not seen until sao_dit_to_device runs again: on the model's own device it uploads
 * every parameter anew (on another device it moves the weights there). LoRA adapters follow the
 * model (sao_dit_lora_place) and training (sao_dit_train_*) runs on the model's device.
 * Without the CUDA backend: an error saying why ("built without CUDA", runtime/cuda_load.c). */
int sao_dit_to_device(sao_ctx *ctx, sao_dit *m, int device);
/* Bytes of the weight block sao_dit_to_device asks the allocator for (before its size class). */
int64_t sao_dit_device_block_bytes(const sao_dit *m);
/* Back to the CPU kernels and host weights; the device blocks go back to the cache. 0 on a host model.
 * Device weights handed out by sao_dit_device_tensor (trained on the GPU) are copied back into the
 * host tensors first. */
int sao_dit_to_host(sao_ctx *ctx, sao_dit *m);
/* The device copy of parameter `name` of a device model, as an f32 device tensor (a view into the
 * weight block: valid while the model stays on that device; free it as usual). Writing through it
 * changes what the forward uses: the optimiser of a GPU training run updates these. Marks the
 * model's device weights as newer than its host tensors (see sao_dit_sync_host). */
sao_tensor *sao_dit_device_tensor(sao_ctx *ctx, sao_dit *m, const char *name);
/* Copies the device weights back into the host tensors (those still uploaded; a parameter bound
 * anew since keeps its host tensor) when they were handed out by sao_dit_device_tensor; 0 and
 * nothing done otherwise (a host model, or one only used for inference). Before reading the host
 * tensors of a model trained on the GPU. */
int sao_dit_sync_host(sao_ctx *ctx, sao_dit *m);
/* on = 1: the bf16 GEMM mode keeps using a bf16 copy of the device weights (rounded once) while
 * they are handed out for writing, because their writer keeps it current: sao_cuda_adamw_multi and
 * sao_cuda_adamw_step rewrite the copies of the weights they update (a GPU training run turns this
 * on). Any other in-place write through sao_dit_device_tensor views is then not seen by the bf16
 * products until sao_dit_to_device is called again. on = 0: off (the default; the bf16 products
 * round the weights at every call while they are handed out); on = -1: only asks. Returns the
 * previous setting. */
int sao_dit_keep_bf16(sao_ctx *ctx, sao_dit *m, int on);
/* Something other than the optimiser wrote the device weights in place (a data-parallel run's
 * gather of the other ranks' updated shards): a bf16 copy kept by sao_dit_keep_bf16 is rounded
 * anew from them before the next product. */
void sao_dit_weights_written(sao_dit *m);
/* The CUDA device holding the weights, or -1 (host). */
int sao_dit_device(const sao_dit *m);


/* ---- samplers (sampler.c): per-step math; the loop is lua/sao/sampler.lua ------------------- */
typedef enum { SAO_SAMPLER_EULER = 0, SAO_SAMPLER_DPMPP_2M_SDE = 1, SAO_SAMPLER_DPMPP_3M_SDE = 2 } sao_sampler_kind;
/* k-diffusion get_sigmas_polyexponential: n values from sigma_max down to sigma_min, then 0 (n+1). */
int sao_sigmas_polyexponential(sao_ctx *ctx, int n, double sigma_min, double sigma_max, double rho,
                               double *out /* out [n+1] */);
/* den = x/(s^2+1) - s/sqrt(s^2+1) * v (VDenoiser, sigma_data 1). */
int sao_vdenoise(sao_ctx *ctx, int64_t n, const float *x, const float *v, double sigma, float *den /* out */);
/* One step sig -> sig_next updating x in place from den = D(x, sig); den1/den2 are the previous
 * denoised values (`have` of them valid), h1/h2 the previous steps in -log sigma; shifts the
 * history (den2 <- den1 <- den). noise (i.i.d. N(0,1), n values) is used by the SDE samplers
 * when eta != 0. sig_next == 0 sets x = den (the last step adds no noise). */
int sao_sample_step(sao_ctx *ctx, int kind, int64_t n, float *x /* in/out */, const float *den,
                    float *den1, float *den2, int have, double sig, double sig_next, double h1,
                    double h2, double eta, const float *noise);

/* ---- Oobleck VAE (vae.c): SAO's autoencoder (pretransform), encoder + VAE bottleneck + decoder --
 * Keys are upstream's without the checkpoint prefix (SAO: "pretransform.model."): encoder.layers.*,
 * decoder.layers.* with weight_g/weight_v/bias per conv, alpha/beta per Snake (SAO_SPEC 3).
 * Encoder and decoder share channels/c_mults/strides (true of every published Oobleck config);
 * the encoder emits 2*latent_dim channels (mean | scale). Bind every key, then sao_vae_prepare
 * folds the weight norm (encode/decode also fold on first use and after a rebind).
 * A batch runs one item at a time. Working memory per call, besides the folded weights (one
 * float per conv weight of the enabled parts: SAO 312 MB per part) and the caller's in/outputs:
 *   decode      3 buffers of the largest stage's C x T floats (SAO: the last, 128 x 2048 L):
 *               SAO: 3 MiB per latent frame, 3 GiB for 1024 frames (47.5 s)
 *   decode_chunked  the same for `chunk` frames + one window in/out, independent of L:
 *               SAO chunk 128: 386 MiB (+ the conv kernel's 8 MB im2col), for any length
 *   encode      3 buffers of the largest stage (SAO: the first, 128 x S): 1.5 KiB per sample,
 *               3 GiB for 2^21 samples;
 *               encode_chunked bounds it the same way as decode_chunked.
 * sao_vae_workspace_bytes returns the exact figure. One handle is not thread-safe. */
enum { SAO_VAE_ENCODER = 1, SAO_VAE_DECODER = 2, SAO_VAE_MAX_BLOCKS = 8 };
enum { SAO_VAE_SAMPLE = 0, SAO_VAE_MEAN = 1 };
typedef struct sao_vae_config {
    int in_channels;            /* audio channels into the encoder (SAO: 2) */
    int out_channels;           /* audio channels out of the decoder (SAO: 2) */
    int channels;               /* base width (SAO: 128) */
    int latent_dim;             /* bottleneck latent channels (SAO: 64; the encoder emits 128) */
    int n_blocks;               /* len(c_mults) = len(strides), 1..8 (SAO: 5) */
    int c_mults[8];             /* SAO: 1 2 4 8 16 (upstream prepends a 1 itself) */
    int strides[8];             /* SAO: 2 4 4 8 8 (the decoder runs them reversed) */
    int final_tanh;             /* decoder tanh (SAO: 0) */
    int parts;                  /* SAO_VAE_ENCODER | SAO_VAE_DECODER; 0 = both */
} sao_vae_config;
typedef struct sao_vae sao_vae;
sao_vae *sao_vae_new(sao_ctx *ctx, const sao_vae_config *cfg);
void sao_vae_free(sao_vae *m);
sao_params *sao_vae_params(sao_vae *m);
const sao_vae_config *sao_vae_get_config(const sao_vae *m);
int sao_vae_prepare(sao_ctx *ctx, sao_vae *m);             /* checks + folds W = g v / ||v|| */
int64_t sao_vae_downsampling_ratio(const sao_vae *m);      /* prod(strides) (SAO: 2048) */
int64_t sao_vae_encoded_len(const sao_vae *m, int64_t S);  /* latent frames for S samples */
int64_t sao_vae_decoded_len(const sao_vae *m, int64_t L);  /* samples for L latent frames */
/* bytes of activation workspace a call needs: decode (1) or encode (0), length in latent frames
 * (decode) or samples (encode), chunk in latent frames (0 = unchunked). */
int64_t sao_vae_workspace_bytes(const sao_vae *m, int decode, int64_t length, int64_t chunk);
void sao_vae_release_workspace(sao_vae *m);                /* frees it until the next call */
/* audio [B, in, S] -> latents [B, latent, L] (L = encoded_len(S)); mode SAO_VAE_SAMPLE:
 * z = mean + std * eps with eps [B, latent, L] N(0,1) (upstream always samples), SAO_VAE_MEAN:
 * z = mean. raw, when not NULL, receives the encoder output [B, 2*latent, L] (mean | scale);
 * latents may be NULL when only raw is wanted. */
int sao_vae_encode(sao_ctx *ctx, sao_vae *m, const float *audio, int64_t B, int64_t S, int mode,
                   const float *eps, float *latents /* out */, float *raw /* out, may be NULL */);
/* upstream encode_audio(chunked=True): windows of `chunk` latent frames (chunk * ratio samples)
 * overlapping by `overlap`, overlap/2 discarded at inner edges; S a multiple of the ratio. */
int sao_vae_encode_chunked(sao_ctx *ctx, sao_vae *m, const float *audio, int64_t B, int64_t S,
                           int mode, const float *eps, int64_t chunk, int64_t overlap,
                           float *latents /* out */, float *raw /* out, may be NULL */);
/* raw [B, 2*latent, L] -> z (per mode, eps as above), mean, std = softplus(scale) + 1e-4,
 * kl = mean over (B, L) of sum_c (mean^2 + std^2 - log std^2 - 1); every output may be NULL. */
int sao_vae_bottleneck(sao_ctx *ctx, const sao_vae *m, const float *raw, int64_t B, int64_t L,
                       int mode, const float *eps, float *z /* out */, float *mean /* out */,
                       float *std /* out */, double *kl /* out */);
/* latents [B, latent, L] -> audio [B, out, decoded_len(L)] (SAO: 2048 L samples) */
int sao_vae_decode(sao_ctx *ctx, sao_vae *m, const float *latents, int64_t B, int64_t L,
                   float *audio /* out */);
/* upstream decode_audio(chunked=True) (SAO_SPEC 3.5; SAO: chunk 128, overlap 32): windows of
 * `chunk` frames every chunk - overlap, the last flush with the end, overlap/2 frames discarded
 * at each inner edge. Equals the whole decode (to rounding) when the decoder's receptive field
 * is under overlap/2 frames (SAO: about 10 frames). L <= chunk decodes in one pass. */
int sao_vae_decode_chunked(sao_ctx *ctx, sao_vae *m, const float *latents, int64_t B, int64_t L,
                           int64_t chunk, int64_t overlap, float *audio /* out */);
/* Weights on a GPU (runtime/vae.c over kernels/cuda/glue.cu and the kernel twins): folds the weight norm if needed,
 * copies every folded conv weight, bias and Snake parameter into one block of CUDA device
 * `device` (caching allocator) and switches the handle to the CUDA kernels. encode, decode (and
 * their chunked forms) keep taking HOST pointers: each item is copied in, run in a device
 * workspace (cached, grown as needed; sao_vae_workspace_bytes plus one item's input and output)
 * and copied out; the bottleneck runs on the host. The host tensors stay bound; a parameter
 * rebound (or refolded) after the upload is uploaded again by the next call, but an in-place edit
 * of a host tensor is not seen until sao_vae_to_device runs again (on the handle's own device it
 * uploads everything anew). A CPU-only build answers "built without CUDA" (runtime/cuda_load.c). */
int sao_vae_to_device(sao_ctx *ctx, sao_vae *m, int device);
/* Back to the CPU kernels; the device blocks go back to the cache. 0 on a host handle. */
int sao_vae_to_host(sao_ctx *ctx, sao_vae *m);
/* The CUDA device holding the weights, or -1 (host). */
int sao_vae_device(const sao_vae *m);


/* ---- DiT training (dit_train.c): recorded forward + hand-written backward ------------------- */
typedef struct sao_dit_train sao_dit_train;
/* Plans and allocates activations for batch B, T latent frames, L context tokens. recompute 1
 * keeps one block record and re-runs each block's forward during the backward. */
sao_dit_train *sao_dit_train_new(sao_ctx *ctx, sao_dit *m, int64_t B, int64_t T, int64_t L, int recompute);
void sao_dit_train_free(sao_dit_train *tr);
int64_t sao_dit_train_bytes(const sao_dit_train *tr);          /* activations + gradients */
/* The same two arenas as the memory holds them: on a device, each rounded to the caching
 * allocator's size class (sao_cuda_size_class); on the host, sao_dit_train_bytes. */
int64_t sao_dit_train_device_bytes(const sao_dit_train *tr);
/* Sum of squares of every gradient in the arena (one pass on the trainer's device; the
 * gradients of the LayerNorm betas, never written, are zero): the squared global norm a GPU run
 * clips with, read back once per step. */
int sao_dit_train_grad_sumsq(sao_ctx *ctx, sao_dit_train *tr, double *out /* out */);
sao_params *sao_dit_train_grads(sao_dit_train *tr);            /* gradient tensors by parameter name */
int sao_dit_train_zero_grad(sao_ctx *ctx, sao_dit_train *tr);
/* As sao_dit_forward with cfg_scale 1 (the caller zeroes dropped context rows); keeps the inputs'
 * pointers until the backward. flags: SAO_DIT_DEVICE_IO for inputs and out on the trainer's device
 * (queued device copies; nothing waits), 0 for host buffers. */
int sao_dit_train_forward(sao_ctx *ctx, sao_dit_train *tr, const float *x, const float *t,
                          const float *cross, const float *global, float *out /* out [B, io, T] */, int flags);
/* dout [B, io, T] = d loss / d out; gradients accumulate into the grads registry, and into dx
 * [B, io, T], dcross [B, L, Dc], dglobal [B, Dg] when those are not NULL (host buffers). flags:
 * SAO_DIT_DEVICE_IO for a dout on the trainer's device (then dx, dcross, dglobal must be NULL). */
int sao_dit_train_backward(sao_ctx *ctx, sao_dit_train *tr, const float *dout,
                           float *dx /* out, accumulated */, float *dcross /* out, accumulated */,
                           float *dglobal /* out, accumulated */, int flags);

/* ---- T5 (tokenizer.c, t5.c): the prompt conditioner's tokenizer and encoder ------------------
 * Tokenizer: a SentencePiece unigram spiece.model, applied as the t5-base fast tokenizer does
 * (special tokens, precompiled-charsmap normalisation, whitespace split, U+2581 word prefix, Viterbi,
 * fused <unk>); ids are piece indices, then 100 <extra_id_N> sentinels. See tokenizer.c. */
typedef struct sao_t5_tokenizer sao_t5_tokenizer;
sao_t5_tokenizer *sao_t5_tokenizer_load(sao_ctx *ctx, const char *path);
/* `what` names the source in error messages (NULL: "spiece.model"). */
sao_t5_tokenizer *sao_t5_tokenizer_from_memory(sao_ctx *ctx, const void *data, size_t size, const char *what);
void sao_t5_tokenizer_free(sao_t5_tokenizer *tk);
int sao_t5_tokenizer_piece_count(const sao_t5_tokenizer *tk);   /* pieces in the model (t5-base 32000) */
int sao_t5_tokenizer_vocab_size(const sao_t5_tokenizer *tk);    /* + 100 sentinels (t5-base 32100) */
int sao_t5_tokenizer_special_id(const sao_t5_tokenizer *tk, const char *which);  /* "unk" "eos" "pad"; -1 */
/* The string of id into buf (NUL-terminated); -1 when id is out of range. */
int sao_t5_tokenizer_piece(const sao_t5_tokenizer *tk, int64_t id, char *buf, size_t cap);
/* Pieces of text[0..len) without </s> or padding; writes min(n, cap) ids, returns n (or -1). */
int64_t sao_t5_tokenizer_encode(sao_ctx *ctx, const sao_t5_tokenizer *tk, const char *text, size_t len,
                                int64_t *ids /* out [cap] */, int64_t cap);
/* The conditioner's form: ids [max_len] = pieces (at most max_len-1), </s>, then <pad> (0); mask
 * [max_len] (may be NULL) 1 on the pieces and </s>, 0 on padding. Returns the count of real tokens. */
int sao_t5_tokenize(sao_ctx *ctx, const sao_t5_tokenizer *tk, const char *text, size_t len, int64_t max_len,
                    int64_t *ids /* out */, int64_t *mask /* out, may be NULL */);

/* Encoder (HF T5EncoderModel; config from HF config.json). t5-base: vocab 32128, d_model 768, d_kv 64,
 * 12 heads, d_ff 3072, 12 layers, 32 buckets, max distance 128, eps 1e-6, ReLU FF. */
typedef struct sao_t5_config {
    int64_t vocab_size, d_model, d_kv, num_heads, d_ff, num_layers;
    int64_t num_buckets;        /* relative_attention_num_buckets (32) */
    int64_t max_distance;       /* relative_attention_max_distance (128) */
    float eps;                  /* layer_norm_epsilon (1e-6; 0 selects it) */
} sao_t5_config;
typedef struct sao_t5 sao_t5;
sao_t5 *sao_t5_new(sao_ctx *ctx, const sao_t5_config *cfg);
void sao_t5_free(sao_t5 *m);
sao_params *sao_t5_params(sao_t5 *m);   /* shared.weight, encoder.block.N...., encoder.final_layer_norm.weight */
const sao_t5_config *sao_t5_get_config(const sao_t5 *m);
/* ids [B, L], mask [B, L] (nonzero = real token; NULL: all real) -> out [B, L, d_model] =
 * last_hidden_state in fp32; zero_padding 1 applies SAO's post-processing (rows with mask 0 zeroed). */
int sao_t5_forward(sao_ctx *ctx, sao_t5 *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L,
                   int zero_padding, float *out /* out */);
/* Weights on a GPU (runtime/t5.c, kernels/cuda/t5_glue.cu): every parameter is copied into ONE
 * block of CUDA device `device` (caching allocator) and the encoder switches to the CUDA kernels.
 * sao_t5_forward keeps taking HOST ids/mask and filling a HOST output: the ids, the key mask and the
 * bucket list are copied in, the forward runs in a device workspace (cached, grown as needed) and
 * the output is copied out. The host tensors stay bound; a parameter rebound after the upload is
 * uploaded again by the next forward, but an in-place edit of a host tensor is not seen until
 * sao_t5_to_device runs again (on the encoder's own device it uploads every weight anew). Needs
 * every weight bound. A CPU-only build answers "built without CUDA" (runtime/cuda_load.c). */
int sao_t5_to_device(sao_ctx *ctx, sao_t5 *m, int device);
/* Back to the CPU kernels and host weights; the device blocks go back to the cache. 0 on a host encoder. */
int sao_t5_to_host(sao_ctx *ctx, sao_t5 *m);
/* The CUDA device holding the weights, or -1 (host). */
int sao_t5_device(const sao_t5 *m);
/* The bidirectional relative-position bucket of key j for query i: out [T, T] (i major). */
int sao_t5_relative_buckets(sao_ctx *ctx, int64_t T, int64_t num_buckets, int64_t max_distance,
                            int64_t *out /* out */);

/* ---- Conditioners (conditioners.c): NumberConditioner (seconds_start / seconds_total) ----------
 * e = Linear(1+F -> dim)([u, sin(2 pi u w), cos(2 pi u w)]), u = (clamp(v) - min) / (max - min).
 * SAO: output_dim 768, features 256 (w has 128 values), min 0, max 512. Keys: embedder.embedding.0.weights,
 * embedder.embedding.1.weight, embedder.embedding.1.bias (SAO prefix conditioner.conditioners.<id>.). */
typedef struct sao_number_cond sao_number_cond;
sao_number_cond *sao_number_cond_new(sao_ctx *ctx, int64_t output_dim, int64_t features, double min_val,
                                     double max_val);
void sao_number_cond_free(sao_number_cond *m);
sao_params *sao_number_cond_params(sao_number_cond *m);
/* values [B] -> u [B] (normalised, may be NULL), emb [B, output_dim]. */
int sao_number_cond_forward(sao_ctx *ctx, sao_number_cond *m, const double *values, int64_t B,
                            float *u /* out, may be NULL */, float *emb /* out */);
/* demb [B, dim] -> dw [F/2] (weights), dlin_w [dim, 1+F], dlin_b [dim], accumulated; any may be NULL. */
int sao_number_cond_backward(sao_ctx *ctx, sao_number_cond *m, const double *values, int64_t B,
                             const float *demb, float *dw /* out, accumulated */,
                             float *dlin_w /* out, accumulated */, float *dlin_b /* out, accumulated */);

#ifdef __cplusplus
}
#endif
#endif
