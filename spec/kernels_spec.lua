-- kernels_spec.lua — the CPU kernels (kernels/cpu) against naive double-precision Lua references:
-- forward on small random shapes (odd sizes included), backward by central finite differences of
-- the reference (in double, on the scalar loss sum(out * R) with random R), attention at T = 300,
-- grouped K/V, bias, mask and strided layouts, thread-count independence, guard bytes after
-- outputs, and bad arguments. (Upstream parity of the assembled models, AdamW and EMA lives in
-- dit_spec, dit_train_spec, vae_spec and optim_spec, which run these kernels on the fixtures.)
--
-- Tolerances: each check names its limit next to the error measured when it was written (see
-- near() for the metric). The gradient checks compare the fp32 analytic gradient of the C kernel
-- with central differences (eps 1e-6) of the double reference, whose own error is ~1e-9.
--
-- Run from the repository root: busted --lua=luajit spec/kernels_spec.lua
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
      C = ffi.load(os.getenv("SAO_LIB") or "build/libsao.so")
      ctx = ffi.gc(C.sao_ctx_new(), C.sao_ctx_free)
    end
  end
end

local function check(rc)
  if rc ~= 0 then error(ffi.string(C.sao_ctx_error(ctx)), 2) end
end

---------------------------------------------------------------------------------------------------
-- helpers
math.randomseed(1234)

-- n random floats in [lo, hi): the ffi array and a Lua table (1-based) of the same fp32 values
local function rnd(n, lo, hi)
  lo, hi = lo or -1, hi or 1
  local f = ffi.new("float[?]", math.max(n, 1))
  local t = {}
  for i = 0, n - 1 do
    f[i] = lo + (hi - lo) * math.random()
    t[i + 1] = f[i]
  end
  return f, t
end

local function zeros(n) return ffi.new("float[?]", math.max(n, 1)) end

local function tofloat(t)
  local f = ffi.new("float[?]", math.max(#t, 1))
  for i = 1, #t do f[i - 1] = t[i] end
  return f
end

local function totable(f, n)
  local t = {}
  for i = 0, n - 1 do t[i + 1] = tonumber(f[i]) end
  return t
end

-- Compares got (ffi array or table) with want (table) over n elements, numpy-allclose style:
-- element i passes when |got - want| <= abs + rel * |want_i|, where abs defaults to
-- rel * max|want| (so `rel` is the error allowed relative to the tensor's scale). Reports
-- max_abs and scale_rel = max_abs / max|want| (the "measured" figure in the comments below);
-- on failure prints the worst element.
local function near(label, got, want, n, tol)
  local off = type(got) == "table" and 1 or 0
  local amax = 0
  for i = 1, n do amax = math.max(amax, math.abs(want[i])) end
  local rel = tol.rel or 0
  local atol = tol.abs or rel * amax
  local ea, worst, wi = 0, 0, 1
  for i = 1, n do
    local d = math.abs(tonumber(got[i - 1 + off]) - want[i])
    if d ~= d then d = math.huge end
    if d > ea then ea = d end
    local lim = atol + rel * math.abs(want[i])
    local ratio = d == 0 and 0 or (lim > 0 and d / lim or math.huge)
    if ratio > worst then worst, wi = ratio, i end
  end
  local es = amax > 0 and ea / amax or ea
  if os.getenv("SAO_SPEC_VERBOSE") then
    print(string.format("%-48s max_abs %.3g scale_rel %.3g", label, ea, es))
  end
  if worst > 1 then
    error(string.format("%s: max_abs %.4g scale_rel %.4g over limits (abs %.3g, rel %s); worst [%d] got %.9g want %.9g",
      label, ea, es, atol, tostring(tol.rel), wi - 1, tonumber(got[wi - 1 + off]), want[wi]), 2)
  end
  return ea, es
end

local function dot(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end

-- numerical gradient of sum(ref(inputs) * R) w.r.t. inputs[which] (a Lua table, modified in place
-- and restored), central differences in double
local function numgrad(ref, inputs, which, R, eps)
  eps = eps or 1e-6
  local x = inputs[which]
  local g = {}
  for i = 1, #x do
    local x0 = x[i]
    x[i] = x0 + eps
    local lp = dot(ref(inputs), R)
    x[i] = x0 - eps
    local lm = dot(ref(inputs), R)
    x[i] = x0
    g[i] = (lp - lm) / (2 * eps)
  end
  return g
end

-- bitwise equality of two float buffers
local function same_bits(a, b, n) return ffi.string(a, n * 4) == ffi.string(b, n * 4) end

local function with_threads(n, fn)
  local old = C.sao_ctx_threads(ctx)
  check(C.sao_ctx_set_threads(ctx, n))
  local ok, err = pcall(fn)
  C.sao_ctx_set_threads(ctx, old)
  if not ok then error(err, 0) end
end

local sigmoid = function(x) return 1 / (1 + math.exp(-x)) end

-- erf by its Maclaurin series (|x| <= 4 here; ~1e-13 after cancellation)
local function erf(x)
  local s, term, n = 0, x, 0
  repeat
    local add = term / (2 * n + 1)
    s = s + add
    n = n + 1
    term = -term * x * x / n
  until math.abs(add) < 1e-17 * math.abs(s) or n > 200
  return s * 2 / math.sqrt(math.pi)
end

---------------------------------------------------------------------------------------------------
-- references (double, 1-based tables)

local function ref_linear(inp, n, din, dout)
  local x, w, b = inp[1], inp[2], inp[3]
  local y = {}
  for i = 0, n - 1 do
    for o = 0, dout - 1 do
      local s = b and b[o + 1] or 0
      for k = 0, din - 1 do s = s + x[i * din + k + 1] * w[o * din + k + 1] end
      y[i * dout + o + 1] = s
    end
  end
  return y
end

local function ref_layernorm(inp, n, c, eps)
  local x, gam, bet = inp[1], inp[2], inp[3]
  local y = {}
  for i = 0, n - 1 do
    local mu = 0
    for j = 1, c do mu = mu + x[i * c + j] end
    mu = mu / c
    local var = 0
    for j = 1, c do var = var + (x[i * c + j] - mu) ^ 2 end
    local rs = 1 / math.sqrt(var / c + eps)
    for j = 1, c do y[i * c + j] = (x[i * c + j] - mu) * rs * gam[j] + (bet and bet[j] or 0) end
  end
  return y
end

local function ref_rmsnorm(inp, n, c, eps)
  local x, gam = inp[1], inp[2]
  local y = {}
  for i = 0, n - 1 do
    local ss = 0
    for j = 1, c do ss = ss + x[i * c + j] ^ 2 end
    local rs = 1 / math.sqrt(ss / c + eps)
    for j = 1, c do y[i * c + j] = gam[j] * x[i * c + j] * rs end
  end
  return y
end

-- attention, contiguous q/out [B,H,T,D], k/v [B,Hkv,M,D]; bias [H,T,M]; mask [B][M] booleans
local function ref_attention(inp, s)
  local q, k, v, bias = inp[1], inp[2], inp[3], inp[4]
  local B, H, Hkv, T, M, D, scale = s.B, s.H, s.Hkv, s.T, s.M, s.D, s.scale
  local G = H / Hkv
  local out, lse = {}, {}
  for b = 0, B - 1 do
    for h = 0, H - 1 do
      local g = math.floor(h / G)
      for t = 0, T - 1 do
        local sc, mx = {}, -math.huge
        for m = 0, M - 1 do
          local keep = not s.mask or s.mask[b * M + m + 1] ~= 0
          if keep then
            local acc = 0
            for d = 1, D do
              acc = acc + q[((b * H + h) * T + t) * D + d] * k[((b * Hkv + g) * M + m) * D + d]
            end
            acc = acc * scale
            if bias then acc = acc + bias[(h * T + t) * M + m + 1] end
            sc[m] = acc
            if acc > mx then mx = acc end
          end
        end
        local den = 0
        for m = 0, M - 1 do if sc[m] then sc[m] = math.exp(sc[m] - mx); den = den + sc[m] end end
        for d = 1, D do
          local acc = 0
          for m = 0, M - 1 do if sc[m] then acc = acc + sc[m] * v[((b * Hkv + g) * M + m) * D + d] end end
          out[((b * H + h) * T + t) * D + d] = den > 0 and acc / den or 0
        end
        lse[(b * H + h) * T + t + 1] = den > 0 and mx + math.log(den) or -math.huge
      end
    end
  end
  return out, lse
end

-- analytic attention backward in double (materialised P), for the long-T comparison
local function ref_attention_backward(inp, s, dout)
  local q, k, v, bias = inp[1], inp[2], inp[3], inp[4]
  local B, H, Hkv, T, M, D, scale = s.B, s.H, s.Hkv, s.T, s.M, s.D, s.scale
  local G = H / Hkv
  local dq, dk, dv = {}, {}, {}
  for i = 1, B * H * T * D do dq[i] = 0 end
  for i = 1, B * Hkv * M * D do dk[i] = 0; dv[i] = 0 end
  for b = 0, B - 1 do
    for h = 0, H - 1 do
      local g = math.floor(h / G)
      for t = 0, T - 1 do
        local qo = ((b * H + h) * T + t) * D
        local p, mx = {}, -math.huge
        for m = 0, M - 1 do
          local ko = ((b * Hkv + g) * M + m) * D
          local acc = 0
          for d = 1, D do acc = acc + q[qo + d] * k[ko + d] end
          acc = acc * scale + (bias and bias[(h * T + t) * M + m + 1] or 0)
          p[m] = acc
          if acc > mx then mx = acc end
        end
        local den = 0
        for m = 0, M - 1 do p[m] = math.exp(p[m] - mx); den = den + p[m] end
        local dp, dsum = {}, 0
        for m = 0, M - 1 do
          p[m] = p[m] / den
          local ko = ((b * Hkv + g) * M + m) * D
          local acc = 0
          for d = 1, D do acc = acc + dout[qo + d] * v[ko + d] end
          dp[m] = acc
          dsum = dsum + p[m] * acc
        end
        for m = 0, M - 1 do
          local ko = ((b * Hkv + g) * M + m) * D
          local ds = p[m] * (dp[m] - dsum)
          for d = 1, D do
            dv[ko + d] = dv[ko + d] + p[m] * dout[qo + d]
            dq[qo + d] = dq[qo + d] + ds * scale * k[ko + d]
            dk[ko + d] = dk[ko + d] + ds * scale * q[qo + d]
          end
        end
      end
    end
  end
  return dq, dk, dv
end

-- rope on contiguous [B,H,T,D]; sign -1 rotates by -theta
local function ref_rope(x, B, H, T, D, rot, off, inv_freq, sign)
  local y, half = {}, rot / 2
  for r = 0, B * H * T - 1 do
    local t = r % T
    local base = r * D
    for d = 1, D do y[base + d] = x[base + d] end
    for i = 0, half - 1 do
      local th = ffi.new("float[1]", (off + t) * inv_freq[i + 1])[0]  -- fp32 angle, as upstream
      local c, sn = math.cos(th), sign * math.sin(th)
      local x1, x2 = x[base + i + 1], x[base + i + half + 1]
      y[base + i + 1] = x1 * c - x2 * sn
      y[base + i + half + 1] = x2 * c + x1 * sn
    end
  end
  return y
end

local function ref_snake(inp, B, Cc, T)
  local x, al, be = inp[1], inp[2], inp[3]
  local y = {}
  for b = 0, B - 1 do
    for c = 0, Cc - 1 do
      local a, inv = math.exp(al[c + 1]), 1 / (math.exp(be[c + 1]) + 1e-9)
      for t = 1, T do
        local i = (b * Cc + c) * T + t
        y[i] = x[i] + inv * math.sin(a * x[i]) ^ 2
      end
    end
  end
  return y
end

-- conv1d by its definition; x [B,Cin,Tin], w [Cout,Cin/g,K]
local function ref_conv1d(inp, s)
  local x, w, bias = inp[1], inp[2], inp[3]
  local tout = math.floor((s.tin + 2 * s.pad - s.dil * (s.k - 1) - 1) / s.stride) + 1
  local cig, cog = s.cin / s.groups, s.cout / s.groups
  local y = {}
  for b = 0, s.B - 1 do
    for co = 0, s.cout - 1 do
      local gi = math.floor(co / cog)
      for t = 0, tout - 1 do
        local acc = bias and bias[co + 1] or 0
        for ci = 0, cig - 1 do
          for kk = 0, s.k - 1 do
            local src = t * s.stride + kk * s.dil - s.pad
            if src >= 0 and src < s.tin then
              acc = acc + w[(co * cig + ci) * s.k + kk + 1] * x[(b * s.cin + gi * cig + ci) * s.tin + src + 1]
            end
          end
        end
        y[(b * s.cout + co) * tout + t + 1] = acc
      end
    end
  end
  return y, tout
end

-- conv_transpose1d by scattering; x [B,Cin,Tin], w [Cin,Cout/g,K]
local function ref_convt(inp, s)
  local x, w, bias = inp[1], inp[2], inp[3]
  local tout = (s.tin - 1) * s.stride - 2 * s.pad + s.dil * (s.k - 1) + s.opad + 1
  local cig, cog = s.cin / s.groups, s.cout / s.groups
  local y = {}
  for b = 0, s.B - 1 do
    for co = 0, s.cout - 1 do
      for t = 0, tout - 1 do y[(b * s.cout + co) * tout + t + 1] = bias and bias[co + 1] or 0 end
    end
    for ci = 0, s.cin - 1 do
      local gi = math.floor(ci / cig)
      for col = 0, cog - 1 do
        local co = gi * cog + col
        for t = 0, s.tin - 1 do
          for kk = 0, s.k - 1 do
            local dst = t * s.stride + kk * s.dil - s.pad
            if dst >= 0 and dst < tout then
              local i = (b * s.cout + co) * tout + dst + 1
              y[i] = y[i] + x[(b * s.cin + ci) * s.tin + t + 1] * w[(ci * cog + col) * s.k + kk + 1]
            end
          end
        end
      end
    end
  end
  return y, tout
end

---------------------------------------------------------------------------------------------------
describe("kernels: linear", function()
  it("forward matches the reference (bias, no bias, accumulate)", function()
    local n, din, dout = 7, 13, 5
    local x, xt = rnd(n * din)
    local w, wt = rnd(dout * din)
    local b, bt = rnd(dout)
    local y = zeros(n * dout)
    check(C.sao_linear_forward(ctx, x, w, b, n, din, dout, 0, y))
    local want = ref_linear({ xt, wt, bt }, n, din, dout)
    near("linear fwd", y, want, n * dout, { rel = 2e-6 })  -- measured 1.0e-7
    check(C.sao_linear_forward(ctx, x, w, nil, n, din, dout, 1, y))  -- y += x W^T
    local want2 = ref_linear({ xt, wt }, n, din, dout)
    for i = 1, #want do want2[i] = want2[i] + want[i] end
    near("linear fwd accumulate", y, want2, n * dout, { rel = 2e-6 })  -- measured 1.1e-7
  end)

  it("backward matches finite differences and accumulates", function()
    local n, din, dout = 5, 6, 3
    local x, xt = rnd(n * din)
    local w, wt = rnd(dout * din)
    local b, bt = rnd(dout)
    local R, Rt = rnd(n * dout)
    local dx, dw, db = zeros(n * din), zeros(dout * din), zeros(dout)
    check(C.sao_linear_backward(ctx, R, x, w, n, din, dout, dx, dw, db))
    local ref = function(inp) return ref_linear(inp, n, din, dout) end
    local inp = { xt, wt, bt }
    near("linear dx", dx, numgrad(ref, inp, 1, Rt), n * din, { rel = 1e-6 })  -- measured 4.8e-8
    near("linear dw", dw, numgrad(ref, inp, 2, Rt), dout * din, { rel = 1e-6 })  -- measured 6.2e-8
    near("linear db", db, numgrad(ref, inp, 3, Rt), dout, { rel = 1e-6 })  -- measured 8.1e-8
    -- a second call doubles every gradient
    local dx1 = totable(dx, n * din)
    check(C.sao_linear_backward(ctx, R, x, w, n, din, dout, dx, nil, nil))
    for i = 1, #dx1 do dx1[i] = 2 * dx1[i] end
    near("linear dx accumulated", dx, dx1, n * din, { abs = 0 })  -- x + x is exact
  end)

  it("rejects bad shapes with a message", function()
    assert.are.equal(-1, C.sao_linear_forward(ctx, zeros(1), zeros(1), nil, 1, 0, 1, 0, zeros(1)))
    assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("linear_forward"))
  end)
end)

describe("kernels: layernorm and rmsnorm", function()
  it("layernorm forward with and without beta, saving mean/rstd", function()
    local n, c = 5, 37
    local x, xt = rnd(n * c, -2, 3)
    local g, gt = rnd(c, 0.5, 1.5)
    local be, bet = rnd(c)
    local y, mean, rstd = zeros(n * c), zeros(n), zeros(n)
    check(C.sao_layernorm_forward(ctx, x, g, be, n, c, 1e-5, y, mean, rstd))
    near("layernorm fwd", y, ref_layernorm({ xt, gt, bet }, n, c, 1e-5), n * c, { rel = 1e-6 })  -- measured 6.3e-8
    check(C.sao_layernorm_forward(ctx, x, g, nil, n, c, 1e-5, y, nil, nil))
    near("layernorm fwd no beta", y, ref_layernorm({ xt, gt }, n, c, 1e-5), n * c, { rel = 1e-6 })  -- measured 1.0e-7
  end)

  it("layernorm backward matches finite differences", function()
    local n, c = 4, 19
    local x, xt = rnd(n * c, -2, 2)
    local g, gt = rnd(c, 0.5, 1.5)
    local be, bet = rnd(c)
    local y, mean, rstd = zeros(n * c), zeros(n), zeros(n)
    check(C.sao_layernorm_forward(ctx, x, g, be, n, c, 1e-5, y, mean, rstd))
    local R, Rt = rnd(n * c)
    local dx, dg, db = zeros(n * c), zeros(c), zeros(c)
    check(C.sao_layernorm_backward(ctx, R, x, g, mean, rstd, n, c, dx, dg, db))
    local ref = function(inp) return ref_layernorm(inp, n, c, 1e-5) end
    local inp = { xt, gt, bet }
    near("layernorm dx", dx, numgrad(ref, inp, 1, Rt), n * c, { rel = 2e-6 })  -- measured 1.3e-7
    near("layernorm dgamma", dg, numgrad(ref, inp, 2, Rt), c, { rel = 1e-6 })  -- measured 5.6e-8
    near("layernorm dbeta", db, numgrad(ref, inp, 3, Rt), c, { rel = 1e-6 })  -- measured 3.4e-8
  end)

  it("rmsnorm forward and backward", function()
    local n, c = 3, 23
    local x, xt = rnd(n * c, -2, 2)
    local g, gt = rnd(c, 0.5, 1.5)
    local y, rstd = zeros(n * c), zeros(n)
    check(C.sao_rmsnorm_forward(ctx, x, g, n, c, 1e-6, y, rstd))
    local ref = function(inp) return ref_rmsnorm(inp, n, c, 1e-6) end
    near("rmsnorm fwd", y, ref({ xt, gt }), n * c, { rel = 1e-6 })  -- measured 5.9e-8
    local R, Rt = rnd(n * c)
    local dx, dg = zeros(n * c), zeros(c)
    check(C.sao_rmsnorm_backward(ctx, R, x, g, rstd, n, c, dx, dg))
    near("rmsnorm dx", dx, numgrad(ref, { xt, gt }, 1, Rt), n * c, { rel = 1e-6 })  -- measured 7.8e-8
    near("rmsnorm dgamma", dg, numgrad(ref, { xt, gt }, 2, Rt), c, { rel = 1e-6 })  -- measured 4.1e-8
  end)
end)

describe("kernels: attention", function()
  -- runs the C forward on contiguous buffers; returns out, lse (ffi) and the inputs
  local function desc(s)
    return ffi.new("sao_attn_desc", { B = s.B, H = s.H, Hkv = s.Hkv, T = s.T, M = s.M, D = s.D,
                                     scale = s.scale_arg or 0 })
  end
  local function setup(s)
    s.scale = s.scale_arg and s.scale_arg ~= 0 and s.scale_arg or 1 / math.sqrt(s.D)
    local q, qt = rnd(s.B * s.H * s.T * s.D, -1.5, 1.5)
    local k, kt = rnd(s.B * s.Hkv * s.M * s.D, -1.5, 1.5)
    local v, vt = rnd(s.B * s.Hkv * s.M * s.D)
    local bias, bt
    if s.bias then bias, bt = rnd(s.H * s.T * s.M, -2, 2) end
    local mask
    if s.mask then
      mask = ffi.new("uint8_t[?]", s.B * s.M)
      for i = 0, s.B * s.M - 1 do mask[i] = s.mask[i + 1] end
    end
    return { q = q, k = k, v = v, bias = bias, maskp = mask, inp = { qt, kt, vt, bt } }
  end
  local function forward(s, st)
    local out, lse = zeros(s.B * s.H * s.T * s.D), zeros(s.B * s.H * s.T)
    check(C.sao_attention_forward(ctx, desc(s), st.q, st.k, st.v, st.bias, st.maskp, out, lse))
    return out, lse
  end

  local cases = {
    { name = "self, odd sizes", B = 2, H = 3, Hkv = 3, T = 7, M = 7, D = 5 },
    { name = "cross, grouped 4:2", B = 2, H = 4, Hkv = 2, T = 5, M = 9, D = 8 },
    { name = "grouped 3:1, bias, scale 1 (T5)", B = 2, H = 3, Hkv = 1, T = 6, M = 4, D = 4, bias = true, scale_arg = 1 },
    { name = "key mask", B = 2, H = 2, Hkv = 2, T = 3, M = 6, D = 3,
      mask = { 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0 } },
    { name = "tiles > 64 (T=70, M=131)", B = 1, H = 2, Hkv = 1, T = 70, M = 131, D = 6 },
    { name = "wide head D=70", B = 1, H = 2, Hkv = 2, T = 5, M = 6, D = 70 },
  }
  for _, s in ipairs(cases) do
    it("forward and finite-difference backward: " .. s.name, function()
      local st = setup(s)
      local out, lse = forward(s, st)
      local want, wlse = ref_attention(st.inp, s)
      near("attn fwd " .. s.name, out, want, #want, { rel = 5e-6 })  -- measured <= 4.3e-7
      near("attn lse " .. s.name, lse, wlse, #wlse, { rel = 1e-6 })  -- measured <= 9.4e-8
      local R, Rt = rnd(#want)
      local dq, dk, dv = zeros(#st.inp[1]), zeros(#st.inp[2]), zeros(#st.inp[3])
      local dbias = s.bias and zeros(#st.inp[4]) or nil
      check(C.sao_attention_backward(ctx, desc(s), st.q, st.k, st.v, st.bias, st.maskp, out, lse, R,
                                     dq, dk, dv, dbias))
      if s.T * s.M > 2000 then return end  -- the big case is covered by the long-T comparison
      local ref = function(inp) return (ref_attention(inp, s)) end
      near("attn dq " .. s.name, dq, numgrad(ref, st.inp, 1, Rt), #st.inp[1], { rel = 5e-6 })  -- measured <= 3.3e-7
      near("attn dk " .. s.name, dk, numgrad(ref, st.inp, 2, Rt), #st.inp[2], { rel = 5e-6 })  -- measured <= 4.8e-7
      near("attn dv " .. s.name, dv, numgrad(ref, st.inp, 3, Rt), #st.inp[3], { rel = 5e-6 })  -- measured <= 2.7e-7
      if s.bias then
        near("attn dbias " .. s.name, dbias, numgrad(ref, st.inp, 4, Rt), #st.inp[4], { rel = 5e-6 })  -- measured 3.3e-7
      end
    end)
  end

  it("long T (300 x 300, 4 heads on 2 K/V heads) against the naive reference", function()
    local s = { B = 1, H = 4, Hkv = 2, T = 300, M = 300, D = 16 }
    local st = setup(s)
    local out, lse = forward(s, st)
    local want = ref_attention(st.inp, s)
    near("attn fwd T=300", out, want, #want, { rel = 1e-5 })  -- measured 6.3e-7
    local R, Rt = rnd(#want)
    local dq, dk, dv = zeros(#st.inp[1]), zeros(#st.inp[2]), zeros(#st.inp[3])
    check(C.sao_attention_backward(ctx, desc(s), st.q, st.k, st.v, nil, nil, out, lse, R, dq, dk, dv, nil))
    local wq, wk, wv = ref_attention_backward(st.inp, s, Rt)
    near("attn dq T=300", dq, wq, #wq, { rel = 5e-6 })  -- measured 3.2e-7
    near("attn dk T=300", dk, wk, #wk, { rel = 1e-5 })  -- measured 9.6e-7
    near("attn dv T=300", dv, wv, #wv, { rel = 1e-5 })  -- measured 9.0e-7
  end)

  it("reads q/k/v from a fused qkv buffer and writes [B,T,H,D] through strides", function()
    local s = { B = 2, H = 3, Hkv = 3, T = 9, M = 9, D = 4 }
    local B, H, T, D = s.B, s.H, s.T, s.D
    local st = setup(s)
    local out_ref, lse_ref = forward(s, st)
    -- pack q, k, v [B,H,T,D] into qkv [B,T,3,H,D]
    local qkv = zeros(B * T * 3 * H * D)
    for b = 0, B - 1 do for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      local src = ((b * H + h) * T + t) * D + d
      local dst = (((b * T + t) * 3) * H + h) * D + d
      qkv[dst] = st.q[src]; qkv[dst + H * D] = st.k[src]; qkv[dst + 2 * H * D] = st.v[src]
    end end end end
    local a = ffi.new("sao_attn_desc", { B = B, H = H, Hkv = H, T = T, M = T, D = D,
      q_stride = { T * 3 * H * D, D, 3 * H * D }, k_stride = { T * 3 * H * D, D, 3 * H * D },
      v_stride = { T * 3 * H * D, D, 3 * H * D }, o_stride = { T * H * D, D, H * D } })
    local out, lse = zeros(B * T * H * D), zeros(B * H * T)
    check(C.sao_attention_forward(ctx, a, qkv, qkv + H * D, qkv + 2 * H * D, nil, nil, out, lse))
    local got, want = {}, {}
    for b = 0, B - 1 do for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      got[#got + 1] = out[((b * T + t) * H + h) * D + d]
      want[#want + 1] = out_ref[((b * H + h) * T + t) * D + d]
    end end end end
    near("attn strided fwd", got, want, #want, { abs = 0 })   -- same arithmetic: bit-identical
    -- backward into a fused dqkv
    local R = rnd(B * T * H * D)
    local Rc = zeros(B * H * T * D)
    for b = 0, B - 1 do for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      Rc[((b * H + h) * T + t) * D + d] = R[((b * T + t) * H + h) * D + d]
    end end end end
    local dqkv = zeros(B * T * 3 * H * D)
    check(C.sao_attention_backward(ctx, a, qkv, qkv + H * D, qkv + 2 * H * D, nil, nil, out, lse, R,
                                   dqkv, dqkv + H * D, dqkv + 2 * H * D, nil))
    local n = B * H * T * D
    local dq, dk, dv = zeros(n), zeros(n), zeros(n)
    check(C.sao_attention_backward(ctx, ffi.new("sao_attn_desc", { B = B, H = H, Hkv = H, T = T, M = T, D = D }),
                                   st.q, st.k, st.v, nil, nil, out_ref, lse_ref, Rc, dq, dk, dv, nil))
    local g3, w3 = {}, {}
    for b = 0, B - 1 do for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      local src = ((b * H + h) * T + t) * D + d
      local dst = (((b * T + t) * 3) * H + h) * D + d
      for j, buf in ipairs { dq, dk, dv } do
        g3[#g3 + 1] = dqkv[dst + (j - 1) * H * D]
        w3[#w3 + 1] = buf[src]
      end
    end end end end
    near("attn strided bwd", g3, w3, #w3, { abs = 0 })
  end)

  it("gives the same bits with 1 and 2 threads", function()
    local s = { B = 2, H = 4, Hkv = 2, T = 70, M = 33, D = 8, bias = true }
    local st = setup(s)
    local res = {}
    for _, nt in ipairs { 1, 2 } do
      with_threads(nt, function()
        local out, lse = forward(s, st)
        local R = ffi.new("float[?]", s.B * s.H * s.T * s.D)
        for i = 0, s.B * s.H * s.T * s.D - 1 do R[i] = math.sin(i) end
        local dq, dk, dv = zeros(#st.inp[1]), zeros(#st.inp[2]), zeros(#st.inp[3])
        local db = zeros(#st.inp[4])
        check(C.sao_attention_backward(ctx, desc(s), st.q, st.k, st.v, st.bias, nil, out, lse, R, dq, dk, dv, db))
        res[nt] = { out, dq, dk, dv, db }
      end)
    end
    for j, n in ipairs { #st.inp[1], #st.inp[1], #st.inp[2], #st.inp[3], #st.inp[4] } do
      assert.is_true(same_bits(res[1][j], res[2][j], n))
    end
  end)

  it("fully masked rows give zeros; bad head counts are refused", function()
    local s = { B = 1, H = 1, Hkv = 1, T = 2, M = 3, D = 2, mask = { 0, 0, 0 } }
    local st = setup(s)
    local out, lse = forward(s, st)
    for i = 0, 3 do assert.are.equal(0, out[i]) end
    assert.are.equal(-math.huge, lse[0])
    local dq, dk, dv = zeros(4), zeros(6), zeros(6)
    check(C.sao_attention_backward(ctx, desc(s), st.q, st.k, st.v, nil, st.maskp, out, lse, rnd(4), dq, dk, dv, nil))
    for i = 0, 3 do assert.are.equal(0, dq[i]) end
    local bad = ffi.new("sao_attn_desc", { B = 1, H = 3, Hkv = 2, T = 1, M = 1, D = 1 })
    assert.are.equal(-1, C.sao_attention_forward(ctx, bad, st.q, st.k, st.v, nil, nil, out, nil))
    assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("multiple"))
  end)
end)

describe("kernels: rope", function()
  it("forward rotates the first rot_dim dims (half-split), backward is the inverse", function()
    local B, H, T, D, rot, off = 2, 3, 5, 10, 6, 1
    local x, xt = rnd(B * H * T * D)
    local invf = {}
    for i = 0, rot / 2 - 1 do invf[i + 1] = ffi.new("float[1]", 10000 ^ (-2 * i / rot))[0] end
    local y = zeros(B * H * T * D)
    check(C.sao_rope_forward(ctx, x, B, H, T, D, nil, rot, off, nil, 10000, y))
    near("rope fwd (computed inv_freq)", y, ref_rope(xt, B, H, T, D, rot, off, invf, 1), #xt, { abs = 1e-6 })  -- measured 6.9e-8 abs
    local y2 = zeros(B * H * T * D)
    check(C.sao_rope_forward(ctx, x, B, H, T, D, nil, rot, off, tofloat(invf), 0, y2))
    assert.is_true(same_bits(y, y2, #xt))
    -- backward: dx = R(-theta) dy, in place; it is the adjoint, so R(-theta) R(theta) x = x
    check(C.sao_rope_backward(ctx, y2, B, H, T, D, nil, rot, off, nil, 10000, y2))
    near("rope inverse", y2, xt, #xt, { abs = 2e-6 })  -- measured 1.2e-7 abs
    local R, Rt = rnd(#xt)
    local dx = zeros(#xt)
    check(C.sao_rope_backward(ctx, R, B, H, T, D, nil, rot, off, nil, 10000, dx))
    local ref = function(inp) return ref_rope(inp[1], B, H, T, D, rot, off, invf, 1) end
    near("rope dx", dx, numgrad(ref, { xt }, 1, Rt), #xt, { rel = 1e-6 })  -- measured 6.6e-8
  end)

  it("works in place through token-major strides (the q slice of a fused qkv)", function()
    local B, H, T, D, rot = 1, 2, 4, 8, 4
    local x, xt = rnd(B * H * T * D)
    local want = zeros(#xt)
    check(C.sao_rope_forward(ctx, x, B, H, T, D, nil, rot, 0, nil, 10000, want))
    local qkv = zeros(B * T * 3 * H * D)   -- [B,T,3,H,D]
    for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      qkv[(t * 3 * H + h) * D + d] = x[(h * T + t) * D + d]
    end end end
    local strides = ffi.new("int64_t[3]", { T * 3 * H * D, D, 3 * H * D })
    check(C.sao_rope_forward(ctx, qkv, B, H, T, D, strides, rot, 0, nil, 10000, qkv))
    local got, w = {}, {}
    for h = 0, H - 1 do for t = 0, T - 1 do for d = 0, D - 1 do
      got[#got + 1] = qkv[(t * 3 * H + h) * D + d]
      w[#w + 1] = want[(h * T + t) * D + d]
    end end end
    near("rope strided in place", got, w, #w, { abs = 0 })
  end)
end)

describe("kernels: activations", function()
  local n = 301
  local acts = {
    -- name, reference, forward tolerance (scale-relative; relu exact), measured
    { "silu", function(x) return x * sigmoid(x) end, 1e-6 },        -- measured 2e-8
    { "relu", function(x) return x > 0 and x or 0 end, 0 },
    { "softplus", function(x) return x > 20 and x or math.log(1 + math.exp(x)) end, 1e-6 },  -- 9e-9
  }
  for _, a in ipairs(acts) do
    it(a[1] .. " forward and backward", function()
      local x, xt = rnd(n, -6, 6)
      x[0], xt[1] = 25, 25  -- softplus threshold branch
      local y = zeros(n)
      check(C["sao_" .. a[1] .. "_forward"](ctx, x, n, y))
      local want = {}
      for i = 1, n do want[i] = a[2](xt[i]) end
      near(a[1] .. " fwd", y, want, n, a[3] == 0 and { abs = 0 } or { rel = a[3] })
      local R, Rt = rnd(n)
      local dx = zeros(n)
      check(C["sao_" .. a[1] .. "_backward"](ctx, R, x, n, dx))
      local g = numgrad(function(inp)
        local o = {}
        for i = 1, n do o[i] = a[2](inp[1][i]) end
        return o
      end, { xt }, 1, Rt)
      near(a[1] .. " dx", dx, g, n, { rel = 2e-6 })  -- measured <= 2.6e-7 (relu: exact away from 0)
    end)
  end

  for _, approx in ipairs { 0, 1 } do
    it("gelu forward and backward, approximate=" .. approx, function()
      local f
      if approx == 1 then
        f = function(x) return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ^ 3))) end
      else
        f = function(x) return 0.5 * x * (1 + erf(x / math.sqrt(2))) end
      end
      local x, xt = rnd(n, -4, 4)
      local y = zeros(n)
      check(C.sao_gelu_forward(ctx, x, n, approx, y))
      local want = {}
      for i = 1, n do want[i] = f(xt[i]) end
      near("gelu fwd " .. approx, y, want, n, { rel = 1e-6 })  -- measured <= 7.0e-8
      local R, Rt = rnd(n)
      local dx = zeros(n)
      check(C.sao_gelu_backward(ctx, R, x, n, approx, dx))
      local g = numgrad(function(inp)
        local o = {}
        for i = 1, n do o[i] = f(inp[1][i]) end
        return o
      end, { xt }, 1, Rt)
      near("gelu dx " .. approx, dx, g, n, { rel = 5e-6 })  -- measured <= 2.1e-7
    end)
  end

  it("swiglu: value half first, gate half second", function()
    local rows, F = 3, 11
    local p, pt = rnd(rows * 2 * F, -4, 4)
    local y = zeros(rows * F)
    check(C.sao_swiglu_forward(ctx, p, rows, F, y))
    local ref = function(inp)
      local o = {}
      for i = 0, rows - 1 do
        for j = 1, F do
          local a, g = inp[1][i * 2 * F + j], inp[1][i * 2 * F + F + j]
          o[i * F + j] = a * g * sigmoid(g)
        end
      end
      return o
    end
    near("swiglu fwd", y, ref({ pt }), rows * F, { rel = 1e-6 })  -- measured 9.9e-8
    local R, Rt = rnd(rows * F)
    local dp = zeros(rows * 2 * F)
    check(C.sao_swiglu_backward(ctx, R, p, rows, F, dp))
    near("swiglu dp", dp, numgrad(ref, { pt }, 1, Rt), rows * 2 * F, { rel = 1e-6 })  -- measured 8.2e-8
  end)

  it("silu and swiglu are accurate over the whole float range the vexp covers", function()
    local m = 4001
    local x = ffi.new("float[?]", m)
    for i = 0, m - 1 do x[i] = -100 + 200 * i / (m - 1) end
    local y = zeros(m)
    check(C.sao_silu_forward(ctx, x, m, y))
    local want = {}
    for i = 1, m do local v = tonumber(x[i - 1]); want[i] = v * sigmoid(v) end
    near("silu wide range", y, want, m, { rel = 1e-6 })  -- measured 1.2e-8
  end)
end)

describe("kernels: snake", function()
  it("forward and backward (x, log alpha, log beta)", function()
    local B, Cc, T = 2, 3, 17
    local x, xt = rnd(B * Cc * T, -3, 3)
    local al, alt = rnd(Cc, -0.5, 0.5)
    local be, bet = rnd(Cc, -0.5, 0.5)
    local y = zeros(B * Cc * T)
    check(C.sao_snake_forward(ctx, x, al, be, B, Cc, T, y))
    local ref = function(inp) return ref_snake(inp, B, Cc, T) end
    local inp = { xt, alt, bet }
    near("snake fwd", y, ref(inp), #xt, { rel = 1e-6 })  -- measured 5.6e-8
    local R, Rt = rnd(#xt)
    local dx, da, db = zeros(#xt), zeros(Cc), zeros(Cc)
    check(C.sao_snake_backward(ctx, R, x, al, be, B, Cc, T, dx, da, db))
    near("snake dx", dx, numgrad(ref, inp, 1, Rt), #xt, { rel = 1e-6 })  -- measured 8.5e-8
    near("snake dalpha", da, numgrad(ref, inp, 2, Rt), Cc, { rel = 1e-6 })  -- measured 9.9e-8
    near("snake dbeta", db, numgrad(ref, inp, 3, Rt), Cc, { rel = 1e-6 })  -- measured 5.9e-8
  end)
end)

describe("kernels: snake (wide range)", function()
  it("sin^2 stays accurate for large arguments (the vectorised sin/cos)", function()
    -- log beta = -10 makes the sin^2 term (up to e^10 ~ 22026) dominate y, so y's fp32 rounding
    -- no longer hides the error of sin at arguments up to ~6000
    local T = 20001
    local x = ffi.new("float[?]", T)
    for i = 0, T - 1 do x[i] = -3000 + 6000 * i / (T - 1) end
    local al, be = ffi.new("float[1]", 0.7), ffi.new("float[1]", -10)
    local y = zeros(T)
    check(C.sao_snake_forward(ctx, x, al, be, 1, 1, T, y))
    local a = tonumber(ffi.new("float[1]", math.exp(0.7))[0])      -- fp32 exp(alpha), as the kernel
    local inv = 1 / (math.exp(-10) + 1e-9)
    local want = {}
    for i = 1, T do
      local xv = tonumber(x[i - 1])
      local ax = tonumber(ffi.new("float[1]", a * xv)[0])          -- the fp32 product a*x
      want[i] = xv + inv * math.sin(ax) ^ 2
    end
    near("snake |alpha x| <= 6000", y, want, T, { rel = 2e-6 })  -- measured 1.2e-7
  end)
end)

describe("kernels: conv1d", function()
  local cases = {
    { name = "k7 dilation 3 'same'", B = 2, cin = 3, cout = 4, tin = 23, k = 7, stride = 1, pad = 9, dil = 3, groups = 1, bias = true },
    { name = "k1 (DiT 1x1, direct sgemm)", B = 2, cin = 5, cout = 5, tin = 9, k = 1, stride = 1, pad = 0, dil = 1, groups = 1 },
    { name = "strided k4 s2 p1 (encoder)", B = 1, cin = 4, cout = 6, tin = 16, k = 4, stride = 2, pad = 1, dil = 1, groups = 1, bias = true },
    { name = "odd stride 3, groups 2", B = 2, cin = 4, cout = 6, tin = 19, k = 5, stride = 3, pad = 2, dil = 2, groups = 2, bias = true },
  }
  for _, s in ipairs(cases) do
    it("forward and backward: " .. s.name, function()
      local x, xt = rnd(s.B * s.cin * s.tin)
      local w, wt = rnd(s.cout * (s.cin / s.groups) * s.k)
      local b, bt
      if s.bias then b, bt = rnd(s.cout) end
      local tout = tonumber(C.sao_conv1d_out_len(s.tin, s.k, s.stride, s.pad, s.dil))
      local y = zeros(s.B * s.cout * tout)
      check(C.sao_conv1d_forward(ctx, x, w, b, s.B, s.cin, s.tin, s.cout, s.k, s.stride, s.pad, s.dil, s.groups, y))
      local ref = function(inp) return (ref_conv1d(inp, s)) end
      local inp = { xt, wt, bt }
      local want, wt_out = ref_conv1d(inp, s)
      assert.are.equal(wt_out, tout)
      near("conv fwd " .. s.name, y, want, #want, { rel = 2e-6 })  -- measured <= 1.0e-7
      local R, Rt = rnd(#want)
      local dx, dw, db = zeros(#xt), zeros(#wt), s.bias and zeros(s.cout) or nil
      check(C.sao_conv1d_backward(ctx, R, x, w, s.B, s.cin, s.tin, s.cout, s.k, s.stride, s.pad, s.dil, s.groups, dx, dw, db))
      near("conv dx " .. s.name, dx, numgrad(ref, inp, 1, Rt), #xt, { rel = 1e-6 })  -- measured <= 8.3e-8
      near("conv dw " .. s.name, dw, numgrad(ref, inp, 2, Rt), #wt, { rel = 2e-6 })  -- measured <= 1.1e-7
      if s.bias then near("conv db " .. s.name, db, numgrad(ref, inp, 3, Rt), s.cout, { rel = 1e-6 }) end  -- measured <= 3.9e-8
    end)
  end

  local tcases = {
    { name = "Oobleck k16 s8 p4", B = 1, cin = 4, cout = 3, tin = 5, k = 16, stride = 8, pad = 4, opad = 0, dil = 1, groups = 1, bias = true },
    { name = "k4 s2 p1", B = 2, cin = 3, cout = 2, tin = 7, k = 4, stride = 2, pad = 1, opad = 0, dil = 1, groups = 1, bias = true },
    { name = "k3 s3 output_padding 2 groups 2 dilation 2", B = 1, cin = 4, cout = 6, tin = 6, k = 3, stride = 3, pad = 1, opad = 2, dil = 2, groups = 2 },
  }
  for _, s in ipairs(tcases) do
    it("transposed forward and backward: " .. s.name, function()
      local x, xt = rnd(s.B * s.cin * s.tin)
      local w, wt = rnd(s.cin * (s.cout / s.groups) * s.k)
      local b, bt
      if s.bias then b, bt = rnd(s.cout) end
      local tout = tonumber(C.sao_conv_transpose1d_out_len(s.tin, s.k, s.stride, s.pad, s.opad, s.dil))
      local y = zeros(s.B * s.cout * tout)
      check(C.sao_conv_transpose1d_forward(ctx, x, w, b, s.B, s.cin, s.tin, s.cout, s.k, s.stride, s.pad,
                                           s.opad, s.dil, s.groups, y))
      local ref = function(inp) return (ref_convt(inp, s)) end
      local inp = { xt, wt, bt }
      local want, wt_out = ref_convt(inp, s)
      assert.are.equal(wt_out, tout)
      near("convT fwd " .. s.name, y, want, #want, { rel = 1e-6 })  -- measured <= 8.8e-8
      local R, Rt = rnd(#want)
      local dx, dw, db = zeros(#xt), zeros(#wt), s.bias and zeros(s.cout) or nil
      check(C.sao_conv_transpose1d_backward(ctx, R, x, w, s.B, s.cin, s.tin, s.cout, s.k, s.stride, s.pad,
                                            s.opad, s.dil, s.groups, dx, dw, db))
      near("convT dx " .. s.name, dx, numgrad(ref, inp, 1, Rt), #xt, { rel = 1e-6 })  -- measured <= 7.0e-8
      near("convT dw " .. s.name, dw, numgrad(ref, inp, 2, Rt), #wt, { rel = 1e-6 })  -- measured <= 5.7e-8
      if s.bias then near("convT db " .. s.name, db, numgrad(ref, inp, 3, Rt), s.cout, { rel = 1e-6 }) end  -- measured <= 3.7e-8
    end)
  end

  it("long inputs go through several im2col chunks", function()
    -- rows = 128*7 = 896 -> chunk 2340 columns; T = 5000 needs 3 chunks
    local s = { B = 1, cin = 128, cout = 2, tin = 5000, k = 7, stride = 1, pad = 3, dil = 1, groups = 1 }
    local x, xt = rnd(s.cin * s.tin)
    local w, wt = rnd(s.cout * s.cin * s.k)
    local y = zeros(s.cout * s.tin)
    check(C.sao_conv1d_forward(ctx, x, w, nil, 1, s.cin, s.tin, s.cout, s.k, 1, 3, 1, 1, y))
    local want = ref_conv1d({ xt, wt }, s)
    near("conv fwd chunked", y, want, #want, { rel = 1e-5 })  -- measured 8.9e-7
  end)

  it("refuses geometry it cannot run", function()
    assert.are.equal(-1, C.sao_conv1d_forward(ctx, zeros(4), zeros(4), nil, 1, 1, 2, 1, 5, 1, 0, 1, 1, zeros(4)))
    assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("output length"))
    assert.are.equal(-1, C.sao_conv1d_forward(ctx, zeros(4), zeros(4), nil, 1, 3, 2, 2, 1, 1, 0, 1, 2, zeros(4)))
    assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("multiples of groups"))
  end)
end)

describe("kernels: fourier features", function()
  it("DiT timestep features [cos, sin] and backward", function()
    local B, F = 3, 8
    local t, tt = rnd(B, 0, 1)
    local w, wt = rnd(F, -2, 2)
    local y = zeros(B * 2 * F)
    check(C.sao_fourier_features_forward(ctx, t, w, B, F, y))
    local ref = function(inp)
      local o = {}
      for b = 0, B - 1 do
        for i = 1, F do
          local ph = 2 * math.pi * inp[1][b + 1] * inp[2][i]
          o[b * 2 * F + i] = math.cos(ph)
          o[b * 2 * F + F + i] = math.sin(ph)
        end
      end
      return o
    end
    local inp = { tt, wt }
    near("fourier fwd", y, ref(inp), B * 2 * F, { abs = 5e-7 })  -- measured 2.9e-8 abs
    local R, Rt = rnd(B * 2 * F)
    local dt, dw = zeros(B), zeros(F)
    check(C.sao_fourier_features_backward(ctx, R, t, w, B, F, dw, dt))
    near("fourier dw", dw, numgrad(ref, inp, 2, Rt), F, { rel = 1e-6 })  -- measured 3.1e-8
    near("fourier dt", dt, numgrad(ref, inp, 1, Rt), B, { rel = 1e-6 })  -- measured 3.8e-8
  end)

  it("NumberEmbedder features [u, sin, cos] and backward", function()
    local B, F = 2, 5
    local u, ut = rnd(B, 0, 1)
    local w, wt = rnd(F, -2, 2)
    local y = zeros(B * (1 + 2 * F))
    check(C.sao_number_features_forward(ctx, u, w, B, F, y))
    local ref = function(inp)
      local o, W = {}, 1 + 2 * F
      for b = 0, B - 1 do
        o[b * W + 1] = inp[1][b + 1]
        for i = 1, F do
          local ph = 2 * math.pi * inp[1][b + 1] * inp[2][i]
          o[b * W + 1 + i] = math.sin(ph)
          o[b * W + 1 + F + i] = math.cos(ph)
        end
      end
      return o
    end
    local inp = { ut, wt }
    near("number fwd", y, ref(inp), B * (1 + 2 * F), { abs = 5e-7 })  -- measured 2.9e-8 abs
    local R, Rt = rnd(B * (1 + 2 * F))
    local du, dw = zeros(B), zeros(F)
    check(C.sao_number_features_backward(ctx, R, u, w, B, F, dw, du))
    near("number dw", dw, numgrad(ref, inp, 2, Rt), F, { rel = 1e-6 })  -- measured 2.5e-8
    near("number du", du, numgrad(ref, inp, 1, Rt), B, { rel = 1e-6 })  -- measured 1.6e-8
  end)
end)

describe("kernels: loss, optimiser, reductions", function()
  it("mse forward and backward", function()
    local n = 10001
    local p, pt = rnd(n)
    local tg, tgt = rnd(n)
    local loss = ffi.new("double[1]")
    check(C.sao_mse_forward(ctx, p, tg, n, loss))
    local s = 0
    for i = 1, n do s = s + (pt[i] - tgt[i]) ^ 2 end
    assert.is_true(math.abs(loss[0] - s / n) <= 1e-13 * s / n)   -- double sums in another order
    local dp = zeros(n)
    check(C.sao_mse_backward(ctx, p, tg, n, 0.5, dp))
    local want = {}
    for i = 1, n do want[i] = 0.5 * 2 * (pt[i] - tgt[i]) / n end
    near("mse dpred", dp, want, n, { rel = 1e-6 })  -- measured 7.3e-8
  end)

  it("adamw matches torch's formula over several steps, and the EMA lerp", function()
    local n = 50
    local p, pt = rnd(n)
    local m, v = zeros(n), zeros(n)
    local lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
    local mt, vt = {}, {}
    for i = 1, n do mt[i], vt[i] = 0, 0 end
    for step = 1, 3 do
      local g, gt = rnd(n)
      check(C.sao_adamw_step(ctx, p, g, m, v, n, lr, b1, b2, eps, wd, step, 0.5))
      for i = 1, n do
        local gi = gt[i] * 0.5
        pt[i] = pt[i] * (1 - lr * wd)
        mt[i] = b1 * mt[i] + (1 - b1) * gi
        vt[i] = b2 * vt[i] + (1 - b2) * gi * gi
        local denom = math.sqrt(vt[i]) / math.sqrt(1 - b2 ^ step) + eps
        pt[i] = pt[i] - lr / (1 - b1 ^ step) * mt[i] / denom
      end
    end
    near("adamw params", p, pt, n, { abs = 1e-6 })  -- measured 7.6e-8 abs
    local e, et = rnd(n)
    check(C.sao_ema_update(ctx, e, p, n, 0.99))
    for i = 1, n do et[i] = et[i] + 0.01 * (tonumber(p[i - 1]) - et[i]) end
    near("ema", e, et, n, { abs = 5e-7 })  -- measured 2.8e-8 abs
  end)

  it("sumsq in double, thread-count independent, and a transpose round trip", function()
    local n = 100003
    local x, xt = rnd(n)
    local s = ffi.new("double[1]")
    local s2 = ffi.new("double[1]")
    with_threads(1, function() check(C.sao_sumsq(ctx, x, n, s)) end)
    with_threads(2, function() check(C.sao_sumsq(ctx, x, n, s2)) end)
    assert.are.equal(s[0], s2[0])
    local want = 0
    for i = 1, n do want = want + xt[i] * xt[i] end
    assert.is_true(math.abs(s[0] - want) <= 1e-12 * want)
    x[5] = 0 / 0
    check(C.sao_sumsq(ctx, x, n, s))
    assert.is_true(s[0] ~= s[0])
    local B, R, Cc = 2, 37, 70
    local a, at = rnd(B * R * Cc)
    local tr, back = zeros(B * R * Cc), zeros(B * R * Cc)
    check(C.sao_transpose_forward(ctx, a, B, R, Cc, 0, tr))
    assert.are.equal(a[(1 * R + 5) * Cc + 9], tr[(1 * Cc + 9) * R + 5])
    check(C.sao_transpose_forward(ctx, tr, B, Cc, R, 1, back))
    near("transpose round trip", back, at, #at, { abs = 0 })
  end)
end)

describe("kernels: determinism and bounds", function()
  -- every kernel whose reductions the library orders itself gives the same bits with 1 and 2
  -- threads (sgemm-based gradients are OpenBLAS's business and are left out)
  it("reductions do not depend on the thread count", function()
    local n, c = 300, 70
    local x = rnd(n * c, -2, 2)
    local g = rnd(c, 0.5, 1.5)
    local dy = rnd(n * c)
    local y, mean, rstd = zeros(n * c), zeros(n), zeros(n)
    check(C.sao_layernorm_forward(ctx, x, g, nil, n, c, 1e-5, y, mean, rstd))
    local al, be = rnd(c, -0.5, 0.5), rnd(c, -0.5, 0.5)
    local outs = {}
    for _, nt in ipairs { 1, 2 } do
      with_threads(nt, function()
        local r = {}
        r.dx, r.dg, r.db = zeros(n * c), zeros(c), zeros(c)
        check(C.sao_layernorm_backward(ctx, dy, x, g, mean, rstd, n, c, r.dx, r.dg, r.db))
        r.rdx, r.rdg = zeros(n * c), zeros(c)
        check(C.sao_rmsnorm_backward(ctx, dy, x, g, rstd, n, c, r.rdx, r.rdg))
        r.sdx, r.sda, r.sdb = zeros(n * c), zeros(c), zeros(c)
        check(C.sao_snake_backward(ctx, dy, x, al, be, 1, c, n, r.sdx, r.sda, r.sdb))
        r.ldb = zeros(c)
        check(C.sao_linear_backward(ctx, dy, nil, nil, n, 5, c, nil, nil, r.ldb))
        r.cdb = zeros(c)
        check(C.sao_conv1d_backward(ctx, dy, nil, nil, 1, 3, n, c, 1, 1, 0, 1, 1, nil, nil, r.cdb))
        local l = ffi.new("double[1]")
        check(C.sao_mse_forward(ctx, x, dy, n * c, l))
        r.loss = l[0]
        outs[nt] = r
      end)
    end
    local a, b = outs[1], outs[2]
    for _, k in ipairs { "dx", "rdx", "sdx" } do assert.is_true(same_bits(a[k], b[k], n * c), k) end
    for _, k in ipairs { "dg", "db", "rdg", "sda", "sdb", "ldb", "cdb" } do assert.is_true(same_bits(a[k], b[k], c), k) end
    assert.are.equal(a.loss, b.loss)
  end)

  -- outputs get 64 guard floats after their end; a kernel must never touch them
  local GUARD = 64
  local function guarded(n)
    local f = ffi.new("float[?]", n + GUARD)
    for i = n, n + GUARD - 1 do f[i] = 12345.5 end
    return f
  end
  local function intact(f, n)
    for i = n, n + GUARD - 1 do if f[i] ~= 12345.5 then return false end end
    return true
  end

  it("attention, conv and rope write nothing past their outputs", function()
    local s = { B = 1, H = 2, Hkv = 1, T = 67, M = 70, D = 5 }
    local a = ffi.new("sao_attn_desc", s)
    local q, k, v = rnd(s.H * s.T * s.D), rnd(s.M * s.D), rnd(s.M * s.D)
    local nq, nk = s.H * s.T * s.D, s.M * s.D
    local out, lse = guarded(nq), guarded(s.H * s.T)
    check(C.sao_attention_forward(ctx, a, q, k, v, nil, nil, out, lse))
    assert.is_true(intact(out, nq) and intact(lse, s.H * s.T))
    local dq, dk, dv = guarded(nq), guarded(nk), guarded(nk)
    for i = 0, nq - 1 do dq[i] = 0 end
    for i = 0, nk - 1 do dk[i], dv[i] = 0, 0 end
    check(C.sao_attention_backward(ctx, a, q, k, v, nil, nil, out, lse, rnd(nq), dq, dk, dv, nil))
    assert.is_true(intact(dq, nq) and intact(dk, nk) and intact(dv, nk))

    local tout = tonumber(C.sao_conv1d_out_len(50, 4, 2, 1, 1))
    local x, w = rnd(3 * 50), rnd(4 * 3 * 4)
    local y = guarded(4 * tout)
    check(C.sao_conv1d_forward(ctx, x, w, nil, 1, 3, 50, 4, 4, 2, 1, 1, 1, y))
    assert.is_true(intact(y, 4 * tout))
    local dx = guarded(3 * 50)
    for i = 0, 3 * 50 - 1 do dx[i] = 0 end
    check(C.sao_conv1d_backward(ctx, rnd(4 * tout), x, w, 1, 3, 50, 4, 4, 2, 1, 1, 1, dx, nil, nil))
    assert.is_true(intact(dx, 3 * 50))
    local tt = tonumber(C.sao_conv_transpose1d_out_len(9, 16, 8, 4, 0, 1))
    local yt = guarded(2 * tt)
    check(C.sao_conv_transpose1d_forward(ctx, rnd(3 * 9), rnd(3 * 2 * 16), nil, 1, 3, 9, 2, 16, 8, 4, 0, 1, 1, yt))
    assert.is_true(intact(yt, 2 * tt))

    local r = guarded(2 * 3 * 10)
    check(C.sao_rope_forward(ctx, rnd(2 * 3 * 10), 1, 2, 3, 10, nil, 4, 0, nil, 10000, r))
    assert.is_true(intact(r, 2 * 3 * 10))
  end)
end)
