-- sao.strict — catch accidental globals.
--
--   require "sao.strict"          -- on for _G: classic strict mode
--
-- Once on, a global must be declared before use. Assigning it at the top level of a chunk (a
-- script, a module's body, a REPL line) declares it, as does strict.declare(name[, value]).
-- Then:
--   * assigning an undeclared global from inside a function is an error;
--   * reading an undeclared global is an error (from C it is allowed and gives nil).
-- The REPL turns it on with { main_reads = true }: top-level lines may also read undeclared
-- names (they print nil), so only function bodies are checked there.
--
--   strict.enable(env, opts)  strict.disable(env)  strict.declare(name, value, env)
--   strict.is_enabled(env)
local M = {}

local getinfo, rawset, rawget = debug.getinfo, rawset, rawget

-- "main" (top level of a chunk), "Lua" (a function) or "C" for the code at stack `level`.
local function what(level)
  local info = getinfo(level + 1, "S")
  return info and info.what or "C"
end

local function state_of(env)
  local mt = getmetatable(env)
  return type(mt) == "table" and rawget(mt, "__sao_strict") or nil
end

function M.enable(env, opts)
  env, opts = env or _G, opts or {}
  local st = state_of(env)
  if st then                        -- already on: only the options change
    st.main_reads = opts.main_reads or false
    return M
  end
  local mt = getmetatable(env)
  if mt == nil then
    mt = {}
    setmetatable(env, mt)
  end
  if rawget(mt, "__index") ~= nil or rawget(mt, "__newindex") ~= nil then
    error("sao.strict: the environment already has __index/__newindex; not replacing them", 2)
  end
  st = { declared = {}, main_reads = opts.main_reads or false }
  local declared = st.declared
  mt.__sao_strict = st
  mt.__newindex = function(t, k, v)
    if not declared[k] then
      local w = what(2)
      if w ~= "main" and w ~= "C" then
        error("assignment to undeclared global '" .. tostring(k) ..
              "' inside a function (make it local, or declare it at top level or with " ..
              "require('sao.strict').declare)", 2)
      end
      declared[k] = true
    end
    rawset(t, k, v)
  end
  mt.__index = function(_, k)
    if not declared[k] then
      local w = what(2)
      if w ~= "C" and not (st.main_reads and w == "main") then
        error("undeclared global '" .. tostring(k) .. "' (a typo, or a missing local?)", 2)
      end
    end
    return nil
  end
  return M
end

function M.disable(env)
  env = env or _G
  local mt = getmetatable(env)
  if type(mt) == "table" and rawget(mt, "__sao_strict") then
    mt.__sao_strict, mt.__index, mt.__newindex = nil, nil, nil
  end
  return M
end

function M.is_enabled(env)
  return state_of(env or _G) ~= nil
end

-- Declares global `name` (from anywhere) and sets it to `value` (may be nil).
function M.declare(name, value, env)
  env = env or _G
  local st = state_of(env)
  if st then st.declared[name] = true end
  rawset(env, name, value)
end

M.enable(_G)
return M
