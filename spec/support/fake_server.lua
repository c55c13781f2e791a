-- fake_server.lua — a loopback HTTP/1.1 server for the specs, in LuaJIT with FFI sockets.
--
--   luajit spec/support/fake_server.lua DIR      prints "listening PORT PID" and serves until killed
--
-- It simulates an OpenAI-compatible LLM server, the Spotify Web API (client-credentials token,
-- search, audio-features, audio-analysis), Last.fm and a CLAP embedding service (sao.clap's
-- /embed), and plays scripted faults. The spec talks to it through files in DIR (see
-- spec/support/fake.lua): DIR/config.json is re-read whenever its "version" changes (which also
-- resets the per-route counters), and every request is appended to DIR/log.jsonl (time, method,
-- path, query, headers, body) before it is answered, so a spec counts requests server-side.
--
-- config.json:
--   { "version": 1,
--     "routes": { "/path": [behaviour, ...] },   -- played in order per path; the last repeats
--     "openai":  { "key": "sk-..", "replies": ["..", ..] | nil (then a prompt built from the
--                  request JSON), "model": "llama3.1" },
--     "spotify": { "client_id": "..", "client_secret": "..", "token_ttl": 3600,
--                  "features": 403 | "ok", "analysis": 403 | "ok",
--                  "tracks": [ {"artist","song","id","features"={..},"analysis"={..}} ] },
--     "lastfm":  { "api_key": "..", "tracks": [ {"artist","song","tags"=[[name,count],..]} ] },
--     "clap":    { "dim": 8, "key": "..", "model": "..", "single": true,
--                  "text": { "<text>": [..] }, "audio": [..] } }
-- clap (POST /embed, the contract of docs/clap.md): {"text": [..]} or {"audio": [base64 WAV, ..],
--   "sample_rate": n} -> {"embeddings": [[..], ..]} ({"embedding": [..]} for one input when
--   "single" is set). A text's vector is clap.text[text] when given, else dim numbers in [-1, 1)
--   from a hash of the string. An audio's vector is clap.audio when given, else what the server
--   read from the 16-bit PCM WAV, padded with zeros (or cut) to dim:
--   [rms, zero crossings per frame, peak, frames, sample rate, channels, bits] (mono mean, x/32768).
--   401 when "key" is set and the Bearer token differs; 404 when "model" is set and the request
--   names another; 400 for a body outside the contract (sample_rate not the WAV's, not PCM16, ..).
-- behaviour: { status=200, headers={..}, body=".." | json=.., delay=s (before anything is sent),
--              trickle=s (pause between chunks of `chunk` bytes), content_length=n (a lie: the
--              body is truncated), close=true (hang up without answering), pass=true (let the
--              simulator answer) }
local ffi = require "ffi"
local bit = require "bit"
local cjson = require "cjson"

ffi.cdef [[
typedef struct fs_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; } fs_sockaddr_in;
typedef struct fs_pollfd { int fd; short events; short revents; } fs_pollfd;
typedef struct fs_timespec { long sec; long nsec; } fs_timespec;
int socket(int domain, int type, int protocol);
int setsockopt(int fd, int level, int name, const void *val, uint32_t len);
int bind(int fd, const void *addr, uint32_t len);
int listen(int fd, int backlog);
int accept(int fd, void *addr, void *len);
int getsockname(int fd, void *addr, uint32_t *len);
long read(int fd, void *buf, size_t n);
long write(int fd, const void *buf, size_t n);
int close(int fd);
int shutdown(int fd, int how);
int poll(fs_pollfd *fds, unsigned long n, int timeout);
int fork(void);
void _exit(int status);
int getpid(void);
int getppid(void);
void *signal(int sig, void *handler);
int clock_gettime(int clk, fs_timespec *ts);
int nanosleep(const fs_timespec *req, fs_timespec *rem);
]]
local C = ffi.C

local dir = assert(arg[1], "usage: fake_server.lua DIR")
local AF_INET, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR = 2, 1, 1, 2
local POLLIN = 1

local function now()
  local ts = ffi.new("fs_timespec")
  C.clock_gettime(0, ts)                        -- CLOCK_REALTIME: comparable across processes
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local function sleep(s)
  if s <= 0 then return end
  local ts = ffi.new("fs_timespec", math.floor(s), (s - math.floor(s)) * 1e9)
  C.nanosleep(ts, nil)
end

local function htons(x) return bit.bor(bit.rshift(x, 8), bit.band(bit.lshift(x, 8), 0xff00)) end

-- listening socket on 127.0.0.1, ephemeral port
local srv = C.socket(AF_INET, SOCK_STREAM, 0)
assert(srv >= 0, "socket failed")
local one = ffi.new("int[1]", 1)
C.setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, one, 4)
local sa = ffi.new("fs_sockaddr_in")
sa.family = AF_INET
sa.port = 0
sa.addr = 0x0100007f                            -- 127.0.0.1 in network order (little-endian host)
assert(C.bind(srv, sa, ffi.sizeof(sa)) == 0, "bind failed")
assert(C.listen(srv, 64) == 0, "listen failed")
local len = ffi.new("uint32_t[1]", ffi.sizeof(sa))
C.getsockname(srv, sa, len)
local port = htons(sa.port)
C.signal(17, ffi.cast("void *", 1))             -- SIGCHLD ignored: children are reaped
C.signal(13, ffi.cast("void *", 1))             -- SIGPIPE ignored: clients that hang up
local parent = C.getppid()
io.stdout:write(("listening %d %d\n"):format(port, C.getpid()))
io.stdout:flush()

-- config -------------------------------------------------------------------------------------
local cfg, cfg_version, counters = { routes = {} }, nil, {}
local state = { tokens = {}, ntok = 0 }

local function read_file(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function reload()
  local s = read_file(dir .. "/config.json")
  if not s then return end
  local ok, c = pcall(cjson.decode, s)
  if ok and type(c) == "table" and c.version ~= cfg_version then
    cfg, cfg_version, counters = c, c.version, {}
    cfg.routes = cfg.routes or {}
    state = { tokens = {}, ntok = 0 }
  end
end

local logf = assert(io.open(dir .. "/log.jsonl", "ab"))

-- socket I/O ---------------------------------------------------------------------------------
local function write_all(fd, s)
  local p, n = ffi.cast("const char *", s), #s
  local off = 0
  while off < n do
    local w = C.write(fd, p + off, n - off)
    if w <= 0 then return false end
    off = off + tonumber(w)
  end
  return true
end

local function read_some(fd, timeout_ms)
  local pfd = ffi.new("fs_pollfd[1]")
  pfd[0].fd, pfd[0].events = fd, POLLIN
  if C.poll(pfd, 1, timeout_ms) <= 0 then return nil end
  local b = ffi.new("char[65536]")
  local n = C.read(fd, b, 65536)
  if n <= 0 then return nil end
  return ffi.string(b, n)
end

local function url_decode(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_query(q)
  local t = {}
  for k, v in (q or ""):gmatch("([^&=]+)=?([^&]*)") do t[url_decode(k)] = url_decode(v) end
  return t
end

local function read_request(fd)
  local data = ""
  local deadline = now() + 5
  while not data:find("\r\n\r\n", 1, true) do
    local s = read_some(fd, 200)
    if s then data = data .. s elseif now() > deadline then return nil end
    if #data > 1e6 then return nil end
  end
  local head, rest = data:match("^(.-)\r\n\r\n(.*)$")
  local method, target = head:match("^(%u+) (%S+) HTTP/1%.%d")
  if not method then return nil end
  local headers = {}
  for line in head:gmatch("\r\n([^\r\n]+)") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  if (headers["expect"] or ""):lower() == "100-continue" then write_all(fd, "HTTP/1.1 100 Continue\r\n\r\n") end
  local need = tonumber(headers["content-length"] or "0") or 0
  while #rest < need do
    local s = read_some(fd, 200)
    if s then rest = rest .. s elseif now() > deadline then return nil end
  end
  local path, query = target:match("^([^?]*)%??(.*)$")
  return { method = method, path = path, query = query, args = parse_query(query), headers = headers, body = rest }
end

local reasons = { [200] = "OK", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [429] = "Too Many Requests", [500] = "Internal Server Error",
  [502] = "Bad Gateway", [503] = "Service Unavailable" }

-- Sends the behaviour b (status, headers, body, delay, trickle, content_length, close).
local function respond(fd, b)
  if b.delay and b.delay > 0 then sleep(b.delay) end
  if b.close then return end
  local body = b.body or (b.json ~= nil and cjson.encode(b.json)) or ""
  local status = b.status or 200
  local h = { ("HTTP/1.1 %d %s"):format(status, reasons[status] or "Status") }
  local hdrs = b.headers or {}
  if not hdrs["Content-Type"] then
    hdrs["Content-Type"] = (b.json ~= nil) and "application/json" or "text/plain"
  end
  hdrs["Content-Length"] = tostring(b.content_length or #body)
  hdrs["Connection"] = "close"
  for k, v in pairs(hdrs) do h[#h + 1] = k .. ": " .. tostring(v) end
  local msg = table.concat(h, "\r\n") .. "\r\n\r\n"
  if b.trickle and b.trickle > 0 then
    if not write_all(fd, msg) then return end
    local chunk = b.chunk or 1
    for i = 1, #body, chunk do
      sleep(b.trickle)
      if not write_all(fd, body:sub(i, i + chunk - 1)) then return end
    end
  else
    write_all(fd, msg .. body)
  end
end

local function json_reply(status, t, headers) return { status = status, json = t, headers = headers } end

-- simulators ---------------------------------------------------------------------------------
-- Base64 (RFC 4648) decoding: characters outside the alphabet are skipped, "=" ends the data.
-- Sizable inputs (WAV files for the CLAP simulator) go through a byte table and an FFI buffer.
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64val = {}
for i = 1, 64 do b64val[b64chars:byte(i)] = i - 1 end
local function b64decode(s)
  local n = #s
  local out = ffi.new("uint8_t[?]", math.floor(n * 3 / 4) + 3)
  local p = ffi.cast("const uint8_t *", s)
  local bits, nbits, k = 0, 0, 0
  for i = 0, n - 1 do
    local c = p[i]
    if c == 61 then break end                   -- "="
    local v = b64val[c]
    if v then
      bits = bit.bor(bit.lshift(bit.band(bits, 0xffff), 6), v)
      nbits = nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        out[k] = bit.band(bit.rshift(bits, nbits), 0xff)
        k = k + 1
      end
    end
  end
  return ffi.string(out, k)
end

local function openai(req)
  local o = cfg.openai or {}
  if o.key and req.headers["authorization"] ~= "Bearer " .. o.key then
    return json_reply(401, { error = { message = "Incorrect API key provided", type = "invalid_request_error",
      code = "invalid_api_key" } })
  end
  local ok, body = pcall(cjson.decode, req.body)
  if not ok or type(body) ~= "table" then
    return json_reply(400, { error = { message = "could not parse the JSON body", type = "invalid_request_error" } })
  end
  if req.path:match("/embeddings$") then
    local data = {}
    local inputs = type(body.input) == "table" and body.input or { body.input }
    for i, s in ipairs(inputs) do
      local v, h = {}, 0
      for j = 1, #s do h = (h * 31 + s:byte(j)) % 1000003 end
      for k = 1, 8 do v[k] = ((h * k) % 997) / 997 - 0.5 end
      data[i] = { object = "embedding", index = i - 1, embedding = v }
    end
    return json_reply(200, { object = "list", data = data, model = body.model })
  end
  counters.openai = (counters.openai or 0) + 1
  local content
  if o.replies and #o.replies > 0 then
    content = o.replies[math.min(counters.openai, #o.replies)]
  else
    -- a plausible prompt built from the last user message (the clip JSON)
    local msgs = body.messages or {}
    local last = msgs[#msgs] and msgs[#msgs].content or "{}"
    local okm, meta = pcall(cjson.decode, last)
    meta = okm and type(meta) == "table" and meta or {}
    local parts = {}
    local tags = meta.tags or meta.Tags
    parts[#parts + 1] = "Bright " .. ((type(tags) == "table" and tags[1]) or "instrumental") .. " piece"
    local inst = meta.instruments or meta.Instruments
    if type(inst) == "table" and #inst > 0 then parts[#parts + 1] = "with " .. table.concat(inst, ", ") end
    if meta.key and meta.key ~= "" and meta.key ~= cjson.null then
      parts[#parts + 1] = "in the key of " .. meta.key .. " " .. tostring(meta.mode or "Major")
    end
    if meta.tempo and meta.tempo ~= cjson.null then parts[#parts + 1] = ("at %d BPM"):format(math.floor(meta.tempo + 0.5)) end
    content = table.concat(parts, " ") .. "."
  end
  return json_reply(200, {
    id = "chatcmpl-" .. counters.openai, object = "chat.completion", model = body.model or o.model,
    choices = { { index = 0, message = { role = "assistant", content = content }, finish_reason = "stop" } },
    usage = { prompt_tokens = 10, completion_tokens = 10, total_tokens = 20 } })
end

local function find_track(list, artist, song)
  for _, t in ipairs(list or {}) do
    if (artist or ""):lower() == t.artist:lower() and (song or ""):lower() == t.song:lower() then return t end
  end
end

local function spotify(req)
  local s = cfg.spotify or {}
  if req.path:match("/api/token$") then
    local auth = req.headers["authorization"] or ""
    local cred = b64decode(auth:match("^Basic%s+(.+)$") or "")
    if req.method ~= "POST" or not req.body:find("grant_type=client_credentials", 1, true) then
      return json_reply(400, { error = "unsupported_grant_type" })
    end
    if cred ~= (s.client_id or "") .. ":" .. (s.client_secret or "") then
      return json_reply(400, { error = "invalid_client", error_description = "Invalid client secret" })
    end
    state.ntok = state.ntok + 1
    local tok = ("BQ-token-%d-%d"):format(state.ntok, math.random(1e6))
    local ttl = s.token_ttl or 3600
    state.tokens[tok] = now() + ttl
    return json_reply(200, { access_token = tok, token_type = "Bearer", expires_in = ttl })
  end
  local tok = (req.headers["authorization"] or ""):match("^Bearer%s+(.+)$")
  if not tok or not state.tokens[tok] then
    return json_reply(401, { error = { status = 401, message = "Invalid access token" } })
  end
  if state.tokens[tok] < now() or (s.revoke and s.revoke[tok:match("^BQ%-token%-(%d+)")]) then
    return json_reply(401, { error = { status = 401, message = "The access token expired" } })
  end
  if req.path:match("/v1/search$") then
    local q = (req.args.q or ""):lower()
    for _, t in ipairs(s.tracks or {}) do
      if q:find(t.artist:lower(), 1, true) and q:find(t.song:lower(), 1, true) then
        return json_reply(200, { tracks = { total = 1, items = { { id = t.id, name = t.song,
          duration_ms = t.duration_ms or 200000, artists = { { name = t.artist } }, popularity = 50 } } } })
      end
    end
    return json_reply(200, { tracks = { total = 0, items = {} } })
  end
  local forbidden = json_reply(403, { error = { status = 403, message = "Forbidden" } })
  if req.path:match("/v1/audio%-features$") then
    if s.features ~= "ok" then return forbidden end
    local out = {}
    for id in (req.args.ids or ""):gmatch("[^,]+") do
      local f = cjson.null
      for _, t in ipairs(s.tracks or {}) do if t.id == id then f = t.features or cjson.null end end
      out[#out + 1] = f
    end
    return json_reply(200, { audio_features = out })
  end
  local id = req.path:match("/v1/audio%-analysis/([^/]+)$")
  if id then
    if s.analysis ~= "ok" then return forbidden end
    for _, t in ipairs(s.tracks or {}) do
      if t.id == id and t.analysis then return json_reply(200, t.analysis) end
    end
    return json_reply(404, { error = { status = 404, message = "analysis not found" } })
  end
  return json_reply(404, { error = { status = 404, message = "Service not found" } })
end

local function lastfm(req)
  local l = cfg.lastfm or {}
  local a = req.args
  if a.api_key ~= l.api_key then
    return json_reply(403, { error = 10, message = "Invalid API key - You must be granted a valid key by last.fm" })
  end
  if a.format ~= "json" then return { status = 200, body = "<lfm status=\"ok\"/>" } end
  local t = find_track(l.tracks, a.artist, a.track)
  if a.method == "track.search" then
    local matches = {}
    if t then matches[1] = { name = t.song, artist = t.artist, listeners = "1000", url = "https://last.fm/x" } end
    return json_reply(200, { results = { ["opensearch:totalResults"] = tostring(#matches),
      trackmatches = { track = matches } } })
  elseif a.method == "track.gettoptags" or a.method == "track.getTopTags" then
    if not t then return json_reply(200, { error = 6, message = "Track not found" }) end
    local tags = {}
    for i, tg in ipairs(t.tags or {}) do tags[i] = { name = tg[1], count = tg[2], url = "https://last.fm/tag/x" } end
    return json_reply(200, { toptags = { tag = tags, ["@attr"] = { artist = t.artist, track = t.song } } })
  end
  return json_reply(400, { error = 3, message = "Invalid Method - No method with that name in this package" })
end

-- CLAP embedding service -------------------------------------------------------------------
local function le(s, i, n)                      -- unsigned little-endian integer of n bytes at i
  local v = 0
  for j = n - 1, 0, -1 do v = v * 256 + s:byte(i + j) end
  return v
end

-- Reads a RIFF/WAVE file with 16-bit PCM samples; returns the facts the default audio
-- embedding is made of, or nil and why.
local function wav_facts(s)
  if #s < 12 or s:sub(1, 4) ~= "RIFF" or s:sub(9, 12) ~= "WAVE" then return nil, "not a RIFF/WAVE file" end
  local fmt, data_at, data_len
  local i = 13
  while i + 7 <= #s do
    local id, size = s:sub(i, i + 3), le(s, i + 4, 4)
    local at = i + 8
    if id == "fmt " and size >= 16 then
      fmt = { tag = le(s, at, 2), channels = le(s, at + 2, 2), rate = le(s, at + 4, 4), bits = le(s, at + 14, 2) }
      if fmt.tag == 0xFFFE and size >= 26 then fmt.tag = le(s, at + 24, 2) end  -- WAVE_FORMAT_EXTENSIBLE
    elseif id == "data" then
      data_at, data_len = at, math.min(size, #s - at + 1)
    end
    i = at + size + size % 2
  end
  if not fmt then return nil, "no fmt chunk" end
  if not data_at then return nil, "no data chunk" end
  if fmt.tag ~= 1 or fmt.bits ~= 16 then
    return nil, ("expected 16-bit PCM, got format %d with %d bits"):format(fmt.tag, fmt.bits)
  end
  local ch = fmt.channels
  local frames = math.floor(data_len / (2 * ch))
  local x = ffi.new("int16_t[?]", math.max(1, frames * ch))
  ffi.copy(x, ffi.cast("const char *", s) + data_at - 1, frames * ch * 2)
  local sum2, peak, crossings, prev = 0, 0, 0, nil
  for f = 0, frames - 1 do
    local v = 0
    for c = 0, ch - 1 do v = v + x[f * ch + c] end
    v = v / ch / 32768
    sum2 = sum2 + v * v
    if math.abs(v) > peak then peak = math.abs(v) end
    local pos = v >= 0
    if prev ~= nil and pos ~= prev then crossings = crossings + 1 end
    prev = pos
  end
  return { rms = frames > 0 and math.sqrt(sum2 / frames) or 0, zcr = frames > 1 and crossings / (frames - 1) or 0,
    peak = peak, frames = frames, rate = fmt.rate, channels = ch, bits = fmt.bits }
end

-- dim numbers in [-1, 1) from a string (a hash, then a Lehmer stream).
local function text_vector(s, dim)
  local h = 7
  for j = 1, #s do h = (h * 31 + s:byte(j)) % 2147483647 end
  if h == 0 then h = 1 end
  local v = {}
  for k = 1, dim do
    h = (h * 48271) % 2147483647
    v[k] = h / 2147483647 * 2 - 1
  end
  return v
end

local function fit(v, dim)
  local out = {}
  for k = 1, dim do out[k] = v[k] or 0 end
  return out
end

local function clap(req)
  local c = cfg.clap or {}
  local dim = c.dim or 8
  local function bad(msg) return json_reply(400, { error = { message = msg, type = "invalid_request" } }) end
  if c.key and req.headers["authorization"] ~= "Bearer " .. c.key then
    return json_reply(401, { error = { message = "invalid API key", type = "unauthorized" } })
  end
  if req.method ~= "POST" then return json_reply(405, { error = "POST only" }) end
  local ok, body = pcall(cjson.decode, req.body)
  if not ok or type(body) ~= "table" then return bad("the body is not a JSON object") end
  if c.model and type(body.model) == "string" and body.model ~= c.model then
    return json_reply(404, { error = { message = ("model '%s' not found"):format(body.model) } })
  end
  local text, audio = body.text, body.audio
  if (text == nil) == (audio == nil) then return bad("give exactly one of \"text\" and \"audio\"") end
  local inputs = text or audio
  if type(inputs) ~= "table" or #inputs == 0 then return bad("inputs must be a non-empty array") end
  local out = {}
  for i, s in ipairs(inputs) do
    if type(s) ~= "string" then return bad(("input %d is not a string"):format(i - 1)) end
    if text then
      out[i] = (c.text and c.text[s]) or text_vector(s, dim)
    else
      if type(body.sample_rate) ~= "number" then return bad("audio needs \"sample_rate\"") end
      local f, why = wav_facts(b64decode(s))
      if not f then return bad(("audio %d: %s"):format(i - 1, why)) end
      if f.rate ~= body.sample_rate then
        return bad(("audio %d: the WAV is at %d Hz but sample_rate says %s"):format(i - 1, f.rate, tostring(body.sample_rate)))
      end
      out[i] = c.audio or fit({ f.rms, f.zcr, f.peak, f.frames, f.rate, f.channels, f.bits }, dim)
    end
  end
  if c.single and #out == 1 then return json_reply(200, { embedding = out[1], model = c.model }) end
  return json_reply(200, { embeddings = out, model = c.model })
end

local function simulate(req)
  local p = req.path
  if p:match("/embed$") then return clap(req) end
  if p:match("/chat/completions$") or p:match("/embeddings$") then return openai(req) end
  if p:match("/api/token$") or p:match("^/v1/search$") or p:match("^/v1/audio%-") then return spotify(req) end
  if p:match("^/2%.0/?$") then return lastfm(req) end
  return json_reply(404, { error = "no route for " .. p })
end

local function behaviour(req)
  local list = cfg.routes[req.path]
  if type(list) == "table" and #list > 0 then
    local n = (counters[req.path] or 0) + 1
    counters[req.path] = n
    local b = list[math.min(n, #list)]
    if not b.pass then return b end
    if b.delay then sleep(b.delay) end
  end
  return simulate(req)
end

-- main loop ----------------------------------------------------------------------------------
local pfd = ffi.new("fs_pollfd[1]")
pfd[0].fd, pfd[0].events = srv, POLLIN
local idle_since = now()
while true do
  if C.getppid() ~= parent or now() - idle_since > 600 then break end   -- the spec has gone
  if C.poll(pfd, 1, 500) > 0 then
    local fd = C.accept(srv, nil, nil)
    if fd >= 0 then
      idle_since = now()
      local req = read_request(fd)
      if req then
        reload()
        logf:write(cjson.encode { t = now(), method = req.method, path = req.path, query = req.query,
          headers = req.headers, body = req.body }, "\n")
        logf:flush()
        local ok, b = pcall(behaviour, req)
        if not ok then b = json_reply(500, { error = "fake server: " .. tostring(b) }) end
        if (b.delay and b.delay > 0) or (b.trickle and b.trickle > 0) then
          local pid = C.fork()                -- the child plays the slow part; the parent serves on
          if pid == 0 then
            C.close(srv)
            respond(fd, b)
            C.shutdown(fd, 1)
            C.close(fd)
            C._exit(0)
          end
        else
          respond(fd, b)
          C.shutdown(fd, 1)
        end
      end
      C.close(fd)
    end
  end
end
