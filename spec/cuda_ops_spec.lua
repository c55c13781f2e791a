-- cuda_ops_spec.lua — the CUDA twins of sao_cuda_ops.h (kernels/cuda/norms.cu, elementwise.cu,
-- optim.cu) against their CPU kernels (kernels/cpu), tag gpu. Random inputs with odd sizes (N=37,
-- C=129, partial tiles and chunks); backward d-buffers start non-zero so accumulation is checked;
-- every device buffer carries 64 guard floats on each side, checked untouched after the call.
-- Without a usable GPU each device test is reported as pending (skipped), never as passed; the
-- argument-check and "no CUDA" tests run everywhere.
--
-- Tolerances: |gpu - cpu| <= abs + rel * |cpu| per element. The figures are derived from the
-- arithmetic (each comment says how) and have NOT yet been measured on a GPU. (The kernels' logic
-- — indexing, guards, reductions, accumulation — has been run through this spec on a CPU
-- emulation of the CUDA launches, host libm on both sides, where every check passes with its
-- error below the limit; device libm adds its few ulp on top.) When this spec first runs on a
-- GPU, write the measured max error (the failure message prints it) next to each limit and keep
-- the limit a small margin above it.
local ffi = require "ffi"
local sao = require "sao"
require "spec.support.near"

local C, ctx = sao.C, sao.ctx
local gpu = require "support.gpu"
local has_gpu = gpu.has_gpu

local gpu_it = gpu.it(it, pending)

---------------------------------------------------------------------------------------------------
-- helpers (host tensors are flat f32 tensors; shapes live in the kernel arguments)

local function uniform(n, seed, lo, hi)
  local t = sao.rand { n, seed = seed }
  local d = t:data()
  for i = 0, n - 1 do d[i] = lo + (hi - lo) * d[i] end
  return t
end

local function normal(n, seed, scale, shift)
  local t = sao.randn { n, seed = seed }
  local d = t:data()
  for i = 0, n - 1 do d[i] = d[i] * (scale or 1) + (shift or 0) end
  return t
end

local function amax(t)
  local d, m = t:data(), 0
  for i = 0, t:numel() - 1 do m = math.max(m, math.abs(d[i])) end
  return m
end

-- tolerance relative to the tensor's scale: abs = r * max|want|
local function scaled(want, r) return { abs = r * amax(want), rel = r } end

local guarded = require("support.guarded").new()
local G, back = guarded.put, guarded.back

local function garbage(n) return sao.full({ n }, 777.0) end

---------------------------------------------------------------------------------------------------
describe("CUDA ops #gpu", function()
  after_each(guarded.release)

  it("says clearly when the twins cannot run: a CPU-only build, or no usable GPU", function()
    if not sao.has_cuda() then
      local x = sao.zeros(4)
      local calls = {
        function() return C.sao_cuda_relu_forward(ctx, x:data(), 4, x:data()) end,
        function() return C.sao_cuda_layernorm_forward(ctx, x:data(), x:data(), nil, 1, 4, 1e-5, x:data(), nil, nil) end,
        function() return C.sao_cuda_adamw_step(ctx, x:data(), x:data(), x:data(), x:data(), 4, 1e-3, 0.9, 0.999, 1e-8, 0, 1, 1) end,
        function() return C.sao_cuda_sumsq(ctx, x:data(), 4, ffi.new("double[1]")) end,
      }
      for _, f in ipairs(calls) do
        assert.error_matches(function() sao.check(f()) end, gpu.no_cuda_reason())
      end
    elseif not has_gpu then
      -- CUDA compiled in but no device (or no driver): valid arguments reach the CUDA runtime, whose
      -- error comes back through ctx with the hint to check the GPU; nothing aborts.
      local x = sao.zeros(4)
      assert.error_matches(function() sao.check(C.sao_cuda_relu_forward(ctx, x:data(), 4, x:data())) end,
        "cuda_relu_forward: .*GPU")
      assert.error_matches(function() sao.check(C.sao_cuda_sumsq(ctx, x:data(), 4, ffi.new("double[1]"))) end,
        "cuda_sumsq: .*GPU")
    else
      assert.is_true(C.sao_cuda_device_count() > 0)
    end
  end)

  it("checks arguments as the CPU kernels do, word for word (no device needed)", function()
    local x = sao.zeros(8)
    local p = x:data()
    -- each case: the kernel and its bad arguments after ctx (nil = NULL), the same for both twins
    local function case(name, ...) return { name = name, n = select("#", ...), ... } end
    local cases = {
      case("layernorm_forward", nil, nil, nil, -1, 4, 1e-5, nil, nil, nil),
      case("layernorm_forward", nil, p, nil, 2, 4, 1e-5, p, nil, nil),
      case("layernorm_backward", p, p, nil, p, p, 2, 4, p, nil, nil),
      case("rmsnorm_forward", p, p, 2, 0, 1e-6, p, nil),
      case("rmsnorm_backward", p, p, p, nil, 2, 4, nil, p),
      case("rope_forward", p, 1, 1, 1, 8, nil, 3, 0, nil, 10000, p),
      case("rope_forward", p, 1, 1, 1, 8, nil, 4, 0, nil, 0, p),
      case("rope_backward", p, 1, 0, 1, 8, nil, 4, 0, nil, 10000, p),
      case("gelu_forward", p, -1, 0, p),
      case("gelu_backward", p, nil, 3, 1, p),
      case("relu_forward", nil, 3, p),
      case("relu_backward", p, p, 3, nil),
      case("softplus_forward", p, -2, p),
      case("softplus_backward", nil, p, 3, p),
      case("swiglu_forward", p, 2, 0, p),
      case("swiglu_backward", p, nil, 2, 3, p),
      case("snake_forward", p, p, p, 1, 0, 4, p),
      case("snake_backward", p, p, nil, p, 1, 2, 4, p, nil, nil),
      case("fourier_features_forward", p, p, 1, 0, p),
      case("fourier_features_backward", p, nil, p, 2, 3, p, p),
      case("number_features_forward", nil, p, 2, 3, p),
      case("number_features_backward", p, p, p, -1, 3, nil, nil),
      case("transpose_forward", p, -1, 2, 2, 0, p),
      case("transpose_forward", p, 1, 2, 2, 0, p),
      case("mse_forward", p, p, 0, ffi.new("double[1]")),
      case("mse_backward", p, p, 4, 1.0, nil),
      case("adamw_step", p, p, p, p, 4, 1e-3, 0.9, 0.999, 1e-8, 0, 0, 1),
      case("adamw_step", p, p, p, p, 4, 1e-3, 1.0, 0.999, 1e-8, 0, 1, 1),
      case("ema_update", p, p, 4, 1.5),
      case("sumsq", p, -1, ffi.new("double[1]")),
      case("sumsq", p, 3, nil),
    }
    local function message(fname, args)
      local rc = C[fname](ctx, unpack(args, 1, args.n))
      local m = ffi.string(C.sao_ctx_error(ctx))
      C.sao_ctx_clear_error(ctx)
      return rc, m
    end
    for _, args in ipairs(cases) do
      local name = args.name
      local rc, want = message("sao_" .. name, args)
      assert.equal(-1, rc, name .. ": the CPU kernel accepted bad arguments")
      local grc, got = message("sao_cuda_" .. name, args)
      assert.equal(-1, grc, name .. ": the CUDA twin accepted bad arguments")
      if sao.has_cuda() then
        assert.equal("cuda_" .. want, got)
      else
        assert.matches("^cuda_" .. name .. ": .*" .. gpu.no_cuda_reason(), got)
      end
    end
  end)

  gpu_it("refuses a host pointer with a message instead of faulting the device", function()
    local x = sao.zeros(16)
    local gy, py = G(sao.zeros(16))
    assert.error_matches(function() sao.check(C.sao_cuda_relu_forward(ctx, x:data(), 16, py)) end,
      "cuda_relu_forward: x is host memory")
    assert.error_matches(function()
      sao.check(C.sao_cuda_layernorm_forward(ctx, py, x:data(), nil, 1, 16, 1e-5, py, nil, nil))
    end, "cuda_layernorm_forward: gamma is host memory")
    -- and the device still works afterwards
    local x2, want = normal(16, 5), sao.zeros(16)
    sao.check(C.sao_relu_forward(ctx, x2:data(), 16, want:data()))
    local _, px = G(x2)
    sao.check(C.sao_cuda_relu_forward(ctx, px, 16, py))
    assert.tensor_near(want, back(gy, 16), { abs = 0 })
  end)

  -- ---- norms ---------------------------------------------------------------------------------------
  gpu_it("layernorm forward (beta, no beta, N=37 C=129 and N=3 C=1536)", function()
    for _, s in ipairs { { 37, 129, true }, { 3, 1536, false }, { 5, 1, true } } do
      local n, c, with_beta = s[1], s[2], s[3]
      local x, gamma = normal(n * c, 1, 3, 1), normal(c, 2, 0.5, 1)
      local beta = with_beta and normal(c, 3) or nil
      local y, mean, rstd = sao.zeros(n * c), sao.zeros(n), sao.zeros(n)
      sao.check(C.sao_layernorm_forward(ctx, x:data(), gamma:data(), beta and beta:data(), n, c, 1e-5,
                                        y:data(), mean:data(), rstd:data()))
      local gx, px = G(x)
      local _, pg = G(gamma)
      local _, pb = G(beta or sao.zeros(1))
      local gy, py = G(garbage(n * c))
      local gm, pm = G(garbage(n))
      local gr, pr = G(garbage(n))
      sao.check(C.sao_cuda_layernorm_forward(ctx, px, pg, beta and pb or nil, n, c, 1e-5, py, pm, pr))
      -- mean/rstd: the same double sums in another order, rounded to fp32: equal or 1 ulp.
      -- y: fp32 (x - mu) * rstd * gamma (+ beta), FMA contraction may differ: ~2 ulp of |y| <= 12.
      assert.tensor_near(mean, back(gm, n), { abs = 1e-7, rel = 2.5e-7 })
      assert.tensor_near(rstd, back(gr, n), { abs = 0, rel = 2.5e-7 })
      assert.tensor_near(y, back(gy, n * c), { abs = 2e-6, rel = 2e-6 })
      assert.tensor_near(x, back(gx, n * c), { abs = 0 })   -- the input is left alone
      -- mean and rstd are optional
      sao.check(C.sao_cuda_layernorm_forward(ctx, px, pg, beta and pb or nil, n, c, 1e-5, py, nil, nil))
      assert.tensor_near(y, back(gy, n * c), { abs = 2e-6, rel = 2e-6 })
    end
  end)

  gpu_it("layernorm backward accumulates dx, dgamma, dbeta (N=300 C=129: two row chunks)", function()
    local n, c = 300, 129
    local x, gamma, dy = normal(n * c, 11, 2, -0.5), normal(c, 12, 0.5, 1), normal(n * c, 13)
    local mean, rstd = sao.zeros(n), sao.zeros(n)
    sao.check(C.sao_layernorm_forward(ctx, x:data(), gamma:data(), nil, n, c, 1e-5, sao.zeros(n * c):data(),
                                      mean:data(), rstd:data()))
    local dx0, dg0, db0 = normal(n * c, 14), normal(c, 15), normal(c, 16)
    local dx, dg, db = dx0:clone(), dg0:clone(), db0:clone()
    sao.check(C.sao_layernorm_backward(ctx, dy:data(), x:data(), gamma:data(), mean:data(), rstd:data(),
                                       n, c, dx:data(), dg:data(), db:data()))
    local _, pdy = G(dy)
    local _, px = G(x)
    local _, pg = G(gamma)
    local _, pm = G(mean)
    local _, pr = G(rstd)
    local gdx, pdx = G(dx0)
    local gdg, pdg = G(dg0)
    local gdb, pdb = G(db0)
    sao.check(C.sao_cuda_layernorm_backward(ctx, pdy, px, pg, pm, pr, n, c, pdx, pdg, pdb))
    -- dx: row sums in double rounded to fp32 (equal or 1 ulp), then fp32 per element on values
    -- |dx| <~ 10: ~2 ulp.
    assert.tensor_near(dx, back(gdx, n * c), { abs = 4e-6, rel = 2e-6 })
    -- dgamma, dbeta: the CPU sums 300 fp32 terms in fp32 (error ~ sqrt(300) * 6e-8 * |partial sum|
    -- ~ 2e-5 relative to the column scale), the GPU in double: 1e-5 of the scale.
    assert.tensor_near(dg, back(gdg, c), scaled(dg, 1e-5))
    assert.tensor_near(db, back(gdb, c), scaled(db, 1e-5))
    -- a NULL d-buffer is skipped: dx only, then dbeta only
    sao.check(C.sao_cuda_layernorm_backward(ctx, pdy, px, pg, pm, pr, n, c, pdx, nil, nil))
    sao.check(C.sao_cuda_layernorm_backward(ctx, pdy, px, nil, pm, pr, n, c, nil, nil, pdb))
    sao.check(C.sao_layernorm_backward(ctx, dy:data(), x:data(), gamma:data(), mean:data(), rstd:data(),
                                       n, c, dx:data(), nil, nil))
    sao.check(C.sao_layernorm_backward(ctx, dy:data(), x:data(), nil, mean:data(), rstd:data(),
                                       n, c, nil, nil, db:data()))
    assert.tensor_near(dx, back(gdx, n * c), { abs = 8e-6, rel = 4e-6 })   -- two accumulations
    assert.tensor_near(dg, back(gdg, c), scaled(dg, 1e-5))                  -- untouched
    assert.tensor_near(db, back(gdb, c), scaled(db, 2e-5))
  end)

  gpu_it("rmsnorm forward and backward (N=37 C=129; N=300 for dgamma)", function()
    for _, s in ipairs { { 37, 129 }, { 300, 129 }, { 2, 1 } } do
      local n, c = s[1], s[2]
      local x, gamma, dy = normal(n * c, 21, 2, 0.3), normal(c, 22, 0.5, 1), normal(n * c, 23)
      local y, rstd = sao.zeros(n * c), sao.zeros(n)
      sao.check(C.sao_rmsnorm_forward(ctx, x:data(), gamma:data(), n, c, 1e-6, y:data(), rstd:data()))
      local dx0, dg0 = normal(n * c, 24), normal(c, 25)
      local dx, dg = dx0:clone(), dg0:clone()
      sao.check(C.sao_rmsnorm_backward(ctx, dy:data(), x:data(), gamma:data(), rstd:data(), n, c,
                                       dx:data(), dg:data()))
      local _, px = G(x)
      local _, pg = G(gamma)
      local _, pdy = G(dy)
      local gy, py = G(garbage(n * c))
      local gr, pr = G(garbage(n))
      local gdx, pdx = G(dx0)
      local gdg, pdg = G(dg0)
      sao.check(C.sao_cuda_rmsnorm_forward(ctx, px, pg, n, c, 1e-6, py, pr))
      -- rstd: a double sum in another order rounded to fp32 (<= 1 ulp); y = gamma * (x * rstd): ~2 ulp
      local grstd = back(gr, n)
      assert.tensor_near(rstd, grstd, { abs = 0, rel = 2.5e-7 })
      assert.tensor_near(y, back(gy, n * c), { abs = 1e-6, rel = 2e-6 })
      -- the backward from the CPU's rstd, so only the backward's own differences count
      local _, pr2 = G(rstd)
      sao.check(C.sao_cuda_rmsnorm_backward(ctx, pdy, px, pg, pr2, n, c, pdx, pdg))
      -- dx as layernorm's; dgamma: the CPU's fp32 column sum over n rows vs double (see above)
      assert.tensor_near(dx, back(gdx, n * c), { abs = 4e-6, rel = 2e-6 })
      assert.tensor_near(dg, back(gdg, c), scaled(dg, 1e-5))
    end
  end)

  -- ---- RoPE ----------------------------------------------------------------------------------------
  local function inv_freq_table(half, rot_dim, base)
    local t = sao.zeros(half)
    for i = 0, half - 1 do t:data()[i] = base ^ (-2 * i / rot_dim) end
    return t
  end

  gpu_it("rope forward/backward, contiguous [B,H,T,D] = [2,3,37,64], rot_dim 32, out of place", function()
    local B, H, T, D, rot = 2, 3, 37, 64, 32
    local n = B * H * T * D
    local x = normal(n, 31, 2)
    local invf = inv_freq_table(rot / 2, rot, 10000)
    local y = garbage(n)
    sao.check(C.sao_rope_forward(ctx, x:data(), B, H, T, D, nil, rot, 3, invf:data(), 0, y:data()))
    local _, px = G(x)
    local _, pi = G(invf)
    local gy, py = G(garbage(n))
    sao.check(C.sao_cuda_rope_forward(ctx, px, B, H, T, D, nil, rot, 3, pi, 0, py))
    -- identical fp32 angles and fp32-rounded cos/sin (device vs glibc double libm: equal after
    -- rounding); x1 cos - x2 sin with |x| < 10 may differ by FMA contraction: 2 ulp of 10
    assert.tensor_near(y, back(gy, n), { abs = 2e-6, rel = 1e-6 })
    -- backward: dx = R(-theta) dy is NOT accumulated (garbage in dx is overwritten); inv_freq NULL
    local dx = garbage(n)
    sao.check(C.sao_rope_backward(ctx, x:data(), B, H, T, D, nil, rot, 0, nil, 10000, dx:data()))
    local gdx, pdx = G(garbage(n))
    sao.check(C.sao_cuda_rope_backward(ctx, px, B, H, T, D, nil, rot, 0, nil, 10000, pdx))
    -- inv_freq = (float)pow(10000, -2i/32) on both: device pow and glibc pow agree after rounding
    assert.tensor_near(dx, back(gdx, n), { abs = 2e-6, rel = 1e-6 })
  end)

  gpu_it("rope in place on q and k slices of a fused qkv [B,T,3,H,D] (D=10, rot_dim 6, strides)", function()
    local B, T, H, D, rot = 2, 37, 3, 10, 6
    local n = B * T * 3 * H * D
    local qkv = normal(n, 41, 1.5)
    local st = ffi.new("int64_t[3]", T * 3 * H * D, D, 3 * H * D)
    local cpu = qkv:clone()
    local gq, pq = G(qkv)
    for part = 0, 1 do   -- q, then k (v untouched)
      local off = part * H * D
      sao.check(C.sao_rope_forward(ctx, cpu:data() + off, B, H, T, D, st, rot, 5, nil, 10000,
                                   cpu:data() + off))
      sao.check(C.sao_cuda_rope_forward(ctx, pq + off, B, H, T, D, st, rot, 5, nil, 10000, pq + off))
    end
    -- as the contiguous case; the pass-through dims and v must be bit-identical (checked by the
    -- same comparison: they are copied or untouched)
    assert.tensor_near(cpu, back(gq, n), { abs = 2e-6, rel = 1e-6 })
    -- and back again: the backward in place restores the input up to rounding on both sides
    for part = 0, 1 do
      local off = part * H * D
      sao.check(C.sao_rope_backward(ctx, cpu:data() + off, B, H, T, D, st, rot, 5, nil, 10000,
                                    cpu:data() + off))
      sao.check(C.sao_cuda_rope_backward(ctx, pq + off, B, H, T, D, st, rot, 5, nil, 10000, pq + off))
    end
    assert.tensor_near(cpu, back(gq, n), { abs = 4e-6, rel = 2e-6 })
    assert.tensor_near(qkv, back(gq, n), { abs = 1e-5, rel = 1e-5 })   -- R(-t) R(t) = I, fp32
  end)

  -- ---- activations ---------------------------------------------------------------------------------
  -- fwd(x, n, y) / bwd(dy, x, n, dx) pairs with extra trailing arguments inserted before the output
  local function check_unary(name, x, extra, tol_y, tol_dx)
    local n = x:numel()
    local dy, dx0 = normal(n, 51), normal(n, 52)
    local y, dx = sao.zeros(n), dx0:clone()
    local fwd, bwd = C["sao_" .. name .. "_forward"], C["sao_" .. name .. "_backward"]
    local gfwd, gbwd = C["sao_cuda_" .. name .. "_forward"], C["sao_cuda_" .. name .. "_backward"]
    local function call_f(f, px, py) if extra then return f(ctx, px, n, extra, py) end return f(ctx, px, n, py) end
    local function call_b(f, pdy, px, pdx)
      if extra then return f(ctx, pdy, px, n, extra, pdx) end
      return f(ctx, pdy, px, n, pdx)
    end
    sao.check(call_f(fwd, x:data(), y:data()))
    sao.check(call_b(bwd, dy:data(), x:data(), dx:data()))
    local gx, px = G(x)
    local gy, py = G(garbage(n))
    local _, pdy = G(dy)
    local gdx, pdx = G(dx0)
    sao.check(call_f(gfwd, px, py))
    sao.check(call_b(gbwd, pdy, px, pdx))
    assert.tensor_near(y, back(gy, n), tol_y)
    assert.tensor_near(dx, back(gdx, n), tol_dx)
    -- in place: y = f(x) into x
    sao.check(call_f(gfwd, px, px))
    assert.tensor_near(y, back(gx, n), tol_y)
  end

  gpu_it("gelu, erf and tanh forms (n=4133, x in [-6, 6])", function()
    local x = uniform(4133, 61, -6, 6)
    -- erff / tanhf / expf: device vs glibc within 2 ulp; |y| <= 6, |dx| ~ 1 + dy: a few ulp
    check_unary("gelu", x, 0, { abs = 1e-6, rel = 1e-6 }, { abs = 2e-6, rel = 2e-6 })
    check_unary("gelu", x, 1, { abs = 1e-6, rel = 1e-6 }, { abs = 2e-6, rel = 2e-6 })
  end)

  gpu_it("relu (n=4133), exact", function()
    check_unary("relu", normal(4133, 62), nil, { abs = 0 }, { abs = 0 })
  end)

  gpu_it("softplus across the threshold (n=4133, x in [-30, 30])", function()
    -- log1pf(expf(x)) and dy/(1+expf(-x)): device vs glibc within a few ulp (relative, down to
    -- y ~ 1e-13 at x = -30); x > 20 is an exact pass-through on both
    check_unary("softplus", uniform(4133, 63, -30, 30), nil, { abs = 0, rel = 1e-6 },
                { abs = 1e-6, rel = 1e-6 })
  end)

  gpu_it("swiglu forward/backward (N=37 F=129)", function()
    local n, f = 37, 129
    local p, dy, dp0 = normal(n * 2 * f, 71, 2), normal(n * f, 72), normal(n * 2 * f, 73)
    local y, dp = sao.zeros(n * f), dp0:clone()
    sao.check(C.sao_swiglu_forward(ctx, p:data(), n, f, y:data()))
    sao.check(C.sao_swiglu_backward(ctx, dy:data(), p:data(), n, f, dp:data()))
    local _, pp = G(p)
    local gy, py = G(garbage(n * f))
    local _, pdy = G(dy)
    local gdp, pdp = G(dp0)
    sao.check(C.sao_cuda_swiglu_forward(ctx, pp, n, f, py))
    sao.check(C.sao_cuda_swiglu_backward(ctx, pdy, pp, n, f, pdp))
    -- sigmoid from the CPU's vectorised exp (< 1e-7 rel) vs device expf (2 ulp); products of
    -- values <~ 8 in magnitude: a few ulp
    assert.tensor_near(y, back(gy, n * f), { abs = 1e-6, rel = 2e-6 })
    assert.tensor_near(dp, back(gdp, n * 2 * f), { abs = 2e-6, rel = 2e-6 })
  end)

  -- ---- SnakeBeta -----------------------------------------------------------------------------------
  gpu_it("snake forward/backward with log-scale alpha, beta ([B,C,T] = [3,5,37] and [2,129,1])", function()
    for _, s in ipairs { { 3, 5, 37 }, { 2, 129, 1 } } do
      local B, Cc, T = s[1], s[2], s[3]
      local n = B * Cc * T
      local x, dy = normal(n, 81, 2), normal(n, 82)
      local alpha, beta = uniform(Cc, 83, -1, 1), uniform(Cc, 84, -1, 1)
      local dx0, da0, db0 = normal(n, 85), normal(Cc, 86), normal(Cc, 87)
      local y, dx, da, db = sao.zeros(n), dx0:clone(), da0:clone(), db0:clone()
      sao.check(C.sao_snake_forward(ctx, x:data(), alpha:data(), beta:data(), B, Cc, T, y:data()))
      sao.check(C.sao_snake_backward(ctx, dy:data(), x:data(), alpha:data(), beta:data(), B, Cc, T,
                                     dx:data(), da:data(), db:data()))
      local _, px = G(x)
      local _, pa = G(alpha)
      local _, pb = G(beta)
      local _, pdy = G(dy)
      local gy, py = G(garbage(n))
      local gdx, pdx = G(dx0)
      local gda, pda = G(da0)
      local gdb, pdb = G(db0)
      sao.check(C.sao_cuda_snake_forward(ctx, px, pa, pb, B, Cc, T, py))
      sao.check(C.sao_cuda_snake_backward(ctx, pdy, px, pa, pb, B, Cc, T, pdx, pda, pdb))
      -- sin/cos: the CPU's sao_vsincosf (abs err < 1e-7) vs device sincosf (~1 ulp) at |a x| < 20;
      -- exp(alpha), 1/(exp(beta)+1e-9): 2 ulp each; scaled by inv <= e and inv*a <= e^2:
      -- y ~1e-6 abs, dx ~ |dy| * e^2 * 2e-7 ~ 5e-6
      assert.tensor_near(y, back(gy, n), { abs = 2e-6, rel = 1e-6 })
      assert.tensor_near(dx, back(gdx, n), { abs = 1e-5, rel = 2e-6 })
      -- dalpha, dbeta: sums over B*T of fp32 terms in double on both, per-term error as dx: 1e-5
      -- of the scale
      assert.tensor_near(da, back(gda, Cc), scaled(da, 1e-5))
      assert.tensor_near(db, back(gdb, Cc), scaled(db, 1e-5))
      -- NULL d-buffers skip: only dalpha again
      sao.check(C.sao_cuda_snake_backward(ctx, pdy, px, pa, pb, B, Cc, T, nil, pda, nil))
      sao.check(C.sao_snake_backward(ctx, dy:data(), x:data(), alpha:data(), beta:data(), B, Cc, T,
                                     nil, da:data(), nil))
      assert.tensor_near(dx, back(gdx, n), { abs = 1e-5, rel = 2e-6 })
      assert.tensor_near(da, back(gda, Cc), scaled(da, 2e-5))
      assert.tensor_near(db, back(gdb, Cc), scaled(db, 1e-5))
    end
  end)

  -- ---- Fourier / NumberEmbedder features -----------------------------------------------------------
  for _, kind in ipairs { "fourier", "number" } do
    gpu_it(kind .. " features forward/backward (B=37 F=129)", function()
      local B, f = 37, 129
      local width = kind == "fourier" and 2 * f or 1 + 2 * f
      local t, w = uniform(B, 91, 0, 1), normal(f, 92, 2)
      local dy, dw0, dt0 = normal(B * width, 93), normal(f, 94), normal(B, 95)
      local y, dw, dt = sao.zeros(B * width), dw0:clone(), dt0:clone()
      local fwd, bwd = C["sao_" .. kind .. "_features_forward"], C["sao_" .. kind .. "_features_backward"]
      local gfwd = C["sao_cuda_" .. kind .. "_features_forward"]
      local gbwd = C["sao_cuda_" .. kind .. "_features_backward"]
      sao.check(fwd(ctx, t:data(), w:data(), B, f, y:data()))
      sao.check(bwd(ctx, dy:data(), t:data(), w:data(), B, f, dw:data(), dt:data()))
      local _, pt = G(t)
      local _, pw = G(w)
      local _, pdy = G(dy)
      local gy, py = G(garbage(B * width))
      local gdw, pdw = G(dw0)
      local gdt, pdt = G(dt0)
      sao.check(gfwd(ctx, pt, pw, B, f, py))
      sao.check(gbwd(ctx, pdy, pt, pw, B, f, pdw, pdt))
      -- phases, sin and cos in double on both (device vs glibc: ~1 ulp of double), rounded to
      -- fp32: equal but for a rare rounding flip (1 ulp of <= 1)
      assert.tensor_near(y, back(gy, B * width), { abs = 1.2e-7, rel = 0 })
      -- gradients: double sums in another order, rounded to fp32: 1 ulp (2.5e-7 of the scale)
      assert.tensor_near(dw, back(gdw, f), scaled(dw, 2.5e-7))
      assert.tensor_near(dt, back(gdt, B), scaled(dt, 2.5e-7))
      -- either gradient may be NULL
      sao.check(gbwd(ctx, pdy, pt, pw, B, f, nil, pdt))
      sao.check(bwd(ctx, dy:data(), t:data(), w:data(), B, f, nil, dt:data()))
      assert.tensor_near(dw, back(gdw, f), scaled(dw, 2.5e-7))
      assert.tensor_near(dt, back(gdt, B), scaled(dt, 5e-7))
    end)
  end

  -- ---- transpose -----------------------------------------------------------------------------------
  gpu_it("transpose [B,R,C] -> [B,C,R] (3 x 37 x 129 and 2 x 1 x 33), set and accumulate, exact", function()
    for _, s in ipairs { { 3, 37, 129 }, { 2, 1, 33 } } do
      local B, R, Cc = s[1], s[2], s[3]
      local n = B * R * Cc
      local x, y0 = normal(n, 101), normal(n, 102)
      local y, ya = garbage(n), y0:clone()
      sao.check(C.sao_transpose_forward(ctx, x:data(), B, R, Cc, 0, y:data()))
      sao.check(C.sao_transpose_forward(ctx, x:data(), B, R, Cc, 1, ya:data()))
      local _, px = G(x)
      local gy, py = G(garbage(n))
      local gya, pya = G(y0)
      sao.check(C.sao_cuda_transpose_forward(ctx, px, B, R, Cc, 0, py))
      sao.check(C.sao_cuda_transpose_forward(ctx, px, B, R, Cc, 1, pya))
      -- a copy, and one fp32 add per element: bit-identical
      assert.tensor_near(y, back(gy, n), { abs = 0 })
      assert.tensor_near(ya, back(gya, n), { abs = 0 })
    end
  end)

  -- ---- loss, optimiser, reductions -----------------------------------------------------------------
  gpu_it("mse forward (host and device loss) and backward (n = 3*4096 + 37)", function()
    local n = 3 * 4096 + 37
    local pred, target, dp0 = normal(n, 111), normal(n, 112, 0.5), normal(n, 113)
    local loss = ffi.new("double[1]")
    sao.check(C.sao_mse_forward(ctx, pred:data(), target:data(), n, loss))
    local dp = dp0:clone()
    sao.check(C.sao_mse_backward(ctx, pred:data(), target:data(), n, 0.75, dp:data()))
    local _, pp = G(pred)
    local _, pt = G(target)
    local gdp, pdp = G(dp0)
    local gloss = ffi.new("double[1]", -1)
    sao.check(C.sao_cuda_mse_forward(ctx, pp, pt, n, gloss))
    -- double sums in another order: relative 1e-12
    assert.is_true(math.abs(gloss[0] - loss[0]) <= 1e-12 * loss[0], ("loss %.17g vs %.17g"):format(gloss[0], loss[0]))
    local dl = sao.tensor_from_ptr(C.sao_tensor_to_cuda(ctx, sao.zeros(1, "f64"):raw(), 0))
    sao.check(C.sao_cuda_mse_forward(ctx, pp, pt, n, ffi.cast("double*", C.sao_tensor_data(dl:raw()))))
    local hl = sao.tensor_from_ptr(C.sao_tensor_to_cpu(ctx, dl:raw()))
    assert.equal(gloss[0], ffi.cast("double*", hl:data())[0])
    sao.check(C.sao_cuda_mse_backward(ctx, pp, pt, n, 0.75, pdp))
    -- one fp32 multiply-add per element (FMA contraction may differ): 1 ulp of |dpred| < 5
    assert.tensor_near(dp, back(gdp, n), { abs = 5e-7, rel = 2.5e-7 })
  end)

  gpu_it("v_target: x_t and v of the v objective give the CPU's bits (B = 3 items of 37 x 5, guarded)", function()
    local Bn, per = 3, 37 * 5
    local n = Bn * per
    local x0, noise = normal(n, 121), normal(n, 122)
    local a, s = sao.tensor { 0.99, 0.5, 0.01 }, sao.tensor { 0.14, 0.87, 1.0 }
    local xt, v = sao.empty(n), sao.empty(n)
    sao.check(C.sao_v_target(ctx, Bn, per, x0:data(), noise:data(), a:data(), s:data(), xt:data(), v:data()))
    local _, px = G(x0)
    local _, pn = G(noise)
    local _, pa = G(a)
    local _, ps = G(s)
    local gxt, pxt = G(garbage(n))
    local gv, pv = G(garbage(n))
    sao.check(C.sao_cuda_v_target(ctx, Bn, per, px, pn, pa, ps, pxt, pv))
    -- one fmaf per output with the other product inside it: no contraction to differ by
    assert.equal(0, xt:maxdiff(back(gxt, n)))
    assert.equal(0, v:maxdiff(back(gv, n)))
    assert.is_true(xt:maxdiff(x0) > 0.1)
    assert.error_matches(function() sao.check(C.sao_cuda_v_target(ctx, 0, per, px, pn, pa, ps, pxt, pv)) end,
      "cuda_v_target: bad sizes B=0")
  end)

  gpu_it("adamw: three steps with weight decay and grad_scale (n=4133)", function()
    local n = 4133
    local p, m, v = normal(n, 121), sao.zeros(n), sao.zeros(n)
    local gp, pp = G(p)
    local gm, pm = G(m)
    local gv, pv = G(v)
    for step = 1, 3 do
      local g = normal(n, 130 + step, 0.1)
      local _, pg = G(g)
      sao.check(C.sao_adamw_step(ctx, p:data(), g:data(), m:data(), v:data(), n, 1e-3, 0.9, 0.999, 1e-8,
                                 0.01, step, 0.5))
      sao.check(C.sao_cuda_adamw_step(ctx, pp, pg, pm, pv, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, step, 0.5))
    end
    -- per element in double on both, one fp32 rounding per value; FMA contraction (nvcc fuses
    -- b1*m + (1-b1)*g, the CPU build may not) moves the double result by an ulp, which flips the
    -- fp32 rounding when it sits on a midpoint — b1*m + (1-b1)*g with fp32 m and g does so more
    -- often than chance (seen: 2 elements of m in 3 x 4133, 2.0e-7 relative = 1 ulp). 2 ulp:
    assert.tensor_near(p, back(gp, n), { abs = 0, rel = 2.5e-7 })
    assert.tensor_near(m, back(gm, n), { abs = 0, rel = 2.5e-7 })
    assert.tensor_near(v, back(gv, n), { abs = 0, rel = 2.5e-7 })
  end)

  gpu_it("fused AdamW + EMA + bf16 copies: 50 tensors (two launches), chunk edges, both roundings", function()
    -- sizes around the 4096-element chunks, 50 tensors > 48 per launch
    local sizes = {}
    for i = 1, 50 do sizes[i] = ({ 1, 4095, 4096, 4097, 8193 })[i % 5 + 1] + 7 * i end
    local function setup(seed)
      local hs, ds = {}, {}
      local list_h, list_d = ffi.new("sao_optim_tensor[50]"), ffi.new("sao_optim_tensor[50]")
      local off = 0
      for i, n in ipairs(sizes) do
        local h = { p = normal(n, seed + i), m = normal(n, seed + 100 + i, 0.01), v = uniform(n, seed + 200 + i, 0, 1e-4),
          e = normal(n, seed + 300 + i), g = normal(n, seed + 400 + i, 0.1), bf = sao.full({ math.ceil(n / 2) }, 0) }
        local d = {}
        for _, f in ipairs { "p", "m", "v", "e", "g", "bf" } do d[f], d["p" .. f] = G(h[f]) end
        hs[i], ds[i] = h, d
        local eh, ed = list_h[i - 1], list_d[i - 1]
        eh.param, eh.grad, eh.m, eh.v, eh.ema = h.p:data(), h.g:data(), h.m:data(), h.v:data(), h.e:data()
        eh.param_bf16, eh.n, eh.sr_offset = ffi.cast("uint16_t *", h.bf:data()), n, off
        ed.param, ed.grad, ed.m, ed.v, ed.ema = d.pp, d.pg, d.pm, d.pv, d.pe
        ed.param_bf16, ed.n, ed.sr_offset = ffi.cast("uint16_t *", d.pbf), n, off
        off = off + n
      end
      return hs, ds, list_h, list_d
    end
    local hs, ds, lh, ld = setup(170)
    local h = ffi.new("sao_optim_hyper")
    h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.grad_scale, h.sr_seed = 1e-3, 0.9, 0.999, 1e-8, 0.01, 0.5, 11
    for step, mode in ipairs { { 0, 0 }, { 0.5, 1 }, { 0.9, 0 }, { 0.99, 1 } } do
      h.step, h.ema_decay, h.stochastic = step, mode[1], mode[2]
      sao.check(C.sao_adamw_multi(ctx, lh, 50, h))
      sao.check(C.sao_cuda_adamw_multi(ctx, ld, 50, h))
      for i, n in ipairs(sizes) do
        local x, d = hs[i], ds[i]
        local gp = back(d.p, n)
        -- AdamW and EMA: as the per-tensor kernels (2 ulp: FMA contraction, see adamw above)
        local what = ("tensor %d, step %d"):format(i, step)
        assert.tensor_near(x.p, gp, { abs = 0, rel = 2.5e-7 }, "param, " .. what)
        assert.tensor_near(x.m, back(d.m, n), { abs = 0, rel = 2.5e-7 }, "m, " .. what)
        assert.tensor_near(x.v, back(d.v, n), { abs = 0, rel = 2.5e-7 }, "v, " .. what)
        assert.tensor_near(x.e, back(d.e, n), { abs = 0, rel = 2.5e-7 }, "ema, " .. what)
        -- the bf16 copy (nearest, then stochastic): the CPU's bits wherever the fp32 weights agree
        local gb = ffi.cast("uint16_t *", back(d.bf, math.ceil(n / 2)):data())
        local hb, hp, dp = ffi.cast("uint16_t *", x.bf:data()), x.p:data(), gp:data()
        local same, diff = 0, 0
        for j = 0, n - 1 do
          if hp[j] == dp[j] then
            same = same + 1
            if hb[j] ~= gb[j] then diff = diff + 1 end
          end
        end
        assert.equal(0, diff, "bf16 copy, " .. what)
        assert.is_true(same >= n - 2, what)
        -- the next step starts from the CPU's state, so rounding differences do not compound
        for _, f in ipairs { "p", "m", "v", "e" } do
          guarded.fill(d[f], x[f])
        end
      end
    end
  end)

  gpu_it("ema update (n=4133, decay 0.999 and 0)", function()
    local n = 4133
    local e, p = normal(n, 141), normal(n, 142)
    local ge, pe = G(e)
    local _, pp = G(p)
    for _, decay in ipairs { 0.999, 0.5, 0 } do
      sao.check(C.sao_ema_update(ctx, e:data(), p:data(), n, decay))
      sao.check(C.sao_cuda_ema_update(ctx, pe, pp, n, decay))
    end
    -- double arithmetic, one fp32 rounding: as adamw
    assert.tensor_near(e, back(ge, n), { abs = 0, rel = 2.5e-7 })
    assert.tensor_near(p, back(ge, n), { abs = 0 })   -- decay 0 copies param exactly
  end)

  gpu_it("sumsq: odd sizes, n = 0, device output, non-finite detection", function()
    for _, n in ipairs { 1, 37, 4096, 2 * 4096 + 37 } do
      local x = normal(n, 150 + n)
      local want, got = ffi.new("double[1]"), ffi.new("double[1]", -1)
      sao.check(C.sao_sumsq(ctx, x:data(), n, want))
      local _, px = G(x)
      sao.check(C.sao_cuda_sumsq(ctx, px, n, got))
      -- double sums in another order: relative 1e-12
      assert.is_true(math.abs(got[0] - want[0]) <= 1e-12 * want[0], ("n=%d: %.17g vs %.17g"):format(n, got[0], want[0]))
    end
    local got = ffi.new("double[1]", -1)
    sao.check(C.sao_cuda_sumsq(ctx, nil, 0, got))
    assert.equal(0, got[0])
    local x = normal(5000, 160)
    x:data()[4321] = 0 / 0
    local _, px = G(x)
    sao.check(C.sao_cuda_sumsq(ctx, px, 5000, got))
    assert.is_true(got[0] ~= got[0], "a NaN must make the sum NaN")
    x:data()[4321] = math.huge
    _, px = G(x)
    local dout = sao.tensor_from_ptr(C.sao_tensor_to_cuda(ctx, sao.zeros(1, "f64"):raw(), 0))
    sao.check(C.sao_cuda_sumsq(ctx, px, 5000, ffi.cast("double*", C.sao_tensor_data(dout:raw()))))
    local h = sao.tensor_from_ptr(C.sao_tensor_to_cpu(ctx, dout:raw()))
    assert.equal(math.huge, ffi.cast("double*", h:data())[0])
  end)
end)
