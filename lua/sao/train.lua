-- sao.train — the fine-tuning loop: Lua calling C steps (SAO_SPEC §7).
--
--   local trainer = sao.train.new{
--     dit = dit,                          -- a sao.dit handle with weights
--     data = loader,                      -- :next() -> {latents=[B,io,T], cross=[B,L,Dc], global=[B,Dg]}
--     batch = 4, frames = 256, context = 130,
--     optimizer = {lr = 5e-5, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-3, clip = nil},
--     schedule = "inverse_lr",            -- a name, {name=, ...}, or function(step, cfg)
--     schedule_file = "runs/x/schedule.lua", -- hot swap: reloaded when the file changes
--     ema = {beta = 0.9999, power = 0.75}, cfg_dropout = 0.1, seed = 42, accum = 1, fixed_noise = false,
--     recompute = false, run_dir = "runs/x", checkpoint_every = 1000, keep_checkpoints = 3, log_every = 1,
--     demo = {every = 500, fn = function(trainer, step) ... end},   -- demo generations
--     lora = nil,                         -- or {rank = 16, alpha = 16, targets = "..."}: train adapters only
--     device = nil,                       -- "cuda" / "cuda:N": train on that GPU (default: where the DiT is)
--     precision = "bf16",                 -- on a GPU: "bf16" / "tf32" / "fp32" products (sao.cuda.precision)
--   }
--   for i = 1, 100 do trainer:step() end
--   trainer:save()                       -- runs/x/checkpoints/step-N/
--   local again = sao.train.resume("runs/x/checkpoints/step-N", {dit = dit2, data = loader2})
--
-- Randomness (t, noise, CFG dropout) is a pure function of (seed, step, micro-batch) through
-- Philox, so a resumed run draws exactly what the original would have: bit-exact resume.
-- The optimiser re-reads trainer.cfg.optimizer every step; assigning trainer.cfg.schedule (from the
-- REPL, say) or editing the schedule file swaps the schedule at the next step, and is logged.
--
-- On a GPU (cfg.device, or a DiT already moved there) the forward, backward, AdamW, clipping and
-- EMA all run on the device, with fp32 weights, gradients and optimiser state and the linear
-- layers' products in cfg.precision (bf16 by default): the parameters are the DiT's device weights
-- (dit:device_tensor) or the LoRA adapters (device tensors too), the gradients, moments and EMA
-- copy are device tensors, and only the batch, the model output and its gradient cross to the host
-- each micro-batch. Checkpoints are written from host copies; dit:to("cpu") brings the trained
-- weights (or adapters) back.
local ffi = require "ffi"
local cjson = require "cjson"
local sao = require "sao"
local optim = require "sao.optim"
local schedules = require "sao.schedules"
local C = sao.C

local M = {}
local Trainer = {}
Trainer.__index = Trainer

local fs = require "sao.fs"
local mkdir_p, write_atomic = fs.mkdir_p, fs.write_atomic
M.mkdir_p, M.write_atomic = mkdir_p, write_atomic

local now = require("sao.progress").now

-- Trainable parameters of a DiT: name -> tensor (owned, writable copies), buffers excluded.
local function trainable(dit)
  local p = dit:params()
  local out = {}
  for i = 0, C.sao_params_count(p) - 1 do
    local name = ffi.string(C.sao_params_name(p, i))
    local t = C.sao_params_tensor(p, i)
    if t ~= nil and not name:match("%.beta$") and not name:match("inv_freq$") then
      -- rebind a private copy: checkpoint tensors may be read-only mappings
      local own = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_clone(sao.ctx, t)))
      sao.check(C.sao_params_bind(sao.ctx, p, name, own:raw()))
      out[name] = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_view_of(sao.ctx, C.sao_params_tensor(p, i))))
    end
  end
  return out
end

--- Per-item uniform t in [0, 1), stratified over the batch (one item per 1/B stratum, shuffled by
--- the uniform draw itself), from Philox stream (seed, counter).
local function draw_t(B, seed, counter)
  local u = sao.rand { { B }, seed = seed, offset = counter, dtype = "f64" }:totable()
  local t = {}
  for i = 1, B do t[i] = ((i - 1) + u[i]) / B end
  return sao.tensor(t)
end

-- The GPU to train on ("cuda:N"), or nil for the CPU: cfg.device, else where the DiT is.
local function train_device(cfg)
  local d = cfg.device
  if d == nil then
    local kind, n = cfg.dit:device()
    return kind == "cuda" and ("cuda:" .. n) or nil
  end
  if d == "cpu" then return nil end
  local n = type(d) == "string" and d:match("^cuda:?(%d*)$")
  if not n then error("train: device '" .. tostring(d) .. "': expected \"cpu\", \"cuda\" or \"cuda:N\"", 3) end
  return "cuda:" .. (n ~= "" and n or "0")
end

function M.new(cfg)
  if not cfg.dit then error("train: cfg.dit (a sao.dit handle with weights) is required", 2) end
  if not cfg.data then error("train: cfg.data (a loader with :next()) is required", 2) end
  local self = setmetatable({ cfg = cfg }, Trainer)
  local device = train_device(cfg)
  self.device = device
  self.rank, self.world = 0, 1
  if cfg.comm then self:attach(cfg.comm, cfg.nccl) end
  cfg.optimizer = cfg.optimizer or {}
  local oc = cfg.optimizer
  oc.lr = oc.lr or 5e-5
  oc.betas = oc.betas or { 0.9, 0.999 }
  oc.eps = oc.eps or 1e-8
  oc.weight_decay = oc.weight_decay or 1e-3
  oc.stochastic_rounding = oc.stochastic_rounding or false   -- the bf16 weight copies of a GPU run
  cfg.seed = cfg.seed or 42
  oc.sr_seed = oc.sr_seed or cfg.seed
  cfg.accum = cfg.accum or 1
  cfg.cfg_dropout = cfg.cfg_dropout == nil and 0.1 or cfg.cfg_dropout
  cfg.log_every = cfg.log_every or 1
  if cfg.schedule_file then
    self.schedule_mtime = C.sao_file_mtime(cfg.schedule_file)
    if self.schedule_mtime >= 0 then cfg.schedule = schedules.load_file(cfg.schedule_file) end
  end
  cfg.schedule = schedules.resolve(cfg.schedule)
  -- private host copies of the weights first; on a GPU they are uploaded by dit:to, and the
  -- optimiser updates the device copies
  cfg.dit:sync_host()   -- a DiT trained on a GPU before: its host tensors catch up first
  local host_params = not cfg.lora and trainable(cfg.dit) or nil
  local mem0
  if device then
    sao.cuda.precision(cfg.precision or "bf16")
    sao.cuda.reset_peak()   -- the first step's peak is this run's, not an earlier workload's
    local m = sao.cuda.memory()
    mem0 = { allocated = m.allocated, peak = m.peak, dit_there = cfg.dit:device() == "cuda",
             workspace = tonumber(C.sao_cuda_gemm_workspace_bytes(tonumber(device:match("%d+")))) }
    cfg.dit:to(device)
  end
  self.tr = sao.dit_train.new(cfg.dit, { batch = cfg.batch, frames = cfg.frames, context = cfg.context or 0,
    recompute = cfg.recompute })
  if cfg.lora then
    -- LoRA: the base stays frozen; the adapters are the trainable set
    local lora = require "sao.lora"
    if lora.rank(cfg.dit) == 0 then lora.add(cfg.dit, cfg.lora) end
    self.params, self.grads = lora.params(cfg.dit), lora.grads(cfg.dit)
  else
    self.params = host_params
    if device then
      -- bf16 products: the weights' bf16 copy is made once and kept current by the fused AdamW
      -- step (sao_cuda_adamw_multi) instead of rounding every weight at every GEMM
      cfg.dit:keep_bf16(sao.cuda.precision() == "bf16")
      self.params = {}
      for k in pairs(host_params) do self.params[k] = cfg.dit:device_tensor(k) end
    end
    local all = self.tr:grads()
    self.grads = {}
    for k in pairs(self.params) do self.grads[k] = all[k] end
  end
  self.grad_names = {}
  for k in pairs(self.grads) do self.grad_names[#self.grad_names + 1] = k end
  table.sort(self.grad_names)   -- the same order on every rank of a data-parallel run
  oc.schedule = cfg.schedule
  self.opt = optim.adamw(self.params, self.grads, oc, device)
  if device and not cfg.lora then
    -- every trained gradient lives in the trainer's arena (the rest there stays zero): one pass,
    -- one read back per step instead of one per tensor
    local tr = self.tr
    self.opt.norm_fn = function() return tr:grad_norm() end
  end
  self.ema = cfg.ema ~= false and optim.ema(self.params, cfg.ema or {}, device) or nil
  self.step_n = 0
  self.last_schedule = cfg.schedule
  self.nparams = cfg.dit:parameter_count()
  self.mem0 = mem0
  if self.comm then self:shard_state() end
  self.plan = self:memory_plan()
  if device then self.plan.device = self:device_plan(mem0) end
  if not cfg.quiet and self.rank == 0 then io.stderr:write(self:plan_text()) end
  if cfg.run_dir then
    mkdir_p(cfg.run_dir)
    self.log_path = cfg.run_dir .. "/log.jsonl"
  end
  return self
end

--- Joins a data-parallel group (a sao.comm): from the next step this trainer trains on its rank's
--- part of the global batch of world x batch clips, and gradients, loss and learning rate are
--- averaged / shared at every step. cfg.zero (default 1 when world > 1): ZeRO-1, each rank keeps
--- AdamW's moments for its shard of the weights only (reduce-scatter of the gradients, the update of
--- the shard, all-gather of the weights; the EMA's shards when read: sync_ema); 0: every rank
--- all-reduces the gradients and
--- updates every weight. A GPU run exchanges device tensors through `nccl` (a sao.nccl
--- communicator of the same ranks) when given, else through host copies over the group.
function Trainer:attach(comm, nccl)
  self.comm, self.cfg.comm = comm, comm
  self.nccl, self.cfg.nccl = nccl, nccl
  self.rank, self.world = comm:rank(), comm:world()
  if self.cfg.zero == nil then self.cfg.zero = self.world > 1 and 1 or 0 end
  if self.opt then
    self:shard_state()
    self.plan = self:memory_plan()
    if self.device then self.plan.device = self:device_plan(self.mem0) end
  end
  return self
end

-- ZeRO-1: this rank's shard of the flat vector of trained weights (name order).
function Trainer:shard_state()
  if self.world < 2 or (tonumber(self.cfg.zero) or 0) < 1 or self.opt.shard then return end
  if self.device and self.cfg.optimizer.stochastic_rounding and not self.cfg.lora then
    error("train: stochastic rounding of the bf16 weights with ZeRO-1 would round each rank's " ..
          "gathered weights differently; use zero = 0 for it", 3)
  end
  local lo, hi = self.comm:shard(self:grad_floats())
  self.opt:set_shard(lo, hi)
end

-- The trained tensors (or their gradients, or EMA copies) in name order: one flat vector for the
-- group's collectives.
function Trainer:list_of(map)
  local list = {}
  for _, k in ipairs(self.grad_names) do list[#list + 1] = map[k] end
  return list
end

-- A collective over a list of tensors: on the GPU through NCCL when the run has it, else through
-- host copies (a device list) or directly (a host one).
function Trainer:exchange(op, list)
  if #list == 0 then return end
  if list[1]:device() == "cpu" then return self.comm[op](self.comm, list) end
  if self.nccl then return self.nccl[op](self.nccl, list) end
  -- host copies: one kept per device tensor (no allocation per step)
  self.staging = self.staging or setmetatable({}, { __mode = "k" })
  local host = {}
  for i, t in ipairs(list) do
    local h = self.staging[t]
    if not h then
      h = sao.zeros(t:shape())
      self.staging[t] = h
    end
    h:copy_(t)
    host[i] = h
  end
  self.comm[op](self.comm, host)
  for i, t in ipairs(list) do t:copy_(host[i]) end
end

--- ZeRO-1: brings every rank's EMA copy up to date (each rank's steps updated its own shard of it).
--- A collective: every rank calls it, before anything reads trainer.ema.shadow (save does).
function Trainer:sync_ema()
  if self.ema and self.ema_stale then
    self:exchange("allgather", self:list_of(self.ema.shadow))
    self.ema_stale = false
  end
end

--- Every rank's moments, full size on the host (name -> tensor): a collective when sharded (every
--- rank calls it), the optimiser's own tensors otherwise.
function Trainer:full_moments()
  local st = self.opt.state
  if not self.opt.shard then return st.m, st.v end
  local m, v = {}, {}
  for _, k in ipairs(self.grad_names) do
    local p = self.params[k]
    local n = p:numel()
    m[k], v[k] = sao.zeros(p:shape()), sao.zeros(p:shape())
    local a, b = self.opt:slice(k)
    if a then
      m[k]:view(n):narrow(1, a + 1, b - a):copy_(st.m[k])
      v[k]:view(n):narrow(1, a + 1, b - a):copy_(st.v[k])
    end
  end
  self.comm:allgather(self:list_of(m))
  self.comm:allgather(self:list_of(v))
  return m, v
end

--- Floats in all trained gradients (what a data-parallel exchange carries per rank).
function Trainer:grad_floats()
  local n = 0
  for _, k in ipairs(self.grad_names) do n = n + self.grads[k]:numel() end
  return n
end

--- Bytes of each part of the training state, planned up front (llm.c style).
function Trainer:memory_plan()
  local n_train = 0
  for _, t in pairs(self.params) do n_train = n_train + t:numel() end
  local base = self.nparams
  local plan = {
    parameters = base * 4,
    trainable = n_train * 4,
    gradients_and_activations = self.tr.bytes,     -- the DiT's gradient arena + activation plan
    adamw_moments = (self.opt and self.opt.shard and (self.opt.shard.hi - self.opt.shard.lo) or n_train) * 8,
    ema = self.ema and n_train * 4 or 0,
  }
  local total = 0
  for _, v in pairs(plan) do total = total + v end
  plan.total = total - plan.trainable          -- trainable tensors live inside `parameters` (or LoRA's small set)
  if self.cfg.lora then plan.total = plan.total + plan.trainable end
  return plan
end

--- The device memory a GPU run holds, block by block as the caching allocator rounds them
--- (sao_cuda_size_class): the weight block (when dit:to moved it here), the trainer's gradient
--- and activation arenas, AdamW's m and v and the EMA copy per tensor, and the GEMM workspace.
--- The predicted peak adds them to what was allocated before; the first step measures it.
function Trainer:device_plan(mem0)
  local function class(bytes) return tonumber(C.sao_cuda_size_class(bytes)) end
  local per_tensor, moments = 0, 0
  for k, t in pairs(self.params) do
    per_tensor = per_tensor + class(t:numel() * 4)
    local a, b = self.opt:slice(k)   -- ZeRO-1: a rank's moments cover its shard only
    if a then moments = moments + class((b - a) * 4) end
  end
  local weights = 0
  if not mem0.dit_there then weights = class(tonumber(C.sao_dit_device_block_bytes(self.cfg.dit.h))) end
  local arenas = tonumber(C.sao_dit_train_device_bytes(self.tr.h))
  -- bf16 products: the weight block's bf16 copy (a LoRA run's frozen base, or the weights that the
  -- fused AdamW keeps current: dit:keep_bf16), and the largest linear's rounded inputs (dy and x of
  -- a backward; the weights come from the copy) in the scratch
  local scratch, mirror = 0, 0
  if sao.cuda.precision() == "bf16" then
    mirror = class(tonumber(C.sao_dit_device_block_bytes(self.cfg.dit.h)) / 2)
    local c, cfg = self.cfg.dit.config, self.cfg
    local E, Dc = c.embed_dim, c.cond_token_dim
    local F = (c.ff_mult or 4) * E
    local n, nl = cfg.batch * (cfg.frames + 1), cfg.batch * math.max(cfg.context or 0, 1)
    local function pad(k) return math.ceil(k / 128) * 128 end
    for _, s in ipairs { { n, E, 3 * E }, { n, E, 2 * F }, { n, F, E }, { nl, Dc, 2 * Dc } } do
      scratch = math.max(scratch, pad(s[1] * s[2]) + pad(s[1] * s[3]))
    end
    scratch = class(math.ceil(scratch / 2) * 4)
  end
  -- tf32/bf16: the tensor-core attention's two scratches [B, H, N, M] (kernels/cuda/attention.cu:
  -- attentions without bias or mask, up to 2 GiB each; the largest ones are kept). In the bf16 mode
  -- with attention_impl "auto" and head dims a multiple of 16 up to 128 the bf16 flash kernels run
  -- instead (attention_mma.cu, attention_mma_bwd.cu): the backward's delta [B, H, N] only. With
  -- attention_impl "cudnn" they go through cuDNN's SDPA (attention_cudnn.cu) and its one scratch,
  -- kept, sized by the largest backward: bf16 copies of Q, O, dO and dQ [B, H, N, D] and of K, V, dK
  -- and dV [B, Hkv, M, D], and cuDNN's workspace, counted as the fp32 dQ accumulator that flash
  -- backward engines keep [B, H, N, D] (an estimate: a GPU run's measured peak will say).
  local attn = 0
  local c, cfg = self.cfg.dit.config, self.cfg
  local H, N, L = c.num_heads, cfg.frames + 1, cfg.context or 0
  local D = c.embed_dim / H
  local impl = sao.cuda.attention_impl()
  if sao.cuda.precision() == "bf16" and (impl == "auto" or impl == "cudnn") and D % 16 == 0 and D <= 128 then
    attn = class(cfg.batch * H * N * 4)
    if impl == "cudnn" then
      local function pad(b) return math.ceil(b / 256) * 256 end
      local function sdpa(M, Hkv)
        return 4 * pad(cfg.batch * H * N * D * 2) + 4 * pad(cfg.batch * Hkv * M * D * 2) + pad(cfg.batch * H * N * D * 4)
      end
      local most = sdpa(N, H)
      if L > 0 then most = math.max(most, sdpa(L, c.cond_token_dim / D)) end
      attn = attn + class(most)
    end
  elseif sao.cuda.precision() ~= "fp32" then
    local function s_bytes(M) local b = cfg.batch * H * N * M * 4 return b <= 2 ^ 31 and b or 0 end
    attn = s_bytes(N)
    if L > 0 then attn = math.max(attn, s_bytes(L)) end
    if attn > 0 then attn = 2 * class(attn) end
    -- grouped cross-attention heads: K, V and their gradients copied per query head
    if L > 0 and c.cond_token_dim / D ~= H then attn = attn + 4 * class(cfg.batch * H * L * D * 4) end
  end
  -- LoRA: the adapters and their gradients, and the [rows, rank] scratch u and du
  local adapters = 0
  if self.cfg.lora then
    local rows = self.cfg.batch * (self.cfg.frames + 1)
    adapters = 2 * per_tensor + 2 * class(rows * self.cfg.dit.lora.rank * 4)
  end
  local d = {
    weights = weights, arenas = arenas, adamw_moments = 2 * moments, lora = adapters,
    ema = self.ema and per_tensor or 0, bf16_weights = mirror, bf16_scratch = scratch, attention_scratch = attn,
    gemm_workspace = mem0.workspace > 0 and 0 or class(32 * 2 ^ 20),   -- made by the first GEMM, kept
    before = mem0.allocated, peak_before = mem0.peak,
  }
  d.predicted_peak = math.max(mem0.peak, d.before + d.weights + d.arenas + d.adamw_moments + d.ema +
    d.gemm_workspace + d.bf16_weights + d.bf16_scratch + d.attention_scratch + d.lora)
  return d
end

function Trainer:plan_text()
  local p, cfg = self.plan, self.cfg
  local function mb(b) return string.format("%9.1f MB", b / 2 ^ 20) end
  local text = string.format(
    "[train] memory plan (batch %d x %d frames, context %d, recompute %s%s):\n" ..
    "  parameters      %s\n  trainable       %s\n  grads + activ.  %s\n  AdamW m, v      %s\n  EMA             %s\n" ..
    "  total           %s\n",
    cfg.batch, cfg.frames, cfg.context or 0, tostring(cfg.recompute and true or false),
    cfg.lora and (", LoRA rank " .. tostring(cfg.lora.rank)) or "",
    mb(p.parameters), mb(p.trainable), mb(p.gradients_and_activations), mb(p.adamw_moments), mb(p.ema), mb(p.total))
  local d = p.device
  if not d then return text end
  return text .. string.format("  on %s (%s products), as device blocks: weights %s, grads + activ. %s, AdamW %s,\n" ..
    "  EMA %s, LoRA %s, GEMM workspace %s, bf16 weights %s, bf16 scratch %s, attention scratch %s,\n" ..
    "  held before %s; predicted device peak %s\n",
    self.device, sao.cuda.precision(), mb(d.weights), mb(d.arenas), mb(d.adamw_moments), mb(d.ema), mb(d.lora),
    mb(d.gemm_workspace), mb(d.bf16_weights), mb(d.bf16_scratch), mb(d.attention_scratch), mb(d.before),
    mb(d.predicted_peak))
end

function Trainer:log(rec)
  if self.log_path and self.rank == 0 then
    local f = assert(io.open(self.log_path, "a"))
    f:write(cjson.encode(rec), "\n")
    f:close()
  end
end

-- Hot swap: the schedule file changed on disk, or cfg.schedule was reassigned.
function Trainer:check_schedule()
  local cfg = self.cfg
  local reloaded = false
  if cfg.schedule_file then
    local mt = C.sao_file_mtime(cfg.schedule_file)
    if mt >= 0 and mt ~= self.schedule_mtime then
      self.schedule_mtime = mt
      local ok, f = pcall(schedules.load_file, cfg.schedule_file)
      if ok then
        cfg.schedule = f
        reloaded = true
        self:log { step = self.step_n, event = "schedule reloaded", file = cfg.schedule_file }
        io.stderr:write(string.format("[train] step %d: schedule reloaded from %s\n", self.step_n, cfg.schedule_file))
      else
        self:log { step = self.step_n, event = "schedule reload failed", error = tostring(f) }
        io.stderr:write("[train] schedule reload failed, keeping the old one: " .. tostring(f) .. "\n")
      end
    end
  end
  if type(cfg.schedule) ~= "function" then cfg.schedule = schedules.resolve(cfg.schedule) end
  if cfg.schedule ~= self.last_schedule then
    -- a schedule assigned in Lua (the REPL); a file reload was logged above
    if not reloaded and self.last_schedule ~= nil then self:log { step = self.step_n, event = "schedule replaced" } end
    self.last_schedule = cfg.schedule
  end
  cfg.optimizer.schedule = cfg.schedule
  self.opt.cfg = cfg.optimizer
end

-- Rows first+1 .. first+B of a global batch's tensor (W ranks' rows), the whole one freed.
local function rows(x, first, B, W)
  if W == 1 then return x end
  local r = x:narrow(1, first + 1, B):contiguous()
  x:free()
  return r
end

--- One optimiser step (cfg.accum micro-batches). Returns the info table that is also logged:
--- {step, loss, grad_norm, lr, ms, samples_per_s, skipped, stop}. stop: a graceful stop was asked
--- (sao_stop_requested, in any rank of a data-parallel run): the caller should save and stop.
function Trainer:step()
  local cfg = self.cfg
  self:check_schedule()
  local t0 = now()
  self.tr:zero_grad()
  local total, B = 0, cfg.batch
  local W, first = self.world, self.rank * cfg.batch   -- this rank's rows of the global batch
  for micro = 1, cfg.accum do
    local batch = cfg.data:next()
    local x0 = batch.latents
    -- a disjoint Philox range per micro-batch; fixed_noise draws the same t and noise every step
    -- (for overfitting one batch). t, noise and dropout are drawn for the global batch (W x B) and
    -- each rank takes its rows: the same numbers as one process training on the whole batch.
    local counter = ((cfg.fixed_noise and 0 or self.step_n) * cfg.accum + (micro - 1)) * 1000003
    local t = draw_t(B * W, cfg.seed, counter)
    local per = x0:size(2) * x0:size(3)
    local noise
    if self.device and per % 4 == 0 then
      -- this rank's rows of the global batch's noise drawn on the GPU: row r's values are the
      -- stream's from Philox block r * per / 4 on, so the same numbers as the host's draw below
      noise = sao.randn { { B, x0:size(2), x0:size(3) }, seed = cfg.seed, offset = counter + 1 + first * per / 4,
                          device = self.device }
    else
      noise = sao.randn { { B * W, x0:size(2), x0:size(3) }, seed = cfg.seed, offset = counter + 1 }
      noise = rows(noise, first, B, W)
    end
    t = rows(t, first, B, W)
    local cross = batch.cross
    if cross and cfg.cfg_dropout > 0 then
      local u = sao.rand { { B * W }, seed = cfg.seed + 1, offset = counter, dtype = "f64" }:totable()
      local dropped
      for i = 1, B do
        if u[first + i] < cfg.cfg_dropout then
          if not dropped then cross = cross:clone(); dropped = true end
          cross[i] = 0
        end
      end
    end
    local loss, out, v, xt = self.tr:vloss(x0, noise, t, cross, batch.global, { dloss = 1 / cfg.accum })
    for _, x in ipairs { out, v, xt, noise } do x:free() end   -- on a GPU: back to the cache at once
    total = total + loss / cfg.accum
  end
  -- stop: a graceful stop was asked (SIGTERM, Ctrl-C: sao_stop_graceful) in this process or, in a
  -- data-parallel run, in any rank's: every rank learns it at the same step's exchange
  local lr, norm, info
  local stop = not self.comm and C.sao_stop_requested() ~= 0
  if self.comm and self.opt.shard then
    -- ZeRO-1: the mean gradient of this rank's shard; then one small exchange: the mean loss, rank
    -- 0's learning rate (its schedule, hot-swapped or not, is the run's: the others contribute 0 to
    -- the mean of world x lr) and the gradient's squared norm (each rank's shard's, summed)
    self:exchange("reduce_scatter_mean", self:list_of(self.grads))
    local extra = sao.tensor { total, self.rank == 0 and self.opt:lr() * W or 0, self.opt:grad_sumsq() * W,
                               C.sao_stop_requested() }
    self.comm:allreduce_mean { extra }
    total, lr, norm, stop = extra[1], extra[2], math.sqrt(extra[3]), extra[4] > 0
    extra:free()
    info = self.opt:step(self.ema, lr, norm)
    if not info.skipped then
      -- every rank's updated shard of the weights, to every rank; the EMA copy's shards are
      -- gathered only when someone reads it (sync_ema: a checkpoint, a demo)
      self:exchange("allgather", self:list_of(self.params))
      if self.ema then self.ema_stale = true end
      if self.device and not cfg.lora then C.sao_dit_weights_written(cfg.dit.h) end
    end
  else
    if self.comm then
      -- one exchange: the mean gradient, the mean loss, and rank 0's learning rate
      local extra = sao.tensor { total, self.rank == 0 and self.opt:lr() * W or 0, C.sao_stop_requested() }
      self:exchange("allreduce_mean", self:list_of(self.grads))
      self.comm:allreduce_mean { extra }
      total, lr, stop = extra[1], extra[2], extra[3] > 0
      extra:free()
    end
    -- AdamW and the EMA of the new weights in one fused pass (a skipped step updates neither)
    info = self.opt:step(self.ema, lr)
  end
  if not info.skipped and total ~= total then info.skipped = true end
  if info.skipped then
    io.stderr:write(string.format("[train] step %d: non-finite loss/gradient (loss %s, |g| %s): step skipped\n",
      self.step_n, tostring(total), tostring(info.grad_norm)))
  end
  self.step_n = self.step_n + 1
  local dt = now() - t0
  local samples = B * cfg.accum * W
  -- MFU against cfg.peak_flops: forward+backward ~ 6 * params * tokens
  local flops = 6 * self.nparams * samples * (cfg.frames + 1)
  local rec = { step = self.step_n, loss = total, grad_norm = info.grad_norm, lr = info.lr, ms = dt * 1000,
    samples_per_s = samples / dt, skipped = info.skipped or nil,
    mfu = cfg.peak_flops and flops / dt / cfg.peak_flops or nil, stop = stop or nil }
  if self.step_n % cfg.log_every == 0 then
    self:log(rec)
    if not cfg.quiet and self.rank == 0 then
      io.stderr:write(string.format("step %6d | loss %.6f | |g| %.3e | lr %.3e | %7.1f ms | %.2f samples/s%s\n",
        rec.step, rec.loss, rec.grad_norm, rec.lr, rec.ms, rec.samples_per_s,
        rec.mfu and string.format(" | MFU %.1f%%", rec.mfu * 100) or ""))
    end
  end
  local d = self.plan.device
  if d and not d.measured_peak then
    -- the first step has allocated everything the run holds: the plan against the allocator
    d.measured_peak = sao.cuda.memory().peak
    local off = (d.measured_peak - d.predicted_peak) / d.predicted_peak
    self:log { step = self.step_n, event = "device memory", predicted_peak = d.predicted_peak,
      measured_peak = d.measured_peak }
    if not cfg.quiet then
      io.stderr:write(string.format("[train] device memory after the first step: predicted peak %.1f MB, measured %.1f MB (%+.1f %%)\n",
        d.predicted_peak / 2 ^ 20, d.measured_peak / 2 ^ 20, off * 100))
    end
  end
  if cfg.checkpoint_every and cfg.run_dir and self.step_n % cfg.checkpoint_every == 0 then self:save() end
  if cfg.demo and cfg.demo.every and cfg.demo.fn and self.step_n % cfg.demo.every == 0 and self.rank == 0 then
    cfg.demo.fn(self, self.step_n)
  end
  return rec
end

--- Saves model, EMA, optimiser state, counters and the data cursor to dir (default
--- run_dir/checkpoints/step-N). The folder is written as dir.partial and renamed when complete,
--- so a killed run leaves either the whole checkpoint or none (plus a .partial folder, removed
--- by the next save).
function Trainer:save(dir)
  -- data parallel: every rank calls it (ZeRO-1 gathers the moments' and the EMA's shards); rank 0 writes
  self:sync_ema()
  local m_full, v_full = self:full_moments()
  if self.rank ~= 0 then return nil end
  local final = dir or ((self.cfg.run_dir or ".") .. "/checkpoints/step-" .. self.step_n)
  dir = final .. ".partial"
  fs.rm_rf(dir)
  mkdir_p(dir)
  sao.save_safetensors(dir .. "/model.safetensors", self.params, { format = "sao", step = self.step_n })
  if self.ema then sao.save_safetensors(dir .. "/ema.safetensors", self.ema.shadow) end
  local ms, vs = {}, {}
  for k, t in pairs(m_full) do ms["m/" .. k] = t end
  for k, t in pairs(v_full) do vs["v/" .. k] = t end
  for k, t in pairs(vs) do ms[k] = t end
  sao.save_safetensors(dir .. "/optim.safetensors", ms)
  local state = {
    lora = self.cfg.lora and self.cfg.dit.lora or nil,
    step = self.step_n, optimizer_step = self.opt.state.step, ema_step = self.ema and self.ema.step or 0,
    seed = self.cfg.seed, data = self.cfg.data.state and self.cfg.data:state() or nil,
    precision = self.device and sao.cuda.precision() or nil,   -- a GPU run's products: resume keeps them
    optimizer = { lr = self.cfg.optimizer.lr, betas = self.cfg.optimizer.betas, eps = self.cfg.optimizer.eps,
      weight_decay = self.cfg.optimizer.weight_decay, clip = self.cfg.optimizer.clip,
      stochastic_rounding = self.cfg.optimizer.stochastic_rounding, sr_seed = self.cfg.optimizer.sr_seed },
  }
  write_atomic(dir .. "/state.json", cjson.encode(state))
  fs.rm_rf(final)
  local ok, err = os.rename(dir, final)
  if not ok then error("train: cannot move the checkpoint into " .. final .. ": " .. tostring(err), 2) end
  local parent = final:match("^(.*)/[^/]+$") or "."
  os.execute("rm -rf " .. fs.quote(parent) .. "/step-*.partial 2>/dev/null")   -- left by killed runs
  self:prune_checkpoints()
  return final
end

--- Keeps the newest cfg.keep_checkpoints (default 3) step-N folders of run_dir/checkpoints.
function Trainer:prune_checkpoints()
  local keep, root = self.cfg.keep_checkpoints or 3, (self.cfg.run_dir or ".") .. "/checkpoints"
  local p = io.popen("ls -1 '" .. root:gsub("'", "'\\''") .. "' 2>/dev/null")
  local steps = {}
  for line in p:lines() do
    local n = tonumber(line:match("^step%-(%d+)$"))
    if n then steps[#steps + 1] = n end
  end
  p:close()
  table.sort(steps)
  for i = 1, #steps - keep do
    os.execute("rm -rf '" .. (root .. "/step-" .. steps[i]):gsub("'", "'\\''") .. "'")
  end
end

--- The newest checkpoint folder under run_dir/checkpoints, or nil.
function M.latest_checkpoint(run_dir)
  local p = io.popen("ls -1 '" .. (run_dir .. "/checkpoints"):gsub("'", "'\\''") .. "' 2>/dev/null")
  local best
  for line in p:lines() do
    local n = tonumber(line:match("^step%-(%d+)$"))
    local f = n and io.open(run_dir .. "/checkpoints/" .. line .. "/state.json", "rb")
    if f then
      f:close()
      if not best or n > best then best = n end
    end
  end
  p:close()
  return best and (run_dir .. "/checkpoints/step-" .. best) or nil
end

--- Restores a checkpoint into a new trainer: cfg as for new() (dit, data, ...); the saved seed,
--- optimiser settings, counters and data cursor win over cfg's; a GPU run's precision is kept
--- unless cfg.precision is given.
function M.resume(dir, cfg)
  local f = io.open(dir .. "/state.json", "rb")
  if not f then error("train.resume: " .. dir .. "/state.json: not found (is this a checkpoint folder?)", 2) end
  local state = cjson.decode(f:read("*a"))
  f:close()
  local model = sao.load_safetensors(dir .. "/model.safetensors")
  if state.lora then
    -- the base comes from cfg.dit as given; the checkpoint holds the adapters
    local lora = require "sao.lora"
    cfg.lora = state.lora
    if lora.rank(cfg.dit) == 0 then lora.add(cfg.dit, state.lora) end
    require("sao.models").bind(C.sao_dit_lora_params(cfg.dit.h), model, "")
  else
    cfg.dit:load(model, "")
  end
  cfg.seed = state.seed
  -- a GPU run resumes with the products it was trained with unless cfg says otherwise (bit-exact resume)
  if cfg.precision == nil then cfg.precision = state.precision end
  cfg.optimizer = cfg.optimizer or {}
  for k, v in pairs(state.optimizer) do cfg.optimizer[k] = v end
  if state.data and cfg.data.set_state then cfg.data:set_state(state.data) end
  local self = M.new(cfg)
  self.step_n = state.step
  self.opt.state.step = state.optimizer_step
  local o = sao.load_safetensors(dir .. "/optim.safetensors")
  self.opt:load_moments(o, o)   -- a sharded optimiser takes its part
  if self.ema then
    local e = sao.load_safetensors(dir .. "/ema.safetensors")
    for k in pairs(self.params) do self.ema.shadow[k]:copy_(e[k]) end
    self.ema.step = state.ema_step
  end
  return self
end

--- Writes the weights with upstream key names under `prefix` (default "model.model."), the EMA
--- copy when there is one (as stable-audio-tools exports), to path atomically.
--- opts.extra: more tensors to write beside the DiT (the VAE and conditioners of a whole checkpoint).
function Trainer:export(path, opts)
  opts = opts or {}
  local prefix = opts.prefix or "model.model."
  if self.ema and opts.ema ~= false and self.ema_stale then
    error("train: export: the EMA copy is sharded over the ranks: call trainer:sync_ema() on every rank first " ..
          "(save does)", 2)
  end
  local src = (self.ema and opts.ema ~= false) and self.ema.shadow or self.params
  local out = {}
  for k, t in pairs(src) do out[prefix .. k] = t end
  -- the buffers upstream keeps in the state_dict (zero LayerNorm betas, RoPE inv_freq)
  local p = self.cfg.dit:params()
  for i = 0, C.sao_params_count(p) - 1 do
    local name = ffi.string(C.sao_params_name(p, i))
    if not src[name] then
      local t = C.sao_params_tensor(p, i)
      if t ~= nil then
        out[prefix .. name] = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_view_of(sao.ctx, t)))
      elseif name:match("%.beta$") then
        local shp = C.sao_params_shape(p, i)
        out[prefix .. name] = sao.zeros(tonumber(shp[0]))
      end
    end
  end
  for k, t in pairs(opts.extra or {}) do
    if out[k] then error("train: export: extra tensor '" .. k .. "' collides with the DiT's", 2) end
    out[k] = t
  end
  sao.save_safetensors(path, out, { format = "pt" })
  return path
end

return M
