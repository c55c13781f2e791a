-- sao.pipeline.dataset — the `dataset` stage: a MIDI corpus -> rendered, normalised, analysed clips.
--
--   require("sao.pipeline.dataset").run { out = "out/instrumental", midi = "clean_midi" }
--   sao recipes/instrumental.lua --stages dataset --midi clean_midi [--shard 2/8] [--jobs 2]
--
-- Per song (DSP_SPEC §1.2-1.3, §3.1-3.4, §3.7):
--   1. ingest (sao.corpus): content de-duplication, corrupt files, name duplicates;
--   2. split into instruments (sao.midi) and render each one alone (sao.synth, "notes" mode by
--      default: note on/off only, as the seed's renderer) to f32 stereo at 44.1 kHz;
--   3. normalise every track to target_lufs (-12, the seed's), mix them ("mean" = the seed card's
--      average; "sum" as the seed code), normalise the mix; everything stays float, and the peak
--      guard (default: a look-ahead limiter at -1 dBFS) is reported in the manifest;
--   4. tempo and key of the mix by audio analysis, cross-checked with the file's own tempo map and
--      key signature (both are stored, with tempo_source / key_source saying which one won);
--   5. clips of about 30 s cut on bar lines, preferring section changes (sao.clips), leading and
--      trailing silence stripped (-50 dBFS, 10 ms chunks as the seed), kept when their length is
--      within [clip_min, clip_max]; one float WAV and one JSON (seed schema + sao fields) each.
-- Files (the OUT/ contract in DESIGN.md): OUT/dataset/manifest.jsonl, one line per source file
-- {source, status = kept|skipped|failed, reason, outputs, ...}; OUT/dataset/clips/<Artist>/<Song>/
-- <Song>_NN.wav + .json. All writes are atomic (temporary file + rename). docs/dataset.md.
--
-- Resume: while a run works, each finished song is appended (one JSON line) to a journal next to
-- the manifest; at the end the manifest is rewritten atomically and the journal removed. A new
-- run merges any journal a killed run left, and skips every song whose record says kept with the
-- same file hash and the same settings fingerprint and whose outputs are all on disk. A killed
-- run therefore loses only the song in flight (its partial folder is cleared when it is redone).
local sao = require "sao"
local corpus = require "sao.corpus"
local clips = require "sao.clips"
local progress = require "sao.progress"
local ojson = require "sao.ojson"
local cjson = require "cjson"

local M = {}

M.VERSION = 1       -- bump when the stage's output changes for the same settings (forces rebuilds)

M.defaults = {
  out = "out/instrumental",
  midi = nil,                 -- corpus folder (Artist/Song.mid); nil: the built-in demo corpus
  soundfont = nil,            -- nil: sao.synth's default General MIDI SoundFont
  render_mode = "notes",      -- "notes" (seed) | "full" (CC, sustain, pitch bend)
  sample_rate = 44100,
  tail = 2.0,                 -- seconds of release tail rendered after the last note, at most
  target_lufs = -12,          -- tracks and mix (the seed's -12 LUFS)
  loudness = "bs1770",        -- "bs1770" (libebur128's numbers, one fast pass) | "ebur128" | "pyloudnorm" (the seed's meter)
  mix = "mean",               -- "mean" | "sum"
  peak_guard = "limit",       -- "limit" (look-ahead limiter) | "reduce" (lower the gain) | "report"
  ceiling_db = -1,            -- the guard's sample-peak ceiling, dBFS
  clip_min = 20, clip_max = 35, clip_target = 30,   -- clip length window, seconds
  silence_db = -50,           -- leading/trailing silence threshold (dBFS) and chunk (s)
  silence_chunk = 0.01,
  tempo_source = "auto",      -- "auto" | "midi" | "audio"
  key_source = "auto",        -- "auto" | "midi" | "audio"
  key_min_strength = 0.5,     -- auto: an audio key weaker than this yields to the file's signature
  tempo_tolerance = 0.04,     -- relative tolerance when comparing tempi
  shard = "1/1",              -- i/n: this run builds the songs whose stable path hash falls in i
  jobs = 0,                   -- songs built in parallel by worker processes; 0: one per core
  limit = 0,                  -- build at most this many songs (0: all)
  retry_failed = false,       -- rebuild songs whose earlier build failed
  quiet = false,
}

-- ---- small helpers ------------------------------------------------------------------------------
local fs = require "sao.fs"
local q, exists, mkdir_p, rm_rf = fs.quote, fs.exists, fs.mkdir_p, fs.rm_rf

-- x rounded to d decimals for the JSON files; nil for nil, NaN and infinities
local function round(x, d)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  local m = 10 ^ (d or 0)
  return math.floor(x * m + 0.5) / m
end
M.round = round

local PITCH = { [0] = "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B" }
M.PITCH_NAMES = PITCH

--- Reads options as the recipe passes them (strings from the command line) into a config table
-- with the types of M.defaults. Unknown keys are kept as they are (other stages' options).
function M.config(opts)
  local cfg = require("sao.pipeline.common").settings(M.defaults, opts, "dataset")
  for _, chk in ipairs {
    { "render_mode", { notes = 1, full = 1 } }, { "mix", { mean = 1, sum = 1 } },
    { "peak_guard", { limit = 1, reduce = 1, report = 1 } }, { "loudness", { bs1770 = 1, ebur128 = 1, pyloudnorm = 1 } },
    { "tempo_source", { auto = 1, midi = 1, audio = 1 } }, { "key_source", { auto = 1, midi = 1, audio = 1 } },
  } do
    if not chk[2][cfg[chk[1]]] then
      local names = {}
      for n in pairs(chk[2]) do names[#names + 1] = n end
      table.sort(names)
      error(("dataset: %s must be one of %s, got '%s'"):format(chk[1], table.concat(names, ", "),
            tostring(cfg[chk[1]])), 0)
    end
  end
  if cfg.clip_min > cfg.clip_max then
    error(("dataset: clip_min (%g s) is larger than clip_max (%g s)"):format(cfg.clip_min, cfg.clip_max), 0)
  end
  cfg.shard_i, cfg.shard_n = corpus.parse_shard(cfg.shard)
  return cfg
end

-- The settings that shape the output; their hash is the fingerprint a resumed run compares.
local function render_settings(cfg, soundfont)
  return ojson.object({
    synth = "fluidsynth", soundfont = soundfont:match("[^/]+$"),
    mode = cfg.render_mode, sample_rate = cfg.sample_rate, tail = cfg.tail,
    target_lufs = cfg.target_lufs, loudness = cfg.loudness, mix = cfg.mix,
    peak_guard = cfg.peak_guard, ceiling_db = cfg.ceiling_db,
    clip_min = cfg.clip_min, clip_max = cfg.clip_max, clip_target = cfg.clip_target,
    silence_db = cfg.silence_db, tempo_source = cfg.tempo_source, key_source = cfg.key_source,
    version = M.VERSION,
  }, { "synth", "soundfont", "mode", "sample_rate", "tail", "target_lufs", "loudness", "mix",
       "peak_guard", "ceiling_db", "clip_min", "clip_max", "clip_target", "silence_db",
       "tempo_source", "key_source", "version" })
end

local function fingerprint(settings, soundfont)
  local extra = ""
  if soundfont then
    local f = io.open(soundfont, "rb")
    if f then extra = tostring(f:seek("end")); f:close() end
  end
  return corpus.sha256(ojson.encode(settings) .. "\0" .. extra):sub(1, 16)
end

-- ---- the back ends: synth, analysis, instrument names ---------------------------------------------
-- Thin adapters over the modules other parts of sao provide, so the stage reads as its steps.

local function instrument_name(inst)
  return require("sao.gm").alias(inst.program, inst.is_drum)
end
M.instrument_name = instrument_name

-- The instrument map (sao.synth): the default GM map on cfg.soundfont, or cfg.map (a Lua table
-- made with sao.synth.map, for callers of the Lua API). One per process.
local maps = {}
local function instrument_map(cfg)
  if cfg.map then return cfg.map end
  local key = cfg.soundfont or ""
  if not maps[key] then maps[key] = require("sao.synth").map { soundfont = cfg.soundfont } end
  return maps[key]
end

-- Renders one instrument alone: f32 [2, S] from song time 0 (plus the release tail) and the
-- preset that played it, or nil and the reason (unmapped program, render error).
local function render_track(cfg, inst)
  local synth = require "sao.synth"
  local ok, audio, r = pcall(synth.render_instrument, inst, {
    map = instrument_map(cfg), mode = cfg.render_mode, sample_rate = cfg.sample_rate, tail = cfg.tail,
  })
  if not ok then return nil, tostring(audio) end
  if not audio then return nil, tostring(r) end
  return audio, r
end

-- Tempo and key of audio: {bpm, confidence, tonic (0..11), minor, strength}; an estimate that
-- fails (audio too short) or is undefined (silence) leaves its fields nil.
local function analyse(audio, sr)
  local analysis = require "sao.analysis"
  local res = {}
  local ok, t = pcall(analysis.tempo, audio, sr)
  if ok and t then res.bpm, res.confidence = t.bpm, t.confidence end
  local ok2, k = pcall(analysis.key, audio, sr)
  if ok2 and k and k.tonic then res.tonic, res.minor, res.strength = k.tonic, k.scale == "minor", k.strength end
  return res
end
M.analyse = analyse

-- ---- tempo and key: audio vs MIDI ------------------------------------------------------------------
local RELATIONS = { { 1, "same" }, { 2, "double" }, { 0.5, "half" }, { 3, "triple" }, { 1 / 3, "third" },
                    { 1.5, "3:2" }, { 2 / 3, "2:3" } }

--- How an audio tempo relates to the MIDI one: "same", "double" (audio = 2 x midi), "half", ...
-- or "different" / nil (no audio tempo).
function M.tempo_relation(audio_bpm, midi_bpm, tol)
  if not audio_bpm or not midi_bpm or audio_bpm <= 0 then return nil end
  tol = tol or 0.04
  for _, r in ipairs(RELATIONS) do
    if math.abs(audio_bpm - r[1] * midi_bpm) <= tol * r[1] * midi_bpm then return r[2] end
  end
  return "different"
end

-- Picks the tempo: returns value, source, relation.
-- auto: the file's tempo when it has tempo events (it is exactly the pulse the audio was rendered
-- from; the audio estimate confirms it or is recorded as an octave/other relation); the audio
-- estimate when the file only has the implicit 120 BPM.
local function choose_tempo(cfg, midi_bpm, midi_explicit, a)
  local rel = M.tempo_relation(a.bpm, midi_bpm, cfg.tempo_tolerance)
  if cfg.tempo_source == "audio" and a.bpm then return a.bpm, "audio", rel end
  if cfg.tempo_source == "midi" or (midi_explicit or not a.bpm) then
    if rel == "same" then return midi_bpm, "midi+audio", rel end
    return midi_bpm, "midi", rel
  end
  return a.bpm, "audio", rel
end

--- How an audio key relates to the file's: "same", "relative" (C major / A minor), "parallel"
-- (C major / C minor), "fifth" (a fifth apart, same mode), "different"; nil without both.
function M.key_relation(tonic_a, minor_a, tonic_m, minor_m)
  if tonic_a == nil or tonic_m == nil then return nil end
  minor_a, minor_m = minor_a and true or false, minor_m and true or false
  if tonic_a == tonic_m and minor_a == minor_m then return "same" end
  if tonic_a == tonic_m then return "parallel" end
  if minor_a ~= minor_m then
    local major, minor = minor_a and tonic_m or tonic_a, minor_a and tonic_a or tonic_m
    if (major - minor) % 12 == 3 then return "relative" end
  elseif (tonic_a - tonic_m) % 12 == 7 or (tonic_m - tonic_a) % 12 == 7 then
    return "fifth"
  end
  return "different"
end

-- Picks the key: returns tonic (0..11 or nil), minor, source, agree.
-- auto: the audio key (the seed card's), confirmed by the file's key signature when they agree;
-- the signature wins when the audio key is weaker than key_min_strength.
local function choose_key(cfg, mk, a)
  local agree
  if mk and a.tonic then agree = (mk.key % 12 == a.tonic) and ((mk.key >= 12) == (a.minor == true)) end
  if cfg.key_source == "midi" and mk then return mk.key % 12, mk.key >= 12, "midi", agree end
  if a.tonic and (cfg.key_source == "audio" or not mk or (a.strength or 0) >= cfg.key_min_strength or agree) then
    return a.tonic, a.minor, agree and "audio+midi" or "audio", agree
  end
  if mk then return mk.key % 12, mk.key >= 12, "midi", agree end
  return nil, nil, nil, agree
end

-- ---- one song ---------------------------------------------------------------------------------------

local function free(t) if t and t.free then t:free() end end

-- Loudness normalisation of the mix with the peak guard (cfg.peak_guard, cfg.ceiling_db):
--   report: gain = target - measured, applied whatever the peak;
--   reduce: the gain is lowered so that the sample peak sits at the ceiling;
--   limit:  the full gain, then sao.audio.limit at the ceiling. Limiting lowers the loudness a
--           little (dense mixes: up to ~1 LU), so the gain is raised and the original signal
--           gained and limited again (secant steps) until the loudness is within 0.05 LU of the
--           target: 2 rounds in practice, each one gain + limiter + loudness measurement.
-- Returns audio (nil when the input is silent) and a report {lufs_before, lufs_after, gain_db,
-- peak_after, peak_after_db, would_clip, limited, limiter_max_gr_db, clipped, silent, rounds}.
function M.normalize(cfg, audio, sr)
  local lopt = { mode = cfg.loudness }
  local target, ceiling = cfg.target_lufs, 10 ^ (cfg.ceiling_db / 20)
  local L0 = sao.audio.loudness(audio, sr, lopt)
  local rep = { lufs_before = L0, rounds = 1, limited = false, limiter_max_gr_db = 0, silent = false }
  if L0 == -math.huge then rep.silent = true return nil, rep end
  local g = target - L0
  local peak0 = sao.audio.stats(audio).peak
  rep.would_clip = peak0 * 10 ^ (g / 20) > ceiling * (1 + 1e-6)
  local out, L
  if cfg.peak_guard == "reduce" and rep.would_clip then
    g = 20 * math.log10(ceiling / peak0)
    out = sao.audio.gain(audio, g)
    L = L0 + g
  elseif cfg.peak_guard == "limit" and rep.would_clip then
    local gp, Lp
    while true do
      local gained = sao.audio.gain(audio, g)
      local gr
      free(out)
      out, gr = sao.audio.limit(gained, sr, cfg.ceiling_db)
      free(gained)
      rep.limiter_max_gr_db = math.max(rep.limiter_max_gr_db, gr)
      rep.limited = true
      L = sao.audio.loudness(out, sr, lopt)
      if math.abs(L - target) <= 0.05 or rep.rounds >= 8 then break end
      local slope = 1.3   -- dB of gain per LU gained: limiting flattens the curve (measured 1.2-1.6)
      if gp and L ~= Lp then slope = math.min(math.max((g - gp) / (L - Lp), 1), 4) end
      gp, Lp = g, L
      g = g + (target - L) * slope
      rep.rounds = rep.rounds + 1
    end
  else
    out = sao.audio.gain(audio, g)
    L = L0 + g
  end
  local st = sao.audio.stats(out)
  rep.gain_db, rep.lufs_after = g, L
  rep.peak_after, rep.peak_after_db = st.peak, st.peak_db
  rep.clipped = st.peak > 1
  return out, rep
end

-- Seconds spent per step over this process's builds (bench/dataset.lua reads them).
M.timings = { render = 0, loudness = 0, analysis = 0, clips = 0, write = 0 }
local function timed(step, t0)
  local t = progress.now()
  M.timings[step] = M.timings[step] + (t - t0)
  return t
end

local CLIP_KEYS = { "Song", "Artist", "Tags", "Instruments", "duration_ms", "key", "mode", "tempo",
  "sections", "path", "start", "duration", "lufs", "bpm_confidence", "key_strength", "source_midi",
  "render", "clip", "bars", "time_signature", "tempo_midi", "tempo_audio", "tempo_source",
  "tempo_relation", "key_midi", "key_audio", "key_source", "peak_db" }
M.CLIP_KEYS = CLIP_KEYS

local RECORD_KEYS = { "source", "status", "reason", "kind", "outputs", "artist", "song", "hash", "fingerprint",
  "duration", "instruments", "tracks", "mix", "tempo", "key", "clips", "dropped", "seconds" }

--- Builds one song: render, normalise, mix, analyse, cut, write. `item` is a kept corpus item
-- (sao.corpus), `ds` the dataset folder. Returns the manifest record (status kept, or skipped /
-- failed with a reason); raises only on programming errors (the caller turns them into failed).
function M.build_song(item, cfg, ds, settings, fp)
  local t_start = progress.now()
  local sr = cfg.sample_rate
  local rel_dir = "clips/" .. item.artist_dir .. "/" .. item.song_dir
  local dir = ds .. "/" .. rel_dir
  local rec = ojson.object({ source = item.source, artist = item.artist, song = item.title,
                             hash = item.hash, fingerprint = fp, outputs = ojson.array {} }, RECORD_KEYS)
  local function finish(status, reason, kind)
    rec.status, rec.reason, rec.kind = status, reason, kind
    rec.seconds = round(progress.now() - t_start, 2)
    return rec
  end
  rm_rf(dir)   -- whatever an earlier (interrupted or differently configured) build left

  local song = sao.midi.read(item.path)
  local parts = {}
  for _, inst in ipairs(song.instruments) do
    if #inst.notes > 0 then parts[#parts + 1] = inst end
  end
  if #parts == 0 then return finish("skipped", "no notes", "no-notes") end
  -- a song too short for any clip is known from the MIDI alone: no need to render it
  local pre = clips.plan(song, { min = cfg.clip_min, max = cfg.clip_max, target = cfg.clip_target,
                                 audio_length = clips.music_end(song) + cfg.tail })
  if #pre.clips == 0 then
    return finish("skipped", ("no clip fits the %g-%g s window (the notes last %.1f s)"):format(cfg.clip_min,
                  cfg.clip_max, clips.music_end(song)), "too-short")
  end

  -- 1. render + normalise every track ------------------------------------------------------------
  local acc, n_mixed, trecs = nil, 0, ojson.array {}
  for _, inst in ipairs(parts) do
    local name = instrument_name(inst)
    local tr = ojson.object({ name = name, track_name = inst.name, program = inst.program,
                              is_drum = inst.is_drum, notes = #inst.notes },
                            { "name", "track_name", "program", "is_drum", "notes", "preset", "lufs", "gain_db", "peak_db", "dropped" })
    local tr0 = progress.now()
    local audio, info = render_track(cfg, inst)
    tr0 = timed("render", tr0)
    if not audio then
      tr.dropped = "not rendered: " .. info
    else
      -- normalised by the mix's per-track gains (no normalised copy of each track is made)
      tr.preset = info.preset_name
      local lufs = sao.audio.loudness(audio, sr, { mode = cfg.loudness })
      if lufs == -math.huge then
        tr.dropped = "silent render (no preset sounds for it?)"
        free(audio)
      else
        local g = cfg.target_lufs - lufs
        tr.lufs, tr.gain_db = round(lufs + g, 2), round(g, 2)
        tr.peak_db = round(sao.audio.stats(audio).peak_db + g, 2)
        -- into the running mix: only the mix and one track are in memory at a time
        n_mixed = n_mixed + 1
        if not acc then
          acc = sao.audio.gain(audio, g)
        else
          local nxt = sao.audio.mix({ acc, audio }, { mode = "sum", gains_db = { 0, g } })
          free(acc)
          acc = nxt
        end
        free(audio)
        tr.index = n_mixed
      end
      timed("loudness", tr0)
    end
    trecs[#trecs + 1] = tr
  end
  rec.tracks = trecs
  if n_mixed == 0 then return finish("failed", "no track rendered to audible audio", "silent") end

  -- 2. mix (mean: the sum / n) + normalise, peak guard ----------------------------------------------
  local tm = progress.now()
  local mixed = acc
  if cfg.mix == "mean" and n_mixed > 1 then
    mixed = sao.audio.gain(acc, -20 * math.log10(n_mixed))
    free(acc)
  end
  local mix, mrep = M.normalize(cfg, mixed, sr)
  free(mixed)
  rec.mix = ojson.object({ lufs = round(mrep.lufs_after, 2), gain_db = round(mrep.gain_db, 2),
    peak_db = round(mrep.peak_after_db, 2), peak_guard = cfg.peak_guard, would_clip = mrep.would_clip,
    limited = mrep.limited, limiter_max_gr_db = round(mrep.limiter_max_gr_db, 2), clipped = mrep.clipped,
    rounds = mrep.rounds },
    { "lufs", "gain_db", "peak_db", "peak_guard", "would_clip", "limited", "limiter_max_gr_db", "clipped", "rounds" })
  if mrep.silent then return finish("failed", "the mix is silent", "silent") end
  local length = mix:shape()[2]
  rec.duration = round(length / sr, 3)
  tm = timed("loudness", tm)

  -- 3. tempo and key of the whole song --------------------------------------------------------------
  local a = analyse(mix, sr)
  tm = timed("analysis", tm)
  local midi_bpm, midi_explicit = clips.midi_tempo(song, 0, length / sr)
  local mk = clips.midi_key(song, 0, length / sr)
  local bpm, tsrc, trel = choose_tempo(cfg, midi_bpm, midi_explicit, a)
  rec.tempo = ojson.object({ value = round(bpm, 2), source = tsrc, midi = midi_explicit and round(midi_bpm, 2) or nil,
    audio = round(a.bpm, 2), confidence = round(a.confidence, 3), relation = trel },
    { "value", "source", "midi", "audio", "confidence", "relation" })
  local tonic, minor, ksrc = choose_key(cfg, mk, a)
  rec.key = ojson.object({ value = tonic and (PITCH[tonic] .. (minor and " minor" or " major")) or nil,
    source = ksrc, midi = mk and mk.name or nil,
    audio = a.tonic and (PITCH[a.tonic] .. (a.minor and " minor" or " major")) or nil,
    strength = round(a.strength, 3),
    relation = mk and M.key_relation(a.tonic, a.minor, mk.key % 12, mk.key >= 12) or nil },
    { "value", "source", "midi", "audio", "strength", "relation" })

  -- 4. clips -------------------------------------------------------------------------------------------
  -- the planner gets the end of the audible audio, so no clip is planned into trailing silence
  local _, audible_end = sao.audio.silence_bounds(mix, sr, { threshold_db = cfg.silence_db, chunk = cfg.silence_chunk })
  local plan = clips.plan(song, { min = cfg.clip_min, max = cfg.clip_max, target = cfg.clip_target,
                                  audio_length = audible_end / sr })
  local insts_rendered = {}
  for k, inst in ipairs(parts) do insts_rendered[inst] = trecs[k].index and trecs[k].name or nil end
  local idx_of = {}
  for k, inst in ipairs(song.instruments) do idx_of[k] = inst end
  local dropped = ojson.array {}
  local n_out = 0
  mkdir_p(dir)
  local render = settings
  for _, c in ipairs(plan.clips) do
    local s0 = math.floor(c.start * sr + 0.5)
    local s1 = math.min(length, math.floor(c.stop * sr + 0.5))
    local piece = sao.audio.slice(mix, s0, s1 - s0)
    local b0, b1 = sao.audio.silence_bounds(piece, sr, { threshold_db = cfg.silence_db, chunk = cfg.silence_chunk })
    local n = b1 - b0
    if n < cfg.clip_min * sr - 0.5 or n > cfg.clip_max * sr + 0.5 then
      dropped[#dropped + 1] = ojson.object({ start = round(c.start, 3), stop = round(c.stop, 3),
        reason = string.format("%.2f s after stripping silence, outside %g-%g s", n / sr, cfg.clip_min, cfg.clip_max) },
        { "start", "stop", "reason" })
      free(piece)
    else
      local clip = (b0 > 0 or b1 < s1 - s0) and sao.audio.slice(piece, b0, n) or piece
      if clip ~= piece then free(piece) end
      local t0, t1 = (s0 + b0) / sr, (s0 + b0 + n) / sr
      n_out = n_out + 1
      local base = string.format("%s_%02d", item.song_dir, n_out)
      local wav_rel, json_rel = rel_dir .. "/" .. base .. ".wav", rel_dir .. "/" .. base .. ".json"
      -- analysis of the clip itself, and what the file says about the same stretch
      tm = timed("clips", tm)
      local ca = analyse(clip, sr)
      tm = timed("analysis", tm)
      local cm_bpm, cm_explicit = clips.midi_tempo(song, t0, t1)
      local cmk = clips.midi_key(song, t0, t1)
      local cbpm, ctsrc, ctrel = choose_tempo(cfg, cm_bpm, cm_explicit, ca)
      local ctonic, cminor, cksrc = choose_key(cfg, cmk, ca)
      local names, seen = ojson.array {}, {}
      for _, k in ipairs(clips.instruments_in(song, t0, t1)) do
        local nm = insts_rendered[idx_of[k]]
        if nm and not seen[nm] then seen[nm] = true; names[#names + 1] = nm end
      end
      local sections = ojson.array {}
      for _, sec in ipairs(plan.sections) do
        local a0, a1 = math.max(sec.start, t0), math.min(sec.stop, t1)
        if a1 - a0 > 0.5 then
          local part = sao.audio.slice(clip, math.floor((a0 - t0) * sr + 0.5), math.floor((a1 - a0) * sr + 0.5))
          local lufs = sao.audio.loudness(part, sr, { mode = cfg.loudness })
          free(part)
          local sb = clips.midi_tempo(song, a0, a1)
          sections[#sections + 1] = ojson.object({ start = round(a0 - t0, 3), duration = round(a1 - a0, 3),
            confidence = round(sec.confidence, 3), loudness = round(lufs, 2), tempo = round(sb, 2),
            key = ctonic and PITCH[ctonic] or "", mode = ctonic and (cminor and "Minor" or "Major") or "",
            time_signature = clips.midi_time_signature(song, a0) },
            { "start", "duration", "confidence", "loudness", "tempo", "key", "mode", "time_signature" })
        end
      end
      local st = sao.audio.stats(clip)
      local meta = ojson.object({
        Song = item.title, Artist = item.artist, Tags = ojson.array {}, Instruments = names,
        duration_ms = math.floor(n / sr * 1000 + 0.5),
        key = ctonic and PITCH[ctonic] or "", mode = ctonic and (cminor and "Minor" or "Major") or "",
        tempo = cbpm and math.floor(cbpm + 0.5) or 0,
        sections = sections,
        path = wav_rel, start = round(t0, 4), duration = round(n / sr, 4),
        lufs = round(sao.audio.loudness(clip, sr, { mode = cfg.loudness }), 2),
        bpm_confidence = round(ca.confidence, 3), key_strength = round(ca.strength, 3),
        source_midi = item.source, render = render,
        clip = n_out, bars = ojson.object({ first = c.first_bar, count = c.bars }, { "first", "count" }),
        time_signature = clips.midi_time_signature(song, t0),
        tempo_midi = cm_explicit and round(cm_bpm, 2) or nil, tempo_audio = round(ca.bpm, 2),
        tempo_source = ctsrc, tempo_relation = ctrel,
        key_midi = cmk and cmk.name or nil,
        key_audio = ca.tonic and (PITCH[ca.tonic] .. (ca.minor and " minor" or " major")) or nil,
        key_source = cksrc, peak_db = round(st.peak_db, 2),
      }, CLIP_KEYS)
      tm = timed("clips", tm)
      sao.audio.save(ds .. "/" .. wav_rel, clip, sr, { subtype = "float" })
      ojson.write(ds .. "/" .. json_rel, meta, { indent = 2 })
      free(clip)
      tm = timed("write", tm)
      rec.outputs[#rec.outputs + 1] = wav_rel
      rec.outputs[#rec.outputs + 1] = json_rel
    end
  end
  free(mix)
  timed("clips", tm)
  rec.clips = n_out
  if #dropped > 0 then rec.dropped = dropped end
  rec.instruments = ojson.array {}
  for _, t in ipairs(trecs) do if t.index then rec.instruments[#rec.instruments + 1] = t.name end end
  for _, t in ipairs(trecs) do t.index = nil end
  if n_out == 0 then
    rm_rf(dir)
    return finish("skipped", plan.reason or "every clip fell outside the window after stripping silence",
                  "too-short")
  end
  if mrep.clipped then
    return finish("kept", "WARNING: the mix has samples above full scale (peak_guard = report)")
  end
  return finish("kept", nil)
end

-- ---- manifest and journal -----------------------------------------------------------------------------

local function manifest_name(cfg)
  if cfg.shard_n > 1 then return ("manifest.%dof%d.jsonl"):format(cfg.shard_i, cfg.shard_n) end
  return "manifest.jsonl"
end

local function journal_glob(ds, cfg)
  return ds .. "/" .. manifest_name(cfg):gsub("%.jsonl$", "") .. ".journal*.jsonl"
end

-- Records by source from a JSON-lines file; a torn last line (a killed writer) is ignored.
local function read_jsonl(path, into)
  local f = io.open(path, "rb")
  if not f then return into end
  for line in f:lines() do
    if line:match("%S") then
      local ok, r = pcall(ojson.decode, line)
      if ok and type(r) == "table" and r.source then into[r.source] = r end
    end
  end
  f:close()
  return into
end

local function glob(pattern)
  local p = io.popen("ls -1 " .. pattern:gsub("([^/*]+)", function(s) return q(s) end) .. " 2>/dev/null")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function outputs_present(ds, rec)
  if type(rec.outputs) ~= "table" then return false end
  for _, o in ipairs(rec.outputs) do if not exists(ds .. "/" .. o) then return false end end
  return true
end
--- Removes the work folders of parallel runs that were killed (their parent process is gone).
function M.clean_work(ds)
  pcall(require("ffi").cdef, "int kill(int pid, int sig);")
  for _, w in ipairs(glob(ds .. "/.work-*")) do
    local pid = tonumber(w:match("%.work%-(%d+)$"))
    if pid and require("ffi").C.kill(pid, 0) ~= 0 then rm_rf(w) end
  end
end

--- What a run has to build (shared with the trap recipe's sao.pipeline.beats): for this shard's
--- items (corpus order), the records of those not kept at ingest and of those an earlier run
--- finished with the same bytes (hash) and settings (fingerprint fp) — kept with every output
--- on disk, or skipped/failed unless cfg.retry_failed — and the list of the others to build, cut
--- to cfg.limit. Returns records (by source), todo, done_before.
function M.plan_work(items, prev, ds, cfg, fp, record_keys)
  local records, todo, done_before = {}, {}, 0
  for _, it in ipairs(items) do
    if corpus.shard_of(it.source, cfg.shard_n) ~= cfg.shard_i then
      -- another shard's file: its line is in that shard's manifest
    elseif it.status ~= "kept" then
      records[it.source] = ojson.object({ source = it.source, status = it.status, reason = it.reason,
        kind = it.kind, outputs = ojson.array {}, hash = it.hash }, record_keys)
    else
      local r = prev[it.source]
      local same = r and r.hash == it.hash and r.fingerprint == fp
      if same and ((r.status == "kept" and outputs_present(ds, r)) or (r.status ~= "kept" and not cfg.retry_failed)) then
        records[it.source] = r
        done_before = done_before + 1
      else
        todo[#todo + 1] = it
      end
    end
  end
  if cfg.limit and cfg.limit > 0 and #todo > cfg.limit then
    for i = #todo, cfg.limit + 1, -1 do todo[i] = nil end
  end
  return records, todo, done_before
end

-- shared with the trap recipe's dataset stage (sao.pipeline.beats)
M.read_jsonl, M.glob, M.journal_glob = read_jsonl, glob, journal_glob

-- ---- the stage ----------------------------------------------------------------------------------------

local function log(cfg, ...)
  if not cfg.quiet then io.stderr:write(string.format(...), "\n") end
end


--- Prepares the corpus folder: cfg.midi, or the demo corpus written under OUT/demo_midi.
-- Returns the folder, and for the demo a description of what is in it.
function M.corpus_dir(cfg)
  if cfg.midi and cfg.midi ~= "" then return cfg.midi, nil end
  local demo = require "sao.pipeline.demo_corpus"
  local dir = cfg.out .. "/demo_midi"
  local own = demo.write(dir)
  local deb = demo.add_debian_midi(dir)
  local what = ("%d songs sao composes itself"):format(#own)
  if #deb > 0 then
    what = what .. (" + the first ~%d s of %d songs from planetblupi-music-midi"):format(demo.DEBIAN_EXCERPT_SECONDS, #deb)
  end
  return dir, what
end

--- The stage. opts: the recipe's options (see M.defaults; strings are converted).
-- Returns a summary table: files, kept_songs, built (songs processed by this run, whatever the
-- outcome), built_kept, done_before, failed, skipped, reasons ({"status: kind" = n}), clips,
-- clip_seconds, tracks, audio_seconds (of the songs built now), seconds, manifest, demo.
function M.run(opts)
  local cfg = M.config(opts)
  local ds = cfg.out .. "/dataset"
  mkdir_p(ds .. "/clips")
  local dir, demo_what = M.corpus_dir(cfg)
  local is_demo = demo_what ~= nil
  if is_demo then
    log(cfg, "dataset: no --midi given: using the built-in DEMO corpus (%s) in %s", demo_what, dir)
  end

  -- ingest
  local t0 = progress.now()
  local ibar = progress.new { label = "ingest", unit = "files", quiet = cfg.quiet }
  local c = corpus.ingest(dir, { on_item = function(_, i, n) ibar.total = n; ibar:update(i) end })
  ibar:finish()

  if cfg.shard_n == 1 then M.clean_work(ds) end

  -- what earlier runs did: the manifest, then any journals a killed run left
  local mpath = ds .. "/" .. manifest_name(cfg)
  local prev = read_jsonl(mpath, {})
  for _, j in ipairs(glob(journal_glob(ds, cfg))) do read_jsonl(j, prev) end

  local sf = cfg.soundfont or require("sao.synth").default_soundfont()
  if not fs.exists(sf) then
    error("dataset: SoundFont " .. sf .. " not found (apt-get install fluid-soundfont-gm, or pass " ..
          "--soundfont F.sf2 / set SAO_SOUNDFONT)", 0)
  end
  local settings = render_settings(cfg, sf)
  local fp = fingerprint(settings, sf)
  local records, todo, done_before = M.plan_work(c.items, prev, ds, cfg, fp, RECORD_KEYS)
  log(cfg, "dataset: %d files, %d songs after de-duplication; this run (shard %d/%d): %d to build, %d done before",
      #c.items, #c.kept, cfg.shard_i, cfg.shard_n, #todo, done_before)

  -- build: here, or in worker processes
  local bar = progress.new { total = #todo, label = "dataset", unit = "songs", quiet = cfg.quiet }
  local built = M.build_all(todo, cfg, ds, settings, fp, bar)
  for src, r in pairs(built) do records[src] = r end
  bar:finish()

  -- the manifest: one line per source file of the corpus (other shards' songs are left out)
  local lines = {}
  for _, it in ipairs(c.items) do
    local r = records[it.source]
    if r then lines[#lines + 1] = ojson.encode(r) end
  end
  M.write_atomic(mpath, table.concat(lines, "\n") .. (#lines > 0 and "\n" or ""))
  for _, j in ipairs(glob(journal_glob(ds, cfg))) do os.remove(j) end

  local summary = M.summarize(c, records, built, done_before, #todo, progress.now() - t0, cfg, is_demo, mpath)
  return summary
end

--- Writes a whole file atomically (sao.fs.write_atomic).
M.write_atomic = fs.write_atomic

-- Builds every item of todo, appending each record to a journal as soon as it is done.
-- Returns records by source.
function M.build_all(todo, cfg, ds, settings, fp, bar)
  local out = {}
  if #todo == 0 then return out end
  local jobs = cfg.jobs
  if not jobs or jobs <= 0 then jobs = sao.threads() end
  if jobs > 1 and #todo > 1 and not cfg.map then   -- a Lua map cannot be handed to a worker
    cfg.jobs = jobs
    return M.build_parallel(todo, cfg, ds, settings, fp, bar)
  end
  local jpath = ds .. "/" .. manifest_name(cfg):gsub("%.jsonl$", "") .. ".journal.jsonl"
  local journal = assert(io.open(jpath, "ab"))
  for _, it in ipairs(todo) do
    bar:start(it.artist .. "/" .. it.title)
    local ok, rec = xpcall(M.build_song, debug.traceback, it, cfg, ds, settings, fp)
    if not ok and tostring(rec):match("interrupted") then
      -- Ctrl-C: not the song's fault. Clear its half-built folder and stop; the journal keeps
      -- every song finished so far, so the next run goes on from here.
      rm_rf(ds .. "/clips/" .. it.artist_dir .. "/" .. it.song_dir)
      journal:close()
      bar:finish()
      error("dataset: interrupted; run again to resume", 0)
    end
    if not ok then
      local msg = tostring(rec)
      rm_rf(ds .. "/clips/" .. it.artist_dir .. "/" .. it.song_dir)
      rec = ojson.object({ source = it.source, status = "failed", reason = "build error: " .. msg:match("^[^\n]*"),
                           kind = "build-error", outputs = ojson.array {}, hash = it.hash, fingerprint = fp }, RECORD_KEYS)
      bar:print("dataset: " .. it.source .. ": " .. msg:match("^[^\n]*"))
    elseif rec.reason and rec.reason:match("^WARNING") then
      bar:print("dataset: " .. it.source .. ": " .. rec.reason)
    end
    out[it.source] = rec
    journal:write(ojson.encode(rec), "\n")
    journal:flush()
    bar:advance(1)
  end
  journal:close()
  return out
end

-- ---- parallel build: worker processes -------------------------------------------------------------
-- The parent writes the list of songs to build to a work file; each worker (`sao -e ...`) claims
-- songs one at a time with an atomic mkdir, builds them and appends their records to its own
-- journal. The parent polls the journals for the progress bar. A worker that dies loses only its
-- song in flight (no record: the next run builds it again).
local function sleep(s)
  pcall(require("ffi").cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
  require("ffi").C.poll(nil, 0, math.floor(s * 1000))
end

function M.build_parallel(todo, cfg, ds, settings, fp, bar)
  local jobs = math.min(cfg.jobs, #todo)
  local tag = manifest_name(cfg):gsub("%.jsonl$", "")
  local pid = require("ffi").C.getpid()
  local work = ds .. "/.work-" .. pid
  mkdir_p(work .. "/claims")
  local list = {}
  for i, it in ipairs(todo) do list[i] = it end
  M.write_atomic(work .. "/todo.json", cjson.encode { items = list, cfg = cfg })
  local exe = require("sao.pipeline.common").sao_binary()
  local pids = {}
  for w = 1, jobs do
    local journal = ("%s/%s.journal.w%d-%d.jsonl"):format(ds, tag, w, pid)
    local code = ("require('sao.pipeline.dataset').worker(%q, %q, %q)"):format(work, journal, w)
    local cmd = ("%s -e %s > %s 2>&1 & echo $!"):format(q(exe), q(code), q(work .. "/worker" .. w .. ".log"))
    local p = io.popen(cmd)
    pids[w] = { pid = tonumber(p:read("*l")), journal = journal }
    p:close()
  end
  pcall(require("ffi").cdef, "int kill(int pid, int sig);")
  local out, seen = {}, 0
  local function collect()
    local n = 0
    for _, w in ipairs(pids) do
      local recs = read_jsonl(w.journal, {})
      for src, r in pairs(recs) do
        if not out[src] then
          out[src] = r
          if r.status == "failed" then bar:print("dataset: " .. src .. ": " .. tostring(r.reason)) end
        end
      end
    end
    for _ in pairs(out) do n = n + 1 end
    return n
  end
  bar:start(("%d workers"):format(jobs))
  local ok, err = pcall(function()
    while true do
      local alive = 0
      for _, w in ipairs(pids) do
        if w.pid and require("ffi").C.kill(w.pid, 0) == 0 then alive = alive + 1 end
      end
      local n = collect()
      if n ~= seen then seen = n; bar:update(n) end
      if alive == 0 then break end
      sleep(0.25)
    end
  end)
  if not ok then
    -- interrupted (Ctrl-C) or failed here: stop the workers (background jobs ignore SIGINT); their
    -- journals keep what they finished, and their songs in flight are redone by the next run
    for _, w in ipairs(pids) do if w.pid then require("ffi").C.kill(w.pid, 15) end end
    rm_rf(work)
    bar:finish()
    error(tostring(err):match("interrupted") and "dataset: interrupted; run again to resume" or err, 0)
  end
  bar:update(collect())
  if seen < #todo then
    for w = 1, jobs do
      local f = io.open(work .. "/worker" .. w .. ".log", "rb")
      local txt = f and f:read("*a") or ""
      if f then f:close() end
      if txt:match("%S") then bar:print(("dataset: worker %d said:\n%s"):format(w, txt)) end
    end
    bar:print(("dataset: %d song(s) were not finished by the workers; a re-run builds them"):format(#todo - seen))
  end
  rm_rf(work)
  return out
end

--- A worker process: claims songs from work/todo.json and builds them (see build_parallel).
--- cfg.builder names another stage module whose build_item(item, cfg, ds, nil, fp) and
--- fingerprint(cfg) are used instead (the trap recipe's beats).
function M.worker(work, journal_path, w)
  local f = assert(io.open(work .. "/todo.json", "rb"))
  local job = cjson.decode(f:read("*a"))
  f:close()
  local cfg = job.cfg
  for k, v in pairs(cfg) do if v == cjson.null then cfg[k] = nil end end
  sao.threads(1)   -- one core per worker: the parallelism is across songs
  local ds = cfg.out .. "/dataset"
  local build, settings, fp = M.build_song, nil, nil
  if cfg.builder then
    local B = require(cfg.builder)
    build, fp = B.build_item, B.fingerprint(cfg)
  else
    local sf = cfg.soundfont or require("sao.synth").default_soundfont()
    settings = render_settings(cfg, sf)
    fp = fingerprint(settings, sf)
  end
  local journal = assert(io.open(journal_path, "ab"))
  local ffi = require "ffi"
  pcall(ffi.cdef, "int mkdir(const char *path, unsigned int mode);")
  for i, it in ipairs(job.items) do
    if ffi.C.mkdir(work .. "/claims/" .. i, 493) == 0 then
      local ok, rec = xpcall(build, debug.traceback, it, cfg, ds, settings, fp)
      if not ok then
        rm_rf(ds .. "/clips/" .. it.artist_dir .. "/" .. it.song_dir)
        rec = ojson.object({ source = it.source, status = "failed",
          reason = "build error: " .. tostring(rec):match("^[^\n]*"), kind = "build-error", outputs = ojson.array {},
          hash = it.hash, fingerprint = fp }, RECORD_KEYS)
      end
      journal:write(ojson.encode(rec), "\n")
      journal:flush()
    end
  end
  journal:close()
  return w
end

-- ---- summary ----------------------------------------------------------------------------------------

function M.summarize(c, records, built, done_before, n_todo, seconds, cfg, is_demo, mpath)
  local s = { files = #c.items, kept_songs = 0, built = 0, done_before = done_before, failed = 0,
              skipped = 0, clips = 0, clip_seconds = 0, audio_seconds = 0, tracks = 0, reasons = {},
              seconds = seconds, manifest = mpath, demo = is_demo }
  for _, it in ipairs(c.items) do
    local r = records[it.source]
    if r then
      if r.status == "kept" then
        s.kept_songs = s.kept_songs + 1
        s.clips = s.clips + (r.clips or 0)
        for _, o in ipairs(r.outputs or {}) do
          if o:match("%.json$") then
            local meta = ojson.read(cfg.out .. "/dataset/" .. o)
            if meta and meta.duration then s.clip_seconds = s.clip_seconds + meta.duration end
          end
        end
        for _, t in ipairs(r.tracks or {}) do if not t.dropped then s.tracks = s.tracks + 1 end end
      else
        if r.status == "failed" then s.failed = s.failed + 1 else s.skipped = s.skipped + 1 end
        local key = r.status .. ": " .. tostring(r.kind or it.kind)
        s.reasons[key] = (s.reasons[key] or 0) + 1
      end
    end
  end
  s.built_kept = 0
  for _, r in pairs(built) do
    s.built = s.built + 1
    if r.status == "kept" then s.built_kept = s.built_kept + 1 end
    s.audio_seconds = s.audio_seconds + (r.duration or 0)
  end
  if not cfg.quiet then
    local out = io.stderr
    out:write("\n", is_demo and "dataset summary (DEMO corpus)\n" or "dataset summary\n")
    local function row(k, v) out:write(string.format("  %-28s %s\n", k, v)) end
    row("source files", s.files)
    row("songs kept", string.format("%d (%d built now, %d done before)", s.kept_songs, s.built_kept,
        s.kept_songs - s.built_kept))
    row("tracks rendered", s.tracks)
    row("clips", string.format("%d (%.1f min)", s.clips, s.clip_seconds / 60))
    row("skipped / failed", string.format("%d / %d", s.skipped, s.failed))
    local keys = {}
    for k in pairs(s.reasons) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do row("  " .. k, s.reasons[k]) end
    if s.built > 0 and seconds > 0 then
      row("time", string.format("%s for %.1f min of songs (%.1fx real time)", progress.format_duration(seconds),
          s.audio_seconds / 60, s.audio_seconds / seconds))
    else
      row("time", progress.format_duration(seconds))
    end
    row("manifest", mpath)
    out:write("\n")
  end
  return s
end

return M
