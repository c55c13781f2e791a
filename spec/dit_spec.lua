-- DiT forward parity with upstream stable-audio-tools (spec/fixtures/dit_tiny: DiffusionTransformer
-- with SAO's structure at a tiny size, float64 reference outputs). Tolerances are the manifest's.
local sao = require "sao"
local cjson = require "cjson"
require "spec.support.near"

local function manifest(name)
  local f = assert(io.open("spec/fixtures/" .. name .. ".json"))
  local m = cjson.decode(f:read("*a"))
  f:close()
  return m
end

describe("DiT forward (dit_tiny fixture)", function()
  local man = manifest("dit_tiny")
  local fx = sao.load_safetensors("spec/fixtures/dit_tiny.safetensors")
  local cfg = man.config
  local dit = sao.dit.new {
    io_channels = cfg.io_channels, embed_dim = cfg.embed_dim, depth = cfg.depth, num_heads = cfg.num_heads,
    cond_token_dim = cfg.cond_token_dim, global_cond_dim = cfg.global_cond_dim,
  }
  local params = require("sao.fixtures").params(fx)
  dit:load(params)
  local x, t = fx["inputs/x"], fx["inputs/t"]
  local cross, global = fx["inputs/cross_attn_cond"], fx["inputs/global_cond"]

  local function tol(name)
    local tl = man.tolerances["outputs/" .. name]
    return { abs = tl.max_abs, rel = 0 }
  end

  it("matches out_cfg1 and every block's hidden state", function()
    local out, hidden = dit:forward(x, t, cross, global, { cfg_scale = 1, hidden = true })
    -- measured max abs err vs the float64 reference: out 3.8e-6, hidden 1.9e-6 / 2.9e-6 (tol 1e-4, 5e-5)
    assert.tensor_near(fx["outputs/out_cfg1"], out, tol("out_cfg1"))
    assert.tensor_near(fx["outputs/hidden_layer0"], hidden[1], tol("hidden_layer0"))
    assert.tensor_near(fx["outputs/hidden_layer1"], hidden[2], tol("hidden_layer1"))
  end)

  it("matches the CFG 7 batch path and the unconditional half", function()
    local out = dit:forward(x, t, cross, global, { cfg_scale = 7 })
    assert.tensor_near(fx["outputs/out_cfg7"], out, tol("out_cfg7"))   -- measured 2.9e-5 (tol 1e-3)
    local unc = dit:forward(x, t, sao.zeros(cross:shape()), global, { cfg_scale = 1 })
    assert.tensor_near(fx["outputs/out_uncond"], unc, tol("out_uncond"))
  end)

  it("skips the all-zero half's cross-attention exactly, and takes a negative context for that half", function()
    local unc = dit:forward(x, t, sao.zeros(cross:shape()), global, { cfg_scale = 1 })
    local cond = dit:forward(x, t, cross, global, { cfg_scale = 1 })
    local skipped = dit:forward(x, t, cross, global, { cfg_scale = 7 })
    -- an explicit zero context runs that half's cross-attention, which adds exact zeros; the
    -- conditional half's kernels then see twice the rows (OpenBLAS: measured 2.4e-5, |out| <= 31)
    local full = dit:forward(x, t, cross, global, { cfg_scale = 7, uncond = sao.zeros(cross:shape()) })
    assert.tensor_near(full, skipped, { abs = 1e-4 })
    -- the batch's halves are independent: CFG is uncond + s (cond - uncond) (measured 1.9e-6 skipped,
    -- 2.4e-5 full)
    assert.tensor_near(unc + (cond - unc) * 7, skipped, { abs = 1e-4 })
    assert.tensor_near(unc + (cond - unc) * 7, full, { abs = 1e-4 })
    -- a negative context: that half is the model on it, seconds in the global token kept
    local neg = sao.randn { cross:shape(), seed = 5 }
    local out_neg = dit:forward(x, t, neg, global, { cfg_scale = 1 })
    local got = dit:forward(x, t, cross, global, { cfg_scale = 4, uncond = neg })
    assert.tensor_near(out_neg + (cond - out_neg) * 4, got, { abs = 1e-4 })   -- measured 1.8e-5
    assert.is_true(got:maxdiff(dit:forward(x, t, cross, global, { cfg_scale = 4 })) > 1e-2)
    -- CFG 1 does not read it
    assert.equal(0, cond:maxdiff(dit:forward(x, t, cross, global, { cfg_scale = 1, uncond = neg })))
    assert.error_matches(function() dit:forward(x, t, cross, global, { cfg_scale = 4, uncond = neg:narrow(2, 1, 2) }) end,
      "uncond is %[.*%], the cross context %[")
    assert.error_matches(function() dit:forward(x, t, nil, global, { cfg_scale = 4, uncond = neg }) end,
      "uncond given without a cross context")
  end)

  it("CFG rescale 0 is plain CFG and rescale changes the output", function()
    local a = dit:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0 })
    local b = dit:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.7 })
    assert.equal(0, a:maxdiff(dit:forward(x, t, cross, global, { cfg_scale = 7 })))
    assert.is_true(a:maxdiff(b) > 1e-3)
  end)

  it("rejects a checkpoint with a missing, unexpected or mis-shaped key, naming it", function()
    local d2 = sao.dit.new(dit.config)
    local p2 = {}
    for k, v in pairs(params) do p2[k] = v end
    p2["transformer.layers.1.ff.ff.2.bias"] = nil
    assert.error_matches(function() d2:load(p2) end, "missing.*transformer.layers.1.ff.ff.2.bias")
    p2["transformer.layers.1.ff.ff.2.bias"] = params["transformer.layers.1.ff.ff.2.bias"]
    p2["transformer.layers.9.extra"] = sao.zeros(3)
    assert.error_matches(function() d2:load(p2) end, "unexpected key 'transformer.layers.9.extra'")
    p2["transformer.layers.9.extra"] = nil
    p2["transformer.project_in.weight"] = sao.zeros(3, 3)
    assert.error_matches(function() d2:load(p2) end, "project_in.weight' has shape %[3,3%]")
  end)

  it("loads with a checkpoint prefix and from bf16 weights", function()
    local pre = {}
    for k, v in pairs(params) do pre["model.model." .. k] = v:to("bf16") end
    pre["conditioner.conditioners.seconds_start.embedder.embedding.1.bias"] = sao.zeros(4)
    local d3 = sao.dit.new(dit.config)
    d3:load(pre, "model.model.")
    local out = d3:forward(x, t, cross, global)
    -- bf16 weights move the output by ~1e-2 at these sizes; it must still be close to the f32 model
    assert.is_true(out:maxdiff(fx["outputs/out_cfg1"]) < 0.1)
  end)
end)
