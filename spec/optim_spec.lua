-- AdamW and EMA against upstream (spec/fixtures/train_step_vobjective_update: torch.optim.AdamW
-- applied to the stored params and grads; ema_pytorch's decay), schedules, clipping, NaN guard.
local sao = require "sao"
local cjson = require "cjson"
require "spec.support.near"

describe("AdamW (train_step_vobjective_update fixture)", function()
  local man = cjson.decode(io.open("spec/fixtures/train_step_vobjective_update.json"):read("*a"))
  local up = sao.load_safetensors("spec/fixtures/train_step_vobjective_update.safetensors")
  local gfx = sao.load_safetensors("spec/fixtures/train_step_vobjective.safetensors")
  local pfx = sao.load_safetensors("spec/fixtures/dit_tiny.safetensors")
  local params, grads = {}, {}
  for k, v in pairs(up) do
    local name = k:match("^updated/(.*)$")
    if name then
      params[name] = pfx[name]:clone()
      grads[name] = gfx["grads/" .. name]
    end
  end

  it("one step matches torch.optim.AdamW on every parameter", function()
    local a = man.adamw
    local opt = sao.optim.adamw(params, grads, { lr = a.lr, betas = a.betas, eps = a.eps, weight_decay = a.weight_decay })
    local info = opt:step()
    assert.is_false(info.skipped == true)
    local n = 0
    for name, p in pairs(params) do
      -- measured max abs err 0 (bit-identical in f32; tolerance 1e-6)
      assert.tensor_near(up["updated/" .. name], p, { abs = man.tolerances["updated/*"].max_abs })
      n = n + 1
    end
    assert.is_true(n > 30)
  end)

  it("EMA decay follows ema_pytorch and the lerp matches the stored examples", function()
    local ema = sao.optim.ema({})
    assert.equal(0, ema:decay(1))
    assert.equal(0, ema:decay(2))
    assert.is_true(math.abs(ema:decay(man.ema.example_step) - man.ema.example_decay) < 1e-12)
    assert.equal(0.9999, ema:decay(1e7))
    local decay = up["inputs/ema_decay"]:item()
    for k, want in pairs(up) do
      local name = k:match("^ema/(.*)$")
      if name then
        local shadow = pfx[name]:clone()
        sao.check(sao.C.sao_ema_update(sao.ctx, shadow:data(), up["updated/" .. name]:data(), shadow:numel(), decay))
        assert.tensor_near(want, shadow, { abs = 1e-6 })
      end
    end
  end)
end)

describe("optimiser behaviour", function()
  local function setup()
    local p = { w = sao.tensor { 1, -2, 3 } }
    local g = { w = sao.tensor { 0.5, 0.5, -1 } }
    return p, g
  end

  it("re-reads its config every step (lr changed between steps takes effect)", function()
    local p, g = setup()
    local cfg = { lr = 0.1 }
    local opt = sao.optim.adamw(p, g, cfg)
    opt:step()
    local after1 = p.w:clone()
    cfg.lr = 0
    opt:step()
    assert.tensor_near(after1, p.w, { abs = 0 })
  end)

  it("clips by global norm", function()
    local p, g = setup()
    local opt = sao.optim.adamw(p, g, { lr = 0.1, clip = 0.5 })
    local info = opt:step()
    assert.is_true(info.clipped)
    assert.is_true(math.abs(info.grad_norm - math.sqrt(1.5)) < 1e-6)
  end)

  it("skips a step with a non-finite gradient and leaves everything untouched", function()
    local p, g = setup()
    g.w[{ 2 }] = 0 / 0
    local opt = sao.optim.adamw(p, g, { lr = 0.1 })
    local info = opt:step()
    assert.is_true(info.skipped)
    assert.same({ 1, -2, 3 }, p.w:totable())
    assert.equal(0, opt.state.step)
  end)

  it("schedules: InverseLR values of SAO_SPEC 7.5, cosine, warmup, hot file", function()
    local inv = sao.schedules.inverse_lr()
    local cfg = { lr = 5e-5 }
    assert.is_true(math.abs(inv(0, cfg) - 5.0e-7) < 1e-12)
    assert.is_true(math.abs(inv(10, cfg) - 5.23e-6) < 5e-9)
    assert.is_true(math.abs(inv(100, cfg) - 3.19e-5) < 5e-8)
    assert.is_true(math.abs(inv(1e6, cfg) - 3.54e-5) < 5e-8)
    local cos = sao.schedules.cosine { warmup = 10, total = 110 }
    assert.is_true(math.abs(cos(4, { lr = 1 }) - 0.5) < 1e-12)
    assert.is_true(math.abs(cos(110, { lr = 1 })) < 1e-12)
    local path = os.tmpname()
    local function put(text) local f = io.open(path, "w"); f:write(text); f:close() end
    put("return function(step, cfg) return cfg.lr * 2 end")
    assert.equal(2, sao.schedules.load_file(path)(0, { lr = 1 }))
    put("return function(step, cfg) return oops(")
    assert.error_matches(function() sao.schedules.load_file(path) end, "schedule file " .. path:gsub("%p", "%%%0"))
    os.remove(path)
  end)
end)

-- The fused step (kernels/cpu/adamw.c sao_adamw_multi): AdamW + EMA + bf16 copies of many tensors
-- in one call, the same bits as the per-tensor kernels; the bf16 copies to nearest or stochastic.
describe("fused optimiser step (sao_adamw_multi)", function()
  local ffi = require "ffi"
  local C, ctx = sao.C, sao.ctx
  local sizes = { 1, 7, 4096, 4097, 40000 }   -- 40000 > SAO_PAR_MIN: the threaded loop

  local function tensors(seed)
    local t = {}
    for i, n in ipairs(sizes) do
      t[i] = { p = sao.randn { { n }, seed = seed + i }, g = sao.randn { { n }, seed = seed + 10 + i },
        m = sao.randn { { n }, seed = seed + 20 + i } * 0.1, v = sao.rand { { n }, seed = seed + 30 + i } * 0.01,
        e = sao.randn { { n }, seed = seed + 40 + i } }
    end
    return t
  end
  local function list(t, bf)
    local l = ffi.new("sao_optim_tensor[?]", #t)
    local off = 0
    for i, x in ipairs(t) do
      local e = l[i - 1]
      e.param, e.grad, e.m, e.v, e.ema = x.p:data(), x.g:data(), x.m:data(), x.v:data(), x.e:data()
      e.param_bf16 = bf and bf[i] or nil
      e.n, e.sr_offset = x.p:numel(), off
      off = off + x.p:numel()
    end
    return l
  end
  local function hyper(step, ema_decay, stochastic, seed)
    local h = ffi.new("sao_optim_hyper")
    h.lr, h.beta1, h.beta2, h.eps, h.weight_decay = 1e-3, 0.9, 0.999, 1e-8, 0.01
    h.step, h.grad_scale, h.ema_decay, h.stochastic, h.sr_seed = step, 0.5, ema_decay, stochastic or 0, seed or 0
    return h
  end
  local function bits(t) return ffi.cast("uint16_t *", t:data()) end
  pcall(ffi.cdef, "int memcmp(const void *, const void *, size_t);")

  it("gives the per-tensor AdamW and EMA kernels' bits, EMA decay 0 copying the weights", function()
    local a, b = tensors(1), tensors(1)
    for step, decay in ipairs { 0, 0.3, 0.9 } do
      sao.check(C.sao_adamw_multi(ctx, list(a), #a, hyper(step, decay)))
      for _, x in ipairs(b) do
        local n = x.p:numel()
        sao.check(C.sao_adamw_step(ctx, x.p:data(), x.g:data(), x.m:data(), x.v:data(), n, 1e-3, 0.9, 0.999, 1e-8,
          0.01, step, 0.5))
        if decay == 0 then x.e:copy_(x.p) else sao.check(C.sao_ema_update(ctx, x.e:data(), x.p:data(), n, decay)) end
      end
    end
    for i, x in ipairs(a) do
      for _, f in ipairs { "p", "m", "v", "e" } do assert.equal(0, x[f]:maxdiff(b[i][f]), f .. " of tensor " .. i) end
    end
    -- ema_decay < 0: the EMA copies are left alone
    local e0 = a[3].e:clone()
    sao.check(C.sao_adamw_multi(ctx, list(a), #a, hyper(4, -1)))
    assert.equal(0, e0:maxdiff(a[3].e))
  end)

  it("writes bf16 copies rounded to nearest even, as sao's f32 -> bf16 conversion", function()
    local a = tensors(2)
    local bf = {}
    for i, x in ipairs(a) do bf[i] = sao.zeros({ x.p:numel() }):to("bf16") end
    local ptrs = {}
    for i = 1, #a do ptrs[i] = bits(bf[i]) end
    sao.check(C.sao_adamw_multi(ctx, list(a, ptrs), #a, hyper(1, -1)))
    for i, x in ipairs(a) do assert.equal(0, x.p:to("bf16"):float():maxdiff(bf[i]:float()), "tensor " .. i) end
    -- and the bits themselves (to("bf16") is that conversion)
    local want = a[5].p:to("bf16")
    assert.equal(0, ffi.C.memcmp(bits(want), ptrs[5], 2 * a[5].p:numel()))
  end)

  it("rounds stochastically: a neighbour each, unbiased, a pure function of (seed, step, index)", function()
    local n = 100000
    -- lr 0 leaves the weights as they are: 1 + 2^-10 lies 1/8 of the way from bf16 1 to 1 + 2^-7
    local x = { p = sao.full({ n }, 1 + 2 ^ -10), g = sao.ones { n }, m = sao.zeros { n }, v = sao.zeros { n },
      e = sao.zeros { n } }
    local function run(step, seed, parts)
      local out = sao.zeros({ n }):to("bf16")
      local h = hyper(step, -1, 1, seed)
      h.lr = 0
      -- the tensor handed over whole or in parts (their sr_offset continue the stream)
      local l = ffi.new("sao_optim_tensor[?]", #parts)
      local at = 0
      for i, len in ipairs(parts) do
        local e = l[i - 1]
        e.param, e.grad = ffi.cast("float *", x.p:data()) + at, ffi.cast("float *", x.g:data()) + at
        e.m, e.v = ffi.cast("float *", x.m:data()) + at, ffi.cast("float *", x.v:data()) + at
        e.param_bf16, e.n, e.sr_offset = bits(out) + at, len, at
        at = at + len
      end
      sao.check(C.sao_adamw_multi(ctx, l, #parts, h))
      return out
    end
    local a = run(1, 7, { n })
    local ones, ups, v = 0, 0, a:float():totable()
    for i = 1, n do
      if v[i] == 1 then ones = ones + 1 elseif v[i] == 1 + 2 ^ -7 then ups = ups + 1 end
    end
    assert.equal(n, ones + ups)                                  -- only the two neighbours
    -- rounded up with probability 1/8: 12500 expected, std 105
    assert.is_true(math.abs(ups - n / 8) < 600, "rounded up " .. ups .. " of " .. n)
    -- the same (seed, step, index) gives the same bits however the tensor is split
    assert.equal(0, ffi.C.memcmp(bits(a), bits(run(1, 7, { 3, 4093, n - 4096 })), 2 * n))
    -- another step or seed draws other numbers
    assert.is_true(a:float():maxdiff(run(2, 7, { n }):float()) > 0)
    assert.is_true(a:float():maxdiff(run(1, 8, { n }):float()) > 0)
    -- element j's 16 bits: lane j % 4 of Philox4x32-10 at counter j / 4 + step * 2^40, key seed
    local out4 = ffi.new("uint32_t[4]")
    local u = ffi.new("union { float f; uint32_t u; }")
    u.f = 1 + 2 ^ -10
    for _, j in ipairs { 0, 1, 5, 99999 } do
      C.sao_philox4x32(math.floor(j / 4) + 2 ^ 40, 7, out4)
      local want = bit.rshift(u.u + bit.band(out4[j % 4], 0xffff), 16)
      assert.equal(want, bits(a)[j], "element " .. j)
    end
  end)

  it("refuses bad arguments with the tensor's number", function()
    local a = tensors(3)
    local l = list(a)
    l[2].m = nil
    assert.error_matches(function() sao.check(C.sao_adamw_multi(ctx, l, #a, hyper(1, -1))) end, "tensor 3")
    assert.error_matches(function() sao.check(C.sao_adamw_multi(ctx, list(a), #a, hyper(1, -1, 2))) end,
      "stochastic is 2")
    assert.error_matches(function() sao.check(C.sao_adamw_multi(ctx, list(a), -1, hyper(1, -1))) end,
      "negative tensor count")
    assert.error_matches(function() sao.check(C.sao_adamw_multi(ctx, list(a), #a, hyper(0, -1))) end, "1%-based")
  end)

  -- named weights and gradients of the sizes above, the same numbers at every call
  local function setup()
    local p, g = {}, {}
    for i, n in ipairs(sizes) do
      p["w" .. i] = sao.randn { { n }, seed = i }
      g["w" .. i] = sao.randn { { n }, seed = 50 + i }
    end
    return p, g
  end

  it("AdamW:step(ema) equals a step and then the EMA update, first copies included", function()
    local p1, g1 = setup()
    local p2, g2 = setup()
    local o1, o2 = sao.optim.adamw(p1, g1, { lr = 1e-2 }), sao.optim.adamw(p2, g2, { lr = 1e-2 })
    local e1, e2 = sao.optim.ema(p1, { update_after_step = 1 }), sao.optim.ema(p2, { update_after_step = 1 })
    for _ = 1, 5 do
      local info = o1:step(e1)
      o2:step()
      local d = e2:update()
      assert.equal(d, info.ema)
    end
    for k in pairs(p1) do
      assert.equal(0, p1[k]:maxdiff(p2[k]), k)
      assert.equal(0, e1.shadow[k]:maxdiff(e2.shadow[k]), k)
    end
    assert.is_true(e1:decay(5) > 0)                              -- the last updates were lerps, not copies
  end)

  it("ZeRO-1: shards updated apart and put together give the unsharded step's bits", function()
    local comm = require "sao.comm"
    local cfg = { lr = 1e-2, clip = 50, weight_decay = 0.1 }   -- clipped: the global norm is the shards' sum
    local p0, g0 = setup()
    local o0, e0 = sao.optim.adamw(p0, g0, cfg), sao.optim.ema(p0, { update_after_step = 1 })
    local total = 0
    for _, n in ipairs(sizes) do total = total + n end
    local W, shards = 3, {}
    for r = 0, W - 1 do
      local p, g = setup()
      local o = sao.optim.adamw(p, g, cfg)
      o:set_shard(comm.shard(total, W, r))
      shards[r + 1] = { p = p, o = o, e = sao.optim.ema(p, { update_after_step = 1 }) }
    end
    -- each shard keeps moments for its part only
    local kept = 0
    for _, sh in ipairs(shards) do for _, m in pairs(sh.o.state.m) do kept = kept + m:numel() end end
    assert.equal(total, kept)
    assert.is_nil(shards[3].o.state.m.w1)                        -- w1 lies wholly in the first shard
    local full = o0:grad_sumsq()
    local parts = 0
    for _, sh in ipairs(shards) do parts = parts + sh.o:grad_sumsq() end
    assert.near(full, parts, 1e-9 * full)
    for _ = 1, 4 do
      local info = o0:step(e0)
      assert.is_true(info.clipped)
      for _, sh in ipairs(shards) do sh.o:step(sh.e, nil, math.sqrt(full)) end
    end
    -- the owned elements of each shard's copy are the unsharded run's, bit for bit
    local checked = 0
    for r, sh in ipairs(shards) do
      for k, t in pairs(p0) do
        local a, b = sh.o:slice(k)
        if a then
          assert.equal(0, t:narrow(1, a + 1, b - a):maxdiff(sh.p[k]:narrow(1, a + 1, b - a)), k .. " rank " .. r - 1)
          assert.equal(0, e0.shadow[k]:narrow(1, a + 1, b - a):maxdiff(sh.e.shadow[k]:narrow(1, a + 1, b - a)))
          assert.equal(0, o0.state.m[k]:narrow(1, a + 1, b - a):maxdiff(sh.o.state.m[k]))
          checked = checked + (b - a)
        else
          -- a tensor outside the shard is left alone
          assert.is_true(t:maxdiff(sh.p[k]) > 0)
        end
      end
    end
    assert.equal(total, checked)
    -- a checkpoint's whole moments load into a shard as its part
    local sh = shards[3]
    local m, v = {}, {}
    for k in pairs(p0) do m["m/" .. k], v["v/" .. k] = o0.state.m[k], o0.state.v[k] end
    for _, t in pairs(sh.o.state.m) do t:fill_(0) end
    sh.o:load_moments(m, v)
    local a, b = sh.o:slice("w5")
    assert.equal(0, o0.state.m.w5:narrow(1, a + 1, b - a):maxdiff(sh.o.state.m.w5))
  end)
end)
