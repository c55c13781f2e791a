-- sao.llm — a client for OpenAI-compatible servers: POST /v1/chat/completions and
-- /v1/embeddings (llama.cpp's llama-server, Ollama, vLLM, hosted APIs).
--
--   local llm = require "sao.llm"
--   local c = llm.from_env()          -- nil when SAO_LLM_URL is unset
--   local c = llm.new{ url = "http://127.0.0.1:8080", model = "llama3.1", temperature = 0.5 }
--   local text, info = c:chat({ {role = "system", content = ".."}, {role = "user", content = ".."} },
--                             { seed = 7, max_tokens = 120 })
--   local vecs = c:embed({ "warm piano", "dark trap" })
--
-- Environment: SAO_LLM_URL (base URL, with or without /v1), SAO_LLM_MODEL, SAO_LLM_KEY (sent
-- as "Authorization: Bearer", masked everywhere). Errors from the server are raised with its
-- own message verbatim: "llm: POST <url> -> HTTP 404: model 'x' not found".
-- Answers are cached by the http client (the request body, seed included, is the key), so a
-- re-run with the same seeds asks nothing; `cache = false` turns that off.
local http = require "sao.http"

local M = {}
local Client = {}
Client.__index = Client

M.defaults = { model = "llama3.1", temperature = 0.5, top_p = 0.9, max_tokens = 160, timeout = 120,
  connect_timeout = 5, retries = 2 }

local function env(k)
  local v = os.getenv(k)
  if v and v ~= "" then return v end
end

--- "http://h:8080", "http://h:8080/", "http://h:8080/v1" → "http://h:8080/v1"
function M.base_url(url)
  url = url:gsub("/+$", "")
  url = url:gsub("/chat/completions$", "")
  if not url:match("/v1$") then url = url .. "/v1" end
  return url
end

--- opts: url, model, key, temperature, top_p, max_tokens, seed, timeout, connect_timeout,
--- retries, cache (default true), cache_dir, http (a sao.http client), extra (table merged
--- into every chat request body, e.g. {json_schema = ...} for llama.cpp).
function M.new(opts)
  opts = opts or {}
  local url = opts.url or env("SAO_LLM_URL")
  if not url then error("llm: no server URL (set SAO_LLM_URL, e.g. http://127.0.0.1:8080 for llama-server)", 2) end
  local self = setmetatable({}, Client)
  for k, v in pairs(M.defaults) do self[k] = v end
  for k, v in pairs(opts) do self[k] = v end
  self.base = M.base_url(url)
  self.model = opts.model or env("SAO_LLM_MODEL") or M.defaults.model
  self.key = opts.key or env("SAO_LLM_KEY")
  if self.cache == nil then self.cache = true end
  self.http = opts.http or http.new {
    cache_dir = opts.cache_dir, timeout = self.timeout, connect_timeout = self.connect_timeout,
    retries = self.retries, read_timeout = self.timeout, backoff = opts.backoff,
  }
  return self
end

--- A client from the environment, or nil when SAO_LLM_URL is not set.
function M.from_env(opts)
  if not (opts and opts.url) and not env("SAO_LLM_URL") then return nil end
  return M.new(opts)
end

function Client:describe()
  return ("%s (model %s)"):format(self.base, self.model)
end

function Client:post(path, body, what)
  local headers = {}
  if self.key then headers.Authorization = "Bearer " .. self.key end
  local res = self.http:request { method = "POST", url = self.base .. path, json = body, headers = headers,
    secrets = { self.key }, cache = self.cache }
  if res.error then
    http.raise(res, "llm", ("is the server at %s running? set SAO_LLM_URL"):format(self.base), 3)
  end
  if not http.ok(res) then
    if res.cache_path then os.remove(res.cache_path) end
    http.raise(res, "llm", nil, 3)
  end
  local ok, t = pcall(http.decode, res, "llm: " .. what)
  if not ok or type(t) ~= "table" then
    if res.cache_path then os.remove(res.cache_path) end   -- do not keep a broken answer
    error(ok and ("llm: " .. what .. ": the answer is not a JSON object") or t, 3)
  end
  return t, res
end

--- Sends messages ({role, content} list); returns the assistant's text (stripped) and
--- {finish_reason, usage, model, from_cache, attempts}. opts override temperature, top_p,
--- max_tokens, seed, model.
function Client:chat(messages, opts)
  opts = opts or {}
  local body = {
    model = opts.model or self.model, messages = messages, stream = false,
    temperature = opts.temperature or self.temperature, top_p = opts.top_p or self.top_p,
    max_tokens = opts.max_tokens or self.max_tokens, seed = opts.seed or self.seed,
  }
  for k, v in pairs(self.extra or {}) do body[k] = v end
  local t, res = self:post("/chat/completions", body, "chat")
  local choice = type(t.choices) == "table" and t.choices[1]
  local content = type(choice) == "table" and type(choice.message) == "table" and choice.message.content
  if type(content) ~= "string" then
    if res.cache_path then os.remove(res.cache_path) end
    local head = res.body:sub(1, 200):gsub("%s+", " ")
    error(("llm: POST %s/chat/completions -> no choices[0].message.content in the answer: %s"):format(self.base, head), 2)
  end
  content = content:gsub("^%s+", ""):gsub("%s+$", "")
  return content, { finish_reason = choice.finish_reason, usage = t.usage, model = t.model,
    from_cache = res.from_cache, attempts = res.attempts }
end

--- Embeds a list of strings; returns a list of number lists (same order).
function Client:embed(inputs, opts)
  opts = opts or {}
  local t, res = self:post("/embeddings", { model = opts.model or self.model, input = inputs }, "embeddings")
  local out = {}
  for _, d in ipairs(type(t.data) == "table" and t.data or {}) do
    out[(tonumber(d.index) or #out) + 1] = d.embedding
  end
  for i = 1, #inputs do
    if type(out[i]) ~= "table" then
      if res.cache_path then os.remove(res.cache_path) end
      error(("llm: POST %s/embeddings -> no embedding for input %d"):format(self.base, i), 2)
    end
  end
  return out
end

return M
