-- sao.repl — the interactive prompt (`sao`, `sao -i script.lua`, `sao --repl`), after Torch's trepl.
--
-- A line is compiled first as `return <line>` so expressions print their values; if that fails
-- it is compiled as a statement; if that fails at <eof> the chunk is incomplete and the next
-- line continues it (">> " prompt). A trailing ';' evaluates without printing. Tables print
-- with depth and size limits, values with __tostring (tensors) through it. Errors print a
-- message and a short traceback; the prompt stays.
--
-- Line editing, history and Tab completion come from readline through `sao.host` (a small
-- module the sao binary preloads). Without a terminal the same loop reads plain lines from
-- stdin and prints no prompts, which is how the specs drive it. The pieces are plain functions
-- (format, complete, compile) so they can be tested without a terminal.
local M = {}

M.prompt = "sao> "
M.continue_prompt = ">> "
M.history_size = 1000
M.print_opts = { depth = 3, items = 30, width = 100, string_len = 200 }

local has_host, host = pcall(require, "sao.host")
if not has_host then host = nil end

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
            repeat return then true until while]]):gmatch("%a+") do
  keywords[w] = true
end

local function is_ident(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not keywords[s]
end

---------------------------------------------------------------------------------------------------
-- printing

local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "<" .. type(v) .. " whose __tostring failed: " .. tostring(s) .. ">"
end

local function quote(s, maxlen)
  local extra = ""
  if maxlen and #s > maxlen then
    extra = ("...(%d bytes)"):format(#s)
    s = s:sub(1, maxlen)
  end
  return (("%q"):format(s):gsub("\\\n", "\\n")) .. extra
end

local function has_tostring(v)
  local mt = debug.getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local type_rank = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (type_rank[ta] or 9) < (type_rank[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  return safe_tostring(a) < safe_tostring(b)
end

-- format(value, {depth=, items=, width=, string_len=}) -> string. Strings are quoted; tables are
-- expanded up to `depth` levels and `items` entries each, on one line when they fit in `width`.
function M.format(v, opts)
  opts = opts or M.print_opts
  local maxdepth, maxitems = opts.depth or 3, opts.items or 30
  local width, slen = opts.width or 100, opts.string_len or 200
  local seen = {}

  local function fmt(x, depth, indent)
    local tx = type(x)
    if tx == "string" then return quote(x, slen) end
    if tx ~= "table" or has_tostring(x) then       -- continuation lines follow the nesting
      return (safe_tostring(x):gsub("\n", "\n" .. indent))
    end
    if next(x) == nil then return "{}" end
    if seen[x] then return "<cycle: " .. safe_tostring(x) .. ">" end
    local alen = 0
    while rawget(x, alen + 1) ~= nil do alen = alen + 1 end
    local keys = {}
    for k in next, x do
      if not (type(k) == "number" and k >= 1 and k <= alen and k % 1 == 0) then keys[#keys + 1] = k end
    end
    local total = alen + #keys
    if depth >= maxdepth then return ("{...%d entries}"):format(total) end
    table.sort(keys, key_less)
    seen[x] = true
    local parts, inner = {}, indent .. "  "
    for i = 1, math.min(alen, maxitems) do parts[#parts + 1] = fmt(rawget(x, i), depth + 1, inner) end
    for i = 1, math.min(#keys, maxitems - #parts) do
      local k = keys[i]
      local ks = is_ident(k) and k or "[" .. fmt(k, maxdepth, inner) .. "]"
      parts[#parts + 1] = ks .. " = " .. fmt(rawget(x, k), depth + 1, inner)
    end
    seen[x] = nil
    if total > #parts then parts[#parts + 1] = ("...(%d more)"):format(total - #parts) end
    local len, multiline = #indent, false
    for _, p in ipairs(parts) do
      len = len + #p + 2
      multiline = multiline or p:find("\n", 1, true) ~= nil
    end
    if not multiline and len + 2 <= width then return "{" .. table.concat(parts, ", ") .. "}" end
    return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
  end

  return fmt(v, 0, "")
end

-- One result line: top-level strings print raw (as in `lua`), everything else through format.
function M.format_results(res, n)
  local out = {}
  for i = 1, n do
    local v = res[i]
    out[i] = type(v) == "string" and v or M.format(v)
  end
  return table.concat(out, "\t")
end

---------------------------------------------------------------------------------------------------
-- completion

-- The methods table of sao tensors (an ffi metatype, whose metatable Lua cannot see), if the
-- library is loaded. Accepts the metatype table itself or a plain methods table.
local function tensor_methods()
  local sao = package.loaded.sao
  if type(sao) ~= "table" then return nil end
  local ok, T = pcall(function() return sao.Tensor end)
  return ok and type(T) == "table" and T or nil
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = debug.getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

local function index(obj, k)
  if type(obj) == "table" then
    local v = rawget(obj, k)
    if v ~= nil then return v end
  end
  local ok, v = pcall(function() return obj[k] end)
  if ok then return v end
  return nil
end

-- Adds the completable names of `obj` to `into` (name -> value): its own fields when it is a
-- table, then what its metatable's __index table chain offers (string methods, file methods,
-- tensor methods for cdata).
local function collect(obj, into, depth)
  if depth > 5 or obj == nil then return end
  if type(obj) == "table" then
    for k, v in next, obj do
      if is_ident(k) and into[k] == nil then into[k] = v end
    end
  end
  if type(obj) == "cdata" then
    local T = tensor_methods()
    if not T then return end
    local names = {}
    collect(T, names, depth + 1)
    if type(rawget(T, "__index")) == "table" then collect(rawget(T, "__index"), names, depth + 1) end
    for k in pairs(names) do
      local v = not k:match("^__") and index(obj, k)
      if v ~= nil and v ~= false and into[k] == nil then into[k] = v end   -- only if obj has it
    end
    return
  end
  local mt = debug.getmetatable(obj)
  local idx = type(mt) == "table" and rawget(mt, "__index")
  if type(idx) == "table" and idx ~= obj then collect(idx, into, depth + 1) end
end

-- complete(word, env) -> sorted list of replacements for `word`, the text before the cursor up
-- to the last separator: "pri" -> {"print("}, "math.fl" -> {"math.floor("},
-- "t:res" -> {"t:reshape("}. Functions get a "(" appended. Keywords complete too.
function M.complete(word, env)
  env = env or _G
  local head, sep, partial = word:match("^(.-)([%.:])([%w_]*)$")
  local found, out = {}, {}
  if not head then
    if not (word == "" or word:match("^[%a_][%w_]*$")) then return out end
    head, sep, partial = "", "", word
    collect(env, found, 0)
    for k in pairs(keywords) do found[k] = found[k] == nil and true or found[k] end
  else
    local obj = env
    for seg in (head .. "."):gmatch("(.-)%.") do
      if not is_ident(seg) then return out end
      obj = index(obj, seg)
      if obj == nil then return out end
    end
    collect(obj, found, 0)
  end
  for k, v in pairs(found) do
    if k:sub(1, #partial) == partial and (sep ~= ":" or callable(v)) then
      local fn = callable(v) and not keywords[k]
      out[#out + 1] = head .. sep .. k .. (fn and "(" or "")
    end
  end
  table.sort(out)
  return out
end

---------------------------------------------------------------------------------------------------
-- compiling and evaluating

-- compile(src) -> fn, is_expression | nil, message, incomplete
-- The expression form passes the values through a function argument rather than returning the
-- expression directly, so `error("x")` is not a tail call and its message keeps "stdin:1:".
-- A trailing ';' (print nothing) is dropped from the expression form.
local function pass(...) return ... end

function M.compile(src, chunkname)
  chunkname = chunkname or "=stdin"
  local expr = src:gsub(";%s*$", "")
  local fn = loadstring("local pass_ = ... return pass_(" .. expr .. "\n)", chunkname)
  if fn then return function() return fn(pass) end, true end
  local err
  fn, err = loadstring(src, chunkname)
  if fn then return fn, false end
  local _, eerr = loadstring("return " .. expr, chunkname)   -- "{" is an unfinished expression
  local function at_eof(msg) return msg and msg:match("<eof>'?$") ~= nil end
  return nil, err, at_eof(err) or at_eof(eerr)
end

-- A message plus the part of the traceback that belongs to the user's code.
local function short_traceback(msg)
  if type(msg) ~= "string" then
    local mt = debug.getmetatable(msg)
    msg = (type(mt) == "table" and mt.__tostring) and safe_tostring(msg)
          or "(error object is a " .. type(msg) .. " value)"
  end
  local tb = debug.traceback(msg, 2)
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if line:find("in function 'xpcall'", 1, true) or line:find("sao/repl.lua", 1, true) then break end
    if line:find("sao/strict.lua", 1, true) then        -- the check, not the culprit
      if lines[#lines]:find("in function 'error'", 1, true) then lines[#lines] = nil end
    else
      lines[#lines + 1] = line
    end
  end
  if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
  return table.concat(lines, "\n")
end

local function pack(...) return { n = select("#", ...), ... } end

local function default_write(s) io.stdout:write(s); io.stdout:flush() end
local function default_error(s) io.stdout:flush(); io.stderr:write(s) end

-- eval(src, write, write_error) -> "ok" | "incomplete" | "error". Prints results unless src
-- ends with ';'.
function M.eval(src, write, write_error)
  write, write_error = write or default_write, write_error or default_error
  local fn, is_expr, incomplete = M.compile(src)
  if not fn then
    if incomplete then return "incomplete" end
    write_error(tostring(is_expr) .. "\n")     -- the syntax error
    return "error"
  end
  local res = pack(xpcall(fn, short_traceback))
  io.stdout:flush()
  if host then host.clear_interrupt() end
  if not res[1] then
    write_error(tostring(res[2]) .. "\n")
    return "error"
  end
  if is_expr and res.n > 1 and not src:match(";%s*$") then
    write(M.format_results({ unpack(res, 2, res.n) }, res.n - 1) .. "\n")
  end
  return "ok"
end

---------------------------------------------------------------------------------------------------
-- history: one entry per line, the newest last, trimmed to history_size lines

local function read_lines(path)
  local f = io.open(path, "r")
  if not f then return {} end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  return lines
end

local function trim_history(path, cap)
  local lines = read_lines(path)
  if #lines <= cap then return lines end
  lines = { unpack(lines, #lines - cap + 1) }
  local tmp = path .. ".tmp"
  local f = io.open(tmp, "w")
  if f then
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    os.rename(tmp, path)
  end
  return lines
end

-- The history file: $SAO_HISTORY ("" turns history off), else ~/.sao_history on a terminal.
function M.history_path(interactive)
  local p = os.getenv("SAO_HISTORY")
  if p then return p ~= "" and p or nil end
  local home = os.getenv("HOME")
  return interactive and home and home .. "/.sao_history" or nil
end

---------------------------------------------------------------------------------------------------
-- the loop

-- run{interactive=bool, read=fn(prompt) -> line|nil|false, strict=bool}
function M.run(opts)
  opts = opts or {}
  local interactive = opts.interactive
  if interactive == nil then interactive = host ~= nil and host.isatty(0) end
  local read = opts.read or (host and host.readline) or function() return io.read("*l") end
  if opts.strict ~= false then require("sao.strict").enable(_G, { main_reads = true }) end

  local hpath = M.history_path(interactive)
  local last
  if hpath then
    for _, l in ipairs(trim_history(hpath, M.history_size)) do
      if interactive and host then host.add_history(l) end
      last = l
    end
  end
  if interactive and host then
    host.set_completer(function(word) return M.complete(word, _G) end)
    io.stdout:write(host.version, " — Tab completes, `x;` evaluates quietly, Ctrl-C interrupts, ",
                    "Ctrl-D quits\n")
  end

  local buffer
  local function step()
    local line = read(interactive and (buffer and M.continue_prompt or M.prompt) or "")
    if line == nil then return false end
    if line == false then buffer = nil; return true end        -- Ctrl-C: drop the chunk
    if hpath and line:match("%S") and line ~= last then
      local f = io.open(hpath, "a")
      if f then f:write(line, "\n"); f:close() end
      if interactive and host then host.add_history(line) end
      last = line
    end
    if not buffer and line:match("^%s*$") then return true end
    if not buffer then line = line:gsub("^=", "", 1) end  -- `=expr`, as in lua 5.1
    local src = buffer and buffer .. "\n" .. line or line
    buffer = M.eval(src) == "incomplete" and src or nil
    return true
  end

  while true do
    local ok, more = pcall(step)
    if not ok then                  -- a Ctrl-C that landed in the REPL's own code
      if host then host.clear_interrupt() end
      buffer = nil
      io.stderr:write(tostring(more), "\n")
    elseif not more then
      break
    end
  end
  if buffer then                    -- input ended inside a chunk: say so
    local _, err = M.compile(buffer)
    default_error(tostring(err) .. "\n")
  end
  if hpath then trim_history(hpath, M.history_size) end
end

return M
