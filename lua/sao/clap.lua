-- sao.clap — CLAP embeddings from an HTTP embedding service: the tags of a trap beat (anchor b)
-- and the CLAP prompt score of a generation (DSP_SPEC §3.10.7). docs/clap.md is the user guide.
--
--   local clap = require "sao.clap"
--   local c = clap.from_env()                       -- nil when SAO_CLAP_URL is unset
--   local c = clap.new { url = "http://127.0.0.1:8000", cache_dir = OUT .. "/cache/http" }
--   local tags, scores = c:tag(audio, sr)            -- {instruments = {..3}, moods = {..2}, genres = {..1}}
--   local s = c:score(audio, sr, "A dark trap beat at 140 BPM")   -- cosine, about 0.4-0.5 when it fits
--
-- No CLAP weights ship with sao, so the model runs in a service the user starts (a few lines of
-- Python around laion_clap, for example). sao sends it JSON and reads vectors back:
--
--   POST {base}/embed   {"model": "<optional>", "text": ["a", "b", ...]}
--                    -> {"embeddings": [[...], [...]]}            (one vector per text, in order)
--   POST {base}/embed   {"model": "<optional>", "audio": ["<base64 of a WAV file>", ...],
--                        "sample_rate": 48000}
--                    -> {"embeddings": [[...]]}
--
-- A reply {"embedding": [...]} is accepted too when there was one input. Errors are an HTTP
-- status with {"error": {"message": ".."}} or {"error": ".."}; sao repeats the message verbatim.
-- "Authorization: Bearer <key>" is sent when a key is set (SAO_CLAP_KEY). The WAV files sao sends
-- are 16-bit PCM, mono, 48 kHz, already prepared as below, so the service only decodes and embeds.
--
-- Preparation (stable-audio-metrics' CLAP score): mono mean -> 48 kHz (libsamplerate, best) ->
-- peak normalised to -1 dBFS -> quantised through int16. Score = cosine(audio, text) with
-- eps 1e-8 on each norm. Tags: the cosine between the audio embedding and the embedding of
-- TEXT_TEMPLATE:format(tag) for every tag of VOCAB, top k per category.
--
-- Answers are cached by the http client when it has a cache folder (the request body is the key,
-- so the same tag list or the same clip asks nothing twice); broken answers are never kept.
-- Environment: SAO_CLAP_URL (base URL; a trailing /embed is dropped), SAO_CLAP_KEY (masked in
-- every message and log), SAO_CLAP_MODEL (optional "model" field).
local ojson = require "sao.ojson"
local http = require "sao.http"
local A = require "sao.audio"
local fs = require "sao.fs"

local M = {}
local Client = {}
Client.__index = Client
M.Client = Client

M.SAMPLE_RATE = 48000      -- LAION-CLAP's input rate
M.PEAK_DBFS = -1           -- stable-audio-metrics normalises the peak to -1 dBFS before CLAP
M.EPS = 1e-8               -- torch.nn.functional.cosine_similarity's default eps

--- The text sent for a tag (LAION-CLAP's zero-shot convention). Change it before the first
--- tag() of a client, or pass template = ".." to clap.new; it must contain one %s.
M.TEXT_TEMPLATE = "This is a sound of %s."

--- Curated trap/rap tag lists. Names are the ones sao.prompt knows (its trap synonyms, MOODS
--- and GENRES tables); an unknown name is written into prompts as it is, lower-cased.
M.VOCAB = {
  instruments = {
    "808", "808 slides", "hi-hats", "snare", "claps", "piano", "guitar", "synth bells", "bells",
    "strings", "choir", "flute", "synth", "pads", "vocal chops", "sample", "vinyl crackle", "brass",
    "organ", "plucks", "sub bass", "percussion", "marimba", "violin", "saxophone",
  },
  moods = {
    "dark", "menacing", "melancholic", "sad", "emotional", "aggressive", "energetic", "chill",
    "dreamy", "uplifting", "happy", "bouncy", "playful", "hard", "mysterious", "epic", "romantic",
    "nostalgic", "ominous", "triumphant",
  },
  genres = {
    "trap", "drill", "boom bap", "lo-fi hip hop", "rap", "cloud rap", "phonk", "r&b", "pop rap",
    "grime", "jersey club", "rage",
  },
}

--- Tags kept per category (StableBeaT's example record: 3 instruments, 2 moods, 1 genre);
--- a category not listed keeps 1.
M.DEFAULT_K = { instruments = 3, moods = 2, genres = 1 }

M.defaults = { timeout = 120, connect_timeout = 5, retries = 2, batch = 64 }

-- Categories in this order first, any others after them sorted by name.
local CATEGORY_ORDER = { "instruments", "moods", "genres" }

local function env(k)
  local v = os.getenv(k)
  if v and v ~= "" then return v end
end

local function categories(t)
  local out, seen = {}, {}
  for _, c in ipairs(CATEGORY_ORDER) do
    if t[c] ~= nil then out[#out + 1] = c; seen[c] = true end
  end
  local rest = {}
  for c in pairs(t) do if not seen[c] then rest[#rest + 1] = tostring(c) end end
  table.sort(rest)
  for _, c in ipairs(rest) do out[#out + 1] = c end
  return out
end

---------------------------------------------------------------------------------------------
-- preparation and vectors (no server needed)
---------------------------------------------------------------------------------------------

--- prepare(audio [C, S] or [S], sr) -> f32 [1, S'] at 48 kHz: mono mean, resampled, peak at
--- -1 dBFS, quantised through int16 (on libsndfile's k/32768 grid, so a 16-bit WAV of it is
--- lossless). Silence stays silence.
function M.prepare(audio, sr)
  if type(sr) ~= "number" or sr <= 0 or sr ~= math.floor(sr) then
    error(("clap.prepare: sample rate must be a positive integer, got %s"):format(tostring(sr)), 2)
  end
  -- each step makes a new tensor; the intermediate ones are freed at once (a tagging run goes
  -- through tens of thousands of 20-35 s clips)
  local x = A.to_mono(audio)
  if x:size(2) == 0 then error("clap.prepare: the audio is empty (0 samples)", 2) end
  local function step(y) x:free(); x = y end
  if sr ~= M.SAMPLE_RATE then step(A.resample(x, sr, M.SAMPLE_RATE)) end
  step((A.peak_normalize(x, M.PEAK_DBFS)))
  step(A.quantize(x, 16))
  return x
end

--- cosine(a, b) = a.b / (max(|a|, eps) max(|b|, eps)), for number lists of one length.
function M.cosine(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    error(("clap.cosine: expected two number lists, got %s and %s"):format(type(a), type(b)), 2)
  end
  if #a ~= #b or #a == 0 then
    error(("clap.cosine: vectors of different lengths (%d and %d): embeddings from different models?"):format(#a, #b), 2)
  end
  local dot, na, nb = 0, 0, 0
  for i = 1, #a do
    local x, y = a[i], b[i]
    dot, na, nb = dot + x * y, na + x * x, nb + y * y
  end
  return dot / (math.max(math.sqrt(na), M.EPS) * math.max(math.sqrt(nb), M.EPS))
end

local function per_category(v, cat, default)
  if type(v) == "table" then
    if v[cat] ~= nil then return v[cat] end
    return default
  end
  if v ~= nil then return v end
  return default
end

--- tag_from_embedding(emb, tag_embs, opts) -> tags, scores. tag_embs = {category = {{tag=, emb=},
--- ..}} (client:tag_embeddings). For each category the tags are ranked by cosine to emb (ties:
--- the earlier tag first); tags[category] holds the top k names whose similarity is at least
--- min_similarity, scores[category] the whole ranking {{tag=, similarity=}, ..}.
--- opts: k (a number, or {category = n}; defaults DEFAULT_K, else 1), min_similarity (a number
--- or {category = x}; default none).
function M.tag_from_embedding(emb, tag_embs, opts)
  opts = opts or {}
  if type(emb) ~= "table" or #emb == 0 then error("clap.tag_from_embedding: the embedding must be a number list", 2) end
  local tags, scores = {}, {}
  for _, cat in ipairs(categories(tag_embs)) do
    local ranked = {}
    for i, t in ipairs(tag_embs[cat]) do
      if #t.emb ~= #emb then
        error(("clap: the audio embedding has %d values but the text embedding of %s tag '%s' has %d: " ..
          "both must come from the same CLAP model"):format(#emb, cat, t.tag, #t.emb), 2)
      end
      ranked[i] = { tag = t.tag, similarity = M.cosine(emb, t.emb), order = i }
    end
    table.sort(ranked, function(a, b)
      if a.similarity ~= b.similarity then return a.similarity > b.similarity end
      return a.order < b.order
    end)
    local k = per_category(opts.k, cat, M.DEFAULT_K[cat] or 1)
    local floor = per_category(opts.min_similarity, cat, nil)
    local chosen = ojson.array {}                 -- written as [] when empty
    for _, r in ipairs(ranked) do
      if #chosen >= k or (floor and r.similarity < floor) then break end
      chosen[#chosen + 1] = r.tag
    end
    for i, r in ipairs(ranked) do ranked[i] = { tag = r.tag, similarity = r.similarity } end
    tags[cat], scores[cat] = chosen, ranked
  end
  return tags, scores
end

---------------------------------------------------------------------------------------------
-- the client
---------------------------------------------------------------------------------------------

--- "http://h:8000", "http://h:8000/", "http://h:8000/embed" -> "http://h:8000"
function M.base_url(url)
  return (tostring(url):gsub("/+$", ""):gsub("/embed$", ""))
end

--- new(opts) -> client. opts: url (default $SAO_CLAP_URL), key ($SAO_CLAP_KEY, sent as Bearer),
--- model ($SAO_CLAP_MODEL, else no "model" field), cache_dir (http cache folder), cache (default
--- true: answers cached when there is a cache folder), timeout, connect_timeout, retries,
--- backoff, batch (texts per request, 64), template (default clap.TEXT_TEMPLATE at call time),
--- http (a sao.http client to share).
function M.new(opts)
  opts = opts or {}
  local url = opts.url or env("SAO_CLAP_URL")
  if not url then
    error("clap: no service URL (set SAO_CLAP_URL, e.g. http://127.0.0.1:8000; docs/clap.md says what it must serve)", 2)
  end
  local self = setmetatable({}, Client)
  for k, v in pairs(M.defaults) do self[k] = v end
  for k, v in pairs(opts) do self[k] = v end
  self.base = M.base_url(url)
  self.model = opts.model or env("SAO_CLAP_MODEL")
  self.key = opts.key or env("SAO_CLAP_KEY")
  if self.cache == nil then self.cache = true end
  if type(self.batch) ~= "number" or self.batch < 1 or self.batch ~= math.floor(self.batch) then
    error(("clap: batch must be a whole number >= 1, got %s"):format(tostring(self.batch)), 2)
  end
  self.http = opts.http or http.new {
    cache_dir = opts.cache_dir, timeout = self.timeout, connect_timeout = self.connect_timeout,
    read_timeout = self.timeout, retries = self.retries, backoff = opts.backoff, secrets = { self.key },
  }
  self.tag_memo = {}          -- tag_embeddings answers, by vocabulary and template
  return self
end

--- A client from the environment, or nil when no URL is given and SAO_CLAP_URL is unset.
function M.from_env(opts)
  if not (opts and opts.url) and not env("SAO_CLAP_URL") then return nil end
  return M.new(opts)
end

function Client:describe()
  return ("%s (model %s)"):format(self.base, self.model or "default")
end

-- Checks one decoded answer and returns its n vectors, or nil and what is wrong.
local function vectors_of(t, n)
  local list = t.embeddings
  if list == nil and n == 1 and type(t.embedding) == "table" then list = { t.embedding } end
  if type(list) ~= "table" then return nil, 'no "embeddings" list in the answer' end
  if #list ~= n then return nil, ("%d embeddings for %d inputs"):format(#list, n) end
  local dim
  for i, v in ipairs(list) do
    if type(v) ~= "table" or #v == 0 then return nil, ("embedding %d is not a list of numbers"):format(i) end
    for j = 1, #v do
      local x = v[j]
      if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then
        return nil, ("embedding %d has a non-number at position %d (%s)"):format(i, j, tostring(x))
      end
    end
    dim = dim or #v
    if #v ~= dim then return nil, ("embeddings of different lengths in one answer (%d and %d)"):format(dim, #v) end
  end
  return list
end

-- POSTs bodies to /embed concurrently; ns[i] = the number of inputs in bodies[i]. Returns one
-- list of vectors per body. Raises naming the server: no answer (with the SAO_CLAP_URL hint),
-- an error status (the server's message verbatim), or an answer outside the contract (which is
-- then removed from the cache).
function Client:post(bodies, ns, what)
  local url = self.base .. "/embed"
  local headers = {}
  if self.key then headers.Authorization = "Bearer " .. self.key end
  local specs = {}
  for i, b in ipairs(bodies) do
    specs[i] = { method = "POST", url = url, json = b, headers = headers, secrets = { self.key }, cache = self.cache }
  end
  local out = {}
  for i, res in ipairs(self.http:batch(specs)) do
    if res.error then
      http.raise(res, "clap", ("is the CLAP service at %s running? set SAO_CLAP_URL"):format(self.base), 3)
    end
    if not http.ok(res) then
      if res.cache_path then os.remove(res.cache_path) end
      local hint = (res.status == 401 or res.status == 403) and "check SAO_CLAP_KEY" or nil
      http.raise(res, "clap", hint, 3)
    end
    local ok, t = pcall(http.decode, res, "clap: " .. what)
    local list, why
    if not ok then
      why = t
    elseif type(t) ~= "table" then
      why = "the answer is not a JSON object"
    else
      list, why = vectors_of(t, ns[i])
    end
    if not list then
      if res.cache_path then os.remove(res.cache_path) end   -- never keep a broken answer
      if ok then
        local head = res.body:sub(1, 120):gsub("%s+", " ")
        why = ("clap: POST %s (%s) -> %s: %s"):format(res.url, what, why, head)
      end
      error(why, 3)
    end
    local dim = #list[1]
    if self.dim and dim ~= self.dim then
      error(("clap: POST %s (%s) -> %d-d embeddings after %d-d ones from the same client; text and audio " ..
        "must be embedded by one CLAP model (model changed? cached answers are in the http cache folder)")
        :format(res.url, what, dim, self.dim), 3)
    end
    self.dim = dim
    out[i] = list
  end
  return out
end

--- embed_text({"a", "b", ..}) -> list of vectors (same order), `batch` texts per request.
function Client:embed_text(texts)
  if type(texts) ~= "table" then error("clap: embed_text takes a list of strings", 2) end
  for i, s in ipairs(texts) do
    if type(s) ~= "string" then error(("clap: embed_text: item %d is a %s, not a string"):format(i, type(s)), 2) end
  end
  local bodies, ns = {}, {}
  for first = 1, #texts, self.batch do
    local chunk = {}
    for i = first, math.min(first + self.batch - 1, #texts) do chunk[#chunk + 1] = texts[i] end
    bodies[#bodies + 1] = { model = self.model, text = chunk }
    ns[#ns + 1] = #chunk
  end
  local out = {}
  for _, list in ipairs(self:post(bodies, ns, "text")) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

-- The bytes of a 16-bit PCM WAV file of a prepared [1, S] tensor (written by libsndfile).
local function wav_bytes(x)
  local tmp = os.tmpname()
  local path = tmp .. ".wav"
  local ok, err = pcall(A.save, path, x, M.SAMPLE_RATE, { format = "wav", subtype = "pcm16" })
  local bytes = ok and fs.read(path)
  os.remove(path)
  os.remove(tmp)
  if not ok then error("clap: could not write the WAV to send: " .. tostring(err), 3) end
  if not bytes then error("clap: could not read back the WAV written at " .. path, 3) end
  return bytes
end

local function audio_body(self, audio, sr)
  local x = M.prepare(audio, sr)
  local wav = wav_bytes(x)
  x:free()
  return { model = self.model, audio = { http.base64(wav) }, sample_rate = M.SAMPLE_RATE }
end

--- embed_audio(audio, sr) -> vector: prepare(), then one request with a 16-bit 48 kHz WAV.
function Client:embed_audio(audio, sr)
  return self:post({ audio_body(self, audio, sr) }, { 1 }, "audio")[1][1]
end

--- embed_audios({{audio, sr}, ...}) -> list of vectors: one request per clip, all in flight at
--- once (up to the http client's `parallel`), so a service on a GPU is kept busy. Any failure
--- raises (the caller retries clip by clip to find the bad one).
function Client:embed_audios(list)
  local bodies, ns = {}, {}
  for i, it in ipairs(list) do bodies[i], ns[i] = audio_body(self, it[1], it[2]), 1 end
  local out = {}
  for i, l in ipairs(self:post(bodies, ns, "audio")) do out[i] = l[1] end
  return out
end

--- tag_embeddings(vocab = clap.VOCAB) -> {category = {{tag=, emb=}, ..}}: every tag's text
--- through the template, embedded in one batch of requests; remembered by the client (for the
--- same tags and template nothing is asked again).
function Client:tag_embeddings(vocab)
  vocab = vocab or M.VOCAB
  local template = self.template or M.TEXT_TEMPLATE
  if type(template) ~= "string" or not template:find("%s", 1, true) then
    error(("clap: the text template must contain %%s, got %q"):format(tostring(template)), 2)
  end
  if type(vocab) ~= "table" then error("clap: the vocabulary must be a table {category = {tag, ..}}", 2) end
  local cats = categories(vocab)
  local sig = { template }
  for _, cat in ipairs(cats) do
    local list = vocab[cat]
    if type(list) ~= "table" then error(("clap: vocabulary category '%s' is not a list"):format(cat), 2) end
    sig[#sig + 1] = cat
    for i, tag in ipairs(list) do
      if type(tag) ~= "string" or tag == "" then
        error(("clap: vocabulary %s[%d] is not a non-empty string"):format(cat, i), 2)
      end
      sig[#sig + 1] = tag
    end
  end
  local key = table.concat(sig, "\0")
  if self.tag_memo[key] then return self.tag_memo[key] end
  local texts, index = {}, {}                      -- each distinct text asked once
  for _, cat in ipairs(cats) do
    for _, tag in ipairs(vocab[cat]) do
      local text = template:format(tag)
      if not index[text] then texts[#texts + 1] = text; index[text] = #texts end
    end
  end
  local vecs = self:embed_text(texts)
  local out = {}
  for _, cat in ipairs(cats) do
    local list = {}
    for i, tag in ipairs(vocab[cat]) do list[i] = { tag = tag, emb = vecs[index[template:format(tag)]] } end
    out[cat] = list
  end
  self.tag_memo[key] = out
  return out
end

--- tag(audio, sr, opts) -> tags, scores, emb: the clip's top tags per category (see
--- tag_from_embedding for tags, scores and opts.k / opts.min_similarity), and its audio
--- embedding. opts.vocab replaces clap.VOCAB.
function Client:tag(audio, sr, opts)
  opts = opts or {}
  local tag_embs = self:tag_embeddings(opts.vocab)
  local emb = self:embed_audio(audio, sr)
  local tags, scores = M.tag_from_embedding(emb, tag_embs, opts)
  return tags, scores, emb
end

--- tag_many({{audio, sr}, ...}, opts) -> list of {tags =, scores =, emb =}: tag() for several clips
--- with their audio embedded concurrently (embed_audios).
function Client:tag_many(list, opts)
  opts = opts or {}
  local tag_embs = self:tag_embeddings(opts.vocab)
  local out = {}
  for i, emb in ipairs(self:embed_audios(list)) do
    local tags, scores = M.tag_from_embedding(emb, tag_embs, opts)
    out[i] = { tags = tags, scores = scores, emb = emb }
  end
  return out
end

--- score(audio, sr, text) -> the CLAP prompt score: cosine(audio embedding, text embedding).
function Client:score(audio, sr, text)
  if type(text) ~= "string" then error("clap: score needs the prompt text (a string)", 2) end
  local t = self:embed_text({ text })[1]
  local a = self:embed_audio(audio, sr)
  return M.cosine(a, t)
end

return M
