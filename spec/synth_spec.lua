-- spec/synth_spec.lua — FluidSynth rendering: timing, pitch, length, determinism, drums,
-- "notes" vs "full" mode, the instrument map and its errors.
-- Needs the GM SoundFont (Debian fluid-soundfont-gm, installed by `make deps`); without it the
-- rendering specs are skipped with a message and only the error paths run.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local sao = require "sao"
local synth = sao.synth

local SF = synth.default_soundfont()
local have_sf = io.open(SF, "rb") ~= nil
local SR = 44100

-- magnitude of the DFT of a Hann-windowed x[from, from+N) at frequency f (Goertzel)
local N = 8192
local WIN = {}
for i = 0, N - 1 do WIN[i] = 0.5 - 0.5 * math.cos(2 * math.pi * i / (N - 1)) end
local function goertzel(d, from, f)
  local c = 2 * math.cos(2 * math.pi * f / SR)
  local s1, s2 = 0, 0
  for i = 0, N - 1 do
    local s0 = d[from + i] * WIN[i] + c * s1 - s2
    s2, s1 = s1, s0
  end
  return math.sqrt(s1 * s1 + s2 * s2 - c * s1 * s2)
end

-- the strongest frequency between lo and hi Hz (2 Hz grid, then refined to 0.25 Hz)
local function peak_freq(d, from, lo, hi)
  local best, bf = -1, lo
  for f = lo, hi, 2 do
    local m = goertzel(d, from, f)
    if m > best then best, bf = m, f end
  end
  for f = bf - 2, bf + 2, 0.25 do
    local m = goertzel(d, from, f)
    if m > best then best, bf = m, f end
  end
  return bf
end

local function first_above(d, n, thr)
  for i = 0, n - 1 do if math.abs(d[i]) > thr then return i end end
end

local function identical(a, b)
  if a:size(2) ~= b:size(2) then return false end
  local x, y = a:data(), b:data()
  for i = 0, a:numel() - 1 do if x[i] ~= y[i] then return false end end
  return true
end

local function note(start, stop, pitch, vel) return { start = start, stop = stop, pitch = pitch, velocity = vel or 100 } end

describe("sao.synth", function()
  if not have_sf then
    it("renders (SKIPPED: no SoundFont at " .. SF .. "; run `make deps`)", function() pending("no SoundFont") end)
  end

  it("reports a missing SoundFont clearly", function()
    local map = synth.map { soundfont = "/nonexistent/none.sf2" }
    local ok, err = pcall(synth.render_instrument, { program = 0, notes = { note(0, 1, 60) } }, { map = map })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("synth_load: /nonexistent/none.sf2: SoundFont not found", 1, true), err)
    assert.truthy(tostring(err):find("fluid-soundfont-gm", 1, true))
  end)

  it("reports a file that is not a SoundFont", function()
    local ok, err = pcall(function() synth.new():load("spec/fixtures/midi/rules.mid") end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("cannot load it as a SoundFont", 1, true), err)
  end)

  if not have_sf then return end

  it("starts a note on time and at the right pitch (A4 = 440 Hz)", function()
    -- 80 = square lead: a steady, strong fundamental (FluidR3: 440.00 Hz measured).
    -- Onset: events land on 64-sample blocks, so within 32 samples (0.73 ms) of the exact time.
    for _, start in ipairs { 0.5, 0.5 + 17 / SR, 1.2345 } do
      local a = synth.render_instrument({ program = 80, notes = { note(start, start + 1.0, 69) } })
      local d = a:data()
      local onset = first_above(d, a:size(2), 0)       -- the first non-zero sample
      local expect = start * SR
      assert(math.abs(onset - expect) <= 33, string.format("onset %d, expected %.1f", onset, expect))
      local f = peak_freq(d, math.floor((start + 0.3) * SR), 200, 1000)
      assert(math.abs(f - 440) < 1, "peak at " .. f .. " Hz")
      -- planar stereo: the right channel (row 2) starts on the same sample
      assert.are.equal(onset, first_above(d + a:size(2), a:size(2), 0))
    end
    -- another pitch, another instrument: C5 (523.25 Hz) on a clarinet (522.5 Hz measured)
    local a = synth.render_instrument({ program = 71, notes = { note(0.1, 1.1, 72) } })
    local f = peak_freq(a:data(), math.floor(0.5 * SR), 200, 1000)
    assert(math.abs(f - 523.25) < 2, "peak at " .. f .. " Hz")
  end)

  it("renders until the last event plus the tail", function()
    local inst = { program = 0, notes = { note(0, 0.5, 60), note(0.25, 1.5, 64) } }
    local fixed = synth.render_instrument(inst, { tail = 1.0, silence_db = false })
    assert.are.same({ 2, math.floor(1.5 * SR + 0.5) + SR }, fixed:shape())
    local trimmed = synth.render_instrument(inst, { tail = 3.0 })                 -- stops at silence
    assert.is_true(trimmed:size(2) > 1.5 * SR and trimmed:size(2) <= 4.5 * SR)
    local longer = synth.render_instrument(inst, { tail = 0.5, silence_db = false, ["until"] = 4 })
    assert.are.equal(4.5 * SR, longer:size(2))
    assert.are.equal("f32", fixed:dtype())
  end)

  it("is deterministic: the same input gives the same bits, whatever came before", function()
    local song = sao.midi.read("spec/fixtures/midi/format0.mid")
    local a1 = synth.render_instrument(song.instruments[1])
    local b = synth.render_instrument(song.instruments[2], { mode = "full" })
    local a2 = synth.render_instrument(song.instruments[1])
    local a3 = synth.render_instrument(song.instruments[1], { synth = synth.new() })   -- new handle
    assert.is_true(identical(a1, a2))
    assert.is_true(identical(a1, a3))
    assert.is_false(identical(a1, b))
  end)

  it("renders drums on the percussion bank, with GM kit fallbacks", function()
    local kick = { program = 0, is_drum = true, notes = { note(0.1, 0.2, 36), note(0.6, 0.7, 38), note(1.1, 1.2, 42) } }
    local a, info = synth.render_instrument(kick)
    assert.are.same({ 128, 0, "Standard" }, { info.bank, info.preset, info.preset_name })
    local peak = 0
    local d = a:data()
    for i = 0, a:numel() - 1 do peak = math.max(peak, math.abs(d[i])) end
    assert.is_true(peak > 0.05, "drums are silent: peak " .. peak)
    local onset = first_above(d, a:size(2), 1e-4)
    assert.is_true(math.abs(onset - 0.1 * SR) < 150)
    kick.program = 25
    local _, i808 = synth.render_instrument(kick)
    assert.are.same({ 128, 25, "TR-808" }, { i808.bank, i808.preset, i808.preset_name })
    kick.program = 57                          -- no such kit in FluidR3: the kit below, else Standard
    local _, ifb = synth.render_instrument(kick)
    assert.are.same({ 128, 0 }, { ifb.bank, ifb.preset })
  end)

  it("plays pitch bends and sustain only in full mode", function()
    -- +8191 with the default 2-semitone range: A4 -> ~B4 (493.9 Hz)
    local inst = { program = 80, notes = { note(0.1, 1.5, 69) }, bends = { { time = 0, value = 8191 } },
                   cc = { { time = 0, number = 64, value = 127 } } }
    local notes_only = synth.render_instrument(inst, { mode = "notes", tail = 1.0, silence_db = false })
    local full = synth.render_instrument(inst, { mode = "full", tail = 1.0, silence_db = false })
    local at = math.floor(0.6 * SR)
    local fn = peak_freq(notes_only:data(), at, 200, 1000)
    assert(math.abs(fn - 440) < 1, "unbent peak at " .. fn)
    local fb = peak_freq(full:data(), at, 200, 1000)
    assert(math.abs(fb - 440 * 2 ^ (2 / 12)) < 3, "bent peak at " .. fb)
    -- sustain held to the end, then released: the full render still sounds 0.3 s after note-off
    local function rms(t, from, n)
      local d, s = t:data(), 0
      for i = from, from + n - 1 do s = s + d[i] * d[i] end
      return math.sqrt(s / n)
    end
    local after = math.floor(1.5 * SR)
    assert.is_true(rms(full, after, 2048) > 0.5 * rms(full, at, 2048))
    assert.is_true(synth.render_instrument(inst, { mode = "full" }):size(2) > SR * 1.5)
    assert.has_error(function() synth.render_instrument(inst, { mode = "loud" }) end)
  end)

  it("uses the instrument map: overrides, skips and bad presets", function()
    local map = synth.map()
    map:set(33, false, false)
    local audio, why = synth.render_instrument({ program = 33, notes = { note(0, 1, 40) } }, { map = map })
    assert.is_nil(audio)
    assert.truthy(why:find("no instrument map entry for program 33", 1, true))
    map:set(5, false, { soundfont = SF, bank = 0, preset = 40 })      -- program 5 played by a violin
    local _, info = synth.render_instrument({ program = 5, notes = { note(0, 0.2, 60) } }, { map = map })
    assert.are.same({ 0, 40, SF }, { info.bank, info.preset, info.soundfont })
    map:set(6, false, { bank = 3, preset = 6 })                          -- missing bank: GM bank 0
    local _, i6 = synth.render_instrument({ program = 6, notes = { note(0, 0.2, 60) } }, { map = map })
    assert.are.same({ 0, 6 }, { i6.bank, i6.preset })
    local h = synth.handle()
    local id = h:load(SF)
    local ok, err = pcall(h.render, h, { { inst = { program = 0, notes = { note(0, 1, 60) } }, sfont = id, bank = 7, preset = 99 } })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("has no preset 99 in bank 7", 1, true), err)
    assert.has_error(function() synth.render_instrument({ program = 0, notes = { note(0, 1, 200) } }) end)
  end)

  it("renders every instrument of a song, and a whole-song mix", function()
    local song = sao.midi.read("spec/fixtures/midi/rules.mid")
    local stems = synth.render_song(song, { tail = 0.5, silence_db = false })
    assert.are.equal(#song.instruments, #stems)
    local n = math.floor(song.end_time * SR + 0.5) + math.floor(0.5 * SR + 0.5)
    for i, s in ipairs(stems) do
      assert.are.equal(i, s.index)
      assert.are.same({ 2, n }, s.audio:shape())
      assert.is_string(s.preset_name)
    end
    assert.is_true(stems[3].instrument.is_drum and stems[3].bank == 128)
    local mix = synth.render_mix(song, { tail = 0.5, silence_db = false })
    assert.are.same({ 2, n }, mix:shape())
  end)
end)
