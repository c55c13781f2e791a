-- sao.prompt and sao.llm: the offline writer (deterministic per seed, varied across seeds, always
-- passing its own checks), the trap variant's confidence rules, the checks on LLM answers, the
-- shuffled system prompt, and the LLM writer against a loopback OpenAI-compatible server
-- (validation, retries, fallback recorded, server errors verbatim, down server skipped), and the
-- `sao recipes/prompts.lua DIR` stage.
local prompt = require "sao.prompt"
local ojson = require "sao.ojson"
local cjson = require "cjson"
local fake = require "spec.support.fake"

local CLIPS = {
  { Song = "S1", Artist = "A", Tags = { "rock", "80s", "classic rock", "energetic" }, key = "A", mode = "Minor", tempo = 128.4,
    Instruments = { "Distortion Guitar", "Electric Bass (finger)", "Standard Drum Kit", "Lead 1 (square)" },
    energy = 0.85, acousticness = 0.1 },
  { Song = "S2", Artist = "B", Tags = {}, Instruments = { "Acoustic Grand Piano" }, key = "F#", mode = "Major", tempo = 72,
    energy = 0.2, acousticness = 0.9 },
  { Song = "S3", Artist = "C", Tags = { "jazz", "smooth jazz", "chill" }, key = "D#", mode = "Minor", tempo = 96,
    Instruments = { "Acoustic Grand Piano", "Acoustic Bass", "Drums", "Tenor Sax" } },
  { Song = "S4", Artist = "D", Tags = { "seen live" }, Instruments = {}, key = "C", mode = "Major", tempo = 60 },
}

describe("offline writer", function()
  it("is deterministic for a seed and varies across seeds", function()
    for _, c in ipairs(CLIPS) do
      assert.equal(prompt.offline(c, 42), prompt.offline(c, 42))
      local seen, n = {}, 0
      for s = 1, 20 do
        local t = prompt.offline(c, s)
        if not seen[t] then seen[t] = true; n = n + 1 end
      end
      assert.is_true(n >= 12, "only " .. n .. " distinct prompts in 20 seeds")
    end
    -- a pinned example: the stream is splitmix64, the same on every machine
    assert.equal(prompt.offline(CLIPS[1], 7), prompt.offline(CLIPS[1], 7.0))
  end)

  it("always states tempo and key, in one paragraph, and passes the LLM checks", function()
    for _, c in ipairs(CLIPS) do
      local f = prompt.facts(c)
      for s = 1, 60 do
        local t = prompt.offline(c, s)
        local ok, why = prompt.check(t, f)
        assert.is_true(ok, tostring(why) .. ": " .. t)
        assert.truthy(t:find(f.tempo .. " BPM", 1, true), t)
        assert.truthy(t:find(f.key, 1, true), t)
        assert.truthy(t:match("^[%u%d]"), t)
        assert.truthy(t:match("%.$"), t)
      end
    end
  end)

  it("uses genres and moods from tags, readable instrument names, and drops noise tags", function()
    local all = {}
    for s = 1, 30 do all[#all + 1] = prompt.offline(CLIPS[1], s) end
    local text = table.concat(all, " ")
    assert.truthy(text:find("classic rock", 1, true))
    assert.truthy(text:find("square lead", 1, true))
    assert.is_nil(text:find("80s", 1, true))
    assert.is_nil(text:find("Lead 1", 1, true))
    assert.is_nil(text:find("(finger)", 1, true))
    assert.is_nil(table.concat(all):find("seen live", 1, true))
  end)

  it("reads Spotify-style numeric keys and modes", function()
    local f = prompt.facts { key = 10, mode = 1, tempo = 99.6 }
    assert.equal("A#", f.key)
    assert.equal("Major", f.mode)
    assert.equal(100, f.tempo)
    assert.is_nil(prompt.facts { key = "", mode = "Minor" }.key)
  end)
end)

describe("trap variant", function()
  local beat = { moods = { "dark", "menacing" }, genres = { "trap" }, instruments = { "808", "hi-hats", "piano", "choir" },
    bpm = 142, bpm_confidence = 0.9, key = "C#", mode = "minor", key_strength = 0.8 }

  it("says BPM and key only when confident", function()
    for s = 1, 20 do
      local t = prompt.trap(beat, s)
      assert.truthy(t:find("142 BPM", 1, true), t)
      assert.truthy(t:find("C# [Mm]inor"), t)
      assert.is_true(prompt.check(t, prompt.facts(beat)))
      assert.truthy(t:match("^An? "), t)
    end
    local unsure = {}
    for k, v in pairs(beat) do unsure[k] = v end
    unsure.bpm_confidence, unsure.key_strength = 0.5, 0.69
    for s = 1, 20 do
      local t = prompt.trap(unsure, s)
      assert.is_nil(t:find("BPM", 1, true), t)
      assert.is_nil(t:find("C#", 1, true), t)
    end
  end)

  it("uses tags by category with synonyms, at most three instruments", function()
    local seen = {}
    for s = 1, 30 do
      local t = prompt.trap(beat, s)
      assert.is_nil(t:find("choir", 1, true), t)          -- the fourth instrument is left out
      seen[t:match("(%a+ 808[%a ]*)") or t:match("(808s)") or "?"] = true
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.is_true(n >= 2, "808 always worded the same")
    local t = prompt.trap({ Tags = { moods = { "chill" }, genres = { "lo-fi" }, instruments = { "piano" } }, bpm = 80 }, 1)
    assert.truthy(t:find("lo%-fi"), t)
    assert.truthy(t:find("80 BPM", 1, true), t)
  end)

  it("is chosen by tags by category, not by a confidence field alone", function()
    -- instrumental clips carry bpm_confidence too (the dataset stage writes it), and an empty Tags list
    local clip = { Song = "x", Artist = "y", Tags = {}, Instruments = { "Piano" }, tempo = 120, key = "A",
      mode = "Minor", bpm_confidence = 0.9, key_strength = 0.9 }
    assert.equal("instrumental", prompt.facts(clip).style)
    clip.Tags = { instruments = { "808" }, moods = { "dark" }, genres = { "trap" } }
    assert.equal("trap", prompt.facts(clip).style)
    assert.equal("trap", prompt.facts({ moods = { "dark" } }).style)
  end)
end)

describe("prompt checks", function()
  local f = prompt.facts(CLIPS[1])     -- A Minor, 128 BPM

  it("accepts a good prompt, enharmonic keys and lower-case modes", function()
    assert.is_true(prompt.check("Driving rock with guitars and drums in A minor at 128 BPM.", f))
    assert.is_true(prompt.check("Energetic rock at 128 bpm, in the key of A Minor, with guitars.", f))
    local fs = prompt.facts { key = "A#", mode = "Major", tempo = 90 }
    assert.is_true(prompt.check("Warm soul groove in Bb major at 90 BPM with organ.", fs))
    assert.is_true(prompt.check("Warm soul groove in A♯ major at 90 beats per minute.", fs))
  end)

  it("rejects preambles, paragraphs, questions, lists and missing or wrong facts", function()
    local cases = {
      { "Here is a prompt: rock in A minor at 128 BPM.", "preamble" },
      { "Sure! Rock in A minor at 128 BPM.", "preamble" },
      { "Rock in A minor at 128 BPM.\n\nI hope this helps.", "paragraph" },
      { "Rock in A minor at 128 BPM?", "question" },
      { "- Rock in A minor at 128 BPM", "list" },
      { "Driving rock with guitars in A minor.", "tempo" },
      { "Driving rock with guitars in A minor at 140 BPM.", "tempo" },
      { "Driving rock with guitars at 128 BPM.", "key" },
      { "Driving rock with guitars in A major at 128 BPM.", "key" },
      { "Driving rock in E minor at 128 BPM, a minor hit.", "key" },
      { "Rock.", "short" },
      { "", "empty" },
    }
    for _, c in ipairs(cases) do
      local ok, why = prompt.check(c[1], f)
      assert.is_false(ok, c[1])
      assert.truthy(why:find(c[2]), why .. " for " .. c[1])
    end
  end)

  it("cleans quotes and wrapped lines", function()
    assert.equal("Rock in A minor at 128 BPM.", prompt.clean('  "Rock in A minor\nat 128 BPM."  '))
    assert.equal("x\n\ny", prompt.clean("x\n\ny"))
  end)
end)

describe("LLM messages", function()
  it("shuffles the system prompt's rule blocks per seed, deterministically", function()
    local orders = {}
    local n = 0
    for s = 1, 20 do
      local sys = prompt.system_prompt("instrumental", prompt.rng(s))
      assert.equal(sys, prompt.system_prompt("instrumental", prompt.rng(s)))
      local order = {}
      for word in sys:gmatch("About (%a+)") do order[#order + 1] = word end
      assert.equal(4, #order, sys)
      local key = table.concat(order, ",")
      if not orders[key] then orders[key] = true; n = n + 1 end
    end
    assert.is_true(n >= 6, "only " .. n .. " orders of 4 blocks in 20 seeds")
  end)

  it("builds few-shot turns and the clip JSON with a random key order", function()
    local f = prompt.facts(CLIPS[1])
    local firsts = {}
    for s = 1, 12 do
      local m = prompt.messages(f, s, { shots = 3 })
      assert.equal(8, #m)
      assert.equal("system", m[1].role)
      for i = 2, 7, 2 do
        assert.equal("user", m[i].role)
        assert.equal("assistant", m[i + 1].role)
        assert.is_table(cjson.decode(m[i].content))
      end
      assert.equal("user", m[8].role)
      local j = cjson.decode(m[8].content)
      assert.equal(128, j.tempo)
      assert.equal("A", j.key)
      assert.equal("Minor", j.mode)
      assert.same({ "distortion guitar", "electric bass", "drums", "square lead" }, j.instruments)
      firsts[m[8].content:match('^{"(%a+)"')] = true
    end
    local n = 0
    for _ in pairs(firsts) do n = n + 1 end
    assert.is_true(n >= 3, "key order never changes")
  end)

  it("keeps its few-shot answers valid", function()
    for style, list in pairs(prompt.EXAMPLES) do
      for _, e in ipairs(list) do
        local ok, why = prompt.check(e[2], prompt.facts(e[1], { style = style }))
        assert.is_true(ok, tostring(why) .. ": " .. e[2])
      end
    end
  end)
end)

describe("LLM writer against a loopback server", function()
  local srv, llm_mod, tmp
  setup(function()
    srv = fake.start()
    llm_mod = require "sao.llm"
  end)
  teardown(function() srv:stop() end)
  before_each(function() tmp = fake.tmpdir() end)
  after_each(function() fake.rm_rf(tmp) end)

  local function client(o)
    local d = { url = srv.url, key = "sk-test-1234567", cache = false, backoff = 0.01, model = "llama3.1" }
    for k, v in pairs(o or {}) do d[k] = v end
    return llm_mod.new(d)
  end

  it("uses a valid answer and sends the seed's request shape", function()
    srv:configure { openai = { key = "sk-test-1234567" } }
    local text, info = prompt.write(CLIPS[1], { llm = client(), seed = 11 })
    assert.equal("llm", info.source)
    assert.equal(1, info.attempts)
    assert.truthy(text:find("128 BPM", 1, true), text)
    local reqs = srv:requests("/v1/chat/completions")
    assert.equal(1, #reqs)
    assert.equal("Bearer sk-test-1234567", reqs[1].headers.authorization)
    local body = cjson.decode(reqs[1].body)
    assert.equal("llama3.1", body.model)
    assert.equal(0.5, body.temperature)
    assert.equal(11, body.seed)
    assert.is_false(body.stream)
    assert.equal("system", body.messages[1].role)
    assert.equal("user", body.messages[#body.messages].role)
  end)

  it("retries invalid answers, then uses one that passes", function()
    srv:configure { openai = { replies = { "Here is your prompt: rock.", "Rock in A minor.",
      "Driving rock with guitars and drums in A Minor at 128 BPM." } } }
    local text, info = prompt.write(CLIPS[1], { llm = client(), seed = 1 })
    assert.equal("llm", info.source)
    assert.equal(3, info.attempts)
    assert.equal("Driving rock with guitars and drums in A Minor at 128 BPM.", text)
    local reqs = srv:requests()
    assert.equal(3, #reqs)
    assert.are_not.equal(cjson.decode(reqs[1].body).seed, cjson.decode(reqs[2].body).seed)
  end)

  it("falls back to the offline writer after N bad answers and records why", function()
    srv:configure { openai = { replies = { "Sure! Here you go." } } }
    local c = client()
    local text, info = prompt.write(CLIPS[2], { llm = c, seed = 5, retries = 2 })
    assert.equal("template", info.source)
    assert.equal(2, info.attempts)
    assert.truthy(info.fallback:find("preamble"), info.fallback)
    assert.equal(prompt.offline(CLIPS[2], 5), text)
    assert.equal(2, #srv:requests())
    assert.is_nil(c.down)
  end)

  it("surfaces server errors verbatim and stops asking a server that cannot answer", function()
    srv:configure { routes = { ["/v1/chat/completions"] = { { status = 404,
      json = { error = { message = "model 'llama9' not found, try pulling it first", type = "not_found_error" } } } } } }
    local c = client { model = "llama9" }
    local ok, err = pcall(c.chat, c, { { role = "user", content = "hi" } })
    assert.is_false(ok)
    assert.truthy(err:find("HTTP 404: model 'llama9' not found, try pulling it first", 1, true), err)
    srv:mark()
    local _, info = prompt.write(CLIPS[1], { llm = c, seed = 1 })
    assert.equal("template", info.source)
    assert.truthy(info.fallback:find("model 'llama9' not found", 1, true), info.fallback)
    assert.equal(1, #srv:requests())
    local _, info2 = prompt.write(CLIPS[3], { llm = c, seed = 2 })
    assert.truthy(info2.fallback:find("llm unavailable", 1, true))
    assert.equal(1, #srv:requests())                      -- not asked again
  end)

  it("falls back at once when the server is not running", function()
    local c = llm_mod.new { url = "http://127.0.0.1:" .. fake.dead_port(), retries = 1, backoff = 0.01, cache = false }
    local text, info = prompt.write(CLIPS[1], { llm = c, seed = 3 })
    assert.equal("template", info.source)
    assert.truthy(info.fallback:find("is the server", 1, true), info.fallback)
    assert.truthy(c.down)
    assert.equal(prompt.offline(CLIPS[1], 3), text)
  end)

  it("retries a 500 and an unparsable answer inside one attempt budget", function()
    srv:configure { routes = { ["/v1/chat/completions"] = { { status = 500, body = "oops" }, { pass = true } } } }
    local _, info = prompt.write(CLIPS[1], { llm = client(), seed = 4 })
    assert.equal("llm", info.source)
    srv:configure { routes = { ["/v1/chat/completions"] = { { status = 200, body = "{broken" }, { pass = true } } } }
    local _, info2 = prompt.write(CLIPS[1], { llm = client(), seed = 4 })
    assert.equal("llm", info2.source)
    assert.equal(2, info2.attempts)
  end)

  it("caches answers: the same clip and seed ask once", function()
    srv:configure {}
    local c = client { cache = true, cache_dir = tmp }
    local a = prompt.write(CLIPS[3], { llm = c, seed = 9 })
    local b = prompt.write(CLIPS[3], { llm = client { cache = true, cache_dir = tmp }, seed = 9 })
    assert.equal(a, b)
    assert.equal(1, #srv:requests())
  end)

  it("embeds text", function()
    srv:configure {}
    local v = client():embed { "warm piano", "dark trap" }
    assert.equal(2, #v)
    assert.equal(8, #v[1])
  end)

  it("normalises base URLs", function()
    assert.equal("http://h:8080/v1", llm_mod.base_url("http://h:8080"))
    assert.equal("http://h:8080/v1", llm_mod.base_url("http://h:8080/v1/"))
    assert.equal("http://h:11434/v1", llm_mod.base_url("http://h:11434/v1/chat/completions"))
  end)
end)

describe("prompts stage", function()
  local srv, dir
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function()
    dir = fake.tmpdir()
    for i, c in ipairs(CLIPS) do
      os.execute("mkdir -p '" .. dir .. "/" .. c.Artist .. "/" .. c.Song .. "'")
      local t = ojson.object(ojson.decode(cjson.encode(c)),
        { "Song", "Artist", "Tags", "Instruments", "key", "mode", "tempo", "energy", "acousticness" })
      ojson.write(("%s/%s/%s/clip-%03d.json"):format(dir, c.Artist, c.Song, i), t)
    end
    ojson.write(dir .. "/notes.json", { hello = "not a clip" })
  end)
  after_each(function() fake.rm_rf(dir) end)

  it("writes template prompts offline, keeps them on a re-run, rewrites with force", function()
    local sum = prompt.stage(dir, { llm = false, quiet = true })
    assert.equal(4, sum.written)
    assert.equal(4, sum.template)
    assert.equal(1, sum.not_clips)
    local path = dir .. "/A/S1/clip-001.json"
    local t = ojson.read(path)
    assert.equal("template", t.prompt_source)
    assert.is_true(prompt.check(t.prompt, prompt.facts(t)))
    assert.equal(128.4, t.tempo)                              -- other fields untouched
    local text = io.open(path):read("*a")
    assert.truthy(text:find('^{\n  "Song"'))                  -- key order kept
    sum = prompt.stage(dir, { llm = false, quiet = true })
    assert.equal(0, sum.written)
    assert.equal(4, sum.kept)
    sum = prompt.stage(dir, { llm = false, quiet = true, force = true })
    assert.equal(4, sum.written)
    assert.equal(t.prompt, ojson.read(path).prompt)           -- deterministic
  end)

  it("writes LLM prompts when a server is configured", function()
    srv:configure {}
    local c = require("sao.llm").new { url = srv.url, cache = false }
    local sum = prompt.stage(dir, { llm = c, quiet = true })
    assert.equal(4, sum.llm)
    assert.equal("llm", ojson.read(dir .. "/C/S3/clip-003.json").prompt_source)
  end)

  it("runs as `sao recipes/prompts.lua DIR`", function()
    local f = io.open("./sao")
    if not f then pending("./sao not built") return end
    f:close()
    local p = io.popen("env -u SAO_LLM_URL ./sao recipes/prompts.lua '" .. dir .. "' --seed 3 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.truthy(out:find("rc=0", 1, true), out)
    assert.truthy(out:find("4 written", 1, true), out)
    assert.equal("template", ojson.read(dir .. "/B/S2/clip-002.json").prompt_source)
  end)
end)
