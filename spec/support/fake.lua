-- fake.lua — starts spec/support/fake_server.lua for a spec and talks to it through files.
--
--   local fake = require "spec.support.fake"      (or dofile)
--   local srv = fake.start()          -- srv.url = "http://127.0.0.1:PORT"
--   srv:configure{ routes = {...}, openai = {...}, spotify = {...}, lastfm = {...} }
--   ... requests ...
--   srv:requests()                    -- what the server received since the last configure/mark
--   srv:stop()
local cjson = require "cjson"

local M = {}
local Server = {}
Server.__index = Server

local here = debug.getinfo(1, "S").source:match("^@(.*)/fake%.lua$") or "spec/support"

local function write_file(path, s)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(s)
  f:close()
  assert(os.rename(tmp, path))
end

local function count_lines(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = 0
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

function M.start()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  local self = setmetatable({ dir = dir, version = 0, mark_line = 0 }, Server)
  self:configure {}
  -- exec: the server's parent is this process, so it quits when the spec run ends
  local p = assert(io.popen("exec luajit '" .. here .. "/fake_server.lua' '" .. dir .. "'", "r"))
  local line = p:read("*l")
  local port, pid = (line or ""):match("^listening (%d+) (%d+)")
  assert(port, "fake server did not start: " .. tostring(line))
  self.pipe, self.port, self.pid = p, tonumber(port), tonumber(pid)
  self.url = "http://127.0.0.1:" .. port
  return self
end

--- Replaces the server's behaviour; resets its counters and marks the request log.
function Server:configure(cfg)
  self.version = self.version + 1
  cfg.version = self.version
  cfg.routes = cfg.routes or {}
  if next(cfg.routes) == nil then cfg.routes = { ["/__none"] = { { status = 404 } } } end
  write_file(self.dir .. "/config.json", cjson.encode(cfg))
  self:mark()
end

function Server:mark() self.mark_line = count_lines(self.dir .. "/log.jsonl") end

--- Requests received since the last mark, oldest first: {t, method, path, query, headers, body}.
function Server:requests(path_pattern)
  local out = {}
  local f = io.open(self.dir .. "/log.jsonl", "rb")
  if not f then return out end
  local i = 0
  for line in f:lines() do
    i = i + 1
    if i > self.mark_line then
      local r = cjson.decode(line)
      if not path_pattern or r.path:match(path_pattern) then out[#out + 1] = r end
    end
  end
  f:close()
  return out
end

--- Everything the server saw (log lines), as one string: for "no secret here" checks.
function Server:raw_log()
  local f = io.open(self.dir .. "/log.jsonl", "rb")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

function Server:stop()
  if self.pid then
    os.execute("kill " .. self.pid .. " 2>/dev/null")
    self.pipe:close()
    self.pid = nil
  end
  os.execute("rm -rf '" .. self.dir .. "'")
end

--- A port on which nothing listens (for "connection refused").
function M.dead_port()
  local s = M.start()
  local port = s.port
  s:stop()
  return port
end

--- A fresh empty folder (removed by rm_rf).
M.tmpdir = require("support.shell").tmpdir

function M.rm_rf(d) if d and d:match("^/tmp/") then os.execute("rm -rf '" .. d .. "'") end end

return M
