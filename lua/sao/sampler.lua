-- sao.sampler — the sampling loop (k-diffusion samplers over a v-prediction model), SAO_SPEC §8.
--
--   local x = sampler.sample{
--     model = function(x_in, t) return v end,   -- v prediction for the c_in-scaled input at time t
--     noise = sao.randn{{B, 64, T}, seed = 1},  -- initial noise (scaled by sigma_max here)
--     steps = 100, sigma_min = 0.3, sigma_max = 500, rho = 1,
--     sampler = "dpmpp-3m-sde",                 -- or "dpmpp-2m-sde", "euler", "v-ddim"
--     seed = 1,                                 -- per-step noise stream (Philox, offsets past `noise`)
--     seeds = {1, 2},                           -- or one stream per batch item (each as a batch of one)
--     init = z,                                 -- optional: audio-to-audio start latents
--     callback = function(i, x, denoised, sigma) end, progress = true,
--   }
-- The per-step math is C (runtime/sampler.c, or kernels/cuda/sampler.cu when the noise is on a GPU:
-- then the whole loop stays there, see M.sample); the model call is a Lua function so CFG, caching
-- and devices stay the caller's business.
local ffi = require "ffi"
local sao = require "sao"
local progress = require "sao.progress"
local C = sao.C

local M = {}

local KIND = { euler = 0, ["dpmpp-2m-sde"] = 1, ["dpmpp-3m-sde"] = 2 }
M.SAMPLERS = { "dpmpp-3m-sde", "dpmpp-2m-sde", "euler", "v-ddim" }

--- n+1 sigmas (polyexponential, k-diffusion), the last one 0; a Lua array (1-based).
function M.sigmas(n, sigma_min, sigma_max, rho)
  local buf = ffi.new("double[?]", n + 1)
  sao.check(C.sao_sigmas_polyexponential(sao.ctx, n, sigma_min, sigma_max, rho or 1, buf), 2)
  local out = {}
  for i = 0, n do out[i + 1] = buf[i] end
  return out
end


local function vddim(opts)
  local n = opts.steps
  local x = opts.noise:clone()
  local den
  local bar = opts.progress and progress.new { total = n, label = "sampling", unit = "steps" }
  for k = 0, n - 1 do
    local t = 1 - k / n
    local a, s = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    local v = opts.model(x, t)
    den = x * a - v * s
    local eps = x * s + v * a
    if k < n - 1 then
      local tn = 1 - (k + 1) / n
      local an, sn = math.cos(math.pi * tn / 2), math.sin(math.pi * tn / 2)
      x = den * an + eps * sn
    end
    if opts.callback then opts.callback(k, x, den, t) end
    if bar then bar:advance(1) end
  end
  if bar then bar:finish() end
  return den
end

-- The loop's element-wise work on each device: the host's tensor ops and C loops (runtime/sampler.c),
-- or their CUDA twins (kernels/cuda/sampler.cu) on buffers made once, so that a device loop
-- allocates nothing per step and never waits for the GPU except to keep the host at most one step
-- ahead of it (fences).
--- Per-item noise: batch item b of z (on either device) gets seeds[b]'s standard normal stream at
--- Philox block `offset`, the values a batch of one with that seed draws. Returns z.
function M.draw(z, seeds, offset)
  for b = 1, #seeds do
    local item = z:narrow(1, b, 1)
    sao.check(C.sao_rand_fill(sao.ctx, item.p, seeds[b], offset, 1))
  end
  return z
end
local draw = M.draw

local function host_work(opts, shape, numel)
  local w = { den1 = sao.zeros(shape), den2 = sao.zeros(shape), den = sao.zeros(shape) }
  function w.start(sigma)
    local x = opts.noise * sigma
    if opts.init then x = x + opts.init end
    return x
  end
  function w.input(x, c_in) return x * c_in end
  function w.model(xin, t) return opts.model(xin, t) end
  function w.vdenoise(x, v, s) sao.check(C.sao_vdenoise(sao.ctx, numel, x:data(), v:data(), s, w.den:data())) end
  function w.noise(i, block)
    if opts.step_noise then return opts.step_noise(i - 1, shape) end
    if opts.seeds then
      local z = sao.empty(shape)
      draw(z, opts.seeds, i * block)
      return z
    end
    return sao.randn { shape, seed = opts.seed or 0, offset = i * block }
  end
  w.step = C.sao_sample_step
  function w.after(xin, v, noise)
    xin:free(); v:free()
    if noise then noise:free() end
  end
  function w.queued() end
  function w.finish() w.den1:free(); w.den2:free(); w.den:free() end
  return w
end

local function device_work(opts, shape, numel)
  if not opts.noise:is_contiguous() or opts.noise:dtype() ~= "f32" then
    error("sampler: the noise must be a contiguous f32 tensor", 3)
  end
  local dev = "cuda:" .. opts.noise:device_index()
  local function buf() return sao.empty_on(dev, shape) end
  local w = { den1 = buf(), den2 = buf(), den = buf(), xin = buf(), v = buf(), z = buf() }
  local init = opts.init
  if init and init:device() == "cpu" then init = init:contiguous():to(dev) end
  if init and (init:numel() ~= numel or not init:is_contiguous() or init:dtype() ~= "f32") then
    error("sampler: init must be a contiguous f32 tensor shaped as the noise [" .. table.concat(shape, ", ") .. "]", 3)
  end
  function w.start(sigma)
    local x = buf()
    sao.check(C.sao_cuda_sample_scale(sao.ctx, numel, opts.noise:data(), sigma, init and init:data() or nil,
      x:data()))
    return x
  end
  function w.input(x, c_in)
    sao.check(C.sao_cuda_sample_scale(sao.ctx, numel, x:data(), c_in, nil, w.xin:data()))
    return w.xin
  end
  function w.model(xin, t)
    local v = opts.model(xin, t, w.v)
    if not sao.is_tensor(v) or v:device() ~= "cuda" then
      error("sampler: with the noise on the GPU the model must return a GPU tensor (it is given one to write)", 4)
    end
    return v
  end
  function w.vdenoise(x, v, s) sao.check(C.sao_cuda_vdenoise(sao.ctx, numel, x:data(), v:data(), s, w.den:data())) end
  function w.noise(i, block)
    if opts.step_noise then
      local z = opts.step_noise(i - 1, shape)
      if z:device() == "cpu" then w.z:copy_(z:contiguous()) else return z end
    elseif opts.seeds then
      draw(w.z, opts.seeds, i * block)
    else
      sao.check(C.sao_rand_fill(sao.ctx, w.z.p, opts.seed or 0, i * block, 1))
    end
    return w.z
  end
  w.step = C.sao_cuda_sample_step
  function w.after(xin, v, noise)
    if v ~= w.v then v:free() end   -- a model that made its own output (frees break CUDA graphs)
    if noise and noise ~= w.z then noise:free() end
  end
  -- the host queues step i, then waits for step i - 1: the GPU always has the next step queued
  function w.queued(i)
    sao.check(C.sao_cuda_fence(sao.ctx, i % 2))
    sao.check(C.sao_cuda_fence_wait(sao.ctx, (i + 1) % 2))
  end
  function w.finish()
    sao.check(C.sao_cuda_fence_wait(sao.ctx, 0)); sao.check(C.sao_cuda_fence_wait(sao.ctx, 1))
    for _, k in ipairs { "den1", "den2", "den", "xin", "v", "z" } do w[k]:free() end
  end
  return w
end

--- With opts.noise on the GPU (sao.randn{..., device = "cuda"}) the loop runs there: x and the
--- history stay on the device, model(x_in, t, out) gets device tensors (out: a buffer it may write
--- v into and return, which a DiT does with dit:forward's opts.out), the per-step noise is drawn
--- there (the same values), and the result is a device tensor. The callback then sees device tensors
--- while the GPU may still be working on them (t:to("cpu") waits for them).
function M.sample(opts)
  local name = opts.sampler or "dpmpp-3m-sde"
  local on_device = opts.noise:device() ~= "cpu"
  if name == "v-ddim" then
    if on_device then error("sampler: v-ddim runs on the host (give host noise, or another sampler)", 2) end
    return vddim(opts)
  end
  local kind = KIND[name]
  if not kind then error("sampler: unknown sampler '" .. tostring(name) .. "' (one of " .. table.concat(M.SAMPLERS, ", ") .. ")", 2) end
  local steps = opts.steps or 100
  local sig = opts.sigmas or M.sigmas(steps, opts.sigma_min or 0.3, opts.sigma_max or 500, opts.rho or 1)
  local shape = opts.noise:shape()
  local numel = opts.noise:numel()
  if opts.seeds and #opts.seeds ~= shape[1] then
    error(string.format("sampler: %d seeds for a batch of %d", #opts.seeds, shape[1]), 2)
  end
  local w = (on_device and device_work or host_work)(opts, shape, numel)
  local x = w.start(sig[1])
  local den, den1, den2 = w.den, w.den1, w.den2
  local have, h1, h2 = 0, 0, 0
  local eta = opts.eta or 1
  -- Philox blocks one noise tensor uses (with seeds: one item's, each item its own stream)
  local block = math.ceil((opts.seeds and numel / shape[1] or numel) / 4)
  local bar = opts.progress and progress.new { total = #sig - 1, label = "sampling", unit = "steps" }
  for i = 1, #sig - 1 do
    local s, sn = sig[i], sig[i + 1]
    local c_in = 1 / math.sqrt(s * s + 1)
    local t = math.atan(s) * 2 / math.pi
    local xin = w.input(x, c_in)
    local v = w.model(xin, t)
    w.vdenoise(x, v, s)
    if opts.callback then opts.callback(i - 1, x, den, s) end
    local noise
    if sn > 0 and kind ~= 0 and eta ~= 0 then noise = w.noise(i, block) end
    local h = sn > 0 and (math.log(s) - math.log(sn)) or 0
    sao.check(w.step(sao.ctx, kind, numel, x:data(), den:data(), den1:data(), den2:data(),
      have, s, sn, h1, h2, eta, noise and noise:data() or nil))
    w.after(xin, v, noise)
    w.queued(i)
    have = math.min(have + 1, 2)
    h2, h1 = h1, h
    if bar then bar:advance(1) end
    if C.sao_interrupt_pending() ~= 0 then w.finish() error("sampling interrupted", 2) end
  end
  w.finish()
  if bar then bar:finish() end
  return x
end

return M
