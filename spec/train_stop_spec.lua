-- A graceful stop of the train stage: SIGTERM (a cluster's preemption) or a first Ctrl-C lets the
-- step finish, saves a checkpoint and stops with a message; a re-run resumes there. In a
-- data-parallel run a signal to any rank stops every rank at the same step. Outside training
-- SIGTERM still ends the process at once.
local fs = require "sao.fs"
local clipset = require "support.clipset"
local shell = require "support.shell"
local train = require "sao.pipeline.train"

-- starts `code` in a sao process of its own; returns its pid, and the files holding its stderr and,
-- once it has ended, its exit status
local function start(dir, name, code)
  local pidf, err, status = dir .. "/" .. name .. ".pid", dir .. "/" .. name .. ".err", dir .. "/" .. name .. ".status"
  local lua = ("local f = io.open(%q, 'w'); local ffi = require 'ffi'; pcall(ffi.cdef, 'int getpid(void);'); " ..
    "f:write(ffi.C.getpid()); f:close(); %s"):format(pidf, code)
  os.execute(("(./sao -e %s 2>%s; echo $? > %s) >/dev/null &"):format(shell.q(lua), shell.q(err), shell.q(status)))
  for _ = 1, 500 do
    local p = tonumber(fs.read(pidf) or "")
    if p then return p, err, status end
    shell.sleep_ms(10)
  end
  error("the process did not start: " .. (fs.read(err) or ""))
end

local function wait_for(what, f, seconds)
  for _ = 1, (seconds or 60) * 50 do
    local v = f()
    if v then return v end
    shell.sleep_ms(20)
  end
  error("timed out waiting for " .. what)
end

local function steps_logged(path)
  local n = 0
  for _, r in ipairs(fs.exists(path) and train.read_log(path) or {}) do if not r.event then n = n + 1 end end
  return n
end

describe("train stage: graceful stop", function()
  local out = clipset.tmpdir()
  clipset.write(out, "Band/Alpha/Alpha_01", { seconds = 3, bpm = 120, key = "A", mode = "Minor" })
  clipset.write(out, "Other/Beta/Beta_01", { seconds = 2, bpm = 90, key = "G", mode = "Major", hz = 196 })
  require("sao.pipeline.encode").run { out = out, model = "tiny", quiet = true }
  local function run_code(run, extra)
    return ("require('sao.pipeline.train').run { out = %q, model = 'tiny', quiet = true, run = %q, steps = 100000, " ..
      "batch = 1, frames = 32, checkpoint_every = 100000, log_every = 1%s }"):format(out, run, extra or "")
  end

  local function stops_on(signal, run, extra)
    local pid, err, status = start(out, run, run_code(run, extra))
    local log = out .. "/runs/" .. run .. "/log.jsonl"
    wait_for("three steps", function() return steps_logged(log) >= 3 end)
    os.execute(("kill -%s %d"):format(signal, pid))
    local code = wait_for("the exit", function() return tonumber(fs.read(status) or "") end)
    local said = fs.read(err)
    assert.are_not.equal(0, code)
    local n = tonumber(said:match("stopped at step (%d+) of 100000"))
    assert.is_truthy(n, said)
    assert.matches("run the same command to resume", said)
    -- the checkpoint of that step, and the log's last event
    assert.is_true(fs.exists(("%s/runs/%s/checkpoints/step-%d/state.json"):format(out, run, n)))
    local recs = train.read_log(log)
    assert.same({ step = n, event = "stopped", reason = "signal" }, recs[#recs])
    assert.equal(n, steps_logged(log))
    return n
  end

  it("SIGTERM: the step finishes, a checkpoint is saved, and a re-run resumes there", function()
    local n = stops_on("TERM", "term")
    local r = train.run { out = out, model = "tiny", quiet = true, run = "term", steps = n + 2, batch = 1, frames = 32,
      checkpoint_every = 100000, log_every = 1 }
    assert.equal(n + 2, r.step)
    local resumed
    for _, rec in ipairs(train.read_log(out .. "/runs/term/log.jsonl")) do
      if rec.event == "resumed" then resumed = rec end
    end
    assert.matches("step%-" .. n .. "$", resumed.from)
  end)

  it("a first Ctrl-C (SIGINT) stops the same way", function()
    stops_on("INT", "int")
  end)

  it("two processes: a signal to rank 0 stops both at the same step, with a whole checkpoint", function()
    local n = stops_on("TERM", "ddp", ", nproc = 2")
    local o = require("sao").load_safetensors(("%s/runs/ddp/checkpoints/step-%d/optim.safetensors"):format(out, n))
    local m = require("sao").load_safetensors(("%s/runs/ddp/checkpoints/step-%d/model.safetensors"):format(out, n))
    for k, t in pairs(m) do assert.equal(t:numel(), o["m/" .. k]:numel(), k) end   -- ZeRO-1's shards gathered
    -- the other rank ended too, and the run's work folder is gone
    assert.equal("", shell.capture("ls -a " .. shell.q(out .. "/runs/ddp") .. " | grep '^.ddp' || true"))
    local r = train.run { out = out, model = "tiny", quiet = true, run = "ddp", steps = n + 1, batch = 1, frames = 32,
      checkpoint_every = 100000, log_every = 1, nproc = 2 }
    assert.equal(n + 1, r.step)
  end)

  it("outside training SIGTERM still ends the process at once", function()
    local pid, _, status = start(out, "plain", "require('sao.http').sleep(30)")
    os.execute("kill -TERM " .. pid)
    assert.equal(143, wait_for("the exit", function() return tonumber(fs.read(status) or "") end, 10))
  end)
end)
