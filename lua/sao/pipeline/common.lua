-- sao.pipeline.common — small helpers the encode/train/sample/eval stages share: option parsing
-- (the recipe passes strings), the model a stage uses, run folders and checkpoints, files.
local sao = require "sao"

local M = {}

--- A command-line flag as a boolean: nil/false/"false"/"0"/"no" are false, anything else true.
function M.flag(v)
  return v ~= nil and v ~= false and v ~= "false" and v ~= "0" and v ~= "no"
end

--- A number option (strings from the command line), or `default`.
function M.num(v, default)
  if v == nil or v == true then return default end
  local n = tonumber(v)
  if n == nil then error("expected a number, got '" .. tostring(v) .. "'", 2) end
  return n
end

--- A list option: a table as is, or "a,b,c" split on commas (numbers converted when `numbers`).
function M.list(v, numbers)
  if v == nil or v == true then return nil end
  if type(v) == "table" then return v end
  local out = {}
  for s in tostring(v):gmatch("[^,]+") do
    s = s:match("^%s*(.-)%s*$")
    out[#out + 1] = numbers and assert(tonumber(s), "expected numbers in '" .. tostring(v) .. "'") or s
  end
  return out
end

--- A stage's settings: `defaults` overlaid with `opts` (the recipe's, strings from the command
--- line), each converted to its default's type (numbers; booleans from 1/true/yes/on). Keys with
--- dashes are read as underscores; unknown keys are kept as they are (other stages' options). A
--- number that does not parse raises "<stage>: --key expects a number, got 'x'".
function M.settings(defaults, opts, stage)
  local cfg = {}
  for k, v in pairs(defaults) do cfg[k] = v end
  for k, v in pairs(opts or {}) do
    local key = tostring(k):gsub("%-", "_")
    local d = defaults[key]
    if type(d) == "number" and type(v) == "string" then
      local n = tonumber(v)
      if not n then error(stage .. ": --" .. key:gsub("_", "-") .. " expects a number, got '" .. v .. "'", 0) end
      v = n
    elseif type(d) == "boolean" and type(v) == "string" then
      v = (v == "1" or v == "true" or v == "yes" or v == "on")
    end
    cfg[key] = v
  end
  return cfg
end

local fs = require "sao.fs"
M.shell_quote, M.exists, M.read, M.write_atomic, M.mkdir_p, M.ls = fs.quote, fs.exists, fs.read, fs.write_atomic,
                                                                  fs.mkdir_p, fs.ls

--- The sao executable that worker processes run: $SAO_BIN, the source tree's ./sao, or the
--- installed one (PREFIX/bin/sao beside PREFIX/share/sao), else "sao" on the PATH.
function M.sao_binary()
  local env = os.getenv("SAO_BIN")
  if env and env ~= "" then return env end
  local root = require("sao.ffi").root
  for _, c in ipairs { root .. "/sao", root .. "/../../bin/sao" } do
    if fs.exists(c) then return c end
  end
  return "sao"
end

--- The model of a stage: opts.model ("tiny", "sao-1.0", a checkpoint folder; nil: SAO 1.0 when
--- its weights are there, else the tiny random model), random weights drawn with opts.model_seed.
--- Returns the model and its cache identity (sao.latents.model_id).
function M.load_model(opts)
  local seed = M.num(opts.model_seed, 0)
  local device = opts.device ~= true and opts.device or nil   -- --device cuda: the models run on that GPU
  local precision = opts.precision ~= true and opts.precision or nil
  -- --graphs: on a GPU, the sampler's DiT calls replay as CUDA graphs (dit:graphs)
  local model = sao.load_model(opts.model, { seed = seed, quiet = M.flag(opts.quiet), device = device,
    precision = precision, parts = opts.parts, graphs = M.flag(opts.graphs) })
  return model, require("sao.latents").model_id(model, { seed = seed })
end

--- OUT/runs/<run> (opts.run, default "main").
function M.run_dir(opts)
  return (opts.out or "out") .. "/runs/" .. tostring(opts.run or "main")
end

--- Checkpoints of a run, oldest first: {{dir=, step=}, ...} (only complete ones: state.json).
function M.checkpoints(run_dir)
  local out = {}
  for _, name in ipairs(M.ls(run_dir .. "/checkpoints")) do
    local n = tonumber(name:match("^step%-(%d+)$"))
    local dir = run_dir .. "/checkpoints/" .. name
    if n and M.exists(dir .. "/state.json") then out[#out + 1] = { dir = dir, step = n } end
  end
  table.sort(out, function(a, b) return a.step < b.step end)
  return out
end

function M.latest_checkpoint(run_dir)
  local c = M.checkpoints(run_dir)
  return c[#c]
end

--- A Lua literal for a plain value (tables with sorted keys, indented), for config files.
function M.serialize(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return string.format("%q", v)
  elseif t == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    for _, f in ipairs { "%.15g", "%.16g" } do
      local s = string.format(f, v)
      if tonumber(s) == v then return s end
    end
    return string.format("%.17g", v)
  elseif t == "boolean" or t == "nil" then return tostring(v)
  elseif t ~= "table" then return "nil --[[ " .. t .. " ]]"
  end
  local n = #v
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  if #keys == 0 then
    local parts = {}
    for i = 1, n do parts[i] = M.serialize(v[i], indent) end
    return "{ " .. table.concat(parts, ", ") .. (n > 0 and " }" or "}")
  end
  local inner = indent .. "  "
  local lines = { "{" }
  for i = 1, n do lines[#lines + 1] = inner .. M.serialize(v[i], inner) .. "," end
  for _, k in ipairs(keys) do
    local name = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. M.serialize(k) .. "]")
    lines[#lines + 1] = inner .. name .. " = " .. M.serialize(v[k], inner) .. ","
  end
  lines[#lines + 1] = indent .. "}"
  return table.concat(lines, "\n")
end

--- Slug for a file name: lower case letters, digits, '#' as "s", the rest as '-', at most n chars.
function M.slug(s, n)
  s = tostring(s):lower():gsub("#", "s"):gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")
  if #s > (n or 40) then s = s:sub(1, n or 40):gsub("%-+$", "") end
  return s ~= "" and s or "x"
end

return M
