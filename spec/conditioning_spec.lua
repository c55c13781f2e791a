-- SAO conditioning: the NumberConditioner against upstream (spec/fixtures/number_cond:
-- NumberConditioner(64, 0, 512) on [0, 10.5, 47.55, 512, 600], float64 reference), its backward by
-- finite differences, and the assembly of the DiT inputs (cross [B,130,D], global [B,2D]).
local sao = require "sao"
local cjson = require "cjson"

local function manifest(name)
  local f = assert(io.open("spec/fixtures/" .. name .. ".json"))
  local m = cjson.decode(f:read("*a"))
  f:close()
  return m
end

local function esc(s) return (s:gsub("%p", "%%%0")) end

-- The manifest's measure: max |a-b| and max |a-b| / max(|b|, 1e-3 max|b|).
local function errors(want, got)
  local d = (got - want):abs()
  local denom = want:abs():maximum(1e-3 * want:abs():max())
  return d:max(), (d / denom):max()
end

describe("NumberConditioner (number_cond fixture)", function()
  local man = manifest("number_cond")
  local fx = sao.load_safetensors("spec/fixtures/number_cond.safetensors")
  local params = {}
  for k, v in pairs(fx) do
    if not k:match("/") then params[k] = v end
  end
  local nc = sao.conditioning.number(man.config)
  nc:load(params)

  it("normalises with clamping exactly as upstream's float32 arithmetic", function()
    local _, u = nc:forward(fx["inputs/values"])
    assert.equal(0, u:maxdiff(fx["outputs/normalized"]))   -- measured 0
    assert.equal(1, u[5])                                    -- 600 clamps to 512 -> 1
  end)

  it("matches the embeddings [5,1,64] within the manifest tolerances", function()
    local e = nc:forward(fx["inputs/values"])
    assert.same({ 5, 1, 64 }, e:shape())
    local tol = man.tolerances["outputs/embeds"]
    local ma, mr = errors(fx["outputs/embeds"], e)
    -- measured: max_abs 2.4e-7, max_rel 4.6e-6 (tol 2e-5, 2e-4)
    assert(ma <= tol.max_abs and mr <= tol.max_rel,
      string.format("embeds: max_abs %.3g (tol %g), max_rel %.3g (tol %g)", ma, tol.max_abs, mr, tol.max_rel))
    -- the clamped value embeds exactly like the maximum
    assert.equal(0, e[5]:maxdiff(e[4]))
    -- upstream's mask is ones [N,1]; our tokens are always real
    assert.equal(5, fx["outputs/mask"]:sum())
  end)

  it("fixture_outputs (the fixture checker's runner) reproduces embeds, normalized and mask", function()
    local inputs_only = {}
    for k, v in pairs(fx) do
      if not k:match("^outputs/") then inputs_only[k] = v end
    end
    local got = sao.conditioning.fixture_outputs(inputs_only, man)
    local ma = errors(fx["outputs/embeds"], got["outputs/embeds"])
    assert.is_true(ma <= man.tolerances["outputs/embeds"].max_abs)
    assert.equal(0, got["outputs/normalized"]:maxdiff(fx["outputs/normalized"]))
    assert.equal(0, got["outputs/mask"]:maxdiff(fx["outputs/mask"]))
  end)

  it("accepts numbers, lists, 1-element lists (unwrapped as upstream) and tensors", function()
    local a = nc:forward(47.55)
    local b = nc:forward { { 47.55 } }
    local c = nc:forward(sao.tensor { 47.55 })
    assert.equal(0, a:maxdiff(b))
    assert.equal(0, a:maxdiff(c))
    assert.error_matches(function() nc:forward { "x" } end, "value #1 is not a number")
  end)

  it("has SAO's 198,272 parameters per conditioner and names a wrong key", function()
    local ss, st = sao.conditioning.sao_numbers()
    assert.equal(198272, ss:parameter_count())
    assert.equal(198272, st:parameter_count())
    local p = {}
    for k, v in pairs(params) do p["conditioner.conditioners.seconds_total." .. k] = v end
    p["conditioner.conditioners.seconds_total.embedder.embedding.1.bias"] = nil
    assert.error_matches(function() sao.conditioning.number(man.config):load(p, "conditioner.conditioners.seconds_total.") end,
      esc("1 parameter(s) missing from the checkpoint: 'embedder.embedding.1.bias'"))
    assert.error_matches(function() sao.conditioning.number { output_dim = 8, min_val = 1, max_val = 1 } end,
      "max_val 1 must be greater than min_val 1")
  end)
end)

describe("NumberConditioner backward", function()
  it("matches central finite differences for weights, Linear weight and bias (fp32, h 3e-3)", function()
    local nc = sao.conditioning.number { output_dim = 3, features = 4, min_val = 0, max_val = 10 }
    local w = sao.randn { 2, seed = 11 }
    local lw = sao.randn { { 3, 5 }, seed = 12 } * 0.5
    local lb = sao.randn { 3, seed = 13 }
    nc:load { ["embedder.embedding.0.weights"] = w, ["embedder.embedding.1.weight"] = lw,
              ["embedder.embedding.1.bias"] = lb }
    local values = { 1.5, 7.25, 12 }   -- 12 clamps: no gradient through u, still through the weights
    local r = sao.randn { { 3, 1, 3 }, seed = 14 }
    local function loss()
      local e = nc:forward(values)
      return (e * r):sum()
    end
    local grads = { ["embedder.embedding.0.weights"] = sao.zeros(2), ["embedder.embedding.1.weight"] = sao.zeros(3, 5),
                    ["embedder.embedding.1.bias"] = sao.zeros(3) }
    nc:backward(values, r, grads)
    -- the bound parameters are the tensors given to load (f32, contiguous: bound without a copy)
    local worst = 0
    for name, p in pairs { ["embedder.embedding.0.weights"] = w, ["embedder.embedding.1.weight"] = lw,
                           ["embedder.embedding.1.bias"] = lb } do
      local flat, g = p:view(-1), grads[name]:view(-1)
      for i = 1, flat:numel() do
        local x0 = flat[i]
        local h = 3e-3
        flat[i] = x0 + h
        local lp = loss()
        flat[i] = x0 - h
        local lm = loss()
        flat[i] = x0
        local fd = (lp - lm) / (2 * h)
        local err = math.abs(fd - g[i]) / math.max(1, math.abs(fd))
        worst = math.max(worst, err)
      end
    end
    -- measured worst error 5.9e-5 (fp32 loss rounding vs sin/cos curvature: 3.4e-4 at h = 1e-2)
    assert.is_true(worst < 1e-3, "worst finite-difference error " .. worst)
  end)
end)

describe("conditioning assembly", function()
  local B, L, D = 2, 128, 8
  local prompt = sao.randn { { B, L, D }, seed = 1 }
  local ss = sao.randn { { B, 1, D }, seed = 2 }
  local st = sao.randn { { B, 1, D }, seed = 3 }

  it("orders cross tokens [prompt ; seconds_start ; seconds_total] and global [start ; total]", function()
    local cross, global = sao.conditioning.assemble { prompt_emb = prompt, seconds_start = ss, seconds_total = st }
    assert.same({ B, L + 2, D }, cross:shape())
    assert.same({ B, 2 * D }, global:shape())
    assert.equal(0, cross:narrow(2, 1, L):maxdiff(prompt))
    assert.equal(0, cross:narrow(2, L + 1, 1):maxdiff(ss))
    assert.equal(0, cross:narrow(2, L + 2, 1):maxdiff(st))
    assert.equal(0, global:narrow(2, 1, D):maxdiff(ss:view(B, D)))
    assert.equal(0, global:narrow(2, D + 1, D):maxdiff(st:view(B, D)))
    -- [B, D] number embeddings are accepted too
    local c2, g2 = sao.conditioning.assemble { prompt_emb = prompt, seconds_start = ss:view(B, D), seconds_total = st:view(B, D) }
    assert.equal(0, c2:maxdiff(cross))
    assert.equal(0, g2:maxdiff(global))
  end)

  it("names the mismatched input", function()
    assert.error_matches(function()
      sao.conditioning.assemble { prompt_emb = prompt, seconds_start = sao.zeros(3, 1, D), seconds_total = st }
    end, esc("seconds_start is [3,1,8] but prompt_emb is [2,128,8]"))
    assert.error_matches(function() sao.conditioning.assemble { prompt_emb = prompt } end, "needs tensors")
  end)

  it("runs the whole conditioner: T5 tokens, both numbers, [B,130,D] and [B,2D]", function()
    local cfg = { vocab_size = 400, d_model = D, d_kv = 2, num_heads = 4, d_ff = 16, num_layers = 1 }
    local enc = sao.t5.new(cfg)
    local w, seed = {}, 20
    for name, shape in pairs(require("sao.models").list(enc:params())) do
      w[name] = sao.randn { shape, seed = seed }
      seed = seed + 1
    end
    enc:load(w)
    local t5 = sao.t5.from_parts(sao.t5.tokenizer("spec/fixtures/t5_tokenizer_tiny.model"), enc)
    local function number(s)
      local n = sao.conditioning.number { output_dim = D, min_val = 0, max_val = 512 }
      n:load { ["embedder.embedding.0.weights"] = sao.randn { 128, seed = s },
               ["embedder.embedding.1.weight"] = sao.randn { { D, 257 }, seed = s + 1 },
               ["embedder.embedding.1.bias"] = sao.zeros(D) }
      return n
    end
    local c = sao.conditioning.new { t5 = t5, seconds_start = number(40), seconds_total = number(50) }
    local cross, global, mask = c:forward { prompt = { "ambient piano", "techno loop, 128 BPM" },
                                            seconds_start = 0, seconds_total = { 30, 47 } }
    assert.same({ 2, 130, D }, cross:shape())
    assert.same({ 2, 2 * D }, global:shape())
    assert.same({ 2, 128 }, mask:shape())
    local emb = t5:encode { "ambient piano", "techno loop, 128 BPM" }
    assert.equal(0, cross:narrow(2, 1, 128):maxdiff(emb))
    local e30 = c.seconds_total:forward { 30, 47 }
    assert.equal(0, cross:narrow(2, 130, 1):maxdiff(e30))
    assert.equal(0, global:narrow(2, D + 1, D):maxdiff(e30:view(2, D)))
    local e0 = c.seconds_start:forward { 0, 0 }
    assert.equal(0, global:narrow(2, 1, D):maxdiff(e0:view(2, D)))
  end)
end)
