-- The T5 encoder on a GPU (sao_t5_to_device: weights in one device block, the CUDA kernel table of
-- runtime/t5.c, the glue of kernels/cuda/t5_glue.cu) against the same encoder on the CPU, on the
-- t5_encoder_tiny fixture's weights and inputs (padding masks included) and on a random encoder of
-- t5-base's head size (tag gpu). Without a usable GPU every device test is reported as pending
-- (skipped), never as passed; the error messages of a build or a machine without CUDA, and the
-- argument checks, run everywhere.
--
-- Tolerances: |gpu - cpu| <= abs per element. They are NOT yet measured on a GPU. What is
-- measured is this spec run on a CPU emulation of the CUDA build (every kernels/cuda/*.cu file
-- compiled as C++, cuBLASLt replaced by a plain column-major float GEMM): the figures quoted
-- below. A GPU differs from that emulation by FMA contraction and cuBLASLt's summation order, both
-- fp32 rounding effects of the same size, so each limit is about 10x the emulated error (and at
-- least 2e-5), while a wrong layout, a missed copy, a stale weight or an unmasked key gives errors
-- of order 0.1 to 1 (|out| is about 1 to 5 here: RMSNorm output). On the first GPU run, note the
-- max error each failure message (or a probe) prints and replace the estimates with the measured
-- figures plus a margin.
local sao = require "sao"
local cjson = require "cjson"
local models = require "sao.models"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local has_gpu = gpu.has_gpu

local gpu_it = gpu.it(it, pending)

local man = cjson.decode(io.open("spec/fixtures/t5_encoder_tiny.json"):read("*a"))
local fx = sao.load_safetensors("spec/fixtures/t5_encoder_tiny.safetensors")
local params = require("sao.fixtures").params(fx)
local ids, mask = fx["inputs/input_ids"], fx["inputs/attention_mask"]                 -- [2, 7], padded
local ids_long, mask_long = fx["inputs/input_ids_long"], fx["inputs/attention_mask_long"]   -- [1, 128]

local function new_enc(p)
  local e = sao.t5.new(man.config)
  e:load(p or params)
  return e
end

local function scaled(s) return gpu.scaled(params, s) end   -- a different model of the same shapes

local no_cuda_reason = gpu.no_cuda_reason

-- ids/mask [B, L] with a different number of padded positions per row (row b keeps L - 3(b-1))
local function batch(B, L, vocab, seed)
  local i, m = sao.empty({ B, L }, "i64"), sao.empty({ B, L }, "i64")
  local ip, mp = i:data(), m:data()
  for b = 0, B - 1 do
    for t = 0, L - 1 do
      ip[b * L + t] = (b * 131 + t * 37 + seed) % vocab
      mp[b * L + t] = t < math.max(1, L - 3 * b) and 1 or 0
    end
  end
  return i, m
end

-- a random encoder with t5-base's head size (d_kv 64), several heads and layers
local big_cfg = { vocab_size = 500, d_model = 128, d_kv = 64, num_heads = 4, d_ff = 256, num_layers = 3,
                  relative_attention_num_buckets = 32, relative_attention_max_distance = 128 }

describe("T5 encoder on CUDA #gpu", function()
  -- ---- everywhere -----------------------------------------------------------------------------
  it("a new encoder is on the CPU, and enc:to('cpu') there changes nothing", function()
    local e = new_enc()
    assert.equal("cpu", e:device())
    assert.equal(-1, C.sao_t5_device(e.h))
    local before = e:forward(ids, mask)
    assert.equal(e, e:to("cpu"))
    assert.equal(0, C.sao_t5_to_host(sao.ctx, e.h))
    assert.equal(0, before:maxdiff(e:forward(ids, mask)))
  end)

  it("enc:to refuses a device name it does not know", function()
    local e = new_enc()
    assert.error_matches(function() e:to("gpu") end, "t5:to: 'gpu': expected \"cpu\", \"cuda\" or \"cuda:N\"")
    assert.error_matches(function() e:to(0) end, "expected \"cpu\", \"cuda\" or \"cuda:N\"")
  end)

  it("enc:to('cuda') without a usable GPU says why, and the encoder keeps working on the CPU", function()
    local e = new_enc()
    local want = e:forward(ids, mask)
    if has_gpu then
      local n = sao.cuda.count()
      assert.error_matches(function() e:to("cuda:" .. n) end,
        "t5_to_device: device " .. n .. ": there are " .. n .. " CUDA device%(s%)")
    else
      assert.error_matches(function() e:to("cuda") end, "t5_to_device: device 0: .*" .. no_cuda_reason()
        .. ".*keep the encoder on the CPU")
      assert.error_matches(function() e:to("cuda:1") end, "t5_to_device: device 1: .*" .. no_cuda_reason())
    end
    assert.equal("cpu", e:device())
    assert.equal(0, want:maxdiff(e:forward(ids, mask)))
  end)

  it("the tokenizer + encoder handle (t5:to) moves the encoder, with the same errors", function()
    local t5 = sao.t5.from_parts(sao.t5.tokenizer("spec/fixtures/t5_tokenizer_tiny.model"), new_enc())
    assert.equal("cpu", t5:device())
    assert.equal(t5, t5:to("cpu"))
    assert.error_matches(function() t5:to("tpu") end, "t5:to: 'tpu': expected")
    if not has_gpu then
      assert.error_matches(function() t5:to("cuda") end, "t5_to_device: device 0: .*" .. no_cuda_reason())
      assert.equal("cpu", t5:device())
    end
  end)

  -- ---- on a GPU -------------------------------------------------------------------------------
  gpu_it("refuses an encoder without weights", function()
    local e = sao.t5.new(man.config)
    assert.error_matches(function() e:to("cuda") end, "t5_to_device: the encoder has no weights bound")
    assert.equal("cpu", e:device())
  end)

  gpu_it("forward matches the CPU on the fixture's [2,7] inputs with padding (both post-processings)", function()
    local cpu, gpu = new_enc(), new_enc():to("cuda")
    assert.equal("cuda", gpu:device())
    for _, zp in ipairs { false, true } do
      local want = cpu:forward(ids, mask, { zero_padding = zp })
      local got = gpu:forward(ids, mask, { zero_padding = zp })
      -- emulated: 1.2e-6 (zero_padding false), 9.5e-7 (true); |out| <= 3.4: estimate abs 2e-5
      assert.tensor_near(want, got, { abs = 2e-5 })
    end
    -- the float64 reference within the fixture's own tolerance
    local tol = man.tolerances["outputs/last_hidden_state"].max_abs
    assert.tensor_near(fx["outputs/last_hidden_state"], gpu:forward(ids, mask, { zero_padding = false }), { abs = tol })
    local z = gpu:forward(ids, mask)
    assert.tensor_near(fx["outputs/sao_cond_tokens"], z, { abs = tol })
    -- padded rows exactly zero on the device
    for b = 1, 2 do
      for t = 1, 7 do
        if mask[{ b, t }] == 0 then assert.equal(0, z[b][t]:abs():max()) end
      end
    end
  end)

  gpu_it("forward matches the CPU on the [1,128] case (log-scale buckets, padded keys) and with no mask", function()
    local cpu, gpu = new_enc(), new_enc():to("cuda")
    local want = cpu:forward(ids_long, mask_long, { zero_padding = false })
    local got = gpu:forward(ids_long, mask_long, { zero_padding = false })
    -- emulated: 1.2e-6 (|out| <= 3.6; vs the float64 reference 1.3e-6): estimate abs 2e-5
    assert.tensor_near(want, got, { abs = 2e-5 })
    local tol = man.tolerances["outputs/last_hidden_state_long"].max_abs
    assert.tensor_near(fx["outputs/last_hidden_state_long"], got, { abs = tol })
    assert.tensor_near(fx["outputs/sao_cond_tokens_long"], gpu:forward(ids_long, mask_long), { abs = tol })
    -- nil mask = all ones, on the device too
    local a = gpu:forward(ids, nil, { zero_padding = false })
    local b = gpu:forward(ids, sao.ones({ 2, 7 }, "i64"), { zero_padding = false })
    assert.equal(0, a:maxdiff(b))
    assert.tensor_near(cpu:forward(ids, nil), gpu:forward(ids, nil), { abs = 2e-5 })   -- emulated 8.6e-7
    -- the mask does act: padding keys are excluded (row 2 of [2,7] differs from the unmasked run)
    assert.is_true(gpu:forward(ids, mask, { zero_padding = false })[2]:maxdiff(a[2]) > 1e-3)
  end)

  gpu_it("a t5-base-sized head (d_kv 64), batches of different lengths: the workspace grows and is reused", function()
    local cpu = sao.t5.random(big_cfg, 3, 0.08)
    local gpu = sao.t5.random(big_cfg, 3, 0.08):to("cuda")
    for _, s in ipairs { { 3, 40 }, { 1, 5 }, { 4, 128 }, { 2, 17 } } do
      local i, m = batch(s[1], s[2], big_cfg.vocab_size, s[1] + s[2])
      local want = cpu:forward(i, m, { zero_padding = false })
      local got = gpu:forward(i, m, { zero_padding = false })
      -- unscaled logits over 64 dims (T5 has no 1/sqrt(d_kv)) make the softmax sharp, so the fp32
      -- rounding differences grow more than on the fixture: emulated 1.7e-5 [3,40], 3.8e-6 [1,5],
      -- 2.7e-5 [4,128], 1.1e-5 [2,17] (|out| <= 4.5): estimate abs 3e-4
      assert.tensor_near(want, got, { abs = 3e-4 })
      assert.tensor_near(cpu:forward(i, m), gpu:forward(i, m), { abs = 3e-4 })
    end
  end)

  gpu_it("new weights reach the device: enc:load, a bind through the registry, to('cuda') again", function()
    local gpu = new_enc():to("cuda")
    local want2 = new_enc(scaled(1.5)):forward(ids, mask)
    gpu:load(scaled(1.5))                                   -- uploaded at once
    assert.tensor_near(want2, gpu:forward(ids, mask), { abs = 2e-5 })
    -- bound behind the encoder's back: noticed (and uploaded) by the next forward
    local p07 = scaled(0.7)
    models.bind(gpu:params(), p07, "", { strict = false })
    assert.tensor_near(new_enc(scaled(0.7)):forward(ids, mask), gpu:forward(ids, mask), { abs = 2e-5 })
    -- an in-place edit of a bound host tensor arrives with to("cuda") on the same device
    local w = p07["encoder.block.0.layer.1.DenseReluDense.wi.weight"]
    w:copy_(w * 2)
    local want3 = new_enc(p07):forward(ids, mask)
    assert.is_true(want3:maxdiff(gpu:forward(ids, mask)) > 1e-3)   -- not yet
    gpu:to("cuda")
    assert.tensor_near(want3, gpu:forward(ids, mask), { abs = 2e-5 })
  end)

  gpu_it("to('cpu') goes back bit for bit and returns the device memory", function()
    local cpu = new_enc()
    local want = cpu:forward(ids_long, mask_long)
    collectgarbage()   -- the device encoders of the tests above give their blocks back now, not during this one
    collectgarbage()
    local before = sao.cuda.memory().allocated
    local e = new_enc():to("cuda")
    assert.is_true(sao.cuda.memory().allocated > before)
    e:forward(ids_long, mask_long)
    assert.equal(e, e:to("cpu"))
    assert.equal("cpu", e:device())
    assert.equal(before, sao.cuda.memory().allocated)
    assert.equal(0, want:maxdiff(e:forward(ids_long, mask_long)))
  end)

  gpu_it("the tokenizer + encoder handle encodes on the device like on the CPU", function()
    local tok = sao.t5.tokenizer("spec/fixtures/t5_tokenizer_tiny.model")
    local cfg = {}
    for k, v in pairs(big_cfg) do cfg[k] = v end
    cfg.vocab_size = math.max(cfg.vocab_size, tok:vocab_size())
    local cpu = sao.t5.from_parts(tok, sao.t5.random(cfg, 5, 0.08))
    local gpu = sao.t5.from_parts(tok, sao.t5.random(cfg, 5, 0.08)):to("cuda")
    assert.equal("cuda", gpu:device())
    local texts = { "ambient piano", "techno loop, 128 BPM" }
    local we, wm = cpu:encode(texts)
    local ge, gm = gpu:encode(texts)
    assert.equal(0, wm:maxdiff(gm))
    -- same encoder shape as above: emulated 7.7e-6 (|out| <= 3.4): estimate abs 3e-4
    assert.tensor_near(we, ge, { abs = 3e-4 })
  end)
end)
