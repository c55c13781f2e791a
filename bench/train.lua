-- bench/train.lua — one training step (forward + backward + AdamW + EMA) of a mid-size DiT
-- (embed 512, depth 8, 8 heads, 256 latent frames, batch 2, 130 context tokens of 256) on the CPU:
-- ms/step, achieved GFLOP/s (3x the forward's matmul and attention FLOPs) and its fraction of this
-- machine's sgemm GFLOP/s measured in the same run; the trainer's memory plan vs the peak RSS.
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now

local peak_rss = require("sao.progress").peak_rss

local cfg = { io_channels = 64, embed_dim = 512, depth = 8, num_heads = 8, cond_token_dim = 256, global_cond_dim = 512 }
local B, T, L = 2, 256, 130
local rss0 = peak_rss()
local dit = sao.dit.new(cfg)
dit:load(require("sao.model").random_params(dit:params(), 1))
local items = {}
for i = 1, 4 do
  items[i] = { latents = sao.randn { { 64, T }, seed = i }, cross = sao.randn { { L, 256 }, seed = 10 + i },
    global = sao.randn { { 512 }, seed = 20 + i } }
end
local tr = sao.train.new { dit = dit, data = sao.data.memory(items, { batch = B }), batch = B, frames = T, context = L,
  quiet = true, schedule = "constant" }
tr:step()                                   -- warm-up
local best = math.huge
for _ = 1, 3 do
  local t0 = now()
  tr:step()
  best = math.min(best, now() - t0)
end

local E, N, Dc, F = cfg.embed_dim, T + 1, cfg.cond_token_dim, 4 * cfg.embed_dim
local per_layer = B * (2 * N * E * 3 * E + 2 * N * E * E + 4 * N * N * E + 2 * N * E * E + 2 * L * Dc * 2 * Dc +
  4 * N * L * E + 2 * N * E * E + 2 * N * E * 2 * F + 2 * N * F * E)
local fwd = cfg.depth * per_layer + B * 2 * N * E * cfg.io_channels * 2 + B * 2 * L * Dc * Dc * 2
local a, b = sao.randn { 1024, 1024, seed = 4 }, sao.randn { 1024, 1024, seed = 5 }
local r0 = sao.matmul(a, b); r0:free()           -- warm-up: threads awake, buffers allocated
local t_mm = math.huge
for _ = 1, 5 do                                   -- best of 5, as the train step's best of its steps
  local t0 = now()
  local r = sao.matmul(a, b)
  r:free()
  t_mm = math.min(t_mm, now() - t0)
end
local sgemm = 2 * 1024 ^ 3 / t_mm / 1e9
local gflops = 3 * fwd / best / 1e9
print(cjson.encode {
  bench = "train_step", config = "E512 depth8 H8 T256 B2 L130", threads = sao.threads(), ms_per_step = best * 1000,
  gflops = gflops, sgemm_gflops = sgemm, ratio_to_sgemm = gflops / sgemm, goal_ratio = 0.5,
  planned_mb = tr.plan.total / 2 ^ 20, peak_rss_mb = peak_rss() / 2 ^ 20, rss_before_mb = rss0 / 2 ^ 20,
})
