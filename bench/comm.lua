-- bench/comm.lua — the data-parallel group's collectives between two processes on this machine,
-- over the shared file and over TCP (127.0.0.1), against a memcpy of the same bytes timed in the
-- same run. One JSON line per transport, collective and size:
--   {"bench":"comm","transport":"file"|"tcp","op":"allreduce"|"reduce_scatter+allgather",
--    "floats":N,"seconds":…,"GB_per_s":bytes/seconds,"memcpy_s":…,"ratio":memcpy_s/seconds}
-- (ratio: the collective's speed as a fraction of one memcpy of the vector; a collective moves
-- and sums the vector at least twice, so ratios near 0.5 are the most one can hope for.)
-- Run: ./sao bench/comm.lua [FLOATS]   (default 4M; 16M adds a second size)
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"
local comm = require "sao.comm"
local now = require("sao.progress").now
pcall(ffi.cdef, "int getpid(void); int kill(int pid, int sig);")

-- rank 1 is this file run again: ./sao bench/comm.lua --rank1 file|tcp WHERE SIZE...
local args = arg or {}
local is_rank1 = args[1] == "--rank1"
local sizes = {}
if is_rank1 then
  for i = 4, #args do sizes[#sizes + 1] = tonumber(args[i]) end
else
  sizes[1] = tonumber(args[1]) or 4 * 2 ^ 20
  if not args[1] then sizes[2] = 16 * 2 ^ 20 end
end
local REPS = 5
local exe = (os.getenv("SAO_BIN") or "./sao")

-- the same loop on both ranks: per size, REPS of each collective after one warm-up
local function loop(g)
  local times = {}
  for _, n in ipairs(sizes) do
    local x = sao.randn { n, seed = g:rank() + 1 }
    for _, op in ipairs { "allreduce", "reduce_scatter+allgather" } do
      local function once()
        if op == "allreduce" then g:allreduce_mean { x } else g:reduce_scatter_mean { x }; g:allgather { x } end
      end
      once()
      g:barrier()
      local t0 = now()
      for _ = 1, REPS do once() end
      times[#times + 1] = { op = op, floats = n, seconds = (now() - t0) / REPS }
    end
    x:free()
  end
  return times
end

local function memcpy_s(n)
  local a, b = sao.randn { n, seed = 9 }, sao.zeros(n)
  b:copy_(a)
  local t0 = now()
  for _ = 1, REPS do b:copy_(a) end
  local t = (now() - t0) / REPS
  a:free(); b:free()
  return t
end

if is_rank1 then
  local g = args[2] == "file" and comm.open(args[3], 1) or comm.tcp(args[3], 1, 2, { timeout = 60 })
  loop(g)
  g:close()
  return
end

-- starts rank 1 of a `kind` group at `where`; its pid
local function rank1(kind, where)
  local cmd = ("%s bench/comm.lua --rank1 %s '%s' %s >/dev/null 2>&1 & echo $!"):format(exe, kind, where,
    table.concat(sizes, " "))
  local p = io.popen(cmd)
  local pid = tonumber(p:read("*l"))
  p:close()
  return pid
end

local base = {}
for _, n in ipairs(sizes) do base[n] = memcpy_s(n) end
local largest = sizes[#sizes]
local tag = tostring(ffi.C.getpid())

local transports = {
  { name = "file", make = function()
      local path = comm.default_path("bench-" .. tag)
      local g = comm.create(path, 2, largest)
      local pid = rank1("file", path)
      g:set_pid(1, pid)
      return g, function() os.remove(path) end
    end },
  { name = "tcp", make = function()
      local addr = "127.0.0.1:" .. (20000 + (ffi.C.getpid() * 13 + os.time()) % 30000)
      rank1("tcp", addr)
      return comm.tcp(addr, 0, 2, { timeout = 60 }), function() end
    end },
}
for _, tr in ipairs(transports) do
  local g, cleanup = tr.make()
  for _, r in ipairs(loop(g)) do
    local bytes = r.floats * 4
    print(cjson.encode { bench = "comm", transport = tr.name, op = r.op, floats = r.floats, seconds = r.seconds,
      GB_per_s = bytes / r.seconds / 1e9, memcpy_s = base[r.floats], ratio = base[r.floats] / r.seconds })
  end
  g:close()
  cleanup()
end
