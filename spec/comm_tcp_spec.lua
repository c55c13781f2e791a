-- The data-parallel group's collectives (sao.comm) across three processes, over both transports
-- (the shared file and TCP): every rank's results against the exact expected values and against
-- each other (byte for byte), on odd sizes, empty shards and a list of ~4 million floats (which a
-- blocking ring would deadlock on); the shard ranges; and the TCP transport's failures (a rank that
-- exits or aborts, one that never comes, ranks out of step, bad addresses, a port in use).
local sao = require "sao"
local comm = require "sao.comm"
local ffi = require "ffi"
local now = require("sao.progress").now
local shell = require "support.shell"

pcall(ffi.cdef, "int getpid(void);")
local PID = ffi.C.getpid()

-- What every rank runs (rank 0 in this process, ranks 1 and 2 as ./sao children): the same
-- collectives in the same order, each result kept as raw bytes under a name.
local PROGRAM = [==[
local sao = require "sao"
local ffi = require "ffi"
local now = require("sao.progress").now
pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
local P = {}
-- tensor shapes per case: odd sizes (25 floats: not a multiple of 3), fewer floats than ranks
-- (empty shards), one float, and ~4.1 million floats (16 MB: far more than a socket's buffers)
P.cases = {
  odd = { { 7 }, { 3, 5 }, { 2 }, { 1 } },
  tiny = { { 1 }, { 1 } },
  one = { { 1 } },
  big = { { 2097152 }, { 2000001 } },
}
P.order = { "odd", "tiny", "one", "big" }
local C = { 1, -3, 2 }
-- Rank r's value at flat index j (0-based): a + r*b + C[r], C summing to 0 over the 3 ranks, so the
-- mean is a + b exactly (halves and small integers: every partial sum is exact in f32, and
-- (3k) * (1.0f/3) rounds to k), and no rank holds the mean itself.
local function ab(j) return (j * 7) % 13 - 6 + 0.5 * (j % 2), j % 5 - 2 end
function P.value(r, j) local a, b = ab(j) return a + r * b + C[r + 1] end
function P.mean(j) local a, b = ab(j) return a + b end
-- a list of the case's shapes, fill(j) at flat index j; and its total
function P.list(shapes, fill)
  local list, off = {}, 0
  for i, shape in ipairs(shapes) do
    local t = sao.zeros(unpack(shape))
    local p, n = t:data(), t:numel()
    for k = 0, n - 1 do p[k] = fill(off + k) end
    off = off + n
    list[i] = t
  end
  return list, off
end
function P.bytes(list)
  local parts = {}
  for i, t in ipairs(list) do parts[i] = ffi.string(t:data(), t:numel() * 4) end
  return table.concat(parts)
end
function P.message(root) return ("root %d says hello; "):format(root):rep(100000) end  -- 2 MB
function P.run(g, rank)
  local out = {}
  local function mine(j) return P.value(rank, j) end
  for _, name in ipairs(P.order) do
    local shapes = P.cases[name]
    local l = P.list(shapes, mine)
    g:allreduce_mean(l)
    out[name .. ".allreduce"] = P.bytes(l)
    local total
    l, total = P.list(shapes, mine)
    g:reduce_scatter_mean(l)
    local lo, hi = g:shard(total)
    out[name .. ".reduce_scatter"] = P.bytes(l):sub(lo * 4 + 1, hi * 4)
    -- all-gather: this rank's shard holds its values, the rest garbage that must be overwritten
    l = P.list(shapes, function(j) if j >= lo and j < hi then return P.value(rank, j) end return 1e6 + rank end)
    g:allgather(l)
    out[name .. ".allgather"] = P.bytes(l)
  end
  out.bcast0 = g:broadcast_string(rank == 0 and P.message(0) or "not the root", 0)
  out.bcast2 = g:broadcast_string(rank == 2 and P.message(2) or "not the root", 2)
  out.bcast_empty = g:broadcast_string(rank == 1 and "" or "not the root", 1)
  -- barrier: rank 2 comes 0.4 s late, the others must wait for it
  if rank == 2 then ffi.C.poll(nil, 0, 400) end
  local t0 = now()
  g:barrier()
  out.barrier_wait = ("%.3f"):format(now() - t0)
  return out
end
return P
]==]

local dir = shell.tmpdir()
local program = dir .. "/program.lua"
shell.write(program, PROGRAM)
local P = dofile(program)

local function kill(pid) if pid then os.execute("kill " .. pid .. " 2>/dev/null") end end

--- Starts `code` in ./sao in the background (stdout/stderr to log); returns its pid.
local function spawn(code, log)
  local cmd = "./sao -e " .. shell.q(code) .. " >" .. shell.q(log or "/dev/null") .. " 2>&1 & echo $!"
  return tonumber(shell.capture(cmd))
end

-- Ports: from a hash of the pid and time in 20000-60000, skipping any in use (a rank 0 that fails
-- to listen there); each test takes a fresh one.
local next_port = 20000 + (PID * 7919 + os.time()) % 40000
local function free_port()
  for _ = 1, 50 do
    local port = next_port
    next_port = 20000 + (next_port - 20000 + 7) % 40000
    local ok, err = pcall(comm.tcp, "127.0.0.1:" .. port, 0, 2, { timeout = 0.01 })
    if not ok and not tostring(err):match("in use") then return port end
  end
  error("no free port found")
end

--- The first differing float of two byte strings, or nil when equal.
local function first_diff(a, b)
  if a == b then return nil end
  if #a ~= #b then return ("%d bytes, expected %d"):format(#b, #a) end
  local pa, pb = ffi.cast("const float *", a), ffi.cast("const float *", b)
  for i = 0, #a / 4 - 1 do
    if ffi.string(pa + i, 4) ~= ffi.string(pb + i, 4) then
      return ("float %d: %.9g, expected %.9g"):format(i, pb[i], pa[i])
    end
  end
end

local function assert_bytes(expected, got, what)
  local d = first_diff(expected, got)
  assert(d == nil, what .. ": " .. tostring(d))
end

--- Runs P on three ranks: `open(rank)` is the Lua expression (a string) that joins the group in a
--- child, `join()` joins it here as rank 0 (after the children are started). Returns the results
--- per rank (1-based: [1] is rank 0).
local function run_world3(tag, open_child, join)
  local results, pids = { {}, {}, {} }, {}
  for r = 1, 2 do
    local code = ([[local P = dofile(%q)
      local g = %s
      local ok, out = pcall(P.run, g, %d)
      if ok then
        for name, bytes in pairs(out) do local f = assert(io.open(%q .. name, "wb")); f:write(bytes); f:close() end
      else g:abort() end
      local f = io.open(%q, "w"); f:write(ok and "ok" or tostring(out)); f:close()]])
      :format(program, open_child(r), r, ("%s/%s-r%d-"):format(dir, tag, r), ("%s/%s-r%d.done"):format(dir, tag, r))
    pids[r] = spawn(code, ("%s/%s-r%d.log"):format(dir, tag, r))
  end
  local g = join(pids)
  local ok, out = pcall(P.run, g, 0)
  if not ok then g:abort() end
  -- the children: done within 60 s
  local status = {}
  for r = 1, 2 do
    local done = ("%s/%s-r%d.done"):format(dir, tag, r)
    for _ = 1, 6000 do if shell.slurp(done) ~= "" then break end shell.sleep_ms(10) end
    status[r] = shell.slurp(done)
    if status[r] == "" then kill(pids[r]) end
  end
  g:close()
  assert(ok, "rank 0: " .. tostring(out))
  for r = 1, 2 do
    assert.equal("ok", status[r], ("rank %d: %s %s"):format(r, status[r],
                                   shell.slurp(("%s/%s-r%d.log"):format(dir, tag, r))))
  end
  results[1] = out
  for r = 1, 2 do
    for name in pairs(out) do results[r + 1][name] = shell.slurp(("%s/%s-r%d-%s"):format(dir, tag, r, name)) end
  end
  return results
end

--- Every rank's results against the exact expected values, and against each other.
local function check_world3(results)
  for _, name in ipairs(P.order) do
    local shapes = P.cases[name]
    local expected, total = P.list(shapes, P.mean)
    expected = P.bytes(expected)
    for r = 0, 2 do
      local got = results[r + 1]
      assert_bytes(expected, got[name .. ".allreduce"], ("%s allreduce, rank %d"):format(name, r))
      local lo, hi = comm.shard(total, 3, r)
      assert_bytes(expected:sub(lo * 4 + 1, hi * 4), got[name .. ".reduce_scatter"],
                   ("%s reduce_scatter, rank %d"):format(name, r))
    end
    local owner = {}
    for r = 0, 2 do local lo, hi = comm.shard(total, 3, r); owner[r] = { lo, hi } end
    local gathered = P.bytes((P.list(shapes, function(j)
      for r = 0, 2 do if j >= owner[r][1] and j < owner[r][2] then return P.value(r, j) end end
    end)))
    for r = 0, 2 do
      assert_bytes(gathered, results[r + 1][name .. ".allgather"], ("%s allgather, rank %d"):format(name, r))
    end
    -- bit-identical across ranks (implied by the exact checks above; said once more, bytes to bytes)
    assert.is_true(results[1][name .. ".allreduce"] == results[2][name .. ".allreduce"]
                   and results[2][name .. ".allreduce"] == results[3][name .. ".allreduce"])
  end
  for r = 1, 3 do
    assert.is_true(results[r].bcast0 == P.message(0), "broadcast from rank 0 at rank " .. (r - 1))
    assert.is_true(results[r].bcast2 == P.message(2), "broadcast from rank 2 at rank " .. (r - 1))
    assert.equal("", results[r].bcast_empty)
  end
  -- rank 2 came to the barrier 0.4 s late: ranks 0 and 1 waited for it
  assert.is_true(tonumber(results[1].barrier_wait) > 0.3, "rank 0 waited " .. results[1].barrier_wait .. " s")
  assert.is_true(tonumber(results[2].barrier_wait) > 0.3, "rank 1 waited " .. results[2].barrier_wait .. " s")
end

describe("sao.comm collectives, world 3", function()
  teardown(function() os.execute("rm -rf " .. shell.q(dir)) end)

  it("shard ranges: chunks of ceil(total / world), the last ones shorter or empty", function()
    local function shards(total, world)
      local t = {}
      for r = 0, world - 1 do local lo, hi = comm.shard(total, world, r); t[#t + 1] = { lo, hi } end
      return t
    end
    assert.same({ { 0, 4 }, { 4, 8 }, { 8, 10 } }, shards(10, 3))
    assert.same({ { 0, 1 }, { 1, 2 }, { 2, 2 } }, shards(2, 3))
    assert.same({ { 0, 3 }, { 3, 6 }, { 6, 9 } }, shards(9, 3))
    assert.same({ { 0, 0 }, { 0, 0 }, { 0, 0 } }, shards(0, 3))
    assert.same({ { 0, 2 }, { 2, 4 }, { 4, 5 }, { 5, 5 } }, shards(5, 4))
    assert.same({ { 0, 7 } }, shards(7, 1))
  end)

  it("file transport: every rank gets the exact values, bit-identical", function()
    local path = comm.default_path(("tcp-spec-%d"):format(PID))
    local cap = 0
    for _, shapes in pairs(P.cases) do
      local n = 0
      for _, shape in ipairs(shapes) do n = n + (shape[2] and shape[1] * shape[2] or shape[1]) end
      cap = math.max(cap, n)
    end
    local g = comm.create(path, 3, cap, { timeout = 60 })
    assert.equal("file", g:transport())
    local function open(r) return ("require('sao.comm').open(%q, %d, { timeout = 60 })"):format(path, r) end
    local results = run_world3("file", open,
      function(pids)
        for r = 1, 2 do g:set_pid(r, pids[r]) end
        return g
      end)
    os.remove(path)
    check_world3(results)
  end)

  it("tcp transport: every rank gets the exact values, bit-identical", function()
    local addr = "127.0.0.1:" .. free_port()
    local function open(r) return ("require('sao.comm').tcp(%q, %d, 3, { timeout = 60 })"):format(addr, r) end
    local results = run_world3("tcp", open,
      function()
        local g = comm.tcp(addr, 0, 3, { timeout = 60 })
        assert.equal("tcp", g:transport())
        return g
      end)
    check_world3(results)
  end)
end)

describe("sao.comm over tcp", function()
  local pids = {}
  after_each(function()
    for _, pid in ipairs(pids) do kill(pid) end
    pids = {}
  end)

  it("world 1 needs no socket and its collectives change nothing", function()
    local function sockets()
      return tonumber(shell.capture("ls -l /proc/" .. PID .. "/fd 2>/dev/null | grep -c 'socket:' || true"))
    end
    local before = sockets()
    local a = comm.tcp("127.0.0.1:29999", 0, 1)
    local b = comm.tcp("127.0.0.1:29999", 0, 1)   -- the same port again: nobody listens on it
    assert.equal(before, sockets())
    assert.same({ 0, 1, -1, "tcp" }, { a:rank(), a:world(), a:capacity(), a:transport() })
    local t = sao.tensor { 1.5, -2, 7 }
    a:allreduce_mean { t }
    a:reduce_scatter_mean { t }
    a:allgather { t }
    a:barrier()
    assert.same({ 1.5, -2, 7 }, { t[1], t[2], t[3] })
    assert.equal("mine", a:broadcast_string("mine", 0))
    a:close()
    b:close()
  end)

  it("refuses bad addresses and ranks at once", function()
    local cases = {
      { "nohostport", '"nohostport" has no port' },
      { "host:notaport", 'the port "notaport" is not a number in 1%.%.65535' },
      { "127.0.0.1:70000", 'the port "70000" is not a number' },
      { "127.0.0.1:0", 'the port "0" is not a number' },
      { "127.0.0.1:", 'the port "" is not a number' },
      { ":29500", "has no host" },
      { "::1:29500", "an IPv6 address goes in brackets" },
      { "[::1]29500", "is not %[v6 address%]:port" },
      { "", "empty address" },
    }
    for _, c in ipairs(cases) do
      local t0 = now()
      assert.error_matches(function() comm.tcp(c[1], 0, 2, { timeout = 30 }) end, "comm%.tcp: .*" .. c[2])
      assert.error_matches(function() comm.tcp(c[1], 1, 2, { timeout = 30 }) end, c[2])
      assert.is_true(now() - t0 < 1, c[1])
    end
    assert.error_matches(function() comm.tcp("127.0.0.1:29500", 2, 2) end, "rank 2 outside 0%.%.1")
    assert.error_matches(function() comm.tcp("127.0.0.1:29500", 0, 0) end, "world 0")
  end)

  it("a group whose other ranks never come fails after the timeout, naming the wait", function()
    local port = free_port()
    local addr = "127.0.0.1:" .. port
    -- meanwhile another process tries to be rank 0 on the same port: it is in use
    local errfile = os.tmpname()
    pids[#pids + 1] = spawn(([[local ffi = require "ffi"; ffi.cdef "int poll(void *, unsigned long, int);"
      ffi.C.poll(nil, 0, 300)
      local ok, err = pcall(require("sao.comm").tcp, %q, 0, 2, { timeout = 1 })
      local f = io.open(%q, "w"); f:write(ok and "joined" or tostring(err)); f:close()]]):format(addr, errfile))
    local t0 = now()
    assert.error_matches(function() comm.tcp(addr, 0, 3, { timeout = 1.5 }) end,
      "rank 0 waited 1%.5 s for ranks to join: 1 of 3 arrived, missing rank 1, 2")
    local dt = now() - t0
    assert.is_true(dt > 1.4 and dt < 3, "waited " .. dt .. " s")
    for _ = 1, 300 do if shell.slurp(errfile) ~= "" then break end shell.sleep_ms(10) end
    assert.matches("rank 0 cannot listen on port " .. port .. ": Address already in use", shell.slurp(errfile))
    os.remove(errfile)
    -- a rank whose rank 0 never listens: the connection refused, after the timeout
    t0 = now()
    assert.error_matches(function() comm.tcp(addr, 1, 2, { timeout = 1 }) end,
      "rank 1 could not connect to rank 0 at 127%.0%.0%.1:" .. port .. " before the timeout: Connection refused")
    dt = now() - t0
    assert.is_true(dt > 0.9 and dt < 3, "waited " .. dt .. " s")
  end)

  -- world 2, rank 1 a child running `after` once it has joined; returns rank 0's group
  local function pair(after, timeout, log)
    local addr = "127.0.0.1:" .. free_port()
    pids[#pids + 1] = spawn(([[local sao = require "sao"; local ffi = require "ffi"
      ffi.cdef "int poll(void *, unsigned long, int);"
      local g = require("sao.comm").tcp(%q, 1, 2, { timeout = 10 })
      %s]]):format(addr, after), log)
    return comm.tcp(addr, 0, 2, { timeout = timeout or 10 }), addr
  end

  it("a rank that exits right after joining: the next collective fails at once, naming it", function()
    local g = pair("os.exit(0)")
    local t0 = now()
    assert.error_matches(function() g:allreduce_mean { sao.zeros(1000) } end,
      "comm%.allreduce: rank 0: rank 1 closed the connection %(did its process exit%?%)")
    assert.is_true(now() - t0 < 5)
    assert.error_matches(function() g:barrier() end, "the group is broken")
  end)

  it("a rank that aborts: its neighbours fail at once though its process lives on", function()
    local g = pair("g:abort(); ffi.C.poll(nil, 0, 5000)")
    local t0 = now()
    assert.error_matches(function() g:broadcast_string("x", 0) end, "rank 1 closed the connection")
    assert.is_true(now() - t0 < 3)
  end)

  it("a rank that does not come to a collective: fails after the timeout, naming it", function()
    local g = pair("ffi.C.poll(nil, 0, 5000)", 1.5)
    local t0 = now()
    assert.error_matches(function() g:allgather { sao.zeros(10) } end,
      "comm%.allgather: rank 0 waited 1%.5 s for rank 1 %(did a process die%?%)")
    local dt = now() - t0
    assert.is_true(dt > 1.4 and dt < 4, "waited " .. dt .. " s")
  end)

  it("Ctrl-C stops a waiting rank, and its neighbours learn at once", function()
    local log = os.tmpname()
    local g = pair([[local ok, err = pcall(function() g:barrier() end)
      io.write(tostring(err)); io.flush()
      ffi.C.poll(nil, 0, 5000)]], 10, log)
    shell.sleep_ms(300)
    os.execute("kill -INT " .. pids[#pids])
    for _ = 1, 300 do if shell.slurp(log) ~= "" then break end shell.sleep_ms(10) end
    assert.matches("interrupted", shell.slurp(log))
    -- rank 1 had arrived at the barrier (its part is in rank 0's socket) before it was stopped, so
    -- rank 0's barrier may pass; the next collective finds rank 1's socket closed, its process alive
    local t0 = now()
    pcall(g.barrier, g)
    assert.error_matches(function() g:allreduce_mean { sao.zeros(4) } end,
      "comm%.allreduce: rank 0: rank 1 closed the connection")
    assert.is_true(now() - t0 < 3)
    os.remove(log)
  end)

  it("ranks that call different collectives fail, naming both", function()
    local log = os.tmpname()
    local g = pair([[local ok, err = pcall(function() g:broadcast_string("hi", 1) end)
      io.write(tostring(err))]], 10, log)
    assert.error_matches(function() g:allreduce_mean { sao.zeros(3) } end,
      "rank 0: rank 1 calls broadcast of 8 bytes from rank 1, this rank allreduce of 3 floats")
    for _ = 1, 300 do if shell.slurp(log) ~= "" then break end shell.sleep_ms(10) end
    assert.matches("rank 1: rank 0 calls allreduce of 3 floats, this rank broadcast of 8 bytes", shell.slurp(log))
    os.remove(log)
  end)

  it("rank 0 refuses a join with another world, or a rank twice", function()
    local function join(addr, rank, world)
      pids[#pids + 1] = spawn(("pcall(require('sao.comm').tcp, %q, %d, %d, { timeout = 3 })"):format(addr, rank, world))
    end
    local addr = "127.0.0.1:" .. free_port()
    join(addr, 1, 3)
    assert.error_matches(function() comm.tcp(addr, 0, 2, { timeout = 5 }) end, "rank 1 says world 3, rank 0 has 2")
    addr = "127.0.0.1:" .. free_port()
    join(addr, 1, 3)
    join(addr, 1, 3)
    assert.error_matches(function() comm.tcp(addr, 0, 3, { timeout = 5 }) end, "two ranks say they are rank 1")
  end)

  it("IPv6: [::1]:port", function()
    if not shell.slurp("/proc/net/if_inet6"):match("00000000000000000000000000000001") then
      pending("no IPv6 loopback here")
      return
    end
    local addr = "[::1]:" .. free_port()
    local out = os.tmpname()
    pids[#pids + 1] = spawn(([[local sao = require "sao"
      local g = require("sao.comm").tcp(%q, 1, 2, { timeout = 10 })
      local t = sao.tensor { 4, 8 }; g:allreduce_mean { t }
      local f = io.open(%q, "w"); f:write(t[1] .. " " .. t[2]); f:close()]]):format(addr, out))
    local g = comm.tcp(addr, 0, 2, { timeout = 10 })
    local t = sao.tensor { 2, -2 }
    g:allreduce_mean { t }
    assert.same({ 3, 3 }, { t[1], t[2] })
    for _ = 1, 300 do if shell.slurp(out) ~= "" then break end shell.sleep_ms(10) end
    assert.equal("3 3", shell.slurp(out))
    os.remove(out)
  end)
end)
