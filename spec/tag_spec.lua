-- The trap recipe's tag stage (sao.pipeline.tag): tags from audio features when no CLAP service is
-- configured, from CLAP embeddings (the loopback fake service) when one is; tags kept on a re-run,
-- redone with --force; a failing clip named while the rest goes on; a service that does not answer
-- stops the stage with what to do; OUT/dataset/tags.json counts.
local sao = require "sao"
local ojson = require "sao.ojson"
local fs = require "sao.fs"
local shell = require "support.shell"
local tag = require "sao.pipeline.tag"

local SR = 44100

-- a clip: half-time drums (kick with sub-bass) + chords in A minor, `secs` at `bpm`
local function write_clip(out, rel, o)
  local mg = sao.musicgen
  local d = mg.drums { bpm = o.bpm, seconds = o.secs, sr = SR, pattern = o.pattern or "half", seed = 1 }
  local c = mg.chords { tonic = 9, minor = o.minor ~= false, sr = SR, bpm = o.bpm, bars = math.ceil(o.secs * o.bpm / 240), seed = 2 }
  local m
  if o.drums == false then   -- a soft A4 + E5 dyad: nothing low, nothing percussive
    local buf = {}
    for i = 0, math.floor(o.secs * SR) - 1 do
      buf[i + 1] = 0.2 * math.sin(2 * math.pi * 440 * i / SR) + 0.1 * math.sin(2 * math.pi * 659.25 * i / SR)
    end
    m = sao.tensor({ buf })
  else
    m = sao.audio.mix({ d, sao.audio.fit(c, d:size(2)) }, { mode = "mean" })
  end
  local base = out .. "/dataset/clips/" .. rel
  fs.mkdir_p(base:match("^(.*)/"))
  sao.audio.save(base .. ".wav", sao.audio.to_channels(m, 2), SR, { subtype = "float" })
  ojson.write(base .. ".json", ojson.object({ Song = rel:match("([^/]+)/[^/]+$"), Artist = "beats", Tags = ojson.object {},
    Instruments = ojson.array {}, path = "clips/" .. rel .. ".wav", tempo = o.bpm, bpm = o.bpm, bpm_confidence = 0.9,
    key = "A", mode = o.minor == false and "Major" or "Minor", key_strength = 0.9 },
    { "Song", "Artist", "Tags", "Instruments", "path", "tempo", "bpm", "bpm_confidence", "key", "mode", "key_strength" }))
end

describe("tag stage without CLAP (audio features)", function()
  local out = shell.tmpdir()
  local s
  setup(function()
    write_clip(out, "beats/Hard/Hard_s1", { bpm = 140, secs = 12 })
    write_clip(out, "beats/Slow/Slow_s1", { bpm = 86, secs = 12, minor = false })
    write_clip(out, "beats/Keys/Keys_s1", { bpm = 140, secs = 12, drums = false })   -- 140: genre "trap"
    s = tag.run { out = out, tagger = "features", quiet = true }
  end)
  teardown(function() os.execute("rm -rf " .. shell.q(out)) end)

  it("reads 808s and hi-hats, a mood from mode and brightness, the genre from the tempo", function()
    assert.equal(3, s.tagged)
    assert.equal("features", s.source)
    local hard = ojson.read(out .. "/dataset/clips/beats/Hard/Hard_s1.json")
    assert.equal("features", hard.tag_source)
    assert.same({ "808", "hi-hats" }, hard.Tags.instruments)
    assert.same({ "trap" }, hard.Tags.genres)
    assert.is_true(hard.Tags.moods[1] == "dark" or hard.Tags.moods[1] == "melancholic", hard.Tags.moods[1])
    local slow = ojson.read(out .. "/dataset/clips/beats/Slow/Slow_s1.json")
    assert.same({ "boom bap" }, slow.Tags.genres)
    assert.is_true(slow.Tags.moods[1] == "chill" or slow.Tags.moods[1] == "uplifting", slow.Tags.moods[1])
    -- a dyad alone: no drums, no sub-bass, so neither 808 nor hi-hats
    local keys = ojson.read(out .. "/dataset/clips/beats/Keys/Keys_s1.json")
    assert.same({}, keys.Tags.instruments)
  end)

  it("writes tag counts per category", function()
    local t = ojson.read(out .. "/dataset/tags.json")
    assert.equal(3, t.clips)
    assert.equal("features", t.tagger)
    assert.equal(2, t.counts.instruments["808"])
    assert.equal(2, t.counts.genres.trap)
    assert.equal(1, t.counts.genres["boom bap"])
    assert.equal("\137PNG\r\n\26\n", fs.read(out .. "/dataset/tags.png"):sub(1, 8))
  end)

  it("clusters the distinct tags in T5 space and reports the silhouette", function()
    local c = ojson.read(out .. "/dataset/tag_clusters.json")
    assert.is_table(c)
    assert.equal(5, c.k)
    local n, seen = 0, {}
    for _, g in ipairs(c.clusters) do
      assert.equal(g.size, #g.members)
      assert.equal(g.members[1], g.name)
      n = n + g.size
      for _, m in ipairs(g.members) do assert.is_nil(seen[m]); seen[m] = true end
    end
    assert.equal(c.tags, n)
    -- every distinct tag of tags.json is in one cluster
    local t = ojson.read(out .. "/dataset/tags.json")
    local distinct = {}
    for _, cat in ipairs { "instruments", "moods", "genres" } do
      for name in pairs(t.counts[cat]) do distinct[name] = true end
    end
    for name in pairs(distinct) do assert.is_true(seen[name], name) end
    assert.is_true(c.silhouette >= -1 and c.silhouette <= 1)
    assert.matches("RANDOM weights", c.encoder)
    assert.equal(c.silhouette, s.tag_clusters.silhouette)
  end)

  it("says when there are too few tags to cluster", function()
    local model = require("sao.pipeline.common").load_model { model = "tiny", quiet = true }
    local res, why = tag.clusters({ "808", "dark", "trap" }, 5, model)
    assert.is_nil(res)
    assert.equal("3 distinct tags: too few for 5 clusters", why)
    local ok = tag.clusters({ "808", "dark", "trap", "piano" }, 2, model)
    assert.equal(2, #ok.clusters)
  end)

  it("keeps tags on a re-run and redoes them with --force", function()
    local p = out .. "/dataset/clips/beats/Hard/Hard_s1.json"
    local m = ojson.read(p)
    m.Tags = { instruments = { "flute" }, moods = { "happy" }, genres = { "drill" } }
    ojson.write(p, m)
    local s2 = tag.run { out = out, tagger = "features", quiet = true }
    assert.equal(0, s2.tagged)
    assert.equal(3, s2.kept)
    assert.same({ "flute" }, ojson.read(p).Tags.instruments)
    local s3 = tag.run { out = out, tagger = "features", force = true, quiet = true }
    assert.equal(3, s3.tagged)
    assert.same({ "808", "hi-hats" }, ojson.read(p).Tags.instruments)
  end)

  it("names a clip whose audio cannot be read and tags the others", function()
    local o2 = shell.tmpdir()
    write_clip(o2, "beats/A/A_s1", { bpm = 140, secs = 8 })
    write_clip(o2, "beats/B/B_s1", { bpm = 140, secs = 8 })
    shell.write(o2 .. "/dataset/clips/beats/A/A_s1.wav", "not audio")
    local s2 = tag.run { out = o2, tagger = "features", quiet = true }
    assert.equal(1, s2.failed)
    assert.equal(1, s2.tagged)
    assert.same({}, ojson.read(o2 .. "/dataset/clips/beats/A/A_s1.json").Tags)
    os.execute("rm -rf " .. shell.q(o2))
  end)

  it("refuses an unknown tagger and --tagger clap without a service", function()
    assert.has_error(function() tag.run { out = out, tagger = "magic", quiet = true } end,
      "tag: --tagger must be auto, clap or features, got 'magic'")
    local saved = os.getenv("SAO_CLAP_URL")
    if saved == nil then
      assert.has_error(function() tag.run { out = out, tagger = "clap", quiet = true } end,
        "tag: --tagger clap needs a CLAP service: set SAO_CLAP_URL or pass --clap-url (docs/clap.md)")
    end
    assert.has_error(function() tag.run { out = out, tag_k = "3,1", quiet = true, tagger = "features" } end,
      "tag: --tag-k expects three numbers (instruments, genres, moods), got '3,1'")
  end)
end)

describe("tag stage with a CLAP service (the loopback fake)", function()
  local fake = require "spec.support.fake"
  local clap = require "sao.clap"
  local srv, out
  -- unit vector along axis i (dim 8)
  local function unit(i) local v = { 0, 0, 0, 0, 0, 0, 0, 0 }; v[i] = 1; return v end
  local function text(tag) return clap.TEXT_TEMPLATE:format(tag) end

  setup(function()
    srv = fake.start()
    out = shell.tmpdir()
    write_clip(out, "beats/Hard/Hard_s1", { bpm = 140, secs = 6 })
    write_clip(out, "beats/Slow/Slow_s1", { bpm = 86, secs = 6 })
  end)
  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. shell.q(out))
  end)

  it("keeps the tags nearest the audio embedding, k per category, with their similarities", function()
    -- every clip embeds to (1, 1, 0, ...)/sqrt 2; the tags that point there win
    local t = {
      [text("808")] = unit(1), [text("flute")] = { 0.9, 0.1, 0, 0, 0, 0, 0, 0 }, [text("choir")] = unit(2),
      [text("dark")] = unit(1), [text("happy")] = unit(3),
      [text("drill")] = { 1, 1, 0, 0, 0, 0, 0, 0 },
    }
    srv:configure { clap = { dim = 8, audio = { 1, 1, 0, 0, 0, 0, 0, 0 }, text = t } }
    local s = tag.run { out = out, clap_url = srv.url, quiet = true }
    assert.equal("clap", s.source)
    assert.equal(2, s.tagged)
    local m = ojson.read(out .. "/dataset/clips/beats/Hard/Hard_s1.json")
    assert.equal("clap", m.tag_source)
    assert.same({ "flute", "808", "choir" }, m.Tags.instruments)   -- cos .78, .71, .71 (808 before choir: list order)
    assert.same({ "drill" }, m.Tags.genres)
    assert.equal("dark", m.Tags.moods[1])
    assert.equal(2, #m.Tags.moods)
    assert.equal("drill", m.tag_scores.genres[1].tag)
    assert.near(1, m.tag_scores.genres[1].similarity, 1e-4)
    assert.near(0.7809, m.tag_scores.instruments[1].similarity, 1e-4)
    -- one request for the whole tag list, one per clip
    local texts, audios = 0, 0
    for _, r in ipairs(srv:requests("/embed")) do
      if r.body:find('"text"', 1, true) then texts = texts + 1 else audios = audios + 1 end
    end
    assert.equal(1, texts)
    assert.equal(2, audios)
    -- --tag-k and --min-similarity
    tag.run { out = out, clap_url = srv.url, force = true, tag_k = "1,1,1", min_similarity = "0.75", quiet = true }
    m = ojson.read(out .. "/dataset/clips/beats/Hard/Hard_s1.json")
    assert.same({ "flute" }, m.Tags.instruments)
    assert.same({}, m.Tags.moods)    -- "dark" is at .71
  end)

  it("the prompts stage words the CLAP tags", function()
    require("sao.pipeline.prompts").run { out = out, style = "trap", no_llm = true, force = true, quiet = true }
    local m = ojson.read(out .. "/dataset/clips/beats/Hard/Hard_s1.json")
    assert.truthy(m.prompt:lower():find("flute", 1, true), m.prompt)
    assert.truthy(m.prompt:lower():find("drill", 1, true), m.prompt)
  end)

  it("stops before touching a clip when the service does not answer", function()
    local url = "http://127.0.0.1:" .. fake.dead_port()
    local before = fs.read(out .. "/dataset/clips/beats/Slow/Slow_s1.json")
    local ok, err = pcall(tag.run, { out = out, clap_url = url, force = true, quiet = true })
    assert.is_false(ok)
    assert.matches("tag: the CLAP service does not answer: .*" .. url:gsub("%p", "%%%0"), err)
    assert.matches("pass %-%-tagger features", err)
    assert.equal(before, fs.read(out .. "/dataset/clips/beats/Slow/Slow_s1.json"))
  end)

  it("names a clip the service fails on and tags the others", function()
    srv:configure { clap = { dim = 8 }, routes = { ["/embed"] = {
      { pass = true },                                                        -- the tag list
      { status = 400, json = { error = { message = "audio 0: clip too long" } } },  -- the first clip (4xx: not retried)
      { pass = true } } } }
    local o2 = shell.tmpdir()
    write_clip(o2, "beats/A/A_s1", { bpm = 140, secs = 4 })
    write_clip(o2, "beats/B/B_s1", { bpm = 140, secs = 4 })
    local s = tag.run { out = o2, clap_url = srv.url, quiet = true, tag_batch = 1 }
    assert.equal(1, s.failed)
    assert.equal(1, s.tagged)
    assert.same({}, ojson.read(o2 .. "/dataset/clips/beats/A/A_s1.json").Tags)
    -- the next run retries it
    local s2 = tag.run { out = o2, clap_url = srv.url, quiet = true, tag_batch = 1 }
    assert.equal(1, s2.tagged)
    assert.equal(1, s2.kept)
    assert.equal("clap", ojson.read(o2 .. "/dataset/clips/beats/B/B_s1.json").tag_source)
    os.execute("rm -rf " .. shell.q(o2))
  end)

  it("sends a group of clips at once, and isolates a bad clip of the group", function()
    srv:configure { clap = { dim = 8 } }
    local o3 = shell.tmpdir()
    for _, n in ipairs { "A", "B", "C" } do write_clip(o3, "beats/" .. n .. "/" .. n .. "_s1", { bpm = 140, secs = 3 }) end
    srv:mark()
    local s = tag.run { out = o3, clap_url = srv.url, quiet = true, tag_clusters = 0 }
    assert.equal(3, s.tagged)
    local audio = 0
    for _, r in ipairs(srv:requests("/embed")) do if r.body:find('"audio"', 1, true) then audio = audio + 1 end end
    assert.equal(3, audio)
    -- B unreadable: the group fails, then clip by clip: A and C tagged, B named
    shell.write(o3 .. "/dataset/clips/beats/B/B_s1.wav", "not audio")
    local s2 = tag.run { out = o3, clap_url = srv.url, quiet = true, force = true, tag_clusters = 0 }
    assert.equal(2, s2.tagged)
    assert.equal(1, s2.failed)
    os.execute("rm -rf " .. shell.q(o3))
  end)
end)
