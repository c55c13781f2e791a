-- sao.pipeline.sample — the `sample` stage: demo generations from the latest checkpoint of a run
-- (EMA weights, as upstream's demo callback) for a list of prompts and CFG scales, written to
-- OUT/runs/<run>/samples/step-N/NN_<prompt>_cfgS.wav + .json (prompt, settings, and the reference
-- BPM/key the eval stage scores against).
--
--   sao recipes/instrumental.lua --stages sample [--run main] [--prompts FILE | --prompt TEXT]
--       [--cfg-scales 4,7] [--sample-steps 100] [--seconds 30] [--num-demos 4] [--baseline]
--       [--sigma-min 0.3 --sigma-max 500] [--peak-db 0] [--sample-profile stablebeat]
--       [--eval-set tempo|key [--eval-repeats R] [--eval-limit N]]
--
-- Prompts: --eval-set tempo|key (the seed's evaluation grids, M.eval_set), --prompt TEXT,
-- --prompts FILE (one per line, '#' comments), opts.prompts (a Lua list);
-- otherwise the prompts of the held-out clips (encode stage), otherwise M.DEMO_PROMPTS (in the
-- seed's evaluation style: genre, key and mode, BPM). --baseline also samples the base model
-- (before fine-tuning) into samples/step-0 for an A/B comparison. With no checkpoint in the run
-- the base model is sampled as step-0. Files already written are kept (re-runs are cheap).
local cjson = require "cjson"
local sao = require "sao"
local progress = require "sao.progress"
local common = require "sao.pipeline.common"

local M = {}

--- The seed's evaluation prompts are genre x key x BPM; these four are in that style.
M.DEMO_PROMPTS = {
  "Energetic rock song in the key of A# Major at 120 BPM, with drums, electric guitar and bass",
  "Relaxed jazz piece in the key of D Minor at 90 BPM, with piano, upright bass and brushed drums",
  "Driving rock track in the key of E Minor at 140 BPM, with distorted guitar, bass and drums",
  "Warm jazz ballad in the key of F Major at 75 BPM, with saxophone, piano and double bass",
}

--- Sampling profiles a recipe can name (--sample-profile): the settings a published fine-tune used
--- for its demos. stablebeat: the StableBeaT card (200 steps, CFG 7, sigma 0.01-100, 47 s, output
--- peak-normalised to 1.0).
M.PROFILES = {
  stablebeat = { cfg_scales = { 7 }, steps = 200, seconds = 47, sigma_min = 0.01, sigma_max = 100, peak_db = 0 },
}

--- Defaults: SAO's demo settings (SAO_SPEC §8.8: dpmpp-3m-sde, 100 steps; CFG 4 and 7 as the
--- seed) and, for the tiny random model, a few quick steps; a profile's values on top (for the
--- tiny model all but its steps and length).
function M.defaults(model, profile)
  local d
  if model.random then
    d = { cfg_scales = { 4, 7 }, steps = 8, seconds = 4, num = 4, sampler = "dpmpp-3m-sde", seed = 1 }
  else
    d = { cfg_scales = { 4, 7 }, steps = 100, seconds = 30, num = 4, sampler = "dpmpp-3m-sde", seed = 1 }
  end
  -- clips per generate call: on a GPU a batch keeps it busier (the CFG batch is then 2 x batch)
  d.batch = model.device and model.device ~= "cpu" and 4 or 1
  if profile then
    local p = M.PROFILES[profile]
    if not p then
      local names = {}
      for n in pairs(M.PROFILES) do names[#names + 1] = n end
      table.sort(names)
      error(("sample: unknown --sample-profile '%s' (profiles: %s)"):format(profile, table.concat(names, ", ")), 0)
    end
    for k, v in pairs(p) do
      if not (model.random and (k == "steps" or k == "seconds")) then d[k] = v end
    end
  end
  return d
end

--- BPM, key and mode stated in a prompt ("... in the key of A# Major at 120 BPM") -> {bpm=, key=, mode=}.
function M.reference(prompt)
  local ref = {}
  local bpm = tostring(prompt):match("(%d+%.?%d*)%s*[Bb][Pp][Mm]")
    or tostring(prompt):lower():match("(%d+%.?%d*)%s+beats per minute")
  ref.bpm = tonumber(bpm)
  for _, pat in ipairs { "([A-G][#b]?)%s+([Mm]ajor)", "([A-G][#b]?)%s+([Mm]inor)", "([A-G][#b]?)%s+([Mm]aj)", "([A-G][#b]?)%s+([Mm]in)" } do
    local k, m = tostring(prompt):match(pat)
    if k then
      ref.key, ref.mode = k, (m:lower():sub(1, 3) == "min") and "Minor" or "Major"
      break
    end
  end
  return ref
end

--- The reference of a dataset clip: what its prompt states, made exact from the clip's JSON (the
--- prompt may round a BPM); a fact the prompt leaves out (the trap writer drops an unsure BPM or
--- key) stays out, since the model was not asked for it.
function M.clip_reference(prompt, meta)
  local ref = M.reference(prompt or "")
  if type(meta) == "table" then
    if ref.bpm then ref.bpm = tonumber(meta.tempo) or ref.bpm end
    if ref.key and type(meta.key) == "string" and meta.key ~= "" then ref.key, ref.mode = meta.key, meta.mode or ref.mode end
  end
  return ref
end

--- The seed's evaluation grids (DSP_SPEC §1.5): "tempo" = genres rock and jazz x 75..160 BPM in
--- steps of 5 (36 prompts); "key" = 4 genres x 24 keys x `repeats` (8: 768 generations, as the
--- seed). Each prompt is generated once per repeat with its own seed. limit (optional) keeps an even
--- spread of that many. Returns the prompt list of M.prompts.
M.EVAL_GENRES = { tempo = { "rock", "jazz" }, key = { "rock", "jazz", "pop", "electronic" } }
function M.eval_set(name, repeats, limit)
  local list = {}
  local function a(word) return (word:match("^[aeiou]") and "An " or "A ") .. word end
  if name == "tempo" then
    for _, g in ipairs(M.EVAL_GENRES.tempo) do
      for bpm = 75, 160, 5 do
        for _ = 1, repeats or 1 do list[#list + 1] = ("%s song at %d BPM"):format(a(g), bpm) end
      end
    end
  elseif name == "key" then
    for _, g in ipairs(M.EVAL_GENRES.key) do
      for _, mode in ipairs { "Major", "Minor" } do
        for tonic = 0, 11 do
          local k = sao.analysis.key_name(tonic)
          for _ = 1, repeats or 8 do list[#list + 1] = ("%s song in the key of %s %s"):format(a(g), k, mode) end
        end
      end
    end
  else
    error("sample: unknown --eval-set '" .. tostring(name) .. "' (tempo, key)", 0)
  end
  if limit and limit > 0 and limit < #list then
    local picked = {}
    for i = 1, limit do picked[i] = list[math.floor((i - 1) * #list / limit) + 1] end
    list = picked
  end
  local out = {}
  for i, p in ipairs(list) do out[i] = { prompt = p, source = "eval-" .. name, reference = M.reference(p) } end
  return out
end

local function read_lines(path)
  local out = {}
  for line in io.lines(path) do
    line = line:match("^%s*(.-)%s*$")
    if line ~= "" and not line:match("^#") then out[#out + 1] = line end
  end
  return out
end

--- The prompt list of a run: {{prompt=, source=, clip=, reference={bpm, key, mode}}, ...}.
function M.prompts(opts, num)
  if opts.eval_set and opts.eval_set ~= true then
    return M.eval_set(opts.eval_set, common.num(opts.eval_repeats, nil), common.num(opts.eval_limit, nil))
  end
  local out = {}
  local given = opts.prompts
  if type(given) == "string" then
    if not common.exists(given) then error("sample: --prompts " .. given .. ": no such file (one prompt per line)", 0) end
    given = read_lines(given)
  end
  if opts.prompt and opts.prompt ~= true then given = { opts.prompt } end
  if given then
    for _, p in ipairs(given) do out[#out + 1] = { prompt = p, source = "given", reference = M.reference(p) } end
    return out
  end
  local root = opts.out or "out"
  local seen = {}
  for _, e in ipairs(require("sao.latents").read_index(root .. "/cache/latents")) do
    if e.status == "heldout" and e.prompt and not seen[e.prompt] and #out < num then
      seen[e.prompt] = true
      local ok, m = pcall(cjson.decode, common.read(root .. "/dataset/clips/" .. e.clip .. ".json") or "")
      local ref = M.clip_reference(e.prompt, ok and m or nil)
      out[#out + 1] = { prompt = e.prompt, source = "heldout", clip = e.clip, reference = ref }
    end
  end
  if #out > 0 then return out end
  local demo = type(opts.demo_prompts) == "table" and opts.demo_prompts or M.DEMO_PROMPTS
  for i = 1, math.min(num, #demo) do
    out[i] = { prompt = demo[i], source = "demo", reference = M.reference(demo[i]) }
  end
  return out
end

--- Binds a checkpoint's weights into model.dit: which = "ema" (default) or "online". LoRA
--- checkpoints add their adapters to the base first.
function M.load_weights(model, ckdir, which)
  local text = common.read(ckdir .. "/state.json")
  if not text then error("sample: " .. ckdir .. "/state.json: not found (not a checkpoint folder)", 2) end
  local state = cjson.decode(text)
  local file = ckdir .. "/" .. ((which ~= "online" and common.exists(ckdir .. "/ema.safetensors")) and "ema" or "model") .. ".safetensors"
  local t = sao.load_safetensors(file)
  if state.lora then
    local lora = require "sao.lora"
    if lora.rank(model.dit) == 0 then lora.add(model.dit, state.lora) end
    require("sao.models").bind(sao.C.sao_dit_lora_params(model.dit.h), t, "")
  else
    model.dit:load(t, "")
  end
  return state.step, file:match("([^/]+)%.safetensors$")
end

--- Generates every (prompt, cfg scale) pair into dir; files already there are kept.
--- o: cfg_scales, steps, seconds, seed, sampler, frames, step, weights, negative_prompt, quiet, batch
--- (clips per model:generate call, default 1: the missing clips of one CFG scale go together, each
--- with its own seed, so a clip matches its single generation up to the DiT's batch-size rounding).
--- Returns the list of written/kept sample records, in (prompt, cfg scale) order.
function M.generate_set(model, items, dir, o)
  common.mkdir_p(dir)
  local sr, ratio = model:sample_rate(), model.c.ratio
  local seconds = math.min(o.seconds, model:window_frames() * ratio / sr)
  local frames = o.frames or (model.random and math.ceil(seconds * sr / ratio)) or model:window_frames()
  local batch = math.max(1, math.floor(o.batch or 1))
  local records, todo = {}, {}   -- todo[cfg]: the missing clips of that scale, in order
  for i, it in ipairs(items) do
    for _, cfg in ipairs(o.cfg_scales) do
      local name = string.format("%0" .. math.max(2, #tostring(#items)) .. "d_%s_cfg%s", i, common.slug(it.prompt, 40),
                                 tostring(cfg))
      local rec = {
        file = name .. ".wav", prompt = it.prompt, source = it.source, clip = it.clip, reference = it.reference,
        cfg_scale = cfg, seed = o.seed + i - 1, steps = o.steps, seconds = seconds, frames = frames,
        sampler = o.sampler, step = o.step, weights = o.weights, model = model.name, random_weights = model.random,
        negative_prompt = o.negative_prompt, sigma_min = o.sigma_min, sigma_max = o.sigma_max, peak_db = o.peak_db,
        batch = batch > 1 and batch or nil,
      }
      records[#records + 1] = rec
      local job = { rec = rec, name = name, wav = dir .. "/" .. name .. ".wav", js = dir .. "/" .. name .. ".json" }
      if not (common.exists(job.wav) and common.exists(job.js)) then
        todo[cfg] = todo[cfg] or {}
        table.insert(todo[cfg], job)
      end
    end
  end
  local bar = progress.new { total = #records, label = "sample", unit = "clips", quiet = o.quiet }
  local missing = 0
  for _, list in pairs(todo) do missing = missing + #list end
  bar:skip(#records - missing)
  for _, cfg in ipairs(o.cfg_scales) do
    local list = todo[cfg] or {}
    todo[cfg] = nil   -- a scale listed twice runs once
    for first = 1, #list, batch do
      local jobs = { unpack(list, first, math.min(#list, first + batch - 1)) }
      local prompts, seeds = {}, {}
      for k, j in ipairs(jobs) do prompts[k], seeds[k] = j.rec.prompt, j.rec.seed end
      bar:start(jobs[1].name)
      local audio, info = model:generate { prompt = prompts, seeds = seeds, seconds = seconds, steps = o.steps,
        cfg_scale = cfg, frames = frames, sampler = o.sampler, negative_prompt = o.negative_prompt, progress = false,
        sigma_min = o.sigma_min, sigma_max = o.sigma_max }
      for k, j in ipairs(jobs) do
        j.rec.sampling_s = info.sampling_s / #jobs
        local a = audio:select(1, k):contiguous()
        if o.peak_db then   -- as StableBeaT's demos: the peak at 1.0 (0 dBFS) or at the level asked
          local n = sao.audio.peak_normalize(a, o.peak_db)
          a:free()
          a = n
        end
        sao.audio.save(j.wav, a, sr)
        a:free()
        common.write_atomic(j.js, cjson.encode(j.rec))
        bar:advance(1, j.name)
      end
      audio:free()
    end
  end
  bar:finish()
  common.write_atomic(dir .. "/index.json", cjson.encode(records))
  return records
end

local function settings(opts, model)
  local d = M.defaults(model, opts.sample_profile ~= true and opts.sample_profile or nil)
  return {
    sigma_min = common.num(opts.sigma_min, d.sigma_min), sigma_max = common.num(opts.sigma_max, d.sigma_max),
    peak_db = common.num(opts.peak_db, d.peak_db),
    cfg_scales = common.list(opts.cfg_scales, true) or d.cfg_scales,
    steps = common.num(opts.sample_steps, d.steps), seconds = common.num(opts.seconds, d.seconds),
    seed = common.num(opts.sample_seed, d.seed), sampler = opts.sampler or d.sampler,
    frames = opts.frames_sample and common.num(opts.frames_sample) or nil, quiet = common.flag(opts.quiet),
    num = common.num(opts.num_demos, d.num),
    negative_prompt = opts.negative_prompt ~= "" and opts.negative_prompt or nil,
    batch = common.num(opts.sample_batch, d.batch),
  }
end
M.settings = settings

function M.run(opts)
  opts = opts or {}
  local quiet = common.flag(opts.quiet)
  local log = function(msg) if not quiet then io.stderr:write(msg, "\n") end end
  local run_dir = common.run_dir(opts)
  local model = common.load_model(opts)
  local s = settings(opts, model)
  local items = M.prompts(opts, s.num)
  local ck = common.latest_checkpoint(run_dir)
  local written = {}
  local which = opts.weights == "online" and "online" or "ema"
  if ck then
    local step, file = M.load_weights(model, ck.dir, which)
    s.step, s.weights = step, file
    log(string.format("sample: %d prompt(s) x CFG {%s} from %s (%s weights), %d steps", #items,
      table.concat(s.cfg_scales, ", "), ck.dir, file, s.steps))
  else
    s.step, s.weights = 0, "base"
    log("sample: no checkpoint in " .. run_dir .. "/checkpoints: sampling the base model as step-0")
  end
  if model.random then log("sample: the model has random weights: its samples are noise-like") end
  local dir = run_dir .. "/samples/step-" .. s.step
  written[#written + 1] = { dir = dir, records = M.generate_set(model, items, dir, s) }
  if common.flag(opts.baseline) and s.step > 0 then
    local base = common.load_model(opts)
    local b = {}
    for k, v in pairs(s) do b[k] = v end
    b.step, b.weights = 0, "base"
    local bdir = run_dir .. "/samples/step-0"
    written[#written + 1] = { dir = bdir, records = M.generate_set(base, items, bdir, b) }
  end
  log("sample: wrote " .. dir)
  return written
end

return M
