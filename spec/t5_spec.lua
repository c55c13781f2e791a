-- T5 encoder parity (spec/fixtures/t5_encoder_tiny: an independent float64 numpy T5EncoderModel with
-- HF key names, tiny config) and the encoder's loading rules. Tolerances are the manifest's; the
-- comments give the errors measured with this implementation (fp32).
local sao = require "sao"
local cjson = require "cjson"

local function manifest(name)
  local f = assert(io.open("spec/fixtures/" .. name .. ".json"))
  local m = cjson.decode(f:read("*a"))
  f:close()
  return m
end

-- The manifest's measure: max |a-b| and max |a-b| / max(|b|, 1e-3 max|b|).
local function errors(want, got)
  local d = (got - want):abs()
  local denom = want:abs():maximum(1e-3 * want:abs():max())
  return d:max(), (d / denom):max()
end

local function assert_within(man, name, want, got)
  local tol = man.tolerances[name]
  assert.same(want:shape(), got:shape())
  local ma, mr = errors(want, got)
  assert(ma <= tol.max_abs and (tol.max_rel == cjson.null or mr <= tol.max_rel),
    string.format("%s: max_abs %.3g (tol %g), max_rel %.3g (tol %s)", name, ma, tol.max_abs, mr, tostring(tol.max_rel)))
  return ma, mr
end

-- error_matches with a literal message (the position prefix error() adds is allowed)
local function esc(s) return (s:gsub("%p", "%%%0")) end

local params_of = require("sao.fixtures").params

describe("T5 encoder (t5_encoder_tiny fixture)", function()
  local man = manifest("t5_encoder_tiny")
  local fx = sao.load_safetensors("spec/fixtures/t5_encoder_tiny.safetensors")
  local enc = sao.t5.new(man.config)
  enc:load(params_of(fx))

  it("reproduces the bidirectional relative-position bucket table exactly (T = 128)", function()
    local b = sao.t5.relative_buckets(128, 32, 128)
    assert.equal(0, b:maxdiff(fx["outputs/rel_buckets_128"]))
    -- the rules, spot-checked: same position 0; |d| < 8 exact; keys after the query add 16; far is 15/31
    assert.equal(0, b[{ 1, 1 }])
    assert.equal(7, b[{ 9, 2 }])
    assert.equal(16 + 7, b[{ 2, 9 }])
    assert.equal(15, b[{ 128, 1 }])
    assert.equal(31, b[{ 1, 128 }])
  end)

  it("matches last_hidden_state for ids [2,7] with padding in the mask", function()
    local out = enc:forward(fx["inputs/input_ids"], fx["inputs/attention_mask"], { zero_padding = false })
    -- measured: max_abs 6.6e-7, max_rel 6.7e-5 (tol 2e-5, 1e-3)
    assert_within(man, "outputs/last_hidden_state", fx["outputs/last_hidden_state"], out)
  end)

  it("matches SAO's post-processing (padded positions zeroed) for [2,7]", function()
    local out = enc:forward(fx["inputs/input_ids"], fx["inputs/attention_mask"])
    -- measured: max_abs 5.5e-7 (tolerance of last_hidden_state: 2e-5, 1e-3)
    assert_within(man, "outputs/last_hidden_state", fx["outputs/sao_cond_tokens"], out)
    local mask = fx["inputs/attention_mask"]
    for b = 1, 2 do
      for t = 1, 7 do
        if mask[{ b, t }] == 0 then assert.equal(0, out[b][t]:abs():max()) end
      end
    end
  end)

  it("matches the [1,128] case as SAO pads it (log-scale buckets in play)", function()
    local ids, mask = fx["inputs/input_ids_long"], fx["inputs/attention_mask_long"]
    local lhs = enc:forward(ids, mask, { zero_padding = false })
    -- measured: max_abs 1.1e-6, max_rel 1.3e-4 (tol 2e-5, 2e-3)
    assert_within(man, "outputs/last_hidden_state_long", fx["outputs/last_hidden_state_long"], lhs)
    local sao_out = enc:forward(ids, mask)
    -- measured: max_abs 7.2e-7, max_rel 5.0e-5
    assert_within(man, "outputs/last_hidden_state_long", fx["outputs/sao_cond_tokens_long"], sao_out)
  end)

  it("treats a nil mask as all ones and keeps real rows identical under zero_padding", function()
    local ids = fx["inputs/input_ids"]
    local a = enc:forward(ids, nil, { zero_padding = false })
    local b = enc:forward(ids, sao.ones({ 2, 7 }, "i64"), { zero_padding = false })
    assert.equal(0, a:maxdiff(b))
    local mask = fx["inputs/attention_mask"]
    local full = enc:forward(ids, mask, { zero_padding = false })
    local zeroed = enc:forward(ids, mask)
    assert.equal(0, full[1]:maxdiff(zeroed[1]))                                 -- no padding in row 1
    assert.equal(0, full[2]:narrow(1, 1, 4):maxdiff(zeroed[2]:narrow(1, 1, 4))) -- real tokens of row 2
  end)

  it("fixture_outputs (the fixture checker's runner) produces every stored output within tolerance", function()
    local inputs_only = {}
    for k, v in pairs(fx) do
      if not k:match("^outputs/") then inputs_only[k] = v end
    end
    local got = sao.t5.fixture_outputs(inputs_only, man)
    local n = 0
    for name, want in pairs(fx) do
      if name:match("^outputs/") then
        n = n + 1
        assert.is_truthy(got[name], name)
        if name == "outputs/rel_buckets_128" then
          assert.equal(0, got[name]:maxdiff(want))
        else
          -- sao_cond_tokens* have no entry of their own: they use last_hidden_state*'s
          local tname = name:gsub("sao_cond_tokens", "last_hidden_state")
          assert_within(man, tname, want, got[name])
        end
      end
    end
    assert.equal(5, n)
  end)

  it("rejects token ids outside the vocabulary, naming the position", function()
    local ids = sao.tensor({ { 1, 2, 100 } }, "i64")
    assert.error_matches(function() enc:forward(ids) end,
      esc("t5_forward: token id 100 at [0, 2] is outside the vocabulary [0, 100) (tokenizer and weights from different models?)"))
  end)
end)

describe("T5 encoder loading", function()
  local man = manifest("t5_encoder_tiny")
  local fx = sao.load_safetensors("spec/fixtures/t5_encoder_tiny.safetensors")

  it("declares t5-base's 109,628,544 parameters (SAO_SPEC 4.1)", function()
    assert.equal(109628544, sao.t5.new(sao.t5.BASE):parameter_count())
  end)

  it("skips decoder and lm_head keys and accepts encoder.embed_tokens.weight for the tied embedding", function()
    local p = params_of(fx)
    p["encoder.embed_tokens.weight"] = p["shared.weight"]
    p["shared.weight"] = nil
    p["decoder.block.0.layer.0.SelfAttention.q.weight"] = sao.zeros(32, 32)
    p["lm_head.weight"] = sao.zeros(100, 32)
    local enc = sao.t5.new(man.config)
    enc:load(p)
    local out = enc:forward(fx["inputs/input_ids"], fx["inputs/attention_mask"], { zero_padding = false })
    assert_within(man, "outputs/last_hidden_state", fx["outputs/last_hidden_state"], out)
  end)

  it("names a missing, an unexpected and a mis-shaped key", function()
    local p = params_of(fx)
    p["encoder.final_layer_norm.weight"] = nil
    assert.error_matches(function() sao.t5.new(man.config):load(p) end,
      esc("load: t5: 1 parameter(s) missing from the checkpoint: 'encoder.final_layer_norm.weight'"))
    p = params_of(fx)
    p["encoder.block.2.layer.0.layer_norm.weight"] = sao.ones(32)
    assert.error_matches(function() sao.t5.new(man.config):load(p) end,
      esc("load: unexpected key 'encoder.block.2.layer.0.layer_norm.weight' in the checkpoint (not part of this model's config)"))
    p = params_of(fx)
    p["encoder.block.1.layer.1.DenseReluDense.wi.weight"] = sao.zeros(32, 32)
    assert.error_matches(function() sao.t5.new(man.config):load(p) end,
      esc("load: t5: parameter 'encoder.block.1.layer.1.DenseReluDense.wi.weight' has shape [32,32], the config expects [64,32]"))
  end)

  it("refuses gated feed-forward configs and runs nothing before the weights are bound", function()
    local cfg = {}
    for k, v in pairs(man.config) do cfg[k] = v end
    cfg.feed_forward_proj = "gated-gelu"
    assert.has_error(function() sao.t5.new(cfg) end)
    local enc = sao.t5.new(man.config)
    assert.has_error(function() enc:forward(fx["inputs/input_ids"]) end)
  end)

  it("builds a seeded random encoder for tiny runs", function()
    local cfg = { vocab_size = 400, d_model = 16, d_kv = 4, num_heads = 4, d_ff = 32, num_layers = 2 }
    local a, b = sao.t5.random(cfg, 3), sao.t5.random(cfg, 3)
    local ids = sao.tensor({ { 5, 6, 7, 1, 0 } }, "i64")
    local mask = sao.tensor({ { 1, 1, 1, 1, 0 } }, "i64")
    local oa = a:forward(ids, mask)
    assert.equal(0, oa:maxdiff(b:forward(ids, mask)))
    assert.is_true(oa:maxdiff(sao.t5.random(cfg, 4):forward(ids, mask)) > 1e-3)
    assert.equal(0, oa[1][5]:abs():max())
  end)

  it("loads a directory (spiece.model + model.safetensors + config.json) and encodes prompts to [B,128,d]", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    os.execute("cp spec/fixtures/t5_tokenizer_tiny.model " .. dir .. "/spiece.model")
    -- random weights sized for the tokenizer's 392 ids (the embedding rows padded to 400, as t5-base pads to 32128)
    local cfg = { vocab_size = 400, d_model = 16, d_kv = 4, num_heads = 4, d_ff = 32, num_layers = 2,
                  relative_attention_num_buckets = 32, relative_attention_max_distance = 128,
                  layer_norm_epsilon = 1e-6, feed_forward_proj = "relu", model_type = "t5" }
    local f = assert(io.open(dir .. "/config.json", "w"))
    f:write(cjson.encode(cfg))
    f:close()
    local shapes = require("sao.models").list(sao.t5.new(cfg):params())
    local w, seed = {}, 1
    for name, shape in pairs(shapes) do
      w[name] = sao.randn { shape, seed = seed } * 0.3
      seed = seed + 1
    end
    w["decoder.final_layer_norm.weight"] = sao.ones(16)   -- a full T5 checkpoint: ignored
    sao.save_safetensors(dir .. "/model.safetensors", w)

    local t5 = sao.t5.load(dir)
    local emb, mask = t5:encode { "warm ambient piano", "" }
    assert.same({ 2, 128, 16 }, emb:shape())
    assert.same({ 2, 128 }, mask:shape())
    local n1 = mask[1]:sum()
    assert.equal(#t5.tokenizer:encode("warm ambient piano") + 1, n1)
    assert.equal(1, mask[2]:sum())
    assert.equal(0, emb[1]:narrow(1, n1 + 1, 128 - n1):abs():max())   -- padding rows zeroed
    assert.is_true(emb[1]:narrow(1, 1, n1):abs():max() > 0)
    -- the same as tokenising and running the encoder by hand
    local ids, m2 = sao.t5.tokenize(t5.tokenizer, { "warm ambient piano", "" })
    assert.equal(0, emb:maxdiff(t5.encoder:forward(ids, m2)))

    -- a weights file from a smaller model than the tokenizer is refused with the reason
    cfg.vocab_size = 100
    f = assert(io.open(dir .. "/config.json", "w"))
    f:write(cjson.encode(cfg))
    f:close()
    assert.error_matches(function() sao.t5.load(dir) end,
      esc("sao.t5.load: the tokenizer has 392 ids but the model's vocab_size is 100 (spiece.model and weights from different models?)"))
    os.execute("rm -rf " .. dir)
    assert.has_error(function() sao.t5.load(dir) end)
  end)
end)
