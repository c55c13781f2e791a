-- bench/gpu_train.lua — one full fine-tuning step of the DiT on a GPU at SAO 1.0's shape (embed
-- 1536, depth 24, 24 heads, 1024 latent frames = 47 s, 130 context tokens, batch 16 or
-- $SAO_BENCH_BATCH; random weights): forward, backward, clipping, AdamW and EMA through sao.train
-- with device = "cuda" (fp32 weights and state; the linear layers' products in $SAO_BENCH_PRECISION,
-- bf16 by default: sao.cuda.precision). Reports ms/step, the achieved TFLOP/s (3x the forward's matmul and
-- attention FLOPs), MFU against the GPU's dense bf16 peak (the issue's measure; goal 0.45 on an
-- H100) and against cuBLASLt's fp32 GEMM rate measured in the same run (the comparator), and the
-- memory plan's predicted device peak next to the measured one. When python3 has PyTorch with
-- CUDA, bench/torch_dit.py times the same step (same shapes, AdamW, bf16 autocast for bf16
-- products, else fp32) in the same run: torch_ms_per_step and ratio (torch / sao: above 1, sao is
-- faster). Then one attention backward at the step's self-attention shape, the bf16 tensor-core
-- kernel against the cuBLAS path (what = "attention_backward_bf16"). JSON lines.
-- Without a usable GPU it prints one "skipped" line and exits 0 (it runs inside `make bench`).
-- SAO_BENCH_SMALL=1: a small config (embed 256, depth 2, 256 frames, batch 2) to check the script.
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now
local C = sao.C

local function emit(t)
  t.bench = "gpu_train"
  print(cjson.encode(t))
  io.stdout:flush()
end

if not sao.cuda.available() then
  emit { skipped = sao.cuda.unavailable() or "no CUDA device is visible" }
  return
end
local gpu_name = sao.cuda.devices()[1].name

local small = os.getenv("SAO_BENCH_SMALL") == "1"
local cfg = small and { io_channels = 64, embed_dim = 256, depth = 2, num_heads = 4, cond_token_dim = 128,
  global_cond_dim = 256 } or sao.dit.SAO_1_0
local B = tonumber(os.getenv("SAO_BENCH_BATCH")) or (small and 2 or 16)
local T, L = small and 256 or 1024, 130

-- Device-side timing: a blocking read of one value waits for everything queued before it.
local sync_out = ffi.new("double[1]")
local function sync(ptr) sao.check(C.sao_cuda_sumsq(sao.ctx, ptr, 1, sync_out)) end

-- Seconds per call of fn (device work ending in a write to ptr): after one warm-up call, the best
-- of `rounds` timings of `reps` calls each, each timing ended by a sync.
local function device_time(fn, ptr, reps, rounds)
  fn(); sync(ptr)
  local best = math.huge
  for _ = 1, rounds do
    local t0 = now()
    for _ = 1, reps do fn() end
    sync(ptr)
    best = math.min(best, (now() - t0) / reps)
  end
  return best
end

-- The comparator: cuBLASLt's fp32 GEMM rate on an 8192 x 8192 x 8192 product, on this device.
local function sgemm_tflops()
  local n = small and 2048 or 8192
  local a = sao.randn { n, n, seed = 1 }:to("cuda")
  local w = sao.randn { n, n, seed = 2 }:to("cuda")
  local y = sao.zeros(n, n):to("cuda")
  local function run() sao.check(C.sao_cuda_linear_forward(sao.ctx, a:data(), w:data(), nil, n, n, n, 0, y:data())) end
  return 2 * n ^ 3 / device_time(run, y:data(), 5, 3) / 1e12
end

local dit = sao.dit.new(cfg)
dit:load(require("sao.model").random_params(dit:params(), 1))
local items = {}
for i = 1, 4 do
  items[i] = { latents = sao.randn { { cfg.io_channels, T }, seed = i },
    cross = sao.randn { { L, cfg.cond_token_dim }, seed = 10 + i }, global = sao.randn { { cfg.global_cond_dim }, seed = 20 + i } }
end
local ok, tr = pcall(sao.train.new, { dit = dit, data = sao.data.memory(items, { batch = B }), batch = B, frames = T,
  context = L, quiet = true, schedule = "constant", device = "cuda", recompute = os.getenv("SAO_BENCH_RECOMPUTE") == "1",
  precision = os.getenv("SAO_BENCH_PRECISION") or "bf16" })
if not ok then
  emit { error = tostring(tr), gpu = gpu_name, batch = B, hint = "try a smaller SAO_BENCH_BATCH or SAO_BENCH_RECOMPUTE=1" }
  return
end
local first = tr:step()                     -- warm-up: every block allocated, the GEMM heuristics cached
local best = math.huge
for _ = 1, 3 do
  local r = tr:step()
  best = math.min(best, r.ms / 1000)        -- a step ends with host reads (loss, norms): it is synchronous
end

-- The optimiser alone on the run's tensors: the fused AdamW + EMA (+ bf16 copies) step, one
-- launch per 48 tensors (sao_cuda_adamw_multi), against the per-tensor kernels (an AdamW and an
-- EMA launch per tensor; the bf16 copies then still to be made)
do
  local opt, ema = tr.opt, tr.ema
  local lists = opt:lists(ema)
  local h = ffi.new("sao_optim_hyper")
  h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, h.grad_scale, h.ema_decay = 1e-5, 0.9, 0.999, 1e-8, 1e-3, 10, 1, 0.999
  local any = lists[1].list[0].param
  local function fused()
    for _, g in ipairs(lists) do sao.check(C.sao_cuda_adamw_multi(sao.ctx, g.list, g.n, h)) end
  end
  local function per_tensor()
    for _, k in ipairs(opt.names) do
      local p, n = opt.params[k], opt.params[k]:numel()
      sao.check(C.sao_cuda_adamw_step(sao.ctx, p:data(), opt.grads[k]:data(), opt.state.m[k]:data(),
        opt.state.v[k]:data(), n, 1e-5, 0.9, 0.999, 1e-8, 1e-3, 10, 1))
      sao.check(C.sao_cuda_ema_update(sao.ctx, ema.shadow[k]:data(), p:data(), n, 0.999))
    end
  end
  local tf, tp = device_time(fused, any, 1, 5), device_time(per_tensor, any, 1, 5)
  local elems = 0
  for _, k in ipairs(opt.names) do elems = elems + opt.params[k]:numel() end
  emit { what = "optimizer_step", gpu = gpu_name, tensors = #opt.names, elements = elems,
    fused_ms = tf * 1000, per_tensor_ms = tp * 1000, ratio = tp / tf,
    fused_gbps = elems * 38 / tf / 1e9 }   -- bytes per weight: p, g, m, v, ema read (20), p, m, v, ema written (16), bf16 copy (2)
end

local E, N, Dc, F = cfg.embed_dim, T + 1, cfg.cond_token_dim, 4 * cfg.embed_dim
local per_layer = B * (2 * N * E * 3 * E + 2 * N * E * E + 4 * N * N * E + 2 * N * E * E + 2 * L * Dc * 2 * Dc +
  4 * N * L * E + 2 * N * E * E + 2 * N * E * 2 * F + 2 * N * F * E)
local fwd = cfg.depth * per_layer + B * 2 * N * E * cfg.io_channels * 2 + B * 2 * L * Dc * Dc * 2
local tflops = 3 * fwd / best / 1e12
local precision = sao.cuda.precision("fp32")   -- the comparator is the fp32 GEMM
local sgemm = sgemm_tflops()
-- dense bf16 peak by the vendors' datasheets (H100/H200 SXM 989 TFLOP/s, A100 312); override with
-- SAO_BENCH_PEAK_TFLOPS for another part
local peak = tonumber(os.getenv("SAO_BENCH_PEAK_TFLOPS")) or
  ((gpu_name:match("H100") or gpu_name:match("H200")) and 989 or gpu_name:match("A100") and 312 or nil)
local plan = tr.plan.device

-- PyTorch on the same GPU, the same step (SAO_BENCH_TORCH=0: skip)
local torch = { why = "disabled (SAO_BENCH_TORCH=0)" }
if os.getenv("SAO_BENCH_TORCH") ~= "0" then
  local py = io.popen("python3 -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null")
  local has = py and py:read("*a") or ""
  if py then py:close() end
  if not has:match("True") then
    torch.why = "unavailable (python3 with CUDA torch not found)"
  else
    tr = nil
    collectgarbage("collect")            -- the trainer's device memory back before torch needs its own
    sao.cuda.empty_cache()
    local here = (arg and arg[0] or "bench/gpu_train.lua"):match("^(.*)/[^/]*$") or "bench"
    local cmd = string.format("timeout %d python3 %s/torch_dit.py --mode train --device cuda --batch %d --frames %d " ..
      "--ctx %d --dtype %s --embed-dim %d --depth %d --heads %d --io %d --cond-dim %d --global-dim %d --repeat 3 " ..
      "--warmup 1 2>&1", tonumber(os.getenv("SAO_BENCH_TORCH_TIMEOUT") or "200"), here, B, T, L,
      precision == "bf16" and "bf16" or "fp32", cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.io_channels,
      cfg.cond_token_dim, cfg.global_cond_dim)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local okj, v = pcall(cjson.decode, out:match("(%b{})%s*$") or "")
    if okj and v.mode == "train" then torch.ms, torch.dtype = v.ms_per_step, v.dtype
    else torch.why = "failed: " .. out:sub(-300):gsub("%s+", " ") end
  end
end

emit {
  what = "train_step", gpu = gpu_name, precision = precision,
  config = string.format("E%d depth%d H%d T%d B%d L%d", E, cfg.depth, cfg.num_heads, T, B, L),
  ms_per_step = best * 1000, first_step_ms = first.ms, tflops = tflops,
  sgemm_fp32_tflops = sgemm, ratio_to_sgemm = tflops / sgemm,
  bf16_peak_tflops = peak, mfu = peak and tflops / peak or nil, goal_mfu = 0.45,
  predicted_peak_mb = plan.predicted_peak / 2 ^ 20, measured_peak_mb = plan.measured_peak / 2 ^ 20,
  torch_ms_per_step = torch.ms, torch_dtype = torch.dtype, ratio = torch.ms and torch.ms / (best * 1000) or nil,
  torch = torch.why,
  plan_error = (plan.measured_peak - plan.predicted_peak) / plan.predicted_peak,
}

-- One attention backward at the training step's self-attention shape (B x 24 heads, T = M = 1025,
-- D = 64; small config: its own), in the bf16 mode, with dq, dk, dv accumulated: the bf16
-- tensor-core flash backward (attention_mma_bwd.cu, delta [B, H, T] its only scratch) against
-- sao.cuda.attention_impl("cublas") (P and dS recomputed into two [B, H, T, M] scratches:
-- scratch_mb), and cuDNN's SDPA backward (attention_impl "cudnn": cudnn_ms, cudnn_ratio = bf16 kernel /
-- cuDNN). ratio = cublas / bf16 kernel (> 1: the new kernel is faster); tflops counts the
-- backward's 5 matmuls of 2 B H T M D each (S, dP, dV, dK, dQ; the new kernel computes S and dP
-- twice, once per gradient kernel, not counted).
do
  tr = nil
  collectgarbage("collect")
  sao.cuda.empty_cache()
  local H, N, D = cfg.num_heads, T + 1, math.floor(cfg.embed_dim / cfg.num_heads)
  local nq = B * H * N * D
  local desc = ffi.new("sao_attn_desc", { B = B, H = H, Hkv = H, T = N, M = N, D = D })
  local t = {}
  for i, n in ipairs { "q", "k", "v", "dout", "dq", "dk", "dv" } do t[n] = sao.randn { nq, seed = 40 + i }:to("cuda") end
  t.out, t.lse = sao.zeros(nq):to("cuda"), sao.zeros(B * H * N):to("cuda")
  local was_p, was_i = sao.cuda.precision("bf16"), sao.cuda.attention_impl()
  sao.check(C.sao_cuda_attention_forward(sao.ctx, desc, t.q:data(), t.k:data(), t.v:data(), nil, nil, t.out:data(),
    t.lse:data()))
  local function bwd()
    sao.check(C.sao_cuda_attention_backward(sao.ctx, desc, t.q:data(), t.k:data(), t.v:data(), nil, nil, t.out:data(),
      t.lse:data(), t.dout:data(), t.dq:data(), t.dk:data(), t.dv:data(), nil))
  end
  local secs = {}
  local _, b0 = sao.cuda.sdpa()
  for _, impl in ipairs { "cublas", "auto", "cudnn" } do
    sao.cuda.attention_impl(impl)
    secs[impl] = device_time(bwd, t.dq:data(), 5, 3)
  end
  local _, b1, why = sao.cuda.sdpa()
  sao.cuda.precision(was_p)
  sao.cuda.attention_impl(was_i)
  local flops = 5 * 2 * B * H * N * N * D
  emit { what = "attention_backward_bf16", gpu = gpu_name, B = B, H = H, T = N, M = N, D = D,
    ms = secs.auto * 1000, cublas_ms = secs.cublas * 1000, ratio = secs.cublas / secs.auto,
    tflops = flops / secs.auto / 1e12, cublas_tflops = flops / secs.cublas / 1e12,
    scratch_mb = 2 * 4 * B * H * N * N / 2 ^ 20,
    cudnn_ms = secs.cudnn * 1000, cudnn_ratio = secs.auto / secs.cudnn, cudnn_ran = b1 > b0,
    cudnn_why = b1 == b0 and why or nil,
    note = "ms: the bf16 tensor-core flash backward; cublas_ms: sao.cuda.attention_impl('cublas') and its " ..
      "two [B,H,T,M] scratches (scratch_mb); ratio = cublas / bf16 kernel; cudnn_ms: cuDNN's SDPA backward " ..
      "with its bf16 copies (cudnn_ran false: refused, cudnn_why, the flash kernel's time); cudnn_ratio = " ..
      "bf16 kernel / cuDNN (> 1: cuDNN is faster)" }
  for _, x in pairs(t) do x:free() end
end
