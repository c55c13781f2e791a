-- sao.pipeline.tag — the trap recipe's `tag` stage: instrument, mood and genre tags for every clip
-- under OUT/dataset/clips (DSP_SPEC §2: StableBeaT tagged its segments with LAION-CLAP).
--
--   sao recipes/trap.lua --stages tag [--tagger auto|clap|features] [--clap-url URL] [--force]
--
-- Taggers:
--   clap      cosine similarity between the clip's CLAP audio embedding and the text embeddings of
--             the curated lists (sao.clap.VOCAB); top 3 instruments, 1 genre, 2 moods (--tag-k
--             "3,1,2"), optionally only above --min-similarity. Embeddings come from a CLAP service
--             (SAO_CLAP_URL, docs/clap.md): sao ships no CLAP weights.
--   features  no CLAP at hand: a few tags read off the audio itself (sao.dsp) — a rough stand-in
--             that knows no timbres beyond "808" and "hi-hats": moods from mode, brightness and
--             density, the genre from the tempo. Clips say which tagger wrote their tags.
--   auto      clap when a service is configured, else features (the default).
-- Each clip JSON gets Tags = {instruments = [...], moods = [...], genres = [...]}, tag_source and
-- (clap) tag_scores: the best similarities per category. Clips that already have tags are kept
-- unless --force. A clip that fails (unreadable audio, a service error for that request) is named
-- and left untagged; the next run retries it. A CLAP service that cannot be reached stops the
-- stage at once (no silent switch of tagger half way through a dataset).
-- Writes OUT/dataset/tags.json: how often each tag was chosen, per category (and tags.png, the
-- same as bars); and
-- OUT/dataset/tag_clusters.json: StableBeaT's tag analysis — the distinct tags embedded by the
-- model's T5, k-means with --tag-clusters 5 groups, the silhouette (their value: 0.095); 0: none.
local sao = require "sao"
local ojson = require "sao.ojson"
local fs = require "sao.fs"
local progress = require "sao.progress"
local common = require "sao.pipeline.common"

local M = {}

M.TAG_KEYS = { "instruments", "moods", "genres" }

--- Tags read off the audio when no CLAP is available: {instruments, moods, genres}, and the
--- numbers they came from. meta: the clip's JSON (mode, tempo/bpm, bpm_confidence).
function M.features_tags(audio, sr, meta)
  local mono = sao.audio.to_mono(audio)
  local f = sao.dsp.features(mono, sr)
  -- energy per band from one power spectrogram: sub (< 90 Hz), high (> 6 kHz), all
  local S = sao.dsp.spectrogram(mono, { n_fft = 4096, hop = 2048, power = 2 })
  local shape = S:shape()
  local F, T = shape[2], shape[3]
  local d = S:contiguous():data()
  local sub, high, all = 0, 0, 0
  local df = sr / 4096
  for k = 0, F - 1 do
    local e = 0
    for t = 0, T - 1 do e = e + d[k * T + t] end
    local hz = k * df
    all = all + e
    if hz < 90 then sub = sub + e elseif hz > 6000 then high = high + e end
  end
  mono:free()
  local sub_ratio = all > 0 and sub / all or 0
  local high_ratio = all > 0 and high / all or 0
  local bpm = tonumber(meta.bpm) or tonumber(meta.tempo) or 0
  local minor = tostring(meta.mode or ""):lower():match("minor") ~= nil
  local tags = { instruments = {}, moods = {}, genres = {} }
  if sub_ratio > 0.25 then tags.instruments[#tags.instruments + 1] = "808" end
  if high_ratio > 0.01 and (f.onset_rate or 0) > 3 then tags.instruments[#tags.instruments + 1] = "hi-hats" end
  local centroid = f.centroid_hz or 0
  if minor then
    tags.moods[1] = centroid < 2500 and "dark" or "melancholic"
  elseif meta.mode and meta.mode ~= "" then
    tags.moods[1] = centroid < 2500 and "chill" or "uplifting"
  end
  local dense = (f.onset_rate or 0) > 4
  local second = dense and (minor and "aggressive" or "energetic") or "chill"
  if tags.moods[1] ~= second then tags.moods[#tags.moods + 1] = second end
  if bpm > 0 and bpm < 105 then tags.genres[1] = "boom bap"
  elseif bpm >= 105 then tags.genres[1] = "trap" end
  return tags, { sub_ratio = sub_ratio, high_ratio = high_ratio, centroid_hz = centroid, onset_rate = f.onset_rate }
end

--- Tag analysis (StableBeaT's, DSP_SPEC §3.10.9): every distinct tag of the dataset embedded by
--- SAO's own text encoder (T5, mean over the prompt's tokens), k-means (k-means++, 100 restarts,
--- seed 0) and the mean silhouette (Euclidean). tags: list of names; model: a loaded SAO model
--- (its T5). Returns {k, tags, silhouette, clusters = {{size, members (nearest the centre first)}},
--- encoder}, or nil and why when there are too few tags.
function M.clusters(tags, k, model)
  if #tags < k + 1 then
    return nil, ("%d distinct tags: too few for %d clusters"):format(#tags, k)
  end
  local emb, mask = model.t5:encode(tags)                 -- [B, L, D], [B, L]
  local shape = emb:shape()
  local L, D = shape[2], shape[3]
  local e, m = emb:contiguous():data(), mask:contiguous():data()
  local X = {}
  for b = 0, #tags - 1 do
    local row, n = {}, 0
    for d = 1, D do row[d] = 0 end
    for t = 0, L - 1 do
      if m[b * L + t] ~= 0 then
        n = n + 1
        local base = (b * L + t) * D
        for d = 1, D do row[d] = row[d] + e[base + d - 1] end
      end
    end
    for d = 1, D do row[d] = row[d] / math.max(n, 1) end
    X[b + 1] = row
  end
  emb:free(); mask:free()
  local cluster = require "sao.cluster"
  local r = cluster.kmeans(X, k, { restarts = 100, seed = 0 })
  local sil = cluster.silhouette(X, r.labels)
  local groups = {}
  for _, g in ipairs(cluster.describe(r.labels, tags, r.centers, X)) do
    -- named after the member nearest its centre (StableBeaT named its five clusters by hand)
    groups[#groups + 1] = ojson.object({ name = g.members[1], size = g.size, members = ojson.array(g.members) },
                                       { "name", "size", "members" })
  end
  table.sort(groups, function(a, b) return a.size > b.size end)
  return ojson.object({ k = k, tags = #tags, silhouette = sil, inertia = r.inertia, clusters = groups,
    encoder = model.random and "T5 with RANDOM weights (tiny test model): the clusters mean nothing" or "T5 (t5-base)" },
    { "k", "tags", "silhouette", "inertia", "encoder", "clusters" })
end

local function has_tags(t)
  local tags = t.Tags
  if type(tags) ~= "table" then return false end
  if tags[1] ~= nil then return true end
  for _, k in ipairs(M.TAG_KEYS) do
    if type(tags[k]) == "table" and #tags[k] > 0 then return true end
  end
  return false
end

local function tag_k(v)
  local l = common.list(v or "3,1,2", true)
  if #l ~= 3 then error("tag: --tag-k expects three numbers (instruments, genres, moods), got '" .. tostring(v) .. "'", 0) end
  return { instruments = l[1], genres = l[2], moods = l[3] }
end

--- The stage. opts: out, tagger (auto|clap|features), clap_url, clap_model, tag_k, min_similarity,
--- force, quiet, tag_clusters (k, default 5; 0: no tag analysis), model, model_seed, tag_batch
--- (CLAP clips in flight together, default 8). Returns
--- {clips, tagged, kept, failed, source = "clap"|"features", counts, tag_clusters}.
function M.run(opts)
  local out = opts.out or "out"
  local dir = out .. "/dataset/clips"
  local quiet = common.flag(opts.quiet)
  local function log(...) if not quiet then io.stderr:write(string.format(...), "\n") end end
  local tagger = opts.tagger or "auto"
  if tagger ~= "auto" and tagger ~= "clap" and tagger ~= "features" then
    error("tag: --tagger must be auto, clap or features, got '" .. tostring(tagger) .. "'", 0)
  end
  local clap, client
  if tagger ~= "features" then
    clap = require "sao.clap"
    client = clap.from_env { url = opts.clap_url ~= true and opts.clap_url or nil, model = opts.clap_model,
                             cache_dir = out .. "/cache/http" }
    if not client and tagger == "clap" then
      error("tag: --tagger clap needs a CLAP service: set SAO_CLAP_URL or pass --clap-url (docs/clap.md)", 0)
    end
  end
  local k = tag_k(opts.tag_k)
  local min_sim = common.num(opts.min_similarity, nil)
  local source = client and "clap" or "features"
  if client then
    log("tag: CLAP service %s", client:describe())
    -- the tag list's text embeddings first: a service that is down stops the stage here
    local ok, err = pcall(client.tag_embeddings, client, clap.VOCAB)
    if not ok then
      error(("tag: the CLAP service does not answer: %s (unset SAO_CLAP_URL or pass --tagger features to " ..
             "tag from audio features instead)"):format(tostring(err)), 0)
    end
  else
    log("tag: no CLAP service (SAO_CLAP_URL): tags from audio features (808, hi-hats, mood, tempo genre)")
  end

  local files = require("sao.prompt").list_clips(dir)
  local s = { clips = 0, tagged = 0, kept = 0, failed = 0, source = source, counts = {} }
  for _, c in ipairs(M.TAG_KEYS) do s.counts[c] = {} end
  local bar = progress.new { total = #files, label = "tag", unit = "clips", quiet = quiet }

  -- the tags (and the CLAP scores) into a clip's JSON
  local function store(item, tags, scores)
    local meta = item.meta
    local T = ojson.object({}, M.TAG_KEYS)
    for _, c in ipairs(M.TAG_KEYS) do T[c] = ojson.array(tags[c] or {}) end
    meta.Tags, meta.tag_source = T, source
    if scores then
      local best = ojson.object({}, M.TAG_KEYS)
      for _, c in ipairs(M.TAG_KEYS) do
        local l = ojson.array {}
        for i = 1, math.min(5, #(scores[c] or {})) do
          l[i] = ojson.object({ tag = scores[c][i].tag,
            similarity = math.floor(scores[c][i].similarity * 1e4 + 0.5) / 1e4 }, { "tag", "similarity" })
        end
        best[c] = l
      end
      meta.tag_scores = best
    end
    ojson.write(item.path, meta, { indent = 2 })
  end
  local function failed(item, err)
    s.failed = s.failed + 1
    bar:print(("tag: %s: %s"):format(item.path, tostring(err):gsub("^.-:%d+: ", "")))
  end
  -- one clip on its own (the features tagger; a CLAP clip of a group that failed)
  local function one(item)
    local ok, err = pcall(function()
      local audio, sr = sao.audio.load(item.wav)
      local tags, scores
      if client then
        tags, scores = client:tag(audio, sr, { k = k, min_similarity = min_sim })
      else
        tags = M.features_tags(audio, sr, item.meta)
      end
      audio:free()
      store(item, tags, scores)
    end)
    if ok then s.tagged = s.tagged + 1 else failed(item, err) end
  end
  -- CLAP: a group of clips embedded concurrently; if anything in it fails, clip by clip
  local function group(items)
    local ok = pcall(function()
      local list = {}
      for i, it in ipairs(items) do
        local audio, sr = sao.audio.load(it.wav)
        list[i] = { audio, sr }
      end
      local res = client:tag_many(list, { k = k, min_similarity = min_sim })
      for _, a in ipairs(list) do a[1]:free() end
      for i, it in ipairs(items) do store(it, res[i].tags, res[i].scores) end
    end)
    if ok then
      s.tagged = s.tagged + #items
    else
      for _, it in ipairs(items) do one(it) end
    end
  end

  local gsize = client and math.max(1, common.num(opts.tag_batch, 8)) or 1
  local pending, metas = {}, {}
  local function flush()
    if #pending == 0 then return end
    bar:start(pending[1].meta.path)
    if #pending > 1 then group(pending) else one(pending[1]) end
    bar:advance(#pending)
    pending = {}
  end
  for _, path in ipairs(files) do
    local meta = ojson.read(path)
    if type(meta) == "table" and meta.path then
      s.clips = s.clips + 1
      metas[#metas + 1] = meta
      if has_tags(meta) and not common.flag(opts.force) then
        s.kept = s.kept + 1
        bar:skip(1)
      else
        pending[#pending + 1] = { path = path, meta = meta, wav = out .. "/dataset/" .. meta.path }
        if #pending >= gsize then flush() end
      end
    end
  end
  flush()
  for _, meta in ipairs(metas) do
    for _, c in ipairs(M.TAG_KEYS) do
      for _, t in ipairs(type(meta.Tags) == "table" and type(meta.Tags[c]) == "table" and meta.Tags[c] or {}) do
        s.counts[c][t] = (s.counts[c][t] or 0) + 1
      end
    end
  end
  bar:finish()
  local summary = ojson.object({ clips = s.clips, tagger = source, counts = ojson.object({}, M.TAG_KEYS) },
                               { "clips", "tagger", "counts" })
  local sections = {}   -- the same counts as a bar chart, one section per category (its 15 most frequent)
  for _, c in ipairs(M.TAG_KEYS) do
    local names = {}
    for t in pairs(s.counts[c]) do names[#names + 1] = t end
    table.sort(names, function(a, b)
      if s.counts[c][a] ~= s.counts[c][b] then return s.counts[c][a] > s.counts[c][b] end
      return a < b
    end)
    local o = ojson.object({}, names)
    for _, t in ipairs(names) do o[t] = s.counts[c][t] end
    summary.counts[c] = o
    local items = {}
    for i = 1, math.min(15, #names) do items[i] = { names[i], o[names[i]] } end
    sections[#sections + 1] = { title = c, items = items }
  end
  if fs.exists(out .. "/dataset") then
    ojson.write(out .. "/dataset/tags.json", summary, { indent = 2 })
    local plot = require "sao.plot"
    plot.write(out .. "/dataset/tags.png", plot.bars { title = ("tags of %d clips (%s)"):format(s.clips, source),
                                                         sections = sections })
  end
  log("tag: %d clips: %d tagged now (%s), %d had tags, %d failed", s.clips, s.tagged, source, s.kept, s.failed)

  -- the tag analysis: distinct tags of every category, clustered in T5 space
  local k = common.num(opts.tag_clusters, 5)
  if k > 0 and s.clips > 0 then
    local names, seen = {}, {}
    for _, c in ipairs(M.TAG_KEYS) do
      for t in pairs(s.counts[c]) do if not seen[t] then seen[t] = true; names[#names + 1] = t end end
    end
    table.sort(names)
    local okm, res, why = pcall(function()
      local model = common.load_model { model = opts.model, model_seed = opts.model_seed, quiet = true, parts = "t5" }
      return M.clusters(names, k, model)
    end)
    if not okm then res, why = nil, tostring(res):gsub("^[^:]*%.lua:%d+: ", "") end
    if res then
      ojson.write(out .. "/dataset/tag_clusters.json", res, { indent = 2 })
      s.tag_clusters = res
      log("tag: %d tags in %d clusters, silhouette %.3f (%s) -> %s/dataset/tag_clusters.json", res.tags, k,
          res.silhouette, res.encoder, out)
    else
      log("tag: no tag clusters: %s", why)
    end
  end
  return s
end

return M
