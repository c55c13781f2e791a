-- sao.progress — one progress bar on stderr, shared by every stage (dataset, encode, sampling, …).
--
--   local progress = require "sao.progress"
--   local bar = progress.new { total = #songs, label = "dataset", unit = "songs" }
--   for i, s in ipairs(songs) do
--     if done_before(s) then bar:skip(1) else work(s); bar:advance(1, s.name) end
--   end
--   bar:finish()
--
-- On a terminal the bar redraws one line in place ("\r"), at most every `interval` seconds:
--   dataset [########..............]  12/40 songs  0.84 songs/s  ETA 33s  Artist/Song
-- Elsewhere (a log file, CI) it prints a plain line every `log_interval` seconds and at the end,
-- so logs stay readable. Rates use the wall clock (not os.clock, which counts CPU time), and items
-- counted with :skip() (work found done by an earlier run) are left out of the rate and the ETA.
--
-- Fields of new{}: total (nil: unknown, no bar and no ETA), label, unit ("items"), out
-- (io.stderr), interval (0.1 s), log_interval (10 s), width (30), tty (auto), quiet.
local ffi = require "ffi"

local M = {}

-- ---- wall clock and terminal test -------------------------------------------------------------
-- Declared in a pcall so that another module declaring the same libc function cannot break us;
-- if clock_gettime was declared elsewhere (with struct timespec), that declaration is used.
pcall(ffi.cdef, "typedef struct sao_progress_timespec { long tv_sec; long tv_nsec; } sao_progress_timespec;")
pcall(ffi.cdef, "int clock_gettime(int clk_id, sao_progress_timespec *tp);")
local CLOCK_MONOTONIC = 1
local ts
for _, ctype in ipairs { "sao_progress_timespec", "struct timespec" } do
  local ok, t = pcall(ffi.new, ctype)
  if ok and pcall(function() return ffi.C.clock_gettime(CLOCK_MONOTONIC, t) end) then ts = t break end
end

--- Seconds on a monotonic wall clock (nanosecond resolution; os.time() if libc is out of reach).
function M.now()
  if ts then
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
  return os.time()
end

pcall(ffi.cdef, [[struct sao_progress_rusage { long utime[2]; long stime[2]; long maxrss; long rest[14]; };
int getrusage(int who, struct sao_progress_rusage *u);]])

--- The process's peak resident memory so far, in bytes (getrusage; 0 if libc is out of reach).
function M.peak_rss()
  local u = ffi.new("struct sao_progress_rusage")
  if not pcall(function() return ffi.C.getrusage(0, u) end) then return 0 end
  return tonumber(u.maxrss) * 1024
end

local isatty_ok = pcall(ffi.cdef, "int isatty(int fd);")
local function stderr_is_tty()
  if not isatty_ok then return false end
  local ok, r = pcall(function() return ffi.C.isatty(2) end)
  return ok and r == 1
end
M.stderr_is_tty = stderr_is_tty

--- "45s", "3m05s", "2h14m" (nil or NaN: "?").
function M.format_duration(s)
  if not s or s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s < 60 then return s .. "s" end
  if s < 3600 then return string.format("%dm%02ds", math.floor(s / 60), s % 60) end
  return string.format("%dh%02dm", math.floor(s / 3600), math.floor(s % 3600 / 60))
end

local function rate_text(r, unit)
  if r >= 10 then return string.format("%.0f %s/s", r, unit) end
  if r >= 0.1 then return string.format("%.2f %s/s", r, unit) end
  if r > 0 then return string.format("%.1f s/%s", 1 / r, unit:gsub("s$", "")) end
  return "- " .. unit .. "/s"
end

local Bar = {}
Bar.__index = Bar

--- A new bar; nothing is printed until the first update.
function M.new(o)
  o = o or {}
  local tty = o.tty
  if tty == nil then tty = (o.out == nil or o.out == io.stderr) and stderr_is_tty() end
  local t = M.now()
  return setmetatable({
    total = o.total, label = o.label or "", unit = o.unit or "items", out = o.out or io.stderr,
    interval = o.interval or 0.1, log_interval = o.log_interval or 10, width = o.width or 30,
    tty = tty, quiet = o.quiet, done = 0, skipped = 0, t0 = t, last_draw = -math.huge,
    first_work = nil, note = "",
  }, Bar)
end

--- Items per second of real work (skipped items excluded), and the ETA in seconds (or nil).
function Bar:rate()
  local worked = self.done - self.skipped
  local since = self.first_work or self.t0
  local dt = M.now() - since
  local r = (worked > 0 and dt > 0) and worked / dt or 0
  local eta
  if self.total and r > 0 then eta = (self.total - self.done) / r end
  return r, eta
end

--- The status line (no "\r", no newline).
function Bar:line()
  local r, eta = self:rate()
  local parts = {}
  if self.label ~= "" then parts[#parts + 1] = self.label end
  if self.total and self.total > 0 then
    local fill = math.floor(self.width * math.min(self.done, self.total) / self.total)
    parts[#parts + 1] = "[" .. string.rep("#", fill) .. string.rep(".", self.width - fill) .. "]"
    parts[#parts + 1] = string.format("%d/%d %s", self.done, self.total, self.unit)
  else
    parts[#parts + 1] = string.format("%d %s", self.done, self.unit)
  end
  if self.skipped > 0 then parts[#parts + 1] = string.format("(%d done before)", self.skipped) end
  parts[#parts + 1] = rate_text(r, self.unit)
  if self.total then
    parts[#parts + 1] = (self.done >= self.total) and ("in " .. M.format_duration(M.now() - self.t0))
                        or ("ETA " .. M.format_duration(eta))
  end
  local s = table.concat(parts, "  ")
  if self.note ~= "" then s = s .. "  " .. self.note end
  return s
end

function Bar:draw(force)
  if self.quiet then return end
  local t = M.now()
  if self.tty then
    if not force and t - self.last_draw < self.interval then return end
    local s = self:line()
    if #s > 119 then s = s:sub(1, 116) .. "..." end
    self.out:write("\r", s, "\27[K")
  else
    if not force and t - self.last_draw < self.log_interval then return end
    local key = self.done .. "|" .. self.skipped .. "|" .. self.note
    if key == self.last_key then return end   -- a log gets a line only when something moved
    self.last_key = key
    self.out:write(self:line(), "\n")
  end
  self.out:flush()
  self.last_draw = t
end

--- Sets the count of finished items (absolute); `note` (optional) is shown after the numbers.
function Bar:update(done, note)
  self.done = done
  if note then self.note = note end
  self:draw(false)
end

--- Marks the start of a piece of real work: the rate counts from the first call (so that items
-- skipped before it, and any set-up, do not dilute it); `note` names the item.
function Bar:start(note)
  if self.first_work == nil then self.first_work = M.now() end
  if note then self.note = note; self:draw(false) end
end

--- k more items finished (default 1).
function Bar:advance(k, note) self:update(self.done + (k or 1), note) end

--- k items found already done: counted, but not in the rate.
function Bar:skip(k, note)
  self.skipped = self.skipped + (k or 1)
  self.done = self.done + (k or 1)
  if note then self.note = note end
  self:draw(false)
end

--- Prints a message above the bar (the bar is redrawn after it).
function Bar:print(msg)
  if self.quiet then return end
  if self.tty then self.out:write("\r\27[K") end
  self.out:write(msg, "\n")
  if self.tty then            -- redraw the bar under the message; a log gets its next line on time
    self.last_draw = -math.huge
    self:draw(true)
  end
end

--- Draws the final state and ends the line. Returns the elapsed wall seconds.
function Bar:finish(note)
  if note then self.note = note end
  if not self.quiet then
    self:draw(true)
    if self.tty then self.out:write("\n") end
    self.out:flush()
  end
  return M.now() - self.t0
end

return M
