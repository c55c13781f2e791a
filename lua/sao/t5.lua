-- sao.t5 — the T5 prompt encoder of SAO (runtime/tokenizer.c + runtime/t5.c), SAO_SPEC §4.1.
--
--   local t5 = sao.t5.load(dir)                 -- dir: spiece.model + model.safetensors (+ config.json)
--   local emb, mask = t5:encode{"warm analog synth pad", "drums"}
--                                               -- emb f32 [B, 128, 768] (padding rows zeroed), mask i64 [B, 128]
--   local tok = sao.t5.tokenizer("spiece.model")
--   local ids, mask = sao.t5.tokenize(tok, {"a prompt"})      -- i64 [B, 128] each
--   tok:encode("a prompt")                      -- Lua list of ids (no </s>, no padding)
--   local enc = sao.t5.new(sao.t5.BASE); enc:load(tensors); enc:forward(ids, mask)
--   enc:to("cuda")  /  t5:to("cuda")          -- weights on the GPU; forward/encode still take and
--                                             -- return host tensors; :to("cpu") goes back
--
-- Weights: the HF t5-base model.safetensors (T5ForConditionalGeneration or T5EncoderModel); the
-- decoder and lm_head keys are ignored, encoder.embed_tokens.weight stands in for shared.weight
-- (they are tied). Everything runs in fp32 (SAO runs T5 in fp16: see runtime/t5.c).
local ffi = require "ffi"
local cjson = require "cjson"
local sao = require "sao"
local models = require "sao.models"
local C = sao.C

local M = {}
M.MAX_LENGTH = 128    -- SAO's T5Conditioner max_length

--- t5-base (HF config.json values).
M.BASE = { vocab_size = 32128, d_model = 768, d_kv = 64, num_heads = 12, d_ff = 3072, num_layers = 12,
           relative_attention_num_buckets = 32, relative_attention_max_distance = 128,
           layer_norm_epsilon = 1e-6, feed_forward_proj = "relu" }

-- ---- tokenizer ------------------------------------------------------------------------------
local Tokenizer = {}
Tokenizer.__index = Tokenizer

--- Loads a SentencePiece unigram model (t5-base's spiece.model).
function M.tokenizer(path)
  if type(path) ~= "string" then error("sao.t5.tokenizer: expected the path of spiece.model", 2) end
  local h = sao.checkp(C.sao_t5_tokenizer_load(sao.ctx, path), 2)
  return setmetatable({ h = ffi.gc(h, C.sao_t5_tokenizer_free), path = path }, Tokenizer)
end

function Tokenizer:vocab_size() return C.sao_t5_tokenizer_vocab_size(self.h) end
function Tokenizer:piece_count() return C.sao_t5_tokenizer_piece_count(self.h) end
function Tokenizer:special_id(which) return C.sao_t5_tokenizer_special_id(self.h, which) end

--- The string of a (0-based) id, or nil.
function Tokenizer:piece(id)
  local buf = ffi.new("char[256]")
  if C.sao_t5_tokenizer_piece(self.h, id, buf, 256) ~= 0 then return nil end
  return ffi.string(buf)
end

--- The ids of a text (Lua list of 0-based ids) without </s> or padding.
function Tokenizer:encode(text)
  if type(text) ~= "string" then error("tokenizer:encode: expected a string", 2) end
  local cap = #text * 2 + 16
  local buf = ffi.new("int64_t[?]", cap)
  local n = tonumber(C.sao_t5_tokenizer_encode(sao.ctx, self.h, text, #text, buf, cap))
  if n < 0 then sao.check(-1, 2) end
  if n > cap then   -- normalisation can expand a character into many (NFKC of a ligature sign)
    cap = n
    buf = ffi.new("int64_t[?]", cap)
    n = tonumber(C.sao_t5_tokenizer_encode(sao.ctx, self.h, text, #text, buf, cap))
  end
  local out = {}
  for i = 0, n - 1 do out[i + 1] = tonumber(buf[i]) end
  return out
end

--- The pieces of a text as strings (for inspection).
function Tokenizer:pieces(text)
  local out = {}
  for i, id in ipairs(self:encode(text)) do out[i] = self:piece(id) end
  return out
end

--- ids, mask: i64 [B, max_len] (default 128) as SAO's T5Conditioner feeds T5: the pieces
--- (truncated to max_len - 1), </s>, then <pad> 0; mask 1 on the pieces and </s>.
function M.tokenize(tok, texts, max_len)
  if type(texts) == "string" then texts = { texts } end
  if type(texts) ~= "table" or #texts == 0 then error("sao.t5.tokenize: expected a list of strings", 2) end
  max_len = max_len or M.MAX_LENGTH
  local B = #texts
  local ids = sao.empty({ B, max_len }, "i64")
  local mask = sao.empty({ B, max_len }, "i64")
  local ip, mp = ids:data(), mask:data()
  for b = 1, B do
    local t = texts[b]
    if type(t) ~= "string" then error("sao.t5.tokenize: text #" .. b .. " is a " .. type(t) .. ", not a string", 2) end
    local rc = C.sao_t5_tokenize(sao.ctx, tok.h, t, #t, max_len, ip + (b - 1) * max_len, mp + (b - 1) * max_len)
    if rc < 0 then sao.check(-1, 2) end
  end
  return ids, mask
end
function Tokenizer:tokenize(texts, max_len) return M.tokenize(self, texts, max_len) end

-- ---- encoder --------------------------------------------------------------------------------
local Encoder = {}
Encoder.__index = Encoder

--- cfg: HF config.json fields (vocab_size, d_model, d_kv, num_heads, d_ff, num_layers,
--- relative_attention_num_buckets, relative_attention_max_distance, layer_norm_epsilon).
function M.new(cfg)
  cfg = cfg or M.BASE
  local ffp = cfg.feed_forward_proj or "relu"
  if ffp ~= "relu" then
    error("sao.t5: feed_forward_proj '" .. tostring(ffp) .. "' is not supported (t5-base uses relu; "
          .. "gated variants such as t5 v1.1 are not SAO's)", 2)
  end
  local c = ffi.new("sao_t5_config")
  for _, k in ipairs { "vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers" } do
    if type(cfg[k]) ~= "number" then error("sao.t5 config: missing number '" .. k .. "'", 2) end
    c[k] = cfg[k]
  end
  c.num_buckets = cfg.relative_attention_num_buckets or 32
  c.max_distance = cfg.relative_attention_max_distance or 128
  c.eps = cfg.layer_norm_epsilon or 1e-6
  local h = sao.checkp(C.sao_t5_new(sao.ctx, c), 2)
  return setmetatable({ h = ffi.gc(h, C.sao_t5_free), config = cfg }, Encoder)
end

function Encoder:params() return C.sao_t5_params(self.h) end
function Encoder:parameter_count() return tonumber(C.sao_params_numel(self:params())) end

--- Binds HF T5 keys: encoder.* and shared.weight; decoder.* and lm_head.* are skipped;
--- encoder.embed_tokens.weight is used for shared.weight when that is absent (tied).
function Encoder:load(tensors)
  local t = {}
  for k, v in pairs(tensors) do
    if not (k:match("^decoder%.") or k:match("^lm_head%.") or k == "encoder.embed_tokens.weight"
            or k:match("^inputs/") or k:match("^outputs/")) then
      t[k] = v
    end
  end
  if not t["shared.weight"] and tensors["encoder.embed_tokens.weight"] then
    t["shared.weight"] = tensors["encoder.embed_tokens.weight"]
  end
  local n = models.bind(self:params(), t, "", { strict = true })
  -- on a device encoder the new weights are uploaded at once
  local dev = C.sao_t5_device(self.h)
  if dev >= 0 then sao.check(C.sao_t5_to_device(sao.ctx, self.h, dev), 2) end
  return n
end

--- "cpu", or "cuda" and the CUDA device number, where the weights are.
function Encoder:device()
  local d = C.sao_t5_device(self.h)
  if d < 0 then return "cpu" end
  return "cuda", d
end

--- enc:to("cuda") / enc:to("cuda:N") copies the weights to a GPU (one device block; the host copies
--- stay) and runs the forward there; enc:to("cpu") goes back and frees the device memory. Returns
--- self. forward keeps taking and returning host tensors. Again on the encoder's own device it
--- uploads every weight anew (after in-place edits of the host tensors). Without CUDA (a CPU-only
--- build, or no device visible) the error says so.
local function move(h, what, level)
  level = level + 1
  if what == "cpu" then
    sao.check(C.sao_t5_to_host(sao.ctx, h), level)
    return
  end
  local dev = type(what) == "string" and what:match("^cuda:?(%d*)$")
  if not dev then error("t5:to: '" .. tostring(what) .. "': expected \"cpu\", \"cuda\" or \"cuda:N\"", level) end
  sao.check(C.sao_t5_to_device(sao.ctx, h, tonumber(dev) or 0), level)
end

function Encoder:to(what)
  move(self.h, what, 2)
  return self
end

--- ids i64 [B, L], mask [B, L] (nil: all ones) -> f32 [B, L, d_model].
--- opts.zero_padding (default true): SAO's post-processing (rows where mask is 0 set to 0);
--- false returns HF's last_hidden_state.
function Encoder:forward(ids, mask, opts)
  opts = opts or {}
  local s = ids:shape()
  if #s ~= 2 then error("t5:forward: ids must be [B, L]", 2) end
  local B, L = s[1], s[2]
  ids = (ids:dtype() == "i64" and ids:is_contiguous()) and ids or ids:to("i64"):contiguous()
  local mp
  if mask then
    local ms = mask:shape()
    if #ms ~= 2 or ms[1] ~= B or ms[2] ~= L then error("t5:forward: mask must be [B, L] like ids", 2) end
    mask = (mask:dtype() == "i64" and mask:is_contiguous()) and mask or mask:to("i64"):contiguous()
    mp = mask:data()
  end
  local out = sao.empty(B, L, self.config.d_model)
  local zp = opts.zero_padding
  if zp == nil then zp = true end
  sao.check(C.sao_t5_forward(sao.ctx, self.h, ids:data(), mp, B, L, zp and 1 or 0, out:data()), 2)
  return out
end

--- Bucket table i64 [T, T] (query i, key j) of the bidirectional relative position bias.
function M.relative_buckets(T, num_buckets, max_distance)
  local out = sao.empty({ T, T }, "i64")
  sao.check(C.sao_t5_relative_buckets(sao.ctx, T, num_buckets or 32, max_distance or 128, out:data()), 2)
  return out
end

--- An encoder with random weights (for `--model tiny` runs and tests; clearly not t5-base):
--- N(0, scale^2) matrices (scale 0.05 by default), norm weights 1. Same seed, same weights.
function M.random(cfg, seed, scale)
  local enc = M.new(cfg)
  local names = {}
  local shapes = models.list(enc:params())
  for name in pairs(shapes) do names[#names + 1] = name end
  table.sort(names)
  local w = {}
  for i, name in ipairs(names) do
    if name:match("layer_norm%.weight$") then
      w[name] = sao.ones(shapes[name])
    else
      w[name] = sao.randn { shapes[name], seed = (seed or 0) * 1000 + i } * (scale or 0.05)
    end
  end
  enc:load(w)
  return enc
end

--- For the fixture checker: runs the encoder described by a t5_encoder_tiny-style fixture (its
--- params and inputs/* only; stored outputs are never read) and returns name -> tensor for every
--- output it stores: last_hidden_state(_long), sao_cond_tokens(_long), rel_buckets_128.
function M.fixture_outputs(tensors, manifest, device)
  local enc = M.new(manifest.config)
  enc:load(tensors)
  if device then enc:to(device) end
  local out = {}
  local function run(sfx)
    local ids, mask = tensors["inputs/input_ids" .. sfx], tensors["inputs/attention_mask" .. sfx]
    if not ids then return end
    out["outputs/last_hidden_state" .. sfx] = enc:forward(ids, mask, { zero_padding = false })
    out["outputs/sao_cond_tokens" .. sfx] = enc:forward(ids, mask, { zero_padding = true })
  end
  run("")
  run("_long")
  local c = manifest.config
  out["outputs/rel_buckets_128"] = M.relative_buckets(128, c.relative_attention_num_buckets or 32,
                                                      c.relative_attention_max_distance or 128)
  return out
end

-- ---- tokenizer + encoder from a directory ------------------------------------------------------
local T5 = {}
T5.__index = T5

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  local ok, v = pcall(cjson.decode, s)
  if not ok then error("sao.t5.load: " .. path .. ": invalid JSON (" .. tostring(v) .. ")", 3) end
  return v
end

--- dir holds spiece.model and model.safetensors, optionally config.json (t5-base values otherwise).
--- opts.weights: another safetensors path; opts.config: a config table.
function M.load(dir, opts)
  opts = opts or {}
  if type(dir) ~= "string" then error("sao.t5.load: expected a directory", 2) end
  local spm = dir .. "/spiece.model"
  if not exists(spm) then
    error("sao.t5.load: " .. spm .. " not found (copy t5-base's spiece.model there; see checkpoints/README.md)", 2)
  end
  local wpath = opts.weights or (dir .. "/model.safetensors")
  if not exists(wpath) then
    error("sao.t5.load: " .. wpath .. " not found (t5-base's model.safetensors; pytorch_model.bin is not read)", 2)
  end
  local cfg = opts.config
  if not cfg then
    cfg = {}
    for k, v in pairs(M.BASE) do cfg[k] = v end
    if exists(dir .. "/config.json") then
      for k, v in pairs(read_json(dir .. "/config.json")) do cfg[k] = v end
    end
  end
  local tok = M.tokenizer(spm)
  if tok:vocab_size() > cfg.vocab_size then
    error(string.format("sao.t5.load: the tokenizer has %d ids but the model's vocab_size is %d "
      .. "(spiece.model and weights from different models?)", tok:vocab_size(), cfg.vocab_size), 2)
  end
  local enc = M.new(cfg)
  enc:load(sao.load_safetensors(wpath))
  return setmetatable({ tokenizer = tok, encoder = enc, config = cfg, max_length = opts.max_length or M.MAX_LENGTH }, T5)
end

--- From already-built parts: sao.t5.from_parts(tokenizer, encoder).
function M.from_parts(tok, enc, max_length)
  return setmetatable({ tokenizer = tok, encoder = enc, config = enc.config, max_length = max_length or M.MAX_LENGTH }, T5)
end

--- t5:to("cuda" | "cuda:N" | "cpu"): moves the encoder (the tokenizer runs on the host). Returns self.
function T5:to(what)
  move(self.encoder.h, what, 2)
  return self
end

--- "cpu", or "cuda" and the device number.
function T5:device() return self.encoder:device() end

--- texts (a string or a list) -> emb f32 [B, 128, d_model] with padding rows zeroed, mask i64 [B, 128].
function T5:encode(texts)
  local ids, mask = M.tokenize(self.tokenizer, texts, self.max_length)
  local emb = self.encoder:forward(ids, mask, { zero_padding = true })
  ids:free()
  return emb, mask
end

return M
