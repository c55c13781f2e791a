-- Spectral front end and features (sao.dsp) against librosa 0.11.0 numbers computed on the same
-- signals (spec/fixtures/analysis_refs.json, written by spec/fixtures/analysis_refs.py from the
-- WAVs of spec/support/signals.lua), plus properties derived independently.
local sao = require "sao"
local cjson = require "cjson"
local sig = require "spec.support.signals"
require "spec.support.near"

local D = sao.dsp
local refs = cjson.decode(assert(io.open("spec/fixtures/analysis_refs.json")):read("*a"))
local cat = sig.catalogue()

local function rel(got, want) return math.abs(got - want) / math.max(math.abs(want), 1e-30) end
local function maxabs(t) return t:abs():max() end

-- column t (0-based) of a [1, F, T] spectrogram as a Lua list of the first n bins
local function column(S, t, n)
  local F, T = S:size(2), S:size(3)
  local d = S:contiguous():data()
  local out = {}
  for k = 0, math.min(n or F, F) - 1 do out[k + 1] = d[k * T + t] end
  return out
end

local function row_stats(fb)
  local M, F = fb:size(1), fb:size(2)
  local d = fb:contiguous():data()
  local s, m = {}, {}
  for i = 0, M - 1 do
    local a, b = 0, 0
    for k = 0, F - 1 do
      a = a + d[i * F + k]
      b = b + k * d[i * F + k]
    end
    s[i + 1], m[i + 1] = a, b
  end
  return s, m
end

describe("windows", function()
  it("match scipy's get_window (periodic and symmetric)", function()
    local map = { hann = "hann", hamming = "hamming", blackman = "blackman", blackmanharris = "blackmanharris",
                  triang = "triangular" }
    for key, want in pairs(refs.windows) do
      local name, n, kind = key:match("^(%a+)_(%d+)_(%a)$")
      local w = D.window(map[name], tonumber(n), { periodic = kind == "p" })
      assert.tensor_near(want, w, { abs = 2e-7 })      -- f32 rounding of the double formula
    end
  end)

  it("knows Essentia's Blackman-Harris variants and rejects unknown names", function()
    local w = D.window("blackmanharris62", 9, { periodic = false })
    assert.near(0.44959 - 0.49364 * math.cos(math.pi) + 0.05677 * math.cos(2 * math.pi), w[{ 5 }], 1e-6)
    assert.near(0.44959 - 0.49364 + 0.05677, w[{ 1 }], 1e-6)
    assert.error_matches(function() D.window("kaiser", 8) end, "unknown window 'kaiser'")
    assert.error_matches(function() D.window("hann", 0) end, "length 0")
  end)
end)

describe("STFT", function()
  local y = sao.audio.to_mono(cat.mixture_22k[1])
  local S = refs.stft

  it("matches librosa.stft magnitudes (2048/512, constant padding)", function()
    local M = D.spectrogram(y)
    assert.same({ 1, 1025, S.default_frames }, M:shape())
    for t, want in pairs(S.default_cols) do
      local got = column(M, tonumber(t), 200)
      -- f32 FFT vs librosa's f64 FFT rounded to complex64: measured max err 4.2e-7 of the peak
      local peak = 0
      for _, v in ipairs(want) do peak = math.max(peak, v) end
      assert.tensor_near(want, got, { abs = 2e-5 * peak + 1e-6 })
    end
  end)

  it("matches librosa with reflect padding and with a short, non-Hann window", function()
    local M = D.spectrogram(y, { n_fft = 512, hop = 128, pad_mode = "reflect" })
    assert.equal(S.reflect512_frames, M:size(3))
    for t, want in pairs(S.reflect512_cols) do
      assert.tensor_near(want, column(M, tonumber(t)), { abs = 2e-4, rel = 2e-5 })
    end
    local H = D.spectrogram(y, { n_fft = 1024, hop = 256, win_length = 600, window = "hamming" })
    for t, want in pairs(S.hamming600_cols) do
      assert.tensor_near(want, column(H, tonumber(t)), { abs = 2e-4, rel = 2e-5 })
    end
  end)

  it("round-trips through the ISTFT (multi-channel, both paddings, given length)", function()
    local x = cat.mixture_48k[1]
    for _, o in ipairs { {}, { pad_mode = "reflect" }, { n_fft = 1024, hop = 256, win_length = 800, window = "hamming" } } do
      local X = D.stft(x, o)
      assert.equal(4, X:dim())
      assert.equal(2, X:size(1))
      local z = D.istft(X, o, x:size(2))
      assert.same(x:shape(), z:shape())
      assert.is_true(maxabs(z - x) < 2e-6, "istft error " .. maxabs(z - x))   -- measured 1.2e-7
    end
    -- default length: n_fft + hop (T - 1) - 2 (n_fft / 2)
    local X = D.stft(sao.zeros(1, 1000))
    assert.equal(512 * (X:size(3) - 1), D.istft(X):size(2))
  end)

  it("gives power spectrograms and mel spectrograms with librosa's shapes", function()
    local P = D.spectrogram(y, { power = 2 })
    local M = D.spectrogram(y)
    assert.tensor_near((M * M):totable(), P, { abs = 1e-3, rel = 1e-5 })
    local mel = D.melspectrogram(y, 22050)
    assert.same({ 1, 128, S.default_frames }, mel:shape())
    local db = D.power_to_db(mel)
    assert.near(db:max() - 80, db:min(), 1e-3)          -- top_db floor
    assert.near(-100, D.power_to_db(sao.zeros(1, 4), { top_db = false }):max(), 1e-4)
  end)

  it("rejects bad configurations and inputs", function()
    assert.error_matches(function() D.spectrogram(y, { n_fft = 1 }) end, "n_fft 1")
    assert.error_matches(function() D.spectrogram(y, { win_length = 4096 }) end, "exceeds n_fft")
    assert.error_matches(function() D.spectrogram(sao.zeros(1, 100), { center = false }) end, "too short")
    assert.error_matches(function() D.spectrogram(sao.zeros(2, 2, 2)) end, "%[C, S%]")
    assert.error_matches(function() D.istft(sao.zeros(1, 10, 3, 2)) end, "needs 1025")
    assert.error_matches(function() D.istft(sao.zeros(10, 3)) end, "%[C, F, T, 2%]")
    assert.error_matches(function() D.stft(y, { pad_mode = "wrap" }) end, "unknown pad_mode")
  end)
end)

describe("filterbanks", function()
  it("builds librosa's Slaney and HTK mel filterbanks", function()
    local cases = {
      sr22050_nfft2048_n128 = D.mel_filterbank(22050, 2048),
      sr44100_nfft2048_n40_htk_fmin30_fmax8000 = D.mel_filterbank(44100, 2048,
        { n_mels = 40, htk = true, fmin = 30, fmax = 8000 }),
      sr48000_nfft1024_n64_nonorm = D.mel_filterbank(48000, 1024, { n_mels = 64, norm = false }),
    }
    for key, fb in pairs(cases) do
      local s, m = row_stats(fb)
      -- per-row sum and first moment pin every triangle; measured rel err 7e-8 (f32 storage)
      assert.tensor_near(refs.mel[key].sum, s, { rel = 1e-5, abs = 1e-9 })
      assert.tensor_near(refs.mel[key].moment, m, { rel = 1e-5, abs = 1e-7 })
    end
  end)

  it("builds librosa's chroma filterbank", function()
    local cases = {
      sr22050_nfft2048 = D.chroma_filterbank(22050, 2048),
      ["sr44100_nfft4096_tuning0.2"] = D.chroma_filterbank(44100, 4096, { tuning = 0.2 }),
    }
    for key, fb in pairs(cases) do
      local s, m = row_stats(fb)
      assert.tensor_near(refs.chroma_fb[key].sum, s, { rel = 1e-5 })
      assert.tensor_near(refs.chroma_fb[key].moment, m, { rel = 1e-5 })
    end
  end)

  it("computes chroma_stft as librosa with tuning 0", function()
    for _, name in ipairs { "pad_44k", "mixture_22k", "sine1k_44k" } do
      local a, sr = cat[name][1], cat[name][2]
      local ch = D.chroma_stft(sao.audio.to_mono(a), sr)
      local mean = ch:mean(3):contiguous():view(12)
      assert.tensor_near(refs.signals[name].chroma_mean, mean, { abs = 1e-5 })   -- measured 1.1e-6
    end
  end)
end)

describe("spectral peaks and HPCP", function()
  it("finds parabolic peaks, keeps the largest and orders them", function()
    local mag = {}
    for k = 1, 513 do mag[k] = 0 end
    -- parabola samples around bin 100 with its top at 100.25 (height 1), one at bin 300
    for d = -1, 1 do mag[101 + d] = 1 - 0.5 * (d - 0.25) ^ 2 end
    mag[301], mag[300], mag[302] = 0.5, 0.25, 0.25
    local sr = 1024                               -- 1 Hz per bin for n_fft 1024
    local f, m = D.spectral_peaks(mag, sr)
    assert.same(2, #f)
    assert.near(100.25, f[1], 1e-4)
    assert.near(1, m[1], 1e-6)
    assert.near(300, f[2], 1e-6)
    local f1 = D.spectral_peaks(mag, sr, { max_peaks = 1 })
    assert.near(100.25, f1[1], 1e-4)
    local f2 = D.spectral_peaks(mag, sr, { fmin = 150 })
    assert.same({ 300 }, f2)
    local f3 = D.spectral_peaks(mag, sr, { threshold = 0.6 })
    assert.equal(1, #f3)
    local f4 = D.spectral_peaks({ 0, 0.2, 1, 0.2, 0.1, 0.9, 0.1, 0 }, 14, { order = "frequency" })
    assert.near(2, f4[1], 1e-6)
    assert.near(5, f4[2], 1e-6)
  end)

  it("builds the harmonic pitch-class profile with harmonics and cosine weights", function()
    -- one peak at C4 (bin 0 = A): its own class gets 1, nothing else without harmonics
    local h = D.hpcp({ 261.6256 }, { 1 }, { size = 12, normalize = "none" })
    assert.near(1, h[4], 1e-4)
    for i, v in ipairs(h) do if i ~= 4 then assert.near(0, v, 1e-9) end end
    -- 4 harmonics: the peak also counts for the fundamentals it could be a harmonic of:
    -- strength^2 = 9 at its class, 1 a fifth below (F), 0.861^2 a major third below (G#)
    local hh = D.hpcp({ 261.6256 }, { 1 }, { size = 12, harmonics = 4, normalize = "none" })
    assert.near(9, hh[4], 1e-3)
    assert.near(math.cos(math.pi * 0.01955), hh[9], 1e-3)            -- F: 7.02 semitones below
    local third = 12 * math.log(5) / math.log(2) - 24                -- 3.863 semitones
    assert.near((1 / (0.5 * math.log(5) / math.log(2))) ^ 2 * math.cos(math.pi * (4 - third)), hh[12], 1e-3)
    -- a peak between two bins splits by the cosine window; unitMax normalises to 1
    local hb = D.hpcp({ 440 * 2 ^ (0.25 / 12) }, { 1 })
    assert.near(1, hb[1], 1e-6)
    assert.near(math.cos(math.pi * 0.75) < 0 and 0 or 0, hb[2], 1e-6)   -- |d| = 0.75 > 0.5: no share
    local h36 = D.hpcp({ 440 * 2 ^ (1 / 36) }, { 1 }, { size = 36 })
    assert.near(1, h36[2], 1e-6)
    assert.error_matches(function() D.hpcp({ 1 }, { 1 }, { size = 10 }) end, "multiple of 12")
  end)

  it("whitens peaks against the spectral envelope", function()
    -- flat spectrum at 0.01 with one strong and one buried peak
    local n_bins, sr = 2049, 44100
    local mag = {}
    for k = 1, n_bins do mag[k] = 0.01 end
    local ffi = require "ffi"
    local m = ffi.new("float[?]", n_bins)
    for k = 0, n_bins - 1 do m[k] = mag[k + 1] end
    m[100] = 1.0
    local f = ffi.new("float[2]", { 100 * sr / 4096, 200 * sr / 4096 })
    local v = ffi.new("float[2]", { 1.0, 0.0001 })
    sao.check(sao.C.sao_spectral_whitening(sao.ctx, m, n_bins, sr, 3500, f, v, 2))
    -- the strong peak sits above its envelope: 0 dB minus the 20 dB / 4 kHz tilt
    assert.near(10 ^ (-(20 * f[0] / 4000) / 20), v[0], 1e-4)
    -- the buried one is 40 dB under the envelope: -200 dB
    assert.is_true(v[1] < 1e-9)
    -- peaks above 1.2 max_freq - 100 Hz are left as they are
    local hi = ffi.new("float[1]", { 5000 })
    local hv = ffi.new("float[1]", { 0.0001 })
    sao.check(sao.C.sao_spectral_whitening(sao.ctx, m, n_bins, sr, 3500, hi, hv, 1))
    assert.near(0.0001, hv[0], 1e-9)
  end)

  it("runs the Essentia key front end per frame with both presets", function()
    local sr = 44100
    -- A major triad (A3 C#4 E4), 3 s
    local x = sig.make(1, sr * 3, function(_, i)
      local t = i / sr
      return 0.2 * (math.sin(2 * math.pi * 220 * t) + math.sin(2 * math.pi * 277.18 * t) +
                    math.sin(2 * math.pi * 329.63 * t))
    end)
    local H = D.hpcp_frames(x, sr, "keyextractor")
    -- frames centred at k*4096 while k*4096 - 2048 < S
    assert.same({ math.ceil((sr * 3 + 2048) / 4096), 12 }, H:shape())
    local mean = H:mean(1)
    local best = {}
    for i = 1, 12 do best[i] = { i, mean[{ i }] } end
    table.sort(best, function(a, b) return a[2] > b[2] end)
    local top = { best[1][1], best[2][1], best[3][1] }
    table.sort(top)
    assert.same({ 1, 5, 8 }, top)                 -- A, C#, E (bin 1 = A)
    local E = D.hpcp_frames(x, sr, "edma")
    assert.same({ math.ceil((sr * 3 + 2048) / 2048), 36 }, E:shape())
    assert.near(1, E:max(), 1e-6)                  -- unitMax per frame
    local em = E:mean(1)
    assert.is_true(em[{ 1 }] > 0.5 and em[{ 13 }] > 0.3 and em[{ 22 }] > 0.3)   -- A, C#, E
    assert.error_matches(function() D.hpcp_frames(x, sr, "weird") end, "unknown preset")
  end)
end)

describe("onsets", function()
  it("matches librosa.onset.onset_strength", function()
    for name, v in pairs(cat) do
      local R = refs.signals[name]
      local env = D.onset_strength(v[1], v[2])
      assert.equal(R.onset_env_len, env:numel())
      assert.is_true(rel(env:mean(), R.onset_env_mean) < 1e-3, name)   -- measured <= 2e-4 (pure sine)
      assert.is_true(rel(env:max(), R.onset_env_max) < 1e-3, name)
      if R.onset_env then
        -- whole envelope, measured max abs err 8.6e-6 (dB units)
        assert.tensor_near(R.onset_env, env, { abs = 1e-3 * R.onset_env_max })
      end
    end
  end)

  it("detects the same onset frames as librosa.onset.onset_detect", function()
    for name, v in pairs(cat) do
      local env = D.onset_strength(v[1], v[2])
      local times, frames = D.onset_detect(env, v[2], 512)
      local got = {}
      local d = frames:data()
      for i = 0, frames:numel() - 1 do got[i + 1] = tonumber(d[i]) end
      assert.same(refs.signals[name].onset_frames, got, name)
      assert.equal(#got, #times)
    end
  end)

  it("peak-picks as librosa.util.peak_pick", function()
    local x = sao.tensor(refs.peak_pick.x)
    local function picks(o)
      local p = D.peak_pick(x, o)
      local r, d = {}, p:data()
      for i = 0, p:numel() - 1 do r[i + 1] = tonumber(d[i]) end
      return r
    end
    assert.same(refs.peak_pick.p1, picks { pre_max = 1, post_max = 1, pre_avg = 2, post_avg = 2, delta = 0.1, wait = 1 })
    assert.same(refs.peak_pick.p2, picks { pre_max = 3, post_max = 2, pre_avg = 3, post_avg = 3, delta = 0.5, wait = 3 })
  end)

  it("finds click-track onsets at the clicks", function()
    local x = sig.clicks(22050, 4, 120)
    local times = D.onset_detect(D.onset_strength(x, 22050), 22050)
    -- clicks at 0, 0.5, ... 3.5 s; the one at t = 0 has nothing to rise from (the envelope's
    -- first lag + n_fft/(2 hop) frames are zero padding, as in librosa)
    assert.equal(7, #times)
    for i, t in ipairs(times) do assert.near(i * 0.5, t, 0.025) end
  end)
end)

describe("features", function()
  it("match librosa (centroid, flatness, HPSS ratio, RMS) and our numpy references", function()
    for name, v in pairs(cat) do
      local R = refs.signals[name]
      local f = D.features(v[1], v[2])
      -- measured worst rel errors over the catalogue: centroid 9e-6, flatness 9e-7,
      -- hp_ratio 3e-7, transient sharpness 1.5e-3 (pure tones, near f32 resolution), rms_diff 6e-7
      assert.is_true(rel(f.centroid_hz, R.centroid_mean) < 1e-4, name .. " centroid")
      assert.is_true(rel(f.flatness, R.flatness_mean) < 1e-4, name .. " flatness")
      assert.is_true(rel(f.hp_ratio, R.hp_ratio_spec) < 1e-4, name .. " hp_ratio")
      assert.is_true(rel(f.transient_sharpness, R.transient_sharpness) < 5e-3, name .. " sharpness")
      assert.is_true(rel(f.transient_flux_mean, R.transient_flux_mean) < 5e-3, name .. " flux mean")
      assert.is_true(rel(f.rms_diff, R.rms_diff) < 1e-4, name .. " rms_diff")
      assert.equal(R.centroid_frames, f.frames)
      assert.equal(#R.onset_frames, f.onset_count)
      assert.near(#R.onset_frames / (R.samples / R.sr), f.onset_rate, 1e-9)
      assert.near(R.samples / R.sr, f.duration, 1e-12)
    end
  end)

  it("reproduces librosa.effects.hpss energies in time-domain mode", function()
    for _, name in ipairs { "drums_44k", "mixture_22k", "pad_44k" } do
      local v = cat[name]
      local f = D.features(v[1], v[2], { hp_time_domain = true })
      assert.is_true(rel(f.hp_ratio, refs.signals[name].hp_ratio_time) < 1e-4, name)   -- measured 3e-7
    end
  end)

  it("gives per-frame centroid, flatness and RMS as librosa", function()
    local v = cat.mixture_22k
    local R = refs.signals.mixture_22k
    assert.is_true(rel(D.spectral_centroid(v[1], v[2]):mean(), R.centroid_mean) < 1e-4)
    assert.is_true(rel(D.spectral_flatness(v[1]):mean(), R.flatness_mean) < 1e-4)
    assert.is_true(rel(D.rms(v[1]):mean(), R.rms_frames_mean) < 1e-4)
  end)

  it("agree with values derived independently", function()
    -- a pure tone's centroid is its frequency (leakage of the Hann window: < 1 %)
    local f = D.features(sig.sine(1000, 44100, 2, 0.5), 44100)
    assert.near(1000, f.centroid_hz, 10)
    assert.near(0.5, f.peak, 1e-4)
    assert.near(20 * math.log10(math.sqrt(2)), f.crest_db, 1e-3)
    -- white noise: periodogram bins are exponential, so flatness -> exp(-Euler gamma) = 0.5615
    local n = D.features(sig.noise(44100, 3, 0.3, 1, 4242), 44100)
    assert.near(math.exp(-0.5772157), n.flatness, 0.01)
    assert.near(11025, n.centroid_hz, 150)       -- flat spectrum: centroid at sr/4
    -- a drum loop is percussive, a pad harmonic
    local dr = D.features(sig.drums(44100, 4), 44100)
    local pd = D.features(sig.pad(44100, 4), 44100)
    assert.is_true(dr.hp_ratio < 1 and pd.hp_ratio > 20)
    assert.is_true(dr.transient_crest > pd.transient_crest)
    assert.is_true(dr.rms_diff > 10 * pd.rms_diff)
    assert.near(4, dr.onset_rate, 0.5)           -- kick on the beat + hat off the beat at 120 BPM
  end)

  it("gives the same numbers on one thread and on several (HPSS sweeps split by frames)", function()
    local v = cat.mixture_48k
    local n0 = sao.threads()
    sao.threads(1)
    local a = D.features(v[1], v[2])
    sao.threads(3)
    local b = D.features(v[1], v[2])
    sao.threads(n0)
    for _, k in ipairs { "hp_ratio", "transient_sharpness", "transient_flux_p95", "centroid_hz", "flatness" } do
      assert.is_true(rel(b[k], a[k]) < 1e-9, k)     -- only the order of the energy sums differs
    end
    assert.equal(a.onset_count, b.onset_count)
  end)

  it("splits audio into harmonic + percussive parts that sum back", function()
    local x = sao.audio.to_mono(cat.mixture_22k[1])
    local h, p = D.hpss(x)
    assert.same(x:shape(), h:shape())
    -- masks sum to 1 (margin 1), so h + p = x up to the ISTFT: measured 9e-8
    assert.is_true(maxabs(h + p - x) < 1e-5)
  end)

  it("hands back the onset envelope and handles edge inputs", function()
    local v = cat.drums_44k
    local f, env = D.features(v[1], v[2], { onset_env = true })
    assert.equal(refs.signals.drums_44k.onset_env_len, env:numel())
    assert.tensor_near(refs.signals.drums_44k.onset_env, env, { abs = 0.03 })
    assert.equal(f.frames, env:numel())
    -- silence: zero features, no onsets, no NaN
    local z = D.features(sao.zeros(2, 22050), 22050)
    assert.equal(0, z.centroid_hz)
    assert.equal(0, z.onset_count)
    assert.equal(0, z.hp_ratio)
    assert.equal(-math.huge, z.rms_db)
    assert.error_matches(function() D.features(v[1], 0) end, "sample rate")
    assert.error_matches(function() D.features(v[1], 44100, { hpss_kernel = 30 }) end, "must be odd")
    assert.error_matches(function() D.features(sao.zeros(3, 2, 2), 44100) end, "%[C, S%]")
    assert.error_matches(function() D.features(sao.zeros(1, 0), 44100) end, "too short")
  end)
end)
