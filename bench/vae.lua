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
]]

local function now()
  local t = ffi.new("long[2]")
  ffi.C.clock_gettime(1, t)
  return tonumber(t[0]) + tonumber(t[1]) * 1e-9
end

local function peak_rss_mb() return require("sao.progress").peak_rss() / 2 ^ 20 end

local SR = 44100
local seconds = tonumber(os.getenv("SAO_BENCH_VAE_SECONDS") or "10")
local cfg = {}
for k, v in pairs(sao.vae.SAO) do cfg[k] = v end
cfg.parts = "decoder"
local vae = sao.vae.new(cfg):init_random { seed = 1 }
local L = math.ceil(seconds * SR / vae.ratio)
local audio_s = L * vae.ratio / SR

local decode_flops = sao.vae.decode_flops

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
