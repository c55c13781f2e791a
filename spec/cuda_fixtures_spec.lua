-- The upstream parity fixtures (spec/fixtures, reference numbers from stable-audio-tools and
-- transformers) through the CUDA path: recipes/check_fixture.lua --device cuda runs the DiT, the
-- samplers, the VAE, T5, the training pass and AdamW/EMA on the GPU against the manifests' own
-- tolerances, the same ones the CPU meets (tag gpu; fp32 products, as support.gpu sets). Without a
-- usable GPU the device runs are pending (skipped) and only the refusal is checked.
local cjson = require "cjson"
local fixtures = require "sao.fixtures"
local gpu = require "support.gpu"
local sh = require("support.shell").sh
local gpu_it = gpu.it(it, pending)

-- number_cond has no device path (it runs on the host either way), so it is not listed
local NAMES = { "dit_tiny", "oobleck_tiny", "t5_encoder_tiny", "sampler_dpmpp3msde", "sampler_dpmpp2msde",
                "sampler_euler", "train_step_vobjective", "train_step_vobjective_update" }

describe("upstream fixtures through CUDA #gpu", function()
  it("--device cuda without a usable GPU fails each fixture with the reason, exit status 1", function()
    if gpu.has_gpu then return end
    local rc, out = sh("./sao recipes/check_fixture.lua --device cuda spec/fixtures/dit_tiny.safetensors")
    local row = cjson.decode(out:match("(%b{})"))
    assert.is_false(row.ok)
    assert.matches(gpu.no_cuda_reason(), row.error)
    assert.equal(1, rc)
    local rc2, _, err = sh("./sao recipes/check_fixture.lua --device")
    assert.matches("%-%-device needs a value", err)
    assert.equal(2, rc2)
  end)

  for _, name in ipairs(NAMES) do
    gpu_it("passes " .. name .. " on the GPU", function()
      local rows, all = fixtures.check("spec/fixtures/" .. name .. ".safetensors", { device = "cuda" })
      assert.is_true(#rows >= 3)
      for _, r in ipairs(rows) do
        assert.equal("cuda", r.device)
        assert.is_true(r.ok, string.format("%s: %s max_abs %s (tol %s) max_rel %s (tol %s)", name, r.name,
          tostring(r.max_abs), tostring(r.tol_abs), tostring(r.max_rel), tostring(r.tol_rel)) .. (r.error or ""))
      end
      assert.is_true(all)
    end)
  end
end)
