-- sao.memorization — does a fine-tune reproduce its training audio? (DSP_SPEC §3.10.8, our own
-- definition). For every generation, its nearest training clip under two similarities:
--   chroma     the best mean cosine between the beat-synchronous, centred 12-bin chroma sequences of the
--              two files over all time lags with at least `min_overlap` (8) beats in common: the
--              same notes in the same order at some offset (a copied melody or chord loop);
--   timbre     the cosine of clip-level timbre vectors: mean and standard deviation of 40 log-mel
--              bands, each dimension standardised over the training clips (so that "everything is
--              loud at low frequencies" does not make all files alike).
-- A threshold per similarity is calibrated on the training set itself: each training clip's
-- similarity to its nearest clip of a *different* song, and the `quantile` (0.999) of those (for
-- chroma with the query clips cut to the generation's number of beats, since short queries score
-- higher by chance). A generation above it is closer to some training clip than the corpus's songs
-- are to each other, and is worth a listen.
--
--   local mem = require "sao.memorization"
--   local train = mem.prepare({ {path = "a.wav", song = "Artist/Song", cache = "f.safetensors"}, ... })
--   local rep = mem.analyse(train, { {path = "gen1.wav", name = "...", features = nil}, ... })
-- A training clip's `cache` file keeps its features between runs (written when missing; one of
-- another FEATURES_VERSION is recomputed); an item's `features` (from features() on audio the
-- caller has decoded anyway) saves decoding it again.
--   -- rep.thresholds, rep.items[i] = {path, chroma = {score, match, lag}, timbre = {...}, flagged}
-- Features of one file: a chroma sequence (chroma_stft, n_fft 4096, hop 2048, pooled between the
-- beats of sao.analysis.tempo, else over 0.5 s windows; every column centred and L2-normalised)
-- and the timbre
-- vector. Pure Lua over FFI arrays: 500 clips x 16 generations take a few seconds.
local ffi = require "ffi"
local sao = require "sao"

local M = {}

M.N_FFT, M.HOP = 4096, 2048
M.MIN_OVERLAP = 8
M.QUANTILE = 0.999
M.MAX_QUERIES = 200         -- training clips whose nearest other-song clip calibrates the thresholds
M.FEATURES_VERSION = 1      -- bump when features() changes: cached features of an older version are recomputed

-- ---- features ---------------------------------------------------------------------------------------

local function pool(src, T, bounds)
  -- src: [12, T] floats (row-major); bounds: frame indices b1 < b2 < ...: column j = mean of
  -- frames [b_j, b_{j+1}); returns doubles [n * 12] (frame-major) with unit columns, and n
  local n = #bounds - 1
  local out = ffi.new("double[?]", math.max(n, 1) * 12)
  local kept = 0
  for j = 1, n do
    local a, b = bounds[j], math.min(bounds[j + 1], T)
    if b > a then
      local base = kept * 12
      local norm, mean = 0, 0
      for c = 0, 11 do
        local s = 0
        for t = a, b - 1 do s = s + src[c * T + t] end
        out[base + c] = s
        mean = mean + s / 12
      end
      -- centred: a flat column (noise, a dense cluster) carries no pitch content and must not look
      -- like every other flat column (chroma vectors are non-negative, so raw cosines are all high)
      for c = 0, 11 do
        out[base + c] = out[base + c] - mean
        norm = norm + out[base + c] ^ 2
      end
      if norm > 1e-12 * (mean * mean * 12 + 1e-30) then
        norm = math.sqrt(norm)
        for c = 0, 11 do out[base + c] = out[base + c] / norm end
        kept = kept + 1
      end
    end
  end
  return out, kept
end

--- features(audio [C, S], sr) -> {chroma = double[n * 12], n, beat_sync (boolean), timbre = {80}}
function M.features(audio, sr)
  local mono = sao.audio.to_mono(audio)
  local ch = sao.dsp.chroma_stft(mono, sr, { n_fft = M.N_FFT, hop = M.HOP })
  local T = ch:shape()[3]
  local cd = ch:contiguous()
  local src = cd:data()
  local bounds, beat_sync = {}, false
  local ok, t = pcall(sao.analysis.tempo, mono, sr, { beats = true })
  if ok and t and t.beats and #t.beats >= M.MIN_OVERLAP + 1 then
    for _, b in ipairs(t.beats) do
      local f = math.floor(b * sr / M.HOP + 0.5)
      if f >= 0 and f < T and (#bounds == 0 or f > bounds[#bounds]) then bounds[#bounds + 1] = f end
    end
    beat_sync = #bounds >= M.MIN_OVERLAP + 1
  end
  if not beat_sync then
    bounds = {}
    local w = math.max(1, math.floor(0.5 * sr / M.HOP + 0.5))
    for f = 0, T, w do bounds[#bounds + 1] = f end
    if bounds[#bounds] < T then bounds[#bounds + 1] = T end
  end
  local chroma, n = pool(src, T, bounds)
  -- timbre: 40 log-mel bands, mean and std over frames
  local mel = sao.dsp.power_to_db(sao.dsp.melspectrogram(mono, sr, { n_fft = 2048, hop = 512, n_mels = 40 }))
  local ms = mel:shape()
  local F, TT = ms[2], ms[3]
  local md = mel:contiguous():data()
  local timbre = {}
  for k = 0, F - 1 do
    local s, s2 = 0, 0
    for t2 = 0, TT - 1 do
      local v = md[k * TT + t2]
      s, s2 = s + v, s2 + v * v
    end
    local m = s / math.max(TT, 1)
    timbre[k + 1] = m
    timbre[F + k + 1] = math.sqrt(math.max(0, s2 / math.max(TT, 1) - m * m))
  end
  mono:free()
  return { chroma = chroma, n = n, beat_sync = beat_sync, timbre = timbre }
end

--- Writes a file's features (features()) to path (safetensors, atomically), for M.load_features.
function M.save_features(path, f)
  local chroma = sao.zeros({ math.max(f.n, 1) * 12 }, "f64")
  if f.n > 0 then ffi.copy(chroma:data(), f.chroma, f.n * 12 * 8) end
  local timbre = sao.zeros({ #f.timbre }, "f64")
  local td = timbre:data()
  for i, v in ipairs(f.timbre) do td[i - 1] = v end
  sao.save_safetensors(path, { chroma = chroma, timbre = timbre },
    { version = M.FEATURES_VERSION, n = f.n, beat_sync = f.beat_sync and 1 or 0 })
  chroma:free(); timbre:free()
end

--- The features saved by save_features, or nil when the file is missing, unreadable or of another
--- FEATURES_VERSION.
function M.load_features(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  f:close()
  local ok, t, meta = pcall(sao.load_safetensors, path)
  if not ok or not meta or tonumber(meta.version) ~= M.FEATURES_VERSION or not t.chroma or not t.timbre then return nil end
  local n = tonumber(meta.n) or 0
  if t.chroma:numel() ~= math.max(n, 1) * 12 then return nil end
  local chroma = ffi.new("double[?]", math.max(n, 1) * 12)
  ffi.copy(chroma, t.chroma:data(), n * 12 * 8)
  local timbre = {}
  local td = t.timbre:data()
  for i = 1, t.timbre:numel() do timbre[i] = td[i - 1] end
  return { chroma = chroma, n = n, beat_sync = meta.beat_sync == "1", timbre = timbre }
end

-- ---- similarities -----------------------------------------------------------------------------------

--- chroma_similarity(fa, fb, min_overlap) -> best mean cosine over lags, and that lag (columns of
--- b ahead of a); nil when the sequences never overlap by min_overlap columns.
function M.chroma_similarity(fa, fb, min_overlap)
  min_overlap = min_overlap or M.MIN_OVERLAP
  local A, B, na, nb = fa.chroma, fb.chroma, fa.n, fb.n
  local best, best_lag
  for lag = -(na - min_overlap), nb - min_overlap do
    local i0 = math.max(0, -lag)
    local i1 = math.min(na, nb - lag)
    local m = i1 - i0
    if m >= min_overlap then
      local s = 0
      for i = i0, i1 - 1 do
        local pa, pb = i * 12, (i + lag) * 12
        for c = 0, 11 do s = s + A[pa + c] * B[pb + c] end
      end
      s = s / m
      if not best or s > best then best, best_lag = s, lag end
    end
  end
  return best, best_lag
end

local function cosine(a, b)
  local d, na, nb = 0, 0, 0
  for i = 1, #a do d, na, nb = d + a[i] * b[i], na + a[i] * a[i], nb + b[i] * b[i] end
  if na == 0 or nb == 0 then return 0 end
  return d / math.sqrt(na * nb)
end

local function standardise(v, mean, std)
  local out = {}
  for i = 1, #v do out[i] = (v[i] - mean[i]) / std[i] end
  return out
end

-- ---- training set and analysis ------------------------------------------------------------------------

local function quantile(list, q)
  if #list == 0 then return nil end
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local pos = 1 + (#t - 1) * q
  local lo = math.floor(pos)
  local hi = math.min(lo + 1, #t)
  return t[lo] + (t[hi] - t[lo]) * (pos - lo)
end

-- Each query clip's best chroma similarity to a clip of another song, the query cut to its middle
-- n beat columns (nil: whole): the null distribution of the chroma threshold.
local function null_chroma(set, n)
  local vals = {}
  for _, i in ipairs(set.queries) do
    local a = set.clips[i]
    local q = a
    if n and a.n > n then
      q = { chroma = ffi.cast("double *", a.chroma) + math.floor((a.n - n) / 2) * 12, n = n }
    end
    local best
    for j, b in ipairs(set.clips) do
      if j ~= i and b.song ~= a.song then
        local v = M.chroma_similarity(q, b)
        if v and (not best or v > best) then best = v end
      end
    end
    if best then vals[#vals + 1] = best end
  end
  return vals
end

--- prepare(clips, opts) -> training set: features of every clip ({path, song, ...}: song tells
--- which clips come from the same piece), the timbre statistics, and the thresholds: the
--- opts.quantile (0.999) of the training clips' similarities to their nearest clip of another song
--- (up to opts.max_queries clips, 200, as queries; set.null keeps the values). Unreadable clips
--- are skipped and listed in .skipped.
function M.prepare(clips, opts)
  opts = opts or {}
  local set = { clips = {}, skipped = {} }
  set.cached = 0
  for _, c in ipairs(clips) do
    local ok, err = pcall(function()
      local f = c.cache and M.load_features(c.cache)
      if f then
        set.cached = set.cached + 1
      else
        local audio, sr = sao.audio.load(c.path)
        f = M.features(audio, sr)
        audio:free()
        if c.cache then M.save_features(c.cache, f) end
      end
      f.path, f.song, f.name = c.path, c.song or c.path, c.name or c.path
      set.clips[#set.clips + 1] = f
    end)
    if not ok then set.skipped[#set.skipped + 1] = { path = c.path, reason = tostring(err):gsub("^.-:%d+: ", "") } end
    if opts.on_clip then opts.on_clip(c) end
  end
  local n = #set.clips
  local D = n > 0 and #set.clips[1].timbre or 0
  local mean, std = {}, {}
  for d = 1, D do
    local s, s2 = 0, 0
    for _, f in ipairs(set.clips) do s, s2 = s + f.timbre[d], s2 + f.timbre[d] ^ 2 end
    mean[d] = s / n
    std[d] = math.max(math.sqrt(math.max(0, s2 / n - mean[d] ^ 2)), 1e-6)
  end
  set.mean, set.std = mean, std
  for _, f in ipairs(set.clips) do f.z = standardise(f.timbre, mean, std) end
  -- the null distribution: each training clip's nearest clip of another song. Up to max_queries
  -- clips (an even spread) are the queries; their nearest-neighbour scores give the thresholds.
  local queries = {}
  local maxq = opts.max_queries or M.MAX_QUERIES
  for k = 1, math.min(n, maxq) do queries[k] = math.floor((k - 1) * n / math.min(n, maxq)) + 1 end
  set.queries = queries
  set.by_length = {}
  set.quantile = opts.quantile or M.QUANTILE
  local ts = {}
  for _, i in ipairs(queries) do
    local a = set.clips[i]
    local bt
    for j, b in ipairs(set.clips) do
      if j ~= i and b.song ~= a.song then
        local t = cosine(a.z, b.z)
        if not bt or t > bt then bt = t end
      end
    end
    if bt then ts[#ts + 1] = bt end
  end
  local cs = null_chroma(set, nil)
  set.null = { chroma = cs, timbre = ts }
  set.thresholds = { chroma = quantile(cs, set.quantile), timbre = quantile(ts, set.quantile), quantile = set.quantile,
                     queries = #ts }
  return set
end

--- chroma_threshold(set, n) -> the chroma threshold for a query of n beat columns: as the
--- full-length one, with each query clip cut to n columns (from its middle). A short query has
--- fewer columns to average and more lags to pick the best from, so it scores higher by chance
--- than a whole clip does; its threshold is calibrated at its own length.
function M.chroma_threshold(set, n)
  if set.by_length[n] ~= nil then return set.by_length[n] or nil end
  local th = quantile(null_chroma(set, n), set.quantile)
  set.by_length[n] = th or false
  return th
end

--- nearest(set, f) -> {chroma = {score, match (training path), lag (beats)}, timbre = {score, match}}
function M.nearest(set, f)
  local z = standardise(f.timbre, set.mean, set.std)
  local best = { chroma = {}, timbre = {} }
  for _, c in ipairs(set.clips) do
    local s, lag = M.chroma_similarity(f, c)
    if s and (not best.chroma.score or s > best.chroma.score) then
      best.chroma = { score = s, match = c.path, song = c.song, lag = lag }
    end
    local t = cosine(z, c.z)
    if not best.timbre.score or t > best.timbre.score then best.timbre = { score = t, match = c.path, song = c.song } end
  end
  return best
end

--- analyse(set, items, opts) -> {thresholds, items = {{path, name, chroma, timbre, flagged}},
--- summary = {n, chroma = {mean, median, max, above}, timbre = {...}}}: each item's nearest
--- training clip, flagged when either similarity is above its threshold.
function M.analyse(set, items, opts)
  opts = opts or {}
  local rep = { thresholds = set.thresholds, items = {}, skipped = {} }
  local vals = { chroma = {}, timbre = {} }
  local above = { chroma = 0, timbre = 0 }
  for _, it in ipairs(items) do
    local ok, err = pcall(function()
      local f = it.features
      if not f then
        local audio, sr = sao.audio.load(it.path)
        f = M.features(audio, sr)
        audio:free()
      end
      local nn = M.nearest(set, f)
      local row = { path = it.path, name = it.name or it.path, chroma = nn.chroma, timbre = nn.timbre, flagged = false }
      nn.chroma.threshold = M.chroma_threshold(set, f.n)
      nn.timbre.threshold = set.thresholds.timbre
      for _, k in ipairs { "chroma", "timbre" } do
        local s, th = nn[k].score, nn[k].threshold
        if s then vals[k][#vals[k] + 1] = s end
        if s and th and s > th then above[k] = above[k] + 1; row.flagged = true end
      end
      rep.items[#rep.items + 1] = row
    end)
    if not ok then rep.skipped[#rep.skipped + 1] = { path = it.path, reason = tostring(err):gsub("^.-:%d+: ", "") } end
    if opts.on_item then opts.on_item(it) end
  end
  rep.summary = { n = #rep.items }
  for _, k in ipairs { "chroma", "timbre" } do
    local v = vals[k]
    local s = 0
    for _, x in ipairs(v) do s = s + x end
    rep.summary[k] = { mean = #v > 0 and s / #v or nil, median = quantile(v, 0.5), max = quantile(v, 1),
                       above = above[k], fraction_above = #rep.items > 0 and above[k] / #rep.items or nil }
  end
  return rep
end

return M
