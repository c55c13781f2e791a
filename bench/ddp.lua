-- bench/ddp.lua — data-parallel training on one machine (`--nproc`) against one process with the
-- same global batch, both with all the cores: the train stage on the tiny model and a tiny clip
-- set, 30 steps of a global batch of 4 x 128 latent frames, as one JSON line per exchange
-- (ZeRO-1, the default, and --zero 0's all-reduce):
--   {"bench":"ddp","zero":1,"nproc":N,"one_process_s":…,"nproc_s":…,"ratio":one/nproc (> 1: --nproc
--    wins),"exchange_floats":…,"threads":…}
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
-- each configuration twice, interleaved, keeping the faster run (the first run of all warms the caches)
local best, floats = {}, nil
for rep = 1, 2 do
  for _, name in ipairs { "one", "zero1", "zero0" } do
    local o = name == "one" and { batch = 4 } or { batch = 4 / nproc, nproc = nproc, zero = tonumber(name:sub(-1)) }
    local t, r = run(name .. "-" .. rep, o)
    best[name] = math.min(best[name] or math.huge, t)
    floats = floats or r.trainer:grad_floats()
  end
end
for _, zero in ipairs { 1, 0 } do
  local tn = best["zero" .. zero]
  print(cjson.encode { bench = "ddp", zero = zero, nproc = nproc, one_process_s = best.one, nproc_s = tn,
    ratio = best.one / tn, exchange_floats = floats, threads = threads, global_batch = 4, steps = 30 })
end
os.execute("rm -rf '" .. out .. "'")
