-- bench/ddp.lua — data-parallel training on one machine (`--nproc`) against one process with the
-- same global batch, both with all the cores: the train stage on the tiny model and a tiny clip
-- set, 30 steps of a global batch of 4 x 128 latent frames, as one JSON line:
--   {"bench":"ddp","nproc":N,"one_process_s":…,"nproc_s":…,"ratio":one/nproc (> 1: --nproc wins),
--    "exchange_floats":…,"threads":…}
-- Times include each run's start (model load, and for --nproc the other processes' start), which
-- is what a user waits for. Run: ./sao bench/ddp.lua [NPROC]   (default: the core count, at least 2)
package.path = "spec/?.lua;" .. package.path
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now
local clipset = require "support.clipset"
local train = require "sao.pipeline.train"

local nproc = tonumber(arg and arg[1]) or math.max(2, sao.threads())
local out = clipset.tmpdir()
for i = 1, 4 do clipset.write(out, ("Band/S%d/S%d_01"):format(i, i), { seconds = 4, bpm = 90 + 10 * i, hz = 110 * i }) end
require("sao.pipeline.encode").run { out = out, model = "tiny", quiet = true }
local threads = sao.threads()
local function run(name, o)
  sao.threads(threads)
  local t0 = now()
  for k, v in pairs { out = out, model = "tiny", quiet = true, run = name, steps = 30, frames = 128,
                      checkpoint_every = 1000, log_every = 10 } do o[k] = v end
  local r = train.run(o)
  return now() - t0, r
end
local t1 = run("one", { batch = 4 })
local tn, r = run("many", { batch = 4 / nproc, nproc = nproc })
print(cjson.encode { bench = "ddp", nproc = nproc, one_process_s = t1, nproc_s = tn, ratio = t1 / tn,
  exchange_floats = r.trainer:grad_floats() + 2, threads = threads, global_batch = 4, steps = 30 })
os.execute("rm -rf '" .. out .. "'")
