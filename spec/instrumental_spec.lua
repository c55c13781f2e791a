-- recipes/instrumental.lua's command line: --help, and typos (an unknown option or stage) refused
-- with exit status 2 before any work starts, a failing stage in one line with status 1. The stages
-- themselves: dataset_spec, pipeline_spec.
local fs = require "sao.fs"

local function run(args)
  local out, err = os.tmpname(), os.tmpname()
  local ok, _, code = os.execute("./sao recipes/instrumental.lua " .. args .. " >" .. out .. " 2>" .. err .. " </dev/null")
  if type(ok) == "number" then code = ok / 256 end           -- Lua 5.1 / LuaJIT without 5.2 compat
  local o, e = fs.read(out), fs.read(err)
  os.remove(out); os.remove(err)
  return code, o, e
end

describe("recipes/instrumental.lua", function()
  it("lists its stages and options with --help", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, stage in ipairs { "dataset", "metadata", "prompts", "encode", "train", "sample", "eval" } do
      assert.truthy(out:find("\n  " .. stage .. " ", 1, true), stage)
    end
    assert.truthy(out:find("--soundfont", 1, true))
    assert.truthy(out:find("--sample-batch N", 1, true))
    assert.truthy(out:find("--graphs", 1, true))
  end)

  it("takes --sample-batch and --graphs: the sample stage alone samples the base model in batches", function()
    local dir = os.tmpname()
    os.remove(dir)
    local code, _, err = run("--out " .. dir .. " --stages sample --model tiny --sample-steps 2 --seconds 1 " ..
                             "--num-demos 2 --cfg-scales 7 --sample-batch 2 --graphs --quiet")
    assert.equal(0, code, err)
    local recs = require("cjson").decode(fs.read(dir .. "/runs/main/samples/step-0/index.json"))
    assert.equal(2, #recs)
    for _, r in ipairs(recs) do assert.equal(2, r.batch) end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("refuses an unknown option and an unknown stage before doing anything", function()
    local dir = os.tmpname()
    os.remove(dir)
    local code, out, err = run("--out " .. dir .. " --stpes 10")
    assert.equal(2, code)
    assert.matches("unknown option %-%-stpes", err)
    assert.equal("", out)
    code, out, err = run("--out " .. dir .. " --stages dataset,trian")
    assert.equal(2, code)
    assert.matches("unknown stage 'trian' %(stages: dataset, metadata, prompts, encode, train, sample, eval%)", err)
    assert.is_false(fs.exists(dir))
  end)

  it("a failing stage says why in one line and exits 1 (no Lua traceback)", function()
    local dir = os.tmpname()
    os.remove(dir)
    local code, _, err = run("--out " .. dir .. " --stages sample --device gpu0")
    assert.equal(1, code)
    assert.matches("instrumental: stage sample failed: .*load_model: device 'gpu0': expected \"cpu\", \"cuda\" or \"cuda:N\"", err)
    assert.falsy(err:find("stack traceback", 1, true))
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
