-- sao.ojson — JSON that keeps its shape: object key order and empty arrays survive a
-- decode → change → encode round trip (lua-cjson loses both). Used where sao rewrites JSON that
-- other stages wrote, such as clip metadata files.
--
--   local ojson = require "sao.ojson"
--   local t = ojson.decode(text)         -- objects remember their key order, arrays are marked
--   t.prompt = "..."                     -- new keys are written after the known ones
--   local s = ojson.encode(t, { indent = 2 })
--   ojson.read(path) / ojson.write(path, t, opts)   -- write is atomic (tmp + rename)
--
-- JSON null decodes to ojson.null (cjson.null); numbers are Lua numbers (integers written
-- without a fraction, others in the shortest form that reads back exactly).
local cjson = require "cjson"

local M = {}
M.null = cjson.null

local ARRAY = { __jsonarray = true }
local function object_mt(keys) return { __jsonkeys = keys } end

--- Marks t as a JSON array (so an empty t is written as []).
function M.array(t) return setmetatable(t or {}, ARRAY) end
--- Makes t a JSON object whose keys are written in the order of `keys` first.
function M.object(t, keys) return setmetatable(t or {}, object_mt(keys or {})) end

---------------------------------------------------------------------------------------------
-- decode
---------------------------------------------------------------------------------------------
local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function decode_error(s, i, what)
  local line = select(2, s:sub(1, i):gsub("\n", "")) + 1
  error(("json: %s at byte %d (line %d)"):format(what, i, line), 0)
end

local parse_value

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local function parse_string(s, i)      -- s:sub(i,i) == '"'
  local out, j = {}, i + 1
  while true do
    local k = s:find('["\\]', j)
    if not k then decode_error(s, i, "unterminated string") end
    out[#out + 1] = s:sub(j, k - 1)
    if s:sub(k, k) == '"' then return table.concat(out), k + 1 end
    local c = s:sub(k + 1, k + 1)
    if c == "u" then
      local cp = tonumber(s:sub(k + 2, k + 5), 16) or decode_error(s, k, "bad \\u escape")
      j = k + 6
      if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
        local lo = tonumber(s:sub(j + 2, j + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
          j = j + 6
        end
      end
      out[#out + 1] = utf8_char(cp)
    else
      out[#out + 1] = escapes[c] or decode_error(s, k, "bad escape")
      j = k + 2
    end
  end
end

function parse_value(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local t, keys = {}, {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return setmetatable(t, object_mt(keys)), i + 1 end
    while true do
      if s:sub(i, i) ~= '"' then decode_error(s, i, "expected a key") end
      local k
      k, i = parse_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then decode_error(s, i, "expected ':'") end
      local v
      v, i = parse_value(s, i + 1)
      if t[k] == nil then keys[#keys + 1] = k end
      t[k] = v
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return setmetatable(t, object_mt(keys)), i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or '}'") end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local t = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return setmetatable(t, ARRAY), i + 1 end
    while true do
      local v
      v, i = parse_value(s, i)
      t[#t + 1] = v
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return setmetatable(t, ARRAY), i + 1 end
      if d ~= "," then decode_error(s, i, "expected ',' or ']'") end
      i = i + 1
    end
  elseif c == '"' then
    return parse_string(s, i)
  elseif s:sub(i, i + 3) == "true" then return true, i + 4
  elseif s:sub(i, i + 4) == "false" then return false, i + 5
  elseif s:sub(i, i + 3) == "null" then return M.null, i + 4
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then decode_error(s, i, "unexpected character") end
    return tonumber(num) or decode_error(s, i, "bad number"), i + #num
  end
end

function M.decode(s)
  if type(s) ~= "string" then error("json: decode expects a string", 2) end
  local v, i = parse_value(s, 1)
  i = skip(s, i)
  if i <= #s then decode_error(s, i, "trailing characters") end
  return v
end

---------------------------------------------------------------------------------------------
-- encode
---------------------------------------------------------------------------------------------
local function number(x)
  if x ~= x or x == math.huge or x == -math.huge then error("json: cannot encode " .. tostring(x), 0) end
  if x == math.floor(x) and math.abs(x) < 2 ^ 53 then return ("%d"):format(x) end
  for p = 15, 17 do
    local s = ("%." .. p .. "g"):format(x)
    if tonumber(s) == x then return s end
  end
end

local esc = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }
local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return esc[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
end
M.quote = str

local function is_array(t)
  local mt = getmetatable(t)
  if mt == ARRAY then return true end
  if mt and mt.__jsonkeys then return false end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function ordered_keys(t)
  local mt = getmetatable(t)
  local keys, seen = {}, {}
  for _, k in ipairs(mt and mt.__jsonkeys or {}) do
    if t[k] ~= nil and not seen[k] then keys[#keys + 1] = k; seen[k] = true end
  end
  local rest = {}
  for k in pairs(t) do
    if not seen[k] then rest[#rest + 1] = tostring(k) end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys
end

local function enc(v, out, indent, depth)
  local tv = type(v)
  if v == M.null or v == nil then out[#out + 1] = "null"
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif tv == "number" then out[#out + 1] = number(v)
  elseif tv == "string" then out[#out + 1] = str(v)
  elseif tv == "table" then
    if depth > 100 then error("json: nested too deep (a cycle?)", 0) end
    local nl = indent and ("\n" .. (" "):rep(indent * (depth + 1))) or ""
    local close = indent and ("\n" .. (" "):rep(indent * depth)) or ""
    if is_array(v) then
      if #v == 0 then out[#out + 1] = "[]" return end
      -- short arrays of scalars stay on one line
      local flat = true
      for _, x in ipairs(v) do if type(x) == "table" then flat = false end end
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        if not flat then out[#out + 1] = nl elseif i > 1 and indent then out[#out + 1] = " " end
        enc(x, out, indent, depth + 1)
      end
      out[#out + 1] = flat and "]" or (close .. "]")
    else
      local keys = ordered_keys(v)
      if #keys == 0 then out[#out + 1] = "{}" return end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = nl
        out[#out + 1] = str(k)
        out[#out + 1] = indent and ": " or ":"
        enc(v[k], out, indent, depth + 1)
      end
      out[#out + 1] = close .. "}"
    end
  else
    error("json: cannot encode a " .. tv, 0)
  end
end

--- opts.indent: spaces per level (nil: compact).
function M.encode(v, opts)
  local out = {}
  enc(v, out, opts and opts.indent, 0)
  return table.concat(out)
end

function M.read(path)
  local s, err = require("sao.fs").read(path)
  if not s then return nil, err end
  local ok, v = pcall(M.decode, s)
  if not ok then return nil, path .. ": " .. v end
  return v
end

function M.write(path, v, opts)
  local ok, err = pcall(require("sao.fs").write_atomic, path, M.encode(v, opts or { indent = 2 }) .. "\n")
  if not ok then error("json: " .. tostring(err), 2) end
end

return M
