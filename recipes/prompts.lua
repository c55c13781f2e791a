-- recipes/prompts.lua — adds a text prompt to every clip JSON in a folder.
--
--   sao recipes/prompts.lua DIR [--force] [--seed N] [--style instrumental|trap|auto]
--                               [--llm URL] [--model NAME] [--no-llm] [--retries N]
--                               [--shots N] [--temperature T] [--quiet]
--
-- DIR is a dataset's clips folder, or OUT (then OUT/dataset/clips). Each clip JSON without a
-- "prompt" gets one, with "prompt_source": "llm" when an OpenAI-compatible server is configured
-- (SAO_LLM_URL, SAO_LLM_MODEL, SAO_LLM_KEY, or --llm/--model) and its answer passed the checks,
-- "template" from the offline writer otherwise ("prompt_fallback" says why). --force rewrites
-- every prompt. Prompts are deterministic for a seed. See docs/prompts.md.
local prompt = require "sao.prompt"

local usage = [[
usage: sao recipes/prompts.lua DIR [options]
  --force            rewrite prompts that exist
  --seed N           base seed (default 0): same seed, same prompts
  --style S          instrumental | trap | auto (default: auto, from each clip's fields)
  --llm URL          OpenAI-compatible server (default: $SAO_LLM_URL; none: offline writer)
  --model NAME       model name sent to the server (default: $SAO_LLM_MODEL or llama3.1)
  --no-llm           offline writer only, even when SAO_LLM_URL is set
  --retries N        LLM answers tried per clip before the offline writer (default 3)
  --shots N          few-shot examples per request (default 3)
  --temperature T    sampling temperature (default 0.5, as the seed)
  --quiet            no progress bar or summary]]

local args = arg or { ... }
local opts, dir = {}, nil
local i = 1
local valued = { seed = true, style = true, llm = true, model = true, retries = true, shots = true, temperature = true }
while i <= #args do
  local a = args[i]
  local key = a:match("^%-%-([%w%-]+)$")
  if a == "-h" or a == "--help" then
    print(usage)
    os.exit(0)
  elseif key and valued[key] then
    if not args[i + 1] then io.stderr:write("prompts: --" .. key .. " needs a value\n", usage, "\n") os.exit(2) end
    opts[key] = args[i + 1]
    i = i + 2
  elseif key then
    opts[key:gsub("%-", "_")] = true
    i = i + 1
  elseif not dir then
    dir = a
    i = i + 1
  else
    io.stderr:write("prompts: unexpected argument '" .. a .. "'\n", usage, "\n")
    os.exit(2)
  end
end
if not dir then io.stderr:write(usage, "\n") os.exit(2) end
local known = { force = true, no_llm = true, quiet = true }
for k in pairs(opts) do
  if not valued[k] and not known[k] then io.stderr:write("prompts: unknown option --" .. k:gsub("_", "-") .. "\n", usage, "\n") os.exit(2) end
end

dir = dir:gsub("/+$", "")
local f = io.open(dir .. "/dataset/clips", "r")
if f then f:close() dir = dir .. "/dataset/clips" end

local llm
if opts.no_llm then llm = false end
local ok, res = pcall(prompt.stage, dir, {
  force = opts.force, seed = tonumber(opts.seed) or 0, style = opts.style, llm = llm,
  llm_opts = { url = opts.llm, model = opts.model }, retries = tonumber(opts.retries),
  shots = tonumber(opts.shots), temperature = tonumber(opts.temperature), quiet = opts.quiet,
})
if not ok then io.stderr:write("prompts: ", tostring(res), "\n") os.exit(1) end
if res.failed > 0 then os.exit(1) end
