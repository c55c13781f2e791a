-- bench/dit.lua — DiT forward on a mid-size config (embed 512, depth 8, 8 heads, 256 latent
-- frames, batch 2, 130 context tokens of 256) with random weights: GFLOP/s, and the fraction of
-- this machine's sgemm GFLOP/s (measured in the same run, 1024^3 through OpenBLAS) it reaches.
-- One JSON line.
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now

local cfg = { io_channels = 64, embed_dim = 512, depth = 8, num_heads = 8, cond_token_dim = 256, global_cond_dim = 512 }
local B, T, L = 2, 256, 130
local dit = sao.dit.new(cfg)
dit:load(require("sao.model").random_params(dit:params(), 1))
local x = sao.randn { { B, cfg.io_channels, T }, seed = 1 }
local cross = sao.randn { { B, L, cfg.cond_token_dim }, seed = 2 }
local global = sao.randn { { B, cfg.global_cond_dim }, seed = 3 }
local t = sao.full({ B }, 0.5)

local function best_of(n, f)
  f()
  local best = math.huge
  for _ = 1, n do
    local t0 = now()
    f()
    best = math.min(best, now() - t0)
  end
  return best
end

-- FLOPs of one forward (matmuls and attention; elementwise work left out)
local E, N, Dc, F = cfg.embed_dim, T + 1, cfg.cond_token_dim, 4 * cfg.embed_dim
local per_layer = B * (2 * N * E * 3 * E + 2 * N * E * E + 4 * N * N * E      -- self-attention
  + 2 * N * E * E + 2 * L * Dc * 2 * Dc + 4 * N * L * E + 2 * N * E * E       -- cross-attention
  + 2 * N * E * 2 * F + 2 * N * F * E)                                         -- SwiGLU feed-forward
local flops = cfg.depth * per_layer + B * 2 * N * E * cfg.io_channels * 2 + B * 2 * L * Dc * Dc * 2

local t_dit = best_of(3, function() local o = dit:forward(x, t, cross, global); o:free() end)
local a, b = sao.randn { 1024, 1024, seed = 4 }, sao.randn { 1024, 1024, seed = 5 }
do local r0 = sao.matmul(a, b); r0:free() end    -- warm-up: threads awake, buffers allocated
local t_mm = best_of(5, function() local r = sao.matmul(a, b); r:free() end)
local sgemm = 2 * 1024 ^ 3 / t_mm / 1e9
local gflops = flops / t_dit / 1e9
print(cjson.encode {
  bench = "dit_forward", config = "E512 depth8 H8 T256 B2 L130", threads = sao.threads(), ms = t_dit * 1000,
  gflops = gflops, sgemm_gflops = sgemm, ratio_to_sgemm = gflops / sgemm, goal_ratio = 0.6,
})

-- CFG forward (batch doubled): the all-zero unconditional half skips its cross-attention
-- (SAO_SPEC 5.5); the comparator is the same call with that zero context given explicitly, which
-- runs it. Expected saving here: the cross-attention's share of the doubled batch's FLOPs.
local zero = sao.zeros(cross:shape())
local t_skip = best_of(3, function() local o = dit:forward(x, t, cross, global, { cfg_scale = 7 }); o:free() end)
local t_full = best_of(3, function()
  local o = dit:forward(x, t, cross, global, { cfg_scale = 7, uncond = zero }); o:free()
end)
local cross_flops = cfg.depth * B * (2 * N * E * E + 2 * L * Dc * 2 * Dc + 4 * N * L * E + 2 * N * E * E)
  + B * 2 * L * Dc * Dc * 2
print(cjson.encode {
  bench = "dit_cfg_forward", config = "E512 depth8 H8 T256 B2(x2) L130", threads = sao.threads(),
  ms = t_skip * 1000, ms_zero_context_run = t_full * 1000, speedup = t_full / t_skip,
  flops_saved_fraction = cross_flops / (2 * flops),
})
