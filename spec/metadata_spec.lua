-- Spotify and Last.fm clients and the metadata stage against a loopback server: token with
-- Basic auth and refresh (expiry and 401), search, audio-features/analysis 403 → "unavailable"
-- said once, Last.fm tags, transient errors, bad keys reported verbatim without the key, offline
-- estimates, the strict drop rules, and a re-run that makes no request.
local fake = require "spec.support.fake"
local ojson = require "sao.ojson"
local cjson = require "cjson"
local http = require "sao.http"
local spotify = require "sao.spotify"
local lastfm = require "sao.lastfm"
local metadata = require "sao.metadata"

local ID, SECRET, KEY = "client-id-0001", "client-SECRET-9876", "lastfm-KEY-55555"

local SECTIONS = {
  { start = 0, duration = 12.5, confidence = 1, loudness = -12, tempo = 120.2, tempo_confidence = 0.8, key = 9,
    key_confidence = 0.6, mode = 0, mode_confidence = 0.5, time_signature = 4, time_signature_confidence = 1 },
  { start = 12.5, duration = 20, confidence = 0.7, loudness = -9, tempo = 121.0, tempo_confidence = 0.7, key = 9,
    key_confidence = 0.6, mode = 0, mode_confidence = 0.5, time_signature = 4, time_signature_confidence = 1 },
  { start = 32.5, duration = 30, confidence = 0.6, loudness = -8, tempo = 119.8, tempo_confidence = 0.7, key = 2,
    key_confidence = 0.5, mode = 1, mode_confidence = 0.5, time_signature = 4, time_signature_confidence = 1 },
}

local function server_config(o)
  local cfg = {
    spotify = { client_id = ID, client_secret = SECRET, token_ttl = 3600, features = 403, analysis = 403,
      tracks = { { artist = "Queen", song = "Bohemian Rhapsody", id = "trk-queen-1",
        features = { energy = 0.4, acousticness = 0.29, instrumentalness = 0.0, danceability = 0.39, valence = 0.23 },
        analysis = { track = { tempo = 120.2, key = 9, mode = 0 }, sections = SECTIONS } } } },
    lastfm = { api_key = KEY, tracks = { { artist = "Queen", song = "Bohemian Rhapsody",
      tags = { { "classic rock", 100 }, { "rock", 85 }, { "epic", 40 }, { "70s", 30 } } } } },
  }
  for k, v in pairs(o or {}) do
    if type(v) == "table" and cfg[k] then for k2, v2 in pairs(v) do cfg[k][k2] = v2 end else cfg[k] = v end
  end
  return cfg
end

describe("offline estimates", function()
  it("tells acoustic from electric, calm from energetic, voices from instruments", function()
    local piano = metadata.estimate { Instruments = { "Acoustic Grand Piano" }, tempo = 66 }
    local club = metadata.estimate { Instruments = { "Lead 2 (sawtooth)", "Synth Bass 1", "Pad 1 (new age)", "Drums",
      "Electric Guitar (clean)" }, tempo = 128 }
    assert.is_true(piano.acousticness > 0.9)
    assert.is_true(club.acousticness < 0.1)
    assert.is_true(piano.energy < 0.2, piano.energy)
    assert.is_true(club.energy > 0.8, club.energy)
    assert.equal(1, piano.instrumentalness)
    assert.equal(0.5, metadata.estimate { Instruments = { "Choir Aahs", "Strings" } }.instrumentalness)
    local prog = metadata.estimate { programs = { { program = 0 }, { program = 40 }, { program = 0, is_drum = true } }, tempo = 90 }
    assert.is_true(prog.acousticness > 0.9)
    for _, e in ipairs { piano, club, prog } do
      for _, k in ipairs { "energy", "acousticness", "instrumentalness" } do assert.is_true(e[k] >= 0 and e[k] <= 1) end
    end
  end)

  it("classifies GM programs by family", function()
    assert.equal("electric", metadata.classify_program(30))     -- distortion guitar
    assert.equal("acoustic", metadata.classify_program(24))     -- nylon guitar
    assert.equal("voice", metadata.classify_program(52))
    assert.equal("electric", metadata.classify_program(81))
    assert.equal("drums", metadata.classify_program(0, true))
  end)
end)

describe("Spotify client", function()
  local srv, tmp, logs
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() tmp = fake.tmpdir(); logs = {} end)
  after_each(function() fake.rm_rf(tmp) end)

  local function client(o)
    local d = { client_id = ID, client_secret = SECRET, api_url = srv.url .. "/v1", auth_url = srv.url .. "/api/token",
      http = http.new { cache_dir = tmp, backoff = 0.01 }, log = function(m) logs[#logs + 1] = m end }
    for k, v in pairs(o or {}) do d[k] = v end
    return spotify.new(d)
  end

  it("gets a token with Basic auth and searches", function()
    srv:configure(server_config())
    local sp = client()
    local t = sp:search("Queen", "Bohemian Rhapsody")
    assert.equal("trk-queen-1", t.id)
    assert.is_nil(sp:search("Nobody", "Nothing"))
    local tok = srv:requests("/api/token")
    assert.equal(1, #tok)
    assert.equal("Basic " .. http.base64(ID .. ":" .. SECRET), tok[1].headers.authorization)
    assert.equal("grant_type=client_credentials", tok[1].body)
    local s = srv:requests("/v1/search")
    assert.equal("Queen Bohemian Rhapsody", s[1].query:match("q=([^&]+)"):gsub("%%20", " "))
    assert.truthy(s[1].headers.authorization:match("^Bearer BQ%-token%-1"))
  end)

  it("refreshes the token before it expires and after a 401", function()
    srv:configure(server_config { spotify = { token_ttl = 1 } })
    local sp = client { http = http.new { cache_dir = false, backoff = 0.01 } }
    sp:search("Queen", "Bohemian Rhapsody")
    http.sleep(1.0)
    sp:search("Queen", "Bohemian Rhapsody")
    assert.equal(2, #srv:requests("/api/token"))
    srv:configure(server_config { spotify = { revoke = { ["1"] = true } } })
    local sp2 = client { http = http.new { cache_dir = false } }
    assert.equal("trk-queen-1", sp2:search("Queen", "Bohemian Rhapsody").id)
    assert.equal(2, #srv:requests("/api/token"))            -- token 1 refused with 401, token 2 used
    assert.equal(2, #srv:requests("/v1/search"))
  end)

  it("treats 403 on audio-features/analysis as unavailable and says so once", function()
    srv:configure(server_config())
    local sp = client()
    local f, why = sp:audio_features("trk-queen-1")
    assert.is_nil(f)
    assert.equal("unavailable", why)
    assert.is_nil(sp:audio_analysis("trk-queen-1"))
    assert.is_nil(sp:audio_features("trk-queen-1"))
    assert.equal(1, #logs)
    assert.truthy(logs[1]:find("403", 1, true))
    assert.equal(1, #srv:requests("/v1/audio"))              -- asked once
    -- a new run with the same cache: the 403 comes from the cache
    srv:mark()
    local again = client { http = http.new { cache_dir = tmp } }
    assert.is_nil(again:audio_features("trk-queen-1"))
    assert.equal(0, #srv:requests())
  end)

  it("reads features and analysis sections when the app has access", function()
    srv:configure(server_config { spotify = { features = "ok", analysis = "ok" } })
    local sp = client()
    local f = sp:audio_features("trk-queen-1")
    assert.equal(0.4, f.energy)
    local a = sp:audio_analysis("trk-queen-1")
    assert.equal(3, #a.sections)
    assert.equal(9, a.track.key)
  end)

  it("reports bad credentials with the server's words, never the secret", function()
    srv:configure(server_config())
    local sp = client { client_secret = "wrong-secret-0000" }
    local ok, err = pcall(sp.search, sp, "Queen", "Bohemian Rhapsody")
    assert.is_false(ok)
    assert.truthy(err:find("invalid_client: Invalid client secret", 1, true), err)
    assert.truthy(err:find("SPOTIFY_CLIENT_SECRET", 1, true), err)
    assert.is_nil(err:find("wrong-secret-0000", 1, true))
    assert.is_nil(err:find(http.base64(ID .. ":wrong-secret-0000"), 1, true))
  end)

  it("refuses to start without credentials, with a hint", function()
    local ok, err = pcall(spotify.new, { client_id = false, client_secret = false })
    if ok then return end                                       -- credentials set in this environment
    assert.truthy(err:find("SPOTIFY_CLIENT_ID", 1, true))
  end)
end)

describe("Last.fm client", function()
  local srv, tmp
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() tmp = fake.tmpdir() end)
  after_each(function() fake.rm_rf(tmp) end)

  local function client(o)
    local d = { api_key = KEY, url = srv.url .. "/2.0/", http = http.new { cache_dir = tmp, backoff = 0.01 },
      rate = 100, pause = 0.05 }
    for k, v in pairs(o or {}) do d[k] = v end
    return lastfm.new(d)
  end

  it("searches and reads top tags in count order", function()
    srv:configure(server_config())
    local lf = client()
    local r = lf:search("Queen", "Bohemian Rhapsody")
    assert.equal(1, r.total)
    assert.equal("Bohemian Rhapsody", r.matches[1].name)
    assert.equal(0, lf:search("Nobody", "Nothing").total)
    local tags = lf:top_tags("Queen", "Bohemian Rhapsody")
    assert.same({ "classic rock", "rock", "epic", "70s" }, { tags[1].name, tags[2].name, tags[3].name, tags[4].name })
    assert.same({}, lf:top_tags("Nobody", "Nothing"))            -- error 6: not found
    local q = srv:requests()[1].query
    assert.truthy(q:find("format=json", 1, true))
    assert.truthy(q:find("method=track.search", 1, true))
  end)

  it("retries transient errors without caching them", function()
    srv:configure(server_config { routes = { ["/2.0/"] = { { status = 200, json = { error = 29, message = "Rate Limit Exceeded" } },
      { pass = true } } } })
    local tags = client():top_tags("Queen", "Bohemian Rhapsody")
    assert.equal(4, #tags)
    assert.equal(2, #srv:requests())
    srv:mark()
    client():top_tags("Queen", "Bohemian Rhapsody")               -- the good answer is cached
    assert.equal(0, #srv:requests())
  end)

  it("reports a bad key in Last.fm's words without the key", function()
    srv:configure(server_config())
    local lf = client { api_key = "bad-KEY-77777" }
    local ok, err = pcall(lf.search, lf, "Queen", "Bohemian Rhapsody")
    assert.is_false(ok)
    assert.truthy(err:find("Invalid API key", 1, true), err)
    assert.truthy(err:find("LASTFM_API_KEY", 1, true), err)
    assert.is_nil(err:find("bad-KEY-77777", 1, true), err)
  end)
end)

describe("metadata stage", function()
  local srv, out, clips
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function()
    out = fake.tmpdir()
    clips = out .. "/dataset/clips"
    local songs = { { "Queen", "Bohemian Rhapsody", 2 }, { "Nobody", "Nothing", 1 } }
    for _, s in ipairs(songs) do
      os.execute("mkdir -p '" .. clips .. "/" .. s[1] .. "/" .. s[2] .. "'")
      for i = 1, s[3] do
        local c = ojson.object({ Song = s[2], Artist = s[1], Tags = ojson.array {}, duration_ms = 30000,
          Instruments = { "Acoustic Grand Piano", "Overdriven Guitar", "Drums" }, key = "A", mode = "Minor", tempo = 120,
          sections = ojson.array {}, start = (i - 1) * 30, duration = 30 },
          { "Song", "Artist", "Tags", "Instruments", "duration_ms", "key", "mode", "tempo", "sections", "start", "duration" })
        local p = ("%s/%s/%s/clip-%03d"):format(clips, s[1], s[2], i)
        ojson.write(p .. ".json", c)
        io.open(p .. ".wav", "wb"):close()
      end
    end
  end)
  after_each(function() fake.rm_rf(out) end)

  local function services(o)
    local logs = {}
    local h = http.new { cache_dir = out .. "/cache/http", backoff = 0.01 }
    local s = {
      lastfm = lastfm.new { api_key = KEY, url = srv.url .. "/2.0/", http = h, rate = 100 },
      spotify = spotify.new { client_id = ID, client_secret = SECRET, api_url = srv.url .. "/v1",
        auth_url = srv.url .. "/api/token", http = h, log = function(m) logs[#logs + 1] = m end },
      quiet = true, log = function(m) logs[#logs + 1] = m end,
    }
    for k, v in pairs(o or {}) do s[k] = v end
    return s, logs
  end

  it("fills offline estimates without any API", function()
    local sum = metadata.stage(clips, { lastfm = false, spotify = false, quiet = true, strict = true })
    assert.equal(3, sum.updated)
    assert.equal(0, sum.dropped)
    local c = ojson.read(clips .. "/Queen/Bohemian Rhapsody/clip-001.json")
    assert.equal("estimate", c.metadata_sources.features)
    assert.equal("none", c.metadata_sources.tags)
    assert.is_number(c.energy)
    assert.is_number(c.acousticness)
    assert.equal(1, c.instrumentalness)
    assert.truthy(io.open(clips .. "/Queen/Bohemian Rhapsody/clip-001.json"):read("*a"):find('"Tags": %[%]'))
  end)

  it("fills Tags from Last.fm, falls back when Spotify answers 403, and keeps every song unless strict", function()
    srv:configure(server_config())
    local opts, logs = services()
    local sum = metadata.stage(clips, opts)
    assert.equal(3, sum.updated)
    local c = ojson.read(clips .. "/Queen/Bohemian Rhapsody/clip-002.json")
    assert.same({ "classic rock", "rock", "epic", "70s" }, c.Tags)
    assert.equal("lastfm", c.metadata_sources.tags)
    assert.equal("estimate", c.metadata_sources.features)
    assert.equal("trk-queen-1", c.metadata_sources.spotify_id)
    local said = 0
    for _, l in ipairs(logs) do if l:find("403", 1, true) then said = said + 1 end end
    assert.equal(1, said)
    -- a forced re-run asks nothing: every answer is cached (the 403 too)
    srv:mark()
    local opts2 = services { force = true }
    metadata.stage(clips, opts2)
    assert.equal(0, #srv:requests())
  end)

  it("uses Spotify features and the sections that overlap each clip", function()
    srv:configure(server_config { spotify = { features = "ok", analysis = "ok" } })
    metadata.stage(clips, (services { key_source = "spotify" }))
    local c1 = ojson.read(clips .. "/Queen/Bohemian Rhapsody/clip-001.json")   -- 0-30 s
    local c2 = ojson.read(clips .. "/Queen/Bohemian Rhapsody/clip-002.json")   -- 30-60 s
    assert.equal(0.4, c1.energy)
    assert.equal("spotify", c1.metadata_sources.features)
    assert.equal(2, #c1.sections)
    assert.equal(2, #c2.sections)
    assert.equal(12.5, c2.sections[1].start)
    assert.equal("A", c1.key)
    assert.equal("Minor", c1.mode)
    assert.equal(120, c1.tempo)
  end)

  it("applies the seed's drop rules with --strict-metadata, moving files aside", function()
    srv:configure(server_config())
    local sum = metadata.stage(clips, (services { strict = true }))
    assert.equal(2, sum.updated)
    assert.equal(1, sum.dropped)
    assert.is_nil(io.open(clips .. "/Nobody/Nothing/clip-001.json"))
    local moved = ojson.read(out .. "/dataset/dropped/Nobody/Nothing/clip-001.json")
    assert.equal("lastfm: no match", moved.dropped)
    assert.truthy(io.open(out .. "/dataset/dropped/Nobody/Nothing/clip-001.wav"))
    local line = io.open(out .. "/dataset/dropped/dropped.jsonl"):read("*l")
    assert.equal("lastfm: no match", cjson.decode(line).reason)
  end)

  it("never writes a secret into clips, cache or logs", function()
    srv:configure(server_config())
    local opts, logs = services()
    metadata.stage(clips, opts)
    local p = io.popen("grep -rl -e '" .. SECRET .. "' -e '" .. KEY .. "' -e 'BQ-token' '" .. out .. "' 2>/dev/null")
    local hits = p:read("*a")
    p:close()
    assert.equal("", hits)
    assert.is_nil(table.concat(logs, "\n"):find(SECRET, 1, true))
  end)
end)
