-- bench/gpu_sample.lua — Stable Audio Open 1.0 generation on the GPU at its real shapes, random
-- weights: (a) one DiT forward with CFG (batch 1 doubled to 2; 1024 latent frames = 47.55 s of
-- audio; 130 context tokens = 128 T5 + seconds_start + seconds_total), (b) the 100-step
-- dpmpp-3m-sde sampling loop with CFG 7 through sao.sampler, (c) the VAE decode of the window
-- (sized to the device's memory as Model:generate does: one pass when it fits; then on each conv
-- path, cuDNN and im2col + GEMMs, what = "vae_decode_conv_backends_47s", ratio = gemm / cudnn), and (b) + (c)
-- against the goal (<= 1.5 s on an H100; what = "generate_47s"), and one attention forward at SAO's
-- self- and cross-attention shapes on the bf16 tensor-core kernel against the cuBLAS path (what =
-- "attention_bf16_self_47s" / "_cross_47s", ratio = cublas / bf16 kernel; and cuDNN's fused SDPA,
-- sao.cuda.attention_impl("cudnn": cudnn_ms, cudnn_ratio = bf16 kernel / cuDNN) with the CFG forward
-- on each (what = "dit_forward_cfg_attention_47s"). One JSON line per measurement,
-- with the device name and the peak of sao's device memory. sao's linear layers multiply in
-- $SAO_BENCH_PRECISION (bf16, load_model's GPU default; or tf32, fp32). When python3 has torch
-- (with CUDA), bench/torch_dit.py runs the same shapes in fp32 and bf16 and the forward and
-- sampling lines get torch_seconds (the dtype matching sao's products: bf16 for bf16, else fp32)
-- and ratio = torch / sao (> 1: sao is faster), plus the other dtype's time;
-- a small-config forward on the SAME weights checks that both compute the same function
-- (what = "parity_torch"). Without torch the lines say "torch": "unavailable (...)".
--
--   ./sao bench/gpu_sample.lua                      needs a GPU; otherwise one "skipped" line, exit 0
--   SAO_BENCH_SMALL=1 ./sao bench/gpu_sample.lua    the same code, small config (tiny.json, 256 frames), CPU
--                                                   (with SAO_BENCH_DEVICE=cuda: on the GPU, a quick smoke run)
--   SAO_BENCH_FRAMES=N                              the small config's latent frames (default 256)
--   SAO_BENCH_TORCH=0                               no PyTorch comparison
--   SAO_BENCH_TORCH_BF16=0|1                        also time torch in bf16 (default: on for the GPU run)
--   SAO_BENCH_TORCH_TIMEOUT=S                       limit of the torch_dit.py run (default 300 s)
--   SAO_BENCH_STEPS=N                               sampling steps (default 100)
--   SAO_BENCH_REPEAT=N                              timed DiT forwards after the warm-up (default 3)
--   SAO_BENCH_DEVICE=cpu                            SAO 1.0's shapes on the CPU (slow: minutes per forward)
--
-- sao.cuda.memory() has no reset: peak_mb is the high-water mark since the process started, and
-- new_peak says whether this measurement raised it. That is why the VAE is measured first (its peak
-- then shows), and the DiT after its workspace is released. Order: setup, VAE, forward, sampling,
-- generate (printed at once), then the torch run (so sao's figures come first; the forward and
-- sampling lines, which carry torch's times, are printed after it), then the parity check.
-- A full run on one GPU: about 1-3 minutes plus sao's own sampling time (estimate).
local sao = require "sao"
local cjson = require "cjson"
local now = require("sao.progress").now

local SMALL = os.getenv("SAO_BENCH_SMALL") == "1"
local PRECISION = os.getenv("SAO_BENCH_PRECISION") or "bf16"
local STEPS = tonumber(os.getenv("SAO_BENCH_STEPS") or "100")
local REPEAT = tonumber(os.getenv("SAO_BENCH_REPEAT") or "3")
local CFG_SCALE = 7
local GOAL_S = 1.5      -- 100-step CFG sampling at 47 s + VAE decode, on an H100
local SUFFIX = SMALL and "small" or "47s"

-- one JSON line: bench and what first, then the other fields by name
local function emit(t)
  local keys = {}
  for k in pairs(t) do if k ~= "bench" and k ~= "what" then keys[#keys + 1] = k end end
  table.sort(keys)
  if t.what then table.insert(keys, 1, "what") end
  local parts = { '"bench":"gpu_sample"' }
  for _, k in ipairs(keys) do parts[#parts + 1] = cjson.encode(k) .. ":" .. cjson.encode(t[k]) end
  print("{" .. table.concat(parts, ",") .. "}")
  io.stdout:flush()
end

-- ---- where it runs ----------------------------------------------------------------------------
local device, gpu
if os.getenv("SAO_BENCH_DEVICE") == "cpu" or (SMALL and os.getenv("SAO_BENCH_DEVICE") ~= "cuda") then
  device, gpu = "cpu", "cpu"
else
  local why = sao.cuda.unavailable()
  if why or not sao.cuda.available() then
    emit { skipped = why or "no CUDA device" }
    return
  end
  device = "cuda"
  gpu = sao.cuda.devices()[1].name
end

local function peak_rss_mb() return require("sao.progress").peak_rss() / 2 ^ 20 end

-- Device memory (sao's caching allocator) on the GPU, the process's peak RSS on the CPU. mark()
-- at the start of a measurement; when it raises the high-water mark, above_start_mb is exactly
-- how far its own peak rose above what was allocated when it started.
local last_peak, start_alloc = 0, 0
local function mark()
  if device ~= "cpu" then start_alloc = sao.cuda.memory().allocated end
end
local function memory(line)
  if device == "cpu" then
    line.peak_rss_mb = peak_rss_mb()
    return line
  end
  local m = sao.cuda.memory()
  line.peak_mb = m.peak / 2 ^ 20
  line.allocated_mb = m.allocated / 2 ^ 20
  line.new_peak = m.peak > last_peak
  if line.new_peak then line.above_start_mb = (m.peak - start_alloc) / 2 ^ 20 end
  last_peak = m.peak
  return line
end

-- ---- the model: SAO 1.0's config (or tiny.json's, at 256 frames), random weights -------------
local function read_json(path) return cjson.decode(assert(require("sao.fs").read(path))) end

local config = read_json(sao.root .. (SMALL and "/checkpoints/tiny.json" or "/checkpoints/sao-1.0.json"))
if SMALL then
  config.sample_size = tonumber(os.getenv("SAO_BENCH_FRAMES") or "256") * config.model.pretransform.config.downsampling_ratio
end
local dcfg = config.model.diffusion.config

local t0 = now()
local m = sao.load_model(config, { device = device ~= "cpu" and device or nil, quiet = true, seed = 1,
  precision = PRECISION })
if device == "cpu" then PRECISION = "fp32" end
local setup_s = now() - t0
local frames = m:window_frames()
local SR = m:sample_rate()
local audio_s = frames * m.c.ratio / SR
local seconds_total = math.floor(audio_s)               -- 47 for SAO 1.0
local label = string.format("E%d depth%d H%d io%d Dc%d T%d L130", dcfg.embed_dim, dcfg.depth, dcfg.num_heads,
  dcfg.io_channels, dcfg.cond_token_dim, frames)
local common = { gpu = gpu, device = device, precision = PRECISION, config = label, frames = frames, audio_seconds = audio_s,
  threads = sao.threads(), small = SMALL or nil }
local function line(t)
  for k, v in pairs(common) do if t[k] == nil then t[k] = v end end
  return memory(t)
end

-- FLOPs of one DiT forward at batch B (2 per multiply-add; matmuls and attention only)
local function dit_flops(B, T, L)
  local E, Dc, io, Fi = dcfg.embed_dim, dcfg.cond_token_dim, dcfg.io_channels, 4 * dcfg.embed_dim
  local N = T + 1
  local block = 2 * N * E * 3 * E + 4 * N * N * E + 2 * N * E * E
    + 2 * N * E * E + 2 * L * Dc * 2 * Dc + 4 * N * L * E + 2 * N * E * E
    + 2 * N * E * 2 * Fi + 2 * N * Fi * E
  return B * (dcfg.depth * block + 2 * T * io * E * 2 + 2 * T * io * io * 2 + 2 * L * Dc * Dc * 2)
end

local decode_flops = sao.vae.decode_flops

-- frames the chunked decode actually runs (the overlaps are decoded twice)
local function decoded_frames(L, chunk)
  local overlap = sao.vae.OVERLAP
  if not chunk or L <= chunk then return L end
  local hop, n, s = chunk - overlap, 0, 0
  while s + chunk <= L do n = n + 1; s = s + hop end
  if (s - hop) + chunk ~= L then n = n + 1 end
  return n * chunk
end

-- ---- PyTorch (bench/torch_dit.py) --------------------------------------------------------------
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local TORCH_PY = here .. "torch_dit.py"

-- runs a shell command; returns its output (stdout and stderr), whether it exited 0, its exit code
local function sh(cmd)
  local p = io.popen("( " .. cmd .. " ) 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return out:gsub("__rc=%d+%s*$", ""), rc == 0, rc
end

local function torch_status()
  if os.getenv("SAO_BENCH_TORCH") == "0" then return "disabled (SAO_BENCH_TORCH=0)" end
  local out = sh([[python3 -c 'import torch; print("cuda=" + str(torch.cuda.is_available()))' 2>/dev/null]])
  if not out:match("cuda=") then return "unavailable (python3 cannot import torch)" end
  if device == "cuda" and not out:match("cuda=True") then return "unavailable (torch sees no CUDA device)" end
  return nil
end

-- the torch_dit.py command line for a DiT config (sao's field names) and more arguments
local function torch_cmd(c, extra)
  local a = { "python3", TORCH_PY, "--device", device, "--io", c.io_channels, "--embed-dim", c.embed_dim,
    "--depth", c.depth, "--heads", c.num_heads, "--cond-dim", c.cond_token_dim,
    "--global-dim", c.global_cond_dim, "--cfg-scale", CFG_SCALE }
  if device == "cpu" then a[#a + 1] = "--threads"; a[#a + 1] = sao.threads() end
  for _, v in ipairs(extra) do a[#a + 1] = v end
  for i, v in ipairs(a) do a[i] = "'" .. tostring(v) .. "'" end
  return table.concat(a, " ")
end

-- runs torch_dit.py at SAO's shapes (under `timeout`); returns its JSON lines (nil and why when
-- none came), and what went wrong (nil when it exited 0)
local TORCH_TIMEOUT = tonumber(os.getenv("SAO_BENCH_TORCH_TIMEOUT") or "300")
local function run_torch(extra)
  local out, ok, rc = sh("timeout -k 5 " .. TORCH_TIMEOUT .. " " .. torch_cmd(dcfg, extra))
  local res = {}
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then
      local okj, v = pcall(cjson.decode, l)
      if okj and v.bench == "torch_dit" then res[#res + 1] = v end
    end
  end
  local err
  if rc == 124 or rc == 137 then
    err = "timed out after " .. TORCH_TIMEOUT .. " s (SAO_BENCH_TORCH_TIMEOUT)"
  elseif not ok then
    err = "failed (exit " .. tostring(rc) .. "): " .. out:sub(-400):gsub("%s+", " ")
  end
  if #res == 0 then return nil, err or "printed no result" end
  return res, err
end

-- PyTorch at the same shapes, fp32 (and bf16 on the GPU) in one process: mode -> dtype -> its line.
-- torch_why: why there is no comparison at all; torch_err: how a run that reported something ended
local torch_why = torch_status()
local torch_res, torch_err
local function run_torch_all()
  if torch_why then return end
  local bf = os.getenv("SAO_BENCH_TORCH_BF16")
  local dtypes = (bf == "1" or (bf == nil and device == "cuda")) and "fp32,bf16" or "fp32"
  local lines
  lines, torch_err = run_torch { "--mode", "forward,sample", "--dtype", dtypes, "--frames", frames, "--ctx", 130,
    "--steps", STEPS, "--batch", 1, "--repeat", REPEAT, "--warmup", 1 }
  torch_res = {}
  for _, v in ipairs(lines or {}) do
    torch_res[v.mode] = torch_res[v.mode] or {}
    torch_res[v.mode][v.dtype] = v
  end
end

-- adds torch_seconds and ratio (torch / sao in the dtype matching sao's products: > 1 means sao is
-- faster) and the other dtype's time, or why there are none
local function with_torch(t, mode)
  local r = torch_res and torch_res[mode] or {}
  local want = (PRECISION == "bf16" and r.bf16) and "bf16" or "fp32"
  if r[want] then
    t.torch_seconds, t.torch_dtype, t.ratio = r[want].seconds, want, r[want].seconds / t.seconds
    if r.bf16 and want ~= "bf16" then t.torch_bf16_seconds = r.bf16.seconds end
    if r.fp32 and want ~= "fp32" then t.torch_fp32_seconds = r.fp32.seconds end
    t.torch_error = torch_err
  else
    t.torch = torch_why or torch_err or "unavailable"
  end
  return t
end

-- a measurement whose line waits for the torch comparison is written to stderr at once too, so a
-- run cut short (a timeout) still leaves sao's figures in the log
local function provisional(t)
  io.stderr:write("gpu_sample: measured (its JSON line follows the torch comparison): ",
    string.format("%s %.4f s\n", t.what, t.seconds))
  io.stderr:flush()
  return t
end

-- ---- setup ----------------------------------------------------------------------------------
emit(line { what = "setup", seconds = setup_s, dit_numel = m.dit:parameter_count(),   -- parameters + buffers
  note = "sao.load_model with random weights; DiT, VAE and T5 on " .. device })

-- ---- (c) the VAE decode of the window, first (its device peak shows before the DiT's) -----------
-- the decode Model:generate runs: on a GPU sized to its memory, on the CPU chunked above 256 frames
local chunk
if device == "cuda" then
  chunk = m.vae:decode_chunk(frames, 0.8 * sao.cuda.mem_info(0).usable)
elseif frames > 256 then
  chunk = sao.vae.CHUNK
end
local chunked = chunk ~= nil
local vcfg = sao.vae.config(m.c.pretransform)
local decode_s
do
  local z = sao.randn { { 1, m.c.latent_dim, frames }, seed = 2 }
  mark()
  local t1 = now()
  local y = m.vae:decode(z, { chunked = chunked, chunk = chunk })
  local first = now() - t1
  y:free()
  t1 = now()
  y = m.vae:decode(z, { chunked = chunked, chunk = chunk })
  decode_s = now() - t1
  y:free()
  emit(line { what = "vae_decode_" .. SUFFIX, seconds = decode_s, ms = decode_s * 1000, first_call_seconds = first,
    chunked = chunked, chunk = chunk, overlap = chunked and sao.vae.OVERLAP or nil,
    tflops = decode_flops(vcfg, decoded_frames(frames, chunk)) / decode_s / 1e12,
    realtime_factor = audio_s / decode_s, conv_backend = device == "cuda" and sao.cuda.conv_backend() or nil })
  -- the same decode on each conv path (GPU only): cuDNN's convolutions against im2col + cuBLASLt
  -- GEMMs, each after a warm-up call (cuDNN chooses its algorithms per shape on the first), with
  -- the largest difference between their outputs (TF32 in the tf32/bf16 modes: ~1e-3 expected)
  if device == "cuda" then
    local ver, why = sao.cuda.cudnn()
    if not ver then
      emit(line { what = "vae_decode_conv_backends_" .. SUFFIX, skipped = "cuDNN cannot be used: " .. why })
    else
      local secs, outs = {}, {}
      for _, b in ipairs { "gemm", "cudnn" } do
        sao.cuda.conv_backend(b)
        m.vae:decode(z, { chunked = chunked, chunk = chunk }):free()
        local t1 = now()
        outs[b] = m.vae:decode(z, { chunked = chunked, chunk = chunk })
        secs[b] = now() - t1
      end
      sao.cuda.conv_backend("auto")
      emit(line { what = "vae_decode_conv_backends_" .. SUFFIX, cudnn_seconds = secs.cudnn, gemm_seconds = secs.gemm,
        ratio = secs.gemm / secs.cudnn, cudnn_version = ver, max_abs_diff = outs.cudnn:maxdiff(outs.gemm),
        cudnn_tflops = decode_flops(vcfg, decoded_frames(frames, chunk)) / secs.cudnn / 1e12,
        note = "ratio = gemm_seconds / cudnn_seconds (> 1: cuDNN is faster)" })
      outs.cudnn:free()
      outs.gemm:free()
    end
  end
  m.vae:release_workspace()
end

-- ---- conditioning (T5 + seconds), as generation does it; the second call is timed ---------------
local PROMPT = "lofi hip hop beat with mellow keys, 80 BPM"
m:condition({ PROMPT }, 0, seconds_total)
local t1 = now()
local cross, global = m:condition({ PROMPT }, 0, seconds_total)
local cond_s = now() - t1
local L = cross:size(2)
assert(L == 130, "expected 130 context tokens, got " .. L)

-- ---- (a) one DiT forward with CFG ----------------------------------------------------------------
local dit = m.dit
local x = sao.randn { { 1, dcfg.io_channels, frames }, seed = 3 }
local tt = sao.full({ 1 }, 0.5)
local function forward()
  local v = dit:forward(x, tt, cross, global, { cfg_scale = CFG_SCALE, scale_phi = 0 })
  v:free()
end
-- the fastest of REPEAT timed calls of f
local function best_of(f)
  local b = math.huge
  for _ = 1, REPEAT do
    local t0 = now()
    f()
    b = math.min(b, now() - t0)
  end
  return b
end
mark()
t1 = now()
forward()                                                   -- warm-up: the device workspace is made here
local first = now() - t1
local best = best_of(forward)
local fwd_line = provisional(line { what = "dit_forward_cfg_" .. SUFFIX, seconds = best, ms = best * 1000,
  first_call_seconds = first, cfg_batch = 2, context = L, tflops = dit_flops(2, frames, L) / best / 1e12,
  -- the doubled batch's FLOPs as upstream (and bench/torch_dit.py) computes them: sao skips the
  -- all-zero half's cross-attention (SAO_SPEC 5.5), so this is the rate of equivalent work
  flops_basis = "upstream CFG batch (zero-context cross-attention counted, sao skips it)" })

-- ---- (a') the same forward replayed as a CUDA graph (dit:graphs): comparator, (a) in this run -----
local eager_out = dit:forward(x, tt, cross, global, { cfg_scale = CFG_SCALE, scale_phi = 0 })
dit:graphs(true)
forward()                                                   -- eager: the key recorded
forward()                                                   -- captured
local best_g = best_of(forward)
local graph_out = dit:forward(x, tt, cross, global, { cfg_scale = CFG_SCALE, scale_phi = 0 })
local gst = dit:graph_stats()
dit:graphs(false)
emit(line { what = "dit_forward_cfg_graph_" .. SUFFIX, seconds = best_g, ms = best_g * 1000,
  eager_ms = best * 1000, speedup = best / best_g, captures = gst.captures, replays = gst.replays,
  why_not = gst.why, max_diff_to_eager = graph_out:maxdiff(eager_out) })

-- ---- (a'') attention at SAO's shapes: the bf16 tensor-core flash kernel (attention_mma.cu, the
-- bf16 mode's default) against the cuBLAS path it replaced (sao.cuda.attention_impl("cublas"):
-- S = scale Q K^T in a [B, H, T, M] scratch, a row softmax, O = P V), one forward each, in the bf16
-- mode; then the whole CFG forward (a) both ways in $SAO_BENCH_PRECISION (the same kernels unless
-- that is bf16). ratio = cublas / bf16 kernel (> 1: the new kernel is faster). -------------------
if device == "cuda" then
  local ffi = require "ffi"
  local C = sao.C
  local sync_out = ffi.new("double[1]")
  local function sync(ptr) sao.check(C.sao_cuda_sumsq(sao.ctx, ptr, 1, sync_out)) end
  local function attention(name, B, H, Hkv, T, M, D)
    local q = sao.randn { B * H * T * D, seed = 5 }:to("cuda")
    local k = sao.randn { B * Hkv * M * D, seed = 6 }:to("cuda")
    local v = sao.randn { B * Hkv * M * D, seed = 7 }:to("cuda")
    local out, lse = sao.zeros(B * H * T * D):to("cuda"), sao.zeros(B * H * T):to("cuda")
    local desc = ffi.new("sao_attn_desc", { B = B, H = H, Hkv = Hkv, T = T, M = M, D = D })
    local function run()
      sao.check(C.sao_cuda_attention_forward(sao.ctx, desc, q:data(), k:data(), v:data(), nil, nil, out:data(), lse:data()))
    end
    local was_p, was_i = sao.cuda.precision("bf16"), sao.cuda.attention_impl()
    local secs, outs = {}, {}
    local sdpa_runs
    for _, impl in ipairs { "cublas", "auto", "cudnn" } do
      sao.cuda.attention_impl(impl)
      local n0 = sao.cuda.sdpa()
      run(); sync(out:data())
      if impl == "cudnn" then sdpa_runs = sao.cuda.sdpa() - n0 end
      local reps, b = 20, math.huge
      for _ = 1, 3 do
        local t0 = now()
        for _ = 1, reps do run() end
        sync(out:data())
        b = math.min(b, (now() - t0) / reps)
      end
      secs[impl], outs[impl] = b, out:to("cpu")
    end
    sao.cuda.precision(was_p)
    sao.cuda.attention_impl(was_i)
    local flops = 4 * B * H * T * M * D
    emit(line { what = "attention_bf16_" .. name, B = B, H = H, Hkv = Hkv, T = T, M = M, D = D, precision = "bf16",
      seconds = secs.auto, ms = secs.auto * 1000, cublas_ms = secs.cublas * 1000, ratio = secs.cublas / secs.auto,
      tflops = flops / secs.auto / 1e12, cublas_tflops = flops / secs.cublas / 1e12,
      scratch_mb = 4 * B * H * T * M / 2 ^ 20, max_abs_diff = outs.auto:maxdiff(outs.cublas),
      cudnn_ms = secs.cudnn * 1000, cudnn_ratio = secs.auto / secs.cudnn, cudnn_tflops = flops / secs.cudnn / 1e12,
      cudnn_ran = sdpa_runs == 1, cudnn_why = sdpa_runs ~= 1 and select(3, sao.cuda.sdpa()) or nil,
      cudnn_max_abs_diff = outs.cudnn:maxdiff(outs.auto),
      note = "seconds: the bf16 tensor-core flash kernel (no scratch); cublas_ms: the cuBLAS path and its " ..
        "[B,H,T,M] scratch (scratch_mb); ratio = cublas / bf16 kernel (> 1: the new kernel is faster); " ..
        "cudnn_ms: cuDNN's fused SDPA with its bf16 copies of q, k, v, out (cudnn_ran false: cuDNN refused, " ..
        "cudnn_why, and the time is the flash kernel's); cudnn_ratio = bf16 kernel / cuDNN (> 1: cuDNN is faster)" })
    for _, t in ipairs { q, k, v, out, lse } do t:free() end
  end
  -- self-attention over the 1 + T tokens; cross-attention onto the L context tokens, whose K/V
  -- heads are cond_token_dim / D (12 for SAO: each shared by 2 query heads). Batch 2: the CFG
  -- batch (sao's CFG forward runs the cross-attention on one half unless there is a negative context)
  local D = math.floor(dcfg.embed_dim / dcfg.num_heads)
  attention("self_" .. SUFFIX, 2, dcfg.num_heads, dcfg.num_heads, frames + 1, frames + 1, D)
  attention("cross_" .. SUFFIX, 2, dcfg.num_heads, math.floor(dcfg.cond_token_dim / D), frames + 1, L, D)

  -- the CFG forward (a), eager, with each attention setting
  local was = sao.cuda.attention_impl()
  local fw = {}
  for _, impl in ipairs { "cublas", "auto", "cudnn" } do
    sao.cuda.attention_impl(impl)
    forward()
    fw[impl] = best_of(forward)
  end
  sao.cuda.attention_impl(was)
  emit(line { what = "dit_forward_cfg_attention_" .. SUFFIX, seconds = fw.auto, ms = fw.auto * 1000,
    cublas_ms = fw.cublas * 1000, ratio = fw.cublas / fw.auto, cudnn_ms = fw.cudnn * 1000,
    cudnn_ratio = fw.auto / fw.cudnn,
    note = PRECISION == "bf16" and "ratio = forward with the cuBLAS attention / with the bf16 attention kernel; " ..
      "cudnn_ratio = with the bf16 attention kernel / with cuDNN's SDPA (attention_impl 'cudnn')"
      or "not the bf16 mode: both settings run the same attention kernels" })
end

-- ---- (b) the sampling loop: 100 steps of dpmpp-3m-sde, CFG 7, through sao.sampler's host loop, eager
-- and as CUDA graphs (the same kernels: the latents must agree bit for bit) --------------------------
local noise = sao.randn { { 1, dcfg.io_channels, frames }, seed = 4 }
-- on_device: sao.sampler's device loop (the state, the conditioning and the per-step noise on the
-- GPU, nothing copied or waited for between steps), as Model:generate runs it on a GPU
local function sample_loop(graphs, on_device)
  dit:graphs(graphs)
  local t0 = now()
  local model = function(xin, t)
    return dit:forward(xin, sao.full({ 1 }, t), cross, global, { cfg_scale = CFG_SCALE, scale_phi = 0 })
  end
  local z = noise
  if on_device then
    local dc, dg, dt = cross:to("cuda"), global:to("cuda"), sao.empty_on("cuda", { 1 })
    z = noise:to("cuda")
    model = function(xin, t, out)
      return dit:forward(xin, dt:fill_(t), dc, dg, { cfg_scale = CFG_SCALE, scale_phi = 0, out = out })
    end
  end
  local lat = sao.sampler.sample {
    model = model, noise = z, steps = STEPS, sigma_min = 0.3, sigma_max = 500, rho = 1, sampler = "dpmpp-3m-sde",
    seed = 4, progress = false,
  }
  if on_device then lat = lat:to("cpu") end   -- waits for the last step
  local secs = now() - t0
  local st = dit:graph_stats()
  dit:graphs(false)
  return lat, secs, st
end
mark()
local latents, sample_s = sample_loop(false)
local lmax = latents:abs():max()
local sample_line = provisional(line { what = "sample_" .. STEPS .. "_cfg_" .. SUFFIX, seconds = sample_s,
  ms = sample_s * 1000, steps = STEPS, sampler = "dpmpp-3m-sde", cfg_scale = CFG_SCALE,
  ms_per_step = sample_s / STEPS * 1000, tflops = STEPS * dit_flops(2, frames, L) / sample_s / 1e12,
  latents_abs_max = lmax, finite = lmax == lmax and lmax < math.huge })
local glat, gsample_s, gst2 = sample_loop(true)
emit(line { what = "sample_" .. STEPS .. "_cfg_graph_" .. SUFFIX, seconds = gsample_s, ms = gsample_s * 1000,
  eager_seconds = sample_s, speedup = sample_s / gsample_s, ms_per_step = gsample_s / STEPS * 1000,
  captures = gst2.captures, replays = gst2.replays, why_not = gst2.why, max_diff_to_eager = glat:maxdiff(latents) })

-- ---- (b') the device loop, eager and as graphs; comparator: the host loop above, in this run ---------
local best_sample_s = math.min(sample_s, gsample_s)
local default_sample_s = sample_s   -- what Model:generate runs: the device loop on a GPU (no graphs)
if device == "cuda" then
  local dlat, dsample_s = sample_loop(false, true)
  default_sample_s = dsample_s
  local dglat, dgsample_s, dgst = sample_loop(true, true)
  emit(line { what = "sample_" .. STEPS .. "_cfg_device_loop_" .. SUFFIX, seconds = dsample_s, ms = dsample_s * 1000,
    graph_seconds = dgsample_s, host_loop_seconds = sample_s, host_loop_graph_seconds = gsample_s,
    ratio = sample_s / dsample_s, graph_ratio = gsample_s / dgsample_s, ms_per_step = dsample_s / STEPS * 1000,
    captures = dgst.captures, replays = dgst.replays, why_not = dgst.why,
    max_diff_to_host_loop = dlat:maxdiff(latents), graph_max_diff_to_host_loop = dglat:maxdiff(latents),
    note = "ratio = host loop / device loop (> 1: the device loop is faster); the latents must agree bit for bit" })
  best_sample_s = math.min(best_sample_s, dsample_s, dgsample_s)

  -- (b'') four clips per call (the sample stage's --sample-batch default on a GPU), each with its own
  -- seed, through the device loop: clips per second against one clip per call (dsample_s, this run)
  local BATCH = 4
  local seeds = { 4, 5, 6, 7 }
  local bnoise = sao.sampler.draw(sao.empty(BATCH, dcfg.io_channels, frames), seeds, 0):to("cuda")
  local bc, bg = sao.cat({ cross, cross, cross, cross }, 1):to("cuda"), sao.cat({ global, global, global, global }, 1):to("cuda")
  local bt = sao.empty_on("cuda", { BATCH })
  mark()
  local t0 = now()
  local blat = sao.sampler.sample {
    model = function(xin, t, out)
      return dit:forward(xin, bt:fill_(t), bc, bg, { cfg_scale = CFG_SCALE, scale_phi = 0, out = out })
    end,
    noise = bnoise, steps = STEPS, sigma_min = 0.3, sigma_max = 500, rho = 1, sampler = "dpmpp-3m-sde", seeds = seeds,
    progress = false,
  }:to("cpu")
  local bsample_s = now() - t0
  local bmax = blat:abs():max()
  emit(line { what = "sample_" .. STEPS .. "_cfg_batch" .. BATCH .. "_" .. SUFFIX, seconds = bsample_s,
    clips = BATCH, clips_per_second = BATCH / bsample_s, single_clip_seconds = dsample_s,
    ratio = BATCH * dsample_s / bsample_s, tflops = BATCH * STEPS * dit_flops(2, frames, L) / bsample_s / 1e12,
    finite = bmax == bmax and bmax < math.huge,
    note = "ratio = time of 4 single-clip loops / one 4-clip loop (> 1: batching pays); device loop, no graphs" })
end

-- ---- the generation: sampling + one VAE decode of the window (the goal's scope; the decode time is
-- (c)'s, the same work on other latents); with the conditioning in with_condition_seconds ----------
local total = default_sample_s + decode_s
emit(line { what = "generate_" .. SUFFIX, seconds = total, sample_seconds = default_sample_s, decode_seconds = decode_s,
  host_loop_sample_seconds = sample_s,
  condition_seconds = cond_s, with_condition_seconds = total + cond_s, steps = STEPS, goal_seconds = GOAL_S,
  with_graphs_seconds = math.min(sample_s, gsample_s) + decode_s, best_seconds = best_sample_s + decode_s,
  goal_gpu = "H100", meets_goal = (not SMALL and STEPS == 100) and best_sample_s + decode_s <= GOAL_S or nil })

-- ---- PyTorch at the same shapes, then (a) and (b) with its times --------------------------------------
local t_torch = now()
run_torch_all()
t_torch = now() - t_torch
fwd_line.torch_run_seconds = t_torch      -- the whole torch_dit.py run (start-up, model build, both dtypes)
emit(with_torch(fwd_line, "forward"))
emit(with_torch(sample_line, "sample"))

-- ---- parity: the same random weights in sao and in torch_dit.py, small config --------------------
local function parity()
  if torch_why then return { torch = torch_why } end
  -- 4 heads over 2 cross-attention K/V heads: the grouped mapping is exercised
  local pc = { io_channels = 16, embed_dim = 256, depth = 2, num_heads = 4, cond_token_dim = 128,
    global_cond_dim = 256 }
  local T, PL = 64, 130
  mark()
  local small = sao.dit.new(pc)
  small:load(require("sao.model").random_params(small:params(), 7))
  if device ~= "cpu" then small:to(device) end
  local was = sao.cuda.precision("fp32")     -- the same function to fp32 rounding: fp32 products here
  local inp = { x = sao.randn { { 1, pc.io_channels, T }, seed = 11 }, t = sao.full({ 1 }, 0.37),
    cross = sao.randn { { 1, PL, pc.cond_token_dim }, seed = 12 },
    global = sao.randn { { 1, pc.global_cond_dim }, seed = 13 }, cfg_scale = sao.full({ 1 }, CFG_SCALE) }
  inp.out = small:forward(inp.x, inp.t, inp.cross, inp.global, { cfg_scale = CFG_SCALE, scale_phi = 0 })
  sao.cuda.precision(was)
  local base = os.tmpname()
  local wpath, ipath = base .. ".weights.safetensors", base .. ".inputs.safetensors"
  sao.save_safetensors(wpath, require("sao.models").tensors(small:params(), "model.model."))
  sao.save_safetensors(ipath, inp)
  local out, ok = sh(torch_cmd(pc, { "--mode", "check", "--weights", wpath, "--inputs", ipath, "--dtype", "fp32" }))
  os.remove(wpath); os.remove(ipath); os.remove(base)
  local okj, v = pcall(cjson.decode, out:match("(%b{})%s*$") or "")
  if not ok or not okj or v.mode ~= "check" then return { torch = "failed: " .. out:sub(-400):gsub("%s+", " ") } end
  return { max_abs_diff = v.max_abs_diff, mean_abs_diff = v.mean_abs_diff, max_abs_ref = v.max_abs_ref, rel = v.rel,
    same_function = v.rel < 1e-4, torch_device = v.device }
end
local pr = parity()
pr.what = "parity_torch"
pr.config = "E256 depth2 H4 io16 Dc128 T64 L130 (random weights, exported from sao)"
pr.cfg_scale, pr.gpu, pr.device = CFG_SCALE, gpu, device
emit(memory(pr))
