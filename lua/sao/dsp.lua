-- sao.dsp — spectral front end and audio features (librosa / Essentia conventions).
--
-- Spectrograms are [C, F, T] tensors (librosa layout; F = n_fft/2 + 1), complex STFTs
-- [C, F, T, 2] (real, imaginary). Frame t is centred at t*hop samples. STFT options (all
-- optional, librosa defaults): n_fft 2048, hop 512, win_length n_fft, window "hann",
-- periodic true, center true, pad_mode "constant" ("reflect", "edge").
-- Features work on the mono mix at the audio's own rate. Definitions: docs/analysis.md.
--
--   local f = sao.dsp.features(audio, sr)          -- centroid, flatness, hp_ratio, onset_rate, ...
--   local env = sao.dsp.onset_strength(audio, sr)  -- librosa.onset.onset_strength
local ffi = require "ffi"
local sao = require "sao"

local C, ctx, check = sao.C, sao.ctx, sao.check
local wrap = sao.tensor_from_ptr

local M = {}

local raw = sao.tensor_arg   -- raw(t, what): the C pointer of an argument, or an error naming it

--- window type number from a name ("hann", "hamming", "blackman", "blackmanharris",
--- "blackmanharris62", "blackmanharris70", "blackmanharris74", "triangular", "rect")
function M.window_type(name)
  if type(name) == "number" then return name end
  local v = C.sao_window_from_name(ctx, name or "hann")
  if v < 0 then check(-1, 3) end
  return v
end

--- window(name, n, {periodic = true}) -> f32 [n]
function M.window(name, n, opts)
  local periodic = not (opts and opts.periodic == false)
  return wrap(C.sao_window(ctx, M.window_type(name), n, periodic and 1 or 0))
end

local PAD = { constant = 0, reflect = 1, edge = 2 }

--- An sao_stft_cfg from an options table (nil fields: librosa defaults).
function M.stft_cfg(o)
  o = o or {}
  local c = ffi.new("sao_stft_cfg")
  C.sao_stft_cfg_default(ctx, c)
  if o.n_fft then c.n_fft = o.n_fft; c.win_length = o.n_fft; c.hop = math.floor(o.n_fft / 4) end
  if o.hop or o.hop_length then c.hop = o.hop or o.hop_length end
  if o.win_length then c.win_length = o.win_length end
  if o.window then c.window = M.window_type(o.window) end
  if o.periodic ~= nil then c.periodic = o.periodic and 1 or 0 end
  if o.center ~= nil then c.center = o.center and 1 or 0 end
  if o.pad_mode then
    local p = PAD[o.pad_mode]
    if not p then error("unknown pad_mode '" .. tostring(o.pad_mode) .. "' (constant, reflect, edge)", 3) end
    c.pad_mode = p
  end
  return c
end

-- ---- STFT ----------------------------------------------------------------------------------------

--- stft(audio, opts) -> [C, F, T, 2]
function M.stft(a, opts) return wrap(C.sao_stft(ctx, raw(a), M.stft_cfg(opts))) end
--- istft(spec, opts, length) -> [C, S] (length nil: n_fft + hop (T-1) - 2 (n_fft/2) when centred)
function M.istft(spec, opts, length)
  return wrap(C.sao_istft(ctx, raw(spec, "spectrum"), M.stft_cfg(opts), length or -1))
end
--- spectrogram(audio, opts) -> |STFT|^power [C, F, T] (opts.power, default 1: magnitude)
function M.spectrogram(a, opts)
  return wrap(C.sao_spectrogram(ctx, raw(a), M.stft_cfg(opts), (opts and opts.power) or 1))
end

-- ---- mel / chroma -------------------------------------------------------------------------------------

--- mel_filterbank(sr, n_fft, {n_mels = 128, fmin = 0, fmax = sr/2, htk = false, norm = "slaney"})
--- -> [n_mels, F] (librosa.filters.mel)
function M.mel_filterbank(sr, n_fft, o)
  o = o or {}
  local norm = o.norm == nil or o.norm == "slaney"
  return wrap(C.sao_mel_filterbank(ctx, sr, n_fft or 2048, o.n_mels or 128, o.fmin or 0, o.fmax or 0,
                                   o.htk and 1 or 0, norm and 1 or 0))
end

--- melspectrogram(audio, sr, opts) -> [C, n_mels, T]; opts: STFT options, n_mels, fmin, fmax, power (2)
function M.melspectrogram(a, sr, o)
  o = o or {}
  return wrap(C.sao_melspectrogram(ctx, raw(a), sr, M.stft_cfg(o), o.n_mels or 128, o.fmin or 0, o.fmax or 0,
                                   o.power or 2))
end

--- power_to_db(S, {ref = 1, amin = 1e-10, top_db = 80}) -> new tensor (top_db = false: no floor)
function M.power_to_db(S, o)
  o = o or {}
  local out = S:dtype() == "f32" and S:clone() or S:float()
  local top = o.top_db
  if top == nil then top = 80 elseif top == false then top = 0 end
  check(C.sao_power_to_db_(ctx, out:raw(), o.ref or 1, o.amin or 1e-10, top), 2)
  return out
end

--- chroma_filterbank(sr, n_fft, {n_chroma = 12, tuning = 0, ctroct = 5, octwidth = 2, base_c = true})
function M.chroma_filterbank(sr, n_fft, o)
  o = o or {}
  local octw = o.octwidth
  if octw == nil then octw = 2 elseif octw == false then octw = 0 end
  return wrap(C.sao_chroma_filterbank(ctx, sr, n_fft or 2048, o.n_chroma or 12, o.tuning or 0, o.ctroct or 5,
                                      octw, o.base_c == false and 0 or 1))
end

--- chroma_stft(audio, sr, opts) -> [C, n_chroma, T] (tuning given, default 0: not estimated)
function M.chroma_stft(a, sr, o)
  o = o or {}
  return wrap(C.sao_chroma_stft(ctx, raw(a), sr, M.stft_cfg(o), o.n_chroma or 12, o.tuning or 0))
end

-- ---- peaks / HPCP -------------------------------------------------------------------------------------

local function floats(t)
  if sao.is_tensor(t) then
    local c = t:contiguous()
    if c:dtype() ~= "f32" then c = c:float() end
    return c:data(), c:numel(), c
  end
  local n = #t
  local a = ffi.new("float[?]", n)
  for i = 1, n do a[i - 1] = t[i] end
  return a, n, a
end

--- spectral_peaks(mag, sr, {fmin = 0, fmax = sr/2, threshold = 0, max_peaks = 100,
---   order = "magnitude"|"frequency"}) -> freqs, mags (Lua lists). mag: magnitude spectrum
--- (tensor or list) of n_fft/2 + 1 bins.
function M.spectral_peaks(mag, sr, o)
  o = o or {}
  local m, n, keep = floats(mag)
  local maxp = o.max_peaks or 100
  local f, v = ffi.new("float[?]", maxp), ffi.new("float[?]", maxp)
  local k = C.sao_spectral_peaks(ctx, m, n, sr, o.fmin or 0, o.fmax or sr / 2, o.threshold or 0, maxp,
                                 o.order == "frequency" and 0 or 1, f, v)
  if k < 0 then check(-1, 2) end
  local fr, mg = {}, {}
  for i = 0, k - 1 do fr[i + 1], mg[i + 1] = f[i], v[i] end
  local _ = keep
  return fr, mg
end

local WEIGHT = { none = 0, cosine = 1, squared_cosine = 2, squaredcosine = 2 }
local NORM = { none = 0, unit_max = 1, unitmax = 1, unitMax = 1, unit_sum = 2, unitsum = 2, unitSum = 2 }

local function hpcp_cfg(o, c)
  c = c or ffi.new("sao_hpcp_cfg")
  if o.size then c.size = o.size end
  if o.reference_hz then c.reference_hz = o.reference_hz end
  if o.harmonics then c.harmonics = o.harmonics end
  if o.weight then c.weight = WEIGHT[o.weight] or error("unknown HPCP weight '" .. tostring(o.weight) .. "'") end
  if o.window_semitones then c.window_semitones = o.window_semitones end
  if o.min_hz then c.min_hz = o.min_hz end
  if o.max_hz then c.max_hz = o.max_hz end
  if o.normalize then c.normalize = NORM[o.normalize] or error("unknown HPCP normalisation '" .. tostring(o.normalize) .. "'") end
  return c
end

--- hpcp(freqs, mags, opts) -> list of `size` values. opts: size 12, reference_hz 440,
--- harmonics 0, weight "cosine", window_semitones 1, min_hz 40, max_hz 5000, normalize "unit_max".
function M.hpcp(freqs, mags, o)
  o = o or {}
  local c = ffi.new("sao_hpcp_cfg", { 12, 440, 0, 1, 1.0, 40, 5000, 1 })
  hpcp_cfg(o, c)
  local f, n = floats(freqs)
  local m = floats(mags)
  local out = ffi.new("float[?]", c.size)
  check(C.sao_hpcp(ctx, f, m, n, c, out), 2)
  local r = {}
  for i = 0, c.size - 1 do r[i + 1] = out[i] end
  return r
end

--- hpcp_frames(audio, sr, preset = "keyextractor" | "edma", overrides) -> f32 [T, size]
function M.hpcp_frames(a, sr, preset, o)
  local c = ffi.new("sao_hpcp_frames_cfg")
  check(C.sao_hpcp_preset(ctx, preset or "keyextractor", c), 2)
  if o then
    for _, k in ipairs { "frame_size", "hop_size", "peak_min_hz", "peak_max_hz", "peak_threshold", "max_peaks" } do
      if o[k] then c[k] = o[k] end
    end
    if o.window then c.window = M.window_type(o.window) end
    if o.whitening ~= nil then c.whitening = o.whitening and 1 or 0 end
    if o.hpcp then hpcp_cfg(o.hpcp, c.hpcp) end
  end
  return wrap(C.sao_hpcp_frames(ctx, raw(a), sr, c))
end

-- ---- onsets ------------------------------------------------------------------------------------------

--- onset_strength(audio, sr, opts) -> f32 [T] (librosa.onset.onset_strength; frame t at t*hop/sr s).
--- opts: n_fft 2048, hop 512, n_mels 128, fmin 0, fmax sr/2, lag 1, max_size 1, center true,
--- detrend false, top_db 80, aggregate "mean"|"median".
function M.onset_strength(a, sr, o)
  o = o or {}
  local c = ffi.new("sao_onset_cfg")
  C.sao_onset_cfg_default(ctx, c)
  for _, k in ipairs { "n_fft", "n_mels", "fmin", "fmax", "lag", "max_size", "top_db" } do
    if o[k] then c[k] = o[k] end
  end
  if o.hop or o.hop_length then c.hop = o.hop or o.hop_length end
  if o.center ~= nil then c.center = o.center and 1 or 0 end
  if o.detrend ~= nil then c.detrend = o.detrend and 1 or 0 end
  if o.aggregate == "median" then c.aggregate_median = 1 end
  return wrap(C.sao_onset_strength(ctx, raw(a), sr, c))
end

--- peak_pick(env, {pre_max, post_max, pre_avg, post_avg, delta, wait}) -> i64 [K] frame indices (0-based)
function M.peak_pick(env, o)
  for _, k in ipairs { "pre_max", "post_max", "pre_avg", "post_avg", "delta", "wait" } do
    if type(o and o[k]) ~= "number" then
      error("peak_pick: option '" .. k .. "' is required (pre_max, post_max, pre_avg, post_avg, delta, wait)", 2)
    end
  end
  return wrap(C.sao_peak_pick(ctx, raw(env, "envelope"), o.pre_max, o.post_max, o.pre_avg, o.post_avg,
                              o.delta, o.wait))
end

--- onset_detect(env, sr, hop = 512) -> Lua list of onset times (s), and the i64 frame tensor
function M.onset_detect(env, sr, hop)
  hop = hop or 512
  local fr = wrap(C.sao_onset_detect(ctx, raw(env, "envelope"), sr, hop))
  local times = {}
  local n = fr:numel()
  if n > 0 then
    local d = fr:data()
    for i = 0, n - 1 do times[i + 1] = tonumber(d[i]) * hop / sr end
  end
  return times, fr
end

-- ---- frame features ---------------------------------------------------------------------------------

--- spectral_centroid(audio, sr, stft_opts) -> f32 [T] (Hz; 0 for silent frames)
function M.spectral_centroid(a, sr, o) return wrap(C.sao_spectral_centroid(ctx, raw(a), sr, M.stft_cfg(o))) end
--- spectral_flatness(audio, {amin = 1e-10, power = 2, ...stft}) -> f32 [T]
function M.spectral_flatness(a, o)
  o = o or {}
  return wrap(C.sao_spectral_flatness(ctx, raw(a), M.stft_cfg(o), o.amin or 1e-10, o.power or 2))
end
--- rms(audio, {frame_length = 2048, hop = 512, center = true}) -> f32 [T]
function M.rms(a, o)
  o = o or {}
  return wrap(C.sao_rms_frames(ctx, raw(a), o.frame_length or 2048, o.hop or o.hop_length or 512,
                               o.center == false and 0 or 1))
end

--- hpss(audio, {kernel = 31, power = 2, margin = 1, ...stft}) -> harmonic [1, S], percussive [1, S]
function M.hpss(a, o)
  o = o or {}
  local h, p = ffi.new("sao_tensor *[1]"), ffi.new("sao_tensor *[1]")
  check(C.sao_hpss(ctx, raw(a), M.stft_cfg(o), o.kernel or 31, o.power or 2, o.margin or 1, h, p), 2)
  return wrap(h[0]), wrap(p[0])
end

local FEATURE_FIELDS = {
  "duration", "sample_rate", "channels", "peak", "peak_db", "rms", "rms_db", "crest_db",
  "centroid_hz", "centroid_median_hz", "flatness", "flatness_median", "hp_ratio", "harmonic_energy",
  "percussive_energy", "transient_sharpness", "transient_flux_mean", "transient_flux_p95",
  "transient_crest", "rms_diff", "onset_rate",
}

--- features(audio, sr, opts) -> table (see sao_features in runtime/include/sao_dsp.h), and
--- the onset envelope f32 [T] when opts.onset_env is true.
--- opts: n_fft 2048, hop 512, hpss_kernel 31, hpss_power 2, hpss_margin 1, flux_gamma 1000,
--- hp_time_domain false (true: H/P energies from ISTFTs as librosa.effects.hpss).
function M.features(a, sr, o)
  o = o or {}
  local c = ffi.new("sao_features_cfg")
  C.sao_features_cfg_default(ctx, c)
  for _, k in ipairs { "n_fft", "hop", "hpss_kernel", "hpss_power", "hpss_margin", "flux_gamma" } do
    if o[k] then c[k] = o[k] end
  end
  if o.hp_time_domain then c.hp_time_domain = 1 end
  local f = ffi.new("sao_features")
  local env = o.onset_env and ffi.new("sao_tensor *[1]") or nil
  check(C.sao_features_compute(ctx, raw(a), sr, c, f, env), 2)
  local r = {}
  for _, k in ipairs(FEATURE_FIELDS) do r[k] = tonumber(f[k]) end
  r.samples, r.frames, r.onset_count = tonumber(f.samples), tonumber(f.frames), tonumber(f.onset_count)
  if env then return r, wrap(env[0]) end
  return r
end

return M
