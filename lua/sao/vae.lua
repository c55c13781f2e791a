-- sao.vae — the Oobleck autoencoder of Stable Audio Open (runtime/vae.c): encoder, VAE bottleneck,
-- decoder, and the chunked decode that bounds memory for 47 s of audio.
--
--   local vae = sao.vae.new(sao.vae.SAO)                 -- or the model_config's pretransform
--   vae:load(sao.load_safetensors("model.safetensors"), { prefix = "pretransform.model." })
--   local z = vae:encode(audio, { seed = 1 })            -- [B, 2, S] -> [B, 64, S/2048], sampled
--   local y = vae:decode(z, { chunked = true })          -- [B, 64, L] -> [B, 2, 2048 L]
--   vae:to("cuda")                                       -- encode/decode on a GPU (host tensors in/out)
--
-- Keys are upstream's state_dict names (encoder.layers.*, decoder.layers.*); weight norm is folded
-- at load. Configs: a flat table (fields of sao_vae_config, see SAO below) or the upstream form
-- ({encoder = {config = {...}}, decoder = ..., bottleneck = {type = "vae"}}, with or without the
-- "config" level, or a whole model_config with a pretransform).
local ffi = require "ffi"
local core = require "sao.ffi"
local T = require "sao.tensor"
local C, ctx, check, checkp = core.C, core.ctx, core.check, core.checkp

local M = {}

--- SAO 1.0's autoencoder (model_config.json pretransform.config), flat form.
M.SAO = {
  in_channels = 2, out_channels = 2, channels = 128, latent_dim = 64,
  c_mults = { 1, 2, 4, 8, 16 }, strides = { 2, 4, 4, 8, 8 }, final_tanh = false,
}

--- chunked-decode defaults (upstream decode_audio; SAO_SPEC 3.5)
M.CHUNK, M.OVERLAP = 128, 32

--- Analytic FLOPs (2 per multiply-add) of the convolutions of one decode of `frames` latent
--- frames for a sao.vae.config table: the benchmarks' work count.
function M.decode_flops(c, frames)
  local w = { c.channels }
  for i, m in ipairs(c.c_mults) do w[i + 1] = c.channels * m end
  local n, t = #c.strides, frames
  local f = 2 * c.latent_dim * w[n + 1] * 7 * t
  for j = n, 1, -1 do
    local s = c.strides[j]
    f = f + 2 * w[j + 1] * w[j] * 2 * s * t               -- transposed conv (dense over the input)
    t = t * s
    f = f + 3 * 2 * w[j] * w[j] * (7 + 1) * t             -- three residual units
  end
  return f + 2 * w[1] * c.out_channels * 7 * t
end

local PARTS = { both = 3, encoder = 1, decoder = 2 }

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- upstream nesting -> the flat form
local function flatten(cfg)
  if cfg.model and cfg.model.pretransform then cfg = cfg.model.pretransform end   -- model_config.json
  if cfg.pretransform then cfg = cfg.pretransform end
  local scale
  if cfg.type == "autoencoder" and cfg.config then scale, cfg = cfg.scale, cfg.config end
  if not cfg.encoder and not cfg.decoder then return cfg end
  local function inner(part)
    if part == nil then return nil end
    if part.type and part.type ~= "oobleck" then
      error("sao.vae: only Oobleck encoders/decoders are supported, got type '" .. tostring(part.type) .. "'", 4)
    end
    local c = part.config or part
    if c.use_snake ~= true then
      error("sao.vae: use_snake must be true (the ELU Oobleck variant is not implemented)", 4)
    end
    if c.antialias_activation or c.use_nearest_upsample then
      error("sao.vae: antialias_activation / use_nearest_upsample are not implemented (SAO uses neither)", 4)
    end
    return c
  end
  local e, d = inner(cfg.encoder), inner(cfg.decoder)
  local b = cfg.bottleneck
  if b and b.type ~= "vae" then
    error("sao.vae: only the 'vae' bottleneck is implemented, got '" .. tostring(b.type) .. "'", 3)
  end
  local ref = d or e
  local out = {
    in_channels = e and e.in_channels or cfg.io_channels or 2,
    out_channels = d and d.out_channels or cfg.io_channels or 2,
    channels = ref.channels, c_mults = ref.c_mults, strides = ref.strides,
    latent_dim = d and d.latent_dim or (e.latent_dim / 2),
    final_tanh = d and (d.final_tanh == nil and true or d.final_tanh) or false,   -- upstream default True
    parts = (e and d) and "both" or (e and "encoder" or "decoder"),
    downsampling_ratio = cfg.downsampling_ratio, scale = scale or cfg.scale,
  }
  if e and d then
    if e.channels ~= d.channels or not same_list(e.c_mults, d.c_mults) or not same_list(e.strides, d.strides) then
      error("sao.vae: encoder and decoder must share channels, c_mults and strides", 3)
    end
  end
  if e and e.latent_dim ~= 2 * out.latent_dim then
    error(string.format("sao.vae: the VAE encoder must emit 2 x latent_dim channels: encoder latent_dim %s, "
      .. "decoder latent_dim %s", tostring(e.latent_dim), tostring(out.latent_dim)), 3)
  end
  if cfg.latent_dim and cfg.latent_dim ~= out.latent_dim then
    error("sao.vae: latent_dim " .. cfg.latent_dim .. " disagrees with the decoder's " .. out.latent_dim, 3)
  end
  return out
end

--- The normalised flat config (validated); accepts every form new() does.
function M.config(cfg)
  if type(cfg) ~= "table" then error("sao.vae: expected a config table", 2) end
  local f = flatten(cfg)
  local out = {}
  for k, v in pairs(M.SAO) do out[k] = v end
  for k, v in pairs(f) do out[k] = v end
  out.io_channels = nil
  if f.io_channels then out.in_channels, out.out_channels = f.io_channels, f.io_channels end
  if type(out.c_mults) ~= "table" or type(out.strides) ~= "table" or #out.c_mults ~= #out.strides
     or #out.c_mults < 1 or #out.c_mults > 8 then
    error("sao.vae: c_mults and strides must be lists of the same length (1..8)", 2)
  end
  out.parts = out.parts or "both"
  if not PARTS[out.parts] then error("sao.vae: parts must be 'both', 'encoder' or 'decoder'", 2) end
  local ratio = 1
  for _, s in ipairs(out.strides) do ratio = ratio * s end
  if out.downsampling_ratio and out.downsampling_ratio ~= ratio then
    error(string.format("sao.vae: downsampling_ratio %d is not the product of the strides (%d)",
      out.downsampling_ratio, ratio), 2)
  end
  out.downsampling_ratio = ratio
  out.scale = out.scale or 1.0
  return out
end

local VAE = {}
VAE.__index = VAE

--- sao.vae.new(config) -> handle (parameters unbound; call :load or :init_random).
function M.new(cfg)
  cfg = M.config(cfg)
  local c = ffi.new("sao_vae_config")
  c.in_channels, c.out_channels, c.channels, c.latent_dim = cfg.in_channels, cfg.out_channels,
    cfg.channels, cfg.latent_dim
  c.n_blocks = #cfg.c_mults
  for i = 1, #cfg.c_mults do
    c.c_mults[i - 1], c.strides[i - 1] = cfg.c_mults[i], cfg.strides[i]
  end
  c.final_tanh = cfg.final_tanh and 1 or 0
  c.parts = PARTS[cfg.parts]
  local h = ffi.gc(checkp(C.sao_vae_new(ctx, c), 2), C.sao_vae_free)
  return setmetatable({ h = h, config = cfg, ratio = cfg.downsampling_ratio, loaded = false }, VAE)
end

local function handle(self)
  if self.h == nil then error("sao.vae: used after :free()", 3) end
  return self.h
end

--- Declared parameters: list of {name=, shape={...}} in upstream order.
function VAE:parameters()
  local p = C.sao_vae_params(handle(self))
  local out = {}
  for i = 0, C.sao_params_count(p) - 1 do
    local shape, s = {}, C.sao_params_shape(p, i)
    for d = 0, C.sao_params_ndim(p, i) - 1 do shape[d + 1] = tonumber(s[d]) end
    out[#out + 1] = { name = ffi.string(C.sao_params_name(p, i)), shape = shape }
  end
  return out
end

--- Total parameter count (SAO: encoder 77,989,888 + decoder 78,122,626).
function VAE:numel() return tonumber(C.sao_params_numel(C.sao_vae_params(handle(self)))) end

local function fmt_list(names, max)
  local shown = {}
  for i = 1, math.min(#names, max) do shown[i] = "'" .. names[i] .. "'" end
  return table.concat(shown, ", ") .. (#names > max and string.format(", ... (%d in all)", #names) or "")
end

local function finish_load(self)
  local p = C.sao_vae_params(self.h)
  local missing = {}
  for i = 0, C.sao_params_count(p) - 1 do
    if C.sao_params_tensor(p, i) == nil then missing[#missing + 1] = ffi.string(C.sao_params_name(p, i)) end
  end
  if #missing > 0 then
    error(string.format("sao.vae: load: %d parameter(s) missing from the checkpoint%s: %s", #missing,
      self._prefix ~= "" and (" (looked under prefix '" .. self._prefix .. "')") or "", fmt_list(missing, 8)), 3)
  end
  check(C.sao_vae_prepare(ctx, self.h), 3)
  self.loaded = true
end

--- Binds name -> tensor (a safetensors table). opts.prefix (default "") is stripped; keys without
--- it are ignored (a whole SAO checkpoint: prefix "pretransform.model."), and so are the keys of a
--- part this handle was built without. An unexpected or mis-shaped key, or a missing one, is an
--- error naming it. f32/bf16/f16 accepted (converted to f32). Folds the weight norm.
function VAE:load(tensors, opts)
  opts = opts or {}
  local prefix = opts.prefix or ""
  local h = handle(self)
  local p = C.sao_vae_params(h)
  local parts = self.config.parts
  local names = {}
  for k in pairs(tensors) do
    if type(k) == "string" and k:sub(1, #prefix) == prefix then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local name = k:sub(#prefix + 1)
    local skip = (parts == "decoder" and name:match("^encoder%.")) or (parts == "encoder" and name:match("^decoder%."))
    if not skip then
      if C.sao_params_find(p, name) < 0 then
        error(string.format("sao.vae: load: unexpected key '%s' (not part of this %s config)%s", k,
          "Oobleck", (name:match("^encoder%.") or name:match("^decoder%.")) and
          " -- check channels/c_mults/strides against the checkpoint" or
          " -- pass {prefix=...} to select the autoencoder's keys"), 2)
      end
      local t = tensors[k]
      if not T.is_tensor(t) then error("sao.vae: load: '" .. k .. "' is not a tensor", 2) end
      if C.sao_params_bind(ctx, p, name, T.ptr(t)) ~= 0 then
        local msg = ffi.string(C.sao_ctx_error(ctx))
        C.sao_ctx_clear_error(ctx)
        error("sao.vae: " .. msg .. (prefix ~= "" and (" (checkpoint key '" .. k .. "')") or ""), 2)
      end
    end
  end
  self._prefix = prefix
  finish_load(self)
  return self
end

--- Random weights (clearly not a trained model): weight_v ~ N(0,1), weight_g = 1/sqrt(3) (the
--- row norm of torch's default kaiming-uniform conv init), biases 0, Snake alpha = beta = 0
--- (upstream's init). opts.seed (default 0).
function VAE:init_random(opts)
  opts = opts or {}
  local seed = opts.seed or 0
  local h = handle(self)
  local p = C.sao_vae_params(h)
  for i, prm in ipairs(self:parameters()) do
    local t
    if prm.name:match("weight_v$") then
      t = T.randn { prm.shape, seed = seed, offset = i * 2 ^ 32 }
    elseif prm.name:match("weight_g$") then
      t = T.full(prm.shape, 1 / math.sqrt(3))
    else
      t = T.zeros(prm.shape)
    end
    check(C.sao_params_bind(ctx, p, prm.name, T.ptr(t)), 2)
    t:free()
  end
  self._prefix = ""
  finish_load(self)
  return self
end

local function f32c(t, what, nd, shape_check)
  if not T.is_tensor(t) then error("sao.vae: " .. what .. " must be a tensor", 3) end
  if t:dim() ~= nd then error(string.format("sao.vae: %s must be %d-d, got shape [%s]", what, nd,
    table.concat(t:shape(), ",")), 3) end
  shape_check(t:shape())
  if t:dtype() ~= "f32" then t = t:float() end
  if not t:is_contiguous() then t = t:contiguous() end
  return t
end

--- audio [B, in_channels, S] -> latents [B, latent_dim, L] (L = S / ratio).
--- opts: sample (default true: mean + std * eps, as upstream, which always samples), seed
--- (default 0) or eps (a [B, latent, L] N(0,1) tensor), chunked/chunk/overlap (upstream
--- encode_audio chunking, in latent frames), info (also return {raw=, mean=, std=, kl=}).
function VAE:encode(audio, opts)
  opts = opts or {}
  local h = handle(self)
  if not self.loaded then error("sao.vae: encode before load (call :load or :init_random)", 2) end
  local cfg = self.config
  if cfg.parts == "decoder" then error("sao.vae: this VAE was built without its encoder", 2) end
  audio = f32c(audio, "audio", 3, function(s)
    if s[2] ~= cfg.in_channels then
      error(string.format("sao.vae: audio must be [B, %d, S], got [%s]", cfg.in_channels, table.concat(s, ",")), 4)
    end
  end)
  local B, S = audio:size(1), audio:size(3)
  local L = tonumber(C.sao_vae_encoded_len(h, S))
  if L < 1 then error(string.format("sao.vae: %d samples is too short to encode (at least %d)", S, self.ratio), 2) end
  local D = cfg.latent_dim
  local sample = opts.sample ~= false
  local eps = opts.eps
  if sample then
    if eps then
      eps = f32c(eps, "eps", 3, function(s)
        if s[1] ~= B or s[2] ~= D or s[3] ~= L then
          error(string.format("sao.vae: eps must be [%d, %d, %d], got [%s]", B, D, L, table.concat(s, ",")), 4)
        end
      end)
    else
      eps = T.randn { { B, D, L }, seed = opts.seed or 0 }
    end
  end
  local z = T.empty { B, D, L }
  local raw = T.empty { B, 2 * D, L }
  local mode = sample and C.SAO_VAE_SAMPLE or C.SAO_VAE_MEAN
  local ep = sample and eps:data() or nil
  if opts.chunked then
    check(C.sao_vae_encode_chunked(ctx, h, audio:data(), B, S, mode, ep, opts.chunk or M.CHUNK,
      opts.overlap or M.OVERLAP, z:data(), raw:data()), 2)
  else
    check(C.sao_vae_encode(ctx, h, audio:data(), B, S, mode, ep, z:data(), raw:data()), 2)
  end
  if cfg.scale ~= 1 then z = z / cfg.scale end
  if not opts.info then return z end
  local mean, std = T.empty { B, D, L }, T.empty { B, D, L }
  local kl = ffi.new("double[1]")
  check(C.sao_vae_bottleneck(ctx, h, raw:data(), B, L, C.SAO_VAE_MEAN, nil, nil, mean:data(), std:data(), kl), 2)
  return z, { raw = raw, mean = mean, scale = raw:narrow(2, D + 1, D), std = std, kl = kl[0], eps = eps }
end

--- latents [B, latent_dim, L] -> audio [B, out_channels, L * ratio].
--- opts: chunked (default false, as SAO), chunk (128), overlap (32) in latent frames.
function VAE:decode(latents, opts)
  opts = opts or {}
  local h = handle(self)
  if not self.loaded then error("sao.vae: decode before load (call :load or :init_random)", 2) end
  local cfg = self.config
  if cfg.parts == "encoder" then error("sao.vae: this VAE was built without its decoder", 2) end
  latents = f32c(latents, "latents", 3, function(s)
    if s[2] ~= cfg.latent_dim then
      error(string.format("sao.vae: latents must be [B, %d, L], got [%s]", cfg.latent_dim, table.concat(s, ",")), 4)
    end
  end)
  if cfg.scale ~= 1 then latents = latents * cfg.scale end
  local B, L = latents:size(1), latents:size(3)
  local S = tonumber(C.sao_vae_decoded_len(h, L))
  local y = T.empty { B, cfg.out_channels, S }
  if opts.chunked then
    check(C.sao_vae_decode_chunked(ctx, h, latents:data(), B, L, opts.chunk or M.CHUNK,
      opts.overlap or M.OVERLAP, y:data()), 2)
  else
    check(C.sao_vae_decode(ctx, h, latents:data(), B, L, y:data()), 2)
  end
  return y
end

--- The decode of L frames that fits in `budget` bytes of workspace: nil for one pass (the fastest),
--- else the largest chunk (latent frames: 1024, 512, 256, then M.CHUNK as the last resort) whose
--- workspace fits. A GPU generation sizes its decode to the device's free memory with this.
function VAE:decode_chunk(L, budget)
  if self:workspace_bytes("decode", L) <= budget then return nil end
  for _, c in ipairs { 1024, 512, 256 } do
    if c < L and c > M.CHUNK and self:workspace_bytes("decode", L, c) <= budget then return c end
  end
  return M.CHUNK
end

--- Bytes of activation workspace for a decode of L frames (chunk = nil: unchunked) or an
--- encode of S samples: vae:workspace_bytes("decode", L, chunk).
function VAE:workspace_bytes(what, length, chunk)
  return tonumber(C.sao_vae_workspace_bytes(handle(self), what == "decode" and 1 or 0, length, chunk or 0))
end

--- Frees the activation workspace now (it is reallocated by the next call).
function VAE:release_workspace() C.sao_vae_release_workspace(handle(self)) end

--- vae:device() -> "cpu", or "cuda", N while the weights are on GPU N.
function VAE:device()
  local d = C.sao_vae_device(handle(self))
  if d < 0 then return "cpu" end
  return "cuda", d
end

--- vae:to("cuda") / vae:to("cuda:N") copies the folded weights (and biases, Snake parameters) to a
--- GPU in one device block and runs encode/decode there; vae:to("cpu") goes back and frees the
--- device memory. Returns self. encode/decode still take and return host tensors. Again on its
--- own device it uploads every weight anew (after in-place edits of the host tensors). Without
--- CUDA (a CPU-only build, or no device visible) the error says so.
function VAE:to(what)
  local h = handle(self)
  if what == "cpu" then
    check(C.sao_vae_to_host(ctx, h), 2)
    return self
  end
  local dev = type(what) == "string" and what:match("^cuda:?(%d*)$")
  if not dev then error("vae:to: '" .. tostring(what) .. "': expected \"cpu\", \"cuda\" or \"cuda:N\"", 2) end
  if not self.loaded then error("sao.vae: to(\"" .. what .. "\") before load (call :load or :init_random)", 2) end
  check(C.sao_vae_to_device(ctx, h, tonumber(dev) or 0), 2)
  return self
end

function VAE:free()
  if self.h ~= nil then
    C.sao_vae_free(ffi.gc(self.h, nil))
    self.h = nil
  end
end

--- Runs the VAE on an oobleck fixture (tensors + manifest as in ../shared/fixtures) and returns
--- name -> computed tensor for every output it stores. Reads parameters and inputs/* only.
function M.fixture_outputs(tensors, manifest, device)
  local vae = M.new(manifest.config)
  local params = {}
  for k, v in pairs(tensors) do
    if k:match("^encoder%.") or k:match("^decoder%.") then params[k] = v end
  end
  vae:load(params)
  if device then vae:to(device) end
  local audio, eps = tensors["inputs/audio"], tensors["inputs/eps"]
  local z, info = vae:encode(audio, { eps = eps, info = true })
  local det = vae:encode(audio, { sample = false })
  local out = {
    ["outputs/encoder_raw"] = info.raw, ["outputs/mean"] = info.mean, ["outputs/scale"] = info.scale,
    ["outputs/std"] = info.std, ["outputs/latent_det"] = det, ["outputs/latent_sampled"] = z,
    ["outputs/kl"] = T.tensor { info.kl },
    ["outputs/decoded_from_mean"] = vae:decode(info.mean),
  }
  if tensors["inputs/latent"] then out["outputs/decoded_from_latent"] = vae:decode(tensors["inputs/latent"]) end
  return out, vae
end

return M
