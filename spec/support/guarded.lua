-- spec/support/guarded.lua — device buffers with guard floats on each side, for the CUDA specs that
-- call kernels on raw pointers: a kernel writing before or past its output shows as a changed guard.
--
--   local guarded = require("support.guarded").new()
--   local d, p = guarded.put(t)        -- device copy of host tensor t between guards; p: float* payload
--   local h = guarded.back(d, n)       -- its n payload floats as a host tensor; asserts the guards
--   guarded.fill(d, t)                 -- writes host tensor t over d's payload (guards rewritten)
--   guarded.release()                  -- after each test: the device tensors may be collected
local ffi = require "ffi"
local sao = require "sao"
local C = sao.C

local M = {}
M.GUARD, M.SENTINEL = 64, -12345.5

function M.new()
  local G, S = M.GUARD, M.SENTINEL
  local alive = {}   -- the device tensors of the running test (raw pointers to them are in use)
  local g = {}

  local function framed(t)
    local n = t:numel()
    local h = sao.full({ n + 2 * G }, S)
    ffi.copy(h:data() + G, t:contiguous():data(), 4 * n)
    return h
  end

  function g.put(t)
    local d = sao.tensor_from_ptr(C.sao_tensor_to_cuda(sao.ctx, framed(t):raw(), 0))
    alive[#alive + 1] = d
    return d, ffi.cast("float*", C.sao_tensor_data(d:raw())) + G
  end

  function g.fill(d, t) d:copy_(framed(t)) end

  function g.back(d, n)
    local h = sao.tensor_from_ptr(C.sao_tensor_to_cpu(sao.ctx, d:raw()))
    local p = h:data()
    for i = 0, G - 1 do
      assert(p[i] == S, "write before the buffer start (guard float " .. (G - i) .. ")")
      assert(p[G + n + i] == S, "write past the buffer end (guard float " .. (i + 1) .. ")")
    end
    local out = sao.empty(n)
    ffi.copy(out:data(), p + G, 4 * n)
    return out
  end

  function g.release() alive = {} end
  return g
end

return M
