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
