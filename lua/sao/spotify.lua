-- sao.spotify — the Spotify Web API pieces the seed used: client-credentials token (refreshed
-- before it expires and after a 401), track search, audio-features and audio-analysis sections.
--
--   local spotify = require "sao.spotify"
--   if spotify.configured() then
--     local sp = spotify.new{ http = client }            -- credentials from the environment
--     local track = sp:search("The Beatles", "Let It Be")  -- {id, name, artist, duration_ms} | nil
--     local f = sp:audio_features(track.id)               -- nil, "unavailable" after a 403
--   end
--
-- Environment: SPOTIFY_CLIENT_ID, SPOTIFY_CLIENT_SECRET; SAO_SPOTIFY_URL (API base, default
-- https://api.spotify.com/v1) and SAO_SPOTIFY_AUTH_URL (token endpoint) for tests and proxies.
-- audio-features and audio-analysis answer 403 for apps registered after 27 Nov 2024: the first
-- 403 marks both unavailable for this client, is said once through `log`, and callers fall back
-- to offline estimates. 403s are cached (TTL of the http client), so a re-run asks no more.
local http = require "sao.http"

local M = {}
local Spotify = {}
Spotify.__index = Spotify

M.API_URL = "https://api.spotify.com/v1"
M.AUTH_URL = "https://accounts.spotify.com/api/token"

local function env(k)
  local v = os.getenv(k)
  if v and v ~= "" then return v end
end

function M.configured()
  return env("SPOTIFY_CLIENT_ID") ~= nil and env("SPOTIFY_CLIENT_SECRET") ~= nil
end

--- opts: client_id, client_secret (default: environment), api_url, auth_url, http (a sao.http
--- client; default: a shared one on cache_dir), cache_dir, log (function(msg); default stderr).
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({
    client_id = opts.client_id or env("SPOTIFY_CLIENT_ID"),
    client_secret = opts.client_secret or env("SPOTIFY_CLIENT_SECRET"),
    api_url = (opts.api_url or env("SAO_SPOTIFY_URL") or M.API_URL):gsub("/+$", ""),
    auth_url = opts.auth_url or env("SAO_SPOTIFY_AUTH_URL") or M.AUTH_URL,
    log = opts.log or function(msg) io.stderr:write(msg, "\n") end,
    token = nil, token_expires = 0, token_margin = 0, token_requests = 0,
    unavailable = false,
  }, Spotify)
  if not self.client_id or not self.client_secret then
    error("spotify: no credentials (set SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET, " ..
          "or leave Spotify off: sao then uses offline estimates)", 2)
  end
  self.basic = http.base64(self.client_id .. ":" .. self.client_secret)
  self.http = opts.http or http.shared(opts.cache_dir)
  return self
end

function Spotify:secrets()
  return { self.client_secret, self.basic, self.token }
end

--- Returns a valid access token, asking for a new one when there is none, it expires within a
--- minute, or force is set.
function Spotify:access_token(force)
  if not force and self.token and http.clock() < self.token_expires - self.token_margin then return self.token end
  self.token_requests = self.token_requests + 1
  local res = self.http:request {
    method = "POST", url = self.auth_url, cache = false,
    headers = { Authorization = "Basic " .. self.basic, ["Content-Type"] = "application/x-www-form-urlencoded" },
    body = "grant_type=client_credentials", secrets = self:secrets(),
  }
  if not http.ok(res) then
    http.raise(res, "spotify: token", "check SPOTIFY_CLIENT_ID / SPOTIFY_CLIENT_SECRET", 2)
  end
  local t = http.decode(res, "spotify: token", 2)
  if type(t.access_token) ~= "string" then error("spotify: token answer has no access_token", 2) end
  self.token = t.access_token
  -- refreshed a minute before it lapses (a tenth of its life for short-lived test tokens)
  local ttl = tonumber(t.expires_in) or 3600
  self.token_expires, self.token_margin = http.clock() + ttl, math.min(60, ttl * 0.1)
  return self.token
end

--- GETs api_url..path for each {path, query, cache} in list, concurrently. Cached answers need
--- no token; the others carry one, and a 401 refreshes it once and retries. Returns responses.
function Spotify:get_many(list)
  local specs = {}
  for i, it in ipairs(list) do
    specs[i] = { url = self.api_url .. it.path, query = it.query, cache = it.cache or true,
      cache_only = true, secrets = self:secrets() }
  end
  local out = self.http:batch(specs)
  local miss = {}
  for i, r in ipairs(out) do
    if not r.from_cache then miss[#miss + 1] = i end
  end
  for round = 1, 2 do
    if #miss == 0 then break end
    local tok = self:access_token(round == 2)
    local s2 = {}
    for k, i in ipairs(miss) do
      s2[k] = { url = specs[i].url, query = specs[i].query, cache = specs[i].cache,
        headers = { Authorization = "Bearer " .. tok }, secrets = self:secrets() }
    end
    local got = self.http:batch(s2)
    local again = {}
    for k, i in ipairs(miss) do
      out[i] = got[k]
      if got[k].status == 401 then again[#again + 1] = i end
    end
    miss = again
  end
  return out
end

local function check(res, what)
  if http.ok(res) then return http.decode(res, "spotify: " .. what, 3) end
  http.raise(res, "spotify: " .. what, nil, 3)
end

--- Search "<artist> <song>" (as the seed did), limit 1. Returns {id, name, artist, duration_ms}
--- or nil when nothing matches. pairs: many at once with search_many.
function Spotify:search_many(pairs_)
  local list = {}
  for i, p in ipairs(pairs_) do
    list[i] = { path = "/search", query = { q = p[1] .. " " .. p[2], type = "track", limit = 1 } }
  end
  local out = {}
  for i, res in ipairs(self:get_many(list)) do
    local t = check(res, "search")
    local item = type(t.tracks) == "table" and type(t.tracks.items) == "table" and t.tracks.items[1]
    if item then
      local artist = type(item.artists) == "table" and item.artists[1] and item.artists[1].name
      out[i] = { id = item.id, name = item.name, artist = artist, duration_ms = item.duration_ms }
    else
      out[i] = false
    end
  end
  return out
end

function Spotify:search(artist, song)
  return self:search_many({ { artist, song } })[1] or nil
end

function Spotify:mark_unavailable(res)
  if not self.unavailable then
    self.unavailable = true
    self.log(("spotify: audio-features/audio-analysis answered HTTP %d (%s): Spotify closed them to " ..
      "apps registered after 27 Nov 2024; using offline estimates for energy, acousticness, " ..
      "instrumentalness and sections"):format(res.status, http.server_message(res.body)))
  end
end

--- audio_features for many track ids (one request per 100). Returns a list aligned with ids:
--- a table, or false (no features for that id); or nil, "unavailable" after a 403.
function Spotify:audio_features_many(ids)
  if self.unavailable then return nil, "unavailable" end
  local list, out = {}, {}
  for i = 1, #ids, 100 do
    list[#list + 1] = { path = "/audio-features", query = { ids = table.concat(ids, ",", i, math.min(i + 99, #ids)) },
      cache = "errors" }
  end
  for k, res in ipairs(self:get_many(list)) do
    if res.status == 403 then self:mark_unavailable(res) return nil, "unavailable" end
    local t = check(res, "audio-features")
    for j, f in ipairs(type(t.audio_features) == "table" and t.audio_features or {}) do
      out[(k - 1) * 100 + j] = type(f) == "table" and f or false
    end
  end
  for i = 1, #ids do if out[i] == nil then out[i] = false end end
  return out
end

function Spotify:audio_features(id)
  local out, why = self:audio_features_many({ id })
  if not out then return nil, why end
  return out[1] or nil
end

--- audio-analysis for many ids: list of {track = {tempo, key, mode, ...}, sections = {...}} or
--- false; nil, "unavailable" after a 403.
function Spotify:audio_analysis_many(ids)
  if self.unavailable then return nil, "unavailable" end
  local list = {}
  for i, id in ipairs(ids) do list[i] = { path = "/audio-analysis/" .. http.urlencode(id), cache = "errors" } end
  local out = {}
  for i, res in ipairs(self:get_many(list)) do
    if res.status == 403 then self:mark_unavailable(res) return nil, "unavailable" end
    if res.status == 404 then
      out[i] = false
    else
      local t = check(res, "audio-analysis")
      out[i] = { track = t.track, sections = t.sections }
    end
  end
  return out
end

function Spotify:audio_analysis(id)
  local out, why = self:audio_analysis_many({ id })
  if not out then return nil, why end
  return out[1] or nil
end

return M
