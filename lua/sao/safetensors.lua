-- sao.safetensors — load (mmap, zero-copy views) and save (atomic) safetensors files.
local ffi = require "ffi"
local cjson = require "cjson"
local core = require "sao.ffi"
local T = require "sao.tensor"
local C, ctx, check, checkp = core.C, core.ctx, core.check, core.checkp

local M = {}

--- Returns (tensors: name -> tensor, metadata: table or nil). Errors name the file and the fault.
function M.load(path)
  if type(path) ~= "string" then error("load_safetensors: expected a path", 2) end
  local f = checkp(C.sao_st_load(ctx, path), 2)
  local out = {}
  for i = 0, f.n - 1 do
    out[ffi.string(f.names[i])] = T.from_ptr(C.sao_st_take(f, i))
  end
  local meta
  if f.metadata_json ~= nil then meta = cjson.decode(ffi.string(f.metadata_json)) end
  C.sao_st_free(f)
  return out, meta
end

--- Writes name -> tensor (sorted by name) with optional metadata (values become strings).
function M.save(path, tensors, metadata)
  local names = {}
  for k, v in pairs(tensors) do
    if type(k) ~= "string" then error("save_safetensors: tensor names must be strings", 2) end
    if not T.is_tensor(v) then error("save_safetensors: '" .. k .. "' is not a tensor", 2) end
    names[#names + 1] = k
  end
  table.sort(names)
  local n = #names
  local cnames = ffi.new("const char*[?]", math.max(1, n))
  local cts = ffi.new("sao_tensor*[?]", math.max(1, n))
  local host = {}   -- device tensors are written through host copies (kept alive until the call returns)
  for i, k in ipairs(names) do
    local t = tensors[k]
    if t:device() ~= "cpu" then t = t:to("cpu"); host[#host + 1] = t end
    cnames[i - 1] = k
    cts[i - 1] = T.ptr(t)
  end
  local mj
  if metadata then
    local m = {}
    for k, v in pairs(metadata) do m[tostring(k)] = type(v) == "table" and cjson.encode(v) or tostring(v) end
    mj = cjson.encode(m)
  end
  check(C.sao_st_save(ctx, path, n, cnames, cts, mj), 2)
  return path
end

return M
