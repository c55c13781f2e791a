-- sao — the Lua library. `local sao = require "sao"`.
--
-- Holds the FFI binding (sao.C, the default context sao.ctx, sao.check), the tensor API
-- (sao.tensor, sao.zeros, sao.randn, sao.matmul, ... from sao.tensor) and safetensors I/O.
-- Every other part is a submodule loaded on first use: sao.audio is require "sao.audio", and so on
-- for each lua/sao/<name>.lua.
local ffi = require "ffi"
local core = require "sao.ffi"
local T = require "sao.tensor"

local sao = {
  C = core.C, ctx = core.ctx, check = core.check, checkp = core.checkp, root = core.root,
  Tensor = T.Tensor, tensor_metatable = T.metatable,
  tensor = T.tensor, empty = T.empty, empty_on = T.empty_on, zeros = T.zeros, ones = T.ones, full = T.full,
  arange = T.arange, randn = T.randn, rand = T.rand, matmul = T.matmul, cat = T.cat,
  stack = T.stack, is_tensor = T.is_tensor, tensor_arg = T.arg, tensor_from_ptr = T.from_ptr,
}
sao.version = ffi.string(core.C.sao_version())

function sao.threads(n)
  if n then core.check(core.C.sao_ctx_set_threads(core.ctx, n)) end
  return core.C.sao_ctx_threads(core.ctx)
end

function sao.has_cuda() return core.C.sao_has_cuda() == 1 end

-- safetensors ---------------------------------------------------------------------------------
local st = require "sao.safetensors"
sao.load_safetensors = st.load
sao.save_safetensors = st.save

--- sao.load_model([dir | "sao-1.0" | "tiny" | config][, opts]) -> model (see lua/sao/model.lua)
function sao.load_model(what, opts) return require("sao.model").load(what, opts) end

-- submodules on first use -----------------------------------------------------------------------
setmetatable(sao, {
  __index = function(t, k)
    if type(k) ~= "string" then return nil end
    local name = "sao." .. k
    if package.loaded[name] ~= nil or package.searchpath(name, package.path) then
      local m = require(name)
      rawset(t, k, m)
      return m
    end
    return nil
  end,
})

return sao
