-- sao.audio — audio files, channel/length/level operations, mixing, resampling, loudness.
--
-- Audio is an f32 tensor [C, S] (channels first, as PyTorch and stable-audio-tools); a 1-D [S]
-- tensor is read as mono. Sample offsets and lengths are counts of samples from the start
-- (0 = the first sample), times are seconds. Every function returns new tensors; the input is
-- never modified. Definitions and measured accuracies: docs/analysis.md.
--
--   local audio, sr = sao.audio.load("a.flac")
--   local lufs = sao.audio.loudness(audio, sr)
--   local out, rep = sao.audio.normalize(audio, sr, -14, { limit = true })
--   sao.audio.save("out.wav", out, sr, { subtype = "pcm24" })
local ffi = require "ffi"
local sao = require "sao"

local C, ctx, check = sao.C, sao.ctx, sao.check
local wrap = sao.tensor_from_ptr

local M = {}

local raw = sao.tensor_arg   -- raw(t, what): the C pointer of an argument, or an error naming it

local QUALITY = { best = 0, sinc_best = 0, medium = 1, sinc_medium = 1, fastest = 2, sinc_fastest = 2,
                  zoh = 3, zero_order_hold = 3, linear = 4 }
local function quality_of(q)
  if q == nil then return 0 end
  if type(q) == "number" then return q end
  local v = QUALITY[q]
  if not v then error("unknown resampling quality '" .. tostring(q) .. "' (best, medium, fastest, zoh, linear)", 3) end
  return v
end

local LMODE = { ebur128 = 0, pyloudnorm = 1, bs1770 = 2 }
local function lmode_of(m)
  if m == nil then return 0 end
  if type(m) == "number" then return m end
  local v = LMODE[m]
  if not v then error("unknown loudness mode '" .. tostring(m) .. "' (ebur128, pyloudnorm, bs1770)", 3) end
  return v
end

-- ---- files ---------------------------------------------------------------------------------

--- info(path) -> {frames, sample_rate, channels, duration, format, subtype}
function M.info(path)
  local inf = ffi.new("sao_audio_info")
  check(C.sao_audio_info_read(ctx, path, inf), 2)
  return {
    frames = tonumber(inf.frames), sample_rate = inf.sample_rate, channels = inf.channels,
    duration = inf.duration, format = ffi.string(inf.format), subtype = ffi.string(inf.subtype),
  }
end

--- load(path, opts) -> audio [C, S] f32, sample_rate.
--- opts: offset, duration (seconds) or start, frames (samples); sr (resample to this rate,
--- quality); mono = true or channels = n (channel conversion).
function M.load(path, opts)
  opts = opts or {}
  local sr = ffi.new("int[1]")
  local start, count = opts.start or 0, opts.frames or -1
  if opts.offset or opts.duration then
    local file_sr = M.info(path).sample_rate
    start = math.floor((opts.offset or 0) * file_sr + 0.5)
    count = opts.duration and math.floor(opts.duration * file_sr + 0.5) or -1
  end
  local a = wrap(C.sao_audio_load_range(ctx, path, start, count, sr))
  local rate = sr[0]
  if opts.mono then a = M.to_mono(a) end
  if opts.channels then a = M.to_channels(a, opts.channels) end
  if opts.sr and opts.sr ~= rate then
    a = M.resample(a, rate, opts.sr, opts.quality)
    rate = opts.sr
  end
  return a, rate
end

--- save(path, audio, sr, {format = "wav"|"flac"|"ogg", subtype = "float"|"pcm16"|"pcm24"|"pcm32"})
--- Atomic (temporary file + rename). Defaults: format from the extension, wav float, flac pcm24.
function M.save(path, audio, sr, opts)
  opts = opts or {}
  check(C.sao_audio_save(ctx, path, raw(audio), sr, opts.format, opts.subtype), 2)
  return path
end

-- ---- channels, length, level -----------------------------------------------------------------

function M.to_mono(a) return wrap(C.sao_audio_to_mono(ctx, raw(a))) end
function M.to_channels(a, n) return wrap(C.sao_audio_to_channels(ctx, raw(a), n)) end
--- slice(a, start, count): samples [start, start + count) (count nil: to the end), clamped.
function M.slice(a, start, count) return wrap(C.sao_audio_slice(ctx, raw(a), start or 0, count or -1)) end
--- trim(a, sr, t0, t1): the part between t0 and t1 seconds (t1 nil: to the end).
function M.trim(a, sr, t0, t1)
  local s0 = math.floor((t0 or 0) * sr + 0.5)
  local n = t1 and (math.floor(t1 * sr + 0.5) - s0) or -1
  return M.slice(a, s0, n)
end
function M.pad(a, before, after) return wrap(C.sao_audio_pad(ctx, raw(a), before or 0, after or 0)) end
--- fit(a, n): zero-pad at the end or cut to exactly n samples.
function M.fit(a, n) return wrap(C.sao_audio_fit(ctx, raw(a), n)) end
function M.gain(a, db) return wrap(C.sao_audio_gain(ctx, raw(a), db)) end

--- peak_normalize(a, dbfs = 0) -> audio, gain_db
function M.peak_normalize(a, dbfs)
  local g = ffi.new("double[1]")
  local out = wrap(C.sao_audio_peak_normalize(ctx, raw(a), dbfs or 0, g))
  return out, g[0]
end

--- clip(a, limit = 1) -> clipped copy, number of samples clipped
function M.clip(a, limit)
  local out = a:dtype() == "f32" and a:clone() or a:float()
  local n = C.sao_audio_clip_(ctx, out:raw(), limit or 1)
  if n < 0 then check(-1, 2) end
  return out, tonumber(n)
end

--- quantize(a, bits = 16): the result of writing integer PCM and reading it back.
function M.quantize(a, bits)
  local out = a:dtype() == "f32" and a:clone() or a:float()
  check(C.sao_audio_quantize_(ctx, out:raw(), bits or 16), 2)
  return out
end

--- stats(a) -> {peak, rms, peak_db, rms_db, crest_db, dc, clipped}
function M.stats(a)
  local s = ffi.new("sao_audio_stats")
  check(C.sao_audio_stats_compute(ctx, raw(a), s), 2)
  return { peak = s.peak, rms = s.rms, peak_db = s.peak_db, rms_db = s.rms_db, crest_db = s.crest_db,
           dc = s.dc, clipped = tonumber(s.clipped) }
end

--- silence_bounds(a, sr, {threshold_db = -50, chunk = 0.01}) -> start, stop (samples; stop exclusive)
function M.silence_bounds(a, sr, opts)
  opts = opts or {}
  local s, e = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  check(C.sao_audio_silence_bounds(ctx, raw(a), sr, opts.threshold_db or -50, opts.chunk or 0.01, s, e), 2)
  return tonumber(s[0]), tonumber(e[0])
end

--- trim_silence(a, sr, opts) -> trimmed audio, start, stop
function M.trim_silence(a, sr, opts)
  local s, e = M.silence_bounds(a, sr, opts)
  return M.slice(a, s, e - s), s, e
end

--- mix({a, b, ...}, {mode = "sum"|"mean", gains_db = {...}}): zero-padded to the longest track;
--- mono tracks join stereo ones duplicated.
function M.mix(tracks, opts)
  opts = opts or {}
  local n = #tracks
  if n == 0 then error("mix: no tracks", 2) end
  local arr = ffi.new("sao_tensor *[?]", n)
  for i = 1, n do arr[i - 1] = raw(tracks[i], "track " .. i) end
  local gains = nil
  if opts.gains_db then
    gains = ffi.new("double[?]", n)
    for i = 1, n do gains[i - 1] = opts.gains_db[i] or 0 end
  end
  local mode = (opts.mode == nil or opts.mode == "sum") and 0 or (opts.mode == "mean" and 1)
  if not mode then error("mix: mode must be 'sum' or 'mean'", 2) end
  return wrap(C.sao_audio_mix(ctx, arr, n, gains, mode))
end

-- ---- resampling ------------------------------------------------------------------------------

--- resample(a, sr_in, sr_out, quality = "best"): libsamplerate; exactly ceil(S * sr_out / sr_in)
--- samples out. quality: best, medium, fastest, zoh, linear (or 0..4).
function M.resample(a, sr_in, sr_out, quality)
  return wrap(C.sao_audio_resample(ctx, raw(a), sr_in, sr_out, quality_of(quality)))
end

-- ---- loudness --------------------------------------------------------------------------------

--- loudness(a, sr, {mode = "ebur128"|"pyloudnorm"|"bs1770"}) -> integrated LUFS (-inf for silence or
--- audio shorter than 0.4 s)
function M.loudness(a, sr, opts)
  local v = ffi.new("double[1]")
  check(C.sao_loudness_integrated(ctx, raw(a), sr, lmode_of(opts and opts.mode), v), 2)
  return v[0]
end

--- loudness_range(a, sr) -> LRA (LU), via libebur128
function M.loudness_range(a, sr)
  local v = ffi.new("double[1]")
  check(C.sao_loudness_range_true_peak(ctx, raw(a), sr, v, nil), 2)
  return v[0]
end

--- true_peak(a, sr) -> linear true peak (4x oversampled), dBTP
function M.true_peak(a, sr)
  local v = ffi.new("double[1]")
  check(C.sao_loudness_range_true_peak(ctx, raw(a), sr, nil, v), 2)
  return v[0], v[0] > 0 and 20 * math.log10(v[0]) or -math.huge
end

local function report_table(r)
  return {
    lufs_before = r.lufs_before, lufs_after = r.lufs_after, gain_db = r.gain_db,
    peak_before = r.peak_before, peak_after = r.peak_after,
    peak_before_db = r.peak_before > 0 and 20 * math.log10(r.peak_before) or -math.huge,
    peak_after_db = r.peak_after > 0 and 20 * math.log10(r.peak_after) or -math.huge,
    limiter_max_gr_db = r.limiter_max_gr_db,
    would_clip = r.would_clip ~= 0, clipped = r.clipped ~= 0, limited = r.limited ~= 0,
    silent = r.silent ~= 0,
  }
end

--- normalize(a, sr, target_lufs, opts) -> audio, report
--- opts: mode ("ebur128" | "pyloudnorm" | "bs1770"), ceiling_db (0), peak_guard (true: report when the
--- gain would put the sample peak above the ceiling; "reduce": lower the gain to fit),
--- limit (false; true: apply the full gain and a look-ahead limiter at the ceiling).
--- report: lufs_before/after, gain_db, peak_before/after (linear and _db), would_clip, clipped,
--- limited, limiter_max_gr_db, silent.
function M.normalize(a, sr, target, opts)
  opts = opts or {}
  local guard = 0
  if opts.limit then guard = 2 elseif opts.peak_guard == "reduce" then guard = 1 end
  local r = ffi.new("sao_normalize_report")
  local out = wrap(C.sao_loudness_normalize(ctx, raw(a), sr, target, lmode_of(opts.mode), guard,
                                            opts.ceiling_db or 0, r))
  return out, report_table(r)
end

--- limit(a, sr, ceiling_db = -1) -> audio, deepest gain reduction (dB)
function M.limit(a, sr, ceiling_db)
  local g = ffi.new("double[1]")
  local out = wrap(C.sao_audio_limit(ctx, raw(a), sr, ceiling_db or -1, g))
  return out, g[0]
end

return M
