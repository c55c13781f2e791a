-- sao.cuda — the GPU from Lua: is one usable, which devices there are, and how much device memory
-- sao's caching allocator holds (kernels/cuda/alloc.cu).
--
--   sao.cuda.available()   -> true when sao was built with CUDA and a device is visible
--   sao.cuda.unavailable() -> nil when the CUDA backend (libsao_cuda.so) loads, else why not
--   sao.cuda.devices()     -> { {index=0, name="NVIDIA H200", memory_bytes=..., capability="9.0"}, ... }
--                             index is the CUDA device number, as in t:to("cuda:1")
--   sao.cuda.memory()      -> { allocated=, cached=, peak=, cudamalloc_calls= } (bytes; counts since start)
--   sao.cuda.empty_cache() -> bytes handed back to the driver (cached blocks only; live tensors stay)
--   sao.cuda.mem_info([n]) -> { free=, total= } bytes of device n (0) as the driver reports them;
--                             `usable` adds the blocks sao's cache holds (free for sao's next calls)
--   sao.cuda.precision([mode]) -> how the GPU's linear layers multiply, process-wide: "fp32" (the
--                             default: CPU parity), "tf32" or "bf16" (inputs rounded to bf16, fp32
--                             accumulation; weights and gradients stay fp32); returns the mode before
--
-- The backend is loaded on the first of these calls (or the first tensor or model moved to a GPU),
-- never at start-up. In a CPU-only build, or with no GPU, every call still works: available() is false, devices()
-- is empty and memory() is all zeros.
local ffi = require "ffi"
local core = require "sao.ffi"
local C = core.C

local M = {}

function M.unavailable()
  local why = C.sao_cuda_unavailable()
  return why ~= nil and ffi.string(why) or nil
end

--- Number of usable CUDA devices (0 in a CPU-only build, without a driver or without a GPU).
function M.count()
  if C.sao_has_cuda() ~= 1 then return 0 end
  return tonumber(C.sao_cuda_device_count())
end

function M.available() return M.count() > 0 end

function M.devices()
  local list = {}
  local n = M.count()
  if n == 0 then return list end
  local name, mem = ffi.new("char[256]"), ffi.new("int64_t[1]")
  local major, minor = ffi.new("int[1]"), ffi.new("int[1]")
  for i = 0, n - 1 do
    core.check(C.sao_cuda_device_props(core.ctx, i, name, 256, mem, major, minor), 2)
    list[#list + 1] = {
      index = i, name = ffi.string(name), memory_bytes = tonumber(mem[0]),
      capability = string.format("%d.%d", major[0], minor[0]),
    }
  end
  return list
end

function M.memory()
  local v = ffi.new("int64_t[4]")
  C.sao_cuda_memory_stats(v, v + 1, v + 2, v + 3)
  return { allocated = tonumber(v[0]), cached = tonumber(v[1]), peak = tonumber(v[2]),
           cudamalloc_calls = tonumber(v[3]) }
end

function M.empty_cache() return tonumber(C.sao_cuda_empty_cache()) end

--- Starts memory().peak afresh from what is allocated now.
function M.reset_peak() C.sao_cuda_reset_peak() end

function M.mem_info(dev)
  local f, t = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  core.check(C.sao_cuda_mem_info(core.ctx, dev or 0, f, t), 2)
  local free = tonumber(f[0])
  return { free = free, total = tonumber(t[0]), usable = free + M.memory().cached }
end

local MODES = { fp32 = 0, tf32 = 1, bf16 = 2 }
local NAMES = { [0] = "fp32", [1] = "tf32", [2] = "bf16" }

function M.precision(mode)
  local code = -1
  if mode ~= nil then
    code = MODES[mode]
    if not code then error("sao.cuda.precision: '" .. tostring(mode) .. "': expected \"fp32\", \"tf32\" or \"bf16\"", 2) end
  end
  return NAMES[tonumber(C.sao_cuda_gemm_precision(code))]
end

return M
