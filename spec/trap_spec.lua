-- recipes/trap.lua: its command line (--help, typos refused with exit 2 before any work), and the
-- whole recipe end to end on one demo beat with the tiny random model: segments, tags, trap-style
-- prompts, latents, a short training run, samples and the evaluation report.
local fs = require "sao.fs"
local ojson = require "sao.ojson"
local shell = require "support.shell"

local function run(args)
  local out, err = os.tmpname(), os.tmpname()
  local ok, _, code = os.execute("env -u SAO_LLM_URL -u SAO_CLAP_URL ./sao recipes/trap.lua " .. args ..
                                 " >" .. out .. " 2>" .. err .. " </dev/null")
  if type(ok) == "number" then code = ok / 256 end
  local o, e = fs.read(out), fs.read(err)
  os.remove(out); os.remove(err)
  return code, o, e
end

describe("recipes/trap.lua", function()
  it("lists its stages and options with --help", function()
    local code, out = run("--help")
    assert.equal(0, code)
    for _, stage in ipairs { "dataset", "tag", "prompts", "encode", "train", "sample", "eval" } do
      assert.truthy(out:find("\n  " .. stage .. " ", 1, true), stage)
    end
    for _, opt in ipairs { "--beats", "--segments", "--tagger", "--clap-url", "--confident" } do
      assert.truthy(out:find(opt, 1, true), opt)
    end
  end)

  it("refuses an unknown option and an unknown stage before doing anything", function()
    local dir = shell.tmpdir()
    os.remove(dir)
    local code, out, err = run("--out " .. dir .. " --segmnets 3")
    assert.equal(2, code)
    assert.matches("trap: unknown option %-%-segmnets", err)
    assert.equal("", out)
    code, _, err = run("--out " .. dir .. " --stages dataset,tags")
    assert.equal(2, code)
    assert.matches("unknown stage 'tags' %(stages: dataset, tag, prompts, encode, train, sample, eval%)", err)
    assert.is_false(fs.exists(dir))
  end)

  it("a failing stage says why in one line and exits 1", function()
    local dir = shell.tmpdir()
    local code, _, err = run("--out " .. dir .. " --stages dataset --beats " .. dir .. "/none")
    assert.equal(1, code)
    assert.matches("trap: stage dataset failed: dataset: .*/none: not a folder", err)
    os.execute("rm -rf " .. shell.q(dir))
  end)

  it("runs end to end on a demo beat with the tiny model", function()
    local dir = shell.tmpdir()
    local code, out, err = run("--out " .. dir .. " --demo-count 1 --model tiny --steps 2 --batch 2 --frames 32 " ..
      "--checkpoint-every 2 --sample-steps 2 --seconds 2 --num-demos 2 --cfg-scales 4 --reference-clips 2 " ..
      "--seconds-cond source --quiet")
    assert.equal(0, code, err)
    for _, st in ipairs { "dataset", "tag", "prompts", "encode", "train", "sample", "eval" } do
      assert.truthy(out:find("[" .. st .. "] running", 1, true), st)
    end
    -- two segments of the demo beat, tagged from audio features, with trap prompts
    local clips = {}
    for _, n in ipairs { 1, 2 } do
      local m = ojson.read(dir .. "/dataset/clips/beats/Night Shift/Night Shift_s" .. n .. ".json")
      assert.is_table(m, "segment " .. n)
      clips[n] = m
      assert.is_true(m.duration >= 20 and m.duration <= 35)
      assert.equal("features", m.tag_source)
      assert.is_true(#m.Tags.genres == 1)
      assert.is_string(m.prompt)
      assert.equal("template", m.prompt_source)
      local lp = m.prompt:lower()
      assert.truthy(lp:find("beat", 1, true) or lp:find("instrumental", 1, true) or lp:find("track", 1, true), m.prompt)
      -- the BPM is stated only when the estimate is confident
      if m.bpm_confidence < 0.7 then assert.falsy(m.prompt:find("BPM", 1, true)) end
    end
    assert.is_true(clips[2].start >= clips[1].start + clips[1].duration)
    assert.is_true(fs.exists(dir .. "/dataset/tags.json"))
    -- the segments' place in their beat reaches the latent index, and the run conditions on it
    local n = 0
    for _, e in ipairs(require("sao.latents").read_index(dir .. "/cache/latents")) do
      local m = clips[tonumber(e.clip:match("_s(%d)$"))]
      assert.equal(m.seconds_start, e.source_start)
      assert.equal(m.seconds_total, e.source_total)
      n = n + 1
    end
    assert.equal(2, n)
    assert.equal("source", dofile(dir .. "/runs/main/config.lua").seconds)
    -- training, samples, evaluation
    assert.is_true(fs.exists(dir .. "/runs/main/export/model.safetensors"))
    local metrics = ojson.read(dir .. "/eval/metrics.json")
    assert.is_table(metrics)
    assert.is_true(#metrics.samples >= 2)
    assert.matches("no CLAP service", metrics.settings.clap)
    -- the segments' BPM was measured by the estimator that scores them: the report says so
    local said = false
    for _, n in ipairs(metrics.notes) do said = said or n:find("same estimator", 1, true) ~= nil end
    local stated = 0
    for _, c in ipairs(clips) do if c.prompt:find("BPM", 1, true) then stated = stated + 1 end end
    assert.equal(stated > 0, said)
    for _, s in ipairs(metrics.samples) do
      if s.group ~= "reference (dataset clips)" then
        assert.matches("^A .* beat", s.prompt)   -- the recipe's trap demo prompts (nothing held out)
      end
      assert.is_number(s.centroid_hz)
      assert.is_number(s.hp_ratio)
    end
    local html = fs.read(dir .. "/eval/report.html")
    assert.truthy(html:find("<h2>Dataset tags</h2>", 1, true))
    assert.truthy(html:find("<h2>Memorization</h2>", 1, true))
    os.execute("rm -rf " .. shell.q(dir))
  end)
end)
