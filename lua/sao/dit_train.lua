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

--- Recorded forward: x [B, io, T], t [B], cross [B, L, Dc] or nil, global [B, Dg] -> out. On a
--- trainer on a GPU, x may be a device tensor: then every input is one (contiguous f32) and out is
--- made there, and nothing waits for the GPU.
function Train:forward(x, t, cross, global)
  local dev = x:device() ~= "cpu"
  if dev then
    for _, v in ipairs { t, global, cross or x } do
      if v:device() == "cpu" or v:dtype() ~= "f32" or not v:is_contiguous() then
        error("dit_train:forward: with x on the GPU, every input must be a contiguous f32 tensor there", 2)
      end
    end
  else
    x, t, global = models.f32(x), models.f32(t), models.f32(global)
    if cross then cross = models.f32(cross) end
  end
  self._keep = { x, t, cross, global }         -- the C side borrows these until the backward
  local out = dev and sao.empty_on("cuda:" .. x:device_index(), x:shape()) or sao.empty(x:shape())
  sao.check(C.sao_dit_train_forward(sao.ctx, self.h, x:data(), t:data(), cross and cross:data() or nil,
    global:data(), out:data(), dev and C.SAO_DIT_DEVICE_IO or 0), 2)
  return out
end

--- Backward from dout; returns dx, dcross, dglobal when opts asks for them (host tensors; not with
--- a dout on the GPU).
function Train:backward(dout, opts)
  opts = opts or {}
  local k = self._keep
  local dev = dout:device() ~= "cpu"
  if dev and (opts.dx or opts.dcross or opts.dglobal) then
    error("dit_train:backward: input gradients are host tensors: give a host dout", 2)
  end
  local dx = opts.dx and sao.zeros(k[1]:shape()) or nil
  local dc = (opts.dcross and k[3]) and sao.zeros(k[3]:shape()) or nil
  local dg = opts.dglobal and sao.zeros(k[4]:shape()) or nil
  sao.check(C.sao_dit_train_backward(sao.ctx, self.h, (dev and dout or models.f32(dout)):data(), dx and dx:data() or nil,
    dc and dc:data() or nil, dg and dg:data() or nil, dev and C.SAO_DIT_DEVICE_IO or 0), 2)
  return dx, dc, dg
end

--- The v objective (SAO_SPEC §7.1–7.3): x_t = a x0 + s n, v = a n - s x0 with (a, s) = (cos, sin)(pi t/2);
--- loss = mean((DiT(x_t, t) - v)^2). Runs forward and backward (scaled by opts.dloss, default 1:
--- gradient accumulation passes 1/accum); returns loss, out, v, x_t and, when opts asks, dx, dcross, dglobal.
--- With the model on a GPU and opts.device ~= false, x_t, v, the loss and its gradient are made
--- there (x0, t, cross and global go up once, noise too unless it is already a device tensor) and only
--- the loss comes back; out, v and x_t are then device tensors. The same numbers either way: x_t and v
--- are sao_v_target's bits on both devices.
function Train:vloss(x0, noise, t, cross, global, opts)
  opts = opts or {}
  local B = x0:size(1)
  local tt = t:totable()
  local a, s = {}, {}
  for i = 1, B do a[i] = math.cos(tt[i] * math.pi / 2); s[i] = math.sin(tt[i] * math.pi / 2) end
  local kind, d = self.dit:device()
  if kind == "cuda" and opts.device ~= false and not (opts.dx or opts.dcross or opts.dglobal) then
    return self:vloss_device("cuda:" .. d, x0, noise, t, cross, global, sao.tensor(a), sao.tensor(s), opts)
  end
  local xt, v = sao.empty(x0:shape()), sao.empty(x0:shape())
  local x0c, nc, at, st = models.f32(x0):contiguous(), models.f32(noise):contiguous(), sao.tensor(a), sao.tensor(s)
  sao.check(C.sao_v_target(sao.ctx, B, x0:numel() / B, x0c:data(), nc:data(), at:data(), st:data(), xt:data(), v:data()))
  local out = self:forward(xt, t, cross, global)
  local n = out:numel()
  local loss = ffi.new("double[1]")
  sao.check(C.sao_mse_forward(sao.ctx, out:data(), models.f32(v):data(), n, loss))
  local dout = sao.zeros(out:shape())
  sao.check(C.sao_mse_backward(sao.ctx, out:data(), v:data(), n, opts.dloss or 1.0, dout:data()))
  local dx, dc, dg = self:backward(dout, { dx = opts.dx, dcross = opts.dcross, dglobal = opts.dglobal })
  return loss[0], out, v, xt, dx, dc, dg
end

function Train:vloss_device(dev, x0, noise, t, cross, global, a, s, opts)
  local B, n = x0:size(1), x0:numel()
  -- the copies made here are freed as soon as the work queued on them is (stream-ordered blocks):
  -- garbage device tensors would hold memory the run's memory plan does not count
  local made = {}
  local function up(x)
    if x:device() ~= "cpu" then return x end
    local d = models.f32(x):contiguous():to(dev)
    made[#made + 1] = d
    return d
  end
  local x0d, nd, ad, sd = up(x0), up(noise), up(a), up(s)
  local xt, v = sao.empty_on(dev, x0:shape()), sao.empty_on(dev, x0:shape())
  sao.check(C.sao_cuda_v_target(sao.ctx, B, n / B, x0d:data(), nd:data(), ad:data(), sd:data(), xt:data(), v:data()))
  local out = self:forward(xt, up(t), cross and up(cross), up(global))
  local loss = ffi.new("double[1]")
  sao.check(C.sao_cuda_mse_forward(sao.ctx, out:data(), v:data(), n, loss))   -- waits for the forward
  local dout = sao.empty_on(dev, x0:shape()):zero_()
  sao.check(C.sao_cuda_mse_backward(sao.ctx, out:data(), v:data(), n, opts.dloss or 1.0, dout:data()))
  self:backward(dout)
  dout:free()
  for _, d in ipairs(made) do d:free() end
  return loss[0], out, v, xt
end

return M
