-- The Oobleck VAE on a GPU (sao_vae_to_device: folded weights, biases and Snake parameters in one
-- device block, the CUDA kernel table of runtime/vae.c on the sao_cuda_ twins and
-- kernels/cuda/vae_glue.cu) against the same VAE on the CPU, on the oobleck_tiny fixture's weights
-- and inputs: encode (sampled with the stored eps, and the mean), decode, the chunked decode and
-- encode, a batch with final tanh, new weights reaching a device VAE, the workspace cache, and
-- load_model with device = "cuda" (tag gpu). Without a usable GPU every device test is reported
-- as pending (skipped), never as passed; the messages of a build or a machine without CUDA and
-- the argument checks run everywhere.
--
-- Tolerances: |gpu - cpu| <= abs per element. They are NOT yet measured on a GPU: what is
-- measured is this spec on a CPU emulation of the CUDA build (every kernels/cuda/*.cu compiled as
-- C++, run on the CPU), the figures quoted below. The device conv sums in another order than the
-- CPU's im2col + OpenBLAS GEMM, an fp32 rounding effect; each limit is about 10x the emulated error
-- (at least 1e-5) while a wrong layout, a missed copy or a stale weight gives errors of order 0.1.
-- On the first GPU run, note the max error each failure message (or a probe) prints and replace
-- the estimates with the measured figures plus a margin.
local sao = require "sao"
local cjson = require "cjson"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local has_gpu = gpu.has_gpu

local gpu_it = gpu.it(it, pending)

local FIX = "spec/fixtures/oobleck_tiny"
local manifest = cjson.decode(io.open(FIX .. ".json"):read("*a"))
local fx = sao.load_safetensors(FIX .. ".safetensors")
local params = {}
for k, v in pairs(fx) do
  if k:match("^encoder%.") or k:match("^decoder%.") then params[k] = v end
end
local audio, eps, latent = fx["inputs/audio"], fx["inputs/eps"], fx["inputs/latent"]

local function new_vae(p, cfg)
  return sao.vae.new(cfg or manifest.config):load(p or params)
end

local function scaled(s) return gpu.scaled(params, s) end   -- a different model of the same shapes

local no_cuda_reason = gpu.no_cuda_reason

describe("Oobleck VAE on CUDA #gpu", function()
  -- ---- everywhere -----------------------------------------------------------------------------
  it("a new VAE is on the CPU, and vae:to('cpu') there changes nothing", function()
    local v = new_vae()
    assert.equal("cpu", v:device())
    assert.equal(-1, C.sao_vae_device(v.h))
    local before = v:decode(latent)
    assert.equal(v, v:to("cpu"))
    assert.equal(0, before:maxdiff(v:decode(latent)))
  end)

  it("vae:to refuses a device name it does not know, and a VAE without weights", function()
    local v = new_vae()
    assert.error_matches(function() v:to("gpu") end, "vae:to: 'gpu': expected \"cpu\", \"cuda\" or \"cuda:N\"")
    assert.error_matches(function() v:to(0) end, "expected \"cpu\", \"cuda\" or \"cuda:N\"")
    local bare = sao.vae.new(manifest.config)
    assert.error_matches(function() bare:to("cuda") end, "before load")
  end)

  it("vae:to('cuda') without a usable GPU says why, and the VAE keeps working on the CPU", function()
    local v = new_vae()
    local want = v:decode(latent)
    if has_gpu then
      local n = sao.cuda.count()
      assert.error_matches(function() v:to("cuda:" .. n) end,
        "vae_to_device: device " .. n .. ": there are " .. n .. " CUDA device%(s%)")
    else
      assert.error_matches(function() v:to("cuda") end, "vae_to_device: device 0: .*" .. no_cuda_reason())
      assert.error_matches(function() v:to("cuda:1") end, "vae_to_device: device 1: .*" .. no_cuda_reason())
      -- the C entry point itself, on an unprepared handle too
      local bare = sao.vae.new(manifest.config)
      assert.equal(-1, C.sao_vae_to_device(sao.ctx, bare.h, 0))
      local msg = require("ffi").string(C.sao_ctx_error(sao.ctx))
      C.sao_ctx_clear_error(sao.ctx)
      assert.truthy(msg:find("vae_to_device: device 0:", 1, true), msg)
      assert.truthy(msg:find(no_cuda_reason(), 1, true), msg)
    end
    assert.equal("cpu", v:device())
    assert.equal(0, want:maxdiff(v:decode(latent)))
    assert.equal(0, C.sao_vae_to_host(sao.ctx, v.h))
  end)

  it("load_model with device = 'cuda' is refused before any weights are read without a GPU", function()
    if has_gpu then return end
    assert.error_matches(function() sao.load_model("tiny", { device = "cuda", quiet = true }) end,
      "load_model: device 'cuda': .*" .. no_cuda_reason() .. ".*device = \"cpu\"")
    local m = sao.load_model("tiny", { device = "cpu", quiet = true })
    assert.equal("cpu", m.vae:device())
  end)

  -- ---- on a GPU -------------------------------------------------------------------------------
  gpu_it("encode matches the CPU: sampled with the stored eps, raw, mean, std, KL, and the mean", function()
    local cpu, gpu = new_vae(), new_vae():to("cuda")
    assert.equal("cuda", gpu:device())
    local zc, ic = cpu:encode(audio, { eps = eps, info = true })
    local zg, ig = gpu:encode(audio, { eps = eps, info = true })
    -- emulated: raw 2.4e-6 (|raw| <= 3.4), z 2.2e-6, mean 2.2e-6, std 1.6e-6, KL 2.0e-6 (of 15.1):
    -- estimate abs 3e-5
    assert.tensor_near(ic.raw, ig.raw, { abs = 3e-5 })
    assert.tensor_near(zc, zg, { abs = 3e-5 })
    assert.tensor_near(ic.mean, ig.mean, { abs = 3e-5 })
    assert.tensor_near(ic.std, ig.std, { abs = 3e-5 })
    assert.is_true(math.abs(ic.kl - ig.kl) <= 3e-5 * math.max(1, math.abs(ic.kl)),
      string.format("kl cpu %.9g gpu %.9g", ic.kl, ig.kl))
    -- the mean only (latents without raw: the host raw buffer of a device VAE)
    assert.tensor_near(cpu:encode(audio, { sample = false }), gpu:encode(audio, { sample = false }), { abs = 3e-5 })
    -- and the upstream reference within the fixture's own tolerance
    local tol = manifest.tolerances
    assert.tensor_near(fx["outputs/encoder_raw"], ig.raw, { abs = tol["outputs/encoder_raw"].max_abs })
    assert.tensor_near(fx["outputs/latent_sampled"], zg, { abs = tol["outputs/latent_sampled"].max_abs })
  end)

  gpu_it("decode matches the CPU (the stored latent and the encoded mean)", function()
    local cpu, gpu = new_vae(), new_vae():to("cuda")
    local want, got = cpu:decode(latent), gpu:decode(latent)
    -- emulated: 2.1e-6 (|audio| <= 2.3): estimate abs 3e-5
    assert.tensor_near(want, got, { abs = 3e-5 })
    local tol = manifest.tolerances
    assert.tensor_near(fx["outputs/decoded_from_latent"], got, { abs = tol["outputs/decoded_from_latent"].max_abs })
    local _, info = cpu:encode(audio, { sample = false, info = true })
    assert.tensor_near(fx["outputs/decoded_from_mean"], gpu:decode(info.mean),
      { abs = tol["outputs/decoded_from_mean"].max_abs })
  end)

  gpu_it("a batch of two, with the decoder's final tanh (the device tanh)", function()
    local cfg = cjson.decode(cjson.encode(manifest.config))
    cfg.decoder.final_tanh = true
    local cpu, gpu = new_vae(nil, cfg), new_vae(nil, cfg):to("cuda")
    local z = sao.randn { { 2, 8, 13 }, seed = 5 } * 3
    local want, got = cpu:decode(z), gpu:decode(z)
    assert.tensor_near(want, got, { abs = 1e-4 })   -- emulated 7.0e-6 (|audio| <= 1)
    assert.tensor_near(want, new_vae():decode(z):tanh(), { abs = 1e-6 })   -- the tanh did act
    local a = sao.randn { { 2, 2, 16 * 9 }, seed = 6 }
    -- emulated 3.4e-6 (|z| <= 3.2)
    assert.tensor_near(cpu:encode(a, { sample = false }), gpu:encode(a, { sample = false }), { abs = 5e-5 })
  end)

  gpu_it("chunked decode and encode match the CPU's (windows pasted on the device)", function()
    local small = { channels = 4, c_mults = { 1, 2, 4, 8, 16 }, strides = { 2, 4, 4, 8, 8 }, latent_dim = 8 }
    local cpu = sao.vae.new(small):init_random { seed = 3 }
    local gpu = sao.vae.new(small):init_random { seed = 3 }:to("cuda")
    local z = sao.randn { { 1, 8, 150 }, seed = 4 }
    for _, co in ipairs { { 64, 32 }, { 40, 8 }, { 64, 4 } } do
      local want = cpu:decode(z, { chunked = true, chunk = co[1], overlap = co[2] })
      local got = gpu:decode(z, { chunked = true, chunk = co[1], overlap = co[2] })
      local peak = want:abs():max()
      -- emulated: 2.6e-8 to 3.0e-8 (peak 0.052, 6e-7 of it): estimate 3e-5 of the peak
      assert.tensor_near(want, got, { abs = 3e-5 * peak })
    end
    -- and the whole decode on the device equals its chunked one where the CPU's does
    local whole = gpu:decode(z)
    assert.tensor_near(cpu:decode(z), whole, { abs = 3e-5 * whole:abs():max() })
    -- chunked encode on the fixture's encoder (ratio 16)
    local c2, g2 = new_vae(), new_vae():to("cuda")
    local a = sao.randn { { 1, 2, 16 * 40 }, seed = 7 }
    local want = c2:encode(a, { sample = false, chunked = true, chunk = 24, overlap = 16 })
    local got = g2:encode(a, { sample = false, chunked = true, chunk = 24, overlap = 16 })
    assert.tensor_near(want, got, { abs = 1e-4 })   -- emulated 6.3e-6 (|z| <= 3.7)
  end)

  gpu_it("new weights reach a device VAE; vae:to('cpu') goes back; the workspace is cached", function()
    local gpu = new_vae():to("cuda")
    local before = gpu:decode(latent)
    gpu:load(scaled(0.5))   -- rebinds every parameter: refolded on the host, uploaded by the next call
    local want = new_vae(scaled(0.5)):decode(latent)
    local got = gpu:decode(latent)
    assert.is_true(got:maxdiff(before) > 1e-2)
    assert.tensor_near(want, got, { abs = 3e-5 })   -- as the decode above (emulated 2.1e-6 there)
    -- a repeated call of the same shape allocates nothing
    local m1 = sao.cuda.memory()
    gpu:decode(latent)
    assert.equal(m1.cudamalloc_calls, sao.cuda.memory().cudamalloc_calls)
    assert.equal(m1.allocated, sao.cuda.memory().allocated)
    -- back to the CPU: the device blocks return, the results are the CPU's bits
    local m0 = sao.cuda.memory()
    assert.equal(gpu, gpu:to("cpu"))
    assert.equal("cpu", gpu:device())
    assert.is_true(sao.cuda.memory().allocated < m0.allocated)
    assert.equal(0, want:maxdiff(gpu:decode(latent)))
    gpu:free()
  end)

  gpu_it("load_model with device = 'cuda' moves the VAE too", function()
    local m = sao.load_model("tiny", { device = "cuda", quiet = true, precision = "fp32" })
    assert.equal("cuda", m.dit:device())
    assert.equal("cuda", m.vae:device())
    local c = sao.load_model("tiny", { quiet = true })
    local z = sao.randn { { 1, c.vae.config.latent_dim, 8 }, seed = 9 }
    local want, got = c.vae:decode(z), m.vae:decode(z)
    assert.tensor_near(want, got, { abs = 1e-4 * math.max(1, want:abs():max()) })
  end)
end)
