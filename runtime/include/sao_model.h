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
 * -> out [B, io, T] (v prediction). cfg_scale != 1 runs the doubled CFG batch (zero context for
 * the unconditional half); scale_phi is the CFG rescale amount (0 = off). hidden, when not NULL,
 * receives the conditional half's hidden state after every block: [depth, B, 1+T, E]. */
int sao_dit_forward(sao_ctx *ctx, sao_dit *m, const float *x, const float *t, const float *cross,
                    const float *global, int64_t B, int64_t T, int64_t L, double cfg_scale,
                    double scale_phi, float *out /* out */, float *hidden /* out, may be NULL */);


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

#ifdef __cplusplus
}
#endif
#endif
