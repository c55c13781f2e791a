-- sao.pipeline.train — the `train` stage: fine-tunes the DiT on the encode stage's cache with
-- sao.train, in OUT/runs/<run>/ (DESIGN.md):
--   config.lua          the resolved config (edit it and re-run: it is read back, then overridden
--                       by --config FILE and the command line)
--   schedule.lua        the LR schedule, reloaded while training when it changes (hot swap)
--   log.jsonl, loss.png one JSON line per step (and events); the loss curve
--   checkpoints/step-N  model + EMA + optimiser + data cursor; the last `keep` are kept
--   export/             model.safetensors (EMA DiT under model.model.*, upstream names) and
--                       model_config.json; LoRA runs: lora.safetensors (EMA adapters)
-- A re-run resumes from the latest checkpoint (bit-exact) and trains until `steps` (a total).
--
--   sao recipes/instrumental.lua --stages train [--run main] [--steps N] [--batch B] [--lr X]
--       [--frames F] [--lora-rank R] [--checkpoint-every N] [--config my_train.lua] [--model tiny]
--       [--device cuda]   (the DiT trains on that GPU: sao.train's device runs)
--
-- Defaults are the seed's (SAO_SPEC §7: batch 16, AdamW lr 5e-5 wd 1e-3, InverseLR, EMA,
-- CFG dropout 0.1) for SAO; for the tiny random model a short run (300 steps, batch 4, 256
-- latent frames, lr 1e-3) that exercises the whole loop on a CPU in a few minutes.
-- Trained: the DiT (or its LoRA adapters). The number conditioners stay frozen for now (upstream
-- trains them too, SAO_SPEC §4.2), so the loader applies them to the cached values.
local cjson = require "cjson"
local sao = require "sao"
local latents = require "sao.latents"
local progress = require "sao.progress"
local plot = require "sao.plot"
local common = require "sao.pipeline.common"
local ddp = require "sao.pipeline.ddp"

local M = {}

--- The default config for a model (the seed's for SAO; small for the tiny random model).
function M.defaults(model)
  local c = {
    steps = 10000, batch = 16, accum = 1, frames = model:window_frames(), seed = 42, cfg_dropout = 0.1,
    checkpoint_every = 1000, keep = 3, log_every = 1,
    optimizer = { lr = 5e-5, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 1e-3 },
    schedule = { name = "inverse_lr", inv_gamma = 1e6, power = 0.5, warmup = 0.99 },
    ema = { beta = 0.9999, power = 0.75 },
    demo = { every = 2000, cfg_scales = { 3, 6, 9 }, steps = 100, seconds = 30 },
  }
  if model.random then
    c.steps, c.batch, c.frames, c.checkpoint_every, c.log_every = 300, 4, 256, 100, 10
    c.optimizer.lr = 1e-3
    c.demo = { every = 0, cfg_scales = { 4, 7 }, steps = 8, seconds = 4 }
  end
  return c
end

local function merge(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" and #v == 0 and next(v) ~= nil then merge(dst[k], v)
    else dst[k] = v end
  end
  return dst
end

local function load_lua_table(path)
  local chunk, err = loadfile(path)
  if not chunk then error("train: " .. path .. ": " .. err, 0) end
  local ok, t = pcall(chunk)
  if not ok or type(t) ~= "table" then error("train: " .. path .. ": must return a table (" .. tostring(t) .. ")", 0) end
  return t
end

--- The run's config: defaults < run_dir/config.lua < opts.config (a Lua file) < command line.
function M.resolve(opts, model, model_id, run_dir)
  local cfg = M.defaults(model)
  local path = run_dir .. "/config.lua"
  if common.exists(path) then
    local old = load_lua_table(path)
    if old.model_id and old.model_id ~= model_id then
      error(string.format("train: %s was trained with model '%s', not '%s': pick another --run name",
        run_dir, tostring(old.model), tostring(model.name)), 0)
    end
    merge(cfg, old)
  end
  if opts.config and opts.config ~= true then merge(cfg, load_lua_table(opts.config)) end
  local n = common.num
  cfg.steps = n(opts.steps, cfg.steps)
  cfg.batch = n(opts.batch, cfg.batch)
  cfg.accum = n(opts.accum, cfg.accum)
  cfg.frames = n(opts.frames, cfg.frames)
  cfg.seed = n(opts.train_seed, cfg.seed)
  cfg.cfg_dropout = n(opts.cfg_dropout, cfg.cfg_dropout)
  cfg.checkpoint_every = n(opts.checkpoint_every, cfg.checkpoint_every)
  cfg.keep = n(opts.keep, cfg.keep)
  cfg.log_every = n(opts.log_every, cfg.log_every)
  cfg.optimizer.lr = n(opts.lr, cfg.optimizer.lr)
  cfg.optimizer.weight_decay = n(opts.weight_decay, cfg.optimizer.weight_decay)
  cfg.optimizer.clip = n(opts.clip, cfg.optimizer.clip)
  cfg.demo.every = n(opts.demo_every, cfg.demo.every)
  if opts.seconds_cond and opts.seconds_cond ~= true then cfg.seconds = opts.seconds_cond end
  cfg.seconds = cfg.seconds or "clip"
  if cfg.seconds ~= "clip" and cfg.seconds ~= "source" then
    error("train: --seconds-cond must be 'clip' or 'source', got '" .. tostring(cfg.seconds) .. "'", 0)
  end
  if opts.lora_rank then
    cfg.lora = cfg.lora or {}
    cfg.lora.rank = n(opts.lora_rank)
  end
  if cfg.lora then
    cfg.lora.alpha = n(opts.lora_alpha, cfg.lora.alpha or cfg.lora.rank)
    if opts.lora_targets and opts.lora_targets ~= true then cfg.lora.targets = opts.lora_targets end
  end
  if cfg.frames > model:window_frames() then
    error(string.format("train: frames %d exceed the model's window (%d latent frames)", cfg.frames, model:window_frames()), 0)
  end
  cfg.model, cfg.model_id = model.name, model_id
  return cfg
end

--- The default schedule file: the config's InverseLR, written out so it can be edited live.
function M.schedule_text(s)
  s = s or {}
  if s.name and s.name ~= "inverse_lr" then
    return "-- Learning-rate schedule of this run (reloaded while training when this file changes).\n" ..
      "-- Return function(step, cfg) -> lr, or a schedule name/table understood by sao.schedules.\n" ..
      "return " .. common.serialize(s) .. "\n"
  end
  return string.format([[
-- Learning-rate schedule of this run. sao.train reloads this file while training when it changes
-- (hot swap; the change is logged in log.jsonl). Return function(step, cfg) -> lr, where step is
-- the number of optimiser steps already taken and cfg.lr the base rate (config.lua), or a schedule
-- name / {name = ..., ...} known to sao.schedules ("inverse_lr", "cosine", "warmup", "constant").
-- Default: SAO's InverseLR (stable-audio-tools): lr = base (1 - warmup^(n+1)) (1 + n/inv_gamma)^-power.
local inv_gamma, power, warmup = %s, %s, %s
return function(n, cfg)
  return cfg.lr * (1 - warmup ^ (n + 1)) * (1 + n / inv_gamma) ^ (-power)
end
]], common.serialize(s.inv_gamma or 1e6), common.serialize(s.power or 0.5), common.serialize(s.warmup or 0.99))
end

--- Step records of log.jsonl (events left out), in order.
function M.read_log(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then return out end
  for line in f:lines() do
    local ok, r = pcall(cjson.decode, line)
    if ok and type(r) == "table" then out[#out + 1] = r end
  end
  f:close()
  return out
end

-- Drops log lines from after the checkpoint a resumed run restarts from (a killed run's tail).
local function trim_log(path, step)
  local kept = {}
  local f = io.open(path, "rb")
  if not f then return end
  for line in f:lines() do
    local ok, r = pcall(cjson.decode, line)
    if ok and type(r) == "table" and type(r.step) == "number" then
      if (r.event and r.step < step) or (not r.event and r.step <= step) then kept[#kept + 1] = line end
    end
  end
  f:close()
  common.write_atomic(path, table.concat(kept, "\n") .. (#kept > 0 and "\n" or ""))
end

--- Writes the loss curve of a run (log.jsonl -> loss.png). Returns the PNG bytes (nil: no steps).
function M.plot_loss(run_dir, path)
  local xs, ys = {}, {}
  for _, r in ipairs(M.read_log(run_dir .. "/log.jsonl")) do
    if not r.event and type(r.loss) == "number" and r.loss == r.loss and not r.skipped then
      xs[#xs + 1], ys[#ys + 1] = r.step, r.loss
    end
  end
  if #xs == 0 then return nil end
  local k = math.max(5, math.floor(#xs / 20) * 2 + 1)
  local png = plot.chart { title = "loss", xlabel = "step", logy = "auto",
    series = { { x = xs, y = ys, color = plot.colors.light, thick = 1 }, { x = xs, y = plot.smooth(ys, k) } },
    legend = { "loss", "mean of " .. k } }
  plot.write(path or (run_dir .. "/loss.png"), png)
  return png
end

local function prune(run_dir, keep)
  local list = common.checkpoints(run_dir)
  for i = 1, #list - keep do os.execute("rm -rf " .. common.shell_quote(list[i].dir)) end
end

--- Exports the EMA weights: export/model.safetensors (+ model_config.json), or lora.safetensors.
function M.export(trainer, model, run_dir)
  local dir = run_dir .. "/export"
  common.mkdir_p(dir)
  local stamp = string.format('{"step":%d,"lora":%s}', trainer.step_n, tostring(trainer.cfg.lora ~= nil))
  local target = dir .. (trainer.cfg.lora and "/lora.safetensors" or "/model.safetensors")
  if common.read(dir .. "/state.json") == stamp and common.exists(target) then return target end
  M.write_export(trainer, model, dir)
  common.write_atomic(dir .. "/state.json", stamp)
  return target
end

function M.write_export(trainer, model, dir)
  if trainer.cfg.lora then
    local src = trainer.ema and trainer.ema.shadow or trainer.params
    local l = trainer.cfg.dit.lora or trainer.cfg.lora
    sao.save_safetensors(dir .. "/lora.safetensors", src, { format = "sao-lora", rank = l.rank,
      alpha = l.alpha or l.rank, targets = l.targets or "", step = trainer.step_n })
    return dir .. "/lora.safetensors"
  end
  -- a whole checkpoint, as the released one: the EMA DiT + the base's VAE and number conditioners
  trainer:export(dir .. "/model.safetensors", { extra = model:state_dict { dit = false } })
  local src = common.read(tostring(model.name) .. "/model_config.json")   -- the base's file, as it was
  common.write_atomic(dir .. "/model_config.json", src or cjson.encode(model.config))
  if model.random then
    -- the random T5 beside it (a real base uses the user's t5-base), so sao.load_model(dir) works
    common.mkdir_p(dir .. "/t5-base")
    sao.save_safetensors(dir .. "/t5-base/model.safetensors", require("sao.models").tensors(model.t5.encoder:params()))
    common.write_atomic(dir .. "/t5-base/config.json", cjson.encode(model.t5.config))
    common.write_atomic(dir .. "/t5-base/spiece.model", assert(common.read(model.t5.tokenizer.path)))
  end
  return dir .. "/model.safetensors"
end

-- A second model whose DiT reads the trainer's EMA tensors (bound as views: always current; a GPU
-- run's are device tensors, so the demo binds host copies, taken anew before each demo).
local function demo_weights(trainer)
  local src = trainer.ema and trainer.ema.shadow or trainer.params
  if not trainer.device then return src end
  local host = {}
  for k, t in pairs(src) do host[k] = t:to("cpu") end
  return host
end

-- Binds the trainer's current weights (or adapters) into the demo model's DiT.
local function bind_demo(m, trainer)
  local src = demo_weights(trainer)
  if trainer.cfg.lora then
    require("sao.models").bind(sao.C.sao_dit_lora_params(m.dit.h), src, "")
  else
    m.dit:load(src, "")
  end
end

local function demo_model(opts, trainer)
  local m = common.load_model(opts)
  if trainer.cfg.lora then require("sao.lora").add(m.dit, trainer.cfg.lora) end
  bind_demo(m, trainer)
  return m
end

-- ---- data parallel (sao.pipeline.ddp starts the workers) ------------------------------------------
--- A worker rank of a data-parallel run (started by its machine's first rank: sao.pipeline.ddp).
--- comm: the group file's path, or "tcp:HOST:PORT" (several machines).
function M.worker(opts_path, rank, comm, world, local_rank)
  local text = common.read(opts_path)
  if not text then error("train.worker: " .. opts_path .. ": cannot read", 0) end
  local opts = require("cjson").decode(text)
  for k, v in pairs(opts) do if v == require("cjson").null then opts[k] = nil end end
  opts._rank, opts._comm, opts._world, opts._local_rank, opts.quiet = rank, comm, world, local_rank or rank, true
  return M.run(opts)
end

function M.run(opts)
  opts = opts or {}
  local quiet = common.flag(opts.quiet)
  local log = function(msg) if not quiet then io.stderr:write(msg, "\n") end end
  local out = opts.out or "out"
  local run_dir = common.run_dir(opts)
  local cache_dir = out .. "/cache/latents"
  local dp = ddp.layout(opts)
  local rank, world = dp.rank, dp.world
  local dev = ddp.device(opts, dp)
  local mopts = opts
  if dev ~= opts.device then
    mopts = {}
    for k, v in pairs(opts) do mopts[k] = v end
    mopts.device = dev
  end
  local model, model_id = common.load_model(mopts)
  local entries = latents.select(latents.read_index(cache_dir), model_id, "train")
  if #entries == 0 then
    error("train: no encoded clips for model '" .. tostring(model.name) .. "' in " .. cache_dir ..
      "/index.jsonl (run the encode stage with the same --model)", 0)
  end
  common.mkdir_p(run_dir)
  local cfg = M.resolve(opts, model, model_id, run_dir)
  cfg.data = { cache = cache_dir, clips = #entries, split = "train" }
  local sched = run_dir .. "/schedule.lua"
  if rank == 0 then
    common.write_atomic(run_dir .. "/config.lua", "-- sao train config (resolved); edit and re-run to change it\nreturn " ..
      common.serialize(cfg) .. "\n")
    if not common.exists(sched) then common.write_atomic(sched, M.schedule_text(cfg.schedule)) end
  end
  if dp.nproc > 1 then sao.threads(math.max(1, math.floor(sao.threads() / dp.nproc))) end   -- the cores, shared

  local ck = opts._checkpoint and { dir = opts._checkpoint, step = opts._checkpoint_step } or common.latest_checkpoint(run_dir)
  local par = ddp.new(opts, dp, { run_dir = run_dir, checkpoint = ck, device = dev })
  par:join()   -- a worker's group, or a multi-machine one; NCCL
  local loader = latents.loader(entries, { model = model, cache_dir = cache_dir, batch = cfg.batch,
    frames = cfg.frames, seed = cfg.seed, seconds = cfg.seconds, rank = rank, world = world })
  local function optimizer_copy()
    local o = {}
    for k, v in pairs(cfg.optimizer) do o[k] = v end
    return o
  end
  local tcfg = { dit = model.dit, data = loader, batch = cfg.batch, frames = cfg.frames,
    context = model.t5.max_length + 2, optimizer = optimizer_copy(), schedule_file = sched, ema = cfg.ema,
    cfg_dropout = cfg.cfg_dropout, seed = cfg.seed, accum = cfg.accum, run_dir = run_dir, quiet = true,
    keep_checkpoints = cfg.keep, precision = opts.precision ~= true and opts.precision or nil,
    log_every = cfg.log_every, lora = cfg.lora and { rank = cfg.lora.rank, alpha = cfg.lora.alpha, targets = cfg.lora.targets },
    comm = par.group, nccl = par.nccl, zero = opts.zero ~= nil and common.num(opts.zero, 1) or nil }
  local trainer
  if ck then
    if rank == 0 then trim_log(run_dir .. "/log.jsonl", ck.step) end
    trainer = sao.train.resume(ck.dir, tcfg)
    -- config.lua wins over the optimiser settings saved in the checkpoint (the optimiser re-reads them)
    for k, v in pairs(cfg.optimizer) do trainer.cfg.optimizer[k] = v end
    trainer:log { step = trainer.step_n, event = "resumed", from = ck.dir }
    if rank == 0 then log(string.format("train: resumed %s from %s", run_dir, ck.dir)) end
  else
    if rank == 0 then os.remove(run_dir .. "/log.jsonl") end
    trainer = sao.train.new(tcfg)
    trainer:log { step = 0, event = "started", clips = #entries, model = model.name, batch = cfg.batch,
      frames = cfg.frames, lora = cfg.lora and cfg.lora.rank or nil }
  end
  par:attach(trainer)   -- one machine's ranks: the group file, the other processes
  if world > 1 and rank == 0 then log(par:describe(cfg.batch, trainer)) end
  if model.random then
    log("train: the TINY model with random weights (no SAO checkpoint found): this run exercises the " ..
      "pipeline; its samples are not music")
  end
  log(string.format("train: %s: %d clips, batch %d x %d latent frames, %s, steps %d -> %d on %d thread(s)",
    run_dir, #entries, cfg.batch, cfg.frames, cfg.lora and ("LoRA rank " .. cfg.lora.rank) or "full DiT",
    trainer.step_n, cfg.steps, sao.threads()))

  local bar = progress.new { total = cfg.steps, label = "train", unit = "steps", quiet = quiet or rank ~= 0 }
  if trainer.step_n > 0 then bar:skip(math.min(trainer.step_n, cfg.steps)) end
  local demo
  local last_saved, saved_last, stopped = ck and ck.step or -1, false, false
  -- SIGTERM (a cluster's preemption) or Ctrl-C: finish the step, save, stop (sao_stop_graceful)
  local graceful_was = sao.C.sao_stop_graceful(1)
  local ok, err = pcall(function()
    while trainer.step_n < cfg.steps do
      bar:start()
      local r = trainer:step()
      if r.step % cfg.log_every == 0 and rank == 0 then
        bar:print(string.format("step %6d | loss %.6f | |g| %.3e | lr %.3e | %7.1f ms | %.2f samples/s%s",
          r.step, r.loss, r.grad_norm or 0 / 0, r.lr or 0 / 0, r.ms, r.samples_per_s, r.skipped and " | skipped" or ""))
      end
      bar:advance(1, string.format("loss %.4f", r.loss))
      local n = trainer.step_n
      if cfg.checkpoint_every > 0 and n % cfg.checkpoint_every == 0 then
        trainer:save()   -- every rank: ZeRO-1 gathers the optimiser's shards; rank 0 writes
        last_saved = n
        if rank == 0 then
          prune(run_dir, cfg.keep)
          M.plot_loss(run_dir)
        end
      end
      local demo_due = cfg.demo.every and cfg.demo.every > 0 and n % cfg.demo.every == 0
      if demo_due then trainer:sync_ema() end   -- every rank (ZeRO-1's EMA shards), then rank 0 samples
      if demo_due and rank == 0 then
        local sample = require "sao.pipeline.sample"
        if demo and trainer.device then bind_demo(demo, trainer) end
        demo = demo or demo_model(opts, trainer)
        local d = cfg.demo
        local items = sample.prompts({ out = out, prompts = d.prompts }, d.num or 4)
        sample.generate_set(demo, items, run_dir .. "/samples/step-" .. n, { cfg_scales = d.cfg_scales, steps = d.steps,
          seconds = d.seconds, seed = 1, sampler = d.sampler or "dpmpp-3m-sde", step = n, weights = "ema", quiet = quiet })
      end
      if r.stop then   -- every rank sees it at the same step
        stopped = true
        trainer:log { step = n, event = "stopped", reason = "signal" }
        break
      end
    end
    if last_saved ~= trainer.step_n then
      trainer:save()   -- every rank, as above
      saved_last = true
    end
  end)
  sao.C.sao_stop_graceful(graceful_was)
  sao.C.sao_stop_set(0)
  if not ok then
    par:fail()   -- the group broken, this machine's other ranks ended, what they said printed
    error(err, 0)
  end
  bar:finish()
  par:finish()
  if rank ~= 0 then return { run_dir = run_dir, step = trainer.step_n, rank = rank, trainer = trainer } end
  if saved_last then prune(run_dir, cfg.keep) end
  M.plot_loss(run_dir)
  if stopped then
    error(("train: stopped at step %d of %d (SIGTERM or Ctrl-C); checkpoint %s/checkpoints/step-%d saved: run " ..
      "the same command to resume"):format(trainer.step_n, cfg.steps, run_dir, trainer.step_n), 0)
  end
  local exported = M.export(trainer, model, run_dir)
  log(string.format("train: at step %d; checkpoint %s/checkpoints/step-%d, export %s, loss curve %s/loss.png",
    trainer.step_n, run_dir, trainer.step_n, exported, run_dir))
  return { run_dir = run_dir, step = trainer.step_n, export = exported, trainer = trainer }
end

return M
