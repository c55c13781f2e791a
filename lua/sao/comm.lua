-- sao.comm — collectives between the processes of a data-parallel training run on one machine
-- (runtime/comm.c: a shared file with a barrier and one slot per rank; sao_comm.h).
--
--   local comm = require "sao.comm"
--   local g = comm.create("/dev/shm/sao-run", 2, n_floats)   -- rank 0, before starting the others
--   local g = comm.open("/dev/shm/sao-run", 1)                -- rank 1
--   g:allreduce_mean({ grad1, grad2, ... })   -- f32 host tensors: replaced by the mean over ranks
--   g:barrier()
-- Every rank gets bit-identical results (the slots are summed in rank order on each of them).
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
function Comm:barrier() sao.check(C.sao_comm_barrier(ctx, self.h), 2) end
function Comm:abort() C.sao_comm_abort(self.h) end
--- Records the process id of a rank (rank 0, for the processes it starts).
function Comm:set_pid(rank, pid) sao.check(C.sao_comm_set_pid(ctx, self.h, rank, pid), 2) end

--- Replaces each tensor of the list by its mean over the ranks (one exchange for the whole list).
function Comm:allreduce_mean(list)
  local n = #list
  local arr = ffi.new("sao_tensor *[?]", math.max(n, 1))
  for i, t in ipairs(list) do arr[i - 1] = sao.tensor_arg(t, "tensor " .. i) end
  sao.check(C.sao_comm_allreduce_mean(ctx, self.h, arr, n), 2)
end

function Comm:close()
  if self.h then
    C.sao_comm_close(ffi.gc(self.h, nil))
    self.h = nil
  end
end

return M
