-- sao.clap: the CLAP preparation (48 kHz mono, -1 dBFS peak, int16 grid), cosine, tag ranking
-- (top k, minimum similarity, ties), and the client against the loopback embedding service of
-- spec/support/fake_server.lua ("clap" simulator): text batching, the audio round trip (the
-- server decodes the WAV we send), single-vector replies, the HTTP cache, the Bearer key, and
-- the error paths (server down, error statuses, broken or mismatched answers).
local ffi = require "ffi"
local cjson = require "cjson"
local sao = require "sao"
local clap = require "sao.clap"
local ojson = require "sao.ojson"
local sig = require "spec.support.signals"
local fake = require "spec.support.fake"

pcall(ffi.cdef, "int setenv(const char *, const char *, int); int unsetenv(const char *);")

-- Runs f with environment variables set (false: unset), restoring them afterwards.
local function with_env(vars, f)
  local was = {}
  for k, v in pairs(vars) do
    was[k] = os.getenv(k) or false
    if v then ffi.C.setenv(k, v, 1) else ffi.C.unsetenv(k) end
  end
  local ok, err = pcall(f)
  for k in pairs(vars) do
    if was[k] then ffi.C.setenv(k, was[k], 1) else ffi.C.unsetenv(k) end
  end
  if not ok then error(err, 0) end
end

local function db(x) return 20 * math.log10(x) end
local PEAK = 10 ^ (-1 / 20)                       -- -1 dBFS

local function values(t)
  local d, n = t:contiguous():data(), t:numel()
  local out = {}
  for i = 0, n - 1 do out[i + 1] = d[i] end
  return out
end

local function files_under(dir)
  local p = io.popen("find '" .. dir .. "' -type f 2>/dev/null")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

-- e_i in dim dimensions, optionally mixed with e_j: a vector whose cosine to e_i is known.
local function unit(dim, i, j, w)
  local v = {}
  for k = 1, dim do v[k] = 0 end
  v[i] = 1
  if j then v[j] = w end
  return v
end

describe("clap.prepare", function()
  it("gives 48 kHz mono with the peak at -1 dBFS on the int16 grid", function()
    local x = sig.sine(440, 44100, 1.5, 0.3, 2)             -- stereo, 66150 samples
    local p = clap.prepare(x, 44100)
    assert.same({ 1, math.ceil(66150 * 48000 / 44100) }, p:shape())
    assert.equal("f32", p:dtype())
    local v = values(p)
    local peak = 0
    for i = 1, #v do
      local q = v[i] * 32768
      assert.equal(math.floor(q), q, "sample " .. i .. " is off the int16 grid: " .. v[i])
      assert.is_true(q >= -32768 and q <= 32767)
      peak = math.max(peak, math.abs(v[i]))
    end
    -- quantisation moves the peak by < 1 LSB: |dB error| < 20 log10(1 + 1/29204) = 3e-4 dB
    assert.is_true(math.abs(db(peak) + 1) < 0.01, "peak " .. db(peak) .. " dBFS")
  end)

  it("downmixes by the mean of the channels", function()
    -- two different tones: taking one channel, or a sum with other weights, gives another shape
    local st = sig.make(2, 48000, function(c, i)
      return c == 0 and 0.5 * math.sin(2 * math.pi * 300 * i / 48000) or 0.2 * math.sin(2 * math.pi * 1100 * i / 48000)
    end)
    local mono = sig.make(1, 48000, function(_, i)
      return (0.5 * math.sin(2 * math.pi * 300 * i / 48000) + 0.2 * math.sin(2 * math.pi * 1100 * i / 48000)) / 2
    end)
    local a, b = clap.prepare(st, 48000), clap.prepare(mono, 48000)
    assert.same({ 1, 48000 }, a:shape())                    -- 48 kHz in: no resampling, same length
    -- the f32 mean and the f64 reference differ by float rounding: at most one int16 step
    assert.is_true(a:maxdiff(b) <= 1 / 32768 + 1e-9, "max diff " .. a:maxdiff(b))
    local left = clap.prepare(sig.make(1, 48000, function(_, i) return math.sin(2 * math.pi * 300 * i / 48000) end), 48000)
    assert.is_true(a:maxdiff(left) > 0.1)
  end)

  it("keeps silence silent (anti-phase channels cancel; no NaN)", function()
    local st = sig.make(2, 4800, function(c, i) return (c == 0 and 1 or -1) * 0.4 * math.sin(i * 0.05) end)
    for _, x in ipairs { sao.zeros(1, 16000), st } do
      local p = clap.prepare(x, 16000)
      for _, s in ipairs(values(p)) do assert.equal(0, s) end
    end
  end)

  it("resamples any rate to exactly ceil(S * 48000 / sr) samples and reads [S] as mono", function()
    assert.same({ 1, 48000 }, clap.prepare(sig.sine(200, 16000, 1.0), 16000):shape())
    assert.same({ 1, 24000 }, clap.prepare(sig.sine(200, 22050, 0.5), 22050):shape())
    assert.same({ 1, 6000 }, clap.prepare(sig.sine(200, 48000, 0.125):view(6000), 48000):shape())
  end)

  it("rejects a bad sample rate and empty audio", function()
    local x = sig.sine(200, 16000, 0.1)
    assert.has_error(function() clap.prepare(x, 0) end, "clap.prepare: sample rate must be a positive integer, got 0")
    assert.has_error(function() clap.prepare(x, 44100.5) end)
    assert.has_error(function() clap.prepare(sao.zeros(1, 0), 48000) end, "clap.prepare: the audio is empty (0 samples)")
  end)
end)

describe("clap.cosine", function()
  it("is a.b / (|a| |b|), scale-free, with eps on the norms", function()
    assert.near(0, clap.cosine({ 1, 0 }, { 0, 1 }), 1e-15)
    assert.near(1, clap.cosine({ 1, 2, 3 }, { 2, 4, 6 }), 1e-15)
    assert.near(-1, clap.cosine({ 1, 2, 3 }, { -0.5, -1, -1.5 }), 1e-15)
    assert.near(24 / 25, clap.cosine({ 3, 4 }, { 4, 3 }), 1e-15)
    assert.near(24 / 25, clap.cosine({ 300, 400 }, { 0.004, 0.003 }), 1e-15)
    assert.equal(0, clap.cosine({ 0, 0, 0 }, { 1, 2, 3 }))           -- zero vector: 0, not NaN
    -- tiny norms hit the eps floor: (1e-9 * 1) / (max(1e-9, 1e-8) * 1) = 0.1
    assert.near(0.1, clap.cosine({ 1e-9, 0 }, { 1, 0 }), 1e-12)
  end)

  it("refuses vectors of different lengths", function()
    assert.has_error(function() clap.cosine({ 1, 2, 3 }, { 1, 2 }) end,
      "clap.cosine: vectors of different lengths (3 and 2): embeddings from different models?")
    assert.has_error(function() clap.cosine({}, {}) end)
    assert.has_error(function() clap.cosine({ 1 }, nil) end)
  end)
end)

describe("clap.tag_from_embedding", function()
  -- similarities to emb = e1: a 1, b 0.8, c 0.6, d 1 (ties with a, listed later), e 0
  local function te()
    local function at(s) return { s, math.sqrt(1 - s * s), 0 } end
    return {
      instruments = { { tag = "a", emb = at(1) }, { tag = "b", emb = at(0.8) }, { tag = "c", emb = at(0.6) },
        { tag = "d", emb = at(1) }, { tag = "e", emb = at(0) } },
      moods = { { tag = "m1", emb = at(0.2) }, { tag = "m2", emb = at(0.9) }, { tag = "m3", emb = at(0.5) } },
      genres = { { tag = "g1", emb = at(-1) }, { tag = "g2", emb = at(0.3) } },
      extra = { { tag = "x1", emb = at(0.1) }, { tag = "x2", emb = at(0.7) } },
    }
  end
  local emb = { 1, 0, 0 }

  it("keeps the top k per category (3 instruments, 2 moods, 1 genre; others 1), ties in tag order", function()
    local tags, scores = clap.tag_from_embedding(emb, te())
    assert.same({ "a", "d", "b" }, tags.instruments)
    assert.same({ "m2", "m3" }, tags.moods)
    assert.same({ "g2" }, tags.genres)
    assert.same({ "x2" }, tags.extra)
    local order, sims = {}, {}
    for i, s in ipairs(scores.instruments) do order[i], sims[i] = s.tag, s.similarity end
    assert.same({ "a", "d", "b", "c", "e" }, order)
    for i, want in ipairs { 1, 1, 0.8, 0.6, 0 } do assert.near(want, sims[i], 1e-12) end
    assert.near(-1, scores.genres[2].similarity, 1e-12)
    -- ties the other way round: d listed first now wins
    local t = te()
    t.instruments[1], t.instruments[4] = t.instruments[4], t.instruments[1]
    assert.same({ "d", "a", "b" }, (clap.tag_from_embedding(emb, t).instruments))
  end)

  it("takes k as a number or per category, and drops tags under min_similarity", function()
    local tags = clap.tag_from_embedding(emb, te(), { k = 2 })
    assert.same({ "a", "d" }, tags.instruments)
    assert.same({ "g2", "g1" }, tags.genres)
    tags = clap.tag_from_embedding(emb, te(), { k = { instruments = 5, genres = 0 } })
    assert.same({ "a", "d", "b", "c", "e" }, tags.instruments)
    assert.same({ "m2", "m3" }, tags.moods)                            -- default kept
    assert.same({}, tags.genres)
    tags = clap.tag_from_embedding(emb, te(), { min_similarity = 0.85 })
    assert.same({ "a", "d" }, tags.instruments)
    assert.same({ "m2" }, tags.moods)
    assert.same({}, tags.genres)
    assert.equal("[]", ojson.encode(tags.genres))                     -- an empty list stays a JSON list
    tags = clap.tag_from_embedding(emb, te(), { min_similarity = { moods = 0.95 } })
    assert.same({ "a", "d", "b" }, tags.instruments)
    assert.same({}, tags.moods)
  end)

  it("refuses tag embeddings of another length", function()
    assert.has_error(function() clap.tag_from_embedding({ 1, 0 }, te()) end,
      "clap: the audio embedding has 2 values but the text embedding of instruments tag 'a' has 3: " ..
      "both must come from the same CLAP model")
  end)
end)

describe("the vocabulary", function()
  it("lists distinct trap/rap tags in three categories", function()
    assert.is_true(#clap.VOCAB.instruments >= 20 and #clap.VOCAB.moods >= 15 and #clap.VOCAB.genres >= 10)
    for _, cat in ipairs { "instruments", "moods", "genres" } do
      local seen = {}
      for _, t in ipairs(clap.VOCAB[cat]) do
        assert.is_nil(seen[t], "duplicate " .. t)
        seen[t] = true
        assert.equal(t:lower(), t)
      end
    end
    assert.equal("This is a sound of 808.", clap.TEXT_TEMPLATE:format("808"))
  end)
end)

describe("sao.clap against a loopback CLAP service", function()
  local srv, tmp
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() tmp = fake.tmpdir() end)
  after_each(function() fake.rm_rf(tmp) end)

  -- no cache unless the test gives a cache_dir (SAO_HTTP_CACHE in the caller's environment
  -- must not answer for the server)
  local function client(o)
    local d = { url = srv.url, retries = 1, backoff = 0.01, cache = (o and o.cache_dir) ~= nil }
    for k, v in pairs(o or {}) do d[k] = v end
    return clap.new(d)
  end

  it("is made from options or the environment, and describes itself", function()
    local c = client { url = srv.url .. "/embed/", model = "music_audioset_epoch_15_esc_90.14" }
    assert.equal(srv.url .. " (model music_audioset_epoch_15_esc_90.14)", c:describe())
    with_env({ SAO_CLAP_URL = false }, function()
      assert.is_nil(clap.from_env())
      assert.has_error(function() clap.new() end,
        "clap: no service URL (set SAO_CLAP_URL, e.g. http://127.0.0.1:8000; docs/clap.md says what it must serve)")
    end)
    with_env({ SAO_CLAP_URL = srv.url, SAO_CLAP_MODEL = "m1" }, function()
      local e = clap.from_env()
      assert.equal(srv.url .. " (model m1)", e:describe())
    end)
  end)

  it("embeds texts in order, in batches of `batch` per request", function()
    srv:configure { clap = { dim = 8, text = { ["b"] = { 0, 1, 0, 0, 0, 0, 0, 0 } } } }
    local texts = {}
    for i = 1, 150 do texts[i] = "text " .. i end
    texts[2] = "b"
    local c = client { model = "m" }
    local vecs = c:embed_text(texts)
    assert.equal(150, #vecs)
    assert.same({ 0, 1, 0, 0, 0, 0, 0, 0 }, vecs[2])
    local reqs = srv:requests("/embed")
    assert.equal(3, #reqs)                                  -- 64 + 64 + 22
    local sent = {}
    for _, r in ipairs(reqs) do
      local b = cjson.decode(r.body)
      assert.equal("m", b.model)
      assert.is_nil(r.headers["authorization"])
      sent[#sent + 1] = #b.text
    end
    table.sort(sent)
    assert.same({ 22, 64, 64 }, sent)
    -- deterministic, and the same text gives the same vector whatever its batch
    local again = client { batch = 7 }:embed_text({ texts[150], texts[1] })
    assert.same(vecs[150], again[1])
    assert.same(vecs[1], again[2])
    assert.equal(4, #srv:requests("/embed"))               -- batch 7: one request for two texts
    srv:mark()
    assert.same({}, c:embed_text({}))
    assert.equal(0, #srv:requests())
  end)

  it("sends the prepared audio as a 16-bit 48 kHz WAV that the service decodes", function()
    srv:configure { clap = { dim = 8 } }
    local x = sig.sine(440, 44100, 1.5, 0.3, 2)
    local e = client():embed_audio(x, 44100)
    -- the fake's default audio vector: rms, zero crossings per frame, peak, frames, rate, channels, bits
    assert.equal(8, #e)
    assert.equal(72000, e[4])                               -- ceil(66150 * 48000 / 44100)
    assert.equal(48000, e[5])
    assert.equal(1, e[6])
    assert.equal(16, e[7])
    assert.equal(0, e[8])
    assert.near(PEAK, e[3], 1 / 32768)
    assert.near(PEAK / math.sqrt(2), e[1], 1e-3)
    assert.near(2 * 440 / 48000, e[2], 1e-4)                -- 880 sign changes per second
    local reqs = srv:requests("/embed")
    assert.equal(1, #reqs)
    local body = cjson.decode(reqs[1].body)
    assert.equal(48000, body.sample_rate)
    assert.equal(1, #body.audio)
    assert.is_nil(body.text)
    -- the WAV is exactly prepare()'s output: 44-byte header + 2 bytes per sample
    assert.equal(math.ceil((44 + 2 * 72000) / 3) * 4, #body.audio[1])
    -- and the simulator holds requests to the contract: the rate must be the WAV's
    body.sample_rate = 44100
    local res = require("sao.http").new({ cache_dir = false }):request { method = "POST", url = srv.url .. "/embed", json = body }
    assert.equal(400, res.status)
    assert.equal("audio 0: the WAV is at 48000 Hz but sample_rate says 44100", cjson.decode(res.body).error.message)
  end)

  it("embeds several clips at once, one request each, answers in order", function()
    srv:configure { clap = { dim = 8 } }
    srv:mark()
    local list = {}
    for i, secs in ipairs { 0.5, 1.0, 0.25 } do list[i] = { sig.sine(440, 44100, secs, 0.3, 2), 44100 } end
    local vecs = client():embed_audios(list)
    assert.same({ 24000, 48000, 12000 }, { vecs[1][4], vecs[2][4], vecs[3][4] })   -- frames at 48 kHz
    assert.equal(3, #srv:requests("/embed"))
    local res = client():tag_many(list, { k = 1 })
    assert.equal(3, #res)
    for _, r in ipairs(res) do assert.equal(1, #r.tags.instruments) end
  end)

  it("accepts a single {embedding} reply for one input", function()
    srv:configure { clap = { dim = 4, single = true, audio = { 0.5, 0.5, 0.5, 0.5 } } }
    local c = client()
    assert.same({ 0.5, 0.5, 0.5, 0.5 }, c:embed_audio(sig.sine(100, 16000, 0.2), 16000))
    assert.equal(4, #c:embed_text({ "one" })[1])
  end)

  it("tags a clip by cosine to the tag texts, asking for the tag embeddings once", function()
    local T = function(t) return clap.TEXT_TEMPLATE:format(t) end
    srv:configure { clap = { dim = 8, audio = unit(8, 1), text = {
      [T("piano")] = unit(8, 1), [T("choir")] = unit(8, 1, 2, 0.3), [T("808")] = unit(8, 1, 2, 0.5),
      [T("hi-hats")] = unit(8, 1, 2, 0.7), [T("dark")] = unit(8, 1, 3, 0.2), [T("ominous")] = unit(8, 1, 3, 0.4),
      [T("drill")] = unit(8, 1),
    } } }
    local c = client()
    local x = sig.sine(220, 48000, 0.5)
    local tags, scores, emb = c:tag(x, 48000)
    assert.same({ "piano", "choir", "808" }, tags.instruments)
    assert.same({ "dark", "ominous" }, tags.moods)
    assert.same({ "drill" }, tags.genres)
    assert.same(unit(8, 1), emb)
    assert.near(1, scores.instruments[1].similarity, 1e-12)
    assert.near(1 / math.sqrt(1.09), scores.instruments[2].similarity, 1e-12)
    assert.near(1 / math.sqrt(1.25), scores.instruments[3].similarity, 1e-12)
    assert.equal(#clap.VOCAB.instruments, #scores.instruments)
    assert.equal(#clap.VOCAB.moods, #scores.moods)
    assert.equal(#clap.VOCAB.genres, #scores.genres)
    local reqs = srv:requests("/embed")
    assert.equal(2, #reqs)                                  -- all 57 tags in one text request, one audio
    local text_req = cjson.decode(reqs[1].body).text and reqs[1] or reqs[2]
    local sent = cjson.decode(text_req.body).text
    assert.equal(#clap.VOCAB.instruments + #clap.VOCAB.moods + #clap.VOCAB.genres, #sent)
    assert.equal("This is a sound of 808.", sent[1])
    -- a second clip asks only for its audio embedding
    srv:mark()
    local tags2 = c:tag(x, 48000, { k = { instruments = 1 }, min_similarity = 0.9 })
    assert.same({ "piano" }, tags2.instruments)
    assert.same({ "dark", "ominous" }, tags2.moods)
    assert.equal(1, #srv:requests("/embed"))
    -- a new template is a new set of texts
    srv:mark()
    local c2 = client { template = "%s" }
    c2:tag_embeddings()
    assert.equal("808", cjson.decode(srv:requests("/embed")[1].body).text[1])
    assert.has_error(function() client { template = "no placeholder" }:tag_embeddings() end,
      'clap: the text template must contain %s, got "no placeholder"')
  end)

  it("scores a generation against its prompt", function()
    local prompt = "A dark trap beat at 140 BPM"
    srv:configure { clap = { dim = 8, audio = unit(8, 1, 2, 1), text = { [prompt] = unit(8, 1) } } }
    assert.near(1 / math.sqrt(2), client():score(sig.sine(300, 32000, 0.5), 32000, prompt), 1e-12)
  end)

  it("caches answers in cache_dir: a second identical request asks nothing", function()
    srv:configure { clap = { dim = 8 } }
    local c = client { cache_dir = tmp }
    local x = sig.sine(300, 48000, 0.25)
    local v1, a1 = c:embed_text({ "dark trap", "808" }), c:embed_audio(x, 48000)
    assert.equal(2, #srv:requests("/embed"))
    srv:mark()
    local c2 = client { cache_dir = tmp }
    assert.same(v1, c2:embed_text({ "dark trap", "808" }))
    assert.same(a1, c2:embed_audio(x, 48000))
    assert.equal(0, #srv:requests())
    assert.equal(2, c2.http:stats().cache_hits)
  end)

  it("names the service and says what to set when it is down", function()
    local url = "http://127.0.0.1:" .. fake.dead_port()
    local c = clap.new { url = url, retries = 0, key = "clap-key-down-4321" }
    local ok, err = pcall(c.embed_text, c, { "808" })
    assert.is_false(ok)
    assert.truthy(err:find("clap: POST " .. url .. "/embed", 1, true), err)
    assert.truthy(err:find("is the CLAP service at " .. url .. " running? set SAO_CLAP_URL", 1, true), err)
    assert.is_nil(err:find("clap-key-down-4321", 1, true))
  end)

  it("repeats the server's error message verbatim", function()
    srv:configure { routes = { ["/embed"] = { { status = 500, json = { error = { message = "CUDA out of memory" } } } } } }
    local ok, err = pcall(client().embed_text, client(), { "808" })
    assert.is_false(ok)
    assert.truthy(err:find("clap: POST " .. srv.url .. "/embed -> HTTP 500: CUDA out of memory", 1, true), err)
    assert.equal(2, #srv:requests("/embed"))                -- 5xx is retried (retries = 1)
    srv:configure { clap = { dim = 8, model = "630k-audioset-fusion-best" } }
    ok, err = pcall(client { model = "nope" }.embed_text, client { model = "nope" }, { "808" })
    assert.truthy(err:find("HTTP 404: model 'nope' not found", 1, true), err)
    -- {"error": "<string>"} is read too
    srv:configure { routes = { ["/embed"] = { { status = 400, json = { error = "audio 0: not a RIFF/WAVE file" } } } } }
    ok, err = pcall(client().embed_audio, client(), sig.sine(100, 48000, 0.1), 48000)
    assert.truthy(err:find("HTTP 400: audio 0: not a RIFF/WAVE file", 1, true), err)
  end)

  it("sends the key as Bearer and keeps it out of errors", function()
    local KEY = "clap-secret-98765"
    srv:configure { clap = { dim = 8, key = KEY } }
    assert.equal(8, #client { key = KEY }:embed_text({ "808" })[1])
    assert.equal("Bearer " .. KEY, srv:requests("/embed")[1].headers["authorization"])
    local ok, err = pcall(function() client { key = "wrong-key-11111" }:embed_text({ "808" }) end)
    assert.is_false(ok)
    assert.truthy(err:find("HTTP 401: invalid API key (check SAO_CLAP_KEY)", 1, true), err)
    assert.is_nil(err:find("wrong-key-11111", 1, true))
    with_env({ SAO_CLAP_URL = srv.url, SAO_CLAP_KEY = KEY }, function()
      assert.equal(8, #clap.from_env { retries = 0 }:embed_text({ "808" })[1])
    end)
  end)

  it("refuses answers outside the contract and does not cache them", function()
    local function fails(reply, text_count, want)
      srv:configure { routes = { ["/embed"] = { reply } } }
      local texts = {}
      for i = 1, text_count do texts[i] = "t" .. i end
      local c = client { cache_dir = tmp }
      local ok, err = pcall(c.embed_text, c, texts)
      assert.is_false(ok)
      assert.truthy(err:find(want, 1, true), err)
      assert.same({}, files_under(tmp))
    end
    fails({ json = { embeddings = { { 1, 2, 3 }, { 1, 2 } } } }, 2, "embeddings of different lengths in one answer (3 and 2)")
    fails({ json = { embeddings = { { 1, 2, 3 } } } }, 2, "1 embeddings for 2 inputs")
    fails({ json = { embedding = { 1, 2, 3 } } }, 2, 'no "embeddings" list in the answer')
    fails({ json = { embeddings = { { 1, "x" } } } }, 1, "embedding 1 has a non-number at position 2 (x)")
    fails({ json = { data = {} } }, 1, 'no "embeddings" list in the answer')
    fails({ body = "<html>oops</html>" }, 1, "the answer is not JSON")
    -- after the broken answers, a good one is fetched (nothing broken was kept)
    srv:configure { clap = { dim = 8 } }
    srv:mark()
    assert.equal(8, #client { cache_dir = tmp }:embed_text({ "t1" })[1])
    assert.equal(1, #srv:requests("/embed"))
  end)

  it("refuses text and audio embeddings of different lengths", function()
    srv:configure { clap = { dim = 8, audio = { 1, 0, 0 } } }
    local ok, err = pcall(client().score, client(), sig.sine(100, 48000, 0.1), 48000, "a beat")
    assert.is_false(ok)
    assert.truthy(err:find("-> 3-d embeddings after 8-d ones from the same client", 1, true), err)
    -- the pure functions say it too
    local c = client()
    local te = c:tag_embeddings({ instruments = { "808" } })
    assert.equal(8, #te.instruments[1].emb)
    assert.has_error(function() clap.tag_from_embedding({ 1, 0, 0 }, te) end)
  end)
end)

describe("sao.clap.VOCAB and the prompt writer", function()
  it("every curated tag has words in the trap prompt writer", function()
    local prompt = require "sao.prompt"
    for cat, list in pairs(clap.VOCAB) do
      for _, tag in ipairs(list) do assert.is_true(prompt.knows(cat, tag), cat .. ": " .. tag) end
    end
    assert.is_false(prompt.knows("instruments", "kazoo"))
  end)
end)
