-- spec/support/near.lua — assert.tensor_near(want, got, {abs=, rel=}) for busted.
-- Passes when every element satisfies |got - want| <= abs + rel * |want|; on failure the message
-- names the worst element (1-based index, got, want) and the max error seen, so a tolerance can be
-- judged from the output. `want` may be a tensor or a nested Lua table.
local say = require "say"
local assert = require "luassert"
local sao = require "sao"

local M = {}

local function flat(x)
  if sao.is_tensor(x) then
    local t = x:totable()
    if type(t) == "number" then return { t }, {} end
    x = t
  end
  local out, shape = {}, {}
  local function walk(v, d)
    if type(v) == "number" then out[#out + 1] = v return end
    shape[d] = #v
    for i = 1, #v do walk(v[i], d + 1) end
  end
  walk(x, 1)
  return out, shape
end

--- Worst element: returns (ok, max_abs_err, index, got, want).
function M.compare(want, got, tol)
  tol = tol or {}
  local a, r = tol.abs or 0, tol.rel or 0
  local w = flat(want)
  local g = flat(got)
  if #w ~= #g then return false, math.huge, 0, #g, #w end
  local ok, worst, wi, maxerr = true, -1, 1, 0
  for i = 1, #w do
    local e = math.abs(g[i] - w[i])
    if g[i] ~= g[i] or w[i] ~= w[i] then e = (g[i] ~= g[i] and w[i] ~= w[i]) and 0 or math.huge end
    if e > maxerr then maxerr = e end
    local excess = e - (a + r * math.abs(w[i]))
    if excess > worst then worst, wi = excess, i end
    if excess > 0 then ok = false end
  end
  return ok, maxerr, wi, g[wi], w[wi]
end

-- SAO_TOL_LOG=FILE appends one JSON line per comparison: where (the spec lines on the call stack,
-- innermost first), the max abs error, the tolerance and the verdict. A GPU run (bench/gpu_check.sh)
-- sets it, so the estimated tolerances can be replaced by measured errors from one run.
local tol_log = os.getenv("SAO_TOL_LOG")

local function log_comparison(maxerr, tol, ok, wmax)
  local where = {}
  for level = 3, 30 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.short_src:match("_spec%.lua$") then where[#where + 1] = info.short_src .. ":" .. info.currentline end
  end
  local f = io.open(tol_log, "a")
  if not f then return end
  f:write(require("cjson").encode { where = table.concat(where, " < "), max_abs = maxerr, max_want = wmax,
    tol_abs = (tol or {}).abs or 0, tol_rel = (tol or {}).rel or 0, ok = ok }, "\n")
  f:close()
end

local function tensor_near(state, args)
  local want, got, tol = args[1], args[2], args[3]
  local ok, maxerr, i, g, w = M.compare(want, got, tol)
  if tol_log then
    local wmax = 0
    for _, v in ipairs(flat(want)) do if math.abs(v) > wmax and v == v then wmax = math.abs(v) end end
    log_comparison(maxerr, tol, ok, wmax)
  end
  state.failure_message = string.format(
    "tensors differ: worst element #%d got %s want %s (max abs err %.3g, tol abs %g rel %g)",
    i, tostring(g), tostring(w), maxerr, (tol or {}).abs or 0, (tol or {}).rel or 0)
  return ok
end
say:set("assertion.tensor_near.positive", "tensors differ")
say:set("assertion.tensor_near.negative", "tensors unexpectedly close")
assert:register("assertion", "tensor_near", tensor_near, "assertion.tensor_near.positive",
                "assertion.tensor_near.negative")
return M
