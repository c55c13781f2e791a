-- The dataset stage end to end on a tiny corpus (two short songs, a name duplicate, a byte copy and
-- a corrupt file): manifest, clips on bar lines within the window, JSON consistent with the audio,
-- loudness at the target, the peak guard, resume (nothing redone; a killed run loses only the song
-- in flight), parallel workers giving the same bytes, and no temporary files left behind.
-- Renders with FluidSynth and the default GM SoundFont; skipped with a message without them.
local sao = require "sao"
local clips = require "sao.clips"
local ojson = require "sao.ojson"
local songs = require "support.songs"
local dataset = require "sao.pipeline.dataset"

local soundfont = require("sao.synth").default_soundfont()
local have_sf = io.open(soundfont, "rb")
if have_sf then have_sf:close() end

local shell = require "support.shell"
local sleep_ms, sh = shell.sleep_ms, shell.capture

local function lines_of(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then return out end
  for l in f:lines() do if l:match("%S") then out[#out + 1] = l end end
  f:close()
  return out
end

local function manifest(out)
  local t = {}
  for _, l in ipairs(lines_of(out .. "/dataset/manifest.jsonl")) do
    local r = ojson.decode(l)
    t[r.source] = r
  end
  return t
end

local function mtimes(out)
  return sh("cd '" .. out .. "/dataset' && find . -type f ! -name manifest.jsonl -printf '%p %T@ %s\\n' | sort")
end

-- window 8-12 s (target 10) so 20-24 s songs give several clips
local WINDOW = { clip_min = 8, clip_max = 12, clip_target = 10 }
local function opts(out, midi, extra)
  local o = { out = out, midi = midi, quiet = true, jobs = 1 }
  for k, v in pairs(WINDOW) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function make_corpus()
  local d = songs.tmpdir()
  -- Alpha: 12 bars of 4/4 at 120 BPM (24 s), instrumentation changing every 4 bars
  songs.write(d, "Band/Alpha.mid", songs.make { bpm = 120, key = "G major", sections = {
    { bars = 4, parts = { "piano" } }, { bars = 4, parts = { "piano", "drums", "bass" } },
    { bars = 4, parts = { "bass", "lead" } } } })
  -- a copy of Alpha with fewer instruments: the name duplicate rule drops it
  songs.write(d, "Band/Alpha.1.mid", songs.make { bpm = 120, sections = { { bars = 12, parts = { "piano" } } } })
  -- Beta: 10 bars of 3/4 at 90 BPM (20 s)
  local beta = songs.write(d, "Band/Beta.mid", songs.make { bpm = 90, metre = { 3, 4 }, sections = {
    { bars = 10, parts = { "piano", "bass" } } } })
  songs.write_bytes(d, "Other/Beta copy.mid", songs.read_bytes(beta))
  songs.write_bytes(d, "Other/Broken.mid", "MThd\0\0\0\6\0\1\0\1\1\224MTrk\0\0\0\40\0\144\60")
  -- 3 bars (6 s): shorter than any clip, skipped without rendering
  songs.write(d, "Other/Jingle.mid", songs.make { bpm = 120, sections = { { bars = 3, parts = { "piano" } } } })
  return d
end

local describe_or_skip = have_sf and describe or function(name, _)
  describe(name, function()
    pending("no SoundFont at " .. soundfont .. " (apt-get install fluid-soundfont-gm)")
  end)
end

describe_or_skip("dataset stage", function()
  local corpus_dir, out, summary

  setup(function()
    corpus_dir = make_corpus()
    out = songs.tmpdir()
    summary = dataset.run(opts(out, corpus_dir))
  end)

  it("writes one manifest line per source file, with the reason for each one left out", function()
    local m = manifest(out)
    local n = 0
    for _ in pairs(m) do n = n + 1 end
    assert.equal(6, n)
    assert.equal("kept", m["Band/Alpha.mid"].status)
    assert.equal("kept", m["Band/Beta.mid"].status)
    assert.equal("skipped", m["Band/Alpha.1.mid"].status)
    assert.matches("^duplicate of Band/Alpha%.mid", m["Band/Alpha.1.mid"].reason)
    assert.equal("skipped", m["Other/Beta copy.mid"].status)
    assert.equal("same content as Band/Beta.mid", m["Other/Beta copy.mid"].reason)
    assert.equal("failed", m["Other/Broken.mid"].status)
    assert.matches("^cannot parse: .*Broken%.mid", m["Other/Broken.mid"].reason)
    assert.equal("skipped", m["Other/Jingle.mid"].status)
    assert.equal("too-short", m["Other/Jingle.mid"].kind)
    assert.equal("no clip fits the 8-12 s window (the notes last 6.0 s)", m["Other/Jingle.mid"].reason)
    assert.is_nil(m["Other/Jingle.mid"].tracks)       -- decided from the MIDI: nothing rendered
    for _, r in pairs(m) do
      if r.status ~= "kept" then assert.same({}, r.outputs) end
    end
    assert.equal(2, summary.kept_songs)
    assert.equal(3, summary.built)
    assert.equal(2, summary.built_kept)
    assert.equal(1, summary.failed)
    assert.equal(3, summary.skipped)
    assert.same({ ["failed: parse-error"] = 1, ["skipped: same-content"] = 1, ["skipped: duplicate-name"] = 1,
                  ["skipped: too-short"] = 1 }, summary.reasons)
  end)

  it("normalises every track and the mix to the target loudness", function()
    local m = manifest(out)
    for _, src in ipairs { "Band/Alpha.mid", "Band/Beta.mid" } do
      local r = m[src]
      assert.is_true(math.abs(r.mix.lufs - (-12)) <= 0.1, src .. " mix at " .. r.mix.lufs .. " LUFS")
      assert.is_true(r.mix.peak_db <= -1 + 1e-3, "the limiter holds -1 dBFS")
      assert.is_false(r.mix.clipped)
      for _, t in ipairs(r.tracks) do
        assert.is_nil(t.dropped)
        assert.is_true(math.abs(t.lufs - (-12)) <= 0.1, t.name .. " at " .. t.lufs)
      end
    end
    assert.same({ "Grand Piano", "Drums", "Fingered Electric Bass", "Flute" }, m["Band/Alpha.mid"].instruments)
    -- the recorded gain really brings a track to the target: render one again and measure it
    local song = sao.midi.read(corpus_dir .. "/Band/Alpha.mid")
    local t1 = m["Band/Alpha.mid"].tracks[1]
    assert.equal(song.instruments[1].program, t1.program)
    local audio = require("sao.synth").render_instrument(song.instruments[1], { tail = 2 })
    local lufs = sao.audio.loudness(sao.audio.gain(audio, t1.gain_db), 44100)
    assert.is_true(math.abs(lufs - (-12)) <= 0.01, "track 1 at " .. lufs)
  end)

  it("cuts clips on bar lines within the window and writes float WAV + JSON that agree", function()
    local m = manifest(out)
    local sr = 44100
    local nclips = 0
    for _, src in ipairs { "Band/Alpha.mid", "Band/Beta.mid" } do
      local r = m[src]
      local bars = clips.bar_lines(sao.midi.read(corpus_dir .. "/" .. src))
      assert.equal(2 * r.clips, #r.outputs)
      local prev_end = -1
      for _, o in ipairs(r.outputs) do
        if o:match("%.json$") then
          nclips = nclips + 1
          local meta = ojson.read(out .. "/dataset/" .. o)
          for _, k in ipairs { "Song", "Artist", "Tags", "Instruments", "duration_ms", "key", "mode", "tempo",
                               "sections", "path", "start", "duration", "lufs", "bpm_confidence",
                               "key_strength", "source_midi", "render" } do
            if k ~= "bpm_confidence" and k ~= "key_strength" then   -- null without audio analysis
              assert.is_not_nil(meta[k], o .. " lacks " .. k)
            end
          end
          assert.equal(o:gsub("%.json$", ".wav"), meta.path)
          assert.equal(src, meta.source_midi)
          assert.equal("Band", meta.Artist)
          assert.equal(src:match("/(%w+)%.mid$"), meta.Song)
          assert.same({}, meta.Tags)
          assert.equal(-12, meta.render.target_lufs)
          assert.equal("notes", meta.render.mode)
          local info = sao.audio.info(out .. "/dataset/" .. meta.path)
          assert.same({ 44100, 2, "wav", "float" }, { info.sample_rate, info.channels, info.format, info.subtype })
          assert.is_true(math.abs(info.frames / sr - meta.duration) < 1e-4)
          assert.equal(math.floor(info.frames / sr * 1000 + 0.5), meta.duration_ms)
          assert.is_true(meta.duration >= 8 - 1e-9 and meta.duration <= 12 + 1e-9, o .. ": " .. meta.duration .. " s")
          -- the notes start on the bar lines, so no leading silence moved the start
          local on_bar = false
          for _, b in ipairs(bars) do if math.abs(b - meta.start) < 0.011 then on_bar = true end end
          assert.is_true(on_bar, o .. " starts at " .. meta.start .. ", not on a bar line")
          assert.is_true(meta.start >= prev_end - 1e-6, "clips overlap")
          prev_end = meta.start + meta.duration
          -- the recorded loudness is the file's, and near the song's target
          local audio = sao.audio.load(out .. "/dataset/" .. meta.path)
          local lufs = sao.audio.loudness(audio, sr)
          assert.is_true(math.abs(lufs - meta.lufs) < 0.01)
          assert.is_true(math.abs(meta.lufs - (-12)) < 3, o .. " at " .. meta.lufs .. " LUFS")
          assert.is_true(sao.audio.stats(audio).peak <= 10 ^ (-1 / 20) + 1e-4)
          -- sections lie inside the clip
          for _, s in ipairs(meta.sections) do
            assert.is_true(s.start >= 0 and s.start + s.duration <= meta.duration + 1e-3)
          end
        end
      end
    end
    assert.equal(summary.clips, nclips)
    assert.is_true(nclips >= 4)
  end)

  it("takes tempo and key from the file when audio analysis agrees or is not available", function()
    local m = manifest(out)
    local a = m["Band/Alpha.mid"]
    assert.equal(120, a.tempo.midi)
    assert.equal(120, a.tempo.value)
    assert.matches("^midi", a.tempo.source)
    assert.equal("G major", a.key.midi)
    local meta = ojson.read(out .. "/dataset/" .. a.outputs[2])
    assert.equal(120, meta.tempo)
    if not meta.key_audio then       -- no audio key in this build: the signature is used
      assert.equal("G", meta.key)
      assert.equal("Major", meta.mode)
    end
    assert.equal(90, (ojson.read(out .. "/dataset/" .. m["Band/Beta.mid"].outputs[2])).tempo)
  end)

  it("does no work on a second run", function()
    local before, mbefore = mtimes(out), songs.read_bytes(out .. "/dataset/manifest.jsonl")
    local s2 = dataset.run(opts(out, corpus_dir))
    assert.equal(0, s2.built)
    assert.equal(3, s2.done_before)                   -- Alpha, Beta, and Jingle (too short)
    assert.equal(summary.clips, s2.clips)
    assert.equal(before, mtimes(out))
    assert.equal(mbefore, songs.read_bytes(out .. "/dataset/manifest.jsonl"))
  end)

  it("rebuilds a song whose outputs went missing", function()
    local m = manifest(out)
    os.remove(out .. "/dataset/" .. m["Band/Beta.mid"].outputs[1])
    local s3 = dataset.run(opts(out, corpus_dir))
    assert.equal(1, s3.built)
    assert.equal(2, s3.done_before)
    local m2 = manifest(out)
    assert.same(m["Band/Beta.mid"].outputs, m2["Band/Beta.mid"].outputs)
  end)

  it("leaves no temporary files or journals", function()
    assert.equal("", sh("find '" .. out .. "' -name '*.tmp*' -o -name '*journal*' -o -name '.work-*'"))
  end)

  it("builds the same audio with parallel workers", function()
    local out2 = songs.tmpdir()
    local s = dataset.run(opts(out2, corpus_dir, { jobs = 2 }))
    assert.equal(2, s.built_kept)
    assert.equal(summary.clips, s.clips)
    local list = sh("cd '" .. out .. "/dataset' && find clips -type f | sort")
    assert.equal(list, sh("cd '" .. out2 .. "/dataset' && find clips -type f | sort"))
    -- the samples are identical (the files' bytes differ: libsndfile stamps a time in the PEAK chunk)
    for f in list:gmatch("[^\n]+%.wav") do
      local a = sao.audio.load(out .. "/dataset/" .. f)
      local b = sao.audio.load(out2 .. "/dataset/" .. f)
      assert.equal(0, a:maxdiff(b), f)
    end
    assert.equal("", sh("find '" .. out2 .. "' -name '*.tmp*' -o -name '*journal*' -o -name '.work-*'"))
  end)

  it("resumes a killed run, losing only the song in flight", function()
    local out3 = songs.tmpdir()
    local code = ("require('sao.pipeline.dataset').run{out=%q, midi=%q, quiet=true, jobs=1, clip_min=8, clip_max=12, clip_target=10}")
                 :format(out3, corpus_dir)
    local log = out3 .. ".log"
    local pid = tonumber(sh("./sao -e \"" .. code:gsub('"', '\\"') .. "\" >" .. log .. " 2>&1 & echo $!"))
    local journal = out3 .. "/dataset/manifest.journal.jsonl"
    local function alive()
      local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
      return r == 0 or r == true
    end
    while #lines_of(journal) < 1 and alive() do sleep_ms(5) end
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    sleep_ms(100)
    assert.equal(1, #lines_of(journal), "the child was not killed after its first song; it said: " ..
                 songs.read_bytes(log))
    assert.is_nil(io.open(out3 .. "/dataset/manifest.jsonl", "rb"))
    local first = ojson.decode(lines_of(journal)[1])
    local kept_before = sh("cd '" .. out3 .. "/dataset' && find '" .. first.outputs[1]:match("^(.*)/") ..
                           "' -type f -printf '%p %T@\\n' | sort")
    local s = dataset.run(opts(out3, corpus_dir))
    assert.equal(2, s.built)                          -- Beta and Jingle; Alpha was done
    assert.equal(1, s.done_before)
    assert.equal(summary.clips, s.clips)
    assert.equal(kept_before, sh("cd '" .. out3 .. "/dataset' && find '" .. first.outputs[1]:match("^(.*)/") ..
                                 "' -type f -printf '%p %T@\\n' | sort"))
    assert.equal("", sh("find '" .. out3 .. "' -name '*.tmp*' -o -name '*journal*'"))
    local m = manifest(out3)
    assert.equal("kept", m["Band/Alpha.mid"].status)
    assert.equal("kept", m["Band/Beta.mid"].status)
  end)

  it("reports a mix that would clip instead of writing it silently (peak_guard = report)", function()
    local one = songs.tmpdir()
    songs.write_bytes(one, "Band/Beta.mid", songs.read_bytes(corpus_dir .. "/Band/Beta.mid"))
    local o4 = songs.tmpdir()
    local s = dataset.run(opts(o4, one, { peak_guard = "report", target_lufs = -2 }))
    assert.equal(1, s.built)
    local r = manifest(o4)["Band/Beta.mid"]
    assert.equal("kept", r.status)
    assert.is_true(r.mix.would_clip)
    assert.is_true(r.mix.clipped)
    assert.matches("^WARNING: the mix has samples above full scale", r.reason)
    -- the float file keeps the peaks (nothing hard-clipped), and the manifest says so
    local meta = ojson.read(o4 .. "/dataset/" .. r.outputs[2])
    assert.is_true(meta.peak_db > 0)
  end)

  it("splits the corpus into shards whose manifests add up to the whole", function()
    local seen, built = {}, 0
    for i = 1, 3 do
      local o5 = songs.tmpdir()
      local s = dataset.run(opts(o5, corpus_dir, { shard = i .. "/3" }))
      built = built + s.built
      for _, l in ipairs(lines_of(o5 .. "/dataset/manifest." .. i .. "of3.jsonl")) do
        local src = ojson.decode(l).source
        assert.is_nil(seen[src], src .. " in two shards")
        seen[src] = true
      end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(6, n)
    assert.equal(3, built)
  end)

  it("refuses bad options with a message that says what to do", function()
    assert.has_error(function() dataset.config { mix = "median" } end,
      "dataset: mix must be one of mean, sum, got 'median'")
    assert.has_error(function() dataset.config { clip_min = "40", clip_max = "30" } end,
      "dataset: clip_min (40 s) is larger than clip_max (30 s)")
    assert.has_error(function() dataset.config { target_lufs = "loud" } end,
      "dataset: --target-lufs expects a number, got 'loud'")
    local cfg = dataset.config { target_lufs = "-14", jobs = "2", retry_failed = "1", shard = "3/4" }
    assert.same({ -14, 2, true, 3, 4 }, { cfg.target_lufs, cfg.jobs, cfg.retry_failed, cfg.shard_i, cfg.shard_n })
  end)

  it("offers the building blocks as sao.data.midi", function()
    local M = sao.data.midi
    assert.equal(sao.midi.read, M.read)
    assert.equal(clips.plan, M.clips)
    assert.equal(dataset.run, M.build)
    local path = songs.write(songs.tmpdir(), "A/B.mid", songs.make { bpm = 120, sections = {
      { bars = 2, parts = { "piano", "drums" } } } })
    local song = M.read(path)
    assert.equal(2, #song.instruments)
    local a = M.render(song.instruments[1], { ["until"] = song.end_time })
    assert.equal(2, a:size(1))
    assert.is_true(a:size(2) >= math.floor(song.end_time * 44100))
    assert.error_matches(function() return M.nope end, "sao.data.midi has no 'nope'")
  end)

  it("names a missing SoundFont before doing any work", function()
    local o = songs.tmpdir()
    assert.error_matches(function() dataset.run(opts(o, corpus_dir, { soundfont = "/nonexistent/x.sf2" })) end,
                         "SoundFont /nonexistent/x.sf2 not found")
  end)

  it("relates audio and MIDI keys", function()
    assert.equal("same", dataset.key_relation(9, true, 9, true))
    assert.equal("relative", dataset.key_relation(0, false, 9, true))     -- C major / A minor
    assert.equal("relative", dataset.key_relation(9, true, 0, false))
    assert.equal("parallel", dataset.key_relation(0, true, 0, false))
    assert.equal("fifth", dataset.key_relation(7, false, 0, false))
    assert.equal("different", dataset.key_relation(1, false, 0, false))
    assert.is_nil(dataset.key_relation(nil, false, 0, false))
  end)

  it("relates audio and MIDI tempi", function()
    assert.equal("same", dataset.tempo_relation(121, 120))
    assert.equal("double", dataset.tempo_relation(240.5, 120))
    assert.equal("half", dataset.tempo_relation(61, 120))
    assert.equal("different", dataset.tempo_relation(100, 120))
    assert.is_nil(dataset.tempo_relation(nil, 120))
  end)
end)
