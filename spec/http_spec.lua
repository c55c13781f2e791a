-- sao.http against a loopback server (spec/support/fake_server.lua): retries and backoff timing,
-- Retry-After, timeouts, truncated bodies, the cache (a second run makes no request), the per-host
-- rate limit, concurrent batches, and secrets kept out of logs, errors and cache files.
-- Timing bounds are measured on the server's clock (request arrival times).
local http = require "sao.http"
local fake = require "spec.support.fake"

local function gaps(reqs)
  local g = {}
  for i = 2, #reqs do g[#g + 1] = reqs[i].t - reqs[i - 1].t end
  return g
end

local function files_under(dir)
  local p = io.popen("find '" .. dir .. "' -type f 2>/dev/null")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("sao.http helpers", function()
  it("hashes with SHA-256 (FIPS 180-4 vectors)", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", http.sha256("abc"))
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", http.sha256(""))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      http.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", http.sha256(("a"):rep(1000000)))
  end)

  it("encodes URLs, queries and base64", function()
    assert.equal("a%20b%2Fc%26d~", http.urlencode("a b/c&d~"))
    assert.equal("a=1&b=x%20y&q=%C3%A9", http.query { q = "é", b = "x y", a = 1 })
    assert.equal("Y2xpZW50OnNlY3JldA==", http.base64("client:secret"))
    assert.equal("YWI=", http.base64("ab"))
    assert.equal("YWJj", http.base64("abc"))
  end)

  it("masks secrets and sensitive parameters", function()
    assert.equal("GET http://h/x?api_key=***&q=1 token ***",
      http.redact("GET http://h/x?api_key=k123456&q=1 token s3cr3t-value", { "s3cr3t-value" }))
    assert.equal("https://h/?a=1&access_token=***#f", http.redact("https://h/?a=1&access_token=abcdef#f"))
    assert.equal("client_secret=***&grant_type=x", http.redact("client_secret=zzzz&grant_type=x"))
  end)

  it("extracts server error messages verbatim", function()
    assert.equal("model 'x' not found", http.server_message('{"error":{"message":"model \'x\' not found","type":"x"}}'))
    assert.equal("invalid_client: Invalid client secret",
      http.server_message('{"error":"invalid_client","error_description":"Invalid client secret"}'))
    assert.equal("Track not found", http.server_message('{"error":6,"message":"Track not found"}'))
    assert.equal("<h1>Bad Gateway</h1>", http.server_message("  <h1>Bad Gateway</h1>\n"))
  end)
end)

describe("sao.http against a loopback server", function()
  local srv, tmp
  setup(function() srv = fake.start() end)
  teardown(function() srv:stop() end)
  before_each(function() tmp = fake.tmpdir() end)
  after_each(function() fake.rm_rf(tmp) end)

  local function client(o)
    o = o or {}
    local d = { backoff = 0.05, jitter = 0.5, retries = 3, timeout = 5, read_timeout = 2, cache_dir = false }
    for k, v in pairs(o) do d[k] = v end
    return http.new(d)
  end

  it("sends method, headers and JSON bodies", function()
    srv:configure { routes = { ["/echo"] = { { status = 200, json = { ok = true } } } } }
    local obj, res = client():post_json(srv.url .. "/echo", { b = 2, a = { 1, 2 } }, { headers = { ["X-Test"] = "yes" } })
    assert.is_true(obj.ok)
    assert.equal(200, res.status)
    assert.equal("application/json", res.headers["content-type"])
    local reqs = srv:requests()
    assert.equal(1, #reqs)
    assert.equal("POST", reqs[1].method)
    assert.equal('{"a":[1,2],"b":2}', reqs[1].body)       -- keys sorted: stable bodies, stable keys
    assert.equal("yes", reqs[1].headers["x-test"])
    assert.equal("application/json", reqs[1].headers["content-type"])
    assert.truthy(reqs[1].headers["user-agent"]:match("^sao/"))
  end)

  it("retries a 500 after the backoff and returns the 200", function()
    srv:configure { routes = { ["/flaky"] = { { status = 500, body = "boom" }, { status = 500 }, { status = 200, body = "ok" } } } }
    local res = client():request { url = srv.url .. "/flaky" }
    assert.equal(200, res.status)
    assert.equal("ok", res.body)
    assert.equal(3, res.attempts)
    local g = gaps(srv:requests())
    assert.equal(2, #g)
    -- backoff 0.05 * 2^(k-1) * (1 + 0.5 u): retry 1 in [0.05, 0.075], retry 2 in [0.10, 0.15]; +0.1 s slack
    assert.is_true(g[1] >= 0.045 and g[1] < 0.175, "first gap " .. g[1])
    assert.is_true(g[2] >= 0.095 and g[2] < 0.25, "second gap " .. g[2])
    assert.truthy(res.log:find("attempt 1: GET .- %-> HTTP 500"))
  end)

  it("honours Retry-After on 429", function()
    srv:configure { routes = { ["/ra"] = { { status = 429, headers = { ["Retry-After"] = "0.4" } }, { status = 200, body = "fine" } } } }
    local res = client():request { url = srv.url .. "/ra" }
    assert.equal(200, res.status)
    local g = gaps(srv:requests())
    assert.is_true(g[1] >= 0.38 and g[1] < 0.7, "gap " .. g[1])
  end)

  it("gives up when Retry-After is longer than allowed", function()
    srv:configure { routes = { ["/long"] = { { status = 429, headers = { ["Retry-After"] = "3600" }, body = "slow down" } } } }
    local res = client { retry_after_max = 5 }:request { url = srv.url .. "/long" }
    assert.equal(429, res.status)
    assert.equal(1, #srv:requests())
    assert.truthy(res.log:find("giving up"))
  end)

  it("stops after max retries and surfaces the server's message verbatim", function()
    srv:configure { routes = { ["/down"] = { { status = 503, json = { error = { message = "upstream overloaded (try later)" } } } } } }
    local c = client { retries = 2 }
    local res = c:request { url = srv.url .. "/down" }
    assert.equal(503, res.status)
    assert.equal(3, res.attempts)
    assert.equal(3, #srv:requests())
    local ok, err = pcall(c.get_json, c, srv.url .. "/down", { what = "test" })
    assert.is_false(ok)
    assert.truthy(err:find("HTTP 503: upstream overloaded (try later)", 1, true), err)
  end)

  it("does not retry a 404", function()
    srv:configure { routes = { ["/missing"] = { { status = 404, body = "nope" } } } }
    local res = client():request { url = srv.url .. "/missing" }
    assert.equal(404, res.status)
    assert.equal(1, #srv:requests())
  end)

  it("reports connection refused after retrying with backoff", function()
    local port = fake.dead_port()
    local t0 = http.clock()
    local res = client { retries = 2 }:request { url = "http://127.0.0.1:" .. port .. "/x" }
    local took = http.clock() - t0
    assert.equal(0, res.status)
    assert.equal(3, res.attempts)
    assert.truthy(res.error:find("onnect"), res.error)
    assert.truthy(res.error:find("after 3 attempts"), res.error)
    assert.is_true(took >= 0.15 and took < 1.0, "took " .. took)   -- 0.05 + 0.10 of backoff at least
  end)

  it("times out a response that never starts (read timeout) and one that trickles (total timeout)", function()
    srv:configure { routes = { ["/slow"] = { { delay = 1.5, status = 200, body = "late" } },
      ["/trickle"] = { { trickle = 0.1, chunk = 1, status = 200, body = ("x"):rep(30) } } } }
    local t0 = http.clock()
    local res = client { retries = 0, read_timeout = 0.3 }:request { url = srv.url .. "/slow" }
    assert.equal(0, res.status)
    assert.truthy(res.error:find("read timeout"), res.error)
    assert.is_true(http.clock() - t0 < 1.0)
    t0 = http.clock()
    res = client { retries = 0, timeout = 0.6 }:request { url = srv.url .. "/trickle" }
    assert.equal(0, res.status)
    assert.truthy(res.error:lower():find("timed out"), res.error)
    assert.is_true(http.clock() - t0 < 1.2)
  end)

  it("retries a truncated body and a dropped connection", function()
    srv:configure { routes = { ["/trunc"] = { { status = 200, body = "abc", content_length = 100 }, { status = 200, body = "whole" } },
      ["/hangup"] = { { close = true }, { status = 200, body = "back" } } } }
    local c = client()
    local res = c:request { url = srv.url .. "/trunc" }
    assert.equal("whole", res.body)
    assert.equal(2, res.attempts)
    res = c:request { url = srv.url .. "/hangup" }
    assert.equal("back", res.body)
    assert.equal(2, res.attempts)
  end)

  it("raises on malformed JSON, naming the URL", function()
    srv:configure { routes = { ["/bad"] = { { status = 200, body = "{not json" } } } }
    local c = client()
    local ok, err = pcall(c.get_json, c, srv.url .. "/bad", { what = "test" })
    assert.is_false(ok)
    assert.truthy(err:find("not JSON", 1, true), err)
    assert.truthy(err:find("/bad", 1, true), err)
  end)

  it("caches responses on disk: a second run makes no request", function()
    srv:configure { routes = { ["/a"] = { { status = 200, body = "A" } }, ["/b"] = { { status = 200, body = "B" } } } }
    local specs = { { url = srv.url .. "/a", query = { api_key = "KEY-abcdef-1" } }, { url = srv.url .. "/b" } }
    local first = http.new { cache_dir = tmp }:batch(specs)
    assert.equal(2, #srv:requests())
    assert.is_false(first[1].from_cache)
    srv:mark()
    local c2 = http.new { cache_dir = tmp }
    local second = c2:batch(specs)
    assert.equal(0, #srv:requests())
    assert.is_true(second[1].from_cache and second[2].from_cache)
    assert.equal("A", second[1].body)
    assert.equal("B", second[2].body)
    assert.equal(2, c2:stats().cache_hits)
    -- the key ignores the secret: another key, same entry
    local third = c2:request { url = srv.url .. "/a", query = { api_key = "KEY-zzzzzz-2" }, secrets = { "KEY-zzzzzz-2" } }
    assert.is_true(third.from_cache)
    -- file names are hashes; no file mentions the key
    for _, f in ipairs(files_under(tmp)) do
      assert.truthy(f:match("/%x%x/%x+$"), f)
      assert.is_nil(read_all(f):find("KEY-abcdef-1", 1, true))
    end
  end)

  it("refetches stale entries and never caches failures unless asked", function()
    srv:configure { routes = { ["/x"] = { { status = 200, body = "v1" }, { status = 200, body = "v2" } },
      ["/err"] = { { status = 500 } }, ["/gone"] = { { status = 404, body = "no" } }, ["/auth"] = { { status = 401 } } } }
    local c = http.new { cache_dir = tmp, ttl = 3600, retries = 0 }
    local r = c:request { url = srv.url .. "/x" }
    assert.equal("v1", r.body)
    -- age the entry by rewriting its timestamp
    local s = read_all(r.cache_path):gsub("\ntime %d+\n", "\ntime 1000\n")
    local f = assert(io.open(r.cache_path, "wb")); f:write(s); f:close()
    r = c:request { url = srv.url .. "/x" }
    assert.is_false(r.from_cache)
    assert.equal("v2", r.body)
    c:request { url = srv.url .. "/err" }
    c:request { url = srv.url .. "/gone" }
    c:request { url = srv.url .. "/gone", cache = "errors" }
    c:request { url = srv.url .. "/auth", cache = "errors" }
    srv:mark()
    assert.is_false(c:request { url = srv.url .. "/err" }.from_cache)
    assert.is_true(c:request { url = srv.url .. "/gone", cache = "errors" }.from_cache)
    assert.is_false(c:request { url = srv.url .. "/auth", cache = "errors" }.from_cache)
    assert.equal(2, #srv:requests())
  end)

  it("caches POST only when asked, keyed by the body", function()
    srv:configure { routes = { ["/p"] = { { status = 200, body = "r" } } } }
    local c = http.new { cache_dir = tmp }
    c:request { url = srv.url .. "/p", body = "x" }
    c:request { url = srv.url .. "/p", body = "x" }
    assert.equal(2, #srv:requests())
    srv:mark()
    c:request { url = srv.url .. "/p", body = "one", cache = true }
    c:request { url = srv.url .. "/p", body = "two", cache = true }
    assert.is_true(c:request { url = srv.url .. "/p", body = "one", cache = true }.from_cache)
    assert.equal(2, #srv:requests())
  end)

  it("runs a batch concurrently and keeps the order", function()
    local routes = {}
    for i = 1, 6 do routes["/c" .. i] = { { delay = 0.4, status = 200, body = "body" .. i } } end
    srv:configure { routes = routes }
    local specs = {}
    for i = 1, 6 do specs[i] = { url = srv.url .. "/c" .. i } end
    local t0 = http.clock()
    local out = client():batch(specs)
    local took = http.clock() - t0
    for i = 1, 6 do assert.equal("body" .. i, out[i].body) end
    assert.is_true(took < 1.3, "6 x 0.4 s took " .. took .. " s: not concurrent")
  end)

  it("spaces requests to one host by the rate limit", function()
    srv:configure { routes = { ["/r"] = { { status = 200, body = "x" } } } }
    local specs = {}
    for i = 1, 5 do specs[i] = { url = srv.url .. "/r", query = { i = i } } end
    local c = client { rates = { ["127.0.0.1"] = 10 } }
    local t0 = http.clock()
    c:batch(specs)
    assert.is_true(http.clock() - t0 >= 0.38)
    for _, g in ipairs(gaps(srv:requests())) do assert.is_true(g >= 0.085, "gap " .. g) end
  end)

  it("keeps secrets out of logs, errors and cache files", function()
    srv:configure { routes = { ["/s"] = { { status = 500, body = "bad" } } } }
    local lines = {}
    local c = http.new { cache_dir = tmp, retries = 1, backoff = 0.01, log = function(l) lines[#lines + 1] = l end }
    local secret, token = "lfm-KEY-0123456789", "tok-SECRET-abcdef"
    local res = c:request { url = srv.url .. "/s", query = { api_key = secret, q = "x" },
      headers = { Authorization = "Bearer " .. token }, secrets = { secret } }
    local ok, err = pcall(http.raise, res, "test")
    assert.is_false(ok)
    local dead = c:request { url = "http://127.0.0.1:" .. fake.dead_port() .. "/?key=" .. secret, secrets = { secret } }
    local everything = table.concat(lines, "\n") .. res.log .. err .. dead.error .. dead.log .. res.url
    assert.is_nil(everything:find(secret, 1, true))
    assert.is_nil(everything:find(token, 1, true))
    assert.truthy(everything:find("api_key=***", 1, true))
    for _, f in ipairs(files_under(tmp)) do assert.is_nil(read_all(f):find(secret, 1, true)) end
    -- but the server did get them
    assert.truthy(srv:raw_log():find(secret, 1, true))
  end)

  it("answers cache-only lookups without a transfer", function()
    srv:configure { routes = { ["/co"] = { { status = 200, body = "x" } } } }
    local c = http.new { cache_dir = tmp }
    local miss = c:request { url = srv.url .. "/co", cache_only = true }
    assert.equal(0, miss.status)
    assert.is_nil(miss.error)
    assert.equal(0, #srv:requests())
    c:request { url = srv.url .. "/co" }
    assert.is_true(c:request { url = srv.url .. "/co", cache_only = true }.from_cache)
  end)

  it("rejects a bad URL without a transfer", function()
    local res = client():request { url = "not a url" }
    assert.equal(0, res.status)
    assert.truthy(res.error:find("not a valid"), res.error)
  end)
end)
