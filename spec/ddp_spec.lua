-- Data-parallel training on one machine: the shared-file group (sao.comm: all-reduce, barrier,
-- errors, a rank that dies), and the train stage with --nproc 2 against one process with the same
-- global batch (the same losses and weights up to float rounding), resume, and rank 0 alone
-- writing the run's files.
local sao = require "sao"
local comm = require "sao.comm"
local fs = require "sao.fs"
local clipset = require "support.clipset"
local shell = require "support.shell"
local train = require "sao.pipeline.train"

-- Three encoded clips of two songs (tiny model) in a new output folder.
local function encoded_clips()
  local out = clipset.tmpdir()
  clipset.write(out, "Band/Alpha/Alpha_01", { seconds = 3, bpm = 120, key = "A", mode = "Minor" })
  clipset.write(out, "Band/Alpha/Alpha_02", { seconds = 3, bpm = 120, key = "C", mode = "Major", hz = 262 })
  clipset.write(out, "Other/Beta/Beta_01", { seconds = 2, bpm = 90, key = "G", mode = "Major", hz = 196 })
  require("sao.pipeline.encode").run { out = out, model = "tiny", quiet = true }
  return out
end

-- topts(run, o): the train stage's options for run `run` in `out`, o's on top.
local function run_opts(out)
  return function(run, o)
    local t = { out = out, model = "tiny", quiet = true, run = run, frames = 32, checkpoint_every = 2, log_every = 1 }
    for k, v in pairs(o) do t[k] = v end
    return t
  end
end

-- Runs the train stage (2 steps of batch 1 on `out`, and the options in `extra`, Lua text) in a
-- process whose workers are started by a "sao" that fails at once: its exit status and stderr.
local function with_broken_worker(out, extra)
  local bad = out .. "/badsao"
  shell.write(bad, "#!/bin/sh\nexec ./sao -e 'error([[no GPU here]])'\n")
  os.execute("chmod +x " .. shell.q(bad))
  local code, _, err = shell.sh("SAO_BIN=" .. shell.q(bad) .. " ./sao -e " .. shell.q(
    ("require('sao.pipeline.train').run { out = %q, model = 'tiny', quiet = true, steps = 2, batch = 1, frames = 32, %s }")
      :format(out, extra)))
  return code, err
end

local function losses(path)
  local t = {}
  for _, r in ipairs(train.read_log(path)) do if not r.event then t[#t + 1] = r end end
  return t
end

describe("sao.comm", function()
  local path = comm.default_path("spec-" .. tostring(os.time()))
  teardown(function() os.remove(path) end)

  it("averages tensors across processes, bit-identically on every rank", function()
    local g = comm.create(path, 2, 8)
    assert.same({ 0, 2, 8 }, { g:rank(), g:world(), g:capacity() })
    local out = os.tmpname()
    -- rank 1 in another process: its values, then what it holds after the exchange
    local child = ([[local sao = require "sao"; local g = require("sao.comm").open(%q, 1)
      local a, b = sao.tensor { 3, 5, 0.1 }, sao.tensor { { -1, 7 } }
      g:allreduce_mean { a, b }
      local f = io.open(%q, "w"); f:write(string.format("%%.9g %%.9g %%.9g %%.9g %%.9g", a[1], a[2], a[3], b[1][1], b[1][2])); f:close()]])
      :format(path, out)
    local pid = tonumber(shell.capture("./sao -e " .. shell.q(child) .. " >/dev/null 2>&1 & echo $!"))
    g:set_pid(1, pid)
    local a, b = sao.tensor { 1, 1, 0.2 }, sao.tensor { { 1, 1 } }
    g:allreduce_mean { a, b }
    assert.same({ 2, 3 }, { a[1], a[2] })
    assert.near(0.15, a[3], 1e-7)
    assert.same({ 0, 4 }, { b[1][1], b[1][2] })
    for _ = 1, 200 do if fs.exists(out) and #fs.read(out) > 0 then break end shell.sleep_ms(10) end
    local mine = string.format("%.9g %.9g %.9g %.9g %.9g", a[1], a[2], a[3], b[1][1], b[1][2])
    assert.equal(mine, fs.read(out))
    os.remove(out)
  end)

  it("refuses what does not fit or is not f32 on the host, and a bad rank", function()
    local g = comm.create(path, 1, 4)
    assert.error_matches(function() g:allreduce_mean { sao.zeros(5) } end,
      "5 floats do not fit the group's 4 per rank")
    assert.error_matches(function() g:allreduce_mean { sao.zeros(2):to("f64") } end, "tensor 1 is f64, not f32")
    local t = sao.tensor { 1, 2 }
    g:allreduce_mean { t }                                       -- one rank: nothing to do
    assert.same({ 1, 2 }, { t[1], t[2] })
    assert.error_matches(function() comm.open(path, 1) end, "rank 1 outside 1..0")
    assert.error_matches(function() comm.open(path .. "-none", 1) end, "cannot open")
  end)

  it("a waiting rank learns at once that another rank's process is gone", function()
    local g = comm.create(path, 2, 4, { timeout = 30 })
    local pid = tonumber(shell.capture("sh -c 'exit 0' & echo $!"))
    shell.sleep_ms(100)
    g:set_pid(1, pid)
    local t0 = os.time()
    assert.error_matches(function() g:barrier() end, "rank 1 %(process %d+%) has exited")
    assert.is_true(os.time() - t0 < 5)
    assert.error_matches(function() g:barrier() end, "the group is broken")
  end)
end)

describe("train stage with --nproc", function()
  local out = encoded_clips()
  local topts = run_opts(out)
  local one, two
  setup(function()
    one = train.run(topts("one", { steps = 4, batch = 2 }))
    two = train.run(topts("two", { steps = 4, batch = 1, nproc = 2 }))
  end)

  it("two processes of batch 1 train as one process of batch 2", function()
    local la, lb = losses(out .. "/runs/one/log.jsonl"), losses(out .. "/runs/two/log.jsonl")
    assert.equal(4, #la)
    assert.equal(4, #lb)   -- rank 0 alone writes the log: one line per step
    for i = 1, 4 do
      assert.equal(i, lb[i].step)
      assert.near(la[i].loss, lb[i].loss, 1e-6 * math.abs(la[i].loss))
      assert.near(la[i].grad_norm, lb[i].grad_norm, 1e-6 * la[i].grad_norm)
      assert.near(la[i].lr, lb[i].lr, 1e-6 * la[i].lr)
    end
    local worst = 0
    for k, t in pairs(one.trainer.params) do worst = math.max(worst, t:maxdiff(two.trainer.params[k])) end
    assert.is_true(worst < 1e-5, "weights differ by " .. worst)
    -- rank 0's files only; the work folder and the group file are gone
    assert.is_true(fs.exists(out .. "/runs/two/checkpoints/step-4/state.json"))
    assert.is_true(fs.exists(out .. "/runs/two/export/model.safetensors"))
    assert.equal("", shell.capture("ls -a " .. shell.q(out .. "/runs/two") .. " | grep '^.ddp' || true"))
  end)

  it("ZeRO-1 (the default): each rank keeps the moments of its shard; the checkpoint holds them whole", function()
    local opt = two.trainer.opt
    assert.is_truthy(opt.shard)
    local total, kept = two.trainer:grad_floats(), 0
    for _, m in pairs(opt.state.m) do kept = kept + m:numel() end
    assert.equal(opt.shard.hi - opt.shard.lo, kept)
    assert.is_true(kept <= math.ceil(total / 2))
    assert.is_true(two.trainer.plan.adamw_moments <= one.trainer.plan.adamw_moments / 2 + 8)
    local a = sao.load_safetensors(out .. "/runs/one/checkpoints/step-4/optim.safetensors")
    local b = sao.load_safetensors(out .. "/runs/two/checkpoints/step-4/optim.safetensors")
    local n = 0
    for k, t in pairs(a) do
      local scale = math.max(t:abs():max(), 1e-30)
      assert.is_true(t:maxdiff(b[k]) <= 1e-4 * scale, k)
      n = n + 1
    end
    assert.equal(2 * #two.trainer.grad_names, n)
    -- the EMA copy: each rank updates its shard; a checkpoint gathers it whole
    local ea = sao.load_safetensors(out .. "/runs/one/checkpoints/step-4/ema.safetensors")
    local eb = sao.load_safetensors(out .. "/runs/two/checkpoints/step-4/ema.safetensors")
    local worst_ema = 0
    for k, t in pairs(ea) do worst_ema = math.max(worst_ema, t:maxdiff(eb[k])) end
    assert.is_true(worst_ema < 1e-5, "EMA differs by " .. worst_ema)
    assert.is_false(two.trainer.ema_stale)
    -- zero = 0: every rank all-reduces the gradients and updates every weight; the same run
    local flat = train.run(topts("flat", { steps = 4, batch = 1, nproc = 2, zero = 0 }))
    assert.is_nil(flat.trainer.opt.shard)
    local lz, lf = losses(out .. "/runs/two/log.jsonl"), losses(out .. "/runs/flat/log.jsonl")
    for i = 1, 4 do assert.near(lz[i].loss, lf[i].loss, 1e-6 * math.abs(lz[i].loss)) end
    local worst = 0
    for k, t in pairs(flat.trainer.params) do worst = math.max(worst, t:maxdiff(two.trainer.params[k])) end
    assert.is_true(worst < 1e-5, "weights differ by " .. worst)
  end)

  it("LoRA: the adapters' gradients are exchanged the same way", function()
    local a = train.run(topts("lora1", { steps = 3, batch = 2, lora_rank = 4 }))
    local b = train.run(topts("lora2", { steps = 3, batch = 1, lora_rank = 4, nproc = 2 }))
    local la, lb = losses(out .. "/runs/lora1/log.jsonl"), losses(out .. "/runs/lora2/log.jsonl")
    for i = 1, 3 do assert.near(la[i].loss, lb[i].loss, 1e-6 * math.abs(la[i].loss)) end
    local n = 0
    for k, t in pairs(a.trainer.params) do
      assert.matches("lora_[AB]", k)
      assert.is_true(t:maxdiff(b.trainer.params[k]) < 1e-6, k)
      n = n + 1
    end
    assert.is_true(n > 0)
  end)

  it("a two-process run continued from its checkpoint matches the uninterrupted one", function()
    train.run(topts("three", { steps = 2, batch = 1, nproc = 2 }))
    local r = train.run(topts("three", { steps = 4, batch = 1, nproc = 2 }))
    local la, lb = losses(out .. "/runs/two/log.jsonl"), losses(out .. "/runs/three/log.jsonl")
    assert.equal(4, #lb)
    for i = 1, 4 do assert.equal(la[i].loss, lb[i].loss) end
    for k, t in pairs(two.trainer.params) do assert.equal(0, t:maxdiff(r.trainer.params[k]), k) end
  end)

  it("stops at once, with the rank's own words, when a rank cannot start", function()
    local t0 = os.time()
    local code, err = with_broken_worker(out, "run = 'bad', nproc = 2")
    assert.are_not.equal(0, code)
    assert.matches("rank 1 %(process %d+%) has exited", err)
    assert.matches("train: rank 1 said:.-no GPU here", err)
    assert.is_true(os.time() - t0 < 20)
  end)
end)

describe("train stage over TCP (--nnodes, --node-rank, --master)", function()
  local out = encoded_clips()
  local port = 20000 + (require("ffi").C.getpid() * 7 + os.time()) % 30000
  local topts = run_opts(out)
  -- the second machine: a process of its own, started first (it retries until rank 0 listens)
  local function node1(dir, o, log)
    local fields = {}
    for k, v in pairs(topts(o.run, o)) do
      fields[#fields + 1] = ("%s = %s"):format(k, type(v) == "string" and ("%q"):format(v) or tostring(v))
    end
    fields[#fields + 1] = ("out = %q"):format(dir)
    local code = "require('sao.pipeline.train').run { " .. table.concat(fields, ", ") .. " }"
    return tonumber(shell.capture("./sao -e " .. shell.q(code) .. " >" .. shell.q(log) .. " 2>&1 & echo $!"))
  end
  local function wait(pid)   -- for the second machine's process to end (at most 60 s)
    for _ = 1, 3000 do
      if require("ffi").C.kill(pid, 0) ~= 0 then return end
      shell.sleep_ms(20)
    end
  end

  it("two machines of two processes train as one process of the global batch", function()
    local one = train.run(topts("one", { steps = 4, batch = 4 }))
    local master = "127.0.0.1:" .. port
    local o = { run = "nodes", steps = 4, batch = 1, nproc = 2, nnodes = 2, master = master }
    local log = out .. "/node1.log"
    o.node_rank = 1
    local pid = node1(out, o, log)
    o.node_rank = 0
    local r = train.run(topts("nodes", o))
    wait(pid)
    local la, lb = losses(out .. "/runs/one/log.jsonl"), losses(out .. "/runs/nodes/log.jsonl")
    assert.equal(4, #lb)
    for i = 1, 4 do
      assert.near(la[i].loss, lb[i].loss, 1e-6 * math.abs(la[i].loss))
      assert.near(la[i].grad_norm, lb[i].grad_norm, 1e-5 * la[i].grad_norm)
    end
    local worst = 0
    for k, t in pairs(one.trainer.params) do worst = math.max(worst, t:maxdiff(r.trainer.params[k])) end
    assert.is_true(worst < 1e-5, "weights differ by " .. worst)
    assert.equal("tcp", r.trainer.comm:transport())
    assert.equal(4, r.trainer.comm:world())
    assert.is_truthy(r.trainer.opt.shard)
  end)

  it("machines that would resume from different checkpoints stop with the reason", function()
    -- the second machine's copy of the output folder lacks the run: not a shared file system
    local other = out .. "/elsewhere"
    os.execute("mkdir -p " .. shell.q(other .. "/cache") .. " && cp -r " .. shell.q(out .. "/cache/latents") .. " " ..
      shell.q(other .. "/cache/"))
    local master = "127.0.0.1:" .. (port + 1)
    local o = { run = "nodes", steps = 6, batch = 1, nproc = 1, nnodes = 2, master = master, node_rank = 1,
      comm_timeout = 20 }
    local log = out .. "/node1b.log"
    local pid = node1(other, o, log)
    o.node_rank = 0
    assert.has_error(function() train.run(topts("nodes", o)) end)
    wait(pid)
    assert.matches("shared file system", fs.read(log))
  end)

  it("takes the layout from a launcher's environment (torchrun's names, SLURM's)", function()
    local gpu = require "support.gpu"
    local d = gpu.with_env({ SLURM_NNODES = "2", SLURM_NODEID = "1", MASTER_ADDR = "10.0.0.1", MASTER_PORT = "29511",
      NNODES = false, NODE_RANK = false }, function() return require("sao.pipeline.ddp").layout { nproc = 2 } end)
    assert.same({ 2, 1, "10.0.0.1:29511", 2, 4, true }, { d.nnodes, d.node_rank, d.master, d.rank, d.world, d.leader })
    d = gpu.with_env({ NNODES = "3", NODE_RANK = "2", MASTER_ADDR = "h", MASTER_PORT = false, SLURM_NNODES = false,
      SLURM_NODEID = false }, function() return require("sao.pipeline.ddp").layout { nproc = 1 } end)
    assert.same({ 3, 2, "h:29500", 2, 3 }, { d.nnodes, d.node_rank, d.master, d.rank, d.world })
    -- the options win over the environment
    d = gpu.with_env({ NNODES = "3", NODE_RANK = "2", MASTER_ADDR = "h" }, function()
      return require("sao.pipeline.ddp").layout { nproc = 1, nnodes = 1, node_rank = 0 }
    end)
    assert.same({ 1, 0, 0, 1 }, { d.nnodes, d.node_rank, d.rank, d.world })
    -- a SLURM allocation of two machines without MASTER_ADDR: one machine, as asked
    d = gpu.with_env({ SLURM_NNODES = "2", SLURM_NODEID = "1", MASTER_ADDR = false, NNODES = false }, function()
      return require("sao.pipeline.ddp").layout { nproc = 2 }
    end)
    assert.same({ 1, 0, 0, 2 }, { d.nnodes, d.node_rank, d.rank, d.world })
  end)

  it("a machine's rank that cannot start stops the group's forming at once, with its words", function()
    local t0 = os.time()
    local code, err = with_broken_worker(out,
      ("run = 'badtcp', nproc = 2, nnodes = 2, master = '127.0.0.1:%d'"):format(port + 2))
    assert.are_not.equal(0, code)
    assert.matches("one of this machine's ranks, has exited before the group formed", err)
    assert.matches("train: rank 1 said:.-no GPU here", err)
    assert.is_true(os.time() - t0 < 20)
  end)

  it("refuses a layout it cannot run", function()
    assert.error_matches(function() train.run(topts("x", { steps = 1, nnodes = 2 })) end, "needs %-%-master HOST:PORT")
    assert.error_matches(function() train.run(topts("x", { steps = 1, nnodes = 2, node_rank = 2, master = "h:1" })) end,
      "%-%-node%-rank 2: expected 0..1")
    assert.error_matches(function() train.run(topts("x", { steps = 1, nnodes = 2, master = "nohost" })) end,
      "expected HOST:PORT")
  end)
end)
