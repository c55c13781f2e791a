-- sao.nccl — collectives between the processes of a data-parallel run over DEVICE tensors, through
-- NCCL (sao_nccl.h, kernels/cuda/nccl.cu): the GPU twin of sao.comm, with the same semantics.
--
--   local comm, nccl = require "sao.comm", require "sao.nccl"
--   local g = comm.open(path, rank)               -- a host group (file or tcp): carries NCCL's id
--   local n = nccl.init(g, "cuda:" .. rank)       -- "cuda", "cuda:N" or N; every rank calls it
--   n:allreduce_mean { grad1, grad2, ... }        -- f32 device tensors: the mean over the ranks
--   n:reduce_scatter_mean(list)                   -- only this rank's shard of the flat list (n:shard)
--   n:allgather(list)                             -- every rank's shard to every rank
--   n:broadcast(list, root)                       -- root's values on every rank
--   n:close()                                     -- or n:abort() after a failure; the GC closes too
-- The list is one flat vector (the tensors in order); shards are sao.comm's. Results are
-- bit-identical on every rank. The work is queued on sao's stream like a kernel (a copy to the host
-- waits for it). NCCL is loaded on first use ($SAO_NCCL_LIB, else libnccl.so.2).
local ffi = require "ffi"
local sao = require "sao"

local C, ctx = sao.C, sao.ctx

local M = {}
local Nccl = {}
Nccl.__index = Nccl

-- "cuda" / "cuda:N" / N -> the device number, or nil and why not
local function device_index(device)
  if type(device) == "number" and device >= 0 and device == math.floor(device) then return device end
  local d = type(device) == "string" and device:match("^cuda:?(%d*)$")
  if not d then return nil, 'nccl: device must be "cuda", "cuda:N" or a number, got ' .. tostring(device) end
  return tonumber(d) or 0
end

--- available([device]) -> true, NCCL's version code (22809 for 2.28.9) when this process could join
--- a communicator on `device` (default "cuda": device 0, made current): the CUDA backend loads, the
--- device is visible and NCCL (2.10 or newer) loads; else false and why not. Never raises.
function M.available(device)
  local dev, bad = device_index(device == nil and "cuda" or device)
  if not dev then return false, bad end
  local v = ffi.new("int[1]")
  if C.sao_nccl_ready(ctx, dev, v) ~= 0 then
    local why = ffi.string(C.sao_ctx_error(ctx))
    C.sao_ctx_clear_error(ctx)
    return false, why
  end
  return true, v[0]
end

--- init(group, device) -> a communicator of group:world() ranks, this one group:rank(), on `device`
--- ("cuda", "cuda:N" or N; default "cuda"). Every rank of the group calls it. First every rank
--- checks that it can take part (the device, NCCL) and the group shares the verdicts, so that a
--- rank that cannot makes every rank fail at once instead of leaving the others waiting in NCCL;
--- then rank 0 makes NCCL's unique id and broadcasts it over the group.
function M.init(group, device)
  if type(group) ~= "table" or not group.broadcast_string then
    error("nccl.init: the first argument must be a sao.comm group (it carries NCCL's id)", 2)
  end
  local dev, bad = device_index(device == nil and "cuda" or device)
  if not dev then error(bad, 2) end
  local rank, world = group:rank(), group:world()
  local ok, why = C.sao_nccl_ready(ctx, dev, nil) == 0, nil
  if not ok then
    why = ffi.string(C.sao_ctx_error(ctx))
    C.sao_ctx_clear_error(ctx)
  end
  -- every rank's verdict to every rank: rank r's element is its shard of the vector
  local cant = {}
  for r = 1, world do cant[r] = 0 end
  cant[rank + 1] = ok and 0 or 1
  local verdicts = sao.tensor(cant)
  group:allgather { verdicts }
  if not ok then error(why, 2) end
  local failed = {}
  for r = 1, world do if verdicts[r] ~= 0 then failed[#failed + 1] = r - 1 end end
  if #failed > 0 then
    error(("nccl.init: rank %d: rank(s) %s cannot take part (their own errors say why)")
          :format(rank, table.concat(failed, ", ")), 2)
  end
  -- NCCL's id from rank 0 ("" when it could not make one)
  local id = ffi.new("unsigned char[128]")
  local msg
  if rank == 0 and C.sao_nccl_unique_id(ctx, id) ~= 0 then
    msg = ffi.string(C.sao_ctx_error(ctx))
    C.sao_ctx_clear_error(ctx)
  end
  local s = group:broadcast_string(rank == 0 and not msg and ffi.string(id, 128) or "", 0)
  if msg then error(msg, 2) end
  if #s ~= 128 then error(("nccl.init: rank %d: rank 0 could not make NCCL's unique id (its error says why)"):format(rank), 2) end
  ffi.copy(id, s, 128)
  local h = sao.checkp(C.sao_nccl_init(ctx, id, world, rank, dev), 2)
  return setmetatable({ h = ffi.gc(h, C.sao_nccl_close), rank_ = rank, world_ = world, device_ = dev }, Nccl)
end

function Nccl:rank() return self.rank_ end
function Nccl:world() return self.world_ end
--- The CUDA device number the communicator runs on.
function Nccl:device() return self.device_ end

--- shard(total [, rank]) -> lo, hi: the 0-based half-open range of a flat vector of `total` floats
--- that rank (default this one) owns in reduce_scatter_mean and allgather (sao.comm's).
function Nccl:shard(total, rank)
  return require("sao.comm").shard(total, self.world_, rank or self.rank_)
end

local function handle(self)
  if self.h == nil then error("nccl: the communicator is closed", 3) end
  return self.h
end

local tensor_list = require("sao.comm").tensor_list

--- Replaces each tensor of the list by its mean over the ranks (one NCCL all-reduce for the list).
function Nccl:allreduce_mean(list)
  local h = handle(self)
  local arr, n = tensor_list(list)
  sao.check(C.sao_nccl_allreduce_mean(ctx, h, arr, n), 2)
end

--- The list seen as one flat vector: this rank's shard of it becomes the mean over the ranks (the
--- rest of the vector is left with unspecified values).
function Nccl:reduce_scatter_mean(list)
  local h = handle(self)
  local arr, n = tensor_list(list)
  sao.check(C.sao_nccl_reduce_scatter_mean(ctx, h, arr, n), 2)
end

--- The list seen as one flat vector: every rank's shard is copied to every rank.
function Nccl:allgather(list)
  local h = handle(self)
  local arr, n = tensor_list(list)
  sao.check(C.sao_nccl_allgather(ctx, h, arr, n), 2)
end

--- Root's values (default rank 0) replace every rank's.
function Nccl:broadcast(list, root)
  local h = handle(self)
  local arr, n = tensor_list(list)
  sao.check(C.sao_nccl_broadcast(ctx, h, arr, n, root or 0), 2)
end

--- Frees the communicator (every rank closes its own). Closing twice is a no-op.
function Nccl:close()
  if self.h ~= nil then
    C.sao_nccl_close(ffi.gc(self.h, nil))
    self.h = nil
  end
end

--- Frees it after a failure without waiting for the other ranks (NCCL's abort).
function Nccl:abort()
  if self.h ~= nil then
    C.sao_nccl_abort(ffi.gc(self.h, nil))
    self.h = nil
  end
end

return M
