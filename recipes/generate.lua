-- recipes/generate.lua — text to audio with Stable Audio Open (or the tiny model when no weights).
--
--   sao recipes/generate.lua --prompt "lofi hip hop beat, 80 BPM" --seconds 30 --steps 100 --cfg 7 \
--       --seed 1 --out out.wav [--negative "vocals, distortion"] [--sampler dpmpp-3m-sde]
--       [--model DIR|sao-1.0|tiny] [--batch 2] [--device cuda [--precision bf16] [--graphs]]
--       [--seconds-start 0] [--init in.wav --init-noise 80] [--sigma-min 0.3 --sigma-max 500]
-- A batch writes out-1.wav, out-2.wav, ...: take b has seed S + b - 1 (S: --seed, else random), drawn
-- as if generated alone, so `--seed S+b-1` without --batch makes it again (up to the batch's GEMM
-- rounding). Output is 32-bit float WAV at the model's rate, peak normalised only when --normalize
-- is given; a JSON sidecar records prompt, seed and settings.
local sao = require "sao"
local cjson = require "cjson"

local function usage(code)
  io.stderr:write([[
usage: sao recipes/generate.lua --prompt TEXT [--negative TEXT] [--seconds S] [--steps N] [--cfg SCALE]
       [--seed N] [--out FILE.wav] [--sampler dpmpp-3m-sde|dpmpp-2m-sde|euler|v-ddim] [--model DIR|sao-1.0|tiny]
       [--batch B] [--seconds-start S] [--init FILE --init-noise SIGMA] [--sigma-min X] [--sigma-max X]
       [--device cpu|cuda|cuda:N] [--precision bf16|tf32|fp32] [--graphs] [--normalize] [--quiet]
]])
  os.exit(code)
end

local o = { out = "out.wav", steps = 100, cfg = 7, sampler = "dpmpp-3m-sde", batch = 1 }
local flags = { normalize = true, quiet = true, help = true, graphs = true }
local valued = { prompt = true, negative = true, seconds = true, steps = true, cfg = true, seed = true, out = true, sampler = true,
                 model = true, batch = true, seconds_start = true, init = true, init_noise = true,
                 sigma_min = true, sigma_max = true, device = true, precision = true }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(.+)$")
  if not k then io.stderr:write("generate: unexpected argument '" .. arg[i] .. "'\n") usage(2) end
  k = k:gsub("%-", "_")
  if not flags[k] and not valued[k] then
    io.stderr:write("generate: unknown option --" .. k:gsub("_", "-") .. "\n")
    usage(2)
  end
  if flags[k] then o[k] = true; i = i + 1
  else
    if arg[i + 1] == nil then io.stderr:write("generate: --" .. k .. " needs a value\n") usage(2) end
    o[k] = arg[i + 1]
    i = i + 2
  end
end
if o.help then usage(0) end
if not o.prompt then io.stderr:write("generate: --prompt is required\n") usage(2) end
local num = function(v, name)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n then io.stderr:write("generate: --" .. name .. " must be a number, got '" .. tostring(v) .. "'\n") os.exit(2) end
  return n
end

local model = sao.load_model(o.model, { quiet = o.quiet, device = o.device, precision = o.precision, graphs = o.graphs })
local B = math.floor(num(o.batch, "batch"))
if B < 1 then io.stderr:write("generate: --batch must be at least 1\n") os.exit(2) end
local seed = num(o.seed, "seed") or require("sao.model").fresh_seed()
local prompts, seeds = {}, {}
for b = 1, B do prompts[b], seeds[b] = o.prompt, seed + b - 1 end
local init
if o.init then
  local a, sr = sao.audio.load(o.init)
  if sr ~= model:sample_rate() then a = sao.audio.resample(a, sr, model:sample_rate()) end
  init = a
end
local audio, info = model:generate {
  prompt = prompts, negative_prompt = o.negative, seconds = num(o.seconds, "seconds"), seconds_start = num(o.seconds_start, "seconds-start"),
  steps = num(o.steps, "steps"), cfg_scale = num(o.cfg, "cfg"), seed = seed, seeds = B > 1 and seeds or nil,
  sampler = o.sampler, sigma_min = num(o.sigma_min, "sigma-min"), sigma_max = num(o.sigma_max, "sigma-max"),
  init_audio = init, init_noise_level = num(o.init_noise, "init-noise"), progress = not o.quiet,
}
local base = o.out:gsub("%.wav$", "")
for b = 1, B do
  local path = B == 1 and o.out or string.format("%s-%d.wav", base, b)
  local a = audio[b]
  if o.normalize then
    local peak = a:abs():max()
    if peak > 0 then a = a / peak end
  end
  sao.audio.save(path, a, model:sample_rate())
  local meta = { prompt = o.prompt, negative_prompt = o.negative, seed = seeds[b], seconds = info.seconds, steps = info.steps, cfg_scale = num(o.cfg, "cfg"),
    sampler = o.sampler, model = info.model, random_weights = info.random_weights, batch_index = b,
    batch = B > 1 and B or nil, device = info.device }
  local f = assert(io.open(path:gsub("%.wav$", "") .. ".json.tmp", "w"))
  f:write(cjson.encode(meta), "\n")
  f:close()
  os.rename(path:gsub("%.wav$", "") .. ".json.tmp", path:gsub("%.wav$", "") .. ".json")
  print(string.format("wrote %s (%.2f s, seed %d%s)", path, a:size(2) / model:sample_rate(), seeds[b],
    info.random_weights and ", tiny random model" or ""))
end
