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
local recipe = require "sao.pipeline.recipe"

recipe.main {
  name = "instrumental", out = "out/instrumental", arg = arg,
  stages = {
    { name = "dataset",  module = "sao.pipeline.dataset",  what = "MIDI corpus -> rendered, normalised 30 s clips + JSON" },
    { name = "metadata", module = "sao.metadata",          what = "Spotify / Last.fm enrichment (offline without keys)" },
    { name = "prompts",  module = "sao.pipeline.prompts",  what = "LLM or template prompts per clip" },
    { name = "encode",   module = "sao.pipeline.encode",   what = "VAE latents + T5 embeddings cache" },
    { name = "train",    module = "sao.pipeline.train",    what = "fine-tune the DiT" },
    { name = "sample",   module = "sao.pipeline.sample",   what = "generate demo audio" },
    { name = "eval",     module = "sao.pipeline.eval",     what = "tempo/key accuracy and report" },
  },
  -- options the stages read, besides the dataset stage's (its defaults' keys); anything else is a
  -- typo, refused before any work starts
  options = [[midi quiet model model_seed run config force strict_metadata strict spotify lastfm llm_url llm_model
    no_llm temperature shots style retries seed key_source log dropped_dir reencode holdout encode_seed
    max_seconds steps batch accum frames lr weight_decay clip cfg_dropout checkpoint_every keep log_every
    demo_every train_seed seconds_cond nproc zero nnodes node_rank master comm_backend comm_timeout lora_rank lora_alpha lora_targets prompt prompts cfg_scales
    sample_steps sample_batch seconds sample_seed sampler sigma_min sigma_max peak_db sample_profile eval_set
    eval_repeats eval_limit frames_sample num_demos baseline weights samples negative_prompt
    reference_clips memorization tempo_tolerances soundfont device precision graphs clap_url clap_model]],
  extra_options = { require("sao.pipeline.dataset").defaults },
  usage = {
    "usage: sao recipes/instrumental.lua [--out DIR] [--stages a,b,c] [--midi DIR]",
    "  dataset options: --jobs N --shard i/n --soundfont F.sf2 --render-mode notes|full --target-lufs -12",
    "                   --mix mean|sum --peak-guard limit|reduce|report --clip-min 20 --clip-max 35",
    "                   --clip-target 30 --limit N --retry-failed 1 (docs/dataset.md)",
    "  encode/train/sample/eval (docs/training.md): --model tiny|sao-1.0|DIR --run NAME --reencode",
    "                   --device cpu|cuda|cuda:N (the models and the training run on that GPU)",
    "                   --precision bf16|tf32|fp32 (the GPU's linear layers; default bf16)",
    "                   --graphs (on a GPU: each sampling step replays as one CUDA graph)",
    "                   --steps N --batch B --lr X --frames F --lora-rank R --checkpoint-every N --config F.lua",
    "                   --prompts FILE --prompt TEXT --cfg-scales 4,7 --sample-steps N --seconds S --baseline",
    "                   --sample-batch N (clips per generate call; default 4 on a GPU, 1 on the CPU)",
    "                   --negative-prompt TEXT (what CFG steers the samples away from)",
    "                   --eval-set tempo|key (the seed's evaluation grids: 36 BPM prompts, 24 keys x 4 genres x 8)",
    "                   --eval-repeats R --eval-limit N",
    "                   --samples DIR --reference-clips N --memorization N",
  },
}
