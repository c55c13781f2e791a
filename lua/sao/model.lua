-- sao.model — Stable Audio Open as one handle: conditioners (T5 + seconds), DiT, Oobleck VAE,
-- and text-to-audio generation (SAO_SPEC §2, §8).
--
--   local m = sao.load_model()                       -- real SAO 1.0 if its files are there, else tiny
--   local m = sao.load_model("checkpoints/stable-audio-open-1.0")
--   local m = sao.load_model("tiny")                 -- random weights, SAO's structure, small
--   local audio, info = m:generate{prompt = "...", seconds = 30, steps = 100, cfg_scale = 7, seed = 1}
--   local m = sao.load_model(nil, {device = "cuda"})   -- the DiT, the VAE and T5 on the GPU
--
-- Where weights are found (checkpoints/README.md): a directory with model_config.json and
-- model.safetensors (the Hugging Face repo's layout); T5 from <dir>/t5-base, $SAO_CHECKPOINTS/t5-base
-- or checkpoints/t5-base (spiece.model + model.safetensors). With no weights, the tiny model runs
-- with random weights and says so.
local cjson = require "cjson"
local sao = require "sao"

local M = {}
local Model = {}
Model.__index = Model

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function read_json(path)
  local f = io.open(path, "rb")
  if not f then error("load_model: " .. path .. ": cannot open", 3) end
  local s = f:read("*a")
  f:close()
  local ok, v = pcall(cjson.decode, s)
  if not ok then error("load_model: " .. path .. ": invalid JSON (" .. tostring(v) .. ")", 3) end
  return v
end

local function checkpoint_roots()
  local roots = {}
  if os.getenv("SAO_CHECKPOINTS") then roots[#roots + 1] = os.getenv("SAO_CHECKPOINTS") end
  roots[#roots + 1] = sao.root .. "/checkpoints"
  return roots
end

local function find_dir(name)
  for _, r in ipairs(checkpoint_roots()) do
    local d = r .. "/" .. name
    if exists(d .. "/model_config.json") or exists(d .. "/spiece.model") then return d end
  end
end

--- Parts of the model config this runtime needs, checked.
local function parse_config(cfg, where)
  local m = cfg.model or error("load_model: " .. where .. ": no 'model' section", 3)
  local diff = m.diffusion and m.diffusion.config or error("load_model: " .. where .. ": no model.diffusion.config", 3)
  if m.diffusion.type ~= "dit" then error("load_model: " .. where .. ": diffusion type '" .. tostring(m.diffusion.type) .. "' (only 'dit')", 3) end
  local conds = {}
  for _, c in ipairs(m.conditioning and m.conditioning.configs or {}) do conds[c.id] = c end
  for _, id in ipairs { "prompt", "seconds_start", "seconds_total" } do
    if not conds[id] then error("load_model: " .. where .. ": conditioning '" .. id .. "' missing", 3) end
  end
  return {
    sample_rate = cfg.sample_rate or 44100, sample_size = cfg.sample_size, channels = cfg.audio_channels or 2,
    ratio = m.pretransform.config.downsampling_ratio, latent_dim = m.pretransform.config.latent_dim,
    pretransform = m.pretransform, dit = diff, cond_dim = m.conditioning.cond_dim, conds = conds,
  }
end

-- Random weights by name: gains 1, biases 0, Fourier frequencies N(0,1), matrices N(0, 1/fan_in).
local function random_params(params, seed)
  local models = require "sao.models"
  local shapes = models.list(params)
  local names = {}
  for n in pairs(shapes) do names[#names + 1] = n end
  table.sort(names)
  local out = {}
  for i, n in ipairs(names) do
    local s = shapes[n]
    if n:match("gamma$") or n:match("layer_norm%.weight$") then out[n] = sao.ones(s)
    elseif n:match("beta$") or n:match("bias$") then out[n] = sao.zeros(s)
    elseif n:match("inv_freq$") then
      local r = s[1]
      local t = {}
      for k = 0, r - 1 do t[k + 1] = 1 / 10000 ^ (2 * k / (2 * r)) end
      out[n] = sao.tensor(t)
    elseif n:match("timestep_features") or n:match("weights$") then out[n] = sao.randn { s, seed = seed * 7919 + i }
    else
      local fan_in = 1
      for k = 2, #s do fan_in = fan_in * s[k] end
      out[n] = sao.randn { s, seed = seed * 7919 + i } * (1 / math.sqrt(fan_in))
    end
  end
  return out
end
M.random_params = random_params

--- Builds a model from a config and, when `dir` holds weights, loads them; otherwise random.
--- opts.parts = "t5": T5 alone (its tokenizer and encoder; no DiT, VAE or number conditioners, and
--- the checkpoint's model.safetensors is not read): what a stage that only embeds text needs.
local function build(cfg, where, dir, opts)
  local c = parse_config(cfg, where)
  local self = setmetatable({ config = cfg, c = c, name = opts.name or where }, Model)
  local whole = opts.parts ~= "t5"
  if opts.parts ~= nil and opts.parts ~= "t5" then
    error("load_model: parts '" .. tostring(opts.parts) .. "': expected \"t5\" (or nothing: the whole model)", 3)
  end
  local cond_dim = c.cond_dim
  local d = c.dit
  local ss, st
  if whole then
    self.dit = sao.dit.new { io_channels = d.io_channels, embed_dim = d.embed_dim, depth = d.depth, num_heads = d.num_heads,
      cond_token_dim = d.cond_token_dim, global_cond_dim = d.global_cond_dim }
    self.vae = sao.vae.new(c.pretransform)
    ss = sao.conditioning.number { output_dim = cond_dim, min_val = c.conds.seconds_start.config.min_val,
      max_val = c.conds.seconds_start.config.max_val }
    st = sao.conditioning.number { output_dim = cond_dim, min_val = c.conds.seconds_total.config.min_val,
      max_val = c.conds.seconds_total.config.max_val }
  end
  local tcfg = c.conds.prompt.config
  local weights = dir and exists(dir .. "/model.safetensors") and (dir .. "/model.safetensors")
  if weights then
    if whole then
      local t = sao.load_safetensors(weights)
      self.dit:load(t, "model.model.")
      self.vae:load(t, { prefix = "pretransform.model." })
      ss:load(t, "conditioner.conditioners.seconds_start.")
      st:load(t, "conditioner.conditioners.seconds_total.")
    end
    local t5dir = opts.t5 or (exists(dir .. "/t5-base/spiece.model") and dir .. "/t5-base") or find_dir("t5-base")
    if not t5dir then
      error("load_model: T5 weights not found: put t5-base's spiece.model and model.safetensors in " ..
        dir .. "/t5-base or $SAO_CHECKPOINTS/t5-base (see checkpoints/README.md)", 3)
    end
    self.t5 = sao.t5.load(t5dir, { max_length = tcfg.max_length })
    self.random = false
  else
    local seed = opts.seed or 0
    if whole then
      self.dit:load(random_params(self.dit:params(), seed + 1))
      self.vae:init_random { seed = seed + 2 }
      ss:load(random_params(ss:params(), seed + 3))
      st:load(random_params(st:params(), seed + 4))
    end
    local tc = tcfg.t5_config or sao.t5.BASE
    local tok_path = opts.tokenizer or (sao.root .. "/checkpoints/tiny/spiece.model")
    local tok = sao.t5.tokenizer(tok_path)
    local enc = sao.t5.random(tc, seed + 5)
    self.t5 = sao.t5.from_parts(tok, enc, tcfg.max_length)
    self.random = true
  end
  if whole then self.cond = sao.conditioning.new { t5 = self.t5, seconds_start = ss, seconds_total = st } end
  return self
end

--- sao.load_model([what[, opts]]): what is a checkpoint directory, a model config JSON path, a
--- config table, "sao-1.0" (found under $SAO_CHECKPOINTS or checkpoints/stable-audio-open-1.0) or
--- "tiny". With nothing given: SAO 1.0 when its files are present, else the tiny random model.
--- opts: seed (random weights), t5 (T5 directory), quiet, device ("cpu", the default, or "cuda" /
--- "cuda:N": the DiT, the VAE and T5 run on that GPU; the tokenizer and sampler stay on the host),
--- precision (on a GPU: "bf16", the default, "tf32" or "fp32": how the linear layers multiply,
--- process-wide, see sao.cuda.precision), graphs (on a GPU: replay the sampler's DiT calls as
--- one CUDA graph each, dit:graphs; off by default), parts ("t5": T5 alone, the rest neither built
--- nor read).
function M.load(what, opts)
  opts = opts or {}
  local function notice(msg) if not opts.quiet then io.stderr:write("sao: " .. msg .. "\n") end end
  -- the device is checked before any weights are read
  local device = opts.device
  if device == "cpu" then device = nil end
  if device ~= nil then
    local why
    if type(device) ~= "string" or not device:match("^cuda:?%d*$") then
      why = "expected \"cpu\", \"cuda\" or \"cuda:N\""
    elseif sao.cuda.unavailable() then
      why = sao.cuda.unavailable() .. ", or load with device = \"cpu\""
    elseif not sao.cuda.available() then
      why = "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES), or load with device = \"cpu\""
    end
    if why then error("load_model: device '" .. tostring(device) .. "': " .. why, 2) end
    sao.cuda.precision(opts.precision or "bf16")
  end
  local function placed(m)
    m.device = device or "cpu"
    if device and not m.dit then
      m.t5:to(device)
      notice("T5 runs on " .. device .. " (" .. sao.cuda.precision() .. " products)")
    elseif device then
      m.dit:to(device)
      if opts.graphs then m.dit:graphs(true) end
      m.vae:to(device)
      m.t5:to(device)
      notice("the DiT, the VAE and T5 run on " .. device .. " (" .. sao.cuda.precision() .. " products)")
    end
    return m
  end
  if what == nil or what == "sao-1.0" then
    local dir = find_dir("stable-audio-open-1.0")
    if dir and exists(dir .. "/model.safetensors") then
      notice("loading Stable Audio Open 1.0 from " .. dir)
      return placed(build(read_json(dir .. "/model_config.json"), dir, dir, opts))
    end
    if what == "sao-1.0" then
      error("load_model: Stable Audio Open 1.0 not found: put model_config.json and model.safetensors in " ..
        "$SAO_CHECKPOINTS/stable-audio-open-1.0 or checkpoints/stable-audio-open-1.0 (see checkpoints/README.md)", 2)
    end
    notice("no Stable Audio Open weights found (checkpoints/README.md says where they go): " ..
      "using the TINY model with random weights: its output is noise-like, for exercising pipelines only")
    what = "tiny"
  end
  if type(what) == "table" then return placed(build(what, "config table", nil, opts)) end
  if what == "tiny" then
    local m = build(read_json(sao.root .. "/checkpoints/tiny.json"), "checkpoints/tiny.json", nil, opts)
    m.name = "tiny"
    return placed(m)
  end
  if exists(what .. "/model_config.json") then
    return placed(build(read_json(what .. "/model_config.json"), what, what, opts))
  end
  if what:match("%.json$") and exists(what) then return placed(build(read_json(what), what, nil, opts)) end
  error("load_model: " .. tostring(what) .. ": not a checkpoint directory (no model_config.json), a config file, " ..
    "'sao-1.0' or 'tiny'", 2)
end

--- The model's weights under upstream checkpoint names (views): model.model.* (DiT),
--- pretransform.model.* (the VAE, weight-norm as g/v pairs), conditioner.conditioners.seconds_*.*.
--- T5 is not part of an SAO checkpoint (it is loaded from t5-base). opts.dit = false leaves the
--- DiT out (an exporter that writes its own, e.g. EMA, weights).
function Model:state_dict(opts)
  opts = opts or {}
  local models = require "sao.models"
  local out = {}
  if opts.dit ~= false then models.tensors(self.dit:params(), "model.model.", out) end
  models.tensors(sao.C.sao_vae_params(self.vae.h), "pretransform.model.", out)
  models.tensors(self.cond.seconds_start:params(), "conditioner.conditioners.seconds_start.", out)
  models.tensors(self.cond.seconds_total:params(), "conditioner.conditioners.seconds_total.", out)
  return out
end

--- Latent frames of the generation window (sample_size / downsampling ratio).
function Model:window_frames() return math.floor(self.c.sample_size / self.c.ratio) end
function Model:sample_rate() return self.c.sample_rate end

--- Conditioning for a batch: cross [B, L+2, D], global [B, 2D].
function Model:condition(prompts, seconds_start, seconds_total)
  return self.cond:forward { prompt = prompts, seconds_start = seconds_start, seconds_total = seconds_total }
end

--- A seed for a generation that was given none: different on every call and in every process
--- (math.random alone starts from the same state in each process).
function M.fresh_seed()
  local t = require("sao.progress").now()
  return math.floor((os.time() * 7919 + t * 1e6) % (2 ^ 31 - 1))
end

--- Text to audio. opts: prompt (string or list), seconds (seconds_total; default the window),
--- seconds_start (0), steps (100), cfg_scale (7), negative_prompt (string or one per prompt: the
--- CFG's unconditional half is conditioned on it, with the same seconds, instead of on nothing),
--- sampler ("dpmpp-3m-sde"), sigma_min (0.3),
--- sigma_max (500), rho (1), seed, seeds (one per prompt: item b draws its noise as a generation of
--- that prompt alone with seeds[b] would, so a batch reproduces single generations up to the DiT's
--- batch-size rounding; the init_audio encoding uses the first), batch (1), scale_phi (0),
--- init_audio ([C,S] or [B,C,S]) with
--- init_noise_level (sigma_max for audio-to-audio), chunked_decode (default: when frames > 256),
--- trim (true), progress (true),
--- frames (latent window; default the model's), device_loop (a model on a GPU: true, the default,
--- runs the sampling loop there; false keeps it on the host, a copy in and out per step), callback
--- (function(i, x, denoised, sigma) after each step's model call; with the loop on a GPU, x and
--- denoised are device tensors: :to("cpu") reads them).
--- Returns audio f32 [B, 2, S] and an info table.
function Model:generate(opts)
  opts = opts or {}
  local prompts = opts.prompt or ""
  if type(prompts) == "string" then
    local p = {}
    for i = 1, opts.batch or 1 do p[i] = prompts end
    prompts = p
  end
  local B = #prompts
  local sr, ratio = self.c.sample_rate, self.c.ratio
  local frames = opts.frames or self:window_frames()
  local window_s = frames * ratio / sr
  local seconds = opts.seconds or window_s
  if seconds <= 0 then error("generate: seconds must be positive", 2) end
  if seconds > window_s + 1e-9 then
    error(string.format("generate: %.2f s asked but the model's window is %.2f s", seconds, window_s), 2)
  end
  local seeds = opts.seeds
  if seeds ~= nil then
    if type(seeds) ~= "table" or #seeds ~= B then
      error(string.format("generate: seeds must be a list of %d numbers, one per prompt", B), 2)
    end
    for i = 1, B do
      if type(seeds[i]) ~= "number" then error("generate: seeds[" .. i .. "] is not a number", 2) end
    end
  end
  local seed = seeds and seeds[1] or opts.seed or M.fresh_seed()
  local cross, global = self:condition(prompts, opts.seconds_start or 0, seconds)
  local uncond
  if opts.negative_prompt and opts.negative_prompt ~= "" then
    local neg = opts.negative_prompt
    if type(neg) == "string" then
      neg = {}
      for i = 1, B do neg[i] = opts.negative_prompt end
    elseif #neg ~= B then
      error(string.format("generate: %d negative prompts for %d prompts", #neg, B), 2)
    end
    -- upstream keeps the positive seconds in the global token and uses the negative conditioning's
    -- context (padding rows already zero), seconds tokens included
    uncond = self:condition(neg, opts.seconds_start or 0, seconds)
  end
  local noise
  if seeds then   -- each item's noise as a batch of one with its seed draws it
    noise = sao.sampler.draw(sao.empty(B, self.c.latent_dim, frames), seeds, 0)
  else
    noise = sao.randn { { B, self.c.latent_dim, frames }, seed = seed }
  end
  local init, sigma_max = nil, opts.sigma_max or 500
  if opts.init_audio then
    local a = opts.init_audio
    if a:dim() == 2 then a = a:unsqueeze(1) end
    local S = frames * ratio
    local have = a:size(3)
    local fit = sao.zeros(a:size(1), a:size(2), S)
    fit:narrow(3, 1, math.min(S, have)):copy_(a:narrow(3, 1, math.min(S, have)))
    init = self.vae:encode(fit, { seed = seed + 1 })
    if init:size(1) ~= B then init = init:expand(B, init:size(2), init:size(3)):contiguous() end
    sigma_max = opts.init_noise_level or sigma_max
  end
  local dit, cfg_scale, phi = self.dit, opts.cfg_scale or 7, opts.scale_phi or 0
  local now = require("sao.progress").now
  local t0 = now()
  local sampler_name = opts.sampler or "dpmpp-3m-sde"
  -- a model on a GPU samples there (sao.sampler's device loop): the conditioning, the noise and the
  -- timestep go up once, the latents come down once; device_loop = false keeps the loop on the host
  local kind, dev = dit:device()
  local t_buf
  if kind == "cuda" and opts.device_loop ~= false and sampler_name ~= "v-ddim" then
    local d = "cuda:" .. dev
    cross, global = cross:contiguous():to(d), global:contiguous():to(d)
    if uncond then uncond = uncond:contiguous():to(d) end
    noise = noise:to(d)
    if init then init = init:contiguous():to(d) end
    t_buf = sao.empty_on(d, { B })
  end
  local latents = sao.sampler.sample {
    model = function(x, t, out)
      local tt = t_buf and t_buf:fill_(t) or sao.full({ B }, t)
      return dit:forward(x, tt, cross, global, { cfg_scale = cfg_scale, scale_phi = phi, uncond = uncond, out = out })
    end,
    noise = noise, init = init, steps = opts.steps or 100, sigma_min = opts.sigma_min or 0.3, sigma_max = sigma_max,
    rho = opts.rho or 1, sampler = sampler_name, seed = seed, seeds = seeds, progress = opts.progress ~= false,
    callback = opts.callback,
  }
  if latents:device() ~= "cpu" then latents = latents:to("cpu") end
  -- chunked decode (upstream's scheme, equal to the whole decode within float rounding for SAO's
  -- receptive field) bounds memory for long windows; opts.chunked_decode = false forces one pass
  -- on a GPU the decode is sized to the memory there (one pass when it fits: 80 % of what is free)
  local chunked, chunk = opts.chunked_decode, nil
  if chunked == nil then
    local kind, dev = self.vae:device()
    if kind == "cuda" then
      chunk = self.vae:decode_chunk(frames, 0.8 * sao.cuda.mem_info(dev).usable)
      chunked = chunk ~= nil
    else
      chunked = frames > 256
    end
  end
  local audio = self.vae:decode(latents, { chunked = chunked, chunk = chunk })
  if opts.trim ~= false then
    local keep = math.min(audio:size(3), math.floor(seconds * sr + 0.5))
    audio = audio:narrow(3, 1, keep):contiguous()
  end
  return audio, { seed = seed, seeds = seeds, seconds = seconds, steps = opts.steps or 100, model = self.name,
    negative_prompt = uncond and opts.negative_prompt or nil,
    random_weights = self.random, sampling_s = now() - t0, latents = latents, device = self.device or "cpu" }
end

return M
