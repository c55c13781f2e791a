-- sao.sampler — the sampling loop (k-diffusion samplers over a v-prediction model), SAO_SPEC §8.
--
--   local x = sampler.sample{
--     model = function(x_in, t) return v end,   -- v prediction for the c_in-scaled input at time t
--     noise = sao.randn{{B, 64, T}, seed = 1},  -- initial noise (scaled by sigma_max here)
--     steps = 100, sigma_min = 0.3, sigma_max = 500, rho = 1,
--     sampler = "dpmpp-3m-sde",                 -- or "dpmpp-2m-sde", "euler", "v-ddim"
--     seed = 1,                                 -- per-step noise stream (Philox, offsets past `noise`)
--     init = z,                                 -- optional: audio-to-audio start latents
--     callback = function(i, x, denoised, sigma) end, progress = true,
--   }
-- The per-step math is C (runtime/sampler.c); the model call is a Lua function so CFG, caching
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

function M.sample(opts)
  local name = opts.sampler or "dpmpp-3m-sde"
  if name == "v-ddim" then return vddim(opts) end
  local kind = KIND[name]
  if not kind then error("sampler: unknown sampler '" .. tostring(name) .. "' (one of " .. table.concat(M.SAMPLERS, ", ") .. ")", 2) end
  local steps = opts.steps or 100
  local sig = opts.sigmas or M.sigmas(steps, opts.sigma_min or 0.3, opts.sigma_max or 500, opts.rho or 1)
  local shape = opts.noise:shape()
  local numel = opts.noise:numel()
  local x = opts.noise * sig[1]
  if opts.init then x = x + opts.init end
  local den1, den2 = sao.zeros(shape), sao.zeros(shape)
  local den = sao.zeros(shape)
  local have, h1, h2 = 0, 0, 0
  local eta = opts.eta or 1
  local block = math.ceil(numel / 4)           -- Philox blocks one noise tensor uses
  local bar = opts.progress and progress.new { total = #sig - 1, label = "sampling", unit = "steps" }
  for i = 1, #sig - 1 do
    local s, sn = sig[i], sig[i + 1]
    local c_in = 1 / math.sqrt(s * s + 1)
    local t = math.atan(s) * 2 / math.pi
    local xin = x * c_in
    local v = opts.model(xin, t)
    sao.check(C.sao_vdenoise(sao.ctx, numel, x:data(), v:data(), s, den:data()))
    xin:free(); v:free()
    if opts.callback then opts.callback(i - 1, x, den, s) end
    local noise
    if sn > 0 and kind ~= 0 and eta ~= 0 then
      if opts.step_noise then noise = opts.step_noise(i - 1, shape)
      else noise = sao.randn { shape, seed = opts.seed or 0, offset = i * block } end
    end
    local h = sn > 0 and (math.log(s) - math.log(sn)) or 0
    sao.check(C.sao_sample_step(sao.ctx, kind, numel, x:data(), den:data(), den1:data(), den2:data(),
      have, s, sn, h1, h2, eta, noise and noise:data() or nil))
    if noise then noise:free() end
    have = math.min(have + 1, 2)
    h2, h1 = h1, h
    if bar then bar:advance(1) end
    if C.sao_interrupt_pending() ~= 0 then error("sampling interrupted", 2) end
  end
  if bar then bar:finish() end
  den1:free(); den2:free(); den:free()
  return x
end

return M
