-- recipes/instrumental.lua — the "SAO Instrumental Finetune" pipeline:
--   MIDI corpus -> dataset (render, normalise, analyse, cut clips) -> metadata -> prompts
--   -> encode -> train -> sample -> eval
--
--   sao recipes/instrumental.lua [--out OUT] [--stages dataset,prompts,...] [--midi DIR]
--
-- With no --midi the dataset stage composes a small demo corpus itself (OUT/demo_midi), so the
-- recipe runs on a fresh machine with no downloads. Dataset options (docs/dataset.md):
--   --jobs N  --shard i/n  --soundfont F.sf2  --render-mode notes|full  --target-lufs -12
--   --mix mean|sum  --peak-guard limit|reduce|report  --clip-min 20 --clip-max 35 --clip-target 30
--
-- Each stage reads what the earlier ones wrote under OUT (see docs/architecture.md) and skips work
-- already done. A stage whose module is not built yet is listed as such and skipped.
local sao = require "sao"

local defaults = {
  out = "out/instrumental",
  stages = "dataset,metadata,prompts,encode,train,sample,eval",
}

local function parse_args(argv)
  local opts = {}
  for k, v in pairs(defaults) do opts[k] = v end
  local i = 1
  while argv and i <= #argv do
    local a = argv[i]
    local key = a:match("^%-%-([%w_%-]+)$")
    if not key then error("instrumental: unexpected argument '" .. a .. "' (try --help)", 0) end
    local v = argv[i + 1]
    if key == "help" then opts.help = true; i = i + 1
    elseif v == nil or v:match("^%-%-") then
      opts[key:gsub("%-", "_")] = true     -- a flag: --force, --baseline (does not take the next argument)
      i = i + 1
    else
      opts[key:gsub("%-", "_")] = v
      i = i + 2
    end
  end
  return opts
end

local STAGES = {
  { name = "dataset",  module = "sao.pipeline.dataset",  what = "MIDI corpus -> rendered, normalised 30 s clips + JSON" },
  { name = "metadata", module = "sao.metadata",          what = "Spotify / Last.fm enrichment (offline without keys)" },
  { name = "prompts",  module = "sao.pipeline.prompts",  what = "LLM or template prompts per clip" },
  { name = "encode",   module = "sao.pipeline.encode",   what = "VAE latents + T5 embeddings cache" },
  { name = "train",    module = "sao.pipeline.train",    what = "fine-tune the DiT" },
  { name = "sample",   module = "sao.pipeline.sample",   what = "generate demo audio" },
  { name = "eval",     module = "sao.pipeline.eval",     what = "tempo/key accuracy and report" },
}

local opts = parse_args(arg)
if opts.help then
  print("usage: sao recipes/instrumental.lua [--out DIR] [--stages a,b,c] [--midi DIR]")
  print("  dataset options: --jobs N --shard i/n --soundfont F.sf2 --render-mode notes|full --target-lufs -12")
  print("                   --mix mean|sum --peak-guard limit|reduce|report --clip-min 20 --clip-max 35")
  print("                   --clip-target 30 --limit N --retry-failed 1 (docs/dataset.md)")
  print("  encode/train/sample/eval (docs/training.md): --model tiny|sao-1.0|DIR --run NAME --reencode")
  print("                   --device cpu|cuda|cuda:N (the models and the training run on that GPU)")
  print("                   --precision bf16|tf32|fp32 (the GPU's linear layers; default bf16)")
  print("                   --steps N --batch B --lr X --frames F --lora-rank R --checkpoint-every N --config F.lua")
  print("                   --prompts FILE --prompt TEXT --cfg-scales 4,7 --sample-steps N --seconds S --baseline")
  print("                   --negative-prompt TEXT (what CFG steers the samples away from)")
  print("                   --samples DIR --reference-clips N")
  for _, s in ipairs(STAGES) do print(string.format("  %-9s %s", s.name, s.what)) end
  os.exit(0)
end

-- Options the stages read (besides the dataset stage's, which are its defaults' keys): anything
-- else is a typo, refused before any work starts.
local OPTIONS = [[out stages midi help quiet model model_seed run config force strict_metadata strict
  spotify lastfm llm_url llm_model no_llm temperature shots style retries seed key_source log dropped_dir
  reencode holdout encode_seed max_seconds steps batch accum frames lr weight_decay clip cfg_dropout
  checkpoint_every keep log_every demo_every train_seed lora_rank lora_alpha lora_targets prompt prompts
  cfg_scales sample_steps seconds sample_seed sampler frames_sample num_demos baseline weights samples
  negative_prompt
  reference_clips tempo_tolerances soundfont device precision]]
local known = {}
for name in OPTIONS:gmatch("%S+") do known[name] = true end
for name in pairs(require("sao.pipeline.dataset").defaults) do known[name] = true end
for k in pairs(opts) do
  if not known[k] then
    io.stderr:write(("instrumental: unknown option --%s (see --help)\n"):format(k:gsub("_", "-")))
    os.exit(2)
  end
end

local wanted = {}
for s in opts.stages:gmatch("[^,]+") do
  local ok = false
  for _, st in ipairs(STAGES) do ok = ok or st.name == s end
  if not ok then
    local names = {}
    for _, st in ipairs(STAGES) do names[#names + 1] = st.name end
    io.stderr:write(("instrumental: unknown stage '%s' (stages: %s)\n"):format(s, table.concat(names, ", ")))
    os.exit(2)
  end
  wanted[s] = true
end

print(string.format("sao %s — instrumental recipe, output in %s", sao.version, opts.out))
local missing = 0
for _, s in ipairs(STAGES) do
  if wanted[s.name] then
    local path = package.searchpath(s.module, package.path)
    if path then
      print(string.format("[%s] running", s.name))
      -- a failing stage says why in one line (SAO_TRACEBACK=1 adds the Lua traceback) and exits 1
      local ok, err = xpcall(function() require(s.module).run(opts) end, function(e)
        return os.getenv("SAO_TRACEBACK") and debug.traceback(tostring(e), 2) or tostring(e)
      end)
      if not ok then
        io.stdout:flush()
        io.stderr:write(string.format("instrumental: stage %s failed: %s\n", s.name, err))
        os.exit(1)
      end
    else
      missing = missing + 1
      print(string.format("[%s] not implemented yet (%s)", s.name, s.what))
    end
  end
end
if missing > 0 then print(string.format("%d stage(s) not implemented yet", missing)) end
