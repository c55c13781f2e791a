-- spec/support/gpu.lua — what the CUDA specs share: whether a device is usable, a test that runs
-- only with one (reported as pending, never as passed, without), the error a machine without a
-- usable GPU gives, and a model of the same shapes with every weight scaled.
local ffi = require "ffi"
local sao = require "sao"

local M = {}

M.has_gpu = sao.C.sao_cuda_device_count() > 0
-- the parity specs compare fp32 products with the CPU's; a test wanting another mode sets it and restores it
if M.has_gpu then sao.cuda.precision("fp32") end

--- A test function that is busted's `it` with a device, and `pending` (skipped, visibly) without
--- one. busted's it/pending live in the spec file's environment, so the spec passes them in:
---   local gpu_it = gpu.it(it, pending)
function M.it(it_, pending_)
  return function(name, f)
    if M.has_gpu then it_(name, f) else pending_(name .. " (no CUDA device: skipped)") end
  end
end

--- Whether device 0 is the CPU emulation of the backend (spec/support/cuda_emu), whose switches
--- (EMU_SCHED, the fake cuDNN's EMU_*) some specs use.
function M.emulated()
  local d = M.has_gpu and sao.cuda.devices()[1]
  return d and d.name:match("emulator") ~= nil or false
end

pcall(ffi.cdef, "int setenv(const char *, const char *, int); int unsetenv(const char *);")
--- Runs f with the environment variables of `vars` (name -> value, or false: unset) set, then gives
--- them back the values they had (unset if they had none); returns f's result, raises its error again.
function M.with_env(vars, f)
  local was = {}
  for k, v in pairs(vars) do
    was[k] = os.getenv(k)
    if v == false then ffi.C.unsetenv(k) else ffi.C.setenv(k, v, 1) end
  end
  local ok, res = pcall(f)
  for k in pairs(vars) do
    if was[k] then ffi.C.setenv(k, was[k], 1) else ffi.C.unsetenv(k) end
  end
  if not ok then error(res, 0) end
  return res
end

--- The message (a Lua pattern) a machine without a usable GPU gives: by build, or a CUDA build
--- whose backend does not load (SAO_CUDA_LIB elsewhere, CUDA libraries missing).
function M.no_cuda_reason()
  local why = sao.cuda.unavailable()
  if why then return why:match("built without CUDA") or "the CUDA backend could not be loaded" end
  return "no CUDA device is visible"
end

--- Runs fn with the garbage collector stopped (after two full collections), so that no device
--- tensor of an earlier test is freed in the middle: a CUDA graph replays only while nothing is
--- freed on the device (sao_cuda_free_count), and the graph specs count captures and replays.
--- The collector restarts whatever fn does; fn's error is raised again.
function M.without_gc(fn)
  collectgarbage()
  collectgarbage()
  collectgarbage("stop")
  local ok, err = pcall(fn)
  collectgarbage("restart")
  if not ok then error(err, 0) end
end

--- params with every tensor scaled by s (a different model of the same shapes).
function M.scaled(params, s)
  local p = {}
  for k, v in pairs(params) do p[k] = v * s end
  return p
end

return M
