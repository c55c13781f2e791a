-- sao.dit — the SAO Diffusion Transformer (runtime/dit.c) as a Lua handle.
--
--   local dit = sao.dit.new{io_channels=64, embed_dim=1536, depth=24, num_heads=24,
--                           cond_token_dim=768, global_cond_dim=1536}
--   dit:load(tensors, "model.model.")          -- upstream key names; strict
--   local v = dit:forward(x, t, cross, global, {cfg_scale=7})
--   dit:to("cuda")                              -- weights on the GPU: forward runs the CUDA kernels
--   local v = dit:forward(x, t, cross, global)  -- inputs and outputs are host tensors on either device
--   dit:to("cpu")
-- On a GPU the forward and the training pass run there (dit:load uploads the new weights; LoRA
-- adapters follow the model). dit:device_tensor(name) is a parameter's device copy (what a GPU
-- optimiser updates); dit:sync_host() copies the device weights back to the host tensors.
-- dit:graphs(true) replays a device model's repeated forwards as one CUDA graph (docs/gpu.md).
local ffi = require "ffi"
local sao = require "sao"
local models = require "sao.models"
local C = sao.C

local M = {}
local Dit = {}
Dit.__index = Dit

M.SAO_1_0 = { io_channels = 64, embed_dim = 1536, depth = 24, num_heads = 24, cond_token_dim = 768,
              global_cond_dim = 1536, ff_mult = 4, timestep_features_dim = 256 }

function M.new(cfg)
  local c = ffi.new("sao_dit_config")
  for _, k in ipairs { "io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim" } do
    if type(cfg[k]) ~= "number" then error("dit config: missing number '" .. k .. "'", 2) end
    c[k] = cfg[k]
  end
  c.ff_mult = cfg.ff_mult or 4
  c.timestep_features_dim = cfg.timestep_features_dim or 256
  local h = sao.checkp(C.sao_dit_new(sao.ctx, c), 2)
  return setmetatable({ h = ffi.gc(h, C.sao_dit_free), config = cfg }, Dit)
end

function Dit:params() return C.sao_dit_params(self.h) end
--- Binds a checkpoint's tensors; on a device model the weights are uploaded again at once.
function Dit:load(tensors, prefix, opts)
  local n = models.bind(self:params(), tensors, prefix, opts)
  local dev = C.sao_dit_device(self.h)
  if dev >= 0 then sao.check(C.sao_dit_to_device(sao.ctx, self.h, dev), 2) end
  return n
end
function Dit:parameter_count() return tonumber(C.sao_params_numel(self:params())) end

--- "cpu", or "cuda" and the CUDA device number, where the weights are.
function Dit:device()
  local d = C.sao_dit_device(self.h)
  if d < 0 then return "cpu" end
  return "cuda", d
end

--- dit:to("cuda") / dit:to("cuda:N") copies the weights to a GPU (one device block; the host copies
--- stay) and runs the forward there; dit:to("cpu") goes back and frees the device memory. Returns
--- self. Again on the model's own device it uploads every weight anew (after in-place edits of
--- the host tensors). Without CUDA (a CPU-only build, or no device visible) the error says so.
function Dit:to(what)
  if what == "cpu" then
    sao.check(C.sao_dit_to_host(sao.ctx, self.h), 2)
    return self
  end
  local dev = type(what) == "string" and what:match("^cuda:?(%d*)$")
  if not dev then error("dit:to: '" .. tostring(what) .. "': expected \"cpu\", \"cuda\" or \"cuda:N\"", 2) end
  sao.check(C.sao_dit_to_device(sao.ctx, self.h, tonumber(dev) or 0), 2)
  return self
end

--- The device copy of parameter `name` (a device model): an f32 device tensor viewing the weight
--- block, valid while the model stays on that device. Writing it changes the weights the forward
--- uses; dit:to("cpu") (and dit:sync_host()) copy such weights back into the host tensors.
function Dit:device_tensor(name)
  return sao.tensor_from_ptr(sao.checkp(C.sao_dit_device_tensor(sao.ctx, self.h, name), 2))
end

--- bf16 products while training on a device: on, the weights are rounded to bf16 once into a copy
--- that the optimiser keeps current as it updates them (sao.optim's fused step on the GPU) instead
--- of being rounded at every GEMM; any other write through device_tensor views is then not seen by
--- the bf16 products until dit:to("cuda") again. sao.train turns it on for a bf16 run; off by default.
--- dit:keep_bf16() only asks. Returns the previous setting.
function Dit:keep_bf16(on)
  if self:device() == "cpu" then return false end
  local was = C.sao_dit_keep_bf16(sao.ctx, self.h, on == nil and -1 or (on and 1 or 0))
  return was == 1
end

--- CUDA graphs for a device model's forward: on, the second forward with the same shapes and
--- settings is captured and later ones replay it as one launch (until anything is freed on the
--- device; then it is captured anew). Not with hidden states or LoRA, and nothing on the CPU. Off
--- by default. dit:graphs() only asks. Returns the previous setting.
function Dit:graphs(on)
  local was = C.sao_dit_graphs(self.h, on == nil and -1 or (on and 1 or 0))
  return was ~= 0
end

--- {captures = n, replays = n, why = "..." or nil}: why is the reason capture was given up on
--- this model (then its forwards stay eager until dit:graphs(true) is asked again).
function Dit:graph_stats()
  local c, r = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  local why = ffi.new("const char *[1]")
  C.sao_dit_graph_stats(self.h, c, r, why)
  local w = ffi.string(why[0])
  return { captures = tonumber(c[0]), replays = tonumber(r[0]), why = w ~= "" and w or nil }
end

--- Copies the device weights back into the host tensors (nothing on a host model).
function Dit:sync_host()
  sao.check(C.sao_dit_sync_host(sao.ctx, self.h), 2)
  return self
end

-- The forward of a device model on device tensors (x on the GPU): every input there too, the
-- output written into opts.out (or a new device tensor); queued, nothing waits (sao_dit_forward's
-- SAO_DIT_DEVICE_IO).
local function forward_device(self, x, t, cross, global, opts)
  local kind, n = self:device()
  local where = "cuda:" .. tostring(n)
  if kind ~= "cuda" then
    error("dit:forward: x is on the GPU but the model is on the CPU (dit:to(\"cuda\") first)", 3)
  end
  if opts.hidden then error("dit:forward: hidden states are not returned for device inputs", 3) end
  local xs = x:shape()
  local B, T = xs[1], xs[3]
  if type(t) == "number" then t = sao.full({ B }, t):to(where) end
  local function dev(name, v, shape)
    if v == nil then return nil end
    if not sao.is_tensor(v) or v:device() ~= "cuda" or v:dtype() ~= "f32" or not v:is_contiguous() then
      error("dit:forward: with x on the GPU, " .. name .. " must be a contiguous f32 tensor there too", 4)
    end
    if shape then
      local s = v:shape()
      for i = 1, #shape do
        if s[i] ~= shape[i] or #s ~= #shape then
          error(string.format("dit:forward: %s is [%s], expected [%s]", name, table.concat(s, ", "),
            table.concat(shape, ", ")), 4)
        end
      end
    end
    return v
  end
  dev("x", x, { B, self.config.io_channels, T })
  dev("t", t, { B })
  dev("global", global, { B, self.config.global_cond_dim })
  local L = 0
  if cross then
    L = cross:size(2)
    dev("cross", cross, { B, L, self.config.cond_token_dim })
  end
  if opts.uncond then
    if not cross then error("dit:forward: uncond given without a cross context", 3) end
    dev("uncond", opts.uncond, cross:shape())
  end
  local out = opts.out and dev("out", opts.out, xs) or sao.empty_on(where, xs)
  sao.check(C.sao_dit_forward(sao.ctx, self.h, x:data(), t:data(), cross and cross:data() or nil,
    opts.uncond and opts.uncond:data() or nil, global:data(), B, T, L, opts.cfg_scale or 1, opts.scale_phi or 0,
    out:data(), nil, C.SAO_DIT_DEVICE_IO), 3)
  return out
end

--- x [B, io, T], t [B] (or a number), cross [B, L, Dc] or nil, global [B, Dg].
--- opts: cfg_scale (1), scale_phi (0), hidden (true: also return [depth, B, 1+T, E]),
--- uncond ([B, L, Dc]: the CFG half's context, e.g. a negative prompt's; default none, all zero,
--- which skips that half's cross-attention). Host tensors in and out, wherever the weights are;
--- or, for a model on a GPU, device tensors in (every one: x, t, cross, global, uncond) and out
--- (opts.out, a device tensor shaped as x, is written instead of a new one): then the call only
--- queues the work and returns (no hidden states).
function Dit:forward(x, t, cross, global, opts)
  opts = opts or {}
  if x:device() ~= "cpu" then return forward_device(self, x, t, cross, global, opts) end
  local xs = x:shape()
  local B, T = xs[1], xs[3]
  if type(t) == "number" then t = sao.full({ B }, t) end
  x, t, global = models.f32(x), models.f32(t), models.f32(global)
  local L, cp, uncond, up = 0, nil, nil, nil
  if cross then
    cross = models.f32(cross)
    L = cross:size(2)
    cp = cross:data()
  end
  if opts.uncond then
    if not cross then error("dit:forward: uncond given without a cross context", 2) end
    local us, cs = opts.uncond:shape(), cross:shape()
    if #us ~= 3 or us[1] ~= cs[1] or us[2] ~= cs[2] or us[3] ~= cs[3] then
      error(string.format("dit:forward: uncond is [%s], the cross context [%s]", table.concat(us, ", "),
        table.concat(cs, ", ")), 2)
    end
    uncond = models.f32(opts.uncond)   -- a local keeps a converted copy alive through the call
    up = uncond:data()
  end
  local out = sao.empty(xs)
  local hidden
  if opts.hidden then
    hidden = sao.empty(self.config.depth, B, T + 1, self.config.embed_dim)
  end
  sao.check(C.sao_dit_forward(sao.ctx, self.h, x:data(), t:data(), cp, up, global:data(), B, T, L,
    opts.cfg_scale or 1, opts.scale_phi or 0, out:data(), hidden and hidden:data() or nil, 0), 2)
  return out, hidden
end

return M
