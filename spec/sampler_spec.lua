-- Samplers against upstream sample_k / k-diffusion on the tiny DiT (spec/fixtures/sampler_*):
-- the sigma schedule, and x / denoised at every step with the reference's per-step noise injected.
local sao = require "sao"
local cjson = require "cjson"
require "spec.support.near"

local function load_dit()
  local fx = sao.load_safetensors("spec/fixtures/dit_tiny.safetensors")
  local dit = sao.dit.new { io_channels = 8, embed_dim = 128, depth = 2, num_heads = 2,
                            cond_token_dim = 64, global_cond_dim = 64 }
  local p = require("sao.fixtures").params(fx)
  dit:load(p)
  return dit
end

describe("sigma schedule", function()
  it("matches SAO_SPEC's polyexponential test vector", function()
    local s = sao.sampler.sigmas(100, 0.3, 500, 1)
    assert.equal(101, #s)
    assert.is_true(math.abs(s[1] - 500) < 1e-9)
    assert.is_true(math.abs(s[2] - 463.901821) < 1e-5)
    assert.is_true(math.abs(s[51] - 11.797057) < 1e-5)
    assert.is_true(math.abs(s[99] - 0.323344) < 1e-6)
    assert.is_true(math.abs(s[100] - 0.3) < 1e-12)
    assert.equal(0, s[101])
  end)
  it("rejects bad arguments", function()
    assert.error_matches(function() sao.sampler.sigmas(0, 0.3, 500) end, "at least 1 step")
    assert.error_matches(function() sao.sampler.sigmas(10, 0, 500) end, "sigma_min")
  end)
end)

local dit = load_dit()
for _, case in ipairs {
  { "sampler_dpmpp3msde", "dpmpp-3m-sde" },
  { "sampler_dpmpp2msde", "dpmpp-2m-sde" },
  { "sampler_euler", "euler" },
} do
  describe(case[2] .. " (" .. case[1] .. " fixture)", function()
    local man = cjson.decode(io.open("spec/fixtures/" .. case[1] .. ".json"):read("*a"))
    local fx = sao.load_safetensors("spec/fixtures/" .. case[1] .. ".safetensors")
    local cfg = man.config
    local cross, global = fx["inputs/cross_attn_cond"], fx["inputs/global_cond"]
    it("reproduces every step and the final latent", function()
      local xs, dens = {}, {}
      local final = sao.sampler.sample {
        model = function(x, t)
          return dit:forward(x, sao.full({ x:size(1) }, t), cross, global, { cfg_scale = cfg.cfg_scale })
        end,
        noise = fx["inputs/noise"], steps = cfg.steps, sigma_min = cfg.sigma_min, sigma_max = cfg.sigma_max,
        rho = cfg.rho, sampler = case[2],
        step_noise = function(i) return fx["inputs/step_noise_" .. i]:clone() end,
        callback = function(i, x, den) xs[i] = x:clone(); dens[i] = den:clone() end,
      }
      local tl = man.tolerances
      for i = 0, cfg.steps - 1 do
        assert.tensor_near(fx["outputs/x_" .. i], xs[i], { abs = tl["outputs/x_*"].max_abs })
        assert.tensor_near(fx["outputs/denoised_" .. i], dens[i], { abs = tl["outputs/denoised_*"].max_abs })
      end
      assert.tensor_near(fx["outputs/final"], final, { abs = tl["outputs/final"].max_abs })
      local sig = sao.sampler.sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
      assert.tensor_near(fx["outputs/sigmas"], sig, { abs = tl["outputs/sigmas"].max_abs })
    end)
  end)
end

describe("sampling determinism", function()
  it("the same seed gives the same latent, another seed another", function()
    local cross = sao.randn { 1, 5, 64, seed = 3 }
    local global = sao.randn { 1, 64, seed = 4 }
    local function run(seed)
      return sao.sampler.sample {
        model = function(x, t) return dit:forward(x, sao.full({ 1 }, t), cross, global, { cfg_scale = 3 }) end,
        noise = sao.randn { { 1, 8, 6 }, seed = seed }, steps = 5, seed = seed,
      }
    end
    local a, b, c = run(1), run(1), run(2)
    assert.equal(0, a:maxdiff(b))
    assert.is_true(a:maxdiff(c) > 1e-3)
  end)
  it("seeds: each batch item draws the step noise a batch of one with its seed draws", function()
    -- an element-wise model treats every item alike whatever the batch, so the bits must agree
    local function model(x, t) return x * (0.5 + t) end
    local seeds = { 4, 17, 9 }
    local noise = sao.sampler.draw(sao.empty(3, 8, 6), seeds, 0)
    for _, name in ipairs { "dpmpp-3m-sde", "dpmpp-2m-sde" } do
      local batch = sao.sampler.sample { model = model, noise = noise, steps = 5, seeds = seeds, sampler = name }
      for b, s in ipairs(seeds) do
        local one = sao.sampler.sample { model = model, noise = sao.randn { { 1, 8, 6 }, seed = s }, steps = 5, seed = s,
                                         sampler = name }
        assert.equal(0, one:maxdiff(batch:narrow(1, b, 1)), name .. " item " .. b)
      end
      -- one seed for the whole batch is another draw
      local shared = sao.sampler.sample { model = model, noise = noise, steps = 5, seed = 4, sampler = name }
      assert.is_true(shared:narrow(1, 2, 2):maxdiff(batch:narrow(1, 2, 2)) > 1e-3)
    end
    assert.error_matches(function()
      sao.sampler.sample { model = model, noise = noise, steps = 2, seeds = { 1, 2 } }
    end, "2 seeds for a batch of 3")
  end)

  it("v-ddim runs deterministically and unknown samplers are refused", function()
    local global = sao.randn { 1, 64, seed = 4 }
    local function run()
      return sao.sampler.sample { sampler = "v-ddim", steps = 4, noise = sao.randn { { 1, 8, 6 }, seed = 9 },
        model = function(x, t) return dit:forward(x, sao.full({ 1 }, t), nil, global) end }
    end
    assert.equal(0, run():maxdiff(run()))
    assert.error_matches(function() sao.sampler.sample { sampler = "heun", noise = sao.zeros(1, 8, 2), model = print } end,
      "unknown sampler 'heun'")
  end)
end)
