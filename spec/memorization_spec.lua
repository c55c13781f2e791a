-- sao.memorization: the chroma and timbre similarities, thresholds from pairs of different songs,
-- and the nearest training clip of a "generation" that copies a training clip (found, with its
-- offset in beats), of one in another key (not flagged), and of an unrelated one.
local sao = require "sao"
local mem = require "sao.memorization"
local shell = require "support.shell"

local SR = 22050

-- an additive chord progression + drums at `bpm`, as a WAV; returns its path
local function song(dir, name, o)
  local mg = sao.musicgen
  local secs = o.secs or 24
  local c = mg.chords { tonic = o.tonic, minor = o.minor, sr = SR, bpm = o.bpm, bars = math.ceil(secs * o.bpm / 240),
                        seed = o.seed, progression = o.progression }
  local d = mg.drums { bpm = o.bpm, seconds = secs, sr = SR, pattern = "rock", seed = o.seed }
  local m = sao.audio.mix({ sao.audio.fit(c, d:size(2)), d }, { mode = "mean" })
  local path = dir .. "/" .. name .. ".wav"
  sao.audio.save(path, m, SR, { subtype = "float" })
  return path
end

describe("sao.memorization", function()
  local dir = shell.tmpdir()
  local train, set
  setup(function()
    train = {}
    local specs = {
      { "A1", "A", { tonic = 0, minor = false, bpm = 110, seed = 1, progression = 1 } },
      { "A2", "A", { tonic = 0, minor = false, bpm = 110, seed = 1, progression = 1, secs = 20 } },
      { "B1", "B", { tonic = 7, minor = true, bpm = 90, seed = 2, progression = 2 } },
      { "C1", "C", { tonic = 3, minor = false, bpm = 128, seed = 3, progression = 3 } },
      { "D1", "D", { tonic = 10, minor = true, bpm = 100, seed = 4, progression = 4 } },
    }
    for _, s in ipairs(specs) do
      train[#train + 1] = { path = song(dir, s[1], s[3]), song = s[2], name = s[1] }
    end
    set = mem.prepare(train)
  end)
  teardown(function() os.execute("rm -rf " .. shell.q(dir)) end)

  it("a file is its own best match at lag 0, with similarity 1", function()
    local f = set.clips[3]
    local s, lag = mem.chroma_similarity(f, f)
    assert.near(1, s, 1e-9)
    assert.equal(0, lag)
    -- columns are unit vectors; sequences shorter than the overlap give no score
    local short = { chroma = f.chroma, n = 5 }
    assert.is_nil(mem.chroma_similarity(short, f))
    assert.is_true(f.beat_sync)
  end)

  it("calibrates thresholds on each clip's nearest clip of another song", function()
    -- 5 clips, songs A A B C D: every clip is a query; A1's nearest is never A2 (same song)
    assert.equal(5, set.thresholds.queries)
    assert.equal(5, #set.null.timbre)
    assert.equal(5, #set.null.chroma)
    local a1, best = set.clips[1], -math.huge
    for j = 3, 5 do best = math.max(best, (mem.chroma_similarity(a1, set.clips[j]))) end
    assert.near(best, set.null.chroma[1], 1e-12)
    -- quantile 0.999 of 5 values lies between the two largest
    local v = {}
    for i, x in ipairs(set.null.chroma) do v[i] = x end
    table.sort(v)
    assert.is_true(set.thresholds.chroma >= v[4] and set.thresholds.chroma <= v[5])
    -- a shorter query has its own (higher or equal) threshold, cached per length
    local t8 = mem.chroma_threshold(set, 8)
    assert.is_true(t8 >= set.thresholds.chroma - 1e-9)
    assert.equal(t8, mem.chroma_threshold(set, 8))
  end)

  it("finds the training clip a generation copies, and its offset in beats", function()
    local a = sao.audio.load(train[3].path)
    local beat = 60 / 90
    local copy = sao.audio.slice(a, math.floor(6 * beat * SR + 0.5), math.floor(14 * SR))   -- from beat 6, 14 s
    local p = dir .. "/copy.wav"
    sao.audio.save(p, copy, SR, { subtype = "float" })
    -- the same progression a fifth up: another key, not a copy
    local other = song(dir, "fifth", { tonic = 2, minor = true, bpm = 90, seed = 2, progression = 2, secs = 14 })
    local rep = mem.analyse(set, { { path = p, name = "copy" }, { path = other, name = "fifth" } })
    local c, f = rep.items[1], rep.items[2]
    assert.equal(train[3].path, c.chroma.match)
    assert.is_true(c.chroma.score > 0.98, c.chroma.score)
    assert.is_true(math.abs(c.chroma.lag - 6) <= 1, "lag " .. tostring(c.chroma.lag))
    assert.is_true(c.flagged)
    assert.equal(train[3].path, c.timbre.match)
    assert.is_true(f.chroma.score < c.chroma.score - 0.1, f.chroma.score)
    assert.equal(2, rep.summary.n)
    assert.equal(1, rep.summary.chroma.above)
    assert.near(0.5, rep.summary.chroma.fraction_above, 1e-12)
  end)

  it("lists unreadable files instead of failing", function()
    local bad = dir .. "/bad.wav"
    shell.write(bad, "nope")
    local rep = mem.analyse(set, { { path = bad } })
    assert.equal(0, rep.summary.n)
    assert.equal(1, #rep.skipped)
    assert.matches("bad%.wav", rep.skipped[1].reason)
    local s2 = mem.prepare({ train[1], { path = bad, song = "X" } })
    assert.equal(1, #s2.clips)
    assert.equal(1, #s2.skipped)
  end)

  it("keeps a training clip's features in its cache file and reuses them to the bit", function()
    local cached = {}
    for i, c in ipairs(train) do
      cached[i] = { path = c.path, song = c.song, name = c.name, cache = dir .. "/cache-" .. c.name .. ".safetensors" }
    end
    local first = mem.prepare(cached)
    assert.equal(0, first.cached)
    for _, c in ipairs(cached) do assert.is_truthy(mem.load_features(c.cache)) end
    -- the audio is no longer needed: the cached features stand for it
    local moved = {}
    for i, c in ipairs(cached) do moved[i] = { path = c.path, song = c.song, name = c.name, cache = c.cache } end
    local second = mem.prepare(moved)
    assert.equal(#train, second.cached)
    assert.same(set.thresholds, second.thresholds)
    for i, f in ipairs(second.clips) do
      local g = set.clips[i]
      assert.equal(g.n, f.n)
      assert.equal(g.beat_sync, f.beat_sync)
      for k = 0, g.n * 12 - 1 do assert.equal(g.chroma[k], f.chroma[k]) end
      assert.same(g.timbre, f.timbre)
    end
    -- a file of another features version, or a broken one, is recomputed (and rewritten)
    local old = mem.FEATURES_VERSION
    mem.FEATURES_VERSION = old + 1
    assert.is_nil(mem.load_features(cached[1].cache))
    mem.FEATURES_VERSION = old
    shell.write(cached[2].cache, "not safetensors")
    assert.is_nil(mem.load_features(cached[2].cache))
    local third = mem.prepare(cached)
    assert.equal(#train - 1, third.cached)
    assert.is_truthy(mem.load_features(cached[2].cache))
    -- an item's own features (its audio decoded by the caller) give the decoded item's result
    local f = mem.features(sao.audio.load(train[2].path))
    local a = mem.analyse(set, { { path = train[2].path } })
    local b = mem.analyse(set, { { path = "/nonexistent.wav", features = f } })
    assert.same(a.items[1].chroma.score, b.items[1].chroma.score)
    assert.same(a.items[1].timbre.score, b.items[1].timbre.score)
  end)
end)
