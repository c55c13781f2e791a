-- recipes/check_fixture.lua on every upstream fixture in spec/fixtures (all outputs within the
-- manifests' tolerances), and proof that it computes rather than reads the stored outputs.
local sao = require "sao"
local cjson = require "cjson"

local function run(args)
  local p = io.popen("./sao recipes/check_fixture.lua " .. args .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then rows[#rows + 1] = cjson.decode(line) end
  end
  return rows, tonumber(out:match("rc=(%d+)")), out
end

describe("check_fixture", function()
  for _, name in ipairs { "dit_tiny", "oobleck_tiny", "number_cond", "t5_encoder_tiny", "sampler_dpmpp3msde",
                          "sampler_dpmpp2msde", "sampler_euler", "train_step_vobjective",
                          "train_step_vobjective_update" } do
    it("passes " .. name, function()
      local rows, rc, out = run("spec/fixtures/" .. name .. ".safetensors")
      assert.equal(0, rc, out)
      assert.is_true(#rows >= 3)
      for _, r in ipairs(rows) do
        assert.is_true(r.ok, r.name)
        assert.is_number(r.max_abs)
        assert.is_true(r.max_abs <= r.tol_abs)
      end
    end)
  end

  it("computes the outputs: a tampered stored output is reported out of tolerance", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local t, meta = sao.load_safetensors("spec/fixtures/number_cond.safetensors")
    local copy = {}
    for k, v in pairs(t) do copy[k] = v:clone() end
    copy["outputs/embeds"] = copy["outputs/embeds"] + 0.01
    sao.save_safetensors(dir .. "/number_cond.safetensors", copy, meta)
    os.execute("cp spec/fixtures/number_cond.json " .. dir .. "/")
    local rows, rc = run(dir .. "/number_cond.safetensors")
    assert.equal(1, rc)
    local seen = false
    for _, r in ipairs(rows) do
      if r.name == "outputs/embeds" then
        seen = true
        assert.is_false(r.ok)
        assert.is_true(math.abs(r.max_abs - 0.01) < 1e-4)
      end
    end
    assert.is_true(seen)
  end)

  it("fails clearly without a manifest or for an unknown fixture", function()
    local rows, rc = run("/nonexistent/x.safetensors")
    assert.equal(1, rc)
    assert.matches("manifest not found", rows[1].error)
  end)
end)
