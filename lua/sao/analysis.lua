-- sao.analysis — tempo (BPM, confidence, local tempo, beats), key/scale, and the per-file
-- analysis that recipes/analyze.lua prints (runtime/tempo.c, runtime/key.c; front ends in
-- sao.dsp). Definitions and measured accuracies: docs/analysis.md, sections "Tempo" and "Key".
--
--   local audio, sr = sao.audio.load("song.flac")
--   local t = sao.analysis.tempo(audio, sr)                 -- {bpm=, confidence=, alt_bpm=, ...}
--   local t = sao.analysis.tempo(audio, sr, { beats = true, local_tempo = true })
--   local k = sao.analysis.key(audio, sr)                   -- {key="F#", scale="minor", strength=}
--   local k = sao.analysis.key(audio, sr, { preset = "edma" })
--   local row = sao.analysis.file("song.flac")              -- everything analyze.lua prints
--
-- Scoring helpers used by the benches and the evaluation: tempo_match (Acc1/Acc2 at a
-- tolerance), parse_key, key_relation and key_score (MIREX weighted score).
local ffi = require "ffi"
local sao = require "sao"

local C, ctx, check = sao.C, sao.ctx, sao.check
local wrap = sao.tensor_from_ptr

local M = {}

local raw = sao.tensor_arg   -- raw(t, what): the C pointer of an argument, or an error naming it

-- ---- tempo -----------------------------------------------------------------------------------

local function tempo_opts(o)
  local c = ffi.new("sao_tempo_opts")
  if not o then return c end
  c.min_bpm = o.min_bpm or 0
  c.max_bpm = o.max_bpm or 0
  c.prior_bpm = o.prior_bpm or 0
  if o.prior_octaves == false then c.prior_octaves = -1 else c.prior_octaves = o.prior_octaves or 0 end
  c.max_lag_s = o.max_lag or 0
  c.window_s = o.window or 0
  c.hop_s = o.hop or 0
  c.tightness = o.tightness or 0
  c["local"] = o.local_tempo and 1 or 0
  c.beats = o.beats and 1 or 0
  return c
end

local function tempo_result(r)
  local bpm = tonumber(r.bpm)
  local out = {
    bpm = bpm > 0 and bpm or nil,
    confidence = tonumber(r.confidence),
    salience = tonumber(r.salience),
    alt_bpm = r.alt_bpm > 0 and tonumber(r.alt_bpm) or nil,
    alt_salience = tonumber(r.alt_salience),
    frame_rate = tonumber(r.frame_rate),
  }
  if r.beats ~= nil then
    local t = wrap(r.beats)
    local n, d = t:numel(), t:data()
    local beats = {}
    for i = 0, n - 1 do beats[i + 1] = tonumber(d[i]) end
    out.beats = beats
    t:free()
  end
  if r.curve ~= nil then
    local t = wrap(r.curve)
    local n, d = t:size(1), t:data()
    local curve = {}
    for i = 0, n - 1 do
      curve[i + 1] = { time = tonumber(d[3 * i]), bpm = tonumber(d[3 * i + 1]), salience = tonumber(d[3 * i + 2]) }
    end
    out.curve = curve
    t:free()
  end
  return out
end

--- tempo(audio, sr, opts) -> {bpm, confidence, salience, alt_bpm, alt_salience, frame_rate,
--- beats = {s, ...} (opts.beats), curve = {{time, bpm, salience}, ...} (opts.local_tempo)}.
--- bpm is nil when the signal has no periodicity at all (silence). Audio shorter than two
--- periods of min_bpm (3 s at the default 40 BPM) is an error.
--- opts: min_bpm 40, max_bpm 250, prior_bpm 120, prior_octaves 1 (false: flat prior),
--- max_lag 4 (s), window 8 (s), hop 1 (s), tightness 100, beats, local_tempo.
function M.tempo(audio, sr, opts)
  local r = ffi.new("sao_tempo_result")
  check(C.sao_tempo_estimate(ctx, raw(audio), sr, tempo_opts(opts), r), 2)
  return tempo_result(r)
end

--- tempo_from_onset(envelope [T], frame_rate, opts, t0 = 0) -> as tempo(); frame t of the
--- envelope is at t0 + t / frame_rate seconds (sao.dsp.onset_strength: frame_rate = sr / hop).
function M.tempo_from_onset(env, frame_rate, opts, t0)
  local r = ffi.new("sao_tempo_result")
  check(C.sao_tempo_from_onset(ctx, raw(env, "onset envelope"), frame_rate, t0 or 0, tempo_opts(opts), r), 2)
  return tempo_result(r)
end

--- tempo_match(est, ref, tol = 0.04) -> acc1, acc2 (booleans): |est - ref| <= tol * ref, and the
--- same against ref x {1, 2, 1/2, 3, 1/3} (DSP_SPEC §3.5.1).
function M.tempo_match(est, ref, tol)
  tol = tol or 0.04
  if not est or not ref or ref <= 0 then return false, false end
  local acc1 = math.abs(est - ref) <= tol * ref
  local acc2 = acc1
  for _, f in ipairs { 2, 0.5, 3, 1 / 3 } do
    if math.abs(est - f * ref) <= tol * f * ref then acc2 = true end
  end
  return acc1, acc2
end

-- ---- key ----------------------------------------------------------------------------------------

local PRESET = { bgate = 0, keyextractor = 0, ["keyextractor-default"] = 0, default = 0,
                 edma = 1, tutorial = 1, ["tutorial-edma"] = 1 }
local PROFILE = { bgate = 1, edma = 2, krumhansl = 3, temperley = 4 }
local PROFILE_NAME = { [1] = "bgate", [2] = "edma", [3] = "krumhansl", [4] = "temperley" }
M.presets = { "bgate", "edma" }

local function key_opts(o)
  o = o or {}
  local c = ffi.new("sao_key_opts")
  local p = o.preset or "bgate"
  c.preset = PRESET[p] or error("unknown key preset '" .. tostring(p) .. "' (bgate = keyextractor, edma = tutorial)", 3)
  if o.profile then
    c.profile = PROFILE[o.profile] or error("unknown key profile '" .. tostring(o.profile) ..
                                            "' (bgate, edma, krumhansl, temperley)", 3)
  end
  c.frame_size = o.frame_size or 0
  c.hop_size = o.hop_size or 0
  if o.polyphony ~= nil then c.polyphony = o.polyphony and 1 or -1 end
  if o.three_chords ~= nil then c.three_chords = o.three_chords and 1 or -1 end
  if o.pcp_threshold == false then c.pcp_threshold = -1 else c.pcp_threshold = o.pcp_threshold or 0 end
  return c
end

local function key_result(r, o)
  o = o or {}
  local preset = (o.preset and PRESET[o.preset] == 1) and "edma" or "bgate"
  local out = {
    strength = tonumber(r.strength), second_strength = tonumber(r.second_strength),
    relative_strength = tonumber(r.relative_strength), frames = tonumber(r.frames),
    preset = preset, profile = o.profile or preset,
  }
  if r.tonic >= 0 then
    out.tonic = tonumber(r.tonic)
    out.key = ffi.string(C.sao_key_name(r.tonic, o.flats and 1 or 0))
    out.scale = r.minor == 1 and "minor" or "major"
  end
  local h = {}
  for i = 0, r.hpcp_size - 1 do h[i + 1] = tonumber(r.hpcp[i]) end
  out.hpcp = h
  return out
end

--- key(audio, sr, opts) -> {key = "F#", tonic = 6 (C = 0), scale = "major"|"minor", strength,
--- second_strength, relative_strength, hpcp = {...} (bin 1 = A), frames, preset, profile}.
--- key/tonic/scale are nil for silence (strength 0).
--- opts: preset "bgate" (= "keyextractor", Essentia KeyExtractor defaults) | "edma" (= "tutorial");
--- profile "bgate"|"edma"|"krumhansl"|"temperley"; frame_size, hop_size; polyphony, three_chords
--- (booleans); pcp_threshold (0.2; false: none); flats = true for Essentia's names (Bb, Eb, Ab).
function M.key(audio, sr, opts)
  local r = ffi.new("sao_key_result")
  check(C.sao_key_estimate(ctx, raw(audio), sr, key_opts(opts), r), 2)
  return key_result(r, opts)
end

--- key_from_hpcp({h1, ..., hS}, opts) with S = 12, 24 or 36 and bin 1 = A -> as key().
function M.key_from_hpcp(h, opts)
  local n = #h
  local buf = ffi.new("float[?]", math.max(n, 1))
  for i = 1, n do buf[i - 1] = h[i] end
  local r = ffi.new("sao_key_result")
  check(C.sao_key_from_hpcp(ctx, buf, n, key_opts(opts), r), 2)
  return key_result(r, opts)
end

--- key_name(tonic (C = 0), flats) -> "C", "C#", ... (flats: Essentia's "Eb", "Ab", "Bb").
function M.key_name(tonic, flats) return ffi.string(C.sao_key_name(tonic, flats and 1 or 0)) end

local LETTER = { C = 0, D = 2, E = 4, F = 5, G = 7, A = 9, B = 11 }

--- parse_key("F# minor" | "Gb" | "a#m" | "Bb Major", scale) -> tonic (C = 0), minor (boolean).
--- A trailing "m", "min", "minor" or the scale argument ("minor"/"major") sets the mode.
function M.parse_key(s, scale)
  if type(s) ~= "string" then error("key must be a string like 'F# minor', got " .. type(s), 2) end
  local letter, acc, rest = s:match("^%s*([A-Ga-g])([#b♯♭]*)%s*(.-)%s*$")
  if not letter then error("cannot read key '" .. s .. "' (expected e.g. 'F# minor' or 'Bb')", 2) end
  local t = LETTER[letter:upper()]
  for ch in acc:gmatch("[#b]") do t = t + (ch == "#" and 1 or -1) end
  if acc:find("♯", 1, true) then t = t + 1 end
  if acc:find("♭", 1, true) then t = t - 1 end
  rest = rest:lower()
  local minor
  if rest == "" then minor = (scale or ""):lower():sub(1, 3) == "min"
  elseif rest == "m" or rest:sub(1, 3) == "min" then minor = true
  elseif rest:sub(1, 3) == "maj" then minor = false
  else error("cannot read the mode in key '" .. s .. "' (major or minor)", 2) end
  return t % 12, minor
end

--- key_relation(est_tonic, est_minor, ref_tonic, ref_minor) -> relation, MIREX weight:
--- "same" 1.0; "fifth" 0.5 (estimated tonic a fifth above the reference, same mode, as
--- mir_eval; "fifth_below" with weight 0.5 only when symmetric = true, MIREX's own scorer);
--- "relative" 0.3 (major X <-> minor X-3); "parallel" 0.2; "other" 0 (DSP_SPEC §3.10.6).
function M.key_relation(et, em, rt, rm, symmetric)
  if et == nil then return "other", 0 end
  em, rm = not not em, not not rm
  if et == rt and em == rm then return "same", 1.0 end
  if em == rm and et == (rt + 7) % 12 then return "fifth", 0.5 end
  if em == rm and et == (rt + 5) % 12 then
    if symmetric then return "fifth_below", 0.5 end
    return "fifth_below", 0
  end
  if em ~= rm then
    if (not rm and em and et == (rt + 9) % 12) or (rm and not em and et == (rt + 3) % 12) then
      return "relative", 0.3
    end
    if et == rt then return "parallel", 0.2 end
  end
  return "other", 0
end

--- key_score(est, ref, symmetric) with est/ref as {tonic=, minor=} or strings -> MIREX weight.
function M.key_score(est, ref, symmetric)
  local function norm(k)
    if type(k) == "string" then local t, m = M.parse_key(k) return t, m end
    return k.tonic, k.minor == true or k.scale == "minor"
  end
  local et, em = norm(est)
  local rt, rm = norm(ref)
  local rel, w = M.key_relation(et, em, rt, rm, symmetric)
  return w, rel
end

-- ---- whole-file analysis ------------------------------------------------------------------------

local function finite(x)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

--- file(path, opts) -> one table with the fields recipes/analyze.lua prints:
--- path, duration, sample_rate, channels, format, lufs, peak, peak_db, rms_db, crest_db,
--- bpm, bpm_confidence, bpm_alt, key, scale, key_strength, centroid, flatness, hp_ratio,
--- transient_sharpness, onset_rate, (+ key_edma, scale_edma, key_strength_edma with
--- opts.both_presets). Raises an error naming the file when it cannot be read.
--- Parts that are undefined for the signal (tempo of a 1 s file, key of silence) are nil and
--- named in `notes`.
--- opts: key_preset ("bgate"), both_presets, tempo = {...} (sao.analysis.tempo options),
--- loudness_mode ("ebur128").
function M.file(path, opts)
  opts = opts or {}
  local audio_m = sao.audio
  local info = audio_m.info(path)
  local audio, sr = audio_m.load(path)
  local row = { path = path, duration = info.duration, sample_rate = sr, channels = info.channels,
                format = info.format, subtype = info.subtype }
  local notes = {}
  row.lufs = finite(audio_m.loudness(audio, sr, { mode = opts.loudness_mode }))
  local f = sao.dsp.features(audio, sr)
  row.peak = f.peak
  row.peak_db = finite(f.peak_db)
  row.rms_db = finite(f.rms_db)
  row.crest_db = finite(f.crest_db)
  row.centroid = finite(f.centroid_hz)
  row.flatness = finite(f.flatness)
  row.hp_ratio = finite(f.hp_ratio)
  row.transient_sharpness = finite(f.transient_sharpness)
  row.onset_rate = finite(f.onset_rate)
  local ok, t = pcall(M.tempo, audio, sr, opts.tempo)
  if ok then
    row.bpm, row.bpm_confidence, row.bpm_alt = t.bpm, t.confidence, t.alt_bpm
    if not t.bpm then notes[#notes + 1] = "no periodicity: bpm undefined" end
  else
    row.bpm_confidence = 0
    notes[#notes + 1] = tostring(t):gsub("^[^\n]-%.lua:%d+: ", "")
  end
  local k = M.key(audio, sr, { preset = opts.key_preset })
  row.key, row.scale, row.key_strength = k.key, k.scale, k.strength
  if not k.key then notes[#notes + 1] = "silent: key undefined" end
  if opts.both_presets then
    local other = (opts.key_preset == "edma") and "bgate" or "edma"
    local k2 = M.key(audio, sr, { preset = other })
    row["key_" .. other], row["scale_" .. other], row["key_strength_" .. other] = k2.key, k2.scale, k2.strength
  end
  audio:free()
  if #notes > 0 then row.notes = table.concat(notes, "; ") end
  return row
end

return M
