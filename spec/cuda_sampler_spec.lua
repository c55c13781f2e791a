-- The sampling loop on the GPU (tag gpu): the per-step math's CUDA twins (kernels/cuda/sampler.cu)
-- against runtime/sampler.c, device tensors made and filled in place (sao.empty_on, randn with
-- device =, fill_), the DiT's forward on device inputs (SAO_DIT_DEVICE_IO), and sao.sampler's
-- device loop against its host loop, alone, with CUDA graphs and through model:generate.
--
-- Tolerances: none. The step's scalars come from one host function and every element is
-- sampler_step.h's formula, written with explicit fma() so that neither gcc nor nvcc can contract
-- it differently; the scalings are single fp32 roundings. So the twins must give the CPU's bits,
-- and a loop whose DiT forward is the same device kernels must give the host loop's bits. Measured
-- on the CPU emulation of the backend: 0 differing bits everywhere below. Not yet run on a GPU.
local ffi = require "ffi"
local sao = require "sao"
local sampler = require "sao.sampler"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local gpu_it = gpu.it(it, pending)
local guarded = require("support.guarded").new()

local tiny = require "support.dit_tiny"
local new_dit, fx = tiny.new_dit, tiny.fx
local x0, cross, global = tiny.x, tiny.cross, tiny.global
local B = x0:size(1)

-- The two loops over one device DiT at CFG 7: the host loop (host tensors in and out of every
-- forward) and the device loop (everything on the GPU). Returns the host copy of the latents.
local function run(dit, on_device, opts)
  local noise = sao.randn { x0:shape(), seed = 11 }
  local o = { steps = opts.steps or 5, sampler = opts.sampler, seed = 5, sigma_max = 80, progress = false,
              eta = opts.eta, seeds = opts.seeds }
  if on_device then
    local c, g, t = cross:to("cuda"), global:to("cuda"), sao.empty_on("cuda", { B })
    o.noise = noise:to("cuda")
    o.model = function(x, tt, out)
      return dit:forward(x, t:fill_(tt), c, g, { cfg_scale = 7, out = out })
    end
  else
    o.noise = noise
    o.model = function(x, tt) return dit:forward(x, sao.full({ B }, tt), cross, global, { cfg_scale = 7 }) end
  end
  if opts.callback then o.callback = opts.callback end
  local r = sampler.sample(o)
  if on_device then
    assert.equal("cuda", r:device())
    r = r:to("cpu")
  end
  return r
end

describe("the sampling loop on the GPU #gpu", function()
  after_each(guarded.release)

  it("sao.empty_on makes host tensors for 'cpu' and refuses a device name it does not know", function()
    local t = sao.empty_on("cpu", { 2, 3 })
    assert.equal("cpu", t:device())
    assert.same({ 2, 3 }, t:shape())
    assert.is_nil(t:device_index())
    assert.error_matches(function() sao.empty_on("gpu", { 2 }) end, "device 'gpu': expected \"cpu\", \"cuda\" or \"cuda:N\"")
  end)

  if not gpu.has_gpu then
    it("without a usable GPU, device tensors are refused with the reason", function()
      assert.error_matches(function() sao.randn { { 4 }, seed = 1, device = "cuda" } end, gpu.no_cuda_reason())
      assert.error_matches(function() sao.empty_on("cuda", { 4 }) end, gpu.no_cuda_reason())
    end)
  end

  gpu_it("device tensors: made empty, drawn from the host's Philox stream, filled in place", function()
    local d = sao.randn { { 3, 1031 }, seed = 7, offset = 5, device = "cuda" }
    assert.equal("cuda", d:device())
    assert.equal(0, d:device_index())
    assert.equal(0, sao.randn { { 3, 1031 }, seed = 7, offset = 5 }:maxdiff(d:to("cpu")))
    local u = sao.rand { { 257 }, seed = 2, device = "cuda:0" }
    assert.equal(0, sao.rand { { 257 }, seed = 2 }:maxdiff(u:to("cpu")))
    local e = sao.empty_on("cuda", { 5, 7 })
    assert.same({ 5, 7 }, e:shape())
    e:fill_(0.1)   -- stored as (float)0.1, as on the host
    assert.equal(0, sao.full({ 5, 7 }, 0.1):maxdiff(e:to("cpu")))
    e:zero_()
    assert.equal(0, e:to("cpu"):abs():max())
    assert.error_matches(function() e:transpose(1, 2):fill_(1) end, "cuda_fill: needs a contiguous f32 device tensor")
  end)

  gpu_it("vdenoise and the scalings give the CPU's bits (n = 4133, guarded)", function()
    local n = 4133
    local x, v, init = sao.randn { { n }, seed = 1 } * 9, sao.randn { { n }, seed = 2 }, sao.randn { { n }, seed = 3 }
    local dx, px = guarded.put(x)
    local _, pv = guarded.put(v)
    local _, pinit = guarded.put(init)
    for _, sigma in ipairs { 500, 3.7, 0.3 } do
      local want = sao.empty(n)
      sao.check(C.sao_vdenoise(sao.ctx, n, x:data(), v:data(), sigma, want:data()))
      local dd, pd = guarded.put(sao.full({ n }, 777))
      sao.check(C.sao_cuda_vdenoise(sao.ctx, n, px, pv, sigma, pd))
      assert.equal(0, want:maxdiff(guarded.back(dd, n)))
    end
    -- the loop's start (noise sigma_max + init) and a step's input (x c_in), as the tensor ops make them
    local c_in = 1 / math.sqrt(3.7 * 3.7 + 1)
    local ds, ps = guarded.put(sao.full({ n }, 777))
    sao.check(C.sao_cuda_sample_scale(sao.ctx, n, px, 500, pinit, ps))
    assert.equal(0, (x * 500 + init):maxdiff(guarded.back(ds, n)))
    sao.check(C.sao_cuda_sample_scale(sao.ctx, n, px, c_in, nil, px))   -- in place
    assert.equal(0, (x * c_in):maxdiff(guarded.back(dx, n)))
  end)

  gpu_it("every sampler's step, history and noise cases give the CPU's bits and shift the history alike", function()
    local n = 4133
    local base = {
      x = sao.randn { { n }, seed = 21 } * 5, den = sao.randn { { n }, seed = 22 },
      den1 = sao.randn { { n }, seed = 23 }, den2 = sao.randn { { n }, seed = 24 }, noise = sao.randn { { n }, seed = 25 },
    }
    local cases = 0
    for kind = 0, 2 do
      for have = 0, 2 do
        for _, c in ipairs { { sn = 2.1, eta = 1, noise = true }, { sn = 2.1, eta = 1, noise = false },
                             { sn = 2.1, eta = 0, noise = true }, { sn = 0, eta = 1, noise = false } } do
          local what = string.format("kind %d, have %d, sig_next %g, eta %g, noise %s", kind, have, c.sn, c.eta,
            tostring(c.noise))
          local h, d, p = {}, {}, {}
          for k, t in pairs(base) do
            h[k] = t:clone()
            d[k], p[k] = guarded.put(t)
          end
          sao.check(C.sao_sample_step(sao.ctx, kind, n, h.x:data(), h.den:data(), h.den1:data(), h.den2:data(), have,
            3.7, c.sn, 0.41, 0.37, c.eta, c.noise and h.noise:data() or nil))
          sao.check(C.sao_cuda_sample_step(sao.ctx, kind, n, p.x, p.den, p.den1, p.den2, have, 3.7, c.sn, 0.41, 0.37,
            c.eta, c.noise and p.noise or nil))
          for _, k in ipairs { "x", "den1", "den2" } do
            assert.equal(0, h[k]:maxdiff(guarded.back(d[k], n)), what .. ": " .. k)
          end
          -- the step did something (x moved; the history moved for the DPM++ samplers)
          assert.is_true(h.x:maxdiff(base.x) > 1e-3, what)
          if kind ~= 0 then assert.equal(0, h.den1:maxdiff(base.den), what) end
          cases = cases + 1
          guarded.release()
        end
      end
    end
    assert.equal(36, cases)
  end)

  gpu_it("the device step checks its arguments as the CPU's does", function()
    local d = sao.zeros(8):to("cuda")
    local p = ffi.cast("float*", d:data())
    assert.error_matches(function()
      sao.check(C.sao_cuda_sample_step(sao.ctx, 7, 8, p, p, p, p, 0, 2, 1, 0, 0, 1, nil))
    end, "cuda_sample_step: unknown sampler kind 7")
    assert.error_matches(function()
      sao.check(C.sao_cuda_sample_step(sao.ctx, 2, 8, p, p, p, nil, 2, 2, 1, 0.5, 0.5, 1, nil))
    end, "cuda_sample_step: a history of 2 steps needs den1 and den2")
    assert.error_matches(function()
      sao.check(C.sao_sample_step(sao.ctx, 1, 8, sao.zeros(8):data(), sao.zeros(8):data(), nil, nil, 1, 2, 1, 0.5, 0, 1, nil))
    end, "sample_step: a history of 1 steps needs den1")
    local host = sao.zeros(8)
    assert.error_matches(function()
      sao.check(C.sao_cuda_vdenoise(sao.ctx, 8, host:data(), p, 1, p))
    end, "cuda_vdenoise")
  end)

  gpu_it("the DiT's forward on device tensors: queued, the same bits as host in and out, and its checks", function()
    local dit = new_dit():to("cuda")
    local t = fx["inputs/t"]
    local want = dit:forward(x0, t, cross, global, { cfg_scale = 7 })
    local out = sao.empty_on("cuda", x0:shape())
    local got = dit:forward(x0:to("cuda"), t:to("cuda"), cross:to("cuda"), global:to("cuda"), { cfg_scale = 7, out = out })
    assert.equal(out:data(), got:data())   -- written where asked
    assert.equal(0, want:maxdiff(got:to("cpu")))
    -- without out: a new device tensor; a number for t
    local t1 = t:totable()[1]
    local same_t = sao.full({ B }, t1)
    local w1 = dit:forward(x0, same_t, cross, global, { cfg_scale = 7 })
    assert.equal(0, w1:maxdiff(dit:forward(x0:to("cuda"), t1, cross:to("cuda"), global:to("cuda"), { cfg_scale = 7 }):to("cpu")))
    -- every input on the GPU, f32, of the right shape; hidden states only for host calls
    assert.error_matches(function()
      dit:forward(x0:to("cuda"), t:to("cuda"), cross, global:to("cuda"), { cfg_scale = 7 })
    end, "with x on the GPU, cross must be a contiguous f32 tensor there too")
    assert.error_matches(function()
      dit:forward(x0:to("cuda"), t:to("cuda"), cross:to("cuda"), global:to("cuda"), { out = sao.empty_on("cuda", { 1, 2 }) })
    end, "out is %[1, 2%], expected")
    assert.error_matches(function()
      dit:forward(x0:to("cuda"), t:to("cuda"), cross:to("cuda"), global:to("cuda"), { hidden = true })
    end, "hidden states are not returned for device inputs")
    assert.error_matches(function()
      new_dit():forward(x0:to("cuda"), t:to("cuda"), cross:to("cuda"), global:to("cuda"))
    end, "x is on the GPU but the model is on the CPU")
  end)

  gpu_it("the device loop gives the host loop's bits for every sampler, and per-item seeds (same device DiT)", function()
    local dit = new_dit():to("cuda")
    local seeds = {}
    for b = 1, B do seeds[b] = 3 + 4 * b end
    for _, c in ipairs { { sampler = "dpmpp-3m-sde" }, { sampler = "dpmpp-2m-sde" }, { sampler = "euler" },
                         { sampler = "dpmpp-3m-sde", eta = 0 }, { sampler = "dpmpp-3m-sde", seeds = seeds } } do
      local host = run(dit, false, c)
      local seen = {}
      local dev = run(dit, true, { sampler = c.sampler, eta = c.eta, seeds = c.seeds, callback = function(i, x, den, s)
        assert.equal("cuda", x:device())
        seen[#seen + 1] = s
      end })
      assert.equal(5, #seen)
      assert.is_true(host:abs():max() > 0.1, c.sampler)
      assert.equal(0, host:maxdiff(dev), c.sampler .. " eta " .. tostring(c.eta))
    end
  end)

  gpu_it("the device loop refuses v-ddim and a model that returns a host tensor", function()
    local noise = sao.randn { { 1, 4, 8 }, seed = 1, device = "cuda" }
    assert.error_matches(function()
      sampler.sample { noise = noise, sampler = "v-ddim", steps = 2, model = function(x) return x end }
    end, "v%-ddim runs on the host")
    assert.error_matches(function()
      sampler.sample { noise = noise, steps = 2, model = function(x) return sao.zeros(1, 4, 8) end }
    end, "the model must return a GPU tensor")
  end)

  gpu_it("with CUDA graphs the device loop replays every step after the second, and allocates nothing per step", function()
    local dit = new_dit():to("cuda")
    local eager = run(dit, true, { steps = 6 })
    gpu.without_gc(function()
      dit:graphs(true)
      local before = sao.cuda.memory().cudamalloc_calls
      local r = run(dit, true, { steps = 6 })
      local st = dit:graph_stats()
      assert.is_nil(st.why)
      -- step 1 eager (warm), 2 captured, 3..6 replayed: nothing was freed on the device in between
      assert.same({ captures = 1, replays = 4 }, st)
      assert.equal(0, eager:maxdiff(r))
      assert.equal(before, sao.cuda.memory().cudamalloc_calls)
    end)
  end)

  gpu_it("model:generate samples on the GPU by default, with the host loop's bits", function()
    local m = sao.load_model("tiny", { quiet = true, device = "cuda", precision = "fp32" })
    local opts = { prompt = "a short test", frames = 16, steps = 6, cfg_scale = 7, seed = 3, progress = false,
                   negative_prompt = "noise" }
    local a, ia = m:generate(opts)
    opts.device_loop = false
    local b, ib = m:generate(opts)
    assert.equal("cpu", ia.latents:device())
    assert.equal(0, ia.latents:maxdiff(ib.latents))
    assert.equal(0, a:maxdiff(b))
    -- audio-to-audio: the init latents go up once as well
    local init = sao.randn { { 2, 16 * m.c.ratio }, seed = 9 } * 0.1
    local c1 = m:generate { prompt = "x", frames = 16, steps = 4, seed = 1, progress = false, init_audio = init,
                            init_noise_level = 5 }
    local c2 = m:generate { prompt = "x", frames = 16, steps = 4, seed = 1, progress = false, init_audio = init,
                            init_noise_level = 5, device_loop = false }
    assert.equal(0, c1:maxdiff(c2))
  end)
end)
