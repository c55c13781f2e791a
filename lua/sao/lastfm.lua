-- sao.lastfm — Last.fm track.search and track.getTopTags, as the seed used them (drop songs
-- Last.fm cannot find; keep every top-tag name, ordered by count).
--
--   local lastfm = require "sao.lastfm"
--   if lastfm.configured() then
--     local lf = lastfm.new{ http = client }        -- LASTFM_API_KEY from the environment
--     local found = lf:search("Queen", "Bohemian Rhapsody")   -- {total = n, matches = {...}}
--     local tags = lf:top_tags("Queen", "Bohemian Rhapsody")  -- {{name=, count=}, ...}
--   end
--
-- Environment: LASTFM_API_KEY; SAO_LASTFM_URL (default https://ws.audioscrobbler.com/2.0/).
-- Requests are rate limited to 5/s for the API host (Last.fm's published guidance), cached,
-- and the key is masked everywhere. Last.fm reports errors in JSON ({"error": N, "message"});
-- "not found" (6) is an empty answer, transient codes (8, 11, 16, 29) are retried after a
-- pause and never cached, bad keys (10, 26) raise with Last.fm's message.
local http = require "sao.http"

local M = {}
local Lastfm = {}
Lastfm.__index = Lastfm

M.URL = "https://ws.audioscrobbler.com/2.0/"
M.RATE = 5

local TRANSIENT = { [8] = true, [11] = true, [16] = true, [29] = true }
local NOT_FOUND = { [6] = true }

local function env(k)
  local v = os.getenv(k)
  if v and v ~= "" then return v end
end

function M.configured() return env("LASTFM_API_KEY") ~= nil end

--- opts: api_key (default: LASTFM_API_KEY), url (default: SAO_LASTFM_URL or M.URL), http,
--- cache_dir, rate (requests/s, default 5), retries (on transient Last.fm errors, default 3),
--- pause (seconds before such a retry, default 1, doubled each time).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    api_key = opts.api_key or env("LASTFM_API_KEY"),
    url = opts.url or env("SAO_LASTFM_URL") or M.URL,
    retries = opts.retries or 3, pause = opts.pause or 1,
  }, Lastfm)
  if not self.api_key then
    error("lastfm: no API key (set LASTFM_API_KEY, or leave Last.fm off: tags then stay empty)", 2)
  end
  self.http = opts.http or http.shared(opts.cache_dir)
  local host = self.url:match("^%a+://([^/:]+)")
  if host then self.http:set_rate(host, opts.rate or M.RATE) end
  return self
end

--- Calls many methods at once: params_list = { {method=, artist=, track=, ...}, ... }.
--- Returns a list of decoded answers, or false where Last.fm says "not found".
function Lastfm:call_many(params_list)
  local out, todo = {}, {}
  for i = 1, #params_list do todo[#todo + 1] = i end
  local pause = self.pause
  for attempt = 0, self.retries do
    local specs = {}
    for k, i in ipairs(todo) do
      local q = { api_key = self.api_key, format = "json" }
      for name, v in pairs(params_list[i]) do q[name] = v end
      specs[k] = { url = self.url, query = q, secrets = { self.api_key }, cache = "errors" }
    end
    local again, last_msg = {}, nil
    for k, res in ipairs(self.http:batch(specs)) do
      local i = todo[k]
      if res.error then http.raise(res, "lastfm", "check SAO_LASTFM_URL and the network", 2) end
      local ok, t = pcall(http.decode, res, "lastfm")
      local code = ok and type(t) == "table" and tonumber(t.error)
      if code and TRANSIENT[code] then
        if res.cache_path then os.remove(res.cache_path) end   -- never keep a transient error
        again[#again + 1] = i
        last_msg = t.message
      elseif code and NOT_FOUND[code] then
        out[i] = false
      elseif code then
        local hint = (code == 10 or code == 26) and "check LASTFM_API_KEY" or nil
        http.raise({ method = res.method, url = res.url, status = res.status, body = res.body }, "lastfm", hint, 2)
      elseif not http.ok(res) then
        if res.cache_path then os.remove(res.cache_path) end
        http.raise(res, "lastfm", nil, 2)
      elseif not ok then
        error(t, 2)
      else
        out[i] = t
      end
    end
    todo = again
    if #todo == 0 then break end
    if attempt == self.retries then
      error(("lastfm: still failing after %d tries: %s (Last.fm is busy; try again later)"):format(
        self.retries + 1, tostring(last_msg)), 2)
    end
    http.sleep(pause)
    pause = pause * 2
  end
  return out
end

--- track.search: {total = n, matches = {{name, artist, listeners}, ...}} per {artist, song} pair.
function Lastfm:search_many(pairs_)
  local params = {}
  for i, p in ipairs(pairs_) do params[i] = { method = "track.search", artist = p[1], track = p[2], limit = 5 } end
  local out = {}
  for i, t in ipairs(self:call_many(params)) do
    local r = t and t.results
    local list = r and r.trackmatches and r.trackmatches.track
    if type(list) == "table" and list.name then list = { list } end   -- a lone match comes unwrapped
    local matches = {}
    for _, m in ipairs(type(list) == "table" and list or {}) do
      matches[#matches + 1] = { name = m.name, artist = m.artist, listeners = tonumber(m.listeners) }
    end
    out[i] = { total = tonumber(r and r["opensearch:totalResults"]) or #matches, matches = matches }
  end
  return out
end

function Lastfm:search(artist, song) return self:search_many({ { artist, song } })[1] end

--- track.getTopTags (autocorrect on): per pair a list {{name=, count=}, ...} ordered by count,
--- empty when the track is unknown.
function Lastfm:top_tags_many(pairs_)
  local params = {}
  for i, p in ipairs(pairs_) do params[i] = { method = "track.getTopTags", artist = p[1], track = p[2], autocorrect = 1 } end
  local out = {}
  for i, t in ipairs(self:call_many(params)) do
    local list = t and t.toptags and t.toptags.tag
    if type(list) == "table" and list.name then list = { list } end
    local tags = {}
    for _, tg in ipairs(type(list) == "table" and list or {}) do
      if type(tg.name) == "string" then
        tags[#tags + 1] = { name = tg.name, count = tonumber(tg.count) or 0, rank = #tags + 1 }
      end
    end
    table.sort(tags, function(a, b)   -- by count, ties in Last.fm's order
      if a.count ~= b.count then return a.count > b.count end
      return a.rank < b.rank
    end)
    out[i] = tags
  end
  return out
end

function Lastfm:top_tags(artist, song) return self:top_tags_many({ { artist, song } })[1] end

return M
