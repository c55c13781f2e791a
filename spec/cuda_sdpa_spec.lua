-- cuda_sdpa_spec.lua — the attention forward and backward through cuDNN's fused SDPA
-- (kernels/cuda/attention_cudnn.cu), which sao_cuda_attention_forward / _backward run with
-- sao.cuda.attention_impl("cudnn") in the bf16 GEMM precision mode for attentions without bias,
-- key mask or dbias (tag: gpu). Against the CPU kernel on the same bf16-rounded inputs (spec/support/attncmp.lua:
-- guard floats around every output, gaps in strided outputs untouched): grouped K/V heads, odd
-- sizes, strided q/k/v and out, D = 16 / 24 / 32 / 64 / 128, with and without lse; the shapes and
-- settings cuDNN does not take (bias, mask, D not a multiple of 8, other precision modes, a cuDNN
-- with no engine for the graph) run the "auto" kernels bit for bit, and say why
-- (sao.cuda.sdpa()); the backward through cuDNN's SDPA backward (partial gradients, refusals, a
-- cuDNN without a backward engine, nondeterministic engines passed over), forward and backward
-- together; the DiT forward, eager and as a
-- CUDA graph. Without a usable GPU the device tests are reported as pending, never as passed.
--
-- Tolerances. The inputs are bf16 on both sides; cuDNN rounds P to bf16 before P V (as the bf16
-- flash kernel does: at most u max|v|, u = 2^-8, see cuda_flash_spec.lua) and also stores O in
-- bf16 (one more rounding of each output, at most u |out| <= u max|v|): bound 2u max|v|, plus fp32
-- order noise (1e-5 max|v|). lse is fp32 (order noise only: 5e-6 of its scale, as the flash
-- kernels'). Measured on the emulation (spec/support/cuda_emu's fake cuDNN computes the same
-- operation in fp32 with those two roundings; SAO_SPEC_VERBOSE=1): out 0.8e-3 to 1.6e-3 of max|v|
-- (bound 7.8e-3), lse within 1e-6; not yet measured on a GPU.
local ffi = require "ffi"
local sao = require "sao"
require "spec.support.near"

local C, ctx = sao.C, sao.ctx
local gpu = require "support.gpu"
local gpu_it = gpu.it(it, pending)
local cmp = require "support.devcmp"
local check, fp, u8p, dev, host, close = cmp.check, cmp.fp, cmp.u8p, cmp.dev, cmp.host, cmp.close
local A = require "support.attncmp"
local U, with_mode, inputs, cpu_forward, dev_forward, compare = A.U, A.with_mode, A.inputs, A.cpu_forward,
  A.dev_forward, A.compare


local cases = {
  { name = "T=37 M=53, 4 heads on 2 K/V heads, D=64", B = 2, H = 4, Hkv = 2, T = 37, M = 53, D = 64, seed = 110 },
  { name = "T=1, M=5, 2 heads on 1, D=32, scale 1", B = 2, H = 2, Hkv = 1, T = 1, M = 5, D = 32, scale = 1,
    qmul = 0.15, seed = 120 },
  { name = "D=16, T=M=130", B = 1, H = 3, Hkv = 3, T = 130, M = 130, D = 16, seed = 130 },
  { name = "D=24 (a multiple of 8, not 16)", B = 1, H = 2, Hkv = 2, T = 33, M = 29, D = 24, seed = 135 },
  { name = "D=128, T=70, M=67, out rows with gaps", B = 1, H = 2, Hkv = 1, T = 70, M = 67, D = 128, opitch = 131,
    seed = 140 },
  { name = "fused qkv [B,T,3,H,D] in, [B,T,H,D] out (strides)", B = 2, H = 3, Hkv = 3, T = 37, M = 37, D = 64,
    layout = "fused", seed = 150 },
  { name = "cross-attention shape: T=65, M=130, 4 heads on 2", B = 1, H = 4, Hkv = 2, T = 65, M = 130, D = 64,
    seed = 160 },
}

local function ran() return (sao.cuda.sdpa()) end

-- the device forward with `impl` in the bf16 mode; how many cuDNN SDPA runs it made
local function forward(s, x, impl, mode)
  local before = ran()
  local o, l
  with_mode(mode or "bf16", impl, function() o, l = dev_forward(s, x) end)
  return o, l, ran() - before
end

-- The emulation's fake cuDNN takes switches from the environment (spec/support/cuda_emu/README.md),
-- read when a shape's plan is built. Runs f with `vars` set (gpu.with_env); on a real GPU the test
-- is pending (true: the caller returns).
local function emu_env(vars, f)
  if not gpu.emulated() then
    local names = {}
    for k in pairs(vars) do names[#names + 1] = k end
    pending("needs the emulation's fake cuDNN (" .. table.concat(names, ", ") .. ")")
    return
  end
  gpu.with_env(vars, f)
  return true
end

describe("CUDA attention through cuDNN's fused SDPA #gpu", function()
  it("sao.cuda.sdpa() counts the runs and says why not, also without a backend", function()
    local n, nb, why = sao.cuda.sdpa()
    assert.equal("number", type(n))
    assert.equal("number", type(nb))
    local no = sao.cuda.unavailable()
    if no then
      assert.equal(0, n)
      assert.equal(0, nb)
      assert.equal(no, why)
      return
    end
    assert.is_true(n >= 0 and nb >= 0)
    assert.equal("cudnn", sao.cuda.attention_impl("cudnn"))
    assert.equal("cudnn", sao.cuda.attention_impl())
    sao.cuda.attention_impl("auto")
  end)

  for _, s in ipairs(cases) do
    gpu_it("matches the CPU kernel on bf16-rounded inputs: " .. s.name, function()
      local x = inputs(s)
      local want_out, want_lse = cpu_forward(s, x)
      local o, l, runs = forward(s, x, "cudnn")
      local _, _, why = sao.cuda.sdpa()
      assert.equal(1, runs, "cuDNN's SDPA did not run: " .. tostring(why))
      compare(s, x, want_out, want_lse, o, l, (2 * U + 1e-5) * x.vmax, 5e-6)
    end)
  end

  gpu_it("without lse (sampling) it runs a plan without Stats, with the same out", function()
    local s = cases[1]
    local x = inputs(s)
    local with_lse = forward(s, x, "cudnn")
    local keep = {}
    local q, k, v = A.qkv_ptrs(s, x, dev, keep)
    local out = dev(sao.zeros(x.ospan))
    local before = ran()
    with_mode("bf16", "cudnn", function()
      check(C.sao_cuda_attention_forward(ctx, x.dev_desc, q, k, v, nil, nil, fp(out), nil))
    end)
    assert.equal(1, ran() - before)
    local got = host(out)
    assert.equal(0, ffi.C.memcmp(fp(got), fp(with_lse) + A.G, 4 * x.ospan))
  end)

  gpu_it("stores O in bf16 (the flash kernel does not) and is bit-identical run to run", function()
    local s = cases[1]
    local x = inputs(s)
    local o1, l1 = forward(s, x, "cudnn")
    local o2, l2 = forward(s, x, "cudnn")
    assert.equal(0, ffi.C.memcmp(fp(o1), fp(o2), 4 * o1:numel()), "out differs between two identical runs")
    assert.equal(0, ffi.C.memcmp(fp(l1), fp(l2), 4 * l1:numel()), "lse differs between two identical runs")
    -- every out value of cuDNN's is a bf16 number (stored as bf16, widened); the flash kernel's are not
    local o3 = forward(s, x, "auto")
    local function all_bf16(buf)   -- the outputs only (the guards around them are not bf16 numbers)
      local t = sao.zeros(x.ospan)
      ffi.copy(fp(t), fp(buf) + A.G, 4 * x.ospan)
      return t:maxdiff(t:to("bf16"):to("f32")) == 0
    end
    assert.is_true(all_bf16(o1), "cuDNN's out is not bf16-valued")
    assert.is_false(all_bf16(o3), "the flash kernel's out is bf16-valued: the comparison shows nothing")
    assert.is_true(o1:maxdiff(o3) > 0)
  end)

  gpu_it("what cuDNN does not take runs the 'auto' kernels, bit for bit, and says why", function()
    local refused = {
      { s = { name = "bias", B = 2, H = 4, Hkv = 2, T = 37, M = 53, D = 64, bias = true, seed = 170 } },
      { s = { name = "key mask", B = 2, H = 4, Hkv = 2, T = 37, M = 53, D = 64, mask = A.mask_37, seed = 171 } },
      { s = { name = "D=12", B = 1, H = 2, Hkv = 1, T = 19, M = 23, D = 12, seed = 172 }, why = "multiple of 8" },
      { s = cases[1], mode = "fp32" },
      { s = cases[1], mode = "tf32" },
    }
    for _, r in ipairs(refused) do
      local x = inputs(r.s)
      local o1, l1, runs = forward(r.s, x, "cudnn", r.mode)
      local o2, l2 = forward(r.s, x, "auto", r.mode)
      assert.equal(0, runs, r.s.name .. ": cuDNN ran")
      assert.equal(0, ffi.C.memcmp(fp(o1), fp(o2), 4 * o1:numel()), r.s.name .. ": out is not the auto kernels'")
      assert.equal(0, ffi.C.memcmp(fp(l1), fp(l2), 4 * l1:numel()), r.s.name .. ": lse is not the auto kernels'")
      if r.why then
        local _, _, why = sao.cuda.sdpa()
        assert.truthy(why and why:find(r.why, 1, true), tostring(why))
        assert.truthy(why:find("D=" .. r.s.D, 1, true), why)
      end
    end
  end)

  gpu_it("a cuDNN with no engine for the graph: the shape is refused once, with the reason (emulation only)", function()
    local s = { name = "no engine", B = 1, H = 2, Hkv = 2, T = 21, M = 22, D = 32, seed = 180 }
    local x = inputs(s)
    if not emu_env({ EMU_CUDNN_NO_SDPA = "1" }, function()
      local o1, l1, runs = forward(s, x, "cudnn")
      assert.equal(0, runs)
      local _, _, why = sao.cuda.sdpa()
      assert.truthy(why and why:find("no engine", 1, true) and why:find("T=21 M=22", 1, true), tostring(why))
      local o2 = forward(s, x, "auto")
      assert.equal(0, ffi.C.memcmp(fp(o1), fp(o2), 4 * o1:numel()))
    end) then return end
    -- the refusal is cached per shape: it stays refused, other shapes are not affected
    local _, _, runs = forward(s, x, "cudnn")
    assert.equal(0, runs)
    local s2 = { name = "other", B = 1, H = 2, Hkv = 2, T = 21, M = 23, D = 32, seed = 181 }
    local _, _, runs2 = forward(s2, inputs(s2), "cudnn")
    assert.equal(1, runs2)
  end)

  -- ---- the backward (cuDNN's unified SDPA backward) ----------------------------------------------
  -- Against the CPU backward from the CPU forward's out and lse, q, k, v and dO bf16-rounded on the
  -- host, dq, dk, dv accumulated into non-zero buffers with guard floats around them. cuDNN rounds,
  -- beyond what the CPU sees, P (in dV = P^T dO) and dS (in dK and dQ) to bf16, as the bf16 flash
  -- backward does (cuda_flash_spec.lua derives ~7e-3 of the gradient's scale, allows 1e-2), then
  -- stores each gradient in bf16 (one more rounding, <= 2^-8 = 3.9e-3 of the scale) and reads out
  -- in bf16 for rowsum(dO * out) (an error of u |out| in one term of dS's difference: ~u of dS).
  -- Estimate 1.1e-2, allowed 1.5e-2 of the scale. Measured on the emulation (SAO_SPEC_VERBOSE=1):
  -- 0.6e-3 to 1.5e-3 of the scale (the fake rounds as described; its sums are in another order).
  local BWD_TOL = 1.5e-2

  local grad_err = A.grad_err

  -- The CPU backward and the device one with `impl` (bf16 mode) from the CPU forward's out and lse
  -- (spec/support/attncmp.lua's bwd_pair: guarded accumulating gradients), and how many cuDNN
  -- backwards the device one made.
  local function bwd_pair(s, x, impl, grads)
    local _, b0 = sao.cuda.sdpa()
    local want, got = A.bwd_pair(s, x, "bf16", impl, grads)
    local _, b1 = sao.cuda.sdpa()
    return want, got, b1 - b0
  end

  for _, s in ipairs { cases[1], cases[4], cases[5], cases[7] } do
    gpu_it("the backward matches the CPU kernel's on bf16-rounded inputs: " .. s.name, function()
      local x = inputs(s)
      local want, got, runs = bwd_pair(s, x, "cudnn")
      local _, _, why = sao.cuda.sdpa()
      assert.equal(1, runs, "cuDNN's SDPA backward did not run: " .. tostring(why))
      for _, n in ipairs { "dq", "dk", "dv" } do grad_err(s.name .. ": " .. n, want[n], got[n], BWD_TOL) end
    end)
  end

  gpu_it("the backward: partial gradients, bit-identical repeats; a dbias, bias or mask runs the 'auto' kernels", function()
    local s = cases[1]
    local x = inputs(s)
    local _, all, r1 = bwd_pair(s, x, "cudnn")
    local _, again = bwd_pair(s, x, "cudnn")
    local _, dq_only, r2 = bwd_pair(s, x, "cudnn", { dq = true })
    local _, dv_only = bwd_pair(s, x, "cudnn", { dv = true })
    assert.equal(1, r1)
    assert.equal(1, r2)
    for _, n in ipairs { "dq", "dk", "dv" } do
      assert.equal(0, ffi.C.memcmp(fp(all[n]), fp(again[n]), 4 * all[n]:numel()), n .. " differs between two runs")
    end
    assert.equal(0, ffi.C.memcmp(fp(all.dq), fp(dq_only.dq), 4 * all.dq:numel()))
    assert.equal(0, ffi.C.memcmp(fp(all.dv), fp(dv_only.dv), 4 * all.dv:numel()))
    -- not taken: each equal, bit for bit, to the "auto" setting's result
    local sb = { name = "bias with dbias", B = 2, H = 4, Hkv = 2, T = 37, M = 53, D = 64, bias = true, seed = 190 }
    local sm = { name = "key mask", B = 2, H = 4, Hkv = 2, T = 37, M = 53, D = 64, mask = A.mask_37, seed = 191 }
    for _, t in ipairs { { s = sb, grads = { dq = true, dk = true, dv = true, dbias = true } }, { s = sm } } do
      local xt = inputs(t.s)
      local _, c, runs = bwd_pair(t.s, xt, "cudnn", t.grads)
      local _, a = bwd_pair(t.s, xt, "auto", t.grads)
      assert.equal(0, runs, t.s.name .. ": cuDNN ran")
      for n, v in pairs(c) do assert.equal(0, ffi.C.memcmp(fp(v), fp(a[n]), 4 * v:numel()), n) end
    end
  end)

  gpu_it("a cuDNN with a forward engine but no backward one: the backward runs the flash kernel (emulation only)", function()
    local s = { name = "no backward engine", B = 1, H = 2, Hkv = 2, T = 21, M = 25, D = 32, seed = 200 }
    local x = inputs(s)
    emu_env({ EMU_CUDNN_NO_SDPA_BWD = "1" }, function()
      local _, _, fwd_runs = forward(s, x, "cudnn")
      assert.equal(1, fwd_runs)
      local _, c, runs = bwd_pair(s, x, "cudnn")
      assert.equal(0, runs)
      local _, _, why = sao.cuda.sdpa()
      assert.truthy(why and why:find("SDPA backward", 1, true) and why:find("no engine", 1, true), tostring(why))
      local _, a = bwd_pair(s, x, "auto")
      for n, v in pairs(c) do assert.equal(0, ffi.C.memcmp(fp(v), fp(a[n]), 4 * v:numel()), n) end
    end)
  end)

  gpu_it("nondeterministic engines are passed over unless SAO_CUDNN_NONDETERMINISTIC=1 (emulation only)", function()
    -- the fake's backward heuristics offer a nondeterministic engine before a deterministic one;
    -- with EMU_CUDNN_SDPA_BWD_NONDET_ONLY=1 only the nondeterministic one (the env is read when a
    -- shape's plan is built: each step below uses a new shape)
    local function shape(T) return { name = "T=" .. T, B = 1, H = 2, Hkv = 2, T = T, M = 27, D = 32, seed = 210 + T } end
    if not emu_env({ EMU_CUDNN_SDPA_BWD_NONDET_ONLY = "1" }, function()
      local s2 = shape(24)
      local x2 = inputs(s2)
      local _, c, r2 = bwd_pair(s2, x2, "cudnn")
      assert.equal(0, r2, "a nondeterministic engine was taken without SAO_CUDNN_NONDETERMINISTIC")
      local _, _, why = sao.cuda.sdpa()
      assert.truthy(why and why:find("nondeterministic", 1, true) and why:find("SAO_CUDNN_NONDETERMINISTIC=1", 1, true),
        tostring(why))
      local _, a = bwd_pair(s2, x2, "auto")
      for n, v in pairs(c) do assert.equal(0, ffi.C.memcmp(fp(v), fp(a[n]), 4 * v:numel()), n) end
      emu_env({ SAO_CUDNN_NONDETERMINISTIC = "1" }, function()
        local s3 = shape(25)
        local want, got, r3 = bwd_pair(s3, inputs(s3), "cudnn")
        assert.equal(1, r3, "SAO_CUDNN_NONDETERMINISTIC=1 did not take the nondeterministic engine")
        for _, n in ipairs { "dq", "dk", "dv" } do grad_err(s3.name .. ": " .. n, want[n], got[n], BWD_TOL) end
      end)
    end) then return end
    -- without the switch the fake's deterministic engine is there and taken
    local s1 = shape(23)
    local _, _, r1 = bwd_pair(s1, inputs(s1), "cudnn")
    assert.equal(1, r1, "the deterministic engine was not taken")
  end)

  -- Forward and backward both through cuDNN from unrounded inputs (dO too): the backward then
  -- starts from cuDNN's bf16 out; cuda_attn_spec.lua's bf16-mode cases (this forward then this
  -- backward, unrounded inputs) allow 1e-2; here the gradients' bf16 storage adds up to 2^-8: 1.5e-2.
  gpu_it("forward and backward through cuDNN from unrounded inputs match the CPU", function()
    local s = cases[1]
    local x = inputs(s)
    local dout = sao.randn { x.nq, seed = s.seed + 4 }
    local g0 = { dq = sao.randn { x.nq, seed = s.seed + 5 }, dk = sao.randn { x.nk, seed = s.seed + 6 },
                 dv = sao.randn { x.nk, seed = s.seed + 7 } }
    local function run(fwd, bwd, mk)
      local r = { q = mk(x.q), k = mk(x.k), v = mk(x.v), dout = mk(dout), out = mk(sao.zeros(x.nq)),
                  lse = mk(sao.zeros(x.nlse)) }
      for n, t in pairs(g0) do r[n] = mk(t:clone()) end
      check(fwd(ctx, x.cpu_desc, fp(r.q), fp(r.k), fp(r.v), nil, nil, fp(r.out), fp(r.lse)))
      check(bwd(ctx, x.cpu_desc, fp(r.q), fp(r.k), fp(r.v), nil, nil, fp(r.out), fp(r.lse), fp(r.dout), fp(r.dq),
                fp(r.dk), fp(r.dv), nil))
      return r
    end
    local want = run(C.sao_attention_forward, C.sao_attention_backward, function(t) return t:clone() end)
    local f0, b0 = sao.cuda.sdpa()
    with_mode("bf16", "cudnn", function()
      local got = run(C.sao_cuda_attention_forward, C.sao_cuda_attention_backward, dev)
      for n in pairs(g0) do close(s.name .. ": " .. n, want[n], got[n], 1.5e-2) end
    end)
    local f1, b1 = sao.cuda.sdpa()
    assert.equal(1, f1 - f0)
    assert.equal(1, b1 - b0)
  end)

  -- ---- the DiT (dit_tiny: 2 heads of D=64 in self- and cross-attention) -------------------------
  local new_dit, xin, tin, cross, global = A.dit_tiny()

  gpu_it("the DiT forward with cuDNN's SDPA stays within bf16's tolerance of the CPU, eager and as a CUDA graph", function()
    local want = new_dit():forward(xin, tin, cross, global, { cfg_scale = 7 })
    with_mode("bf16", "cudnn", function()
      local d = new_dit():to("cuda")
      local before = ran()
      local eager = d:forward(xin, tin, cross, global, { cfg_scale = 7 })
      assert.is_true(ran() - before >= 2, "cuDNN's SDPA did not run in the DiT")   -- self and cross, every block
      -- the tolerance of cuda_dit_spec.lua's bf16 test (estimate: bf16 inputs, ~1e-2 of the scale)
      assert.tensor_near(want, eager, { abs = 2e-2 * want:abs():max(), rel = 2e-2 })
      sao.cuda.attention_impl("auto")
      local flash = d:forward(xin, tin, cross, global, { cfg_scale = 7 })
      assert.is_true(flash:maxdiff(eager) > 0, "the setting changed nothing")
      sao.cuda.attention_impl("cudnn")
      gpu.without_gc(function()
        A.graph_replays_eager(d, eager, function() return d:forward(xin, tin, cross, global, { cfg_scale = 7 }) end)
        d:graphs(false)
      end)
    end)
  end)
end)
