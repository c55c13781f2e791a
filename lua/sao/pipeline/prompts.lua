-- sao.pipeline.prompts — the prompts stage of the recipes: a prompt for every clip under
-- OUT/dataset/clips that has none (sao.prompt.stage does the work; docs/prompts.md).
--
-- Recipe options used: out, force, seed, style ("instrumental" | "trap" | "auto"), no_llm,
-- llm_url, llm_model, retries, shots, temperature, confident (trap: the confidence a BPM or key
-- needs to be stated, default 0.70).
local prompt = require "sao.prompt"

local M = {}

local function flag(v) return v ~= nil and v ~= false and v ~= "false" and v ~= "0" end

function M.run(opts)
  local llm_opts = { url = opts.llm_url, model = opts.llm_model }
  local llm
  if flag(opts.no_llm) then llm = false end
  return prompt.stage((opts.out or "out") .. "/dataset/clips", {
    force = flag(opts.force), seed = tonumber(opts.seed) or 0, style = opts.style, llm = llm,
    llm_opts = llm_opts, retries = tonumber(opts.retries), shots = tonumber(opts.shots),
    temperature = tonumber(opts.temperature), confident = tonumber(opts.confident), quiet = flag(opts.quiet),
  })
end

return M
