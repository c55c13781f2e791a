-- sao.models — what every model handle shares: binding a checkpoint's tensors to a C parameter
-- registry by upstream key name, with the checkpoint prefix stripped, and strict checking
-- (unexpected, mis-shaped and missing keys are errors that name them).
local ffi = require "ffi"
local sao = require "sao"
local C = sao.C

local M = {}

--- Binds every tensor of `tensors` whose name starts with `prefix` (default "") to `params`.
--- opts.strict (default true): a key under the prefix that the model does not know is an error.
--- Returns the number of tensors bound.
function M.bind(params, tensors, prefix, opts)
  prefix = prefix or ""
  opts = opts or {}
  local names = {}
  for k in pairs(tensors) do
    if k:sub(1, #prefix) == prefix then names[#names + 1] = k end
  end
  table.sort(names)
  local n = 0
  for _, k in ipairs(names) do
    local short = k:sub(#prefix + 1)
    if C.sao_params_find(params, short) >= 0 then
      sao.check(C.sao_params_bind(sao.ctx, params, short, sao.Tensor.raw(tensors[k])), 2)
      n = n + 1
    elseif opts.strict ~= false then
      error(string.format("load: unexpected key '%s' in the checkpoint (not part of this model's config)", k), 2)
    end
  end
  sao.check(C.sao_params_check(sao.ctx, params), 2)
  return n
end

--- name -> {shape} of every parameter a registry declares (for listings and exports).
function M.list(params)
  local out = {}
  for i = 0, C.sao_params_count(params) - 1 do
    local shp, s = C.sao_params_shape(params, i), {}
    for d = 0, C.sao_params_ndim(params, i) - 1 do s[#s + 1] = tonumber(shp[d]) end
    out[ffi.string(C.sao_params_name(params, i))] = s
  end
  return out
end

--- The bound tensors of a registry as prefix .. name -> tensor (views: no copies), added to `out`
--- (a new table when nil). Parameters not bound are left out.
function M.tensors(params, prefix, out)
  out = out or {}
  prefix = prefix or ""
  for i = 0, C.sao_params_count(params) - 1 do
    local t = C.sao_params_tensor(params, i)
    if t ~= nil then
      out[prefix .. ffi.string(C.sao_params_name(params, i))] = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_view_of(sao.ctx, t)))
    end
  end
  return out
end

--- Contiguous f32 copy (or view) of a tensor, for handing raw pointers to C.
function M.f32(t)
  if t:dtype() == "f32" and t:is_contiguous() then return t end
  return t:to("f32"):contiguous()
end

return M
