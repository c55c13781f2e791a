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
--   sao.cuda.conv_backend([name]) -> the path the GPU convolutions take now, "cudnn" or "gemm"
--                             (im2col + cuBLASLt), and why cuDNN is not taken (nil when it is);
--                             name "cudnn" (an error saying why when cuDNN cannot be used), "gemm" or
--                             "auto" (cuDNN when it loads: the default) sets it, process-wide. Without
--                             a CUDA backend: nil and why (setting one is an error)
--   sao.cuda.attention_impl([name]) -> which attention kernels run, process-wide: "auto" (the
--                             default: the bf16 mode's forward on bf16 tensor cores, no scratch,
--                             for head dims a multiple of 16 up to 128), "cublas" (not that kernel:
--                             the cuBLAS path with its [B, H, T, M] scratch where it applies, else
--                             the fp32 flash kernel), "flash" (the fp32 flash kernels only) or
--                             "cudnn" ("auto", with the bf16 mode's forwards without bias or mask
--                             through cuDNN's fused SDPA where cuDNN makes a plan for the shape);
--                             name sets it; returns the setting. Without a CUDA backend: nil and why
--   sao.cuda.sdpa()        -> how many attention forwards and backwards cuDNN's fused SDPA has
--                             run, and the last shape it was refused for with the reason (nil
--                             when none was)
--   sao.cuda.cudnn()       -> cuDNN's version (91900 for 9.19.0) once it loads ($SAO_CUDNN_LIB, else
--                             libcudnn.so.9; never linked), or nil and why it cannot be used
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

-- The process-wide settings below take one of an ordered list of names (nil: only asking). An
-- unknown name is an error naming the ones there are, at the caller of sao.cuda.<fn>; so is a
-- setting asked for without a CUDA backend (asking then returns nil and why).
local function check_name(fn, names, name)
  if name == nil then return end
  for _, n in ipairs(names) do if n == name then return end end
  local q = {}
  for i, n in ipairs(names) do q[i] = '"' .. n .. '"' end
  error("sao.cuda." .. fn .. ": '" .. tostring(name) .. "': expected " .. table.concat(q, ", ", 1, #q - 1) ..
    " or " .. q[#q], 3)
end

local function no_backend(fn, name)
  local no = M.unavailable()
  if no and name then error("sao.cuda." .. fn .. ": " .. no, 3) end
  return no
end

local PRECISIONS = { "fp32", "tf32", "bf16" }   -- sao_cuda_gemm_precision's codes 0, 1, 2

function M.precision(mode)
  check_name("precision", PRECISIONS, mode)
  local code = -1
  for i, n in ipairs(PRECISIONS) do if n == mode then code = i - 1 end end
  return PRECISIONS[tonumber(C.sao_cuda_gemm_precision(code)) + 1]
end

function M.cudnn()
  local v = ffi.new("int64_t[1]")
  local why = C.sao_cuda_cudnn_status(v)
  if why ~= nil then return nil, ffi.string(why) end
  return tonumber(v[0])
end

function M.conv_backend(name)
  check_name("conv_backend", { "cudnn", "gemm", "auto" }, name)
  local no = no_backend("conv_backend", name)
  if no then return nil, no end
  local now = ffi.string(core.checkp(C.sao_cuda_conv_backend(core.ctx, name), 2))
  if now == "cudnn" then return now, nil end
  local _, why = M.cudnn()
  return now, why or "sao.cuda.conv_backend(\"gemm\") chose the GEMM path"
end

function M.attention_impl(name)
  check_name("attention_impl", { "auto", "cublas", "flash", "cudnn" }, name)
  local no = no_backend("attention_impl", name)
  if no then return nil, no end
  return ffi.string(core.checkp(C.sao_cuda_attention_impl(core.ctx, name), 2))
end

function M.sdpa()
  local buf, bwd = ffi.new("char[1024]"), ffi.new("int64_t[1]")
  local fwd = tonumber(C.sao_cuda_sdpa_status(bwd, buf, 1024))
  local why = ffi.string(buf)
  return fwd, tonumber(bwd[0]), why ~= "" and why or nil
end

return M
