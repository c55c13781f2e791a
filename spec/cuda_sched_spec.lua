-- Race check of the CUDA kernels on the CPU emulation (tag gpu): every kernel in kernels/cuda is
-- meant to be bit-reproducible (no atomics; each value computed by fixed threads in a fixed order),
-- so its result must not depend on the order its threads and blocks run in. The emulation runs them
-- in index order by default; EMU_SCHED (spec/support/cuda_emu/README.md) runs them backwards or
-- shuffled. A data race (two threads touching one word between barriers, lanes of a warp without
-- the __syncwarp they need, blocks reading what other blocks write) that the forward order happens
-- to resolve the right way then gives other bits, which a GPU would give some of the time. Each
-- workload below runs the model paths through their device kernels (the DiT's training pass in
-- each attention path and precision, T5 with relative bias and padding, the VAE on both
-- convolution paths, the attention backward with dbias, a training run with the fused AdamW, EMA and
-- clipping, generation with the device sampler RNG) under each order and compares every output
-- bit for bit with the forward order's. The emulator's own self-test (build.sh, selftest.cu)
-- checks that these orders do expose racy kernels. On a real GPU the orders cannot be chosen: the
-- tests are pending there (compute-sanitizer's racecheck is the tool there).
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"
local gpu = require "support.gpu"
local attn = require "support.attncmp"

pcall(ffi.cdef, "int memcmp(const void *a, const void *b, size_t n);")

local ORDERS = { "reverse", "shuffle:5" }

-- busted's `it` on the emulation; pending elsewhere (no GPU, or a real one: orders cannot be set)
local function emu_it(name, f)
  if gpu.emulated() then
    it(name, f)
  else
    pending(name .. (gpu.has_gpu and " (a real GPU: EMU_SCHED needs the emulation)" or " (no CUDA device: skipped)"))
  end
end

-- Runs f under every setting of `settings` (sao.cuda precision and attention_impl, conv backend),
-- restoring them after.
local function with_settings(s, f)
  local p, i = sao.cuda.precision(), sao.cuda.attention_impl()
  sao.cuda.precision(s.precision or "fp32")
  sao.cuda.attention_impl(s.attention or "auto")
  sao.cuda.conv_backend(s.conv or "auto")
  local ok, res = pcall(f)
  sao.cuda.precision(p)
  sao.cuda.attention_impl(i)
  sao.cuda.conv_backend("auto")   -- the default
  if not ok then error(res, 0) end
  return res
end

-- name -> host tensor, flattened from a table of tensors (nested tables get dotted names)
local function flatten(t, prefix, out)
  out = out or {}
  for k, v in pairs(t) do
    local name = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" and getmetatable(v) == nil then
      flatten(v, name, out)
    elseif type(v) == "number" then
      out[name] = v
    else
      out[name] = v:device() == "cuda" and v:to("cpu") or v:clone()
    end
  end
  return out
end

local function same(a, b)
  if type(a) == "number" then return a == b or (a ~= a and b ~= b) end
  if a:numel() ~= b:numel() or a:dtype() ~= b:dtype() then return false end
  local size = ({ f32 = 4, f64 = 8, bf16 = 2, i64 = 8, u8 = 1, i32 = 4 })[a:dtype()]
  return ffi.C.memcmp(a:data(), b:data(), size * a:numel()) == 0
end

-- Runs work() (a table of tensors and numbers) under the forward order, then under each other
-- order, and asserts the same bits each time; returns how many values were compared.
local function order_independent(label, settings, work)
  local run = function(order)
    return gpu.with_env({ EMU_SCHED = order }, function() return flatten(with_settings(settings, work)) end)
  end
  local want = run("forward")
  local names = {}
  for k in pairs(want) do names[#names + 1] = k end
  table.sort(names)
  assert(#names > 0, label .. ": nothing to compare")
  for _, order in ipairs(ORDERS) do
    local got = run(order)
    for _, k in ipairs(names) do
      local a, b = want[k], got[k]
      assert(b ~= nil, string.format("%s: %s missing under EMU_SCHED=%s", label, k, order))
      if not same(a, b) then
        local d = type(a) == "number" and math.abs(a - b) or a:to("f32"):maxdiff(b:to("f32"))
        error(string.format("%s: %s differs under EMU_SCHED=%s from the forward order (max abs diff %.3g): " ..
          "an order-dependent kernel (a data race)", label, k, order, d), 0)
      end
    end
  end
  return #names
end

-- ---- the workloads ---------------------------------------------------------------------------------
local new_dit = attn.dit_tiny()   -- the dit_tiny fixture's model, weights loaded
local dcfg = require("support.dit_tiny").config

local B, T, L = 2, 12, 5
-- the DiT's training pass on the device: output, input gradients and every weight gradient
local function dit_pass(recompute)
  return function()
    local d = new_dit():to("cuda")
    local tr = sao.dit_train.new(d, { batch = B, frames = T, context = L, recompute = recompute })
    local x = sao.randn { { B, dcfg.io_channels, T }, seed = 1 }
    local cross = sao.randn { { B, L, dcfg.cond_token_dim }, seed = 2 }
    local global = sao.randn { { B, dcfg.global_cond_dim }, seed = 3 }
    tr:zero_grad()
    local out = tr:forward(x, sao.tensor { 0.25, 0.8 }, cross, global)
    local dx, dc, dg = tr:backward(sao.randn { out:shape(), seed = 4 }, { dx = true, dcross = true, dglobal = true })
    return { out = out, dx = dx, dc = dc, dg = dg, grads = tr:host_grads() }
  end
end

local function dataset(n)
  local items = {}
  for i = 1, n do
    items[i] = { latents = sao.randn { { dcfg.io_channels, T }, seed = 100 + i },
                 cross = sao.randn { { L, dcfg.cond_token_dim }, seed = 200 + i },
                 global = sao.randn { { dcfg.global_cond_dim }, seed = 300 + i } }
  end
  return items
end

-- three steps of a training run on the device (the fused AdamW, EMA, clipping, the loss)
local function train_steps(precision)
  return function()
    local tr = sao.train.new { dit = new_dit(), data = sao.data.memory(dataset(4), { batch = B, seed = 5 }), batch = B,
      frames = T, context = L, optimizer = { lr = 1e-3, clip = 0.5 }, schedule = "constant", quiet = true, seed = 7,
      precision = precision, device = "cuda" }
    local r = {}
    for i = 1, 3 do
      local s = tr:step()
      r["loss" .. i], r["grad_norm" .. i] = s.loss, s.grad_norm
    end
    r.params, r.ema = tr.params, tr.ema.shadow
    return r
  end
end

describe("CUDA kernels give the same bits whichever order the emulation runs their threads in #gpu", function()
  emu_it("the DiT training pass: fp32 through the cuBLAS attention path, with recompute", function()
    assert.is_true(order_independent("dit fp32 cublas", { attention = "cublas" }, dit_pass(true)) > 30)
  end)

  emu_it("the DiT training pass: fp32 through the flash kernels", function()
    assert.is_true(order_independent("dit fp32 flash", { attention = "flash" }, dit_pass(false)) > 30)
  end)

  emu_it("the DiT training pass: bf16 through the tensor-core (WMMA) kernels, forward and backward", function()
    assert.is_true(order_independent("dit bf16 auto", { precision = "bf16" }, dit_pass(false)) > 30)
  end)

  emu_it("the DiT training pass: bf16 through cuDNN's fused SDPA (the bf16 packing around the emulation's cuDNN)", function()
    local runs = sao.cuda.sdpa()
    assert.is_true(order_independent("dit bf16 cudnn", { precision = "bf16", attention = "cudnn" }, dit_pass(false)) > 30)
    assert.is_true(sao.cuda.sdpa() > runs, "cuDNN's SDPA did not run")
  end)

  emu_it("attention forward and backward with bias, key mask, grouped heads and odd sizes (dbias too)", function()
    local s = { B = 2, H = 4, Hkv = 2, T = 37, M = 29, D = 32, bias = true, mask = attn.mask_37, seed = 91 }
    local x = attn.inputs(s)
    for _, set in ipairs { { precision = "fp32", attention = "flash" }, { precision = "bf16", attention = "auto" } } do
      local n = order_independent("attention " .. set.precision, set, function()
        local _, got = attn.bwd_pair(s, x, set.precision, set.attention, { dq = true, dk = true, dv = true, dbias = true })
        local _, got2 = attn.bwd_pair(s, x, set.precision, set.attention, { dq = true, dk = true, dv = true })
        return { with_dbias = got, without = got2 }
      end)
      assert.equal(7, n)
    end
  end)

  emu_it("the T5 encoder: relative-position bias and padding, fp32 and bf16", function()
    local man = cjson.decode(io.open("spec/fixtures/t5_encoder_tiny.json"):read("*a"))
    local fx = sao.load_safetensors("spec/fixtures/t5_encoder_tiny.safetensors")
    local enc = sao.t5.new(man.config)
    enc:load(require("sao.fixtures").params(fx))
    enc:to("cuda")
    for _, p in ipairs { "fp32", "bf16" } do
      assert.equal(2, order_independent("t5 " .. p, { precision = p }, function()
        return { short = enc:forward(fx["inputs/input_ids"], fx["inputs/attention_mask"]),
                 long = enc:forward(fx["inputs/input_ids_long"], fx["inputs/attention_mask_long"]) }
      end))
    end
  end)

  emu_it("the VAE: encode (mean) and decode, on the GEMM convolutions and through cuDNN", function()
    local man = cjson.decode(io.open("spec/fixtures/oobleck_tiny.json"):read("*a"))
    local fx = sao.load_safetensors("spec/fixtures/oobleck_tiny.safetensors")
    local p = {}
    for k, v in pairs(fx) do if k:match("^encoder%.") or k:match("^decoder%.") then p[k] = v end end
    local vae = sao.vae.new(man.config):load(p):to("cuda")
    for _, conv in ipairs { "gemm", "cudnn" } do
      assert.equal(2, order_independent("vae " .. conv, { conv = conv }, function()
        return { z = vae:encode(fx["inputs/audio"], { sample = false }), audio = vae:decode(fx["inputs/latent"]) }
      end))
    end
  end)

  emu_it("three training steps: the fused AdamW with EMA and clipping, fp32 and bf16", function()
    for _, p in ipairs { "fp32", "bf16" } do
      assert.is_true(order_independent("train " .. p, { precision = p }, train_steps(p)) > 60)
    end
  end)

  emu_it("generation on the device: the sampler's noise, CFG and the VAE decode", function()
    local m = sao.load_model("tiny", { quiet = true, device = "cuda", precision = "fp32" })
    assert.equal(2, order_independent("generate", {}, function()
      local audio, info = m:generate { prompt = "a short test", frames = 16, steps = 3, cfg_scale = 7, seed = 3,
                                       progress = false }
      return { audio = audio, latents = info.latents }
    end))
  end)
end)
