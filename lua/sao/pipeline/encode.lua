-- sao.pipeline.encode — the `encode` stage: every clip of OUT/dataset/clips (WAV + JSON with a
-- "prompt") -> VAE latents + T5 embedding + seconds values in the content-addressed cache
-- OUT/cache/latents/<key>.safetensors (sao.latents), and the manifest OUT/cache/latents/index.jsonl.
--
--   sao recipes/instrumental.lua --stages encode [--model tiny] [--encode-seed 42] [--holdout 0.05] [--reencode]
--   require("sao.pipeline.encode").run { out = "out/instrumental", model = "tiny" }
--
-- Re-runs are cheap: a clip whose WAV bytes, prompt, model and seed are unchanged is found in the
-- cache and not encoded again (the WAV's hash is reused while its size and mtime are unchanged);
-- a changed prompt re-runs T5 for that clip only (its latents are reused). A clip that cannot be
-- read or encoded is reported, naming the file, and skipped; clips without a prompt are listed
-- (run the prompts stage). Held-out songs (the `holdout` fraction of songs, chosen by a stable
-- hash of Artist/Song, none for corpora under 1/holdout songs) are not encoded: they are marked
-- "heldout" in the manifest and their prompts feed the sample and eval stages.
--
-- Options (recipe flags, or keys from Lua): out, model, model_seed (0: seed of random weights),
-- encode_seed (42: VAE posterior sampling), holdout (0.05), max_seconds (600), reencode (ignore
-- the cache), quiet.
local cjson = require "cjson"
local sao = require "sao"
local latents = require "sao.latents"
local progress = require "sao.progress"
local common = require "sao.pipeline.common"

local M = {}

M.defaults = { seed = 42, holdout = 0.05, max_seconds = 600 }

--- Songs (Artist/Song folders) held out: the floor(n * fraction) with the smallest hash.
function M.heldout_songs(songs, fraction)
  local list = {}
  for s in pairs(songs) do list[#list + 1] = { s, latents.sha256("holdout:" .. s) } end
  table.sort(list, function(a, b) return a[2] < b[2] end)
  local out = {}
  for i = 1, math.floor(#list * (fraction or 0)) do out[list[i][1]] = true end
  return out
end

local function audio_for(json_path)
  local base = json_path:gsub("%.json$", "")
  for _, ext in ipairs { ".wav", ".flac", ".ogg" } do
    if common.exists(base .. ext) then return base .. ext end
  end
  return nil
end

function M.run(opts)
  opts = opts or {}
  local out = opts.out or "out"
  local clips_dir = out .. "/dataset/clips"
  local cache_dir = out .. "/cache/latents"
  local quiet = common.flag(opts.quiet)
  local log = function(msg) if not quiet then io.stderr:write(msg, "\n") end end
  local seed = common.num(opts.encode_seed, M.defaults.seed)
  local holdout = common.num(opts.holdout, M.defaults.holdout)
  local max_seconds = common.num(opts.max_seconds, M.defaults.max_seconds)
  local force = common.flag(opts.reencode)
  local files = require("sao.prompt").list_clips(clips_dir)
  if #files == 0 then
    error("encode: no clips under " .. clips_dir .. " (run the dataset and prompts stages first)", 0)
  end
  common.mkdir_p(cache_dir)
  local model, model_id = common.load_model(opts)
  local model_name = model.name

  -- what the last run knew: audio hashes by (clip, size, mtime), cache files by latents key
  local old, by_lk = {}, {}
  for _, e in ipairs(latents.read_index(cache_dir)) do
    if e.clip then old[e.clip] = e end
    if e.status == "ok" and e.latents_key and e.file then by_lk[e.latents_key] = e.file end
  end

  local items, songs = {}, {}
  for _, path in ipairs(files) do
    local rel = path:sub(#clips_dir + 2):gsub("%.json$", "")
    local song = rel:match("^(.*)/[^/]+$") or rel
    songs[song] = true
    items[#items + 1] = { json = path, clip = rel, song = song }
  end
  local held = M.heldout_songs(songs, holdout)

  local sum = { clips = #items, encoded = 0, t5_only = 0, reused = 0, heldout = 0, skipped = 0, failed = 0 }
  local entries = {}
  local bar = progress.new { total = #items, label = "encode", unit = "clips", quiet = quiet }
  for _, it in ipairs(items) do
    local e = { clip = it.clip, song = it.song }
    local text = common.read(it.json)
    local ok, meta = pcall(cjson.decode, text or "")
    local audio = audio_for(it.json)
    if not ok or type(meta) ~= "table" then
      e.status, e.reason = "failed", "unreadable JSON"
    elseif type(meta.prompt) ~= "string" or meta.prompt == "" then
      e.status, e.reason = "skipped", "no prompt (run the prompts stage)"
    elseif not audio then
      e.status, e.reason = "failed", "no audio file next to the JSON"
    end
    if e.status then
      if e.status == "failed" then
        sum.failed = sum.failed + 1
        bar:print("encode: skipped " .. it.json .. ": " .. e.reason)
      else
        sum.skipped = sum.skipped + 1
      end
      bar:skip(1)
    else
      e.prompt = meta.prompt
      -- where the clip sits in its source (the trap recipe's segments carry it): for training with
      -- --seconds source
      if type(meta.seconds_start) == "number" then e.source_start = meta.seconds_start end
      if type(meta.seconds_total) == "number" then e.source_total = meta.seconds_total end
      e.split = held[it.song] and "heldout" or "train"
      e.audio = audio:sub(#clips_dir + 2)
      local size = latents.file_size(audio)
      local mtime = string.format("%.6f", tonumber(sao.C.sao_file_mtime(audio)))   -- a string: exact in JSON
      local prev = old[it.clip]
      local sha = prev and prev.size == size and prev.mtime == mtime and prev.audio_sha256
      if not sha then sha = select(1, require("sao.corpus").hash_file(audio)) end
      e.size, e.mtime, e.audio_sha256 = size, mtime, sha
      e.model, e.model_id, e.seed = model_name, model_id, seed
      if e.split == "heldout" then
        e.status = "heldout"
        sum.heldout = sum.heldout + 1
        bar:skip(1)
      else
        local key, lk = latents.key(sha, meta.prompt, model_id, seed)
        e.key, e.latents_key, e.file = key, lk, key .. ".safetensors"
        local path = cache_dir .. "/" .. e.file
        local cached = not force and common.exists(path)
        if cached then
          local okc, c = pcall(latents.load, path)
          if okc then
            e.seconds_total, e.duration, e.frames = c.info.seconds_total, c.info.duration, c.info.frames
            c.latents:free(); c.prompt_emb:free()
          else
            cached = false
          end
        end
        if cached then
          e.status = "ok"
          sum.reused = sum.reused + 1
          bar:skip(1)
        else
          bar:start(it.clip)
          local reuse
          if not force and by_lk[lk] and common.exists(cache_dir .. "/" .. by_lk[lk]) then
            local okr, c = pcall(latents.load, cache_dir .. "/" .. by_lk[lk])
            if okr then reuse = c.latents; c.prompt_emb:free() end
          end
          local oke, z, emb, info = pcall(latents.encode_clip, model, audio, meta.prompt,
            { seed = latents.clip_seed(seed, sha), latents = reuse, max_seconds = max_seconds })
          if oke then
            info.clip, info.audio_sha256, info.model_id, info.latents_key = it.clip, sha, model_id, lk
            latents.save(path, z, emb, info)
            e.status = "ok"
            e.seconds_total, e.duration, e.frames = info.seconds_total, info.duration, info.frames
            if reuse then sum.t5_only = sum.t5_only + 1 end
            sum.encoded = sum.encoded + 1
            z:free(); emb:free()
          else
            e.status, e.reason = "failed", tostring(z):gsub("^[^:]*%.lua:%d+: ", "")
            e.key, e.file, e.latents_key = nil, nil, nil
            sum.failed = sum.failed + 1
            bar:print("encode: skipped " .. audio .. ": " .. e.reason)
          end
          bar:advance(1, it.clip)
        end
        if e.status == "ok" then by_lk[lk] = e.file end
      end
    end
    entries[#entries + 1] = e
  end
  bar:finish()
  latents.write_index(cache_dir, entries)
  log(string.format("encode: %d clips: %d encoded (%d T5 only), %d reused from the cache, %d held out, " ..
    "%d without a prompt, %d failed -> %s/index.jsonl", sum.clips, sum.encoded, sum.t5_only, sum.reused,
    sum.heldout, sum.skipped, sum.failed, cache_dir))
  if sum.skipped > 0 then log("encode: " .. sum.skipped .. " clip(s) have no prompt: run the prompts stage") end
  if model.random then log("encode: model '" .. tostring(model_name) .. "' has random weights (the cache is keyed by it)") end
  sum.index = cache_dir .. "/index.jsonl"
  return sum
end

return M
