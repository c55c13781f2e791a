-- sao.musicgen — material with a known tempo and key, for the analysis tests and benchmarks:
-- procedural songs (sao.midi song tables, rendered with sao.synth), synthesised signals (click
-- tracks, drum patterns, additive chord progressions, noise) and tiled Sonic Pi loops.
-- Everything is deterministic for a given seed (own LCG; no math.random).
--
--   local song = sao.musicgen.groove{ style = "rock", bpm = 96, bars = 8, seed = 3 }
--   local audio = sao.synth.render_mix(song)                   -- f32 [2, S] at 44.1 kHz
--   local song = sao.musicgen.progression{ tonic = 6, minor = true, program = 48, seed = 1 }
--   local a = sao.musicgen.click_track{ bpm = 120, seconds = 20, sr = 22050 }
--   local a = sao.musicgen.chords{ tonic = 2, minor = false, sr = 22050, seed = 4 }
--   for _, l in ipairs(sao.musicgen.sonic_pi_loops()) do ... l.path, l.bpm ... end
local ffi = require "ffi"
local sao = require "sao"

local M = {}

-- ---- deterministic random numbers --------------------------------------------------------------
--- rng(seed) -> a sao.lcg generator (next, uniform, int, pick, normal)
M.rng = require("sao.lcg").new

-- ---- harmony --------------------------------------------------------------------------------------
local MAJOR = { 0, 2, 4, 5, 7, 9, 11 }
local HARMONIC_MINOR = { 0, 2, 3, 5, 7, 8, 11 }
M.scales = { major = MAJOR, harmonic_minor = HARMONIC_MINOR }

--- Triad on scale degree deg (0-based) of `scale`: semitones above the tonic (may exceed 11).
function M.triad(scale, deg)
  local t = {}
  for i, k in ipairs { 0, 2, 4 } do
    local d = deg + k
    t[i] = scale[d % 7 + 1] + 12 * math.floor(d / 7)
  end
  return t
end

-- Progressions as scale degrees (0 = I). Minor keys use the harmonic minor, so V is major and
-- the leading tone is present (cadences that name the key unambiguously).
M.progressions = {
  major = { { 0, 3, 4, 0 }, { 0, 5, 3, 4 }, { 0, 4, 5, 3 }, { 0, 1, 4, 0 } },   -- I-IV-V-I, I-vi-IV-V, I-V-vi-IV, I-ii-V-I
  minor = { { 0, 3, 4, 0 }, { 0, 5, 3, 4 }, { 0, 3, 4, 5 } },                    -- i-iv-V-i, i-VI-iv-V, i-iv-V-VI
}

local function note(list, start, dur, pitch, vel)
  if start < 0 then start = 0 end
  list[#list + 1] = { start = start, stop = start + dur, pitch = pitch,
                      velocity = math.max(1, math.min(127, math.floor(vel + 0.5))) }
end

local function sort_notes(inst)
  table.sort(inst.notes, function(a, b)
    if a.start ~= b.start then return a.start < b.start end
    return a.pitch < b.pitch
  end)
  return inst
end

local function new_song(bpm, meter, key)
  local song = sao.midi.new { bpm = bpm, time_signature = { meter, 4 } }
  if key then song.key_signatures[1] = { time = 0, key = key, name = sao.midi.key_name(key) } end
  return song
end

-- ---- grooves (tempo material) --------------------------------------------------------------------
M.styles = { "rock", "funk", "four", "ballad", "shuffle", "piano", "arp", "waltz", "swing" }

--- groove{style, bpm, bars = 8, seed = 1, tonic} -> song table at a constant tempo.
--- Styles: rock (kick 1+3, snare 2+4, 8th hats, 8th bass, chords), funk (16th hats below 110 BPM,
--- 8ths above; syncopated kick and bass), four (four-on-the-floor, claps 2+4, off-beat hats and
--- bass), ballad (soft kit, 8th piano arpeggios), shuffle (triplet swing), piano (block chords on
--- every beat), arp (8th-note arpeggios, accented beats), waltz (3/4 oom-pah-pah), swing (ride
--- pattern, walking bass, comping). Timing is humanised by ~4 ms; velocities accent bar starts.
function M.groove(o)
  local style, bpm = o.style, o.bpm
  if not style or not bpm then error("sao.musicgen.groove: style and bpm are required", 2) end
  local rng = M.rng(o.seed or 1)
  local bars = o.bars or 8
  local tonic = o.tonic or rng:int(0, 11)
  local meter = style == "waltz" and 3 or 4
  local T = 60 / bpm
  local song = new_song(bpm, meter, tonic)
  local drums = { name = "drums", program = 0, is_drum = true, notes = {} }
  local bass = { name = "bass", program = rng:pick { 32, 33, 34, 38 }, notes = {} }
  local keys = { name = "chords", program = rng:pick { 0, 4, 24, 48, 16, 19 }, notes = {} }
  local piano = { name = "piano", program = 0, notes = {} }
  local prog = rng:pick(M.progressions.major)
  local function hum() return rng:normal() * 0.004 end
  local base = 48 + tonic
  if base > 53 then base = base - 12 end
  for b = 0, bars * meter - 1 do
    local t = b * T
    local bar, pos = math.floor(b / meter), b % meter
    local deg = prog[bar % #prog + 1]
    local ch = M.triad(MAJOR, deg)
    local root = base + ch[1] % 12
    local acc = pos == 0 and 12 or 0
    if style == "rock" then
      if pos == 0 or pos == 2 then note(drums.notes, t + hum(), 0.1, 36, 110) end
      if pos == 1 or pos == 3 then note(drums.notes, t + hum(), 0.1, 38, 105) end
      note(drums.notes, t + hum(), 0.05, 42, 75)
      note(drums.notes, t + T / 2 + hum(), 0.05, 42, 60)
      note(bass.notes, t + hum(), T * 0.45, root - 12, 95)
      note(bass.notes, t + T / 2 + hum(), T * 0.45, root - 12, 90)
      if pos == 0 then for _, n in ipairs(ch) do note(keys.notes, t + hum(), T * meter * 0.95, base + n, 70) end end
    elseif style == "funk" then
      if pos == 0 then note(drums.notes, t, 0.1, 36, 110) end
      if pos == 2 then note(drums.notes, t, 0.1, 36, 90); note(drums.notes, t + 0.75 * T, 0.1, 36, 95) end
      if pos == 1 or pos == 3 then note(drums.notes, t + hum(), 0.1, 38, 105) end
      local sub = bpm < 110 and 4 or 2
      for h = 0, sub - 1 do note(drums.notes, t + h * T / sub + hum(), 0.04, 42, h == 0 and 70 or 50) end
      note(bass.notes, t + hum(), T * 0.2, root - 12, 95)
      note(bass.notes, t + 0.75 * T + hum(), T * 0.2, root - 12, 90)
      if pos == 0 or pos == 2 then
        for _, n in ipairs(ch) do note(keys.notes, t + T / 2 + hum(), T * 0.3, base + n, 65) end
      end
    elseif style == "four" then
      note(drums.notes, t + hum(), 0.1, 36, 115)
      if pos == 1 or pos == 3 then note(drums.notes, t + hum(), 0.1, 39, 95) end
      note(drums.notes, t + T / 2 + hum(), 0.1, 46, 80)
      note(bass.notes, t + T / 2 + hum(), T * 0.4, root - 12, 100)
      if pos == 0 then for _, n in ipairs(ch) do note(keys.notes, t + hum(), T * meter * 0.95, base + 12 + n, 60) end end
    elseif style == "ballad" then
      if pos == 0 then note(drums.notes, t + hum(), 0.1, 36, 100) end
      if pos == 2 then note(drums.notes, t + T / 2 + hum(), 0.1, 36, 85) end
      if pos == 1 or pos == 3 then note(drums.notes, t + hum(), 0.1, 38, 95) end
      note(drums.notes, t + hum(), 0.05, 42, 55)
      note(drums.notes, t + T / 2 + hum(), 0.05, 42, 55)
      for h = 0, 1 do
        note(piano.notes, t + h * T / 2 + hum(), T * 0.5, base + 12 + ch[(pos * 2 + h) % 3 + 1], 60 + acc)
      end
      if pos == 0 then note(bass.notes, t, T * meter, root - 12, 85) end
    elseif style == "shuffle" then
      if pos == 0 or pos == 2 then note(drums.notes, t + hum(), 0.1, 36, 105) end
      if pos == 1 or pos == 3 then note(drums.notes, t + hum(), 0.1, 38, 100) end
      note(drums.notes, t + hum(), 0.05, 42, 70)
      note(drums.notes, t + 2 / 3 * T + hum(), 0.05, 42, 55)
      note(bass.notes, t + hum(), T * 0.3, root - 12, 90)
      note(bass.notes, t + 2 / 3 * T + hum(), T * 0.3, root - 5, 90)
      if pos == 0 or pos == 2 then for _, n in ipairs(ch) do note(keys.notes, t + hum(), T * 0.9, base + n, 62) end end
    elseif style == "piano" then
      note(piano.notes, t + hum(), T * 0.9, pos == 0 and root - 12 or root, 80 + acc)
      for _, n in ipairs(ch) do note(piano.notes, t + hum(), T * 0.8, base + 12 + n, 60 + acc) end
    elseif style == "arp" then
      for h = 0, 1 do
        local i = pos * 2 + h
        note(piano.notes, t + h * T / 2 + hum(), T * 0.5, base + 12 + ch[i % 3 + 1] + 12 * (math.floor(i / 3) % 2),
             70 + (h == 0 and 15 or 0) + acc)
      end
      if pos == 0 then note(piano.notes, t, T * meter, root - 12, 85) end
    elseif style == "waltz" then
      if pos == 0 then note(piano.notes, t + hum(), T * 0.9, root - 12, 90)
      else for _, n in ipairs(ch) do note(piano.notes, t + hum(), T * 0.5, base + 12 + n, 62) end end
    elseif style == "swing" then
      note(bass.notes, t + hum(), T * 0.9, root - 12 + ({ 0, 4, 7, 5 })[pos + 1], 90)
      note(drums.notes, t + hum(), 0.1, 51, pos % 2 == 1 and 80 or 70)
      if pos % 2 == 1 then
        note(drums.notes, t + 2 / 3 * T + hum(), 0.1, 51, 60)
        note(drums.notes, t, 0.1, 44, 70)
      end
      if (pos == 0 or pos == 2) and rng:next() < 0.7 then
        local off = rng:next() < 0.4 and 2 / 3 * T or 0
        for _, n in ipairs(ch) do note(piano.notes, t + off + hum(), T * 0.4, base + 12 + n, 60) end
      end
    else
      error("sao.musicgen.groove: unknown style '" .. tostring(style) .. "' (" .. table.concat(M.styles, ", ") .. ")", 2)
    end
  end
  for _, inst in ipairs { drums, bass, keys, piano } do
    if #inst.notes > 0 then song.instruments[#song.instruments + 1] = sort_notes(inst) end
  end
  song.end_time = bars * meter * T
  return song
end

-- ---- progressions (key material) -------------------------------------------------------------------
-- Accompaniment figures by instrument family.
M.key_instruments = { 0, 48, 24, 19, 4, 52 }   -- piano, strings, nylon guitar, organ, e-piano, choir

--- progression{tonic (C = 0), minor, program = 0, progression (index or degree list), bpm,
--- bars = 8, seed = 1, melody = true} -> song table: chords in the program's figure (block chords
--- per beat for keyboards, sustained pads for strings/organ/choir, arpeggios for guitars), the
--- root in the bass, and a melody of chord tones and scale steps.
function M.progression(o)
  local rng = M.rng(o.seed or 1)
  local tonic, minor = o.tonic or 0, o.minor and true or false
  local scale = minor and HARMONIC_MINOR or MAJOR
  local list = M.progressions[minor and "minor" or "major"]
  local prog = type(o.progression) == "table" and o.progression
               or list[((o.progression or rng:int(1, #list)) - 1) % #list + 1]
  local program = o.program or 0
  local bpm = o.bpm or rng:uniform(80, 140)
  local bars = o.bars or 8
  local T = 60 / bpm
  local song = new_song(bpm, 4, tonic + (minor and 12 or 0))
  local base = tonic < 6 and 48 + tonic or 36 + tonic
  local chords = { name = "chords", program = program, notes = {} }
  local bass = { name = "bass", program = (program == 19) and 19 or 32, notes = {} }
  local mel = { name = "melody", program = (program == 0) and 0 or 73, notes = {} }
  local pad = program == 48 or program == 19 or program == 52 or program == 89
  local arp = program >= 24 and program <= 31
  for b = 0, bars - 1 do
    local t = b * 4 * T
    local ch = M.triad(scale, prog[b % #prog + 1])
    if pad then
      for _, n in ipairs(ch) do note(chords.notes, t, 4 * T * 0.98, base + 12 + n, 75) end
    elseif arp then
      for i = 0, 7 do
        note(chords.notes, t + i * T / 2, T * 0.9, base + 12 + ch[i % 3 + 1] + 12 * (math.floor(i / 3) % 2), 80)
      end
    else
      for beat = 0, 3 do
        for _, n in ipairs(ch) do note(chords.notes, t + beat * T, T * 0.9, base + 12 + n, beat == 0 and 78 or 68) end
      end
    end
    note(bass.notes, t, 4 * T * 0.95, base - 12 + ch[1] % 12, 85)
    if o.melody ~= false then
      for beat = 0, 3 do
        local n = (beat % 2 == 0) and rng:pick(ch) or scale[rng:int(1, 7)]
        note(mel.notes, t + beat * T, T * 0.9, base + 24 + n % 12, 65)
      end
    end
  end
  for _, inst in ipairs { chords, bass, mel } do
    if #inst.notes > 0 then song.instruments[#song.instruments + 1] = sort_notes(inst) end
  end
  song.end_time = bars * 4 * T
  return song
end

-- ---- synthesised signals (no SoundFont needed) -------------------------------------------------------

local function new_audio(n)
  local a = sao.zeros(1, n)
  return a, a:data()
end

--- click_track{bpm, seconds = 20, sr = 22050, click = 0.01 (s), freq = 1000, accent = 1} -> f32 [1, S]:
--- a decaying sine burst on every beat (accent > 1 makes every `meter`-th click louder).
function M.click_track(o)
  local sr, secs = o.sr or 22050, o.seconds or 20
  local n = math.floor(secs * sr)
  local a, d = new_audio(n)
  local T, len = 60 / o.bpm, math.floor((o.click or 0.01) * sr)
  local meter, accent = o.meter or 4, o.accent or 1
  local k = 0
  while k * T * sr < n do
    local s0 = math.floor(k * T * sr + 0.5)
    local amp = (k % meter == 0) and 0.5 * accent or 0.5
    for i = 0, len - 1 do
      if s0 + i >= n then break end
      d[s0 + i] = d[s0 + i] + amp * math.exp(-5 * i / len) * math.sin(2 * math.pi * (o.freq or 1000) * i / sr)
    end
    k = k + 1
  end
  return a
end

--- noise{seconds = 20, sr = 22050, seed = 1, amp = 0.3} -> white noise f32 [1, S]
function M.noise(o)
  o = o or {}
  local sr, secs = o.sr or 22050, o.seconds or 20
  local n = math.floor(secs * sr)
  local a, d = new_audio(n)
  local rng = M.rng(o.seed or 1)
  local amp = o.amp or 0.3
  for i = 0, n - 1 do d[i] = amp * (2 * rng:next() - 1) end
  return a
end

-- Adds a drum hit at sample s0: "kick" (pitch-swept sine), "snare" (noise + 180 Hz body),
-- "hat" (differentiated noise, 40 ms).
local function hit(d, n, sr, s0, kind, vel, rng)
  if kind == "kick" then
    local len = math.floor(0.25 * sr)
    local ph = 0
    for i = 0, len - 1 do
      if s0 + i >= n then break end
      local tt = i / sr
      ph = ph + 2 * math.pi * (50 + 100 * math.exp(-tt * 30)) / sr
      d[s0 + i] = d[s0 + i] + vel * math.exp(-tt * 12) * math.sin(ph)
    end
  elseif kind == "snare" then
    local len = math.floor(0.18 * sr)
    for i = 0, len - 1 do
      if s0 + i >= n then break end
      local tt = i / sr
      d[s0 + i] = d[s0 + i] + vel * math.exp(-tt * 25) * (0.6 * (2 * rng:next() - 1) + 0.4 * math.sin(2 * math.pi * 180 * tt))
    end
  else
    local len = math.floor(0.04 * sr)
    local prev = 0
    for i = 0, len - 1 do
      if s0 + i >= n then break end
      local x = 2 * rng:next() - 1
      d[s0 + i] = d[s0 + i] + vel * math.exp(-i / sr * 80) * (x - prev) * 0.5
      prev = x
    end
  end
end

--- drums{bpm, seconds = 20, sr = 22050, pattern = "rock"|"four"|"half", seed = 1, swing = 0} ->
--- f32 [1, S]: synthesised kit. rock: kick 1+3, snare 2+4, 8th hats; four: kick every beat,
--- snare 2+4, off-beat hats; half: kick 1, snare 3, 8th hats (half-time feel).
function M.drums(o)
  local sr, secs = o.sr or 22050, o.seconds or 20
  local n = math.floor(secs * sr)
  local a, d = new_audio(n)
  local rng = M.rng(o.seed or 1)
  local T = 60 / o.bpm
  local pat = o.pattern or "rock"
  local b = 0
  while b * T < secs do
    local t, pos = b * T, b % 4
    local function at(x) return math.floor(x * sr + 0.5) end
    if pat == "four" then
      hit(d, n, sr, at(t), "kick", 0.8, rng)
      if pos == 1 or pos == 3 then hit(d, n, sr, at(t), "snare", 0.5, rng) end
      hit(d, n, sr, at(t + T / 2), "hat", 0.25, rng)
    else
      local kick = pat == "half" and pos == 0 or (pat ~= "half" and (pos == 0 or pos == 2))
      local snare = pat == "half" and pos == 2 or (pat ~= "half" and (pos == 1 or pos == 3))
      if kick then hit(d, n, sr, at(t), "kick", 0.8, rng) end
      if snare then hit(d, n, sr, at(t), "snare", 0.5, rng) end
      hit(d, n, sr, at(t), "hat", 0.25, rng)
      hit(d, n, sr, at(t + T / 2 + (o.swing or 0) * T / 6), "hat", 0.15, rng)
    end
    b = b + 1
  end
  return a
end

--- chords{tonic, minor, sr = 22050, bpm = 100, bars = 8, seed = 1, partials = 8, progression} ->
--- f32 [1, S]: the progression (as in progression()) played by additive harmonic tones (partials
--- with 1/k amplitudes) with an ADSR envelope: triads in the middle register on every beat, the
--- root two octaves below on every bar.
function M.chords(o)
  local sr = o.sr or 22050
  local rng = M.rng(o.seed or 1)
  local minor = o.minor and true or false
  local scale = minor and HARMONIC_MINOR or MAJOR
  local list = M.progressions[minor and "minor" or "major"]
  local prog = type(o.progression) == "table" and o.progression
               or list[((o.progression or rng:int(1, #list)) - 1) % #list + 1]
  local bpm, bars = o.bpm or 100, o.bars or 8
  local T = 60 / bpm
  local n = math.floor((bars * 4 * T + 0.5) * sr)
  local a, d = new_audio(n)
  local K = o.partials or 8
  local base = (o.tonic < 6 and 48 or 36) + o.tonic
  local detune = o.detune_cents or 0
  local function tone(t0, dur, midi, amp)
    local f0 = 440 * 2 ^ ((midi - 69 + detune / 100) / 12)
    local s0, len = math.floor(t0 * sr), math.floor((dur + 0.15) * sr)
    local att, dec, sus, rel = 0.01, 0.1, 0.6, 0.15
    for i = 0, len - 1 do
      local s = s0 + i
      if s >= n then break end
      local tt = i / sr
      local env
      if tt < att then env = tt / att
      elseif tt < att + dec then env = 1 - (1 - sus) * (tt - att) / dec
      elseif tt < dur then env = sus
      else env = sus * math.max(0, 1 - (tt - dur) / rel) end
      local v = 0
      for k = 1, K do
        local f = f0 * k
        if f < sr / 2 then v = v + math.sin(2 * math.pi * f * tt) / k end
      end
      d[s] = d[s] + amp * env * v
    end
  end
  for b = 0, bars - 1 do
    local ch = M.triad(scale, prog[b % #prog + 1])
    for beat = 0, 3 do
      for _, x in ipairs(ch) do tone((b * 4 + beat) * T, T * 0.9, base + 12 + x, 0.06) end
    end
    tone(b * 4 * T, 4 * T * 0.95, base - 12 + ch[1] % 12, 0.1)
  end
  return a
end

--- tile(audio [C, S], samples) -> [C, samples]: the audio repeated end to end.
function M.tile(audio, samples)
  local C, S = audio:size(1), audio:size(2)
  local src = audio:contiguous()
  local out = sao.zeros(C, samples)
  local sd, od = src:data(), out:data()
  for c = 0, C - 1 do
    for i = 0, samples - 1 do od[c * samples + i] = sd[c * S + i % S] end
  end
  return out
end

-- ---- Sonic Pi loops ------------------------------------------------------------------------------------
-- Debian package sonic-pi-samples (CC0). Beats per loop inferred from the exact lengths
-- (DSP_SPEC §6); bpm = 60 * beats / duration. Loops without a steady beat (ambient, drones,
-- tabla) are left out.
M.SONIC_PI_DIR = "/usr/share/sonic-pi/samples"
local LOOPS = {
  { "loop_amen_full", 16 }, { "loop_amen", 4 }, { "loop_breakbeat", 4 }, { "loop_garzul", 16 },
  { "loop_mika", 16 }, { "loop_electric", 4 }, { "loop_perc1", 4 }, { "loop_perc2", 4 },
  { "loop_mehackit1", 4 }, { "loop_mehackit2", 4 }, { "loop_compus", 16 }, { "loop_safari", 16 },
}

--- sonic_pi_loops(dir) -> list of {name, path, beats, duration, bpm} for the loops present
--- (empty when the package is not installed).
function M.sonic_pi_loops(dir)
  dir = dir or os.getenv("SAO_SONIC_PI_SAMPLES") or M.SONIC_PI_DIR
  local out = {}
  for _, l in ipairs(LOOPS) do
    local path = dir .. "/" .. l[1] .. ".flac"
    local ok, info = pcall(sao.audio.info, path)
    if ok then
      out[#out + 1] = { name = l[1], path = path, beats = l[2], duration = info.duration,
                        bpm = 60 * l[2] / info.duration }
    end
  end
  return out
end

return M
