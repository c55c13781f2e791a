-- sao.http — HTTP for metadata APIs and LLM servers, on runtime/http.c (libcurl).
--
--   local http = require "sao.http"
--   local client = http.new{ cache_dir = OUT .. "/cache/http", rates = { ["ws.audioscrobbler.com"] = 5 } }
--   local r = client:request{ url = "https://example.org/x", query = { q = "a b" } }
--   -- r.status, r.body, r.headers (lower-case names), r.attempts, r.from_cache, r.error, r.log
--   local obj = client:get_json(url, { query = ..., secrets = { key } })   -- raises on failure
--   local rs = client:batch{ req1, req2, ... }                             -- concurrent
--
-- Retries, backoff, Retry-After, rate limits and the cache live in C (see sao_http.h); this file
-- turns Lua tables into requests and answers into tables, and raises readable errors. Secrets
-- given in `secrets` (and the credentials inside Authorization headers) are masked in every
-- message, log line, cache key and cache file. docs/http.md is the user guide.
local ffi = require "ffi"
local bit = require "bit"
local cjson = require "cjson"
local sao = require "sao"
local ojson = require "sao.ojson"

local C, ctx = sao.C, sao.ctx
local M = {}

-- Defaults, one per sao_http_opts field (seconds unless said otherwise).
M.defaults = {
  connect_timeout = 10, timeout = 120, read_timeout = 30,
  retries = 4, backoff = 0.5, backoff_max = 30, jitter = 0.25, retry_after_max = 120,
  rate = 0,              -- request starts per second per host (0 = unlimited); `rates` per host
  parallel = 8,          -- transfers in flight in one batch
  max_body = 64 * 2 ^ 20,
  ttl = 30 * 86400,      -- cache entries older than this are fetched again (0 = never expire)
  seed = 1440,
}

---------------------------------------------------------------------------------------------
-- small helpers
---------------------------------------------------------------------------------------------

--- Percent-encodes s (RFC 3986: letters, digits and -._~ stay).
function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- "a=1&b=x%20y" from a table, keys sorted (stable URLs make stable cache keys).
function M.query(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = M.urlencode(k) .. "=" .. M.urlencode(t[k]) end
  return table.concat(out, "&")
end

local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
    local q = {}
    for j = 3, 0, -1 do q[#q + 1] = bit.band(bit.rshift(n, 6 * j), 63) + 1 end
    out[#out + 1] = b64:sub(q[1], q[1]) .. b64:sub(q[2], q[2]) ..
      (b and b64:sub(q[3], q[3]) or "=") .. (c and b64:sub(q[4], q[4]) or "=")
  end
  return table.concat(out)
end

function M.sha256(s)
  local out = ffi.new("char[65]")
  sao.check(C.sao_sha256_hex(ctx, s, #s, out))
  return ffi.string(out, 64)
end

--- Monotonic seconds.
function M.clock()
  local t = ffi.new("double[1]")
  C.sao_http_clock(ctx, t)
  return t[0]
end

--- Sleeps s seconds; raises when interrupted (Ctrl-C).
function M.sleep(s) sao.check(C.sao_http_sleep(ctx, s)) end

local function join_secrets(...)
  local out, seen = {}, {}
  for i = 1, select("#", ...) do
    local list = select(i, ...)
    for _, s in ipairs(list or {}) do
      s = tostring(s)
      if #s >= 4 and not seen[s] and not s:find("\n", 1, true) then
        seen[s] = true
        out[#out + 1] = s
      end
    end
  end
  return table.concat(out, "\n")
end

--- Masks secrets (a list) and sensitive query parameters in text.
function M.redact(text, secrets)
  text = tostring(text)
  local cap = #text * 2 + 64
  local out = ffi.new("char[?]", cap)
  sao.check(C.sao_http_redact(ctx, text, join_secrets(secrets), out, cap))
  return ffi.string(out)
end

--- The message a server put in an error body, verbatim: OpenAI {"error":{"message"}}, Spotify
--- {"error":{"message"}} / {"error","error_description"}, Last.fm {"error":N,"message"}, else the
--- body itself (trimmed, first 500 bytes).
function M.server_message(body)
  body = body or ""
  local ok, t = pcall(cjson.decode, body)
  if ok and type(t) == "table" then
    local e = t.error
    if type(e) == "table" and type(e.message) == "string" then return e.message end
    if type(e) == "string" then
      return t.error_description and (e .. ": " .. tostring(t.error_description)) or e
    end
    if type(t.message) == "string" then return t.message end
    if type(t.detail) == "string" then return t.detail end
  end
  body = body:gsub("^%s+", ""):gsub("%s+$", "")
  if #body > 500 then body = body:sub(1, 500) .. "…" end
  return body
end

local function parse_headers(text)
  local h = {}
  for line in (text or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:%s]+):%s*(.-)%s*$")
    if k then h[k:lower()] = v end
  end
  return h
end

---------------------------------------------------------------------------------------------
-- the client
---------------------------------------------------------------------------------------------
local Client = {}
Client.__index = Client
M.Client = Client

--- Creates a client. opts: the keys of M.defaults, plus cache_dir (nil/false: no cache; the
--- environment's SAO_HTTP_CACHE is used when cache_dir is nil; "off" disables), rates
--- ({host = per_second}), secrets (list masked in everything), user_agent, and log (a function
--- receiving each attempt's line, already masked; default: silent unless verbose = true).
function M.new(opts)
  opts = opts or {}
  local d = M.defaults
  local function get(k) if opts[k] ~= nil then return opts[k] end return d[k] end
  local cache_dir = opts.cache_dir
  if cache_dir == nil then cache_dir = os.getenv("SAO_HTTP_CACHE") end
  if cache_dir == "off" or cache_dir == "" or cache_dir == false then cache_dir = nil end
  local o = ffi.new("sao_http_opts")
  sao.check(C.sao_http_opts_init(ctx, o))
  o.connect_timeout_s = get("connect_timeout")
  o.timeout_s = get("timeout")
  o.read_timeout_s = get("read_timeout")
  o.max_retries = get("retries")
  o.backoff_base_s = get("backoff")
  o.backoff_max_s = get("backoff_max")
  o.jitter = get("jitter")
  o.retry_after_max_s = get("retry_after_max")
  o.rate_per_s = get("rate")
  o.max_parallel = get("parallel")
  o.max_body = get("max_body")
  o.cache_ttl_s = get("ttl")
  o.seed = get("seed")
  o.cache_dir = cache_dir
  o.user_agent = opts.user_agent
  local h = ffi.gc(sao.checkp(C.sao_http_new(ctx, o)), C.sao_http_free)
  local self = setmetatable({ h = h, cache_dir = cache_dir, secrets = opts.secrets or {},
    log = opts.log or (opts.verbose and function(line) io.stderr:write("http: ", line, "\n") end) or nil,
  }, Client)
  for host, rate in pairs(opts.rates or {}) do self:set_rate(host, rate) end
  return self
end

function Client:set_rate(host, per_second)
  sao.check(C.sao_http_set_host_rate(ctx, self.h, host, per_second))
end

--- Counters since the client was made.
function Client:stats()
  local s = ffi.new("int64_t[6]")
  sao.check(C.sao_http_stats(ctx, self.h, s))
  return { transfers = tonumber(s[0]), cache_hits = tonumber(s[1]), retries = tonumber(s[2]),
    failures = tonumber(s[3]), cache_writes = tonumber(s[4]), bytes = tonumber(s[5]) }
end

-- Header list from {Name = value} or {"Name: value", ...}; credentials found in Authorization
-- headers are added to the request's secrets.
local function header_text(headers, secrets)
  local lines = {}
  for k, v in pairs(headers or {}) do
    local line = type(k) == "number" and tostring(v) or (k .. ": " .. tostring(v))
    lines[#lines + 1] = line
    local name, val = line:match("^([^:]+):%s*(.*)$")
    if name and name:lower() == "authorization" then
      local cred = val:match("^%a+%s+(.+)$") or val
      secrets[#secrets + 1] = cred
    end
  end
  table.sort(lines)
  return table.concat(lines, "\n")
end

local function prepare(self, spec)
  local url = spec.url or error("http: request without url", 3)
  if spec.query then
    local q = M.query(spec.query)
    if q ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. q end
  end
  local headers = {}
  for k, v in pairs(spec.headers or {}) do headers[k] = v end
  local body = spec.body
  if spec.json ~= nil then
    body = ojson.encode(spec.json)                -- sorted keys: the same table, the same bytes
    if not headers["Content-Type"] then headers["Content-Type"] = "application/json" end
  end
  local method = spec.method or (body and "POST" or "GET")
  local extra = {}
  local htext = header_text(headers, extra)
  local cache = spec.cache
  if cache == nil then cache = self.cache_dir ~= nil and method == "GET" end
  local list = {}
  for _, l in ipairs { self.secrets, spec.secrets or {}, extra } do
    for _, v in ipairs(l) do list[#list + 1] = v end
  end
  return { method = method, url = url, headers = htext, body = body,
    secret_list = list, secrets = join_secrets(list),
    cache = (cache == "errors" and 2) or (cache and 1) or 0, cache_only = spec.cache_only and 1 or 0 }
end

--- Runs a list of requests concurrently; returns a list of responses (same order). A request:
--- { url, method ("GET", or "POST" with a body), query = {..}, headers = {..}, body = "..",
---   json = table (sent as JSON), secrets = {..}, cache = true | false | "errors" (default:
---   GET requests when the client has a cache), cache_only = true }.
--- A response: { status, body, headers, attempts, from_cache, elapsed, waited, error, log,
---   cache_path, retryable, url (masked), method }.
function Client:batch(specs)
  local n = #specs
  if n == 0 then return {} end
  local preps = {}
  local reqs = ffi.new("sao_http_request[?]", n)
  local resps = ffi.new("sao_http_response[?]", n)
  for i = 1, n do
    local p = prepare(self, specs[i])
    preps[i] = p                                   -- keeps the strings alive during the call
    local q = reqs[i - 1]
    q.method, q.url, q.headers = p.method, p.url, p.headers
    q.body = p.body
    q.body_len = p.body and #p.body or 0
    q.secrets = p.secrets
    q.cache, q.cache_only = p.cache, p.cache_only
  end
  local rc = C.sao_http_perform(ctx, self.h, n, reqs, resps)
  local out = {}
  for i = 1, n do
    local r = resps[i - 1]
    local function str(p) return p ~= nil and ffi.string(p) or nil end
    local res = {
      status = r.status, attempts = r.attempts, from_cache = r.from_cache == 1,
      retryable = r.retryable == 1, elapsed = r.elapsed_s, waited = r.waited_s,
      body = r.body ~= nil and ffi.string(r.body, r.body_len) or "",
      header_text = str(r.headers) or "", error = str(r.error), log = str(r.log) or "",
      cache_path = str(r.cache_path), method = preps[i].method,
      url = M.redact(preps[i].url, preps[i].secret_list),
    }
    res.headers = parse_headers(res.header_text)
    C.sao_http_response_clear(ctx, r)
    out[i] = res
    if self.log and res.log ~= "" then
      for line in res.log:gmatch("[^\n]+") do self.log(line) end
    end
  end
  sao.check(rc)
  return out
end

function Client:request(spec) return self:batch({ spec })[1] end

--- Raises a readable error for a response that is not a 2xx answer: the transport error, or
--- "HTTP <status>: <the server's own message, verbatim>". what names the caller ("spotify").
function M.raise(res, what, hint, level)
  local msg
  if res.error then
    msg = res.error
  else
    msg = ("%s %s -> HTTP %d: %s"):format(res.method, res.url, res.status, M.server_message(res.body))
  end
  if hint then msg = msg .. " (" .. hint .. ")" end
  error((what and (what .. ": ") or "http: ") .. msg, (level or 1) + 1)
end

function M.ok(res) return res.error == nil and res.status >= 200 and res.status < 300 end

--- Decodes a response body as JSON, or raises naming the URL and the start of the body.
function M.decode(res, what, level)
  local ok, v = pcall(cjson.decode, res.body)
  if not ok then
    local head = res.body:sub(1, 200):gsub("%s+", " ")
    error(("%s: %s %s -> the answer is not JSON (%s): %q"):format(what or "http", res.method, res.url,
      tostring(v):gsub("^.-: ", ""), head), (level or 1) + 1)
  end
  return v
end

--- GET (or spec.method) and decode JSON; raises on transport errors, non-2xx and bad JSON.
function Client:get_json(url, spec)
  spec = spec or {}
  spec.url = url
  local res = self:request(spec)
  if not M.ok(res) then M.raise(res, spec.what, spec.hint, 2) end
  return M.decode(res, spec.what, 2), res
end

--- POST a table as JSON and decode the JSON answer (raises like get_json).
function Client:post_json(url, tbl, spec)
  spec = spec or {}
  spec.url, spec.json, spec.method = url, tbl, spec.method or "POST"
  local res = self:request(spec)
  if not M.ok(res) then M.raise(res, spec.what, spec.hint, 2) end
  return M.decode(res, spec.what, 2), res
end

-- One client per cache folder, shared by the API clients of a run.
local shared = {}
function M.shared(cache_dir, opts)
  local key = cache_dir or os.getenv("SAO_HTTP_CACHE") or "(none)"
  if not shared[key] then
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.cache_dir = cache_dir
    shared[key] = M.new(o)
  end
  return shared[key]
end

return M
