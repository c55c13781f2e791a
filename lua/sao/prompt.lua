-- sao.prompt — text prompts for clips: an LLM writer (OpenAI-compatible chat, as the seeds used
-- Llama 3.1) with output checks, retries and a recorded fallback to an offline writer; the
-- offline writer (a template grammar with many phrasings, synonyms and random attribute order,
-- deterministic per seed); and the trap variant (tags by category, BPM and key only when the
-- analysis was confident).
--
--   local prompt = require "sao.prompt"
--   local text, info = prompt.write(clip, { seed = 7, llm = require("sao.llm").from_env() })
--   -- info.source = "llm" | "template"; info.fallback = why the LLM text was not used
--   prompt.offline(clip, 7)            -- "Laid-back jazz piece with piano ..., in D Minor at 92 BPM."
--   prompt.trap(beat, 7)               -- "A dark, menacing trap beat at 140 BPM in C# minor, ..."
--   prompt.stage(dir, opts)            -- adds "prompt"/"prompt_source" to every clip JSON in dir
--
-- A clip is the seed's metadata table (Song, Artist, Tags, Instruments, key, mode, tempo,
-- energy, acousticness, ...). Trap beats carry tags by category (instruments, moods, genres) and
-- bpm/bpm_confidence, key/mode/key_strength. docs/prompts.md is the guide.
local ffi = require "ffi"
local bit = require "bit"
local ojson = require "sao.ojson"

local M = {}

M.CONFIDENT = 0.70        -- StableBeaT kept BPM and key only above this confidence

---------------------------------------------------------------------------------------------
-- deterministic random numbers: splitmix64 on uint64 cdata (no libsao needed)
---------------------------------------------------------------------------------------------
local Rng = {}
Rng.__index = Rng

local function fnv1a64(s)
  local h = ffi.new("uint64_t", 0xcbf29ce484222325ULL)
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i)) * 0x100000001b3ULL
  end
  return h
end

--- A random stream from a number or a string (the same seed, the same stream, on every machine).
function M.rng(seed)
  local s = type(seed) == "string" and fnv1a64(seed) or ffi.new("uint64_t", (tonumber(seed) or 0) % 2 ^ 53)
  return setmetatable({ s = s }, Rng)
end

function Rng:u32()
  self.s = self.s + 0x9e3779b97f4a7c15ULL
  local z = self.s
  z = bit.bxor(z, bit.rshift(z, 30)) * 0xbf58476d1ce4e5b9ULL
  z = bit.bxor(z, bit.rshift(z, 27)) * 0x94d049bb133111ebULL
  z = bit.bxor(z, bit.rshift(z, 31))
  return tonumber(bit.rshift(z, 32))
end

function Rng:uniform() return self:u32() / 4294967296 end
function Rng:int(n) return self:u32() % n + 1 end                    -- 1..n
function Rng:chance(p) return self:uniform() < p end
function Rng:pick(t) return t[self:int(#t)] end
function Rng:shuffle(t)
  for i = #t, 2, -1 do
    local j = self:int(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

--- A 31-bit seed for one clip: the same clip (by its relative path or identity) and base seed
--- always give the same number, whatever order a dataset is processed in.
function M.seed_for(id, base)
  local r = M.rng(tostring(base or 0) .. "\0" .. tostring(id))
  return r:u32() % 2147483647
end

---------------------------------------------------------------------------------------------
-- vocabulary
---------------------------------------------------------------------------------------------
local function set(list) local t = {} for _, v in ipairs(list) do t[v] = true end return t end

-- Listener tags that name a genre, normalised (lower case, '-' and '_' as spaces) → the words
-- used in prompts.
local GENRES = {
  ["rock"] = "rock", ["classic rock"] = "classic rock", ["hard rock"] = "hard rock",
  ["soft rock"] = "soft rock", ["progressive rock"] = "progressive rock", ["prog rock"] = "progressive rock",
  ["psychedelic"] = "psychedelic rock", ["psychedelic rock"] = "psychedelic rock",
  ["alternative"] = "alternative rock", ["alternative rock"] = "alternative rock", ["indie"] = "indie",
  ["indie rock"] = "indie rock", ["indie pop"] = "indie pop", ["garage rock"] = "garage rock",
  ["grunge"] = "grunge", ["punk"] = "punk", ["punk rock"] = "punk rock", ["post punk"] = "post-punk",
  ["new wave"] = "new wave", ["britpop"] = "britpop", ["shoegaze"] = "shoegaze", ["emo"] = "emo",
  ["metal"] = "metal", ["heavy metal"] = "heavy metal", ["thrash metal"] = "thrash metal",
  ["nu metal"] = "nu metal", ["pop"] = "pop", ["pop rock"] = "pop rock", ["synthpop"] = "synthpop",
  ["synth pop"] = "synthpop", ["electropop"] = "electropop", ["dance"] = "dance", ["disco"] = "disco",
  ["jazz"] = "jazz", ["smooth jazz"] = "smooth jazz", ["jazz fusion"] = "jazz fusion", ["fusion"] = "fusion",
  ["acid jazz"] = "acid jazz", ["bebop"] = "bebop", ["swing"] = "swing", ["big band"] = "big band",
  ["blues"] = "blues", ["blues rock"] = "blues rock", ["funk"] = "funk", ["soul"] = "soul",
  ["neo soul"] = "neo-soul", ["motown"] = "Motown soul", ["r&b"] = "R&B", ["rnb"] = "R&B",
  ["rhythm and blues"] = "R&B", ["gospel"] = "gospel", ["doo wop"] = "doo-wop",
  ["country"] = "country", ["bluegrass"] = "bluegrass", ["folk"] = "folk", ["folk rock"] = "folk rock",
  ["americana"] = "americana", ["singer songwriter"] = "singer-songwriter", ["rockabilly"] = "rockabilly",
  ["surf"] = "surf rock", ["classical"] = "classical", ["baroque"] = "baroque", ["opera"] = "operatic",
  ["soundtrack"] = "soundtrack", ["new age"] = "new age", ["ambient"] = "ambient",
  ["electronic"] = "electronic", ["electronica"] = "electronica", ["house"] = "house",
  ["deep house"] = "deep house", ["techno"] = "techno", ["trance"] = "trance", ["edm"] = "EDM",
  ["dubstep"] = "dubstep", ["drum and bass"] = "drum and bass", ["dnb"] = "drum and bass",
  ["trip hop"] = "trip-hop", ["downtempo"] = "downtempo", ["lo fi"] = "lo-fi", ["lofi"] = "lo-fi",
  ["hip hop"] = "hip hop", ["hiphop"] = "hip hop", ["rap"] = "rap", ["trap"] = "trap", ["drill"] = "drill",
  ["boom bap"] = "boom bap", ["phonk"] = "phonk", ["cloud rap"] = "cloud rap", ["lo fi hip hop"] = "lo-fi hip hop",
  ["pop rap"] = "pop rap", ["grime"] = "grime", ["jersey club"] = "jersey club", ["rage"] = "rage",
  ["reggae"] = "reggae", ["ska"] = "ska", ["dub"] = "dub", ["latin"] = "latin", ["salsa"] = "salsa",
  ["bossa nova"] = "bossa nova", ["samba"] = "samba", ["tango"] = "tango", ["flamenco"] = "flamenco",
  ["celtic"] = "celtic", ["world"] = "world music", ["video game music"] = "video game",
  ["chiptune"] = "chiptune", ["christmas"] = "festive", ["instrumental rock"] = "instrumental rock",
}

-- Mood tags → groups of interchangeable words.
local MOOD_GROUPS = {
  happy = { "happy", "cheerful", "joyful", "bright" },
  sad = { "melancholic", "sad", "wistful", "bittersweet" },
  chill = { "chill", "relaxed", "mellow", "laid-back" },
  romantic = { "romantic", "tender", "heartfelt" },
  dark = { "dark", "brooding", "moody" },
  aggressive = { "aggressive", "fierce", "hard-hitting" },
  energetic = { "energetic", "upbeat", "lively" },
  epic = { "epic", "grand", "cinematic" },
  dreamy = { "dreamy", "atmospheric", "hazy" },
  nostalgic = { "nostalgic", "wistful", "retro" },
  uplifting = { "uplifting", "hopeful", "soaring" },
  groovy = { "groovy", "funky", "bouncy" },
  beautiful = { "beautiful", "lush", "lovely" },
  fun = { "playful", "fun", "carefree" },
  sensual = { "sensual", "sultry", "smooth" },
  mysterious = { "mysterious", "eerie", "haunting" },
  peaceful = { "peaceful", "serene", "tranquil" },
  emotional = { "emotional", "moving", "soulful" },
  menacing = { "menacing", "ominous", "threatening" },
  hard = { "hard", "gritty", "heavy" },
  triumphant = { "triumphant", "victorious", "anthemic" },
}
local MOODS = {
  happy = "happy", cheerful = "happy", joyful = "happy", feelgood = "happy", ["feel good"] = "happy",
  sad = "sad", melancholy = "sad", melancholic = "sad", depressing = "sad", sorrow = "sad",
  chill = "chill", chillout = "chill", ["chill out"] = "chill", relaxing = "chill", relax = "chill",
  mellow = "chill", calm = "chill", ["laid back"] = "chill", romantic = "romantic", love = "romantic",
  ["love songs"] = "romantic", dark = "dark", moody = "dark", aggressive = "aggressive", angry = "aggressive",
  energetic = "energetic", upbeat = "energetic", epic = "epic", cinematic = "epic", dreamy = "dreamy",
  atmospheric = "dreamy", nostalgic = "nostalgic", nostalgia = "nostalgic", uplifting = "uplifting",
  inspirational = "uplifting", hopeful = "uplifting", groovy = "groovy", funky = "groovy", bouncy = "groovy",
  beautiful = "beautiful", party = "fun", fun = "fun", playful = "fun", sexy = "sensual", sensual = "sensual",
  mysterious = "mysterious", eerie = "mysterious", haunting = "mysterious", peaceful = "peaceful",
  serene = "peaceful", emotional = "emotional", soulful = "emotional", menacing = "menacing",
  ominous = "menacing", hard = "hard", gritty = "hard", triumphant = "triumphant", victorious = "triumphant",
  anthemic = "triumphant",
}

local ENERGY_HIGH = { "energetic", "driving", "high-energy", "punchy", "powerful", "lively" }
local ENERGY_LOW = { "calm", "gentle", "soft", "quiet", "laid-back", "subdued" }
local ACOUSTIC = { "acoustic", "organic", "natural-sounding" }
local ELECTRONIC = { "electronic", "synth-heavy", "electric" }

local NOUNS = { "instrumental", "track", "piece", "tune", "number", "composition", "arrangement", "cut" }
local TRAP_NOUNS = { "beat", "instrumental", "track", "beat" }

-- Instrument words: a few common names get synonyms (more variety for the same sound).
local INSTRUMENT_SYNONYMS = {
  ["drums"] = { "drums", "a drum kit", "live drums" },
  ["acoustic grand piano"] = { "grand piano", "acoustic piano", "piano" },
  ["bright acoustic piano"] = { "bright piano", "piano" },
  ["electric bass"] = { "electric bass", "bass guitar" },
  ["acoustic bass"] = { "acoustic bass", "upright bass", "double bass" },
  ["string ensemble"] = { "strings", "a string section", "string ensemble" },
  ["electric piano"] = { "electric piano", "Rhodes-style keys" },
  ["distortion guitar"] = { "distorted guitar", "overdriven electric guitar" },
  ["overdriven guitar"] = { "overdriven guitar", "crunchy guitar" },
  ["synth bass"] = { "synth bass", "synthesized bass" },
  ["brass section"] = { "brass section", "horns" },
  -- trap tag vocabulary (CLAP tag lists)
  ["808"] = { "booming 808s", "deep 808 bass", "808s" },
  ["808 slides"] = { "sliding 808s", "gliding 808 bass" },
  ["hi-hats"] = { "rolling hi-hats", "crisp hi-hats", "skittering hi-hats" },
  ["hihats"] = { "rolling hi-hats", "crisp hi-hats" },
  ["snare"] = { "snappy snares", "crisp snares" },
  ["claps"] = { "crisp claps", "hand claps" },
  ["piano"] = { "piano", "keys", "a piano melody" },
  ["guitar"] = { "guitar", "plucked guitar", "guitar licks" },
  ["synth bells"] = { "synth bells", "bell melodies", "chiming bells" },
  ["bells"] = { "bells", "bell melodies" },
  ["strings"] = { "strings", "string section" },
  ["choir"] = { "choir", "choir vocals" },
  ["flute"] = { "flute", "airy flute", "a flute melody" },
  ["synth"] = { "synths", "synth leads" },
  ["pads"] = { "pads", "ambient pads" },
  ["vocal chops"] = { "vocal chops", "chopped vocal samples" },
  ["sample"] = { "samples", "a chopped sample" },
  ["vinyl crackle"] = { "vinyl crackle", "dusty vinyl texture" },
  ["brass"] = { "brass stabs", "a brass section", "horns" },
  ["organ"] = { "organ", "church organ chords", "organ stabs" },
  ["plucks"] = { "synth plucks", "plucky synths" },
  ["sub bass"] = { "sub bass", "deep sub bass" },
  ["percussion"] = { "percussion", "hand percussion" },
  ["marimba"] = { "marimba", "a marimba melody" },
  ["violin"] = { "violin", "a violin melody", "strings" },
  ["saxophone"] = { "saxophone", "sax licks" },
}

-- Generic GM-style names made readable: "Lead 1 (square)" → "square lead", "Electric Bass (finger)"
-- → "electric bass", "String Ensemble 1" → "string ensemble", "Standard Drum Kit" → "drums".
function M.instrument_name(name)
  local s = tostring(name):lower():gsub("^%s+", ""):gsub("%s+$", "")
  local kind, what = s:match("^(%a+) %d+ %((.-)%)$")
  if kind == "lead" or kind == "pad" then return what .. " " .. kind end
  if kind == "fx" then return what .. " effect" end
  if s:find("drum") and (s:find("kit") or s == "drums" or s:find("standard") or s:find("set")) then return "drums" end
  if s == "percussion" or s == "drum" then return "drums" end
  s = s:gsub("%s*%b()", ""):gsub("%s+%d+$", ""):gsub("%s+", " ")
  return s
end

local function norm_tag(t)
  return (tostring(t):lower():gsub("[%-_]", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

--- knows(category, tag) -> true when the writer has words for the tag: "instruments" (producer
--- synonyms), "moods" or "genres"; other tags are written as they are.
function M.knows(category, tag)
  if category == "instruments" then return INSTRUMENT_SYNONYMS[tostring(tag):lower()] ~= nil end
  if category == "moods" then return MOODS[norm_tag(tag)] ~= nil end
  if category == "genres" then return GENRES[norm_tag(tag)] ~= nil end
  return false
end

-- Splits listener tags into genres and mood groups (in tag order, deduplicated).
local function classify_tags(tags)
  local genres, moods, gseen, mseen = {}, {}, {}, {}
  for _, t in ipairs(type(tags) == "table" and tags or {}) do
    local name = type(t) == "table" and t.name or t
    if type(name) == "string" then
      local n = norm_tag(name)
      local g = GENRES[n]
      local m = MOODS[n]
      if g and not gseen[g] then gseen[g] = true; genres[#genres + 1] = g end
      if m and not mseen[m] then mseen[m] = true; moods[#moods + 1] = m end
    end
  end
  return genres, moods
end

local function num(v)
  if type(v) == "number" and v == v then return v end
  if type(v) == "string" then return tonumber(v) end
end

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
end

local function list_of(v)
  if type(v) ~= "table" then return {} end
  local out = {}
  for _, x in ipairs(v) do
    if type(x) == "string" and x ~= "" then out[#out + 1] = x
    elseif type(x) == "table" and type(x.name) == "string" then out[#out + 1] = x.name end
  end
  return out
end

local function mode_word(m)
  if m == 1 or m == 0 then return m == 1 and "Major" or "Minor" end   -- Spotify's 1/0
  m = str(m)
  if not m then return nil end
  local l = m:lower()
  if l == "major" or l == "maj" or m == "1" then return "Major" end
  if l == "minor" or l == "min" or m == "0" then return "Minor" end
end

local PITCH = { [0] = "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B" }

---------------------------------------------------------------------------------------------
-- facts: what a prompt may say about a clip, normalised
---------------------------------------------------------------------------------------------

--- Normalises a clip or beat table into the facts a prompt uses:
--- {style, tempo (integer) | nil, key ("A#") | nil, mode ("Major"/"Minor") | nil, genres, moods,
---  instruments, energy, acousticness, tags (raw names)}. For the trap style, bpm and key are
--- kept only when their confidence is at least opts.confident (0.70) or not given.
function M.facts(meta, opts)
  opts = opts or {}
  local style = opts.style
  local cat = type(meta.Tags) == "table" and not meta.Tags[1] and next(meta.Tags) and meta.Tags or meta.tags_by_category
  if not style or style == "auto" then
    style = (cat or meta.moods or meta.genres) and "trap" or "instrumental"
  end
  local f = { style = style, is_facts = true }
  local tempo = num(meta.tempo) or num(meta.bpm)
  local key = meta.key
  if type(key) == "number" then key = PITCH[key] end
  key = str(key)
  local mode = mode_word(meta.mode) or mode_word(meta.scale)
  if style == "trap" then
    local conf = opts.confident or M.CONFIDENT
    local bc = num(meta.bpm_confidence) or num(meta.tempo_confidence)
    local kc = num(meta.key_strength) or num(meta.key_confidence)
    if bc and bc < conf then tempo = nil end
    if kc and kc < conf then key, mode = nil, nil end
  end
  if tempo and tempo > 0 then f.tempo = math.floor(tempo + 0.5) end
  if key and key:match("^[A-G][#b]?$") then f.key, f.mode = key, mode end
  f.energy, f.acousticness = num(meta.energy), num(meta.acousticness)
  local tags = list_of(meta.Tags or meta.tags)
  f.tags = tags
  local genres, moods = classify_tags(tags)
  local instruments = list_of(meta.Instruments or meta.instruments)
  if cat then
    local g2, m2 = classify_tags(list_of(cat.genres))
    genres = #g2 > 0 and g2 or list_of(cat.genres)
    local mm = {}
    for _, m in ipairs(list_of(cat.moods)) do mm[#mm + 1] = m end
    moods = mm
    if #instruments == 0 then instruments = list_of(cat.instruments) end
  end
  if meta.genres then genres = list_of(meta.genres) end
  if meta.moods then moods = list_of(meta.moods) end
  f.genres, f.moods = genres, moods
  local inst, seen = {}, {}
  for _, name in ipairs(instruments) do
    local n = style == "trap" and name:lower() or M.instrument_name(name)
    if n ~= "" and not seen[n] then seen[n] = true; inst[#inst + 1] = n end
  end
  f.instruments = inst
  return f
end

---------------------------------------------------------------------------------------------
-- checks on a written prompt (LLM output, and the offline writer's own output in the specs)
---------------------------------------------------------------------------------------------
local PREAMBLES = { "here is", "here's", "heres ", "sure", "certainly", "of course", "okay", "ok,", "ok.",
  "absolutely", "prompt:", "description:", "output:", "answer:", "as an ai", "i'd ", "i would", "i can",
  "i will", "i'll", "this prompt", "the prompt", "below is" }

local ENHARMONIC = { ["C#"] = "Db", ["D#"] = "Eb", ["F#"] = "Gb", ["G#"] = "Ab", ["A#"] = "Bb",
  ["Db"] = "C#", ["Eb"] = "D#", ["Gb"] = "F#", ["Ab"] = "G#", ["Bb"] = "A#" }

local function key_spellings(k)
  local out = { k }
  local e = ENHARMONIC[k]
  if e then out[#out + 1] = e end
  local more = {}
  for _, x in ipairs(out) do
    local l, acc = x:match("^(%a)([#b]?)$")
    if acc == "#" then more[#more + 1] = l .. "♯"; more[#more + 1] = l .. " sharp"; more[#more + 1] = l .. "-sharp" end
    if acc == "b" then more[#more + 1] = l .. "♭"; more[#more + 1] = l .. " flat"; more[#more + 1] = l .. "-flat" end
  end
  for _, x in ipairs(more) do out[#out + 1] = x end
  return out
end

local function escape_pattern(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

--- Cleans an LLM answer: trims, drops wrapping quotes, joins wrapped lines of one paragraph.
function M.clean(text)
  text = tostring(text or ""):gsub("\r", ""):gsub("^%s+", ""):gsub("%s+$", "")
  for _ = 1, 2 do
    local inner = text:match('^"(.*)"$') or text:match("^“(.*)”$") or text:match("^'(.*)'$")
    if inner and not inner:find('"', 1, true) then text = inner:gsub("^%s+", ""):gsub("%s+$", "") end
  end
  if not text:find("\n%s*\n") then text = text:gsub("%s*\n%s*", " ") end
  return (text:gsub("[ \t]+", " "))
end

--- Checks a prompt against the facts: one paragraph, no preamble, not a question or a list,
--- 4–80 words, the tempo ("134 BPM") and the key with its mode ("G Major") when known.
--- Returns true, or false and the reason.
function M.check(text, f)
  if type(text) ~= "string" or text:match("^%s*$") then return false, "empty" end
  if text:find("\n%s*\n") then return false, "more than one paragraph" end
  if text:find("\n") then return false, "more than one line" end
  local lower = text:lower()
  for _, p in ipairs(PREAMBLES) do
    if lower:sub(1, #p) == p then return false, ("starts with a preamble (%q)"):format(p) end
  end
  if text:find("^[%-%*•#]") or text:find("^%d+[%.%)]%s") then return false, "a list or heading" end
  if text:find("%?[%s\"']*$") then return false, "a question" end
  local words = select(2, text:gsub("%S+", ""))
  if words < 4 then return false, "too short (" .. words .. " words)" end
  if words > 80 then return false, "too long (" .. words .. " words)" end
  if f and f.tempo then
    local ok = false
    for n in lower:gmatch("(%d+)%s*%-?%s*bpm") do
      if math.abs(tonumber(n) - f.tempo) <= 1 then ok = true end
    end
    for n in lower:gmatch("(%d+)%s+beats per minute") do
      if math.abs(tonumber(n) - f.tempo) <= 1 then ok = true end
    end
    if not ok then return false, ("no tempo (%d BPM)"):format(f.tempo) end
  end
  if f and f.key then
    local ok = false
    for _, k in ipairs(key_spellings(f.key)) do
      local pat = "%f[%w]" .. escape_pattern(k)
      local init = 1
      while not ok do
        local s, e = text:find(pat, init)
        if not s then break end
        local rest = lower:sub(e + 1)
        if f.mode then
          ok = rest:find("^[%s%-]*" .. f.mode:lower()) ~= nil
        else
          ok = not rest:find("^[%w#]")
        end
        init = e + 1
      end
    end
    if not ok then return false, ("no key (%s%s)"):format(f.key, f.mode and (" " .. f.mode) or "") end
  end
  return true
end

---------------------------------------------------------------------------------------------
-- the offline writer
---------------------------------------------------------------------------------------------
local function join_list(r, items)
  local n = #items
  if n == 0 then return "" end
  if n == 1 then return items[1] end
  local head = table.concat(items, ", ", 1, n - 1)
  local sep = (n > 2 and r:chance(0.3)) and ", and " or " and "
  return head .. sep .. items[n]
end

local function join_adjectives(r, adj)
  if #adj == 0 then return "" end
  if #adj == 1 then return adj[1] end
  if #adj == 2 then return r:chance(0.5) and (adj[1] .. ", " .. adj[2]) or (adj[1] .. " and " .. adj[2]) end
  return table.concat(adj, ", ", 1, #adj - 1) .. " and " .. adj[#adj]
end

local function article(word)
  return word:match("^[aeiouAEIOU]") and not word:match("^[uU]ni") and "an" or "a"
end

local function capitalize(s) return (s:gsub("^%l", string.upper)) end

local function mode_text(r, mode)
  if not mode then return "" end
  return " " .. (r:chance(0.5) and mode or mode:lower())
end

-- Phrases for key and tempo (each variant keeps "<n> BPM" and "<key> <mode>" intact).
local function key_phrase(r, f)
  local k = f.key .. mode_text(r, f.mode)
  return r:pick { "in the key of " .. k, "in " .. k, "in " .. k, "set in " .. k }
end

local function tempo_phrase(r, f)
  local t = f.tempo .. " BPM"
  return r:pick { "at " .. t, "at " .. t, "at a tempo of " .. t, "moving at " .. t, "with a tempo of " .. t,
    "clocking in at " .. t }
end

local function key_tempo_sentence(r, f)
  local k = f.key and (f.key .. mode_text(r, f.mode))
  local t = f.tempo and (f.tempo .. " BPM")
  if k and t then
    return r:pick { ("In %s at %s."):format(k, t), ("Key of %s, %s."):format(k, t), ("%s, %s."):format(t, k),
      ("Played at %s in %s."):format(t, k), ("Tempo %s, key %s."):format(t, k) }
  elseif k then
    return r:pick { ("In the key of %s."):format(k), ("Key: %s."):format(k), ("Written in %s."):format(k) }
  elseif t then
    return r:pick { ("Tempo: %s."):format(t), ("It moves at %s."):format(t), ("Runs at %s."):format(t) }
  end
end

local function instrument_words(r, f, max)
  local list = {}
  for i, name in ipairs(f.instruments) do
    if i > (max or 7) then break end
    local syn = INSTRUMENT_SYNONYMS[name]
    list[#list + 1] = syn and r:pick(syn) or name
  end
  return list
end

local function inst_phrase(r, f, max)
  local words = instrument_words(r, f, max)
  if #words == 0 then return nil end
  local lead = r:pick { "with", "with", "featuring", "built on", "played on", "led by", "using", "driven by" }
  if #words == 1 and r:chance(0.3) then lead = "for solo" end
  if lead == "for solo" then words[1] = words[1]:gsub("^an? ", "") end
  return lead .. " " .. join_list(r, words)
end

local function adjectives(r, f)
  local adj = {}
  for i, m in ipairs(f.moods) do
    if i > 2 then break end
    local g = MOOD_GROUPS[m]
    adj[#adj + 1] = g and r:pick(g) or m
  end
  local has = {}
  for _, m in ipairs(f.moods) do has[m] = true end
  if f.energy then                      -- unless a mood already says it
    if f.energy >= 0.7 and not (has.energetic or has.aggressive) then adj[#adj + 1] = r:pick(ENERGY_HIGH)
    elseif f.energy <= 0.3 and not (has.chill or has.peaceful) then adj[#adj + 1] = r:pick(ENERGY_LOW) end
  end
  if f.acousticness then
    if f.acousticness >= 0.7 then adj[#adj + 1] = r:pick(ACOUSTIC)
    elseif f.acousticness <= 0.2 then adj[#adj + 1] = r:pick(ELECTRONIC) end
  end
  local out, seen = {}, {}
  for _, a in ipairs(adj) do if not seen[a] then seen[a] = true; out[#out + 1] = a end end
  r:shuffle(out)
  while #out > 3 do table.remove(out) end
  return out
end

local function genre_words(r, f, fallback)
  local g = {}
  for _, x in ipairs(f.genres) do       -- "rock" adds nothing next to "classic rock"
    local redundant = false
    for _, y in ipairs(f.genres) do
      if x ~= y and y:find("%f[%w]" .. x:gsub("%p", "%%%0") .. "%f[%W]") then redundant = true end
    end
    if not redundant then g[#g + 1] = x end
  end
  if #g == 0 then return fallback end
  if #g >= 2 and r:chance(0.45) then
    return r:chance(0.5) and (g[1] .. " and " .. g[2]) or (g[2] .. "-tinged " .. g[1])
  end
  return g[1]
end

--- The offline writer: a prompt for one clip from its facts (or raw metadata), deterministic
--- for a seed. Attribute order, connectives, synonyms and sentence shapes vary with the seed.
function M.offline(meta, seed, opts)
  local f = meta.is_facts and meta or M.facts(meta, opts)
  if f.style == "trap" then return M.trap(f, seed, opts) end
  local r = M.rng(seed or 0)
  local adj = adjectives(r, f)
  local noun = r:pick(NOUNS)
  local genre = genre_words(r, f, nil)
  if not genre and noun == "instrumental" then noun = r:pick { "piece", "track", "tune" } end
  local head_words = {}
  if #adj > 0 then head_words[#head_words + 1] = join_adjectives(r, adj) end
  if genre then head_words[#head_words + 1] = genre end
  if #head_words == 0 then                -- nothing known but the instruments
    head_words[1] = r:pick { "instrumental", "melodic", "full-band" }
    if noun == "instrumental" then noun = "piece" end
  end
  head_words[#head_words + 1] = noun
  local head = table.concat(head_words, " ")
  if #adj == 0 and not genre or r:chance(0.35) then head = article(head) .. " " .. head end
  local inst = inst_phrase(r, f)
  local shape = r:int(4)
  local text
  if shape == 1 or shape == 2 then
    -- one sentence: head + shuffled phrases ("…with piano and bass, in D minor at 92 BPM.")
    local parts = {}
    if inst then parts[#parts + 1] = inst end
    if f.key and f.tempo and r:chance(0.6) then
      local k, t = f.key .. mode_text(r, f.mode), f.tempo .. " BPM"
      parts[#parts + 1] = r:pick { "in " .. k .. " at " .. t, "at " .. t .. " in " .. k,
        "in the key of " .. k .. " at " .. t, "at " .. t .. " in the key of " .. k }
    else
      if f.key then parts[#parts + 1] = key_phrase(r, f) end
      if f.tempo then parts[#parts + 1] = tempo_phrase(r, f) end
    end
    r:shuffle(parts)
    text = head
    for i, p in ipairs(parts) do text = text .. ((i == 1 and r:chance(0.6)) and " " or ", ") .. p end
    text = text .. "."
  elseif shape == 3 then
    -- two sentences: description, then key and tempo
    text = head .. (inst and (" " .. inst) or "") .. "."
    local kt = key_tempo_sentence(r, f)
    if kt then text = text .. " " .. kt end
  else
    -- numbers first: "92 BPM jazz piece in D minor, melancholic and calm, with piano."
    local lead = {}
    if f.tempo then lead[#lead + 1] = f.tempo .. " BPM" end
    lead[#lead + 1] = (genre and (genre .. " ") or "") .. noun
    text = table.concat(lead, " ")
    if f.key then text = text .. " " .. key_phrase(r, f) end
    if #adj > 0 then text = text .. ", " .. join_adjectives(r, adj) end
    if inst then text = text .. ", " .. inst end
    text = text .. "."
  end
  return capitalize(text)
end

--- The trap variant: "A dark, menacing trap beat at 140 BPM in C# minor, with rolling hi-hats,
--- booming 808s and a haunting piano." Moods (≤2), one genre, ≤3 instruments with synonyms; BPM
--- and key only when confident (see M.facts).
function M.trap(meta, seed, opts)
  local f = meta.is_facts and meta or M.facts(meta, { style = "trap", confident = opts and opts.confident })
  local r = M.rng(seed or 0)
  local moods = {}
  for i, m in ipairs(f.moods) do
    if i > 2 then break end
    local g = MOOD_GROUPS[MOODS[norm_tag(m)] or ""]
    moods[#moods + 1] = (g and r:chance(0.5)) and r:pick(g) or m:lower()
  end
  local genre = f.genres[1] and (GENRES[norm_tag(f.genres[1])] or f.genres[1]:lower()) or r:pick { "trap", "hip hop" }
  local noun = r:pick(TRAP_NOUNS)
  local head = (#moods > 0 and (join_adjectives(r, moods) .. " ") or "") .. genre .. " " .. noun
  head = article(head) .. " " .. head
  local words = instrument_words(r, f, 3)
  local parts = {}
  if f.tempo then parts[#parts + 1] = "at " .. f.tempo .. " BPM" end
  if f.key then
    parts[#parts + 1] = "in " .. f.key .. (f.mode and (" " .. (r:chance(0.7) and f.mode:lower() or f.mode)) or "")
  end
  if #parts == 2 and r:chance(0.4) then parts[1], parts[2] = parts[2], parts[1] end
  local text = head
  if #parts > 0 then text = text .. " " .. table.concat(parts, " ") end
  if #words > 0 then
    local lead = r:pick { "using", "with", "built on", "featuring", "over" }
    text = text .. ", " .. lead .. " " .. join_list(r, words)
  end
  return capitalize(text .. ".")
end

---------------------------------------------------------------------------------------------
-- the LLM writer
---------------------------------------------------------------------------------------------
local SYSTEM = {
  instrumental = {
    general = "You write the text prompts for a text-to-music model. Each user message is a JSON " ..
      "object describing one clip of instrumental music. Reply with a short description of how " ..
      "the clip sounds, as a musician would describe it to another musician.",
    schema = "Fields you may see, in any order, some missing: tags (genre and mood labels from " ..
      "listeners), acousticness and energy (numbers from 0 to 1), key and mode (for example " ..
      "\"F#\" and \"Minor\"), tempo (beats per minute) and instruments (what plays).",
    rules = {
      "About tags: keep at most two genres and one or two mood words that agree with each other. " ..
        "Drop tags that say nothing about the sound, such as decades, countries, artist names or \"seen live\".",
      "About acousticness and energy: near 1, call the sound acoustic; near 0, electronic or electric. " ..
        "High energy calls for words like energetic or driving, low energy for calm, quiet or laid-back. " ..
        "Values in the middle need no comment.",
      "About key, mode and tempo: always give all three exactly as the JSON has them, written like " ..
        "\"in the key of G Major at 134 BPM\" or \"at 134 BPM in G Major\". Never change a number or a key.",
      "About instruments: always name every instrument listed, in plain words (\"distorted guitar\", " ..
        "\"synth pad\"), and never add one that is not listed.",
    },
    output = "How to answer: one paragraph of one or two sentences, at most 50 words. Describe the sound " ..
      "with adjectives and nouns; do not ask a question, give instructions or address anyone. No " ..
      "preamble such as \"Here is\" or \"Sure\", no quotation marks, no song titles or artist names, " ..
      "and nothing after the description.",
  },
  trap = {
    general = "You write the text prompts for a text-to-music model trained on rap and trap beats. " ..
      "Each user message is a JSON object describing one beat. Reply with a short description of " ..
      "how the beat sounds.",
    schema = "Fields you may see, in any order, some missing: moods, genres and instruments (tags " ..
      "found by an audio tagger), bpm (tempo) and key and mode (for example \"G\" and \"minor\").",
    rules = {
      "About moods and genres: use one or two moods and a single genre; close synonyms are welcome " ..
        "(\"melancholic\" for sad, \"menacing\" for dark).",
      "About instruments: name up to three of the listed instruments, with producer words where " ..
        "they fit (\"booming 808s\", \"rolling hi-hats\"); never add instruments that are not listed.",
      "About tempo and key: they are present only when the analysis was sure. When bpm is there, " ..
        "write it exactly, like \"at 140 BPM\"; when key and mode are there, write them exactly, " ..
        "like \"in C# minor\". When they are missing, do not guess.",
      "About style: call it a beat, an instrumental or a track, and keep the wording that of a " ..
        "producer describing a beat to an artist.",
    },
    output = "How to answer: one sentence, at most 40 words, starting with \"A\" or \"An\". No " ..
      "preamble such as \"Here is\", no quotation marks, no questions, and nothing after the description.",
  },
}

-- Few-shot examples (input, answer): written for sao, in the seeds' style.
local EXAMPLES = {
  instrumental = {
    { { tags = { "jazz", "smooth jazz", "relaxing" }, acousticness = 0.82, energy = 0.31, key = "D", mode = "Minor",
        tempo = 92, instruments = { "Acoustic Grand Piano", "Acoustic Bass", "Drums" } },
      "Relaxed acoustic smooth jazz with grand piano, acoustic bass and drums, in the key of D Minor at 92 BPM." },
    { { tags = { "rock", "classic rock", "80s", "seen live" }, acousticness = 0.05, energy = 0.91, key = "E", mode = "Major",
        tempo = 138, instruments = { "Distortion Guitar", "Electric Bass", "Drums", "Rock Organ" } },
      "Driving, high-energy classic rock instrumental built on distorted guitar, electric bass, rock organ and drums, in E Major at 138 BPM." },
    { { tags = { "electronic", "synthpop", "dreamy" }, acousticness = 0.1, energy = 0.62, key = "A", mode = "Minor",
        tempo = 118, instruments = { "warm pad", "saw lead", "Synth Bass", "Drums" } },
      "Dreamy electronic synthpop track with a warm pad, a saw lead, synth bass and drums, at 118 BPM in the key of A Minor." },
    { { tags = { "folk", "acoustic", "sad" }, acousticness = 0.95, energy = 0.2, key = "G", mode = "Major",
        tempo = 76, instruments = { "Acoustic Guitar", "Violin", "Cello" } },
      "Gentle, melancholic folk piece for acoustic guitar, violin and cello. In G Major at 76 BPM." },
    { { tags = { "funk", "soul", "groovy" }, acousticness = 0.3, energy = 0.78, key = "C#", mode = "Minor",
        tempo = 104, instruments = { "Electric Piano", "Slap Bass", "Brass Section", "Drums" } },
      "Groovy, upbeat funk and soul instrumental with electric piano, slap bass, a brass section and drums, in C# Minor at 104 BPM." },
    { { tags = { "classical", "piano", "peaceful" }, acousticness = 0.99, energy = 0.08, key = "F", mode = "Major",
        tempo = 66, instruments = { "Acoustic Grand Piano" } },
      "Peaceful, quiet classical piece for solo grand piano, tender and unhurried, in the key of F Major at 66 BPM." },
    { { tags = { "reggae", "jamaica" }, acousticness = 0.45, energy = 0.55, key = "A#", mode = "Major",
        tempo = 80, instruments = { "Electric Guitar", "Electric Bass", "Organ", "Drums" } },
      "Laid-back reggae groove with clean electric guitar, electric bass, organ and drums, at 80 BPM in A# Major." },
    { { tags = { "metal", "heavy metal", "aggressive" }, acousticness = 0.01, energy = 0.97, key = "F#", mode = "Minor",
        tempo = 172, instruments = { "Overdriven Guitar", "Distortion Guitar", "Electric Bass", "Drums" } },
      "Aggressive, fast heavy metal instrumental with overdriven and distorted guitars, electric bass and pounding drums, in F# Minor at 172 BPM." },
  },
  trap = {
    { { moods = { "dark", "menacing" }, genres = { "trap" }, instruments = { "808", "hi-hats", "piano" }, bpm = 140,
        key = "C#", mode = "minor" },
      "A dark, menacing trap beat at 140 BPM in C# minor, with booming 808s, rolling hi-hats and a haunting piano." },
    { { moods = { "melancholic", "emotional" }, genres = { "rap" }, instruments = { "guitar", "synth bells", "vinyl crackle" },
        bpm = 86 },
      "A melancholic, emotional rap beat at 86 BPM, using plucked guitar, synth bells and vinyl crackle." },
    { { moods = { "bouncy", "playful" }, genres = { "drill" }, instruments = { "808 slides", "flute", "claps" },
        key = "G", mode = "minor" },
      "A bouncy, playful drill beat in G minor, built on sliding 808s, a flute melody and crisp claps." },
    { { moods = { "chill", "dreamy" }, genres = { "lo-fi hip hop" }, instruments = { "piano", "pads", "vinyl crackle" },
        bpm = 78, key = "D#", mode = "major" },
      "A chill, dreamy lo-fi hip hop instrumental in D# major at 78 BPM, with soft piano, ambient pads and dusty vinyl crackle." },
  },
}
M.EXAMPLES = EXAMPLES

local function round2(x) return math.floor(x * 100 + 0.5) / 100 end

--- The JSON object the LLM sees for a clip, with its keys in a random order.
function M.llm_input(f, r)
  local t, keys = {}, {}
  local function put(k, v) if v ~= nil then t[k] = v; keys[#keys + 1] = k end end
  if f.style == "trap" then
    if #f.moods > 0 then put("moods", ojson.array(f.moods)) end
    if #f.genres > 0 then put("genres", ojson.array(f.genres)) end
    if #f.instruments > 0 then put("instruments", ojson.array(f.instruments)) end
    put("bpm", f.tempo)
  else
    if #f.tags > 0 then
      local tags = {}
      for i = 1, math.min(#f.tags, 10) do tags[i] = f.tags[i] end
      put("tags", ojson.array(tags))
    end
    put("acousticness", f.acousticness and round2(f.acousticness))
    put("energy", f.energy and round2(f.energy))
    put("tempo", f.tempo)
    if #f.instruments > 0 then put("instruments", ojson.array(f.instruments)) end
  end
  put("key", f.key)
  put("mode", f.key and f.mode)
  r:shuffle(keys)
  return ojson.encode(ojson.object(t, keys))
end

--- The system prompt for a style, its four rule blocks in a random order.
function M.system_prompt(style, r)
  local s = SYSTEM[style] or SYSTEM.instrumental
  local rules = {}
  for i, b in ipairs(s.rules) do rules[i] = b end
  r:shuffle(rules)
  return table.concat({ s.general, s.schema, table.concat(rules, "\n"), s.output }, "\n\n")
end

--- Chat messages for one clip: system prompt, `shots` examples as user/assistant turns (chosen
--- and ordered by the seed, their JSON keys shuffled too), then the clip's JSON.
function M.messages(f, seed, opts)
  opts = opts or {}
  local r = M.rng(seed)
  local msgs = { { role = "system", content = M.system_prompt(f.style, r) } }
  local pool = {}
  for i, e in ipairs(EXAMPLES[f.style] or EXAMPLES.instrumental) do pool[i] = e end
  r:shuffle(pool)
  for i = 1, math.min(opts.shots or 3, #pool) do
    local ef = M.facts(pool[i][1], { style = f.style })
    msgs[#msgs + 1] = { role = "user", content = M.llm_input(ef, r) }
    msgs[#msgs + 1] = { role = "assistant", content = pool[i][2] }
  end
  msgs[#msgs + 1] = { role = "user", content = M.llm_input(f, r) }
  return msgs
end

-- How an LLM failure is classified: the server is unusable for this run ("down") or only this
-- answer was bad.
local function failure_kind(msg)
  msg = tostring(msg)
  if msg:find(" failed: ", 1, true) then return "down" end                 -- transport (sao.http)
  local status = tonumber(msg:match("%-> HTTP (%d+)"))
  if status and status >= 400 and status < 500 and status ~= 408 and status ~= 429 then return "down" end
  return "bad"
end

--- Writes a prompt for one clip. opts: seed (number; default from the clip's identity), llm (a
--- sao.llm client; nil: offline only), retries (LLM tries, default 3), shots (few-shot examples,
--- default 3), style ("instrumental" | "trap" | "auto"), temperature, confident (trap
--- threshold). Returns text, info = {source = "llm" | "template", attempts, fallback (why the LLM
--- text was not used), errors (each try's problem)}.
--- An LLM that fails in a way retries cannot fix (no connection, 4xx, three failed clips in a
--- row) is marked down on the client (llm.down = reason) and skipped for the rest of the run.
function M.write(meta, opts)
  opts = opts or {}
  local f = M.facts(meta, opts)
  local seed = opts.seed or M.seed_for((meta.Artist or "") .. "/" .. (meta.Song or "") .. "/" .. tostring(meta.start or meta.path or ""))
  local info = { source = "template", attempts = 0, errors = {} }
  local llm = opts.llm
  if llm and llm.down then
    info.fallback = "llm unavailable: " .. llm.down
  elseif llm then
    for attempt = 1, opts.retries or 3 do
      info.attempts = attempt
      local s = (seed + (attempt - 1) * 7919) % 2147483647
      local msgs = M.messages(f, s, opts)
      local ok, text = pcall(llm.chat, llm, msgs, { seed = s, temperature = opts.temperature })
      if not ok then
        info.errors[#info.errors + 1] = tostring(text)
        if failure_kind(text) == "down" then
          llm.down = tostring(text)
          break
        end
      else
        text = M.clean(text)
        local good, why = M.check(text, f)
        if good then
          llm.failed_in_row = 0
          info.source, info.errors = "llm", nil
          return text, info
        end
        local shown = #text > 80 and (text:sub(1, 80) .. "…") or text
        info.errors[#info.errors + 1] = why .. ": " .. ("%q"):format(shown)
      end
    end
    info.fallback = info.errors[#info.errors] and ("llm: " .. info.errors[#info.errors]) or "llm: no answer"
    llm.failed_in_row = (llm.failed_in_row or 0) + 1
    if not llm.down and llm.failed_in_row >= 3 then
      llm.down = "3 clips in a row without a usable answer; last: " .. info.fallback
    end
  end
  return M.offline(f, seed, opts), info
end

---------------------------------------------------------------------------------------------
-- the stage: prompts for every clip JSON in a folder
---------------------------------------------------------------------------------------------
ffi.cdef [[ int isatty(int fd); ]]

--- Clip JSON files under dir (sorted, recursive; temporary files skipped).
function M.list_clips(dir)
  local p = io.popen("find '" .. dir:gsub("'", "'\\''") .. "' -type f -name '*.json' 2>/dev/null | LC_ALL=C sort")
  local out = {}
  for line in p:lines() do
    if not line:find("%.tmp%.") then out[#out + 1] = line end
  end
  p:close()
  return out
end

local function is_clip(t)
  if type(t) ~= "table" or t[1] ~= nil then return false end
  for _, k in ipairs { "Song", "Artist", "Tags", "Instruments", "tempo", "key", "bpm", "moods", "instruments", "tags" } do
    if t[k] ~= nil then return true end
  end
  return false
end

-- A one-line progress bar on stderr (redrawn in place on a terminal, every 10% otherwise).
local function progress(total, label)
  local tty = ffi.C.isatty(2) == 1
  local okh, http = pcall(require, "sao.http")
  local clock = okh and http.clock or os.time
  local t0, last_draw, last_pct = clock(), -1, -1
  return function(done, extra, final)
    local pct = total > 0 and math.floor(done * 100 / total) or 100
    local now = clock()
    if not final and ((tty and now - last_draw < 0.2) or (not tty and pct < last_pct + 10)) then return end
    last_draw, last_pct = now, pct
    local elapsed = math.max(now - t0, 1e-3)
    local rate = done / elapsed
    local eta = rate > 0 and (total - done) / rate or 0
    local width = 24
    local fill = total > 0 and math.floor(width * done / total) or width
    local bar = ("#"):rep(fill) .. ("."):rep(width - fill)
    local line = ("%s [%s] %d/%d %5.1f/s ETA %ds %s"):format(label, bar, done, total, rate, math.floor(eta + 0.5), extra or "")
    io.stderr:write(tty and ("\r" .. line .. "\027[K") or (line .. "\n"))
    if final and tty then io.stderr:write("\n") end
  end
end

--- Adds "prompt" and "prompt_source" ("llm" | "template", plus "prompt_fallback" when the LLM
--- was tried and not used) to every clip JSON under dir that has no prompt (all with force).
--- opts: force, seed (base seed, default 0), llm (a client; default sao.llm.from_env(); false:
--- offline only), style, retries, shots, temperature, quiet, log (function(msg)).
--- Returns a summary {clips, written, kept, llm, template, failed, fallbacks = {reason = n}}.
function M.stage(dir, opts)
  opts = opts or {}
  local log = opts.log or function(msg) io.stderr:write(msg, "\n") end
  dir = dir:gsub("/+$", "")
  local llm = opts.llm
  if llm == nil then
    -- LLM answers are cached next to the dataset: <OUT>/cache/http for <OUT>/dataset/clips
    local lo = {}
    for k, v in pairs(opts.llm_opts or {}) do lo[k] = v end
    local out_root = dir:match("^(.*)/dataset/clips$")
    if lo.cache_dir == nil and out_root then lo.cache_dir = out_root .. "/cache/http" end
    llm = require("sao.llm").from_env(lo)
  end
  local files = M.list_clips(dir)
  local sum = { clips = 0, written = 0, kept = 0, llm = 0, template = 0, failed = 0, not_clips = 0, fallbacks = {} }
  local prefix = #dir + 2
  local bar = not opts.quiet and progress(#files, "prompts") or function() end
  if llm and not opts.quiet then log("prompts: LLM " .. (llm.describe and llm:describe() or "client") .. ", offline writer as fallback") end
  if not llm and not opts.quiet then log("prompts: no LLM configured (SAO_LLM_URL): offline writer") end
  for i, path in ipairs(files) do
    local t, err = ojson.read(path)
    if not t then
      sum.failed = sum.failed + 1
      log("prompts: skipped " .. path .. ": " .. tostring(err))
    elseif not is_clip(t) then
      sum.not_clips = sum.not_clips + 1
    else
      sum.clips = sum.clips + 1
      if t.prompt and t.prompt ~= "" and not opts.force then
        sum.kept = sum.kept + 1
      else
        local rel = path:sub(prefix)
        local text, info = M.write(t, { seed = M.seed_for(rel, opts.seed or 0), llm = llm or nil,
          style = opts.style, retries = opts.retries, shots = opts.shots, temperature = opts.temperature,
          confident = opts.confident })
        t.prompt, t.prompt_source = text, info.source
        t.prompt_fallback = info.fallback
        ojson.write(path, t)
        sum.written = sum.written + 1
        sum[info.source] = sum[info.source] + 1
        if info.fallback then
          local reason = info.fallback:gsub("%s*%b()", ""):sub(1, 160)
          if not sum.fallbacks[reason] then log("prompts: " .. path:sub(prefix) .. ": template used, " .. info.fallback) end
          sum.fallbacks[reason] = (sum.fallbacks[reason] or 0) + 1
        end
      end
    end
    bar(i, ("llm %d · template %d"):format(sum.llm, sum.template), i == #files)
  end
  if not opts.quiet then
    log(("prompts: %d clips: %d written (%d llm, %d template), %d already had one%s%s"):format(
      sum.clips, sum.written, sum.llm, sum.template, sum.kept,
      sum.failed > 0 and (", " .. sum.failed .. " unreadable") or "",
      sum.not_clips > 0 and (", " .. sum.not_clips .. " other JSON files ignored") or ""))
    for reason, n in pairs(sum.fallbacks) do log(("  fallback x%d: %s"):format(n, reason)) end
  end
  return sum
end

return M
