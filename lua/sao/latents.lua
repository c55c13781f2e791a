-- sao.latents — the pre-encoded training cache (SAO_SPEC §7.9) and the loader that trains from it.
--
--   local latents = require "sao.latents"
--   local id = latents.model_id(model)                        -- what the cache keys depend on
--   local z, emb, info = latents.encode_clip(model, "clip.wav", "a prompt", { seed = 7 })
--   latents.save(path, z, emb, info) / latents.load(path) -> {latents=, prompt_emb=, info=}
--   local entries = latents.read_index("OUT/cache/latents")   -- the manifest, one table per clip
--   local loader = latents.loader(entries, { model = model, cache_dir = dir, batch = 4, frames = 256, seed = 42 })
--   local b = loader:next()   -- {latents [B,D,F], cross [B,L+2,Dc], global [B,2Dc], seconds_start, seconds_total, ...}
--
-- A cache file OUT/cache/latents/<key>.safetensors holds one clip: `latents` f32 [D, L] (the VAE
-- posterior *sampled* with a seeded ε, as upstream's pre_encode does; the whole clip, zero-padded
-- to a multiple of the VAE ratio) and `prompt_emb` f32 [128, Dc] (T5 output, padding rows zero),
-- with the clip's facts in the "sao" metadata entry (JSON): seconds_total = ceil(file duration),
-- duration, frames, sample_rate, prompt, clip, audio_sha256, model_id, seed.
-- <key> = SHA-256 of (cache version, audio file bytes' SHA-256, prompt, model id, seed): a re-run
-- finds every unchanged clip, a changed prompt or a re-rendered WAV gives a new key for that clip
-- only. The latents alone are keyed by (audio, model, seed) too (latents_key), so a clip whose
-- prompt changed reuses its old latents and only re-runs T5.
--
-- Unlike upstream's pre-encoded dataset (one fixed crop per clip, seconds_start never updated),
-- the loader crops at random from the whole clip every time, and reports seconds_start = start of
-- the crop in whole seconds and seconds_total = ceil(file duration) (SAO_SPEC §9.2, §12.2); clips
-- shorter than `frames` are zero-padded at the end (seconds_start 0). The number conditioners run
-- on those values at batch time (with the model's current weights); T5 is never re-run.
local ffi = require "ffi"
local cjson = require "cjson"
local sao = require "sao"
local corpus = require "sao.corpus"

local M = {}

M.VERSION = 1          -- bump when the cache content changes for the same inputs
M.FORMAT = "sao-latents"

-- ---- keys ----------------------------------------------------------------------------------------
--- JSON with sorted keys (a stable text for hashing a config table).
function M.canonical(v)
  local t = type(v)
  if t == "table" then
    if #v > 0 or next(v) == nil then
      local parts = {}
      for i = 1, #v do parts[i] = M.canonical(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[i] = cjson.encode(k) .. ":" .. M.canonical(val)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then return cjson.encode(v)
  elseif t == "number" then return string.format("%.17g", v)
  elseif t == "boolean" then return tostring(v)
  end
  return "null"
end

M.sha256 = corpus.sha256

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end
M.file_size = file_size

--- An identity for the model the cache was made with: its config, and its weights (the
--- checkpoint folder's name and model.safetensors size; "random" + seed for random weights).
--- opts.seed: the seed the random weights were drawn with (load_model's opts.seed, default 0).
function M.model_id(model, opts)
  opts = opts or {}
  local weights
  if model.random then
    weights = "random:" .. tostring(opts.seed or 0)
  else
    local name = tostring(model.name or "")
    weights = "weights:" .. (name:match("([^/]+)/*$") or name) .. ":" .. tostring(file_size(name .. "/model.safetensors"))
  end
  return M.sha256(M.canonical(model.config) .. "\n" .. weights)
end

--- The content address of one clip's cache file, and of its latents alone.
function M.key(audio_sha, prompt, model_id, seed)
  local lk = M.sha256(table.concat({ M.FORMAT, M.VERSION, audio_sha, model_id, tostring(seed) }, "\n"))
  return M.sha256(table.concat({ M.FORMAT, M.VERSION, lk, prompt }, "\n")), lk
end

--- A per-clip VAE seed from the base seed and the audio hash (different clips, different ε).
function M.clip_seed(seed, audio_sha)
  return tonumber(M.sha256(tostring(seed) .. ":" .. audio_sha):sub(1, 8), 16) % 2 ^ 31
end

-- ---- one clip ------------------------------------------------------------------------------------
--- Encodes one clip: the audio at the model's rate, stereo, zero-padded to a multiple of the VAE
--- ratio (at most opts.max_seconds of it), through the VAE (sampled, seed opts.seed), and the
--- prompt through T5. opts.latents: reuse these latents [D, L] instead of running the VAE.
--- Returns latents f32 [D, L], prompt_emb f32 [Ltok, Dc], info.
function M.encode_clip(model, path, prompt, opts)
  opts = opts or {}
  if type(prompt) ~= "string" or prompt == "" then error("latents: " .. path .. ": no prompt", 2) end
  local sr, ratio = model:sample_rate(), model.c.ratio
  local finfo = sao.audio.info(path)
  local duration = finfo.frames / finfo.sample_rate
  local z = opts.latents
  if not z then
    local audio = sao.audio.load(path, { sr = sr, channels = 2 })
    local S = audio:size(2)
    if S < 1 then error("latents: " .. path .. ": no samples", 2) end
    if opts.max_seconds and S > opts.max_seconds * sr then
      audio = sao.audio.slice(audio, 0, math.floor(opts.max_seconds * sr))
      S = audio:size(2)
    end
    local L = math.ceil(S / ratio)
    local x = sao.audio.pad(audio, 0, L * ratio - S):unsqueeze(1):contiguous()   -- [1, 2, L*ratio]
    audio:free()
    local chunked = opts.chunked
    if chunked == nil then chunked = (not model.random) and L > 256 end
    local zb = model.vae:encode(x, { seed = opts.seed or 0, chunked = chunked })  -- [1, D, L]
    x:free()
    z = zb:select(1, 1):clone()
    zb:free()
  end
  local emb, mask = model.t5:encode({ prompt })
  local e = emb:select(1, 1):clone()
  emb:free(); mask:free()
  local info = {
    prompt = prompt, duration = duration, seconds_total = math.ceil(duration - 1e-9),
    frames = z:size(2), sample_rate = sr, ratio = ratio, seed = opts.seed or 0,
  }
  return z, e, info
end

--- Writes a cache file (atomic).
function M.save(path, z, emb, info)
  local meta = { format = M.FORMAT, version = tostring(M.VERSION), sao = cjson.encode(info) }
  return sao.save_safetensors(path, { latents = z, prompt_emb = emb }, meta)
end

--- Reads a cache file -> {latents [D, L], prompt_emb [Ltok, Dc], info}; errors name the file.
function M.load(path)
  local ok, t, meta = pcall(sao.load_safetensors, path)
  if not ok then error("latents: " .. path .. ": " .. tostring(t), 2) end
  if not meta or meta.format ~= M.FORMAT or not t.latents or not t.prompt_emb then
    error("latents: " .. path .. ": not a sao latents cache file", 2)
  end
  return { latents = t.latents, prompt_emb = t.prompt_emb, info = cjson.decode(meta.sao or "{}") }
end

-- ---- the manifest --------------------------------------------------------------------------------
--- Entries of OUT/cache/latents/index.jsonl (a missing file is an empty list).
function M.read_index(cache_dir)
  local out = {}
  local f = io.open(cache_dir .. "/index.jsonl", "rb")
  if not f then return out end
  for line in f:lines() do
    if line:match("%S") then
      local ok, e = pcall(cjson.decode, line)
      if ok and type(e) == "table" then out[#out + 1] = e end
    end
  end
  f:close()
  return out
end

function M.write_index(cache_dir, entries)
  local lines = {}
  for i, e in ipairs(entries) do lines[i] = cjson.encode(e) end
  local path = cache_dir .. "/index.jsonl"
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(table.concat(lines, "\n"), #lines > 0 and "\n" or "")
  f:close()
  assert(os.rename(tmp, path))
  return path
end

--- The entries a run trains on: encoded ("ok"), in `split` ("train"), made with model_id.
function M.select(entries, model_id, split)
  local out = {}
  for _, e in ipairs(entries) do
    if e.status == "ok" and (split == nil or e.split == split) and (model_id == nil or e.model_id == model_id) then
      out[#out + 1] = e
    end
  end
  return out
end

-- ---- the loader ----------------------------------------------------------------------------------
local Loader = {}
Loader.__index = Loader

--- entries: cache entries (index lines: need `file` and `seconds_total`; `clip` and `prompt` are
--- reported); opts: model (its number conditioners, VAE ratio and sample rate are used),
--- cache_dir (where `file` lives), batch (1), frames (the model's window), seed (0), seconds:
--- "clip" (default, upstream's rule for the files as given: seconds_start = the crop's start in the
--- clip, seconds_total = the clip's length) or "source" (the clip's place in the file it was cut
--- from, where the entry has it: seconds_start = source_start + the crop's start, seconds_total =
--- source_total; the trap recipe's segments carry both); rank, world (data parallel: the global
--- batch is world x batch clips in the same order on every rank, and this rank loads its `batch`
--- of them, rank 0 the first; the cursor and the crops are those of the global batch).
function M.loader(entries, opts)
  opts = opts or {}
  if #entries == 0 then error("latents.loader: no encoded clips (run the encode stage first)", 2) end
  local model = opts.model or error("latents.loader: opts.model is required", 2)
  local seconds = opts.seconds or "clip"
  if seconds ~= "clip" and seconds ~= "source" then
    error("latents.loader: seconds must be 'clip' or 'source', got '" .. tostring(seconds) .. "'", 2)
  end
  local world, rank = opts.world or 1, opts.rank or 0
  if rank < 0 or rank >= world then error(("latents.loader: rank %d outside 0..%d"):format(rank, world - 1), 2) end
  local self = setmetatable({
    seconds = seconds, world = world, rank = rank,
    entries = entries, cache_dir = opts.cache_dir or ".", batch = opts.batch or 1,
    frames = opts.frames or model:window_frames(), seed = opts.seed or 0, epoch = 0, pos = 0,
    ratio = model.c.ratio, sr = model:sample_rate(), ss = model.cond.seconds_start, st = model.cond.seconds_total,
  }, Loader)
  self.order = require("sao.data").permutation(#entries, self.seed, 0)
  return self
end

function Loader:size() return #self.entries end

-- The crop start (0-based latent frame) of draw number `draw` for a clip of L frames.
function Loader:crop_start(L, draw)
  if L <= self.frames then return 0 end
  local u = sao.rand { { 1 }, seed = self.seed + 7919, offset = draw, dtype = "f64" }:item()
  return math.min(L - self.frames, math.floor(u * (L - self.frames + 1)))
end

--- The next batch: {latents f32 [B, D, frames], cross [B, Ltok+2, Dc], global [B, 2 Dc],
--- seconds_start = {...}, seconds_total = {...}, offsets = {latent frames}, clips, prompts}.
function Loader:next()
  local n, F = #self.entries, self.frames
  local z, embs = nil, {}
  local out = { seconds_start = {}, seconds_total = {}, offsets = {}, clips = {}, prompts = {} }
  -- the global batch's clips in order; this rank keeps its `batch` of them (rank 0 the first)
  local mine = {}
  for g = 0, self.batch * self.world - 1 do
    if self.pos >= n then
      self.epoch, self.pos = self.epoch + 1, 0
      self.order = require("sao.data").permutation(n, self.seed, self.epoch)
    end
    local draw = self.epoch * n + self.pos
    self.pos = self.pos + 1
    if math.floor(g / self.batch) == self.rank then
      mine[#mine + 1] = { e = self.entries[self.order[self.pos]], draw = draw }
    end
  end
  for i, m in ipairs(mine) do
    local e = m.e
    local c = M.load(self.cache_dir .. "/" .. e.file)
    local L = c.latents:size(2)
    if not z then z = sao.zeros(self.batch, c.latents:size(1), F) end
    local off = self:crop_start(L, m.draw)
    local len = math.min(F, L - off)
    local dst, src = z:select(1, i):narrow(2, 1, len), c.latents:narrow(2, off + 1, len)
    dst:copy_(src)
    dst:free(); src:free()
    embs[i] = c.prompt_emb:clone()
    c.latents:free(); c.prompt_emb:free()
    out.offsets[i] = off
    out.seconds_start[i] = math.floor(off * self.ratio / self.sr)
    out.seconds_total[i] = e.seconds_total or c.info.seconds_total
    if self.seconds == "source" and e.source_total then
      out.seconds_start[i] = math.floor((e.source_start or 0) + off * self.ratio / self.sr)
      out.seconds_total[i] = e.source_total
    end
    out.clips[i] = e.clip
    out.prompts[i] = e.prompt or c.info.prompt
  end
  local emb = sao.stack(embs, 1)
  for _, t in ipairs(embs) do t:free() end
  local e0 = self.ss:forward(out.seconds_start)
  local e1 = self.st:forward(out.seconds_total)
  out.cross, out.global = sao.conditioning.assemble { prompt_emb = emb, seconds_start = e0, seconds_total = e1 }
  emb:free(); e0:free(); e1:free()
  out.latents = z
  return out
end

function Loader:state() return { epoch = self.epoch, pos = self.pos } end
function Loader:set_state(s)
  self.epoch, self.pos = s.epoch, s.pos
  self.order = require("sao.data").permutation(#self.entries, self.seed, self.epoch)
end

return M
