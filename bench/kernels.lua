-- bench/kernels.lua — throughput of the CPU kernels, one JSON line per measurement:
--   {"bench":"kernels","op":…, "shape":…, "ms":…, "gflops":… or "gbps":…, "vs":…, "ratio":…}
-- Each figure comes with its comparator measured in the same run: OpenBLAS sgemm GFLOP/s on the
-- same matmul shape for linear and conv ("vs":"sgemm"), the peak sgemm GFLOP/s of a large square
-- product for attention, and a plain copy (memcpy GB/s) for the elementwise kernels.
-- Run: ./sao bench/kernels.lua   or   luajit bench/kernels.lua (from the repository root).
-- SAO_BENCH_QUICK=1 runs smaller shapes.
local ffi = require "ffi"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local C, ctx
do
  local ok, sao = pcall(require, "sao")
  if ok and type(sao) == "table" and sao.C and sao.ctx then
    C, ctx = sao.C, sao.ctx
  else
    local ok2, sffi = pcall(require, "sao.ffi")
    if ok2 then
      C, ctx = sffi.C, sffi.ctx
    else
      local f = assert(io.open(os.getenv("SAO_CDEF") or "build/sao_cdef.h", "rb"))
      ffi.cdef(f:read("*a"))
      f:close()
      C = ffi.load(os.getenv("SAO_LIB") or "build/libsao.so", true)
      ctx = ffi.gc(C.sao_ctx_new(), C.sao_ctx_free)
    end
  end
end

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } sao_bench_timespec;
int clock_gettime(int clk, sao_bench_timespec *ts);
void *memcpy(void *dst, const void *src, size_t n);
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
]]
local blas = ffi.C
if not pcall(function() return blas.cblas_sgemm end) then
  blas = ffi.load("openblas")
end
local ROW, NOTRANS, TRANS = 101, 111, 112

local ts = ffi.new("sao_bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- best wall time of fn over enough repetitions (at least `min_s` seconds and 5 runs)
local function timeit(fn, min_s)
  min_s = min_s or 0.5
  fn()  -- warm-up
  local best, total, runs = math.huge, 0, 0
  while total < min_s or runs < 5 do
    local t0 = now()
    fn()
    local dt = now() - t0
    best = math.min(best, dt)
    total, runs = total + dt, runs + 1
  end
  return best
end

local function check(rc)
  if rc ~= 0 then error(ffi.string(C.sao_ctx_error(ctx)), 2) end
end

local function buf(n, scale)
  local f = ffi.new("float[?]", n)
  scale = scale or 1
  for i = 0, n - 1 do f[i] = scale * (((i * 7919) % 1000) / 500 - 1) end
  return f
end

local function emit(t)
  local parts = {}
  for _, k in ipairs { "bench", "op", "shape", "threads", "ms", "gflops", "gbps", "vs", "vs_value", "ratio" } do
    local v = t[k]
    if v ~= nil then
      if type(v) == "number" then
        parts[#parts + 1] = string.format('"%s":%.4g', k, v)
      else
        parts[#parts + 1] = string.format('"%s":"%s"', k, v)
      end
    end
  end
  print("{" .. table.concat(parts, ",") .. "}")
  io.stdout:flush()
end

local quick = os.getenv("SAO_BENCH_QUICK") == "1"
local threads = C.sao_ctx_threads(ctx)
-- the comparators call OpenBLAS directly: let a kernel call apply ctx's thread count first
do
  local one, out = ffi.new("float[1]", 1), ffi.new("float[1]")
  check(C.sao_linear_forward(ctx, one, one, nil, 1, 1, 1, 0, out))
end

-- sgemm GFLOP/s for C[m,n] = A[m,k] B^T (B [n,k]), the linear layout
local function sgemm_gflops(m, n, k)
  local a, b, c = buf(m * k), buf(n * k), ffi.new("float[?]", m * n)
  local t = timeit(function() blas.cblas_sgemm(ROW, NOTRANS, TRANS, m, n, k, 1, a, k, b, k, 0, c, n) end)
  return 2 * m * n * k / t / 1e9
end

local peak_n = quick and 512 or 1536
local peak = sgemm_gflops(peak_n, peak_n, peak_n)
emit { bench = "kernels", op = "sgemm_peak", shape = string.format("%dx%dx%d", peak_n, peak_n, peak_n),
       threads = threads, gflops = peak }

-- linear: the DiT's FF-in shape (rows = 2 x 1025 tokens)
do
  local n, din, dout = quick and 512 or 2050, 1536, quick and 1536 or 6144
  local x, w, bb, y = buf(n * din), buf(dout * din, 0.03), buf(dout), ffi.new("float[?]", n * dout)
  local t = timeit(function() check(C.sao_linear_forward(ctx, x, w, bb, n, din, dout, 0, y)) end)
  local g = 2 * n * din * dout / t / 1e9
  local ref = sgemm_gflops(n, dout, din)
  emit { bench = "kernels", op = "linear_forward", shape = string.format("N%d in%d out%d", n, din, dout),
         threads = threads, ms = t * 1e3, gflops = g, vs = "sgemm", vs_value = ref, ratio = g / ref }
  local dy, dx, dw, db = buf(n * dout), ffi.new("float[?]", n * din), ffi.new("float[?]", dout * din), ffi.new("float[?]", dout)
  t = timeit(function() check(C.sao_linear_backward(ctx, dy, x, w, n, din, dout, dx, dw, db)) end)
  g = 4 * n * din * dout / t / 1e9
  emit { bench = "kernels", op = "linear_backward", shape = string.format("N%d in%d out%d", n, din, dout),
         threads = threads, ms = t * 1e3, gflops = g, vs = "sgemm", vs_value = ref, ratio = g / ref }
end

-- attention: DiT self-attention (T = M = 1025, D = 64) and cross-attention (M = 130, GQA 2:1)
local function attn(name, B, H, Hkv, T, M, D)
  local q, k, v = buf(B * H * T * D), buf(B * Hkv * M * D), buf(B * Hkv * M * D)
  local out, lse = ffi.new("float[?]", B * H * T * D), ffi.new("float[?]", B * H * T)
  local a = ffi.new("sao_attn_desc", { B = B, H = H, Hkv = Hkv, T = T, M = M, D = D })
  local t = timeit(function() check(C.sao_attention_forward(ctx, a, q, k, v, nil, nil, out, lse)) end)
  local flops = 4 * B * H * T * M * D
  local shape = string.format("B%d H%d Hkv%d T%d M%d D%d", B, H, Hkv, T, M, D)
  emit { bench = "kernels", op = name .. "_forward", shape = shape, threads = threads, ms = t * 1e3,
         gflops = flops / t / 1e9, vs = "sgemm_peak", vs_value = peak, ratio = flops / t / 1e9 / peak }
  local dout = buf(B * H * T * D)
  local dq, dk, dv = ffi.new("float[?]", B * H * T * D), ffi.new("float[?]", B * Hkv * M * D), ffi.new("float[?]", B * Hkv * M * D)
  t = timeit(function() check(C.sao_attention_backward(ctx, a, q, k, v, nil, nil, out, lse, dout, dq, dk, dv, nil)) end)
  emit { bench = "kernels", op = name .. "_backward", shape = shape, threads = threads, ms = t * 1e3,
         gflops = 2.5 * flops / t / 1e9, vs = "sgemm_peak", vs_value = peak, ratio = 2.5 * flops / t / 1e9 / peak }
end
attn("attention_self", 1, quick and 2 or 8, quick and 2 or 8, 1025, 1025, 64)
attn("attention_cross", 1, quick and 2 or 8, quick and 1 or 4, 1025, 130, 64)

-- conv1d: an Oobleck residual unit's k7 conv at 128 channels, and the decoder's k16 s8 upsampler
do
  local cin, T = 128, quick and 16384 or 65536
  local x, w, bb = buf(cin * T), buf(cin * cin * 7, 0.03), buf(cin)
  local y = ffi.new("float[?]", cin * T)
  local t = timeit(function() check(C.sao_conv1d_forward(ctx, x, w, bb, 1, cin, T, cin, 7, 1, 9, 3, 1, y)) end)
  local flops = 2 * cin * cin * 7 * T
  local ref = sgemm_gflops(cin, 4096, cin * 7)
  emit { bench = "kernels", op = "conv1d_forward", shape = string.format("C%d->%d T%d k7 d3", cin, cin, T),
         threads = threads, ms = t * 1e3, gflops = flops / t / 1e9, vs = "sgemm", vs_value = ref,
         ratio = flops / t / 1e9 / ref }
  local cti, cto, Ti = 256, 128, quick and 2048 or 8192
  local xt, wt, yt = buf(cti * Ti), buf(cti * cto * 8, 0.03), ffi.new("float[?]", cto * Ti * 4)
  t = timeit(function() check(C.sao_conv_transpose1d_forward(ctx, xt, wt, nil, 1, cti, Ti, cto, 8, 4, 2, 0, 1, 1, yt)) end)
  flops = 2 * cti * cto * 8 * Ti
  ref = sgemm_gflops(cto * 8, Ti, cti)
  emit { bench = "kernels", op = "conv_transpose1d_forward", shape = string.format("C%d->%d T%d k8 s4", cti, cto, Ti),
         threads = threads, ms = t * 1e3, gflops = flops / t / 1e9, vs = "sgemm", vs_value = ref,
         ratio = flops / t / 1e9 / ref }
end

-- elementwise: GB/s against memcpy of the same bytes
do
  local n = quick and 2 ^ 20 or 2 ^ 23
  local x, y = buf(n), ffi.new("float[?]", n)
  local tcopy = timeit(function() ffi.C.memcpy(y, x, n * 4) end)
  local copy_gbps = 2 * n * 4 / tcopy / 1e9
  local function ew(op, bytes, fn)
    local t = timeit(fn)
    emit { bench = "kernels", op = op, shape = string.format("n%d", n), threads = threads, ms = t * 1e3,
           gbps = bytes / t / 1e9, vs = "memcpy", vs_value = copy_gbps, ratio = bytes / t / 1e9 / copy_gbps }
  end
  local al, be = buf(128, 0.5), buf(128, 0.5)
  ew("snake_forward", 2 * n * 4, function() check(C.sao_snake_forward(ctx, x, al, be, 1, 128, n / 128, y)) end)
  ew("silu_forward", 2 * n * 4, function() check(C.sao_silu_forward(ctx, x, n, y)) end)
  local gam = buf(1536)
  ew("layernorm_forward", 2 * math.floor(n / 1536) * 1536 * 4, function() check(C.sao_layernorm_forward(ctx, x, gam, nil, math.floor(n / 1536), 1536, 1e-5, y, nil, nil)) end)
  ew("swiglu_forward", 1.5 * n * 4, function() check(C.sao_swiglu_forward(ctx, x, n / 2048, 1024, y)) end)
end

-- the optimiser: one fused call (AdamW + EMA over every tensor, sao_adamw_multi) against the
-- per-tensor kernels (an AdamW and an EMA call per tensor), on 300 tensors of mixed sizes
do
  local total = quick and 2 ^ 20 or 2 ^ 23
  local sizes, sum = {}, 0
  for i = 1, 300 do sizes[i] = (i % 3 == 0) and math.floor(total / 150) or 64 + i; sum = sum + sizes[i] end
  local list = ffi.new("sao_optim_tensor[300]")
  local keep = {}
  for i, n in ipairs(sizes) do
    local e, b = list[i - 1], { buf(n, 0.1), buf(n, 0.01), buf(n, 0.001), buf(n, 0), buf(n, 0.1) }
    keep[i] = b                           -- the arrays stay alive; the list holds raw pointers
    e.param, e.grad, e.m, e.v, e.ema, e.n = b[1], b[2], b[3], b[4], b[5], n
  end
  local h = ffi.new("sao_optim_hyper")
  h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step, h.grad_scale, h.ema_decay = 1e-5, 0.9, 0.999, 1e-8, 1e-3, 10, 1, 0.999
  local tf = timeit(function() check(C.sao_adamw_multi(ctx, list, 300, h)) end)
  local tp = timeit(function()
    for i = 0, 299 do
      local e = list[i]
      check(C.sao_adamw_step(ctx, e.param, e.grad, e.m, e.v, e.n, 1e-5, 0.9, 0.999, 1e-8, 1e-3, 10, 1))
      check(C.sao_ema_update(ctx, e.ema, e.param, e.n, 0.999))
    end
  end)
  emit { bench = "kernels", op = "adamw_ema_fused", shape = string.format("300 tensors, %d weights", sum),
         threads = threads, ms = tf * 1e3, gbps = sum * 36 / tf / 1e9, vs = "per-tensor adamw + ema",
         vs_value = tp * 1e3, ratio = tp / tf }
end
