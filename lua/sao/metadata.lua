-- sao.metadata — the metadata stage: fills the seed's clip JSON fields from Last.fm (Tags) and
-- Spotify (energy, acousticness, instrumentalness, danceability, valence, sections), with
-- offline estimates wherever an API is not configured or not available (Spotify's
-- audio-features/analysis answer 403 to new apps). The seed's drop rules (no Last.fm match,
-- no Spotify match) apply only when asked (strict = true, `--strict-metadata`).
--
--   local metadata = require "sao.metadata"
--   metadata.stage("out/dataset/clips", { strict = false })   -- or metadata.run(recipe_opts)
--   metadata.estimate(clip)   -- {energy, acousticness, instrumentalness} from the clip alone
--
-- Clips are grouped by song (Artist, Song; from the path clips/<Artist>/<Song>/ when absent) so
-- each song is looked up once; songs are looked up in concurrent batches. Every clip gets
-- "metadata_sources" saying where each field came from. A clip that already has it is left alone
-- unless force is set. Dropped songs move to <OUT>/dataset/dropped/ (same layout), listed with
-- their reason in dropped/dropped.jsonl; nothing is deleted.
local ojson = require "sao.ojson"

local M = {}

local PITCH = { [0] = "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B" }

---------------------------------------------------------------------------------------------
-- offline estimates (DSP_SPEC §3.8): heuristics, documented in docs/prompts.md
---------------------------------------------------------------------------------------------
local ELECTRIC_WORDS = { "electric", "synth", "distortion", "distorted", "overdriven", "lead", "pad", "fx",
  "effect", "organ", "808", "saw", "square", "sweep", "chiffer", "charang", "fifths", "calliope",
  "helicopter", "gunshot", "applause", "seashore", "bird tweet", "telephone", "breath noise",
  "fret noise", "reverse cymbal" }
local VOICE_WORDS = { "choir", "voice", "aahs", "oohs", "vocal", "singer" }
local DRUM_WORDS = { "drum", "percussion", "kit" }
local ACOUSTIC_WORDS = { "piano", "guitar", "bass", "violin", "viola", "cello", "string", "harp", "trumpet",
  "trombone", "horn", "tuba", "brass", "sax", "clarinet", "oboe", "bassoon", "flute", "piccolo",
  "recorder", "pipe", "whistle", "ocarina", "accordion", "harmonica", "marimba", "xylophone",
  "vibraphone", "glockenspiel", "celesta", "bell", "timpani", "banjo", "sitar", "koto", "shamisen",
  "kalimba", "bagpipe", "fiddle", "shanai", "woodblock", "taiko", "harpsichord", "clavi", "dulcimer",
  "music box", "tinkle", "agogo", "contrabass", "tremolo", "pizzicato", "orchestra", "ensemble",
  "english horn", "pan flute", "blown bottle", "shakuhachi", "steel drums" }

local function has_word(s, words)
  for _, w in ipairs(words) do if s:find(w) then return true end end
  return false
end

--- "acoustic" | "electric" | "voice" | "drums" | nil for an instrument name.
function M.classify_name(name)
  local s = tostring(name):lower()
  if has_word(s, VOICE_WORDS) then return (s:find("synth") or s:find("lead")) and "electric" or "voice" end
  if s:find("steel drums") or s:find("church organ") or s:find("reed organ") then return "acoustic" end
  if has_word(s, DRUM_WORDS) then return "drums" end
  if has_word(s, ELECTRIC_WORDS) then return "electric" end
  if has_word(s, ACOUSTIC_WORDS) then return "acoustic" end
  return nil
end

--- The same for a General MIDI program (0-127) and drum flag (DSP_SPEC §3.8 families).
function M.classify_program(p, is_drum)
  if is_drum then return "drums" end
  if p == 52 or p == 53 then return "voice" end
  if p == 54 or p == 85 then return "electric" end
  if (p >= 16 and p <= 18) or (p >= 26 and p <= 31) or (p >= 33 and p <= 39) or p == 50 or p == 51
    or (p >= 80 and p <= 103) or p >= 120 or p == 62 or p == 63 or p == 4 or p == 5 then
    return "electric"
  end
  return "acoustic"
end

local function logistic(x) return 1 / (1 + math.exp(-x)) end

local function num(v) return type(v) == "number" and v == v and v or tonumber(v) end

--- Offline energy, acousticness and instrumentalness for a clip, from what the dataset stage
--- wrote: Instruments (names) or programs ({program, is_drum} list), tempo, and when present
--- note_density (notes/s) and mean_velocity (0-127). Heuristics, each in [0, 1].
function M.estimate(clip)
  local counts = { acoustic = 0, electric = 0, voice = 0, drums = 0 }
  local n = 0
  if type(clip.programs) == "table" and #clip.programs > 0 then
    for _, p in ipairs(clip.programs) do
      local prog = type(p) == "table" and num(p.program) or num(p)
      local drum = type(p) == "table" and (p.is_drum == true or p.is_drum == 1)
      local c = prog and M.classify_program(prog, drum)
      if c then counts[c] = counts[c] + 1; n = n + 1 end
    end
  else
    for _, name in ipairs(type(clip.Instruments) == "table" and clip.Instruments or {}) do
      local c = M.classify_name(name)
      if c then counts[c] = counts[c] + 1 end
      n = n + 1
    end
  end
  local a, e = counts.acoustic + counts.voice, counts.electric
  local share_e = (a + e) > 0 and e / (a + e) or 0.5
  local acousticness = 0.03 + 0.94 * (1 - share_e)
  local instrumentalness = counts.voice > 0 and 0.5 or 1
  local tempo = num(clip.tempo) or 110
  local x = -2.2 + 0.025 * (tempo - 100) + 0.9 * (counts.drums > 0 and 1 or 0)
    + 0.25 * math.min(n, 8) + 0.8 * share_e
  local density = num(clip.note_density) or num(clip.notes_per_second)
  if density then x = x + 0.15 * (density - 6) end
  local vel = num(clip.mean_velocity)
  if vel then x = x + 0.03 * (vel - 80) end
  local function r3(v) return math.floor(v * 1000 + 0.5) / 1000 end
  return { energy = r3(logistic(x)), acousticness = r3(acousticness), instrumentalness = instrumentalness }
end

---------------------------------------------------------------------------------------------
-- looking songs up
---------------------------------------------------------------------------------------------

--- Looks up a list of songs ({artist, song}) with the configured APIs, in concurrent batches.
--- services = {lastfm = client | nil, spotify = client | nil, strict = bool, batch = 16}.
--- Returns per song {tags = {names} | nil, spotify = {id, features, analysis} | nil,
--- lastfm_matches = n | nil, drop = reason | nil}.
function M.lookup(songs, services)
  local out = {}
  for i = 1, #songs do out[i] = {} end
  local size = services.batch or 16
  for first = 1, #songs, size do
    local chunk, idx = {}, {}
    for i = first, math.min(first + size - 1, #songs) do
      chunk[#chunk + 1] = { songs[i].artist, songs[i].song }
      idx[#idx + 1] = i
    end
    local lf = services.lastfm
    if lf then
      if services.strict then
        for k, r in ipairs(lf:search_many(chunk)) do
          out[idx[k]].lastfm_matches = r.total
          if r.total == 0 then out[idx[k]].drop = "lastfm: no match" end
        end
      end
      for k, tags in ipairs(lf:top_tags_many(chunk)) do
        local names = {}
        for j, t in ipairs(tags) do names[j] = t.name end
        out[idx[k]].tags = names
      end
    end
    local sp = services.spotify
    if sp then
      local found = sp:search_many(chunk)
      local ids, where = {}, {}
      for k, t in ipairs(found) do
        if t then
          out[idx[k]].spotify = { id = t.id, name = t.name, artist = t.artist }
          ids[#ids + 1] = t.id
          where[#where + 1] = idx[k]
        elseif services.strict and not out[idx[k]].drop then
          out[idx[k]].drop = "spotify: no match"
        end
      end
      if #ids > 0 then
        local feats = sp:audio_features_many(ids)
        local anas = feats and sp:audio_analysis_many(ids)
        for k, i in ipairs(where) do
          out[i].spotify.features = feats and feats[k] or nil
          out[i].spotify.analysis = anas and anas[k] or nil
        end
      end
    end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- filling a clip
---------------------------------------------------------------------------------------------
local function round(v, d) local m = 10 ^ (d or 3) return math.floor(v * m + 0.5) / m end

-- Spotify sections overlapping the clip's window [start, start + duration] (seconds).
local function overlapping(sections, start, duration)
  local out = ojson.array {}
  for _, s in ipairs(type(sections) == "table" and sections or {}) do
    local s0, d = num(s.start), num(s.duration)
    if s0 and d and (not start or not duration or (s0 < start + duration and s0 + d > start)) then
      out[#out + 1] = s
    end
  end
  return out
end

--- Fills one clip table from a song's lookup result (see M.lookup) and the offline estimates.
--- opts.key_source = "spotify" also takes key, mode and tempo from Spotify's analysis (the 2024
--- seed code); by default they stay as the dataset's audio analysis measured them.
function M.apply(clip, info, opts)
  opts = opts or {}
  local src = ojson.object({}, { "tags", "features", "sections", "key" })
  if info.tags then
    clip.Tags = ojson.array(info.tags)
    src.tags = "lastfm"
  else
    if clip.Tags == nil then clip.Tags = ojson.array {} end
    src.tags = "none"
  end
  local sp = info.spotify
  local f = sp and sp.features
  if f then
    for _, k in ipairs { "energy", "acousticness", "instrumentalness", "danceability", "valence" } do
      if num(f[k]) then clip[k] = num(f[k]) end
    end
    src.features = "spotify"
  else
    local est = M.estimate(clip)
    clip.energy, clip.acousticness, clip.instrumentalness = est.energy, est.acousticness, est.instrumentalness
    src.features = "estimate"
  end
  local ana = sp and sp.analysis
  if ana and type(ana.sections) == "table" then
    local secs = overlapping(ana.sections, num(clip.start), num(clip.duration))
    clip.sections = secs
    src.sections = "spotify"
    if opts.key_source == "spotify" then
      local s = secs[1] or ana.track or {}
      local k = num(s.key)
      if k and k >= 0 and k <= 11 then clip.key = PITCH[k] elseif k == -1 then clip.key = "" end
      if num(s.mode) then clip.mode = num(s.mode) == 1 and "Major" or "Minor" end
      if num(s.tempo) then clip.tempo = math.floor(num(s.tempo)) end
      src.key = "spotify"
    end
  else
    src.sections = clip.sections ~= nil and "dataset" or "none"
    if clip.sections == nil then clip.sections = ojson.array {} end
  end
  src.key = src.key or "dataset"
  if sp then src.spotify_id = sp.id end
  if info.lastfm_matches then src.lastfm_matches = info.lastfm_matches end
  clip.metadata_sources = src
  for _, k in ipairs { "energy", "acousticness", "instrumentalness" } do
    if num(clip[k]) then clip[k] = round(num(clip[k])) end
  end
  return clip
end

---------------------------------------------------------------------------------------------
-- the stage
---------------------------------------------------------------------------------------------
local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function mkdir_p(dir) return os.execute("mkdir -p " .. sh_quote(dir)) end

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

-- Moves a clip's files (json, and the wav or flac beside it) under dropped_dir, same relative path.
local function drop_clip(path, rel, clip, reason, dropped_dir)
  local dest = dropped_dir .. "/" .. rel
  mkdir_p(dirname(dest))
  clip.dropped = reason
  ojson.write(dest, clip)
  os.remove(path)
  local stem, dstem = path:gsub("%.json$", ""), dest:gsub("%.json$", "")
  for _, ext in ipairs { ".wav", ".flac" } do
    os.rename(stem .. ext, dstem .. ext)
  end
  local f = io.open(dropped_dir .. "/dropped.jsonl", "ab")
  if f then
    f:write(ojson.encode(ojson.object({ path = rel, Artist = clip.Artist, Song = clip.Song, reason = reason },
      { "path", "Artist", "Song", "reason" })), "\n")
    f:close()
  end
end

--- Runs the stage over every clip JSON under dir. opts: strict (drop rules), force, key_source,
--- lastfm / spotify (clients, false to disable; default: from the environment when configured),
--- cache_dir (HTTP cache; default <OUT>/cache/http when dir is <OUT>/dataset/clips), dropped_dir,
--- batch (songs per concurrent batch), quiet, log. Returns a summary table.
function M.stage(dir, opts)
  opts = opts or {}
  local log = opts.log or function(msg) io.stderr:write(msg, "\n") end
  dir = dir:gsub("/+$", "")
  local out_root = dir:match("^(.*)/dataset/clips$")
  local cache_dir = opts.cache_dir or (out_root and (out_root .. "/cache/http")) or nil
  local dropped_dir = opts.dropped_dir or (out_root and (out_root .. "/dataset/dropped")) or (dir .. "/.dropped")
  local services = { strict = opts.strict, batch = opts.batch }
  local need_http = (opts.lastfm == nil and require("sao.lastfm").configured())
    or (opts.spotify == nil and require("sao.spotify").configured())
  local client = need_http and require("sao.http").shared(cache_dir) or nil
  if opts.lastfm ~= nil then services.lastfm = opts.lastfm or nil
  elseif require("sao.lastfm").configured() then services.lastfm = require("sao.lastfm").new { http = client } end
  if opts.spotify ~= nil then services.spotify = opts.spotify or nil
  elseif require("sao.spotify").configured() then
    services.spotify = require("sao.spotify").new { http = client, log = log }
  end
  if not opts.quiet then
    log(("metadata: Last.fm %s, Spotify %s%s"):format(services.lastfm and "on" or "off (no LASTFM_API_KEY)",
      services.spotify and "on" or "off (no SPOTIFY_CLIENT_ID/SECRET)",
      opts.strict and ", strict drop rules" or ""))
    if opts.strict and not (services.lastfm or services.spotify) then
      log("metadata: --strict-metadata has no effect without Last.fm or Spotify credentials")
    end
  end
  -- group clips by song
  local files = require("sao.prompt").list_clips(dir)
  local songs, by_key, sum = {}, {}, { clips = 0, songs = 0, updated = 0, kept = 0, dropped = 0, failed = 0, drops = {} }
  local prefix = #dir + 2
  for _, path in ipairs(files) do
    local clip, err = ojson.read(path)
    if not clip or type(clip) ~= "table" or clip[1] ~= nil then
      sum.failed = sum.failed + 1
      log("metadata: skipped " .. path .. ": " .. tostring(err or "not a JSON object"))
    else
      local rel = path:sub(prefix)
      local pa, ps = rel:match("^([^/]+)/([^/]+)/[^/]+$")
      local artist = type(clip.Artist) == "string" and clip.Artist or pa or ""
      local song = type(clip.Song) == "string" and clip.Song or ps or ""
      sum.clips = sum.clips + 1
      if clip.metadata_sources and not opts.force then
        sum.kept = sum.kept + 1
      else
        local key = artist:lower() .. "\0" .. song:lower()
        local s = by_key[key]
        if not s then
          s = { artist = artist, song = song, clips = {} }
          by_key[key] = s
          songs[#songs + 1] = s
        end
        s.clips[#s.clips + 1] = { path = path, rel = rel, clip = clip }
      end
    end
  end
  sum.songs = #songs
  local infos = (services.lastfm or services.spotify) and M.lookup(songs, services) or {}
  for i, s in ipairs(songs) do
    local info = infos[i] or {}
    for _, c in ipairs(s.clips) do
      if info.drop then
        drop_clip(c.path, c.rel, c.clip, info.drop, dropped_dir)
        sum.dropped = sum.dropped + 1
        sum.drops[info.drop] = (sum.drops[info.drop] or 0) + 1
      else
        M.apply(c.clip, info, opts)
        ojson.write(c.path, c.clip)
        sum.updated = sum.updated + 1
      end
    end
  end
  if not opts.quiet then
    log(("metadata: %d clips in %d songs to do: %d updated, %d dropped, %d already done%s"):format(
      sum.updated + sum.dropped, sum.songs, sum.updated, sum.dropped, sum.kept,
      sum.failed > 0 and (", " .. sum.failed .. " unreadable") or ""))
    for reason, n in pairs(sum.drops) do log(("  dropped x%d: %s"):format(n, reason)) end
  end
  return sum
end

--- The recipe's stage entry: opts.out (OUT), opts.strict_metadata, opts.force.
function M.run(opts)
  local strict = opts.strict_metadata
  return M.stage((opts.out or "out") .. "/dataset/clips", {
    strict = strict ~= nil and strict ~= false and strict ~= "false" and strict ~= "0",
    force = opts.force ~= nil and opts.force ~= false, key_source = opts.key_source,
  })
end

return M
