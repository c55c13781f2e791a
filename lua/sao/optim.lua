-- sao.optim — AdamW (decoupled weight decay, as torch.optim.AdamW), global-norm clipping, the
-- non-finite guard and the EMA of the weights (ema_pytorch's decay schedule), over named tensors.
--
-- Torch7 style: the optimiser re-reads its config table at every step, so changing cfg.lr,
-- cfg.weight_decay, ... (or cfg.schedule, a function(step, cfg)) between steps takes effect at
-- once. State (m, v, step) is a table of tensors that checkpoints save and restore.
--
-- Tensors on a GPU (a model trained there: dit:device_tensor, the trainer's device gradients) are
-- updated there by the CUDA twins of the same kernels; the moments and the EMA copy then live on
-- that device too.
local ffi = require "ffi"
local sao = require "sao"
local C = sao.C

local M = {}

-- The kernel for where t lives: the CPU one, or its sao_cuda_ twin.
local function kernel(t, name)
  return t:device() == "cpu" and C["sao_" .. name] or C["sao_cuda_" .. name]
end
M.kernel = kernel

-- Zeros shaped like p, where p lives (`device` names the GPU: "cuda" or "cuda:N").
local function zeros_like(p, device)
  local z = sao.zeros(p:shape())
  if p:device() == "cpu" then return z end
  return z:to(device or "cuda")
end

--- Global L2 norm of the gradients (a number; inf/NaN when any gradient is).
function M.grad_norm(grads)
  local s, out = 0, ffi.new("double[1]")
  for _, g in pairs(grads) do
    sao.check(kernel(g, "sumsq")(sao.ctx, g:data(), g:numel(), out))
    s = s + out[0]
  end
  return math.sqrt(s)
end

--- A new tensor (where t lives) holding the elements [a, b) of t's flat view: a copy, so that t's
--- memory can go.
function M.slice_copy(t, a, b, device)
  local z = sao.zeros(b - a)
  if t:device() ~= "cpu" then z = z:to(device or "cuda") end
  z:copy_(t:view(t:numel()):narrow(1, a + 1, b - a))
  return z
end

local AdamW = {}
AdamW.__index = AdamW

--- params, grads: name -> f32 contiguous tensor (same names). cfg: {lr, betas={b1,b2}, eps,
--- weight_decay, clip (max global norm or nil), schedule (function or nil)}. device: the GPU the
--- params live on when they are device tensors ("cuda", the default, or "cuda:N").
function M.adamw(params, grads, cfg, device)
  local self = setmetatable({ params = params, grads = grads, cfg = cfg, device = device,
    state = { step = 0, m = {}, v = {} } }, AdamW)
  self.names = {}
  for k in pairs(params) do
    if not grads[k] then error("adamw: no gradient for parameter '" .. k .. "'", 2) end
    self.names[#self.names + 1] = k
  end
  table.sort(self.names)
  self.offsets = {}   -- each tensor's place in the flat vector of all parameters, in name order
  local off = 0
  for _, k in ipairs(self.names) do
    self.offsets[k] = off
    off = off + params[k]:numel()
  end
  for _, k in ipairs(self.names) do
    self.state.m[k] = zeros_like(params[k], device)
    self.state.v[k] = zeros_like(params[k], device)
  end
  return self
end

--- ZeRO-1: from now on this optimiser keeps moments for, and updates, only the elements [lo, hi)
--- (0-based, half-open) of the flat vector of all parameters in name order (a data-parallel rank's
--- shard: sao.comm's shard of the same vector). The moments it holds are cut down to that range
--- (a tensor outside it keeps none). The update of each element is the same as without a shard.
function AdamW:set_shard(lo, hi)
  if self.shard then error("adamw: already sharded", 2) end
  local st = self.state
  self.shard = { lo = lo, hi = hi, slices = {} }
  for _, k in ipairs(self.names) do
    local p = self.params[k]
    local n, off = p:numel(), self.offsets[k]
    local a, b = math.max(lo - off, 0), math.min(hi - off, n)
    local full_m, full_v = st.m[k], st.v[k]
    if a < b then
      self.shard.slices[k] = { a = a, b = b, off = off }
      st.m[k], st.v[k] = M.slice_copy(full_m, a, b, self.device), M.slice_copy(full_v, a, b, self.device)
    else
      st.m[k], st.v[k] = nil, nil
    end
    full_m:free(); full_v:free()
  end
end

--- The elements [a, b) of tensor k that this optimiser updates, and k's offset in the flat vector;
--- nil when it updates none of k. Without a shard: all of every tensor.
function AdamW:slice(k)
  if self.shard then
    local s = self.shard.slices[k]
    if s then return s.a, s.b, s.off end
    return nil
  end
  local off = self.offsets[k]
  if off then return 0, self.params[k]:numel(), off end
end

--- Sets the moments of every tensor from full-size ones (a checkpoint's): m, v name -> tensor.
function AdamW:load_moments(m, v)
  for _, k in ipairs(self.names) do
    local a, b = self:slice(k)
    if a then
      local n = self.params[k]:numel()
      local function part(t)   -- a whole tensor keeps its shape; a sharded part is 1-d
        if not self.shard then return t end
        return t:view(n):narrow(1, a + 1, b - a)
      end
      self.state.m[k]:copy_(part(m["m/" .. k] or m[k]))
      self.state.v[k]:copy_(part(v["v/" .. k] or v[k]))
    end
  end
end

--- Sum of squares of this optimiser's part of the gradients (its shard, or all of them).
function AdamW:grad_sumsq()
  local s, out = 0, ffi.new("double[1]")
  for _, k in ipairs(self.names) do
    local a, b = self:slice(k)
    if a then
      local g = self.grads[k]
      sao.check(kernel(g, "sumsq")(sao.ctx, g:data() + a, b - a, out))
      s = s + out[0]
    end
  end
  return s
end

--- The learning rate the next step will use (schedule applied).
function AdamW:lr()
  local cfg = self.cfg
  if cfg.schedule then return cfg.schedule(self.state.step, cfg) end
  return cfg.lr
end

-- The fused kernel's tensor lists: {list = sao_optim_tensor[n], n, p = a tensor there} for the
-- host's tensors and for the GPU's (one device per optimiser, as for the per-tensor kernels). A
-- tensor's place in the stochastic-rounding stream is the count of elements before it in name
-- order (so every weight has its own numbers).
function AdamW:lists(ema)
  local groups, order = {}, {}
  for _, k in ipairs(self.names) do
    local a, b, off = self:slice(k)
    if a then
      local p = self.params[k]
      local dev = p:device()
      local g = groups[dev]
      if not g then
        g = { p = p, items = {} }
        groups[dev] = g
        order[#order + 1] = g
      end
      g.items[#g.items + 1] = { k, a, b, off }
    end
  end
  local st = self.state
  for _, g in ipairs(order) do
    g.n = #g.items
    g.list = ffi.new("sao_optim_tensor[?]", g.n)
    for i, it in ipairs(g.items) do
      local k, a, b, off = it[1], it[2], it[3], it[4]
      local e = g.list[i - 1]
      e.param, e.grad = self.params[k]:data() + a, self.grads[k]:data() + a
      e.m, e.v = st.m[k]:data(), st.v[k]:data()
      e.ema = ema and (ema.shadow[k]:data() + a) or nil
      e.n, e.sr_offset = b - a, off + a
    end
  end
  return order
end

--- One step. Returns an info table {lr, grad_norm, skipped, clipped, ema}. A non-finite gradient
--- norm skips the step entirely (parameters, moments and the step count stay as they were).
--- self.norm_fn, when set, gives the global gradient norm instead of the per-tensor sum (a GPU
--- trainer's one pass over its gradient arena).
--- The update of every tensor on a device is one fused call (sao_adamw_multi or its CUDA twin:
--- the same bits as one sao_adamw_step per tensor). `ema` (an optim.ema over the same names):
--- its update of the new weights is fused in too (info.ema is then the decay it used; a skipped
--- step updates neither). cfg.stochastic_rounding: the bf16 copies of the weights that a GPU run
--- keeps (dit:keep_bf16) are rounded stochastically (Philox, seed cfg.sr_seed or 0) instead of to
--- nearest; the fp32 weights are unchanged either way. `lr`, when given, replaces the schedule's
--- for this step (a data-parallel run uses rank 0's on every rank); `norm`, when given, is the
--- global gradient norm (a sharded run's, summed over the ranks). A sharded optimiser
--- (set_shard) updates its shard of the weights, moments and EMA only.
function AdamW:step(ema, lr, norm)
  local cfg = self.cfg
  norm = norm or (self.norm_fn and self.norm_fn() or M.grad_norm(self.grads))
  local info = { grad_norm = norm, lr = lr or self:lr() }
  if norm ~= norm or norm == math.huge then
    info.skipped = true
    return info
  end
  local scale = 1
  if cfg.clip and cfg.clip > 0 and norm > cfg.clip then
    scale = cfg.clip / (norm + 1e-6)
    info.clipped = true
  end
  local b = cfg.betas or { 0.9, 0.999 }
  local st = self.state
  st.step = st.step + 1
  if ema then info.ema = ema:advance() end
  local h = ffi.new("sao_optim_hyper")
  h.lr, h.beta1, h.beta2, h.eps, h.weight_decay = info.lr, b[1], b[2], cfg.eps or 1e-8, cfg.weight_decay or 0
  h.step, h.grad_scale, h.ema_decay = st.step, scale, info.ema or -1
  h.stochastic, h.sr_seed = cfg.stochastic_rounding and 1 or 0, cfg.sr_seed or 0
  for _, g in ipairs(self:lists(ema)) do
    sao.check(kernel(g.p, "adamw_multi")(sao.ctx, g.list, g.n, h))
  end
  return info
end

local EMA = {}
EMA.__index = EMA

--- EMA of `params` (name -> tensor) with ema_pytorch's schedule: beta 0.9999, power 3/4,
--- update_after_step 1, inv_gamma 1 (SAO's defaults). device: as for adamw.
function M.ema(params, opts, device)
  opts = opts or {}
  local self = setmetatable({ params = params, beta = opts.beta or 0.9999, power = opts.power or 0.75,
    inv_gamma = opts.inv_gamma or 1, min_value = opts.min_value or 0, after = opts.update_after_step or 1,
    step = 0, shadow = {} }, EMA)
  for k, p in pairs(params) do
    if p:device() == "cpu" then
      self.shadow[k] = p:clone()
    else
      self.shadow[k] = zeros_like(p, device)
      self.shadow[k]:copy_(p)
    end
  end
  return self
end

--- The decay used at update number `step` (1-based, counting this update).
function EMA:decay(step)
  local epoch = math.max(step - self.after - 1, 0)
  if epoch <= 0 then return 0 end
  local d = 1 - (1 + epoch / self.inv_gamma) ^ (-self.power)
  return math.min(math.max(d, self.min_value), self.beta)
end

--- Counts one update and returns the decay it uses (0: a copy of the weights): for a caller that
--- applies it itself (AdamW:step(ema), fused with the optimiser).
function EMA:advance()
  self.step = self.step + 1
  if self.step <= self.after + 1 then return 0 end
  return self:decay(self.step)
end

--- One update on its own (AdamW:step(ema) fuses it instead). Returns the decay used.
function EMA:update()
  local d = self:advance()
  for k, p in pairs(self.params) do
    if d == 0 then   -- the first updates copy the online weights
      self.shadow[k]:copy_(p)
    else
      sao.check(kernel(p, "ema_update")(sao.ctx, self.shadow[k]:data(), p:data(), p:numel(), d))
    end
  end
  return d
end

return M
