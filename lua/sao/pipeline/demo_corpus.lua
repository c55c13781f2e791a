-- sao.pipeline.demo_corpus — the built-in demo corpus: a few short multi-instrument songs that
-- sao composes itself (no downloads), so that `sao recipes/instrumental.lua` works on a fresh
-- machine. Deterministic: the same bytes on every run, so a re-run finds its work done.
--
--   local demo = require "sao.pipeline.demo_corpus"
--   local paths = demo.write("out/instrumental/demo_midi")   -- <dir>/sao demo/<Song>.mid
--   local song = demo.song(1)                                -- a sao.midi song table
--
-- Each song has sections that change instrumentation and density (intro / verse / chorus /
-- bridge / outro), so the clip planner has real section boundaries to find. The songs differ in
-- tempo, key, metre and style; one has a tempo change.
local midi = require "sao.midi"

local M = {}

M.ARTIST = "sao demo"

-- ---- music helpers --------------------------------------------------------------------------
local MAJOR = { 0, 2, 4, 5, 7, 9, 11 }
local MINOR = { 0, 2, 3, 5, 7, 8, 10 }
local HARMONIC_MINOR = { 0, 2, 3, 5, 7, 8, 11 }     -- raised 7th: a major V chord

-- a tiny deterministic generator (LCG), so melodies are the same on every machine
local function rng(seed)
  local s = seed
  return function(n)
    s = (s * 1103515245 + 12345) % 2147483648
    return math.floor(s / 65536) % n
  end
end

-- pitch of scale degree d (1-based, may exceed 7) in octave `oct` (MIDI octave: C4 = 60)
local function degree_pitch(tonic, scale, d, oct)
  local i = (d - 1) % 7
  local up = math.floor((d - 1) / 7)
  return 12 * (oct + 1) + tonic + scale[i + 1] + 12 * up
end

--- Helpers shared with the trap demo beats (sao.pipeline.demo_beats).
M.rng, M.degree_pitch = rng, degree_pitch

--- Adds the instruments insts[name] (in `names` order) that have notes to song.instruments, their
--- notes sorted by start time, then pitch.
function M.collect(song, insts, names)
  for _, name in ipairs(names) do
    local inst = insts[name]
    if #inst.notes > 0 then
      table.sort(inst.notes, function(a, b)
        if a.start ~= b.start then return a.start < b.start end
        return a.pitch < b.pitch
      end)
      song.instruments[#song.instruments + 1] = inst
    end
  end
end

local function triad(tonic, scale, d, oct)
  return { degree_pitch(tonic, scale, d, oct), degree_pitch(tonic, scale, d + 2, oct),
           degree_pitch(tonic, scale, d + 4, oct) }
end

-- ---- song description -------------------------------------------------------------------------
-- A song: bpm (or tempos = {{bar=, bpm=}...}), metre {num, den}, tonic (pitch class), minor,
-- progression (scale degrees, one per bar, cycled), sections {name, bars, parts = {part = style}}.
M.SPECS = {
  {
    title = "Sunday Drive", bpm = 96, metre = { 4, 4 }, tonic = 7, minor = false,   -- G major
    progression = { 1, 5, 6, 4 },
    instruments = {
      drums = { program = 0, is_drum = true, name = "Drums" },
      bass = { program = 33, name = "Bass" },        -- Electric Bass (finger)
      keys = { program = 4, name = "Keys" },         -- Electric Piano 1
      pad = { program = 48, name = "Strings" },      -- String Ensemble 1
      lead = { program = 73, name = "Flute" },
    },
    sections = {
      { name = "intro", bars = 4, parts = { keys = "block", pad = "whole" } },
      { name = "verse", bars = 8, parts = { drums = "rock", bass = "quarters", keys = "block" } },
      { name = "chorus", bars = 8, parts = { drums = "rock_full", bass = "eighths", keys = "arp",
                                              pad = "whole", lead = "melody" } },
      { name = "verse", bars = 4, parts = { drums = "rock", bass = "quarters", keys = "block" } },
      { name = "outro", bars = 4, parts = { keys = "block", pad = "whole" } },
    },
  },
  {
    title = "Night Circuit", bpm = 128, metre = { 4, 4 }, tonic = 9, minor = true,   -- A minor
    harmonic = true, progression = { 1, 6, 4, 5 },          -- Am F Dm E
    instruments = {
      drums = { program = 0, is_drum = true, name = "Drum Machine" },
      bass = { program = 38, name = "Synth Bass" },  -- Synth Bass 1
      pad = { program = 89, name = "Warm Pad" },     -- Pad 2 (warm)
      lead = { program = 81, name = "Saw Lead" },    -- Lead 2 (sawtooth)
      keys = { program = 5, name = "EP" },           -- Electric Piano 2
    },
    sections = {
      { name = "intro", bars = 8, parts = { pad = "whole", drums = "hats" } },
      { name = "build", bars = 8, parts = { pad = "whole", drums = "four", bass = "eighths" } },
      { name = "drop", bars = 8, parts = { drums = "four_full", bass = "eighths", lead = "melody",
                                           keys = "arp" } },
      { name = "break", bars = 4, parts = { pad = "whole", keys = "block" } },
      { name = "drop", bars = 8, parts = { drums = "four_full", bass = "eighths", lead = "melody",
                                           pad = "whole" } },
    },
  },
  {
    title = "Old Waltz", metre = { 3, 4 }, tonic = 2, minor = true,                    -- D minor
    tempos = { { bar = 1, bpm = 150 }, { bar = 41, bpm = 126 } },
    progression = { 1, 4, 5, 1, 6, 4, 5, 5 },
    instruments = {
      drums = { program = 0, is_drum = true, name = "Brushes" },
      bass = { program = 32, name = "Upright Bass" }, -- Acoustic Bass
      piano = { program = 0, name = "Piano" },        -- Acoustic Grand Piano
      pad = { program = 48, name = "Strings" },
      lead = { program = 71, name = "Clarinet" },
      accordion = { program = 21, name = "Accordion" },
    },
    sections = {
      { name = "intro", bars = 8, parts = { piano = "waltz" } },
      { name = "theme", bars = 16, parts = { piano = "waltz", bass = "waltz", lead = "melody",
                                             drums = "waltz" } },
      { name = "trio", bars = 16, parts = { accordion = "waltz", bass = "waltz", pad = "whole",
                                            drums = "waltz" } },
      { name = "coda", bars = 8, parts = { piano = "block", pad = "whole", lead = "melody" } },
    },
  },
}

-- notes of one part for one bar. beats are in the metre's beat unit; returns {beat, len, pitch, vel}
local function part_bar(style, role, ctx)
  local out = {}
  local num = ctx.num
  local function add(b, len, p, v) out[#out + 1] = { b, len, p, v } end
  local chord = triad(ctx.tonic, ctx.scale, ctx.degree, 4)
  local root = degree_pitch(ctx.tonic, ctx.scale, ctx.degree, 2)
  if role == "drums" then
    local K, S, HH, OH, CR, RIDE = 36, 38, 42, 46, 49, 51
    if ctx.first_bar_of_section and style ~= "hats" then add(0, 0.5, CR, 100) end
    if style == "rock" or style == "rock_full" then
      add(0, 0.25, K, 110); add(2, 0.25, K, 100)
      if style == "rock_full" then add(2.5, 0.25, K, 90) end
      add(1, 0.25, S, 105); add(3, 0.25, S, 110)
      for e = 0, 7 do add(e * 0.5, 0.25, style == "rock_full" and RIDE or HH, e % 2 == 0 and 85 or 60) end
    elseif style == "hats" then
      for e = 0, 7 do add(e * 0.5, 0.25, e % 2 == 1 and OH or HH, e % 2 == 1 and 70 or 50) end
    elseif style == "four" or style == "four_full" then
      for q = 0, 3 do add(q, 0.25, K, 115) end
      add(1, 0.25, S, style == "four_full" and 105 or 80); add(3, 0.25, S, style == "four_full" and 110 or 85)
      for e = 0, 7 do add(e * 0.5 + (style == "four_full" and 0 or 0.5), 0.25,
                          (style == "four_full" and e % 2 == 1) and OH or HH, 75) end
      if style == "four_full" then for s16 = 0, 15 do if s16 % 4 == 3 then add(s16 * 0.25, 0.2, HH, 55) end end end
    elseif style == "waltz" then
      add(0, 0.25, K, 90); add(1, 0.25, 37, 60); add(2, 0.25, 37, 65)     -- side stick
      for q = 0, num - 1 do add(q, 0.25, RIDE, 55) end
    end
  elseif role == "bass" then
    if style == "quarters" then
      for q = 0, num - 1 do add(q, 0.9, q == 2 and root + 7 or root, 95) end
    elseif style == "eighths" then
      for e = 0, 2 * num - 1 do add(e * 0.5, 0.45, (e == 6) and root + 12 or root, e % 2 == 0 and 100 or 80) end
    elseif style == "waltz" then
      add(0, 0.95, root, 100); add(2, 0.9, root + 7, 80)
    end
  elseif style == "block" then
    for _, p in ipairs(chord) do add(0, num - 0.05, p, 80) end
  elseif style == "whole" then
    for _, p in ipairs(chord) do add(0, num, p - 12, 70) end
    add(0, num, chord[1] + 12, 60)
  elseif style == "arp" then
    local seq = { chord[1], chord[2], chord[3], chord[1] + 12 }
    for e = 0, 2 * num - 1 do add(e * 0.5, 0.45, seq[e % 4 + 1], 75 + (e % 2) * 10) end
  elseif style == "waltz" then
    add(0, 0.9, chord[1] - 12, 85)
    for q = 1, num - 1 do for _, p in ipairs(chord) do add(q, 0.8, p, 65) end end
  elseif style == "melody" then
    -- a phrase per bar: notes of the scale, walking from the chord tones, rhythm from the generator
    local r = ctx.rand
    local pos = 0
    local d = ctx.degree + 7 + 2 * r(3)
    while pos < num - 0.01 do
      local len = ({ 0.5, 1, 1, 1.5, 2 })[r(5) + 1]
      if pos + len > num then len = num - pos end
      add(pos, len * 0.95, degree_pitch(ctx.tonic, ctx.scale, d, 4), 90 + r(20))
      pos = pos + len
      d = d + r(5) - 2
      if d < ctx.degree + 4 then d = d + 2 elseif d > ctx.degree + 14 then d = d - 3 end
    end
  end
  return out
end

--- The song table of demo song i (1 .. #M.SPECS).
function M.song(i)
  local spec = assert(M.SPECS[i], "demo_corpus.song: no song " .. tostring(i))
  local num, den = spec.metre[1], spec.metre[2]
  local scale = spec.harmonic and HARMONIC_MINOR or spec.minor and MINOR or MAJOR
  local tempos = spec.tempos or { { bar = 1, bpm = spec.bpm } }
  -- time of a position (bar index 1-based, beat offset in the metre's beat unit)
  local beat_q = 4 / den                          -- quarter notes per beat
  local function time_at(bar, beat)
    local t, b = 0, 1
    local ti = 1
    while true do
      local bpm = tempos[ti].bpm
      local next_bar = tempos[ti + 1] and tempos[ti + 1].bar or math.huge
      local spb = 60 / bpm * beat_q               -- seconds per metre beat
      if bar < next_bar then return t + ((bar - b) * num + beat) * spb end
      t = t + (next_bar - b) * num * spb
      b = next_bar
      ti = ti + 1
    end
  end
  local song = midi.new { bpm = tempos[1].bpm, time_signature = { num, den },
                          key = (spec.tonic + (spec.minor and 12 or 0)), name = spec.title }
  for k = 2, #tempos do
    song.tempos[#song.tempos + 1] = { time = time_at(tempos[k].bar, 0), bpm = tempos[k].bpm }
  end
  local names = {}
  for name in pairs(spec.instruments) do names[#names + 1] = name end
  table.sort(names)
  local insts = {}
  for _, name in ipairs(names) do
    local d = spec.instruments[name]
    insts[name] = { name = d.name, program = d.program, is_drum = d.is_drum or false, notes = {},
                    cc = {}, bends = {} }
  end
  local rand = rng(1000 + i)
  local bar = 1
  for _, sec in ipairs(spec.sections) do
    for sb = 1, sec.bars do
      local degree = spec.progression[(bar - 1) % #spec.progression + 1]
      for _, role in ipairs(names) do
        local style = sec.parts[role]
        if style then
          local ctx = { num = num, tonic = spec.tonic, scale = scale, degree = degree, rand = rand,
                        first_bar_of_section = sb == 1 }
          local kind = (role == "drums" or role == "bass") and role or "pitched"
          for _, n in ipairs(part_bar(style, kind, ctx)) do
            local t0 = time_at(bar, n[1])
            local t1 = time_at(bar, n[1] + n[2])
            local notes = insts[role].notes
            notes[#notes + 1] = { start = t0, stop = t1, pitch = n[3], velocity = math.min(127, n[4]) }
          end
        end
      end
      bar = bar + 1
    end
  end
  M.collect(song, insts, names)
  song.markers = {}
  local b = 1
  for _, sec in ipairs(spec.sections) do
    song.markers[#song.markers + 1] = { time = time_at(b, 0), text = sec.name }
    b = b + sec.bars
  end
  return song
end

--- Writes every demo song under dir/<ARTIST>/<title>.mid (atomically; identical bytes each run).
-- Returns the list of paths.
function M.write(dir)
  local folder = dir .. "/" .. M.ARTIST
  os.execute("mkdir -p '" .. folder:gsub("'", "'\\''") .. "'")
  local paths = {}
  for i, spec in ipairs(M.SPECS) do
    local path = folder .. "/" .. spec.title .. ".mid"
    midi.write(path, M.song(i))
    paths[#paths + 1] = path
  end
  return paths
end

-- The first bars of a song: everything that starts before the first bar line at or after
-- `seconds` (notes are cut there, later events dropped). Songs shorter than that are unchanged.
function M.excerpt(song, seconds)
  local stop = math.max(song.end_time or 0, song.length or 0)
  if stop <= seconds then return song end
  local cut
  for _, t in ipairs(midi.bars(song, { ["until"] = stop })) do
    if t >= seconds then cut = t break end
  end
  if not cut then return song end
  local function before(list)
    local out = {}
    for _, e in ipairs(list or {}) do if (e.time or 0) < cut then out[#out + 1] = e end end
    return out
  end
  local out = {}
  for k, v in pairs(song) do out[k] = v end
  out.tempos, out.time_signatures = before(song.tempos), before(song.time_signatures)
  out.key_signatures, out.markers = before(song.key_signatures), before(song.markers)
  out.lyrics, out.texts, out.cues = before(song.lyrics), before(song.texts), before(song.cues)
  out.instruments = {}
  for _, inst in ipairs(song.instruments or {}) do
    local notes = {}
    for _, n in ipairs(inst.notes) do
      if n.start < cut then
        notes[#notes + 1] = { start = n.start, stop = math.min(n.stop, cut), pitch = n.pitch, velocity = n.velocity }
      end
    end
    if #notes > 0 then
      local c = {}
      for k, v in pairs(inst) do c[k] = v end
      c.notes, c.cc, c.bends = notes, before(inst.cc), before(inst.bends)
      out.instruments[#out.instruments + 1] = c
    end
  end
  out.length = cut
  return out
end

M.DEBIAN_EXCERPT_SECONDS = 90

--- Real MIDI files from Debian, when the package is installed: the game music of
-- planetblupi-music-midi, as excerpts of their first ~90 s (the files loop for 10-30 minutes),
-- written to dir/Planet Blupi/<name>.mid. Nothing happens without the package.
-- Returns the list of paths written.
function M.add_debian_midi(dir, package, seconds)
  package = package or "planetblupi-music-midi"
  seconds = seconds or M.DEBIAN_EXCERPT_SECONDS
  local p = io.popen("dpkg -L " .. package .. " 2>/dev/null")
  local files = {}
  for line in p:lines() do
    if line:lower():match("%.midi?$") then files[#files + 1] = line end
  end
  p:close()
  table.sort(files)
  if #files == 0 then return {} end
  local folder = dir .. "/Planet Blupi"
  os.execute("mkdir -p '" .. folder:gsub("'", "'\\''") .. "'")
  local out = {}
  for _, f in ipairs(files) do
    local dst = folder .. "/" .. f:match("([^/]+)$")
    local ok, song = pcall(midi.read, f)
    if ok then
      midi.write(dst, M.excerpt(song, seconds))
      out[#out + 1] = dst
    end
  end
  return out
end

return M
