#!/usr/bin/env python3
"""bench/torch_dit.py: a PyTorch comparator for sao's GPU benchmarks (not part of sao).

Our own PyTorch version of Stable Audio Open 1.0's diffusion transformer, written from
../shared/SAO_SPEC.md section 5 (prepended global/time token, partial half-split RoPE, GQA
cross-attention, SwiGLU feed-forward, 1x1 pre/post convolutions). Weights are random (or sao's,
loaded with --mode check). Attention is F.scaled_dot_product_attention. torch.compile only with
--compile. Needs torch and nothing else. Prints one JSON line per measurement, like bench/*.lua.

  python3 bench/torch_dit.py --mode forward            one CFG forward (batch 1 doubled to 2), best of N
  python3 bench/torch_dit.py --mode sample             100 DPM++ 3M SDE steps with CFG (sao's default sampler)
  python3 bench/torch_dit.py --mode train --batch 16   forward + backward + AdamW step (ms/step; MFU with --peak-tflops)
  python3 bench/torch_dit.py --mode forward,sample     several modes in one process (the model is built once)
  python3 bench/torch_dit.py --mode check --weights W.safetensors --inputs I.safetensors
                                                       forward on sao's weights and inputs: max |torch - sao|
Options: --small (a small config, on the CPU by default), --device cpu|cuda, --dtype fp32|bf16|fp32,bf16,
--frames, --ctx, --steps, --cfg-scale, explicit sizes (--embed-dim, --depth, --heads, --io,
--cond-dim, --global-dim), --tf32, --compile, --checkpoint (per-block recompute in train mode).
bf16: inference runs with bf16 weights; training keeps fp32 weights under bf16 autocast.
"""
import argparse
import json
import math
import struct
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")   # torch without numpy is fine here
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# SAO 1.0 (checkpoints/sao-1.0.json) and the small config (checkpoints/tiny.json's DiT)
FULL = dict(io=64, embed_dim=1536, depth=24, heads=24, cond_dim=768, global_dim=1536, frames=1024, ctx=130)
SMALL = dict(io=16, embed_dim=128, depth=2, heads=2, cond_dim=64, global_dim=128, frames=256, ctx=130)
TIME_FEATURES = 256     # random Fourier features of t: 128 frequencies, cos then sin
FF_MULT = 4


# ---- the model ----------------------------------------------------------------------------------
# Attribute names follow the upstream state_dict keys (../shared/sao_state_dict_keys.txt, under
# "model.model."), so a checkpoint in that layout (sao's exports) loads with load_state_dict.

class LayerNorm(nn.Module):
    """LayerNorm with a gain and a bias that is a zero buffer (SAO_SPEC 5.3.1)."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.gamma.to(x.dtype), self.beta.to(x.dtype), 1e-5)


class Rotary(nn.Module):
    """inv_freq for the rotated part of each head: 10000^(-2i/rot), i < rot/2."""

    def __init__(self, rot):
        super().__init__()
        self.register_buffer("inv_freq", 10000.0 ** (-torch.arange(0, rot, 2, dtype=torch.float32) / rot))

    def tables(self, n, device):
        pos = torch.arange(n, device=device, dtype=torch.float32)
        ang = pos[:, None] * self.inv_freq.float()[None, :]
        ang = torch.cat([ang, ang], dim=-1)            # (n, rot): the two halves share the angles
        return ang.cos(), ang.sin()


def apply_rope(u, cos, sin):
    """Rotates the first rot dims of each head (half-split pairs i, i + rot/2), in fp32."""
    rot = cos.shape[-1]
    head, rest = u[..., :rot].float(), u[..., rot:]
    a, b = head.chunk(2, dim=-1)
    turned = torch.cat([-b, a], dim=-1)
    head = head * cos + turned * sin
    return torch.cat([head.to(u.dtype), rest], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, N, E = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(B, N, self.heads, E // self.heads).transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(o.transpose(1, 2).reshape(B, N, E))


class CrossAttention(nn.Module):
    """Queries from the E-wide stream; keys and values from the context (cond_dim wide, so
    cond_dim / head_dim K/V heads), query head i reading K/V head i // group."""

    def __init__(self, dim, heads, cond_dim):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.kv_heads = cond_dim // self.head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(cond_dim, 2 * cond_dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, c):
        B, N, E = x.shape
        M = c.shape[1]
        q = self.to_q(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.to_kv(c).chunk(2, dim=-1)
        group = self.heads // self.kv_heads
        k, v = (z.reshape(B, M, self.kv_heads, self.head_dim).transpose(1, 2).repeat_interleave(group, dim=1)
                for z in (k, v))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(o.transpose(1, 2).reshape(B, N, E))


class GatedIn(nn.Module):
    """Linear to 2F with bias; the first F are the values, the last F the SiLU gate."""

    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.silu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.ff = nn.Sequential(GatedIn(dim, inner), nn.Identity(), nn.Linear(inner, dim), nn.Identity())

    def forward(self, x):
        return self.ff(x)


class Block(nn.Module):
    def __init__(self, dim, heads, cond_dim):
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads)
        self.cross_attend_norm = LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads, cond_dim)
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim, FF_MULT * dim)

    def forward(self, h, c, cos, sin):
        h = h + self.self_attn(self.pre_norm(h), cos, sin)
        h = h + self.cross_attn(self.cross_attend_norm(h), c)
        return h + self.ff(self.ff_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E, H = cfg["embed_dim"], cfg["heads"]
        self.project_in = nn.Linear(cfg["io"], E, bias=False)
        self.project_out = nn.Linear(E, cfg["io"], bias=False)
        self.rotary_pos_emb = Rotary(max(E // H // 2, 32))
        self.layers = nn.ModuleList(Block(E, H, cfg["cond_dim"]) for _ in range(cfg["depth"]))
        self.recompute = False

    def forward(self, h, c):
        cos, sin = self.rotary_pos_emb.tables(h.shape[1], h.device)   # position 0 = the prepended token
        for layer in self.layers:
            if self.recompute and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(layer, h, c, cos, sin, use_reentrant=False)
            else:
                h = layer(h, c, cos, sin)
        return self.project_out(h)


class TimeFeatures(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n // 2, 1))

    def forward(self, t):
        ang = 2 * math.pi * t.float()[:, None] * self.weight.float()[:, 0][None, :]
        return torch.cat([ang.cos(), ang.sin()], dim=-1)


def mlp(i, o, bias):
    return nn.Sequential(nn.Linear(i, o, bias=bias), nn.SiLU(), nn.Linear(o, o, bias=bias))


class DiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E, io = cfg["embed_dim"], cfg["io"]
        self.timestep_features = TimeFeatures(TIME_FEATURES)
        self.to_timestep_embed = mlp(TIME_FEATURES, E, True)
        self.to_cond_embed = mlp(cfg["cond_dim"], cfg["cond_dim"], False)
        self.to_global_embed = mlp(cfg["global_dim"], E, False)
        self.preprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        self.transformer = Transformer(cfg)

    def forward(self, x, t, cross, glob):
        """x (B, io, T), t (B,), cross (B, L, cond_dim), glob (B, global_dim) -> v (B, io, T)."""
        dt = self.preprocess_conv.weight.dtype
        c = self.to_cond_embed(cross.to(dt))
        token = self.to_global_embed(glob.to(dt)) + self.to_timestep_embed(self.timestep_features(t).to(dt))
        x = x.to(dt)
        x = x + self.preprocess_conv(x)
        h = self.transformer.project_in(x.transpose(1, 2))
        h = torch.cat([token[:, None, :].to(h.dtype), h], dim=1)
        o = self.transformer(h, c).transpose(1, 2)[:, :, 1:]
        return o + self.postprocess_conv(o)


def cfg_forward(model, x, t, cross, glob, scale):
    """Classifier-free guidance with a doubled batch: the second half gets an all-zero context
    and the same global conditioning; uncond + scale * (cond - uncond). Returns fp32."""
    if scale == 1:
        return model(x, t, cross, glob).float()
    B = x.shape[0]
    v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cross, torch.zeros_like(cross)]),
              torch.cat([glob, glob])).float()
    cond, uncond = v[:B], v[B:]
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def randomize(model, seed):
    """sao's random_params distribution: gains 1, zero biases, Fourier frequencies N(0,1),
    matrices N(0, 1/fan_in)."""
    for name, p in sorted(model.named_parameters()):
        g = torch.Generator(device=p.device).manual_seed(seed)
        seed += 1
        if name.endswith("gamma"):
            p.fill_(1)
        elif name.endswith("bias"):
            p.zero_()
        elif name.startswith("timestep_features"):
            p.copy_(torch.randn(p.shape, device=p.device, generator=g))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, device=p.device, generator=g) / math.sqrt(fan_in))


def to_bf16(model):
    """bf16 weights for the matmuls; gains, Fourier frequencies and RoPE stay fp32."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            m.to(torch.bfloat16)


# ---- FLOPs (2 per multiply-add; matmuls and attention only) -------------------------------------

def forward_flops(cfg, batch, frames, ctx):
    E, Dc, io, Fi = cfg["embed_dim"], cfg["cond_dim"], cfg["io"], FF_MULT * cfg["embed_dim"]
    N, L = frames + 1, ctx
    block = (2 * N * E * 3 * E + 4 * N * N * E + 2 * N * E * E            # self-attention
             + 2 * N * E * E + 2 * L * Dc * 2 * Dc + 4 * N * L * E + 2 * N * E * E   # cross-attention
             + 2 * N * E * 2 * Fi + 2 * N * Fi * E)                      # SwiGLU feed-forward
    rest = 2 * frames * io * E * 2 + 2 * frames * io * io * 2 + 2 * L * Dc * Dc * 2
    return batch * (cfg["depth"] * block + rest)


# ---- the sampler (SAO_SPEC 8.2-8.4: the arithmetic of sao's default dpmpp-3m-sde) ----------------

def sigmas(n, smin, smax, rho=1.0):
    ramp = (1 - torch.arange(n, dtype=torch.float64) / (n - 1)) ** rho
    s = torch.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin))
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).tolist()


def sample(denoise_v, noise, steps, smin=0.3, smax=500.0, gen=None):
    """DPM-Solver++(3M) SDE, eta 1, over a v-prediction model (VDenoiser, sigma_data 1)."""
    sig = sigmas(steps, smin, smax)
    x = noise * sig[0]
    d1 = d2 = None
    h1 = h2 = None
    for i in range(steps):
        s, sn = sig[i], sig[i + 1]
        c_in, c_skip, c_out = 1 / math.sqrt(s * s + 1), 1 / (s * s + 1), -s / math.sqrt(s * s + 1)
        t = math.atan(s) * 2 / math.pi
        den = c_skip * x + c_out * denoise_v(x * c_in, t)
        if sn == 0:
            x = den
            break
        h = math.log(s) - math.log(sn)
        hh = 2 * h
        e = math.exp(-hh)
        x = e * x + (1 - e) * den
        phi2 = (e - 1) / hh + 1
        phi3 = phi2 / hh - 0.5
        if d2 is not None:
            r0, r1 = h1 / h, h2 / h
            d10 = (den - d1) / r0
            d11 = (d1 - d2) / r1
            x = x + phi2 * (d10 + (d10 - d11) * r0 / (r0 + r1)) - phi3 * ((d10 - d11) / (r0 + r1))
        elif d1 is not None:
            x = x + phi2 * ((den - d1) / (h1 / h))
        xi = torch.randn(x.shape, device=x.device, generator=gen)
        x = x + xi * (sn * math.sqrt(1 - math.exp(-2 * h)))
        d2, d1 = d1, den
        h2, h1 = h1, h
    return x


# ---- safetensors (read only; the format is an 8-byte header length, a JSON header, raw data) ----

ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32}


def load_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = ST_DTYPES[info["dtype"]]
        raw = bytearray(blob[base + a:base + b])
        t = torch.frombuffer(raw, dtype=dt) if b > a else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"])
    return out


# ---- timing -------------------------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    """Seconds of fn(): CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def parse_args(argv):
    p = argparse.ArgumentParser(description="PyTorch comparator of sao's DiT (see the file's docstring)")
    p.add_argument("--mode", default="forward", help="forward, sample, train, check, or a comma list")
    p.add_argument("--small", action="store_true", help="the small config (CPU unless --device)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="fp32", help="fp32, bf16, or fp32,bf16 (each in turn, one model build)")
    p.add_argument("--batch", type=int, default=None, help="train batch (16); sample/forward batch before CFG (1)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--ctx", type=int, default=None, help="context tokens (130 = 128 T5 + 2 seconds)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (forward, train)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (train)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in fp32 mode (off: real fp32, as sao)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--checkpoint", action="store_true", help="per-block activation recompute in train mode")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--weights", help="check mode: sao's DiT weights (upstream names, prefix model.model. or none)")
    p.add_argument("--inputs", help="check mode: x, t, cross, global, cfg_scale and sao's output 'out'")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    for k in FULL:
        if k not in ("frames", "ctx"):
            p.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    return p.parse_args(argv)


def main(argv):
    a = parse_args(argv)
    cfg = dict(SMALL if a.small else FULL)
    for k in cfg:
        v = getattr(a, k, None)
        if v is not None:
            cfg[k] = v
    device = torch.device(a.device or ("cpu" if a.small or not torch.cuda.is_available() else "cuda"))
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    frames, ctx = cfg["frames"], cfg["ctx"]
    label = "E%d depth%d H%d io%d Dc%d T%d L%d" % (cfg["embed_dim"], cfg["depth"], cfg["heads"], cfg["io"],
                                                   cfg["cond_dim"], frames, ctx)
    dtypes = a.dtype.split(",")
    for dt in dtypes:
        if dt not in ("fp32", "bf16"):
            sys.exit("torch_dit.py: --dtype: expected fp32, bf16 or a comma list of them, got " + dt)
    common = dict(bench="torch_dit", config=label, device=device.type, gpu=gpu, torch=torch.__version__,
                  compiled=a.compile, tf32=a.tf32)

    def emit(**kw):
        line = dict(common)
        line.update(kw)
        print(json.dumps(line), flush=True)

    modes = a.mode.split(",")
    if "check" in modes:
        model = DiT(cfg)
        sd = {k[len("model.model."):] if k.startswith("model.model.") else k: v
              for k, v in load_safetensors(a.weights).items()}
        model.load_state_dict(sd, strict=True)
        model = model.to(device)
    else:
        with device:                                  # built and initialised on the device itself
            model = DiT(cfg)
        randomize(model, a.seed)
    run = model
    if a.compile:
        run = torch.compile(model)
    gen = torch.Generator(device=device).manual_seed(a.seed)

    def inputs(batch):
        x = torch.randn(batch, cfg["io"], frames, device=device, generator=gen)
        cross = torch.randn(batch, ctx, cfg["cond_dim"], device=device, generator=gen)
        glob = torch.randn(batch, cfg["global_dim"], device=device, generator=gen)
        return x, cross, glob

    if "check" in modes:
        inp = load_safetensors(a.inputs)
        x, t, cross, glob = (inp[k].to(device) for k in ("x", "t", "cross", "global"))
        scale = float(inp["cfg_scale"].reshape(-1)[0])
        with torch.no_grad():
            v = cfg_forward(run, x, t, cross, glob, scale)
        ref = inp["out"].to(device)
        diff = (v - ref).abs()
        emit(mode="check", dtype="fp32", config=label.replace("T%d " % frames, "T%d " % x.shape[-1]), cfg_scale=scale,
             max_abs_diff=diff.max().item(), mean_abs_diff=diff.mean().item(),
             max_abs_ref=ref.abs().max().item(), rel=diff.max().item() / max(ref.abs().max().item(), 1e-30))

    def inference(dtype):
        """One CFG forward (best of --repeat) and/or the --steps sampling loop, in dtype."""
        if dtype == "bf16":
            to_bf16(model)
        B = a.batch or 1
        x, cross, glob = inputs(B)
        with torch.no_grad():
            def fwd(xx, tt):
                return cfg_forward(run, xx, torch.full((B,), tt, device=device), cross, glob, a.cfg_scale)

            for _ in range(a.warmup):
                fwd(x, 0.5)
            sync(device)
            if "forward" in modes:
                times = sorted(timed(device, lambda: fwd(x, 0.5)) for _ in range(a.repeat))
                fl = forward_flops(cfg, 2 * B if a.cfg_scale != 1 else B, frames, ctx)
                emit(mode="forward", dtype=dtype, batch=B, cfg_batch=2 * B, seconds=times[0], ms=times[0] * 1e3,
                     median_ms=times[len(times) // 2] * 1e3, tflops=fl / times[0] / 1e12)
            if "sample" in modes:
                noise = torch.randn(B, cfg["io"], frames, device=device, generator=gen)
                out = {}

                def loop():
                    out["z"] = sample(fwd, noise, a.steps, gen=gen)

                sec = timed(device, loop)
                fl = a.steps * forward_flops(cfg, 2 * B, frames, ctx)
                emit(mode="sample", dtype=dtype, sampler="dpmpp-3m-sde", steps=a.steps, cfg_scale=a.cfg_scale,
                     batch=B, seconds=sec, ms=sec * 1e3, ms_per_step=sec / a.steps * 1e3, tflops=fl / sec / 1e12,
                     finite=bool(torch.isfinite(out["z"]).all().item()))
        model.float()

    def train(dtype):
        """Forward + backward + AdamW at batch --batch (16): fp32, or bf16 autocast over fp32 weights."""
        B = a.batch or 16
        model.float().train()
        model.transformer.recompute = a.checkpoint
        opt_kw = dict(lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-3, eps=1e-8)
        if device.type == "cuda":
            opt_kw["fused"] = True
        opt = torch.optim.AdamW(model.parameters(), **opt_kw)
        z, cross, glob = inputs(B)

        def step():
            t = torch.rand(B, device=device, generator=gen)
            eps = torch.randn(z.shape, device=device, generator=gen)
            al, si = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
            keep = (torch.rand(B, 1, 1, device=device, generator=gen) >= 0.1).float()   # CFG dropout 10%
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                v = run(al * z + si * eps, t, cross * keep, glob)
            loss = F.mse_loss(v.float(), al * eps - si * z)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(a.warmup):
            step()
        sync(device)
        times = sorted(timed(device, step) for _ in range(a.repeat))
        fl = 3 * forward_flops(cfg, B, frames, ctx)
        line = dict(mode="train", dtype=dtype, batch=B, frames=frames, recompute=a.checkpoint, seconds=times[0],
                    ms_per_step=times[0] * 1e3, median_ms=times[len(times) // 2] * 1e3,
                    tflops=fl / times[0] / 1e12, params=sum(p.numel() for p in model.parameters()))
        if a.peak_tflops:
            line["mfu"] = fl / times[0] / 1e12 / a.peak_tflops
        if device.type == "cuda":
            line["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        del opt
        model.eval()
        emit(**line)

    for dtype in dtypes:
        if "forward" in modes or "sample" in modes:
            inference(dtype)
        if "train" in modes:
            train(dtype)

if __name__ == "__main__":
    main(sys.argv[1:])
