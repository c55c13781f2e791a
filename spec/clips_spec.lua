-- sao.clips: bar grid, novelty/sections from the MIDI, clip plans on bar lines within the length
-- window that prefer section changes, and what the MIDI says about a window (tempo, key, parts).
local sao = require "sao"
local clips = require "sao.clips"
local songs = require "support.songs"

-- a song read back from a file, as the dataset stage sees it
local function roundtrip(song)
  local d = songs.tmpdir()
  local p = songs.write(d, "a/s.mid", song)
  return sao.midi.read(p)
end

local function near(a, b, eps) return math.abs(a - b) <= (eps or 1e-6) end

local function is_bar_line(bars, t)
  for _, b in ipairs(bars) do if near(b, t, 1e-6) then return true end end
  return false
end

describe("clips", function()
  it("puts bar lines on the tempo and time-signature grid, up to the end of the music", function()
    local s = roundtrip(songs.make { bpm = 120, sections = { { bars = 5, parts = { "piano" } } } })
    local bars = clips.bar_lines(s)
    assert.equal(6, #bars)                          -- 5 bars: 6 lines, the last after the last note
    for i, t in ipairs(bars) do assert.is_true(near(t, 2 * (i - 1)), "bar " .. i .. " at " .. t) end

    local w = roundtrip(songs.make { bpm = 90, metre = { 3, 4 }, sections = { { bars = 4, parts = { "bass" } } } })
    local wb = clips.bar_lines(w)
    assert.is_true(near(wb[2], 2.0, 1e-5))          -- 3 beats at 90 BPM (666 667 us per beat in the file)
    assert.equal(5, #wb)
  end)

  it("finds the bar where the instrumentation changes", function()
    local s = roundtrip(songs.make { bpm = 120, sections = {
      { bars = 8, parts = { "piano" } },
      { bars = 8, parts = { "piano", "drums", "bass" } },
      { bars = 8, parts = { "lead", "bass" } } } })
    local plan = clips.plan(s, { min = 10, max = 20, target = 16 })
    local starts = {}
    for _, sec in ipairs(plan.sections) do starts[#starts + 1] = sec.first_bar end
    assert.same({ 1, 9, 17 }, starts)
    -- both changes are the song's novelty peaks; the larger one is scaled to 1
    assert.equal(1, math.max(plan.novelty[9], plan.novelty[17]))
    for b = 2, #plan.bars - 1 do
      if b ~= 9 and b ~= 17 then assert.is_true(plan.novelty[b] < plan.novelty[9]) end
    end
    -- ... and the clips are cut exactly there
    assert.equal(3, #plan.clips)
    for i, c in ipairs(plan.clips) do
      assert.is_true(near(c.start, 16 * (i - 1)), "clip " .. i .. " starts at " .. c.start)
      assert.is_true(near(c.stop, 16 * i))
      assert.equal(8, c.bars)
    end
  end)

  it("cuts on bar lines, within the window, without overlaps", function()
    -- 30 bars at 100 BPM (2.4 s per bar, 72 s), a change every 6 bars
    local secs = {}
    local parts = { { "piano" }, { "piano", "drums" }, { "bass", "lead" }, { "piano", "bass", "drums" }, { "lead" } }
    for i = 1, 5 do secs[i] = { bars = 6, parts = parts[i] } end
    local s = roundtrip(songs.make { bpm = 100, sections = secs })
    for _, w in ipairs { { 20, 35, 30 }, { 8, 12, 10 }, { 4, 47, 30 } } do
      local plan = clips.plan(s, { min = w[1], max = w[2], target = w[3], audio_length = 74 })
      assert.is_true(#plan.clips >= 2)
      local prev_stop = -1
      for _, c in ipairs(plan.clips) do
        local len = c.stop - c.start
        assert.is_true(len >= w[1] - 1e-9 and len <= w[2] + 1e-9, ("clip of %.2f s outside %g-%g"):format(len, w[1], w[2]))
        assert.is_true(is_bar_line(plan.bars, c.start), "start " .. c.start .. " is not a bar line")
        assert.is_true(c.tail or is_bar_line(plan.bars, c.stop), "stop " .. c.stop .. " is not a bar line")
        assert.is_true(c.start >= prev_stop - 1e-9)
        prev_stop = c.stop
      end
      -- most of the music is used (72 s; a 20-35 s window can always take at least 2/3 of it)
      local used = 0
      for _, c in ipairs(plan.clips) do used = used + (c.stop - c.start) end
      assert.is_true(used >= 48, "only " .. used .. " s used")
    end
  end)

  it("lets the last clip run into the release tail", function()
    local s = roundtrip(songs.make { bpm = 120, sections = { { bars = 10, parts = { "piano" } } } })
    local plan = clips.plan(s, { min = 15, max = 25, target = 21, audio_length = 21.5 })
    assert.equal(1, #plan.clips)
    assert.is_true(plan.clips[1].tail)
    assert.is_true(near(plan.clips[1].stop, 21.5))
  end)

  it("ends the last clip where the audio ends, even inside a bar", function()
    local s = roundtrip(songs.make { bpm = 120, sections = { { bars = 10, parts = { "piano" } } } })
    local plan = clips.plan(s, { min = 15, max = 25, target = 20, audio_length = 19.3 })
    assert.equal(1, #plan.clips)
    assert.is_true(plan.clips[1].tail)
    assert.is_true(near(plan.clips[1].stop, 19.3))
    assert.equal(10, plan.clips[1].last_bar)          -- the audio stops inside bar 10
  end)

  it("skips silent bars and says when no clip fits", function()
    -- 3 bars of silence before the music starts (a late first note)
    local s = roundtrip(songs.make { bpm = 120, offset = 6, sections = { { bars = 12, parts = { "piano", "bass" } } } })
    local plan = clips.plan(s, { min = 10, max = 14, target = 12 })
    assert.equal(4, plan.music_start_bar)
    assert.is_true(plan.clips[1].start >= 6 - 1e-9)

    local short = roundtrip(songs.make { bpm = 120, sections = { { bars = 3, parts = { "piano" } } } })
    local p2 = clips.plan(short, { min = 20, max = 35 })
    assert.equal(0, #p2.clips)
    assert.equal("no clip fits the 20-35 s window (6.0 s of music)", p2.reason)
    assert.has_error(function() clips.plan(short, { min = 30, max = 20 }) end)
  end)

  it("reads the tempo, key, metre and instruments of a window from the MIDI", function()
    local song = songs.make { bpm = 120, key = "E minor", sections = {
      { bars = 4, parts = { "piano" } }, { bars = 4, parts = { "bass" } } } }
    song.tempos[2] = { time = 6, bpm = 90 }           -- 120 BPM for 6 s, then 90
    local s = roundtrip(song)
    local bpm, explicit, n = clips.midi_tempo(s, 0, 100)
    assert.is_true(explicit)
    assert.equal(2, n)
    assert.equal(90, bpm)                             -- 90 lasts longer over the whole song
    assert.equal(120, (clips.midi_tempo(s, 0, 5)))
    local k = clips.midi_key(s, 0, 10)
    assert.same({ key = 16, name = "E minor", tonic = "E", mode = "Minor" }, k)
    assert.equal("4/4", clips.midi_time_signature(s, 3))
    assert.same({ 1 }, clips.instruments_in(s, 0, 1))
    -- a file without a tempo event (one note, written by hand): the implicit 120, not explicit
    local d = songs.tmpdir()
    local p = songs.write_bytes(d, "bare.mid", "MThd\0\0\0\6\0\0\0\1\1\224" ..
      "MTrk\0\0\0\13\0\144\60\100\131\96\128\60\64\0\255\47\0")
    local b = sao.midi.read(p)
    assert.equal(1, sao.midi.note_count(b))
    local bb, ex = clips.midi_tempo(b, 0, 10)
    assert.equal(120, bb)
    assert.is_false(ex)
    assert.is_nil(clips.midi_key(b, 0, 10))
  end)
end)
