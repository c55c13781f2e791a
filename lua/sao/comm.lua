-- sao.comm — collectives between the processes of a data-parallel training run (sao_comm.h):
-- over a shared file on one machine (runtime/comm.c) or over TCP between machines (comm_tcp.c).
--
--   local comm = require "sao.comm"
--   local g = comm.create("/dev/shm/sao-run", 2, n_floats)   -- rank 0, before starting the others
--   local g = comm.open("/dev/shm/sao-run", 1)                -- rank 1
--   local g = comm.tcp("10.0.0.1:29500", rank, world)         -- or: any machine, rank 0 listening
--   g:allreduce_mean({ grad1, grad2, ... })   -- f32 host tensors: replaced by the mean over ranks
--   g:reduce_scatter_mean(list)               -- only this rank's shard of the flat list (g:shard)
--   g:allgather(list)                         -- every rank's shard to every rank
--   g:broadcast_string(s, root)               -- root's string on every rank
--   g:barrier()
-- Every rank gets bit-identical results (each element is summed once, in an order fixed by the
-- transport, and every rank receives that sum).
local ffi = require "ffi"
local sao = require "sao"

local C, ctx = sao.C, sao.ctx

local M = {}
local Comm = {}
Comm.__index = Comm

local function wrap(h, path)
  return setmetatable({ h = ffi.gc(h, C.sao_comm_close), path = path }, Comm)
end

--- create(path, world, capacity (floats per rank), {timeout = 600 s}) -> the group, as rank 0.
function M.create(path, world, capacity, opts)
  return wrap(sao.checkp(C.sao_comm_create(ctx, path, world, capacity, opts and opts.timeout or 600), 2), path)
end

--- open(path, rank, {timeout = 600 s}) -> the group, as rank (1..world-1).
function M.open(path, rank, opts)
  return wrap(sao.checkp(C.sao_comm_open(ctx, path, rank, opts and opts.timeout or 600), 2), path)
end

--- tcp("host:port", rank, world, {timeout = 600 s, watch = {pid, ...}}) -> the group over TCP: rank
--- 0 listens on the port, the others connect to host:port (retrying until the timeout). watch: this
--- machine's other ranks, started by this process; if one exits before the group has formed, this
--- one fails at once instead of waiting out the timeout.
function M.tcp(addr, rank, world, opts)
  opts = opts or {}
  local watch = opts.watch or {}
  local pids = ffi.new("int64_t[?]", math.max(#watch, 1))
  for i, p in ipairs(watch) do pids[i - 1] = p end
  return wrap(sao.checkp(C.sao_comm_tcp_watching(ctx, addr, rank, world, opts.timeout or 600, pids, #watch), 2), addr)
end

--- The default place of a group file: /dev/shm when there is one (memory, no disk writes).
function M.default_path(tag)
  local f = io.open("/dev/shm", "rb")
  local dir = "/tmp"
  if f then f:close(); dir = "/dev/shm" end
  return ("%s/sao-comm-%s"):format(dir, tag)
end

function Comm:rank() return C.sao_comm_rank(self.h) end
function Comm:world() return C.sao_comm_world(self.h) end
function Comm:capacity() return tonumber(C.sao_comm_capacity(self.h)) end
function Comm:transport() return ffi.string(C.sao_comm_transport(self.h)) end
function Comm:barrier() sao.check(C.sao_comm_barrier(ctx, self.h), 2) end
function Comm:abort() C.sao_comm_abort(self.h) end
--- Records the process id of a rank (rank 0, for the processes it starts).
function Comm:set_pid(rank, pid) sao.check(C.sao_comm_set_pid(ctx, self.h, rank, pid), 2) end

--- A Lua list of tensors as the C array the collectives take, and its length.
local function tensor_list(list)
  if type(list) ~= "table" then error("comm: expected a list of tensors, got " .. type(list), 3) end
  local n = #list
  local arr = ffi.new("sao_tensor *[?]", math.max(n, 1))
  for i, t in ipairs(list) do arr[i - 1] = sao.tensor_arg(t, "tensor " .. i) end
  return arr, n
end

M.tensor_list = tensor_list

--- Replaces each tensor of the list by its mean over the ranks (one exchange for the whole list).
function Comm:allreduce_mean(list)
  local arr, n = tensor_list(list)
  sao.check(C.sao_comm_allreduce_mean(ctx, self.h, arr, n), 2)
end

--- The list seen as one flat vector: this rank's shard of it becomes the mean over the ranks (the
--- rest of the vector is left with unspecified values).
function Comm:reduce_scatter_mean(list)
  local arr, n = tensor_list(list)
  sao.check(C.sao_comm_reduce_scatter_mean(ctx, self.h, arr, n), 2)
end

--- The list seen as one flat vector: every rank's shard is copied to every rank.
function Comm:allgather(list)
  local arr, n = tensor_list(list)
  sao.check(C.sao_comm_allgather(ctx, self.h, arr, n), 2)
end

--- shard(total [, rank]) -> lo, hi: the 0-based half-open range of a flat vector of `total` floats
--- that rank (default this one) owns in reduce_scatter_mean and allgather.
function Comm:shard(total, rank)
  return M.shard(total, self:world(), rank or self:rank())
end

function M.shard(total, world, rank)
  local lo, hi = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
  C.sao_comm_shard(total, world, rank, lo, hi)
  return tonumber(lo[0]), tonumber(hi[0])
end

--- Root's string on every rank (the others' argument is ignored). Returns it.
function Comm:broadcast_string(s, root)
  root = root or 0
  local len = ffi.new("int64_t[1]", self:rank() == root and #s or 0)
  sao.check(C.sao_comm_broadcast(ctx, self.h, len, 8, root), 2)
  local n = tonumber(len[0])
  local buf = ffi.new("char[?]", math.max(n, 1))
  if self:rank() == root then ffi.copy(buf, s, n) end
  sao.check(C.sao_comm_broadcast(ctx, self.h, buf, n, root), 2)
  return ffi.string(buf, n)
end

function Comm:close()
  if self.h then
    C.sao_comm_close(ffi.gc(self.h, nil))
    self.h = nil
  end
end

return M
