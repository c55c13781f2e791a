-- spec/support/attncmp.lua — what the bf16 attention specs (cuda_flash_spec.lua: the tensor-core
-- flash kernels; cuda_sdpa_spec.lua: cuDNN's fused SDPA) share: attention problems (odd sizes,
-- grouped heads, bias, masks, strided layouts) with bf16-rounded inputs, the CPU forward, the
-- device forward into guarded buffers, and the comparison of the two (guards and gaps untouched);
-- the backward pair (CPU and device, guarded accumulating gradients) and its error; the dit_tiny
-- fixture and the check that its CUDA graph replays the eager forward.
local ffi = require "ffi"
local sao = require "sao"

local C, ctx = sao.C, sao.ctx
local cmp = require "support.devcmp"
local check, fp, u8p, dev, host = cmp.check, cmp.fp, cmp.u8p, cmp.dev, cmp.host
local M = {}

local U = 2 ^ -8                 -- bf16's unit roundoff (8 significant bits)
local G, SENTINEL = 64, 12345.5  -- guard floats on each side of every device output

local function bf16(t) return t:to("bf16"):to("f32") end

-- Runs f with the GEMM precision `mode` and the attention setting `impl`, restoring both.
local function with_mode(mode, impl, f)
  local was_p, was_i = sao.cuda.precision(mode), sao.cuda.attention_impl()
  sao.cuda.attention_impl(impl)
  local ok, err = pcall(f)
  sao.cuda.precision(was_p)
  sao.cuda.attention_impl(was_i)
  if not ok then error(err, 0) end
end

-- s: B, H, Hkv, T, M, D, [scale], [bias], [mask(b, m) -> 0/1], [qmul], [layout "fused": q/k/v from
-- one [B, T, 3, H, D] buffer, out [B, T, H, D]], [opitch: out rows this far apart, gaps between
-- them], seed. Host inputs (q, k, v bf16-rounded), the CPU descriptor (out contiguous) and the
-- device one (out strides as asked).
local function inputs(s)
  local x = { nq = s.B * s.H * s.T * s.D, nk = s.B * s.Hkv * s.M * s.D, nlse = s.B * s.H * s.T }
  local d = { B = s.B, H = s.H, Hkv = s.Hkv, T = s.T, M = s.M, D = s.D, scale = s.scale or 0 }
  if s.layout == "fused" then
    local row = 3 * s.H * s.D
    local st = { s.T * row, s.D, row }
    d.q_stride, d.k_stride, d.v_stride = st, st, st
    x.qkv = bf16(sao.randn { s.B * s.T * row, seed = s.seed })
    x.vmax = x.qkv:abs():max()
  else
    x.q = bf16(sao.randn { x.nq, seed = s.seed } * (s.qmul or 1))
    x.k = bf16(sao.randn { x.nk, seed = s.seed + 1 })
    x.v = bf16(sao.randn { x.nk, seed = s.seed + 2 })
    x.vmax = x.v:abs():max()
  end
  if s.bias then x.bias = sao.randn { s.H * s.T * s.M, seed = s.seed + 3 } end
  if s.mask then
    x.mask = sao.zeros(s.B * s.M, "u8")
    local p = u8p(x.mask)
    for b = 0, s.B - 1 do for m = 0, s.M - 1 do p[b * s.M + m] = s.mask(b, m) end end
  end
  x.cpu_desc = ffi.new("sao_attn_desc", d)
  if s.layout == "fused" then
    d.o_stride = { s.T * s.H * s.D, s.D, s.H * s.D }
  elseif s.opitch then
    d.o_stride = { s.H * s.T * s.opitch, s.T * s.opitch, s.opitch }
  end
  x.dev_desc = ffi.new("sao_attn_desc", d)
  x.so = { d.o_stride and d.o_stride[1] or s.H * s.T * s.D, d.o_stride and d.o_stride[2] or s.T * s.D,
           d.o_stride and d.o_stride[3] or s.D }
  x.ospan = (s.B - 1) * x.so[1] + (s.H - 1) * x.so[2] + (s.T - 1) * x.so[3] + s.D
  return x
end

-- q, k, v pointers into device (or host) copies made by mk
local function qkv_ptrs(s, x, mk, keep)
  if s.layout == "fused" then
    keep.qkv = mk(x.qkv)
    local p, hd = fp(keep.qkv), s.H * s.D
    return p, p + hd, p + 2 * hd
  end
  keep.q, keep.k, keep.v = mk(x.q), mk(x.k), mk(x.v)
  return fp(keep.q), fp(keep.k), fp(keep.v)
end

local function cpu_forward(s, x)
  local keep = {}
  local q, k, v = qkv_ptrs(s, x, function(t) return t end, keep)
  local out, lse = sao.zeros(x.nq), sao.zeros(x.nlse)
  check(C.sao_attention_forward(ctx, x.cpu_desc, q, k, v, fp(x.bias), u8p(x.mask), fp(out), fp(lse)))
  return out, lse
end

-- The device forward into guarded buffers: returns the host copies of the whole out buffer
-- (G + ospan + G floats) and lse buffer (G + nlse + G).
local function dev_forward(s, x)
  local keep = {}
  local q, k, v = qkv_ptrs(s, x, dev, keep)
  local bias, mask = dev(x.bias), dev(x.mask)
  local out = dev(sao.full({ x.ospan + 2 * G }, SENTINEL))
  local lse = dev(sao.full({ x.nlse + 2 * G }, SENTINEL))
  check(C.sao_cuda_attention_forward(ctx, x.dev_desc, q, k, v, fp(bias), u8p(mask), fp(out) + G, fp(lse) + G))
  return host(out), host(lse)
end

-- Compares a device result with the CPU's: out within abs_out, lse within tol_lse of its scale
-- (-inf at the same places), and every float the kernel must not write (guards, gaps) untouched.
-- Returns the largest out error.
-- a float of a host buffer; NaN (LuaJIT reads a NaN with a payload as nil) as math.huge
local function at(p, i)
  local v = tonumber(p[i])
  if v == nil or v ~= v then return math.huge end
  return v
end

local function compare(s, x, want_out, want_lse, got_out, got_lse, abs_out, tol_lse)
  local function reader(t) local p = fp(t); return setmetatable({}, { __index = function(_, i) return at(p, i) end }) end
  local wo, go, wl, gl = reader(want_out), reader(got_out), reader(want_lse), reader(got_lse)
  local written = {}
  local emax = 0
  for b = 0, s.B - 1 do for h = 0, s.H - 1 do for t = 0, s.T - 1 do
    local base = G + b * x.so[1] + h * x.so[2] + t * x.so[3]
    local ref = ((b * s.H + h) * s.T + t) * s.D
    for d = 0, s.D - 1 do
      written[base + d] = true
      emax = math.max(emax, math.abs(go[base + d] - wo[ref + d]))
    end
  end end end
  for i = 0, x.ospan + 2 * G - 1 do
    if not written[i] and go[i] ~= SENTINEL then error(string.format("out: float %d (not an output) was written", i - G), 2) end
  end
  assert(emax <= abs_out, string.format("%s: out max abs error %.3g > %.3g", s.name, emax, abs_out))
  local lmax, lerr = 0, 0
  for i = 0, x.nlse - 1 do
    local a, b = wl[i], gl[G + i]
    if a == -math.huge or b == -math.huge then
      assert(a == b, string.format("%s: lse[%d] %g vs %g: -inf at different places", s.name, i, a, b))
    else
      lmax, lerr = math.max(lmax, math.abs(a)), math.max(lerr, math.abs(a - b))
    end
  end
  for i = 0, G - 1 do
    assert(gl[i] == SENTINEL and gl[G + x.nlse + i] == SENTINEL, "lse: a guard float was written")
  end
  assert(lerr <= tol_lse * lmax, string.format("%s: lse max abs error %.3g > %.3g", s.name, lerr, tol_lse * lmax))
  if os.getenv("SAO_SPEC_VERBOSE") then
    print(string.format("%-60s out %.3g (bound %.3g, max|v| %.3g)  lse %.3g", s.name, emax, abs_out, x.vmax, lerr))
  end
  return emax
end

local mask_37 = function(b, m) return (b == 1 or (m * 7 + 3) % 5 == 0) and 0 or 1 end
-- batch row 0: its first key tile (keys 0..63) all masked, then every third key
local mask_late = function(b, m) return (b == 0 and (m < 64 or m % 3 == 0)) and 0 or 1 end


-- the guarded device copy of a host gradient buffer: G sentinels, the values, G sentinels
function M.guarded(t)
  local n = t:numel()
  local h = sao.full({ n + 2 * G }, SENTINEL)
  ffi.copy(fp(h) + G, fp(t), 4 * n)
  return dev(h)
end

-- Both backwards from the CPU forward's out and lse. want: host gradients; got: host copies of
-- the guarded device buffers. `grads` names the d-buffers to pass (default dq, dk, dv).
function M.bwd_pair(s, x, mode, impl, grads, dout_)
  grads = grads or { dq = true, dk = true, dv = true }
  local out, lse = cpu_forward(s, x)
  local dout = dout_ or bf16(sao.randn { x.nq, seed = s.seed + 4 })
  local g0 = { dq = sao.randn { x.nq, seed = s.seed + 5 }, dk = sao.randn { x.nk, seed = s.seed + 6 },
               dv = sao.randn { x.nk, seed = s.seed + 7 } }
  if s.bias then g0.dbias = sao.randn { s.H * s.T * s.M, seed = s.seed + 8 } end
  local want = {}
  for n in pairs(grads) do want[n] = g0[n]:clone() end
  check(C.sao_attention_backward(ctx, x.cpu_desc, fp(x.q), fp(x.k), fp(x.v), fp(x.bias), u8p(x.mask), fp(out),
                                 fp(lse), fp(dout), fp(want.dq), fp(want.dk), fp(want.dv), fp(want.dbias)))
  local got = {}
  with_mode(mode, impl, function()
    local d = { q = dev(x.q), k = dev(x.k), v = dev(x.v), bias = dev(x.bias), mask = dev(x.mask), out = dev(out),
                lse = dev(lse), dout = dev(dout) }
    local gd = {}
    for n in pairs(grads) do gd[n] = M.guarded(g0[n]) end
    local function at_(t) return t and fp(t) + G or nil end
    check(C.sao_cuda_attention_backward(ctx, x.cpu_desc, fp(d.q), fp(d.k), fp(d.v), fp(d.bias), u8p(d.mask),
                                        fp(d.out), fp(d.lse), fp(d.dout), at_(gd.dq), at_(gd.dk), at_(gd.dv),
                                        at_(gd.dbias)))
    for n, t in pairs(gd) do got[n] = host(t) end
  end)
  return want, got
end

-- max |got - want| over the scale max |want|, after checking the guards; asserts <= tol
function M.grad_err(label, want, got, tol)
  local n, w, g = want:numel(), fp(want), fp(got)
  for i = 0, G - 1 do
    assert(at(g, i) == SENTINEL and at(g, G + n + i) == SENTINEL, label .. ": a guard float was written")
  end
  local amax, emax = 0, 0
  for i = 0, n - 1 do
    amax = math.max(amax, math.abs(w[i]))
    emax = math.max(emax, math.abs(at(g, G + i) - w[i]))
  end
  local rel = amax > 0 and emax / amax or emax
  if os.getenv("SAO_SPEC_VERBOSE") then print(string.format("%-70s %.3g of the scale %.3g", label, rel, amax)) end
  assert(rel <= tol, string.format("%s: max abs error %.3g = %.3g of the scale > %.3g", label, emax, rel, tol))
  return rel
end

-- Three forwards (fwd()) with the model's CUDA graphs on: one capture, then one replay, each equal
-- to the eager result bit for bit. Leaves the graphs on.
function M.graph_replays_eager(d, eager, fwd)
  d:graphs(true)
  local outs = {}
  for i = 1, 3 do outs[i] = fwd() end
  local st = d:graph_stats()
  assert(st.why == nil, "no graph: " .. tostring(st.why))
  assert(st.captures == 1 and st.replays == 1, string.format("captures %s, replays %s (want 1, 1)", st.captures, st.replays))
  for i = 1, 3 do assert(eager:maxdiff(outs[i]) == 0, "forward " .. i .. " differs from the eager one") end
end

-- The dit_tiny fixture (2 heads of D=64 in self- and cross-attention): a constructor of the model
-- with its weights loaded, and the fixture's inputs x, t, cross_attn_cond, global_cond.
function M.dit_tiny()
  local tiny = require "support.dit_tiny"
  return tiny.new_dit, tiny.x, tiny.t, tiny.cross, tiny.global
end

for k, v in pairs { U = U, G = G, SENTINEL = SENTINEL, bf16 = bf16, with_mode = with_mode, inputs = inputs, qkv_ptrs = qkv_ptrs,
         cpu_forward = cpu_forward, dev_forward = dev_forward, at = at, compare = compare, mask_37 = mask_37,
         mask_late = mask_late } do M[k] = v end
return M
