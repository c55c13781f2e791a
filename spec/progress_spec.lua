-- sao.progress: the shared progress bar (terminal redraws, log lines, rate without skipped items).
local progress = require "sao.progress"

local function sink()
  local s = { text = "" }
  function s:write(...) for _, x in ipairs { ... } do self.text = self.text .. x end end
  function s:flush() end
  return s
end

describe("progress", function()
  it("formats durations", function()
    assert.equal("45s", progress.format_duration(45))
    assert.equal("3m05s", progress.format_duration(185))
    assert.equal("2h14m", progress.format_duration(2 * 3600 + 14 * 60 + 10))
    assert.equal("?", progress.format_duration(nil))
    assert.equal("?", progress.format_duration(0 / 0))
  end)

  it("has a monotonic wall clock", function()
    local a = progress.now()
    local x = 0
    for i = 1, 1e6 do x = x + i end
    assert.is_true(progress.now() >= a)
    assert.is_true(x > 0)
  end)

  it("redraws one line on a terminal and ends it at finish", function()
    local out = sink()
    local bar = progress.new { total = 4, label = "test", unit = "songs", out = out, tty = true, interval = 0 }
    bar:start("first")
    bar:advance(1)
    bar:advance(1, "third")
    bar:finish()
    assert.matches("^\rtest  %[", out.text)
    assert.matches("2/4 songs", out.text)
    assert.matches("third", out.text)
    assert.matches("\n$", out.text)
    local _, lines = out.text:gsub("\n", "")
    assert.equal(1, lines)
  end)

  it("writes plain lines to a log, without repeating itself", function()
    local out = sink()
    local bar = progress.new { total = 2, label = "log", unit = "files", out = out, tty = false, log_interval = 0 }
    bar:advance(1)
    bar:draw(true)           -- nothing new: no second identical line
    bar:advance(1)
    bar:finish()
    assert.is_nil(out.text:find("\r"))
    local lines = {}
    for l in out.text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(2, #lines)
    assert.matches("^log  %[###############...............%]  1/2 files", lines[1])
    assert.matches("2/2 files .* in %d+s", lines[2])
  end)

  it("leaves work done by an earlier run out of the rate and the ETA", function()
    local bar = progress.new { total = 100, out = sink(), tty = false, quiet = true }
    bar:skip(90)
    local r, eta = bar:rate()
    assert.equal(0, r)
    assert.is_nil(eta)
    assert.matches("%(90 done before%)", bar:line())
    bar.first_work = progress.now() - 10     -- pretend the real work began 10 s ago
    bar:advance(5)
    r, eta = bar:rate()
    assert.is_true(math.abs(r - 0.5) < 0.01, "rate " .. r)
    assert.is_true(math.abs(eta - 10) < 0.5, "eta " .. eta)
  end)

  it("prints messages above the bar, and nothing when quiet", function()
    local out = sink()
    local bar = progress.new { total = 1, out = out, tty = true, interval = 0 }
    bar:print("a warning")
    assert.matches("a warning\n", out.text)
    local log = sink()                       -- a log file: the message only, the bar waits its turn
    local lbar = progress.new { total = 10, out = log, tty = false, log_interval = 60 }
    lbar:advance(1)
    local before = log.text
    lbar:print("step 1")
    assert.equal(before .. "step 1\n", log.text)
    local q = sink()
    local quiet = progress.new { total = 1, out = q, quiet = true }
    quiet:print("x")
    quiet:advance(1)
    quiet:finish()
    assert.equal("", q.text)
  end)
end)
