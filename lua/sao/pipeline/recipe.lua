-- sao.pipeline.recipe — what every recipe script shares: its command line (--key value pairs and
-- flags), typo checks before any work starts (an unknown option or stage exits 2), and running the
-- chosen stages in order (a failing stage says why in one line and exits 1).
--
--   local recipe = require "sao.pipeline.recipe"
--   recipe.main {
--     name = "trap", out = "out/trap", arg = arg,
--     stages = { { name = "dataset", module = "sao.pipeline.beats", what = "..." }, ... },
--                                          -- or { name =, what =, run = function(opts) ... end }
--     options = "out stages ...",          -- option names the stages read (besides `extra_options`)
--     extra_options = { require("sao.pipeline.beats").defaults },   -- tables whose keys are options
--     defaults = { style = "trap" },       -- option values the recipe sets unless the user does
--     usage = { "usage: sao recipes/trap.lua ...", "  ..." },
--   }
local M = {}

--- Parses `--key value` pairs and bare `--flag`s (a flag does not take the next argument when that
--- starts with "--"). Dashes in keys become underscores. Returns the options table.
function M.parse_args(argv, name, defaults)
  local opts = {}
  for k, v in pairs(defaults or {}) do opts[k] = v end
  local i = 1
  while argv and i <= #argv do
    local a = argv[i]
    local key = a:match("^%-%-([%w_%-]+)$")
    if not key then error(name .. ": unexpected argument '" .. a .. "' (try --help)", 0) end
    key = key:gsub("%-", "_")
    local v = argv[i + 1]
    if key == "help" then opts.help = true; i = i + 1
    elseif v == nil or v:match("^%-%-") then
      opts[key] = true
      i = i + 1
    else
      opts[key] = v
      i = i + 2
    end
  end
  return opts
end

local function die(msg, code)
  io.stdout:flush()
  io.stderr:write(msg, "\n")
  os.exit(code)
end

--- Checks options and stage names (exit 2 on a typo); returns the set of wanted stages.
function M.check(spec, opts)
  local known = { out = true, stages = true, help = true }
  for n in (spec.options or ""):gmatch("%S+") do known[n] = true end
  for _, t in ipairs(spec.extra_options or {}) do
    for n in pairs(t) do known[n] = true end
  end
  for k in pairs(opts) do
    if not known[k] then
      die(("%s: unknown option --%s (see --help)"):format(spec.name, (k:gsub("_", "-"))), 2)
    end
  end
  local wanted, names = {}, {}
  for _, st in ipairs(spec.stages) do names[#names + 1] = st.name end
  for s in tostring(opts.stages):gmatch("[^,]+") do
    local ok = false
    for _, st in ipairs(spec.stages) do ok = ok or st.name == s end
    if not ok then
      die(("%s: unknown stage '%s' (stages: %s)"):format(spec.name, s, table.concat(names, ", ")), 2)
    end
    wanted[s] = true
  end
  return wanted
end

--- Runs a recipe: parses spec.arg, prints usage for --help, checks, runs the wanted stages.
function M.main(spec)
  local sao = require "sao"
  local all = {}
  for _, st in ipairs(spec.stages) do all[#all + 1] = st.name end
  local defaults = { out = spec.out, stages = table.concat(all, ",") }
  for k, v in pairs(spec.defaults or {}) do defaults[k] = v end
  local opts = M.parse_args(spec.arg, spec.name, defaults)
  if opts.help then
    for _, line in ipairs(spec.usage or {}) do print(line) end
    for _, s in ipairs(spec.stages) do print(string.format("  %-9s %s", s.name, s.what)) end
    os.exit(0)
  end
  local wanted = M.check(spec, opts)
  print(string.format("sao %s — %s recipe, output in %s", sao.version, spec.name, opts.out))
  local missing = 0
  for _, s in ipairs(spec.stages) do
    if wanted[s.name] then
      if s.run or package.searchpath(s.module, package.path) then
        print(string.format("[%s] running", s.name))
        -- SAO_TRACEBACK=1 adds the Lua traceback to a failing stage's line
        local ok, err = xpcall(function() (s.run or require(s.module).run)(opts) end, function(e)
          return os.getenv("SAO_TRACEBACK") and debug.traceback(tostring(e), 2) or tostring(e)
        end)
        if not ok then die(("%s: stage %s failed: %s"):format(spec.name, s.name, err), 1) end
      else
        missing = missing + 1
        print(string.format("[%s] not implemented yet (%s)", s.name, s.what))
      end
    end
  end
  if missing > 0 then print(string.format("%d stage(s) not implemented yet", missing)) end
  return opts
end

return M
