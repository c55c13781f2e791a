-- The trap recipe's dataset stage (sao.pipeline.beats): the segment planner on its own, then the
-- stage on a folder of synthetic beats: segments per beat, their lengths, start times and JSON, a
-- duplicate, an unreadable file and a too-short beat reported while the rest goes on, resume,
-- settings changes, removed beats, shards.
local sao = require "sao"
local beats = require "sao.pipeline.beats"
local ojson = require "sao.ojson"
local fs = require "sao.fs"
local shell = require "support.shell"

local SR = 44100

-- a beat: half-time drums + A minor chords at `bpm`, `secs` long, at rate `sr`, `ch` channels
local function beat(path, bpm, secs, seed, sr, ch)
  sr = sr or SR
  local mg = sao.musicgen
  local d = mg.drums { bpm = bpm, seconds = secs, sr = sr, pattern = "half", seed = seed }
  local c = mg.chords { tonic = 9, minor = true, sr = sr, bpm = bpm, bars = math.ceil(secs * bpm / 240), seed = seed }
  local cf = sao.audio.fit(c, d:size(2))
  local m = sao.audio.mix({ d, cf }, { mode = "mean" })
  if ch == 2 then m = sao.audio.to_channels(m, 2) end
  sao.audio.save(path, m, sr, { subtype = "pcm16" })
end

local function clips_of(out)
  local p = io.popen("cd " .. shell.q(out .. "/dataset") .. " && find clips -name '*.json' | LC_ALL=C sort")
  local l = {}
  for line in p:lines() do l[#l + 1] = line end
  p:close()
  return l
end

local function manifest(out)
  local recs = {}
  for line in io.lines(out .. "/dataset/manifest.jsonl") do
    local r = ojson.decode(line)
    recs[r.source] = r
  end
  return recs
end

describe("beats.plan", function()
  local function rng(seed) return sao.musicgen.rng(seed) end

  it("puts one segment in each equal part, lengths inside the window", function()
    for seed = 1, 20 do
      local p = beats.plan(2, 122, nil, { segments = 2, min = 20, max = 35, rng = rng(seed) })
      assert.equal(2, #p)
      for i, s in ipairs(p) do
        local d = s.stop - s.start
        assert.is_true(d >= 20 - 1e-9 and d <= 35 + 1e-9, "length " .. d)
        assert.is_true(s.start >= 2 + (i - 1) * 60 - 1e-9 and s.stop <= 2 + i * 60 + 1e-9, "inside its part")
        assert.is_false(s.aligned)
      end
    end
  end)

  it("gives fewer segments to a short stretch and none below the minimum", function()
    assert.equal(1, #beats.plan(0, 39.9, nil, { segments = 2, min = 20, max = 35, rng = rng(1) }))
    assert.equal(0, #beats.plan(0, 19.9, nil, { segments = 2, min = 20, max = 35, rng = rng(1) }))
    local p = beats.plan(0, 25, nil, { segments = 2, min = 20, max = 35, rng = rng(3) })
    assert.is_true(p[1].stop - p[1].start <= 25 + 1e-9)
  end)

  it("moves both ends onto beats, still inside the window", function()
    local bt = {}
    for i = 0, 250 do bt[#bt + 1] = 0.25 + i * 60 / 140 end   -- 140 BPM from 0.25 s to the end
    for seed = 1, 10 do
      local p = beats.plan(0, 90, bt, { segments = 2, min = 20, max = 35, rng = rng(seed) })
      for _, s in ipairs(p) do
        assert.is_true(s.aligned)
        local k0 = (s.start - 0.25) / (60 / 140)
        local k1 = (s.stop - 0.25) / (60 / 140)
        assert.near(math.floor(k0 + 0.5), k0, 1e-6)
        assert.near(math.floor(k1 + 0.5), k1, 1e-6)
        assert.is_true(s.stop - s.start >= 20 and s.stop - s.start <= 35)
      end
    end
  end)

  it("is the same for the same generator seed", function()
    local a = beats.plan(0, 100, nil, { segments = 2, min = 20, max = 35, rng = rng(7) })
    local b = beats.plan(0, 100, nil, { segments = 2, min = 20, max = 35, rng = rng(7) })
    assert.same(a, b)
  end)
end)

describe("dataset stage of the trap recipe", function()
  local root = shell.tmpdir()
  local src, out = root .. "/beats", root .. "/out"
  local s1

  setup(function()
    fs.mkdir_p(src .. "/Producer A")
    beat(src .. "/Producer A/Night Shift.wav", 140, 50, 1)          -- two segments
    beat(src .. "/Rain.flac", 90, 18, 2, 48000, 1)                  -- one; 48 kHz mono, resampled
    beat(src .. "/Tiny.wav", 90, 8, 3)                               -- too short
    os.execute("cp " .. shell.q(src .. "/Rain.flac") .. " " .. shell.q(src .. "/Rain copy.flac"))
    shell.write(src .. "/broken.wav", "RIFF not really a wav file")
    s1 = beats.run { out = out, beats = src, segment_min = 10, segment_max = 20, jobs = 2, quiet = true }
  end)
  teardown(function() os.execute("rm -rf " .. shell.q(root)) end)

  it("cuts segments with start times, tempo, key and their confidences", function()
    assert.same({ "clips/Producer A/Night Shift/Night Shift_s1.json", "clips/Producer A/Night Shift/Night Shift_s2.json",
                  "clips/beats/Rain copy/Rain copy_s1.json" }, clips_of(out))
    assert.equal(3, s1.clips)
    assert.equal(2, s1.jobs)   -- built by two worker processes
    local prev_stop = 0
    for i = 1, 2 do
      local m = ojson.read(out .. "/dataset/clips/Producer A/Night Shift/Night Shift_s" .. i .. ".json")
      assert.equal("Night Shift", m.Song)
      assert.equal("Producer A", m.Artist)
      assert.equal("Producer A/Night Shift.wav", m.source)
      assert.equal(i, m.segment)
      assert.equal(2, m.segments)
      assert.is_true(m.duration >= 10 and m.duration <= 20, "duration " .. m.duration)
      assert.is_true(m.start >= prev_stop, "segments do not overlap")
      prev_stop = m.start + m.duration
      assert.equal(math.floor(m.start), m.seconds_start)
      assert.equal(50, m.seconds_total)
      assert.is_true(m.aligned)
      -- the synthetic beat is 140 BPM in A minor
      assert.is_true(sao.analysis.tempo_match(m.bpm, 140, 0.04) or sao.analysis.tempo_match(m.bpm, 70, 0.04), "bpm " .. m.bpm)
      assert.equal(m.tempo, math.floor(m.bpm + 0.5))
      assert.equal("A", m.key)
      assert.equal("Minor", m.mode)
      assert.is_true(m.bpm_confidence > 0 and m.bpm_confidence <= 1)
      assert.is_true(m.key_strength > 0.5 and m.key_strength <= 1)
      assert.same({}, m.Tags)
      -- the WAV: 44.1 kHz stereo, the JSON's duration, the same samples as the source at `start`
      local info = sao.audio.info(out .. "/dataset/" .. m.path)
      assert.equal(SR, info.sample_rate)
      assert.equal(2, info.channels)
      assert.near(m.duration, info.frames / SR, 1e-3)
      local seg = sao.audio.load(out .. "/dataset/" .. m.path)
      local whole = sao.audio.load(src .. "/Producer A/Night Shift.wav")
      local s0 = m.start_sample
      assert.near(m.start, s0 / SR, 1e-3)
      for _, k in ipairs { 0, 1000, 44100, info.frames - 1 } do
        assert.near(whole:get { 1, s0 + k + 1 }, seg:get { 1, k + 1 }, 1e-6)   -- mono source, both channels
        assert.near(whole:get { 1, s0 + k + 1 }, seg:get { 2, k + 1 }, 1e-6)
      end
    end
    local r = ojson.read(out .. "/dataset/clips/beats/Rain copy/Rain copy_s1.json")
    assert.equal(18, r.seconds_total)
    assert.equal(SR, sao.audio.info(out .. "/dataset/" .. r.path).sample_rate)
    assert.equal(2, sao.audio.info(out .. "/dataset/" .. r.path).channels)
  end)

  it("reports duplicates, unreadable and short files in the manifest and goes on", function()
    local m = manifest(out)
    assert.equal("kept", m["Producer A/Night Shift.wav"].status)
    assert.equal("kept", m["Rain copy.flac"].status)
    assert.equal("1 of 2 segments fit", m["Rain copy.flac"].reason)
    assert.equal("skipped", m["Rain.flac"].status)
    assert.equal("same content as Rain copy.flac", m["Rain.flac"].reason)
    assert.equal("too-short", m["Tiny.wav"].kind)
    assert.equal("failed", m["broken.wav"].status)
    assert.matches("unreadable audio: .*broken%.wav", m["broken.wav"].reason)
    assert.equal(1, s1.failed)
    assert.equal(2, s1.skipped)
    assert.equal(48000, m["Rain copy.flac"].sample_rate_in)
    assert.equal(1, m["Rain copy.flac"].channels_in)
  end)

  it("does nothing on a re-run, and redoes what a changed setting touches", function()
    local t = fs.read(out .. "/dataset/clips/Producer A/Night Shift/Night Shift_s1.json")
    local s2 = beats.run { out = out, beats = src, segment_min = 10, segment_max = 20, quiet = true }
    assert.equal(0, s2.built)
    assert.equal(4, s2.done_before)   -- kept, kept, too short, unreadable (the duplicate is not built)
    assert.equal(t, fs.read(out .. "/dataset/clips/Producer A/Night Shift/Night Shift_s1.json"))
    -- a lost output file: that beat is built again
    os.remove(out .. "/dataset/clips/beats/Rain copy/Rain copy_s1.wav")
    local s3 = beats.run { out = out, beats = src, segment_min = 10, segment_max = 20, quiet = true }
    assert.equal(1, s3.built)
    assert.is_true(fs.exists(out .. "/dataset/clips/beats/Rain copy/Rain copy_s1.wav"))
    -- another segment draw: every kept beat again, with other start times
    local s4 = beats.run { out = out, beats = src, segment_min = 10, segment_max = 20, segment_seed = 5, quiet = true }
    assert.equal(4, s4.built)   -- every beat built before (new settings: the short and broken ones too)
    assert.are_not.equal(t, fs.read(out .. "/dataset/clips/Producer A/Night Shift/Night Shift_s1.json"))
  end)

  it("removes the segments of a beat that left the folder", function()
    os.remove(src .. "/Rain copy.flac")
    local s = beats.run { out = out, beats = src, segment_min = 10, segment_max = 20, segment_seed = 5, quiet = true }
    assert.is_false(fs.exists(out .. "/dataset/clips/beats/Rain copy/Rain copy_s1.json"))
    -- Rain.flac is no longer a duplicate: it is built under its own name
    assert.is_true(fs.exists(out .. "/dataset/clips/beats/Rain/Rain_s1.json"))
    assert.equal(3, s.clips)
    assert.same({ "clips/Producer A/Night Shift/Night Shift_s1.json", "clips/Producer A/Night Shift/Night Shift_s2.json",
                  "clips/beats/Rain/Rain_s1.json" }, clips_of(out))
  end)

  it("splits the work into shards with a manifest each", function()
    local o2 = root .. "/sharded"
    local n = 0
    for i = 1, 2 do
      local s = beats.run { out = o2, beats = src, segment_min = 10, segment_max = 20, shard = i .. "/2", jobs = 1,
                            quiet = true }
      assert.equal(4, s.files)   -- Rain copy is gone
      for _ in io.lines(o2 .. "/dataset/manifest." .. i .. "of2.jsonl") do n = n + 1 end
    end
    assert.equal(4, n)   -- every file in exactly one shard's manifest
    assert.equal(3, #clips_of(o2))
  end)

  it("refuses bad settings and a missing folder with the option's name", function()
    assert.has_error(function() beats.run { out = out, beats = root .. "/nope", quiet = true } end,
      "dataset: " .. root .. "/nope: not a folder (give --beats the folder that holds your beats)")
    assert.has_error(function() beats.config { segment_min = "30", segment_max = "20" } end,
      "dataset: segment_min (30 s) must be positive and at most segment_max (20 s)")
    assert.has_error(function() beats.config { align = "bars" } end, "dataset: align must be 'beats' or 'none', got 'bars'")
    assert.has_error(function() beats.config { target_lufs = "loud" } end,
      "dataset: target_lufs must be 'off' or a number, got 'loud'")
    assert.has_error(function() beats.config { segments = "x" } end, "dataset: --segments expects a number, got 'x'")
  end)

  it("reads compressed beats (mp3, ogg) and names them by file", function()
    local d2, o4 = root .. "/compressed", root .. "/compressed_out"
    fs.mkdir_p(d2)
    beat(d2 .. "/tmp.wav", 140, 22, 4, 48000, 2)
    local a, sr = sao.audio.load(d2 .. "/tmp.wav")
    sao.audio.save(d2 .. "/Loop.mp3", a, sr, { format = "mp3" })
    sao.audio.save(d2 .. "/Vol.2.ogg", a, sr, { format = "ogg" })
    os.remove(d2 .. "/tmp.wav")
    local s = beats.run { out = o4, beats = d2, segment_min = 10, segment_max = 20, segments = 1, jobs = 1, quiet = true }
    assert.equal(2, s.kept)
    assert.same({ "clips/beats/Loop/Loop_s1.json", "clips/beats/Vol.2/Vol.2_s1.json" }, clips_of(o4))
    for _, j in ipairs(clips_of(o4)) do
      local m = ojson.read(o4 .. "/dataset/" .. j)
      local info = sao.audio.info(o4 .. "/dataset/" .. m.path)
      assert.same({ SR, 2 }, { info.sample_rate, info.channels })
      assert.is_true(m.duration >= 10 and m.duration <= 20)
      assert.is_true(sao.analysis.tempo_match(m.bpm, 140, 0.04) or sao.analysis.tempo_match(m.bpm, 70, 0.04), m.bpm)
    end
  end)

  it("normalises each segment's loudness when asked", function()
    local o3 = root .. "/loud"
    beats.run { out = o3, beats = src, segment_min = 10, segment_max = 20, target_lufs = "-14", quiet = true }
    for _, j in ipairs(clips_of(o3)) do
      local m = ojson.read(o3 .. "/dataset/" .. j)
      assert.near(-14, m.lufs, 0.1)
      assert.is_true(m.peak_db <= -1 + 0.01)
    end
  end)
end)
