-- sao.pipeline.demo_beats — the built-in demo beats of the trap recipe: four instrumental hip-hop
-- beats (trap, lo-fi boom bap, drill, brass trap) that sao composes and renders itself (MIDI ->
-- FluidSynth with the GM SoundFont -> -14 LUFS -> 16-bit WAV), so that the recipe runs on a fresh
-- machine with no downloads. Deterministic: the same song tables and the same WAV bytes on every
-- run (own LCG, no math.random; FluidSynth renders are deterministic, docs/midi.md), so a re-run
-- finds its work done.
--
--   local demo = require "sao.pipeline.demo_beats"
--   local beats = demo.write("out/trap/demo_beats")     -- {{path=, title=, bpm=, key=, mode=, seconds=}...}
--   local song = demo.song(1)                           -- the sao.midi song table of "Night Shift"
--   local audio, report = demo.render(1)                -- f32 [2, S] at 44.1 kHz, normalised
--
-- Each beat is 60-75 s long and has sections that change the parts: an intro without drums, hooks
-- with every part, verses with fewer parts, an outro without drums; so two 20-35 s segments of one
-- beat sound different. The grid is 16ths: a note is {pos, len} in 16ths of its bar (positions may
-- be fractional: triplet and 32nd hi-hat rolls); swung beats delay the off-beat 8ths.
local midi = require "sao.midi"
local demo_corpus = require "sao.pipeline.demo_corpus"
local fs = require "sao.fs"
local progress = require "sao.progress"

local M = {}

M.SAMPLE_RATE = 44100
M.TARGET_LUFS = -14
M.CEILING_DB = -1        -- the limiter's ceiling after loudness normalisation (16-bit WAV headroom)
M.TAIL = 1.5             -- seconds of release kept after the last bar (part of each WAV)

-- ---- music helpers --------------------------------------------------------------------------------
local NATURAL = { 0, 2, 3, 5, 7, 8, 10 }            -- natural minor
local HARMONIC = { 0, 2, 3, 5, 7, 8, 11 }           -- harmonic minor: a major V, the leading tone

-- a tiny deterministic generator (LCG): r(n) -> 0 .. n-1; the pitch of scale degree d (1-based;
-- may be below 1 or above 7) in MIDI octave oct (C4 = 60): the demo corpus's own
local rng, degree_pitch = demo_corpus.rng, demo_corpus.degree_pitch

-- ---- the beats --------------------------------------------------------------------------------------
-- A beat: title, style, bpm, tonic (pitch class, C = 0), key (its name), mode, major_v (V is major:
-- harmonic minor over it), swing (16ths the off-beat 8ths are late), seed, progression (chord
-- degrees, one per bar, cycled), instruments (role -> {program, name, is_drum, octave}; the roles
-- render in this order: drums, bass, then the rest sorted), sections {name, bars, parts = {role =
-- style}}. Part styles: see part_bar.
M.SPECS = {
  {
    title = "Night Shift", style = "trap", bpm = 140, tonic = 6, key = "F#", mode = "minor",
    major_v = true, seed = 101, progression = { 1, 1, 6, 5 },            -- F#m F#m D C#
    instruments = {
      drums = { program = 25, is_drum = true, name = "808 Kit" },        -- TR-808 kit
      bass = { program = 38, name = "808" },                             -- Synth Bass 1
      bells = { program = 14, name = "Bells", octave = 5 },              -- Tubular Bells
      piano = { program = 0, name = "Piano", octave = 4 },               -- Acoustic Grand Piano
      choir = { program = 52, name = "Choir", octave = 4 },              -- Choir Aahs
    },
    sections = {
      { name = "intro", bars = 4, parts = { piano = "motif", choir = "pad" } },
      { name = "hook", bars = 8, parts = { drums = "trap", bass = "808", bells = "motif", piano = "motif",
                                           choir = "pad" } },
      { name = "verse", bars = 8, parts = { drums = "trap_light", bass = "808", piano = "motif_sparse" } },
      { name = "break", bars = 2, parts = { drums = "hats", choir = "pad", bells = "motif_sparse" } },
      { name = "hook", bars = 8, parts = { drums = "trap", bass = "808", bells = "motif", piano = "motif",
                                           choir = "pad" } },
      { name = "verse", bars = 4, parts = { drums = "trap_light", bass = "808", piano = "motif_sparse" } },
      { name = "outro", bars = 4, parts = { bells = "motif", choir = "pad" } },
    },
  },
  {
    title = "Rain Tape", style = "lofi", bpm = 86, tonic = 2, key = "D", mode = "minor",
    major_v = false, swing = 0.36, seed = 202, progression = { 1, 4, 1, 5 },  -- Dm7 Gm7 Dm7 Am7
    instruments = {
      drums = { program = 8, is_drum = true, name = "Kit" },             -- Room Kit
      bass = { program = 32, name = "Upright Bass" },                    -- Acoustic Bass
      keys = { program = 4, name = "Electric Piano", octave = 4 },       -- Electric Piano 1
      vibes = { program = 11, name = "Vibraphone", octave = 5 },
    },
    sections = {
      { name = "intro", bars = 4, parts = { keys = "ep" } },
      { name = "hook", bars = 8, parts = { drums = "boombap", bass = "walk", keys = "ep", vibes = "motif" } },
      { name = "verse", bars = 8, parts = { drums = "boombap_light", bass = "walk", keys = "ep" } },
      { name = "outro", bars = 4, parts = { keys = "ep", vibes = "motif_sparse" } },
    },
  },
  {
    title = "Block Party", style = "drill", bpm = 142, tonic = 7, key = "G", mode = "minor",
    major_v = true, seed = 303, progression = { 1, 6, 4, 5 },            -- Gm Eb Cm D
    instruments = {
      drums = { program = 25, is_drum = true, name = "808 Kit" },
      bass = { program = 39, name = "808" },                             -- Synth Bass 2
      strings = { program = 49, name = "Strings", octave = 4 },          -- Slow Strings
      flute = { program = 73, name = "Flute", octave = 5 },
    },
    sections = {
      { name = "intro", bars = 4, parts = { strings = "pad", flute = "motif_sparse" } },
      { name = "hook", bars = 8, parts = { drums = "drill", bass = "808_slide", strings = "pad", flute = "motif" } },
      { name = "verse", bars = 8, parts = { drums = "drill_light", bass = "808_slide", strings = "stabs" } },
      { name = "break", bars = 2, parts = { drums = "hats", strings = "pad" } },
      { name = "hook", bars = 8, parts = { drums = "drill", bass = "808_slide", strings = "pad", flute = "motif" } },
      { name = "verse", bars = 4, parts = { drums = "drill_light", bass = "808_slide", strings = "stabs" } },
      { name = "outro", bars = 4, parts = { strings = "pad", flute = "motif" } },
    },
  },
  {
    title = "Gold Chains", style = "trap", bpm = 150, tonic = 0, key = "C", mode = "minor",
    major_v = true, seed = 404, progression = { 1, 7, 6, 5 },            -- Cm Bb Ab G
    instruments = {
      drums = { program = 25, is_drum = true, name = "808 Kit" },
      bass = { program = 39, name = "808" },                             -- Synth Bass 2
      brass = { program = 61, name = "Brass", octave = 4 },              -- Brass Section
      lead = { program = 81, name = "Saw Lead", octave = 5 },            -- Lead 2 (sawtooth)
      piano = { program = 0, name = "Piano", octave = 4 },
      pad = { program = 89, name = "Warm Pad", octave = 3 },             -- Pad 2 (warm)
    },
    sections = {
      { name = "intro", bars = 4, parts = { piano = "chords", pad = "pad" } },
      { name = "hook", bars = 8, parts = { drums = "trap", bass = "808", brass = "stabs", piano = "chords",
                                           pad = "pad" } },
      { name = "verse", bars = 8, parts = { drums = "trap_light", bass = "808", piano = "chords" } },
      { name = "hook", bars = 8, parts = { drums = "trap", bass = "808", brass = "stabs", lead = "motif",
                                           pad = "pad" } },
      { name = "bridge", bars = 4, parts = { pad = "pad", lead = "motif_sparse" } },
      { name = "hook", bars = 4, parts = { drums = "trap", bass = "808", brass = "stabs", lead = "motif" } },
      { name = "outro", bars = 4, parts = { piano = "chords", pad = "pad" } },
    },
  },
}

-- kick patterns (16th positions in a bar) by groove; the 808 bass plays on the kicks
local KICKS = {
  trap = { { 0, 10 }, { 0, 3, 10 }, { 0, 7, 10 }, { 0, 6, 11, 14 }, { 0, 3, 11 } },
  drill = { { 0, 11 }, { 0, 3, 14 }, { 0, 10, 13 }, { 0, 6, 11 } },
  lofi = { { 0, 7, 10 }, { 0, 10, 11 }, { 0, 3, 10 }, { 0, 7, 9 } },
}

-- drill hi-hats: triplet 8ths (12 slots a bar), which of them sound
local DRILL_HATS = {
  { 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1 },
  { 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0 },
}

-- GM drum keys
local KICK, RIM, SNARE, CLAP, SNARE2, HAT, OPEN_HAT, CRASH = 36, 37, 38, 39, 40, 42, 46, 49

-- A two-bar melody loop in chord-relative scale steps: {bar, pos, len, step} (16ths; step 0 = the
-- chord's root, 2 its third, 4 its fifth, 7 the octave). Strong positions take chord tones; the
-- loop ends on the root or the fifth.
local RHYTHMS = {
  { 0, 3, 6, 8, 11, 14 }, { 0, 2, 4, 6, 10, 12 }, { 0, 3, 6, 10, 12 }, { 0, 4, 6, 8, 12, 14 },
  { 0, 3, 6, 9, 12 },
}
local function make_motif(r)
  local out = {}
  local prev = 4
  for bar = 1, 2 do
    local rh = RHYTHMS[r(#RHYTHMS) + 1]
    for k, pos in ipairs(rh) do
      local step
      if bar == 2 and k == #rh then step = ({ 0, 4, 7 })[r(3) + 1]
      elseif pos % 4 == 0 then step = ({ 0, 2, 4, 7, 4, 2 })[r(6) + 1]
      else
        step = prev + ({ -2, -1, 1, 2, -3, 3 })[r(6) + 1]
        if step < -1 then step = step + 3 elseif step > 9 then step = step - 4 end
      end
      local stop = rh[k + 1] or 16
      out[#out + 1] = { bar = bar, pos = pos, len = stop - pos, step = step, accent = pos % 4 == 0 }
      prev = step
    end
  end
  return out
end

-- The notes of one part in one bar: {pos, len, pitch, velocity} in 16ths. ctx: spec, style, role,
-- bar (in the song), sbar (in the section), sec_bars, degree, next_degree, kicks (this bar's kick
-- pattern), motif, octave, r (the beat's generator).
local function part_bar(ctx)
  local out = {}
  local function add(pos, len, pitch, vel) out[#out + 1] = { pos, len, pitch, vel } end
  local spec, style, r = ctx.spec, ctx.style, ctx.r
  local tonic = spec.tonic
  local scale = (spec.major_v and ctx.degree == 5) and HARMONIC or NATURAL
  -- chords below the tonic's register from V on, so the parts stay near the tonic
  local center = ctx.degree >= 5 and ctx.degree - 7 or ctx.degree
  local last_of_section = ctx.sbar == ctx.sec_bars

  if ctx.role == "drums" then
    if ctx.sbar == 1 and style ~= "hats" then add(0, 4, CRASH, 100) end
    local function hats_8ths(vel_on, vel_off)
      for p = 0, 14, 2 do add(p, 1, HAT, (p % 4 == 0) and vel_on or vel_off) end
    end
    if style == "trap" or style == "trap_light" then
      for _, p in ipairs(ctx.kicks) do add(p, 2, KICK, p == 0 and 120 or 108) end
      add(8, 2, CLAP, 112); add(8, 2, SNARE, 80)
      local hats = {}
      for p = 0, 14, 2 do hats[p] = true end
      if style == "trap" then
        if ctx.sbar % 2 == 0 then add(6, 2, OPEN_HAT, 72); hats[6] = nil end
        -- rolls on the last beat: 16ths, triplet 16ths, 32nds (every 8th bar)
        local roll = (ctx.sbar % 8 == 0) and "32" or (ctx.sbar % 4 == 0) and "trip" or (ctx.sbar % 2 == 1) and "16" or nil
        if roll then
          hats[12], hats[14] = nil, nil
          local n = roll == "16" and 4 or roll == "trip" and 6 or 8
          for k = 0, n - 1 do add(12 + 4 * k / n, 4 / n * 0.8, HAT, 60 + math.floor(40 * k / n)) end
        end
        if last_of_section then add(14, 1, SNARE, 70); add(15, 1, SNARE, 90) end
      elseif ctx.sbar % 4 == 0 then
        hats[14] = nil
        for k = 0, 3 do add(14 + k * 0.5, 0.4, HAT, 60 + 10 * k) end
      end
      for p = 0, 14, 2 do
        if hats[p] then add(p, 1, HAT, (p % 4 == 0 and 92 or 70) + r(10)) end
      end
    elseif style == "drill" or style == "drill_light" then
      for _, p in ipairs(ctx.kicks) do add(p, 2, KICK, 115) end
      add(8, 2, SNARE, 112); add(8, 2, CLAP, 85)
      if ctx.sbar % 2 == 0 then add(13, 1, SNARE, 96) else add(3, 1, SNARE2, 60) end
      local mask = DRILL_HATS[(ctx.sbar - 1) % 2 + 1]
      for k = 0, 11 do
        if mask[k + 1] == 1 and (style == "drill" or k % 3 == 0) then
          add(k * 4 / 3, 1, HAT, (k % 3 == 0 and 88 or 66) + r(10))
        end
      end
      if style == "drill" and ctx.sbar % 4 == 0 then
        for k = 0, 5 do add(12 + k * 2 / 3, 0.5, HAT, 58 + 6 * k) end
      end
    elseif style == "boombap" or style == "boombap_light" then
      if style == "boombap" then
        for _, p in ipairs(ctx.kicks) do add(p, 2, KICK, p == 0 and 112 or 96) end
        add(4, 2, SNARE, 108); add(12, 2, SNARE, 112)
        if ctx.sbar % 2 == 0 then add(15, 1, SNARE, 42) end
        for p = 0, 14, 2 do
          if p == 14 and ctx.sbar % 4 == 0 then add(p, 2, OPEN_HAT, 70) else add(p, 1, HAT, (p % 4 == 0 and 82 or 58) + r(8)) end
        end
      else
        add(0, 2, KICK, 100); add(10, 2, KICK, 86)
        add(4, 2, RIM, 92); add(12, 2, RIM, 96)
        hats_8ths(66, 46)
      end
    elseif style == "hats" then
      hats_8ths(76, 56)
      if ctx.sbar == ctx.sec_bars then for k = 0, 7 do add(8 + k, 1, SNARE, 50 + 8 * k) end end
    else
      error("demo_beats: unknown drum style " .. tostring(style))
    end

  elseif ctx.role == "bass" then
    -- the root below the tonic's register (28..39 for an 808: 41-78 Hz; 36..47 for an upright)
    local low = style == "walk" and 36 or 28
    local base = low + (tonic - low) % 12
    local function root_of(deg)
      local off = NATURAL[(deg - 1) % 7 + 1]
      if off >= 7 then off = off - 12 end
      return base + off
    end
    local root, next_root = root_of(ctx.degree), root_of(ctx.next_degree)
    if style == "808" or style == "808_slide" then
      local k = ctx.kicks
      for i, p in ipairs(k) do
        local stop = k[i + 1] or 16
        local pitch = root
        if style == "808_slide" and i == 2 and ctx.sbar % 2 == 0 then pitch = root + 12 end
        if i == #k and style == "808" and ctx.sbar % 4 == 0 and stop - p > 2 then
          -- an octave slide at the end of every 4th bar: short notes up and back
          add(p, stop - p - 2, pitch, 112); add(stop - 2, 1, root + 12, 100); add(stop - 1, 1, root + 7, 92)
        elseif i == #k and style == "808_slide" and next_root ~= root and stop - p > 2 then
          -- a glide into the next bar's root: 32nd steps from a tone away
          local dir = next_root > root and 1 or -1
          add(p, stop - p - 1, pitch, 112)
          add(stop - 1, 0.5, next_root - 2 * dir, 96); add(stop - 0.5, 0.5, next_root - dir, 96)
        else
          add(p, stop - p, pitch, 115)
        end
      end
    elseif style == "walk" then
      local fifth = root + 7
      if fifth > 50 then fifth = fifth - 12 end
      add(0, 5, root, 100); add(6, 2, fifth, 84); add(8, 3, root, 94)
      add(12, 2, root + (ctx.sbar % 2 == 0 and 12 or 10), 80)
      add(14, 2, next_root + (next_root > root and -1 or 1), 84)
    else
      error("demo_beats: unknown bass style " .. tostring(style))
    end

  else
    local oct = ctx.octave or 4
    if style == "motif" or style == "motif_sparse" then
      local half = (ctx.bar - 1) % 2 + 1
      for _, n in ipairs(ctx.motif) do
        if n.bar == half and (style == "motif" or n.accent) then
          local len = style == "motif" and n.len or math.max(n.len, 4)
          add(n.pos, len, degree_pitch(tonic, scale, center + n.step, oct), (n.accent and 100 or 84) + r(8))
        end
      end
    elseif style == "pad" then
      -- the triad in close position, the root doubled an octave below
      for k = 0, 2 do add(0, 16, degree_pitch(tonic, scale, center + 2 * k, oct), 66) end
      add(0, 16, degree_pitch(tonic, scale, center, oct - 1), 60)
    elseif style == "chords" then
      -- block chords on 1 and the "and" of 3, the root in the left hand
      for _, h in ipairs { { 0, 10, 82 }, { 10, 6, 70 } } do
        for k = 0, 2 do add(h[1], h[2], degree_pitch(tonic, scale, center + 2 * k, oct), h[3]) end
        add(h[1], h[2], degree_pitch(tonic, scale, center, oct - 1), h[3] + 4)
      end
    elseif style == "ep" then
      -- seventh chords, a lazy comp: long on 1, a push on the "and" of 2, a hit on 3
      local rhythm = ctx.sbar % 2 == 1 and { { 0, 6, 78 }, { 6, 4, 60 }, { 10, 6, 66 } }
                                       or { { 0, 8, 76 }, { 11, 5, 64 } }
      for _, h in ipairs(rhythm) do
        for k = 0, 3 do add(h[1], h[2], degree_pitch(tonic, scale, center + 2 * k, oct - (k == 0 and 1 or 0)), h[3] + r(6)) end
      end
    elseif style == "stabs" then
      -- short chord hits on a syncopated rhythm
      local rhythm = ctx.sbar % 2 == 1 and { 0, 3, 6, 10 } or { 0, 3, 8, 12, 14 }
      for i, p in ipairs(rhythm) do
        for k = 0, 2 do add(p, 1.5, degree_pitch(tonic, scale, center + 2 * k, oct), (i == 1 and 104 or 90) + r(6)) end
      end
    else
      error("demo_beats: unknown part style " .. tostring(style))
    end
  end
  return out
end

local function check_index(i, who)
  local spec = M.SPECS[i]
  if not spec then
    error(("sao.pipeline.demo_beats.%s: no beat %s (1 .. %d)"):format(who, tostring(i), #M.SPECS), 3)
  end
  return spec
end

local function total_bars(spec)
  local n = 0
  for _, sec in ipairs(spec.sections) do n = n + sec.bars end
  return n
end

--- Seconds of music in beat i (its bars), without the release tail.
function M.music_seconds(i)
  local spec = check_index(i, "music_seconds")
  return total_bars(spec) * 4 * 60 / spec.bpm
end

--- Length of beat i's WAV in seconds: its bars + M.TAIL, rounded to whole samples.
function M.seconds(i)
  return M.frames(i) / M.SAMPLE_RATE
end

--- Length of beat i's WAV in samples.
function M.frames(i)
  check_index(i, "frames")
  return math.floor((M.music_seconds(i) + M.TAIL) * M.SAMPLE_RATE + 0.5)
end

--- The song table of demo beat i (1 .. #M.SPECS): one instrument per role (drums first), markers
-- at the sections, song.end_time = the end of the last bar, song.sections = {{name, start, stop,
-- first_bar, bars}...} (seconds; bars 1-based).
function M.song(i)
  local spec = check_index(i, "song")
  local s16 = 60 / spec.bpm / 4                       -- seconds per 16th
  local swing = spec.swing or 0
  local function time_at(bar, pos)                   -- bar 1-based, pos in 16ths
    if swing ~= 0 and pos == math.floor(pos) and pos % 4 == 2 then pos = pos + swing end
    return ((bar - 1) * 16 + pos) * s16
  end
  local key = midi.key_number(spec.key .. (spec.mode == "minor" and " minor" or " major"))
  local song = midi.new { bpm = spec.bpm, time_signature = { 4, 4 }, key = key, name = spec.title }
  local roles = {}
  for role in pairs(spec.instruments) do
    if role ~= "drums" and role ~= "bass" then roles[#roles + 1] = role end
  end
  table.sort(roles)
  if spec.instruments.bass then table.insert(roles, 1, "bass") end
  if spec.instruments.drums then table.insert(roles, 1, "drums") end
  local insts = {}
  for _, role in ipairs(roles) do
    local d = spec.instruments[role]
    insts[role] = { name = d.name, program = d.program, is_drum = d.is_drum or false, notes = {}, cc = {},
                    bends = {} }
  end
  local r = rng(spec.seed)
  local motif = make_motif(r)
  local kick_list = KICKS[spec.style]
  local prog = spec.progression
  song.sections = {}
  local bar = 1
  for _, sec in ipairs(spec.sections) do
    song.sections[#song.sections + 1] = { name = sec.name, start = time_at(bar, 0), first_bar = bar,
                                          bars = sec.bars, stop = time_at(bar + sec.bars, 0) }
    for sb = 1, sec.bars do
      local degree = prog[(bar - 1) % #prog + 1]
      local kicks = kick_list[r(#kick_list) + 1]
      if sb == 1 then kicks = kick_list[1] end           -- a section starts on the plainest pattern
      for _, role in ipairs(roles) do
        local style = sec.parts[role]
        if style then
          local ctx = { spec = spec, style = style, role = role, bar = bar, sbar = sb, sec_bars = sec.bars,
                        degree = degree, next_degree = prog[bar % #prog + 1], kicks = kicks, motif = motif,
                        octave = spec.instruments[role].octave, r = r }
          local notes = insts[role].notes
          for _, n in ipairs(part_bar(ctx)) do
            local t0 = time_at(bar, n[1])
            notes[#notes + 1] = { start = t0, stop = math.max(t0 + 0.01, time_at(bar, n[1] + n[2]) - 0.005),
                                  pitch = n[3], velocity = math.max(1, math.min(127, n[4])) }
          end
        end
      end
      bar = bar + 1
    end
  end
  demo_corpus.collect(song, insts, roles)
  for _, s in ipairs(song.sections) do song.markers[#song.markers + 1] = { time = s.start, text = s.name } end
  song.end_time = time_at(bar, 0)
  return song
end

--- Renders beat i: f32 [2, S] at M.SAMPLE_RATE, exactly M.frames(i) long, normalised to
-- M.TARGET_LUFS with a limiter at M.CEILING_DB. Returns the audio and the normalize report.
-- opts: synth options (sao.synth.render_mix; sample_rate is always M.SAMPLE_RATE).
function M.render(i, opts)
  check_index(i, "render")
  local synth, audio = require "sao.synth", require "sao.audio"
  local o = setmetatable({ sample_rate = M.SAMPLE_RATE, tail = M.TAIL }, { __index = opts or {} })
  local raw = synth.render_mix(M.song(i), o)
  local fit = audio.fit(raw, M.frames(i))
  raw:free()
  local nopts = { limit = true, ceiling_db = M.CEILING_DB }
  local out, rep = audio.normalize(fit, M.SAMPLE_RATE, M.TARGET_LUFS, nopts)
  fit:free()
  if rep.lufs_after < M.TARGET_LUFS - 0.25 then
    -- the limiter took more than a quarter LU off (the 808 kicks): a second, smaller pass
    local again, rep2 = audio.normalize(out, M.SAMPLE_RATE, M.TARGET_LUFS, nopts)
    out:free()
    out = again
    rep.lufs_after, rep.peak_after, rep.peak_after_db = rep2.lufs_after, rep2.peak_after, rep2.peak_after_db
    rep.gain_db = rep.gain_db + rep2.gain_db
    rep.limiter_max_gr_db = math.max(rep.limiter_max_gr_db, rep2.limiter_max_gr_db)
  end
  return out, rep
end

local function readme(n)
  local lines = {
    "sao demo beats",
    "",
    "These are sao's synthetic demo beats: instrumental hip-hop beats that sao composes itself",
    "(sao.pipeline.demo_beats, a fixed seed per beat) and renders with FluidSynth and the General",
    "MIDI SoundFont (FluidR3_GM), normalised to " .. M.TARGET_LUFS .. " LUFS, 16-bit " .. M.SAMPLE_RATE .. " Hz WAV.",
    "Nothing was downloaded and no real recording is in here: they exist so that the trap recipe",
    "runs on a fresh machine. Delete a file and the next run renders it again, byte for byte.",
    "",
  }
  for i = 1, n do
    local s = M.SPECS[i]
    local secs = {}
    for _, sec in ipairs(s.sections) do secs[#secs + 1] = ("%s %d"):format(sec.name, sec.bars) end
    lines[#lines + 1] = ("%-12s %-5s %3d BPM  %s %s  %.1f s  bars: %s"):format(s.title, s.style, s.bpm, s.key,
                                                                          s.mode, M.seconds(i), table.concat(secs, ", "))
  end
  return table.concat(lines, "\n") .. "\n"
end

--- Renders the demo beats that are missing under dir (dir/<Title>.wav; each written atomically:
-- a temporary file, then a rename) and writes dir/README.txt. opts: count (the first n beats;
-- default all), quiet (no progress lines on stderr), synth options for render.
-- Returns {{path=, title=, style=, bpm=, key="F#", mode="minor", seconds=, rendered=bool}...}.
function M.write(dir, opts)
  opts = opts or {}
  local n = opts.count or #M.SPECS
  if type(n) ~= "number" or n < 1 or n > #M.SPECS or n ~= math.floor(n) then
    error(("sao.pipeline.demo_beats.write: count must be 1 .. %d, got %s"):format(#M.SPECS, tostring(opts.count)), 2)
  end
  fs.mkdir_p(dir)
  local text = readme(n)
  if fs.read(dir .. "/README.txt") ~= text then fs.write_atomic(dir .. "/README.txt", text) end
  local out = {}
  for i = 1, n do
    local spec = M.SPECS[i]
    local path = dir .. "/" .. spec.title .. ".wav"
    local rendered = false
    if not fs.exists(path) then
      local t0 = progress.now()
      local audio = M.render(i, opts.synth)
      require("sao.audio").save(path, audio, M.SAMPLE_RATE, { subtype = "pcm16" })   -- tmp + rename
      audio:free()
      rendered = true
      if not opts.quiet then
        io.stderr:write(("demo_beats: %s (%s, %d BPM, %s %s, %.1f s) rendered in %.1f s\n"):format(
          path, spec.style, spec.bpm, spec.key, spec.mode, M.seconds(i), progress.now() - t0))
      end
    end
    out[#out + 1] = { path = path, title = spec.title, style = spec.style, bpm = spec.bpm, key = spec.key,
                      mode = spec.mode, seconds = M.seconds(i), rendered = rendered }
  end
  return out
end

return M
