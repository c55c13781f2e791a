-- docs/recipes.md's example recipe, run as the document shows it: loops whose file names carry
-- their tags -> segments -> tags -> prompts -> a LoRA fine-tune of the tiny model -> a demo.
local sao = require "sao"
local fs = require "sao.fs"
local ojson = require "sao.ojson"
local shell = require "support.shell"

-- the Lua block after "<!-- example: NAME -->" in a document
local function example(doc, name)
  local text = assert(fs.read(doc))
  local at = assert(text:find("<!-- example: " .. name .. " -->", 1, true), "no example " .. name .. " in " .. doc)
  return assert(text:match("```lua\n(.-)```", at), "no lua block after the marker")
end

describe("docs/recipes.md", function()
  it("its example recipe runs end to end", function()
    local dir = shell.tmpdir()
    shell.write(dir .. "/loops.lua", example("docs/recipes.md", "loops.lua"))
    fs.mkdir_p(dir .. "/loops")
    local mg = sao.musicgen
    for i, name in ipairs { "dark_piano_808", "chill_flute_lofi" } do
      local d = mg.drums { bpm = 90 + 40 * (i - 1), seconds = 14, sr = 44100, pattern = "half", seed = i }
      local c = mg.chords { tonic = 2 * i, minor = true, sr = 44100, bpm = 90 + 40 * (i - 1), bars = 8, seed = i }
      sao.audio.save(dir .. "/loops/" .. name .. ".wav", sao.audio.mix({ d, sao.audio.fit(c, d:size(2)) }, { mode = "mean" }),
                     44100, { subtype = "pcm16" })
    end
    local out = dir .. "/out"
    local code, text = shell.sh("env -u SAO_LLM_URL ./sao " .. shell.q(dir .. "/loops.lua") .. " --beats " ..
      shell.q(dir .. "/loops") .. " --out " .. shell.q(out) .. " --model tiny --steps 2 --batch 2 --frames 32 " ..
      "--checkpoint-every 2 --sample-steps 2 --seconds 2 --num-demos 1 --cfg-scales 4 --no-llm --quiet 2>&1")
    assert.equal(0, code, text)
    for _, st in ipairs { "dataset", "tag", "prompts", "encode", "train", "sample" } do
      assert.truthy(text:find("[" .. st .. "] running", 1, true), st)
    end
    local m = ojson.read(out .. "/dataset/clips/beats/dark_piano_808/dark_piano_808_s1.json")
    assert.same({ "piano", "808" }, m.Tags.instruments)
    assert.same({ "dark" }, m.Tags.moods)
    assert.equal("file name", m.tag_source)
    assert.truthy(m.prompt:lower():find("piano", 1, true), m.prompt)
    local lp = m.prompt:lower()
    assert.truthy(lp:find("dark", 1, true) or lp:find("brooding", 1, true) or lp:find("moody", 1, true), m.prompt)
    assert.falsy(lp:find("flute", 1, true), m.prompt)
    local l = ojson.read(out .. "/dataset/clips/beats/chill_flute_lofi/chill_flute_lofi_s1.json")
    assert.same({ "lo-fi hip hop" }, l.Tags.genres)
    -- a LoRA run (the default the recipe sets) with its checkpoint and a demo
    local cfg = dofile(out .. "/runs/main/config.lua")
    assert.equal(8, cfg.lora_rank or (cfg.lora and cfg.lora.rank))
    assert.is_true(fs.exists(out .. "/runs/main/checkpoints/step-2/state.json"))
    local p = io.popen("ls " .. shell.q(out .. "/runs/main/samples/step-2") .. " | grep -c wav")
    assert.equal("1", p:read("*l"))
    p:close()
    -- a typo is refused by the runner
    local code2, text2 = shell.sh("./sao " .. shell.q(dir .. "/loops.lua") .. " --sample-stpes 2 2>&1")
    assert.equal(2, code2)
    assert.matches("loops: unknown option %-%-sample%-stpes", text2)
    os.execute("rm -rf " .. shell.q(dir))
  end)
end)
