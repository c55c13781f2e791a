-- sao.dit_train — the DiT's training pass (runtime/dit_train.c) as a Lua handle: a recorded
-- forward, the backward into named gradient tensors, and the v-objective loss of SAO_SPEC §7.
--
--   local tr = sao.dit_train.new(dit, {batch=B, frames=T, context=L, recompute=false})
--   local loss, out = tr:vloss(x0, noise, t, cross, global)   -- forward + backward
--   for name, g in pairs(tr:grads()) do ... end
local ffi = require "ffi"
local sao = require "sao"
local models = require "sao.models"
local C = sao.C

local M = {}
local Train = {}
Train.__index = Train

function M.new(dit, opts)
  local h = sao.checkp(C.sao_dit_train_new(sao.ctx, dit.h, opts.batch, opts.frames, opts.context or 0,
    opts.recompute and 1 or 0), 2)
  local self = setmetatable({ h = ffi.gc(h, C.sao_dit_train_free), dit = dit, opts = opts }, Train)
  self.bytes = tonumber(C.sao_dit_train_bytes(h))
  return self
end

--- name -> gradient tensor (views of the gradient arena; valid while the trainer lives).
function Train:grads()
  if self._grads then return self._grads end
  local p = C.sao_dit_train_grads(self.h)
  local out = {}
  for i = 0, C.sao_params_count(p) - 1 do
    local t = C.sao_params_tensor(p, i)
    if t ~= nil then
      out[ffi.string(C.sao_params_name(p, i))] = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_view_of(sao.ctx, t)))
    end
  end
  self._grads = out
  return out
end

--- name -> a host copy of every gradient: outlives the trainer (the views of grads() do not).
function Train:host_grads()
  local out = {}
  for name, g in pairs(self:grads()) do out[name] = g:device() == "cpu" and g:clone() or g:to("cpu") end
  return out
end

function Train:zero_grad() sao.check(C.sao_dit_train_zero_grad(sao.ctx, self.h)) end

--- Global L2 norm of every gradient of the arena, in one pass on the trainer's device.
function Train:grad_norm()
  local out = ffi.new("double[1]")
  sao.check(C.sao_dit_train_grad_sumsq(sao.ctx, self.h, out))
  return math.sqrt(out[0])
end

--- Recorded forward: x [B, io, T], t [B], cross [B, L, Dc] or nil, global [B, Dg] -> out.
function Train:forward(x, t, cross, global)
  x, t, global = models.f32(x), models.f32(t), models.f32(global)
  if cross then cross = models.f32(cross) end
  self._keep = { x, t, cross, global }         -- the C side borrows these until the backward
  local out = sao.empty(x:shape())
  sao.check(C.sao_dit_train_forward(sao.ctx, self.h, x:data(), t:data(), cross and cross:data() or nil,
    global:data(), out:data()), 2)
  return out
end

--- Backward from dout; returns dx, dcross, dglobal when opts asks for them.
function Train:backward(dout, opts)
  opts = opts or {}
  local k = self._keep
  local dx = opts.dx and sao.zeros(k[1]:shape()) or nil
  local dc = (opts.dcross and k[3]) and sao.zeros(k[3]:shape()) or nil
  local dg = opts.dglobal and sao.zeros(k[4]:shape()) or nil
  sao.check(C.sao_dit_train_backward(sao.ctx, self.h, models.f32(dout):data(), dx and dx:data() or nil,
    dc and dc:data() or nil, dg and dg:data() or nil), 2)
  return dx, dc, dg
end

--- The v objective (SAO_SPEC §7.1–7.3): x_t = a x0 + s n, v = a n - s x0 with (a, s) = (cos, sin)(pi t/2);
--- loss = mean((DiT(x_t, t) - v)^2). Runs forward and backward (scaled by opts.dloss, default 1:
--- gradient accumulation passes 1/accum); returns loss, out, v, x_t and, when opts asks, dx, dcross, dglobal.
function Train:vloss(x0, noise, t, cross, global, opts)
  opts = opts or {}
  local B = x0:size(1)
  local tt = t:totable()
  local a, s = {}, {}
  for i = 1, B do a[i] = math.cos(tt[i] * math.pi / 2); s[i] = math.sin(tt[i] * math.pi / 2) end
  local at = sao.tensor(a):view(B, 1, 1)
  local st = sao.tensor(s):view(B, 1, 1)
  local xt = x0 * at + noise * st
  local v = noise * at - x0 * st
  local out = self:forward(xt, t, cross, global)
  local n = out:numel()
  local loss = ffi.new("double[1]")
  sao.check(C.sao_mse_forward(sao.ctx, out:data(), models.f32(v):data(), n, loss))
  local dout = sao.zeros(out:shape())
  sao.check(C.sao_mse_backward(sao.ctx, out:data(), v:data(), n, opts.dloss or 1.0, dout:data()))
  local dx, dc, dg = self:backward(dout, { dx = opts.dx, dcross = opts.dcross, dglobal = opts.dglobal })
  return loss[0], out, v, xt, dx, dc, dg
end

return M
