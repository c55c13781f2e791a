-- bench/vae.lua — Oobleck VAE decode with SAO's full decoder shape (random weights): seconds of
-- compute per second of audio, the ratio to real time, GFLOP/s, and the peak resident memory of
-- a chunked decode (SAO chunking: 128 frames, overlap 32). One JSON line per run.
--
--   ./sao bench/vae.lua                 10 s of audio (216 latent frames), chunked
--   SAO_BENCH_VAE_SECONDS=47 ./sao bench/vae.lua      the 47 s case of the issue (~5 TFLOP)
--   SAO_BENCH_VAE_UNCHUNKED=1 ...       also the whole decode (3 MiB of workspace per frame)
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"

ffi.cdef [[
int clock_gettime(int clk, void *ts);
struct sao_bench_rusage { long utime[2]; long stime[2]; long maxrss; long rest[14]; };
int getrusage(int who, struct sao_bench_rusage *u);
]]

local function now()
  local t = ffi.new("long[2]")
  ffi.C.clock_gettime(1, t)
  return tonumber(t[0]) + tonumber(t[1]) * 1e-9
end

local function peak_rss_mb()
  local u = ffi.new("struct sao_bench_rusage")
  ffi.C.getrusage(0, u)
  return tonumber(u.maxrss) / 1024
end

local SR = 44100
local seconds = tonumber(os.getenv("SAO_BENCH_VAE_SECONDS") or "10")
local cfg = {}
for k, v in pairs(sao.vae.SAO) do cfg[k] = v end
cfg.parts = "decoder"
local vae = sao.vae.new(cfg):init_random { seed = 1 }
local L = math.ceil(seconds * SR / vae.ratio)
local audio_s = L * vae.ratio / SR

-- analytic conv FLOPs of one decode of L frames (2 per multiply-add)
local function decode_flops(c, frames)
  local w = { c.channels }
  for i, m in ipairs(c.c_mults) do w[i + 1] = c.channels * m end
  local n, t = #c.strides, frames
  local f = 2 * c.latent_dim * w[n + 1] * 7 * t
  for j = n, 1, -1 do
    local s = c.strides[j]
    f = f + 2 * w[j + 1] * w[j] * 2 * s * t               -- transposed conv (dense over the input)
    t = t * s
    f = f + 3 * 2 * w[j] * w[j] * (7 + 1) * t             -- three residual units
  end
  return f + 2 * w[1] * c.out_channels * 7 * t
end

local z = sao.randn { { 1, cfg.latent_dim, L }, seed = 2 }
local runs = { { chunked = true, chunk = sao.vae.CHUNK, overlap = sao.vae.OVERLAP } }
if os.getenv("SAO_BENCH_VAE_UNCHUNKED") == "1" then runs[2] = { chunked = false } end
for _, opts in ipairs(runs) do
  local t0 = now()
  local y = vae:decode(z, opts)
  local dt = now() - t0
  -- the chunked decode recomputes the overlaps: count the frames it actually decodes
  local frames = L
  if opts.chunked and L > opts.chunk then
    local hop, n, s = opts.chunk - opts.overlap, 0, 0
    while s + opts.chunk <= L do n = n + 1; s = s + hop end
    if (s - hop) + opts.chunk ~= L then n = n + 1 end
    frames = n * opts.chunk
  end
  print(cjson.encode {
    bench = "vae_decode", model = "sao-1.0 decoder shape, random weights", frames = L,
    audio_seconds = audio_s, chunked = opts.chunked, chunk = opts.chunk, overlap = opts.overlap,
    threads = sao.threads(), seconds = dt, seconds_per_audio_second = dt / audio_s,
    realtime_factor = audio_s / dt, gflops = decode_flops(cfg, frames) / dt / 1e9,
    workspace_mb = vae:workspace_bytes("decode", L, opts.chunked and opts.chunk or nil) / 2 ^ 20,
    peak_rss_mb = peak_rss_mb(),
  })
  y:free()
  vae:release_workspace()
end
