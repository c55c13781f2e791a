-- recipes/trap.lua — the "StableBeaT" pipeline (a trap/rap beat fine-tune of Stable Audio Open):
--   folder of beats -> dataset (two 20-35 s segments per beat, start times, tempo and key with
--   confidences) -> tag (CLAP instruments/moods/genres) -> prompts (BPM and key stated only above
--   0.70 confidence, tag synonyms) -> encode -> train -> sample -> eval (BPM, spectral centroid,
--   flatness, harmonic/percussive ratio, transient sharpness, CLAP score)
--
--   sao recipes/trap.lua [--out OUT] [--stages dataset,tag,...] [--beats DIR]
--
-- With no --beats the dataset stage composes a few demo beats itself (OUT/demo_beats), so the
-- recipe runs on a fresh machine with no downloads. Tags come from a CLAP embedding service when
-- SAO_CLAP_URL is set (docs/clap.md), else from audio features; prompts from an LLM when
-- SAO_LLM_URL is set, else from the template writer. docs/trap.md describes every stage.
local recipe = require "sao.pipeline.recipe"

recipe.main {
  name = "trap", out = "out/trap", arg = arg,
  stages = {
    { name = "dataset", module = "sao.pipeline.beats",   what = "beats -> 20-35 s segments (start, BPM, key) + JSON" },
    { name = "tag",     module = "sao.pipeline.tag",     what = "instrument / mood / genre tags (CLAP, or audio features)" },
    { name = "prompts", module = "sao.pipeline.prompts", what = "LLM or template prompts per segment (trap style)" },
    { name = "encode",  module = "sao.pipeline.encode",  what = "VAE latents + T5 embeddings cache" },
    { name = "train",   module = "sao.pipeline.train",   what = "fine-tune the DiT" },
    { name = "sample",  module = "sao.pipeline.sample",  what = "generate demo beats" },
    { name = "eval",    module = "sao.pipeline.eval",    what = "BPM, key, timbre features, CLAP score and report" },
  },
  -- what the prompts and sample stages use unless told otherwise
  defaults = {
    style = "trap",
    sample_profile = "stablebeat",   -- StableBeaT's demo settings (200 steps, CFG 7, 47 s, peak 1.0)
    demo_prompts = {
      "A dark, menacing trap beat at 140 BPM in C# minor, with booming 808s, rolling hi-hats and a piano melody",
      "A melancholic, emotional rap beat at 86 BPM in A minor, using plucked guitar, synth bells and vinyl crackle",
      "A bouncy drill beat at 142 BPM in G minor, built on sliding 808s, a flute melody and crisp claps",
      "An energetic, aggressive trap beat at 150 BPM in F minor, with brass stabs, 808s and skittering hi-hats",
    },
  },
  options = [[beats quiet model model_seed run config force strict tagger clap_url clap_model tag_k tag_clusters tag_batch
    min_similarity llm_url llm_model no_llm temperature shots style retries seed confident log reencode
    holdout encode_seed max_seconds steps batch accum frames lr weight_decay clip cfg_dropout
    checkpoint_every keep log_every demo_every train_seed seconds_cond nproc zero nnodes node_rank master comm_backend comm_timeout lora_rank lora_alpha lora_targets
    prompt prompts demo_prompts cfg_scales sample_steps sample_batch seconds sample_seed sampler sigma_min sigma_max
    peak_db sample_profile eval_set eval_repeats eval_limit frames_sample num_demos baseline weights
    samples negative_prompt reference_clips memorization tempo_tolerances device precision graphs]],
  extra_options = { require("sao.pipeline.beats").defaults },
  usage = {
    "usage: sao recipes/trap.lua [--out DIR] [--stages a,b,c] [--beats DIR]",
    "  dataset options: --segments 2 --segment-min 20 --segment-max 35 --align beats|none --segment-seed N",
    "                   --target-lufs off|-14 --shard i/n --limit N --retry-failed 1 (docs/trap.md)",
    "  tag options:     --tagger auto|clap|features --clap-url URL --tag-k 3,1,2 (instruments, genres, moods)",
    "                   --min-similarity X --force --tag-clusters 5 (T5 tag analysis; 0: none) --tag-batch 8",
    "  prompts:         --llm-url URL --llm-model NAME --no-llm --confident 0.7 (docs/prompts.md)",
    "  encode/train/sample/eval (docs/training.md): --model tiny|sao-1.0|DIR --run NAME --device cpu|cuda --graphs",
    "                   --steps N --batch B --lr X --lora-rank R --prompts FILE --prompt TEXT --cfg-scales 4,7",
    "                   --sample-steps N --sample-batch N --seconds S --baseline --samples DIR --reference-clips N",
    "                   --memorization N",
    "                   --sample-profile stablebeat (default: 200 steps, CFG 7, sigma 0.01-100, 47 s, peak 0 dBFS)",
    "                   --sigma-min X --sigma-max X --peak-db X --seconds-cond clip|source --nproc N",
    "                   --jobs N (dataset workers) --demo-count N (demo beats without --beats)",
  },
}
