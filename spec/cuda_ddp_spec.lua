-- Data-parallel training on GPUs (tag: gpu): the train stage with --device cuda --nproc 2 against one
-- GPU process of the same global batch, exchanging through host copies and through NCCL (a real
-- one on a GPU machine; spec/support/cuda_emu's fake under the emulator). Without a usable GPU every
-- test here is pending (skipped), never passed.
local sao = require "sao"
local clipset = require "support.clipset"
local train = require "sao.pipeline.train"
local gpu = require "support.gpu"
local gpu_it = gpu.it(it, pending)

local function losses(path)
  local t = {}
  for _, r in ipairs(train.read_log(path)) do if not r.event then t[#t + 1] = r end end
  return t
end

describe("data parallel on the GPU #gpu", function()
  local out
  local function dataset()
    if out then return out end
    out = clipset.tmpdir()
    clipset.write(out, "Band/Alpha/Alpha_01", { seconds = 3, bpm = 120, key = "A", mode = "Minor" })
    clipset.write(out, "Other/Beta/Beta_01", { seconds = 2, bpm = 90, key = "G", mode = "Major", hz = 196 })
    require("sao.pipeline.encode").run { out = out, model = "tiny", quiet = true }
    return out
  end
  local function topts(run, o)
    local t = { out = dataset(), model = "tiny", quiet = true, run = run, frames = 16, checkpoint_every = 2, log_every = 1,
      device = "cuda", precision = "fp32", steps = 2 }
    for k, v in pairs(o) do t[k] = v end
    return t
  end
  local one
  local function single()
    one = one or train.run(topts("one", { batch = 2 }))
    return one
  end
  local function same_run(r, tol)
    local a = single()
    local la, lb = losses(out .. "/runs/one/log.jsonl"), losses(r.run_dir .. "/log.jsonl")
    assert.equal(#la, #lb)
    for i = 1, #la do assert.near(la[i].loss, lb[i].loss, tol * math.abs(la[i].loss)) end
    local worst = 0
    for k, t in pairs(a.trainer.params) do worst = math.max(worst, t:to("cpu"):maxdiff(r.trainer.params[k]:to("cpu"))) end
    assert.is_true(worst < 10 * tol, "weights differ by " .. worst)
  end

  gpu_it("two GPU processes of batch 1, exchanging through host copies, train as one of batch 2", function()
    local r = train.run(topts("host", { batch = 1, nproc = 2, comm_backend = "host" }))
    assert.is_nil(r.trainer.nccl)
    assert.is_truthy(r.trainer.opt.shard)
    assert.equal("cuda", r.trainer.params[next(r.trainer.params)]:device())
    same_run(r, 1e-5)
  end)

  gpu_it("bf16: every rank's bf16 weight copy follows the gathered weights (not only its own shard)", function()
    -- a stale copy of the other rank's shard would run step 2 and 3 on last step's weights (about 1e-3 off)
    local a = train.run(topts("bf16one", { batch = 2, precision = "bf16", steps = 3 }))
    local b = train.run(topts("bf16two", { batch = 1, nproc = 2, comm_backend = "host", precision = "bf16", steps = 3 }))
    local la, lb = losses(a.run_dir .. "/log.jsonl"), losses(b.run_dir .. "/log.jsonl")
    assert.equal(3, #lb)
    for i = 1, 3 do assert.near(la[i].loss, lb[i].loss, 1e-4 * math.abs(la[i].loss)) end
  end)

  gpu_it("the same through NCCL when it is usable", function()
    local ok, why = require("sao.nccl").available()
    if not ok then return pending("NCCL is not usable here: " .. tostring(why)) end
    if not gpu.emulated() and sao.C.sao_cuda_device_count() < 2 then
      return pending("NCCL needs a GPU per rank: this machine has one")
    end
    local r = train.run(topts("nccl", { batch = 1, nproc = 2, comm_backend = "nccl" }))
    assert.is_truthy(r.trainer.nccl)
    same_run(r, 1e-5)
  end)
end)
