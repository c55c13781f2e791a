-- spec/support/devcmp.lua — what the CUDA kernel specs (cuda_attn_spec.lua, cuda_conv_spec.lua)
-- share to compare a CUDA twin's device output with its CPU kernel's: raw pointers of tensors,
-- copies to and from device 0, a sao error as a Lua error, the scale-relative closeness check and
-- bit equality.
--
-- close(label, want, got, tol) passes when every |got - want| <= tol * (max|want| + |want_i|),
-- i.e. tol is the error allowed relative to the tensor's scale; -inf must sit at the same places
-- (lse of fully masked rows). SAO_SPEC_VERBOSE=1 prints each comparison's figures.
local ffi = require "ffi"
local sao = require "sao"
local assert = require "luassert"
require "spec.support.near"

local C, ctx = sao.C, sao.ctx
local M = {}

function M.check(rc)
  if rc ~= 0 then error(ffi.string(C.sao_ctx_error(ctx)), 2) end
end

function M.fp(t) return t and ffi.cast("float*", C.sao_tensor_data(t:raw())) or nil end
function M.u8p(t) return t and ffi.cast("uint8_t*", C.sao_tensor_data(t:raw())) or nil end
function M.dev(t) return t and sao.tensor_from_ptr(C.sao_tensor_to_cuda(ctx, t:raw(), 0)) or nil end
function M.host(t) return sao.tensor_from_ptr(C.sao_tensor_to_cpu(ctx, t:raw())) end

-- Lua list of a host tensor's values with -inf replaced by a sentinel, and where the -infs are
local function flat_inf(t)
  local out, inf = {}, {}
  local p, n = M.fp(t), t:numel()
  for i = 0, n - 1 do
    local x = tonumber(p[i])
    -- a NaN with a payload can come back from LuaJIT's NaN-tagged loads as nil: canonical NaN
    if x == nil or x ~= x then x = 0 / 0 end
    if x == -math.huge then inf[#inf + 1] = i; x = -1e30 end
    out[i + 1] = x
  end
  return out, table.concat(inf, ",")
end

-- want: host tensor (CPU kernel); got: device tensor (CUDA twin)
function M.close(label, want, got, tol)
  local w, winf = flat_inf(want)
  local g, ginf = flat_inf(M.host(got))
  assert.are.equal(#w, #g, label .. ": sizes differ")
  assert.are.equal(winf, ginf, label .. ": -inf at different places")
  local amax, emax = 0, 0
  for i = 1, #w do
    if w[i] ~= -1e30 then amax = math.max(amax, math.abs(w[i])) end
    emax = math.max(emax, math.abs(w[i] - g[i]))
  end
  if os.getenv("SAO_SPEC_VERBOSE") then
    print(string.format("%-44s max_abs %.3g scale_rel %.3g", label, emax, amax > 0 and emax / amax or emax))
  end
  assert.tensor_near(w, g, { abs = tol * amax, rel = tol })
end

pcall(ffi.cdef, "int memcmp(const void *a, const void *b, size_t n);")
--- Two device tensors hold the same bits.
function M.same_bits(a, b)
  local x, y = M.host(a), M.host(b)
  return x:numel() == y:numel() and ffi.C.memcmp(M.fp(x), M.fp(y), 4 * x:numel()) == 0
end

return M
