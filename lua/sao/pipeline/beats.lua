-- sao.pipeline.beats — the trap recipe's `dataset` stage: a folder of beats -> segments of 20-35 s
-- with their start times, tempo and key, as WAV + JSON clips (the StableBeaT layout, DSP_SPEC §2).
--
--   require("sao.pipeline.beats").run { out = "out/trap", beats = "my_beats" }
--   sao recipes/trap.lua --stages dataset --beats my_beats [--segments 2] [--shard 2/8]
--
-- Per beat:
--   1. every audio file under the folder (wav, flac, ogg, mp3, aiff, opus: what libsndfile reads),
--      sorted by relative path; files with identical bytes (SHA-256) are one beat, the first kept;
--   2. decoded, resampled to 44.1 kHz stereo; leading/trailing silence (-50 dBFS) left out;
--   3. `segments` (2) segments, one in each equal part of the audible stretch, of a length drawn
--      in [segment_min, segment_max] (20-35 s) from a generator seeded by the file's hash (the same
--      segments on every run and machine); with align = "beats" both ends move to the nearest beat
--      of the beat tracker (sao.analysis.tempo) inside the part. A beat shorter than two segments
--      gets one; one shorter than segment_min is skipped ("too-short");
--   4. each segment's tempo (DSP estimator) and key (Essentia KeyExtractor profile) with their
--      confidences; the prompt writer states them only above 0.70 (prompt.CONFIDENT, as StableBeaT);
--   5. optionally loudness-normalised (target_lufs; limiter at -1 dBFS, loudness kept on target as the
--      instrumental stage does); written as float WAV and
--      JSON: clips/<Folder>/<Beat>/<Beat>_s<N>.wav/.json with `start` (s in the beat; `start_sample`
--      exactly, at 44.1 kHz), `duration`,
--      `seconds_start`/`seconds_total` (whole seconds), bpm, bpm_confidence, key, mode,
--      key_strength, lufs, peak; `Tags` stays empty until the `tag` stage fills it.
-- Manifest, journal, resume and worker processes (--jobs N, default one per core) as the
-- instrumental dataset stage (sao.pipeline.dataset): one line per source file in
-- OUT/dataset/manifest.jsonl; a killed run loses only the beats in flight; a beat whose bytes and
-- settings are unchanged and whose outputs exist is not redone.
local sao = require "sao"
local corpus = require "sao.corpus"
local dataset = require "sao.pipeline.dataset"
local progress = require "sao.progress"
local ojson = require "sao.ojson"
local fs = require "sao.fs"

local M = {}

M.VERSION = 1
M.EXTENSIONS = { "wav", "flac", "ogg", "oga", "mp3", "aif", "aiff", "aifc", "opus", "w64", "caf" }

M.defaults = {
  out = "out/trap",
  beats = "",                 -- folder of beats (any depth); "": the built-in demo beats
  segments = 2,               -- segments per beat
  segment_min = 20, segment_max = 35,   -- segment length window, seconds
  align = "beats",            -- "beats": segment ends on tracked beats | "none"
  segment_seed = 0,           -- added to each file's hash seed: another draw of segments
  sample_rate = 44100,
  target_lufs = "off",        -- "off" (levels as mastered) | a number: each segment normalised to it
  silence_db = -50, silence_chunk = 0.01,
  shard = "1/1", limit = 0, retry_failed = false, quiet = false,
  jobs = 0,                   -- beats built in parallel by worker processes; 0: one per core
  demo_count = 4,             -- demo beats composed when no --beats is given
}

local round = dataset.round

local function free(t) if t and t.free then t:free() end end

--- The stage's settings from the recipe's options (strings from the command line converted).
function M.config(opts)
  local cfg = require("sao.pipeline.common").settings(M.defaults, opts, "dataset")
  if cfg.beats == true then error("dataset: --beats expects a folder", 0) end
  if cfg.align ~= "beats" and cfg.align ~= "none" then
    error("dataset: align must be 'beats' or 'none', got '" .. tostring(cfg.align) .. "'", 0)
  end
  if cfg.segment_min <= 0 or cfg.segment_min > cfg.segment_max then
    error(("dataset: segment_min (%g s) must be positive and at most segment_max (%g s)"):format(
      cfg.segment_min, cfg.segment_max), 0)
  end
  if cfg.segments < 1 or cfg.segments ~= math.floor(cfg.segments) then
    error("dataset: segments must be a whole number >= 1, got " .. tostring(cfg.segments), 0)
  end
  if cfg.target_lufs ~= "off" and not tonumber(cfg.target_lufs) then
    error("dataset: target_lufs must be 'off' or a number, got '" .. tostring(cfg.target_lufs) .. "'", 0)
  end
  cfg.target_lufs = tonumber(cfg.target_lufs) or "off"
  cfg.shard_i, cfg.shard_n = corpus.parse_shard(cfg.shard)
  return cfg
end

--- The hash of the settings that shape a beat's segments (a resumed run compares it).
function M.fingerprint(cfg)
  local s = ojson.encode(ojson.object({ version = M.VERSION, segments = cfg.segments, min = cfg.segment_min,
    max = cfg.segment_max, align = cfg.align, seed = cfg.segment_seed, sr = cfg.sample_rate,
    lufs = cfg.target_lufs, silence_db = cfg.silence_db, chunk = cfg.silence_chunk },
    { "version", "segments", "min", "max", "align", "seed", "sr", "lufs", "silence_db", "chunk" }))
  return corpus.sha256(s):sub(1, 16)
end

-- ---- segment planning (pure: tested on its own) -----------------------------------------------------

-- nearest element of a sorted list inside [lo, hi] to x, or nil
local function nearest_in(list, x, lo, hi)
  local best, bd
  for _, v in ipairs(list or {}) do
    if v >= lo - 1e-9 and v <= hi + 1e-9 then
      local d = math.abs(v - x)
      if not bd or d < bd then best, bd = v, d end
    end
  end
  return best
end

--- plan(t0, t1, beat_times, o) -> list of {start, stop, aligned}: o.segments segments inside
--- [t0, t1] (seconds), one per equal part, lengths in [o.min, o.max] drawn from o.rng (a
--- sao.lcg generator), ends snapped to beat_times when given. Fewer segments when the stretch is
--- short (none below o.min).
function M.plan(t0, t1, beat_times, o)
  local L = t1 - t0
  local n = math.min(o.segments, math.floor(L / o.min + 1e-9))
  local out = {}
  if n < 1 then return out end
  local w = L / n
  for i = 1, n do
    local r0 = t0 + (i - 1) * w
    local r1 = r0 + w
    local d = math.min(w, o.min + (o.max - o.min) * o.rng:next())
    local start = r0 + (w - d) * o.rng:next()
    local stop = start + d
    local aligned = false
    if beat_times and #beat_times > 0 then
      local s2 = nearest_in(beat_times, start, r0, r1 - o.min)
      if s2 then
        local e2 = nearest_in(beat_times, s2 + d, s2 + o.min, math.min(s2 + o.max, r1))
        if e2 then start, stop, aligned = s2, e2, true
        elseif s2 + d <= r1 then start, stop = s2, s2 + d end
      end
    end
    out[i] = { start = start, stop = stop, aligned = aligned }
  end
  return out
end

-- ---- one beat -----------------------------------------------------------------------------------

local PITCH = dataset.PITCH_NAMES

local CLIP_KEYS = { "Song", "Artist", "Tags", "Instruments", "path", "source", "start", "start_sample", "duration",
  "seconds_start", "seconds_total", "beat_duration", "segment", "segments", "aligned", "tempo", "bpm",
  "bpm_confidence", "bpm_alt", "key", "mode", "key_strength", "lufs", "peak_db", "gain_db" }
M.CLIP_KEYS = CLIP_KEYS

local RECORD_KEYS = { "source", "status", "reason", "kind", "outputs", "artist", "song", "hash", "fingerprint",
  "duration", "sample_rate_in", "channels_in", "tempo", "key", "clips", "seconds" }

--- Builds one beat (item: {source, path, hash, artist, title, artist_dir, song_dir}). Returns its
--- manifest record (kept, or skipped/failed with a reason); raises only on programming errors.
function M.build_beat(item, cfg, ds, fp)
  local t_start = progress.now()
  local sr = cfg.sample_rate
  local rel_dir = "clips/" .. item.artist_dir .. "/" .. item.song_dir
  local dir = ds .. "/" .. rel_dir
  local rec = ojson.object({ source = item.source, artist = item.artist, song = item.title, hash = item.hash,
                             fingerprint = fp, outputs = ojson.array {} }, RECORD_KEYS)
  local function finish(status, reason, kind)
    rec.status, rec.reason, rec.kind = status, reason, kind
    rec.seconds = round(progress.now() - t_start, 2)
    return rec
  end
  fs.rm_rf(dir)

  local ok, raw, sr_in = pcall(sao.audio.load, item.path)
  if not ok then
    return finish("failed", "unreadable audio: " .. tostring(raw):gsub("^.-:%d+: ", ""), "unreadable")
  end
  rec.sample_rate_in, rec.channels_in = sr_in, raw:size(1)
  local audio = raw
  if sr_in ~= sr then
    audio = sao.audio.resample(raw, sr_in, sr)
    free(raw)
  end
  if audio:size(1) ~= 2 then
    local st = sao.audio.to_channels(audio, 2)
    free(audio)
    audio = st
  end
  local length = audio:size(2)
  rec.duration = round(length / sr, 3)
  local b0, b1 = sao.audio.silence_bounds(audio, sr, { threshold_db = cfg.silence_db, chunk = cfg.silence_chunk })
  if b1 <= b0 then free(audio); return finish("skipped", "silent", "silent") end
  if (b1 - b0) / sr < cfg.segment_min then
    free(audio)
    return finish("skipped", ("%.1f s of sound is shorter than one segment (%g s)"):format((b1 - b0) / sr,
                  cfg.segment_min), "too-short")
  end

  -- the whole beat: tempo (with beat times for alignment) and key, for the manifest
  local whole = {}
  local okt, t = pcall(sao.analysis.tempo, audio, sr, { beats = cfg.align == "beats" })
  if okt and t then whole.bpm, whole.confidence, whole.beats = t.bpm, t.confidence, t.beats end
  local okk, k = pcall(sao.analysis.key, audio, sr)
  if okk and k and k.tonic then whole.key = PITCH[k.tonic] .. " " .. k.scale; whole.strength = k.strength end
  rec.tempo = ojson.object({ bpm = round(whole.bpm, 2), confidence = round(whole.confidence, 3) }, { "bpm", "confidence" })
  rec.key = ojson.object({ value = whole.key, strength = round(whole.strength, 3) }, { "value", "strength" })

  local rng = require("sao.lcg").new((tonumber(item.hash:sub(1, 8), 16) + cfg.segment_seed) % 2147483647)
  local plan = M.plan(b0 / sr, b1 / sr, whole.beats, { segments = cfg.segments, min = cfg.segment_min,
                      max = cfg.segment_max, rng = rng })
  fs.mkdir_p(dir)
  local n_out = 0
  for i, seg in ipairs(plan) do
    local s0 = math.floor(seg.start * sr + 0.5)
    local n = math.min(length, math.floor(seg.stop * sr + 0.5)) - s0
    local clip = sao.audio.slice(audio, s0, n)
    local gain
    if cfg.target_lufs ~= "off" then
      -- the instrumental stage's normaliser: full gain, limiter at -1 dBFS, the loudness kept on target
      local normed, rep = dataset.normalize({ target_lufs = cfg.target_lufs, loudness = "bs1770",
                                              peak_guard = "limit", ceiling_db = -1 }, clip, sr)
      if normed then free(clip); clip, gain = normed, rep.gain_db end
    end
    local a = dataset.analyse(clip, sr)
    local st = sao.audio.stats(clip)
    n_out = n_out + 1
    local base = ("%s_s%d"):format(item.song_dir, i)
    local wav_rel, json_rel = rel_dir .. "/" .. base .. ".wav", rel_dir .. "/" .. base .. ".json"
    local meta = ojson.object({
      Song = item.title, Artist = item.artist, Tags = ojson.object {}, Instruments = ojson.array {},
      path = wav_rel, source = item.source, start = round(s0 / sr, 3), start_sample = s0, duration = round(n / sr, 3),
      seconds_start = math.floor(s0 / sr), seconds_total = math.ceil(length / sr - 1e-9),
      beat_duration = round(length / sr, 3), segment = i, segments = #plan, aligned = seg.aligned,
      tempo = a.bpm and math.floor(a.bpm + 0.5) or 0, bpm = round(a.bpm, 2),
      bpm_confidence = round(a.confidence or 0, 3), bpm_alt = nil,
      key = a.tonic and PITCH[a.tonic] or "", mode = a.tonic and (a.minor and "Minor" or "Major") or "",
      key_strength = round(a.strength or 0, 3),
      lufs = round(sao.audio.loudness(clip, sr), 2), peak_db = round(st.peak_db, 2), gain_db = round(gain, 2),
    }, CLIP_KEYS)
    sao.audio.save(ds .. "/" .. wav_rel, clip, sr, { subtype = "float" })
    ojson.write(ds .. "/" .. json_rel, meta, { indent = 2 })
    free(clip)
    rec.outputs[#rec.outputs + 1] = wav_rel
    rec.outputs[#rec.outputs + 1] = json_rel
  end
  free(audio)
  rec.clips = n_out
  return finish("kept", n_out < cfg.segments and ("%d of %d segments fit"):format(n_out, cfg.segments) or nil)
end

-- the worker processes' entry (sao.pipeline.dataset.worker with cfg.builder)
function M.build_item(item, cfg, ds, _, fp) return M.build_beat(item, cfg, ds, fp) end

-- ---- the folder ---------------------------------------------------------------------------------

--- The beats under dir: {items (every file, with status kept/skipped), kept}. Same content:
--- skipped; kept items get unique output folder names (case-insensitively).
function M.ingest(dir, on_item)
  if not fs.is_dir(dir) then
    error("dataset: " .. dir .. ": not a folder (give --beats the folder that holds your beats)", 0)
  end
  local files = corpus.list(dir, { extensions = M.EXTENSIONS })
  local items, kept, by_hash, used = {}, {}, {}, {}
  for i, f in ipairs(files) do
    local it = { source = f.rel, path = f.path }
    local hash, err = corpus.hash_file(f.path)
    if not hash then
      it.status, it.kind, it.reason = "failed", "unreadable", "cannot read: " .. tostring(err)
    elseif by_hash[hash] then
      it.status, it.kind, it.reason = "skipped", "duplicate", "same content as " .. by_hash[hash]
      it.hash = hash
    else
      by_hash[hash] = f.rel
      local folder, _, _, _, stem = corpus.split_name(f.rel)   -- "Vol.2.wav" stays "Vol.2"
      it.status, it.hash = "kept", hash
      it.artist = folder ~= "" and folder or "beats"
      it.title = stem
      it.artist_dir = corpus.sanitize(it.artist, "beats")
      local name = corpus.sanitize(it.title)
      local key, n = (it.artist_dir .. "/" .. name):lower(), 1
      while used[key] do
        n = n + 1
        key = (it.artist_dir .. "/" .. name .. " (" .. n .. ")"):lower()
      end
      used[key] = true
      it.song_dir = n > 1 and (name .. " (" .. n .. ")") or name
      kept[#kept + 1] = it
    end
    items[#items + 1] = it
    if on_item then on_item(it, i, #files) end
  end
  return { items = items, kept = kept }
end

local function log(cfg, ...)
  if not cfg.quiet then io.stderr:write(string.format(...), "\n") end
end

--- The stage. Returns a summary {files, kept, built, done_before, failed, skipped, clips,
--- clip_seconds, seconds, manifest, demo, jobs (worker processes used; 1: built here)}.
function M.run(opts)
  local cfg = M.config(opts)
  local ds = cfg.out .. "/dataset"
  fs.mkdir_p(ds .. "/clips")
  local dir, is_demo = cfg.beats, false
  if dir == nil or dir == "" then
    dir, is_demo = cfg.out .. "/demo_beats", true
    local written = require("sao.pipeline.demo_beats").write(dir, { quiet = cfg.quiet, count = cfg.demo_count })
    log(cfg, "dataset: no --beats given: using %d DEMO beats sao composes itself, in %s", #written, dir)
  end
  local t0 = progress.now()
  local ibar = progress.new { label = "ingest", unit = "files", quiet = cfg.quiet }
  local c = M.ingest(dir, function(_, i, n) ibar.total = n; ibar:update(i) end)
  ibar:finish()

  if cfg.shard_n == 1 then dataset.clean_work(ds) end
  local mname = cfg.shard_n > 1 and ("manifest.%dof%d.jsonl"):format(cfg.shard_i, cfg.shard_n) or "manifest.jsonl"
  local mpath = ds .. "/" .. mname
  local jpath = mpath:gsub("%.jsonl$", ".journal.jsonl")
  local prev = dataset.read_jsonl(mpath, {})
  for _, j in ipairs(dataset.glob(dataset.journal_glob(ds, cfg))) do dataset.read_jsonl(j, prev) end
  local fp = M.fingerprint(cfg)
  local records, todo, done_before = dataset.plan_work(c.items, prev, ds, cfg, fp, RECORD_KEYS)
  log(cfg, "dataset: %d files, %d beats after de-duplication; this run (shard %d/%d): %d to build, %d done before",
      #c.items, #c.kept, cfg.shard_i, cfg.shard_n, #todo, done_before)

  local bar = progress.new { total = #todo, label = "dataset", unit = "beats", quiet = cfg.quiet }
  local jobs = cfg.jobs > 0 and cfg.jobs or sao.threads()
  local parallel = jobs > 1 and #todo > 1
  local journal = #todo > 0 and not parallel and assert(io.open(jpath, "ab")) or nil
  local built = 0
  if parallel then
    -- worker processes (the instrumental stage's machinery), one beat at a time each
    cfg.jobs, cfg.builder = jobs, "sao.pipeline.beats"
    for src, rec in pairs(dataset.build_parallel(todo, cfg, ds, nil, fp, bar)) do
      records[src] = rec
      built = built + 1
    end
    cfg.builder = nil
    todo = {}
  end
  for _, it in ipairs(todo) do
    bar:start(it.artist .. "/" .. it.title)
    local ok, rec = xpcall(M.build_beat, debug.traceback, it, cfg, ds, fp)
    if not ok then
      fs.rm_rf(ds .. "/clips/" .. it.artist_dir .. "/" .. it.song_dir)
      if tostring(rec):match("interrupted") then
        journal:close()
        bar:finish()
        error("dataset: interrupted; run again to resume", 0)
      end
      rec = ojson.object({ source = it.source, status = "failed", reason = "build error: " .. tostring(rec):match("^[^\n]*"),
                           kind = "build-error", outputs = ojson.array {}, hash = it.hash, fingerprint = fp }, RECORD_KEYS)
    end
    if rec.status == "failed" then bar:print("dataset: " .. dir .. "/" .. it.source .. ": " .. tostring(rec.reason)) end
    records[it.source] = rec
    built = built + 1
    journal:write(ojson.encode(rec), "\n")
    journal:flush()
    bar:advance(1)
  end
  if journal then journal:close() end
  bar:finish()

  local lines = {}
  local s = { files = #c.items, kept = 0, built = built, done_before = done_before, failed = 0, skipped = 0,
              clips = 0, clip_seconds = 0, reasons = {}, manifest = mpath, demo = is_demo,
              jobs = parallel and jobs or 1 }
  for _, it in ipairs(c.items) do
    local r = records[it.source]
    if r then
      lines[#lines + 1] = ojson.encode(r)
      if r.status == "kept" then
        s.kept = s.kept + 1
        s.clips = s.clips + (r.clips or 0)
        for _, o in ipairs(r.outputs or {}) do
          local meta = o:match("%.json$") and ojson.read(ds .. "/" .. o)
          if meta and meta.duration then s.clip_seconds = s.clip_seconds + meta.duration end
        end
      else
        if r.status == "failed" then s.failed = s.failed + 1 else s.skipped = s.skipped + 1 end
        local key = r.status .. ": " .. tostring(r.kind)
        s.reasons[key] = (s.reasons[key] or 0) + 1
      end
    end
  end
  fs.write_atomic(mpath, table.concat(lines, "\n") .. (#lines > 0 and "\n" or ""))
  for _, j in ipairs(dataset.glob(dataset.journal_glob(ds, cfg))) do os.remove(j) end
  -- segments an earlier run wrote for a beat that is no longer kept (its file removed or now a
  -- duplicate of another): removed, so that later stages do not train on them
  local live = {}
  for _, r in pairs(records) do for _, o in ipairs(r.outputs or {}) do live[o] = true end end
  local stale = 0
  for _, r in pairs(prev) do
    for _, o in ipairs(type(r.outputs) == "table" and r.outputs or {}) do
      if not live[o] and o:match("^clips/") and os.remove(ds .. "/" .. o) then
        stale = stale + 1
        os.remove((ds .. "/" .. o):match("^(.*)/[^/]+$"))   -- the beat's folder, once empty
      end
    end
  end
  if stale > 0 then log(cfg, "dataset: removed %d file(s) of beats no longer in the folder", stale) end
  s.seconds = progress.now() - t0
  if not cfg.quiet then
    local out = io.stderr
    out:write("\n", is_demo and "dataset summary (DEMO beats)\n" or "dataset summary\n")
    local function row(k, v) out:write(string.format("  %-28s %s\n", k, v)) end
    row("audio files", s.files)
    row("beats kept", ("%d (%d built now, %d done before)"):format(s.kept, built, done_before))
    row("segments", ("%d (%.1f min)"):format(s.clips, s.clip_seconds / 60))
    row("skipped / failed", ("%d / %d"):format(s.skipped, s.failed))
    local keys = {}
    for k in pairs(s.reasons) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do row("  " .. k, s.reasons[k]) end
    row("time", progress.format_duration(s.seconds))
    row("manifest", mpath)
    out:write("\n")
  end
  return s
end

return M
