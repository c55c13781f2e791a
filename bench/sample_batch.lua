-- bench/sample_batch.lua — several clips per generate call (generate{seeds = ...}, the sample stage's
-- --sample-batch) against one clip per call, on this machine's CPU, in the same run:
--   (a) "generate_small": Model:generate of 4 clips (tiny.json at 256 latent frames, 8 steps, CFG 7,
--       VAE decode included), 4 calls against 1 call of 4 prompts;
--   (b) "sampling_mid": the sampling loop alone on bench/dit.lua's mid-size DiT (embed 512, depth 8,
--       256 frames, 130 context tokens, 4 steps, CFG 7), 4 loops of batch 1 against 1 of batch 4.
-- ratio = the singles' time / the batch's (> 1: batching pays). Also the largest difference between a
-- batched clip and its single generation (batch-size rounding of the GEMMs; another draw would
-- differ by ~1). JSON lines.
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now

local N = 4
local seeds, prompts = {}, {}
for i = 1, N do seeds[i], prompts[i] = i, ({ "warm piano", "fast drums", "deep bass", "bright strings" })[i] end

local function emit(t)
  t.bench = "sample_batch"
  t.threads = sao.threads()
  print(cjson.encode(t))
  io.stdout:flush()
end

-- (a) the whole generation on the small config
do
  local config = cjson.decode(require("sao.fs").read(sao.root .. "/checkpoints/tiny.json"))
  config.sample_size = 256 * config.model.pretransform.config.downsampling_ratio
  local m = sao.load_model(config, { quiet = true, seed = 1 })
  local g = { steps = 8, cfg_scale = 7, progress = false, seconds = m:window_frames() * m.c.ratio / m:sample_rate() }
  local function gen(extra)
    local o = {}
    for k, v in pairs(g) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return m:generate(o)
  end
  gen { prompt = "warm-up", seed = 9 }
  local t0 = now()
  local singles = {}
  for i = 1, N do singles[i] = gen { prompt = prompts[i], seed = seeds[i] } end
  local single_s = now() - t0
  t0 = now()
  local batch = gen { prompt = prompts, seeds = seeds }
  local batch_s = now() - t0
  local diff = 0
  for i = 1, N do diff = math.max(diff, singles[i]:maxdiff(batch:narrow(1, i, 1))) end
  emit { what = "generate_small", clips = N, frames = m:window_frames(), steps = g.steps, single_seconds = single_s,
         batch_seconds = batch_s, ratio = single_s / batch_s, max_diff_to_single = diff }
end

-- (b) the sampling loop alone on a mid-size DiT
do
  local cfg = { io_channels = 64, embed_dim = 512, depth = 8, num_heads = 8, cond_token_dim = 256, global_cond_dim = 512 }
  local dit = sao.dit.new(cfg)
  dit:load(require("sao.model").random_params(dit:params(), 1))
  local T, L, STEPS = 256, 130, 4
  local function loop(first, B)
    local s = {}
    for b = 1, B do s[b] = seeds[first + b - 1] end
    local cross = sao.randn { { 1, L, cfg.cond_token_dim }, seed = 2 }:expand(B, L, cfg.cond_token_dim):contiguous()
    local global = sao.randn { { 1, cfg.global_cond_dim }, seed = 3 }:expand(B, cfg.global_cond_dim):contiguous()
    return sao.sampler.sample {
      model = function(x, t) return dit:forward(x, sao.full({ B }, t), cross, global, { cfg_scale = 7 }) end,
      noise = sao.sampler.draw(sao.empty(B, cfg.io_channels, T), s, 0), seeds = s, steps = STEPS,
    }
  end
  loop(1, 1)
  local t0 = now()
  local singles = {}
  for i = 1, N do singles[i] = loop(i, 1) end
  local single_s = now() - t0
  t0 = now()
  local batch = loop(1, N)
  local batch_s = now() - t0
  local diff = 0
  for i = 1, N do diff = math.max(diff, singles[i]:maxdiff(batch:narrow(1, i, 1))) end
  emit { what = "sampling_mid", clips = N, config = "E512 depth8 H8 T256 L130", steps = STEPS,
         single_seconds = single_s, batch_seconds = batch_s, ratio = single_s / batch_s, max_diff_to_single = diff }
end
