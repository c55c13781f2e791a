-- sao.pipeline.ddp — the processes of a data-parallel train stage (docs/training.md, "Data parallel").
--
-- `--nproc N`: the stage's process is its machine's first rank (the leader); it starts N - 1 copies
-- of the stage (`sao -e ...worker`, sao.pipeline.train.worker), each a rank with its part of every
-- global batch. One machine: the ranks share a sao.comm group file, which the leader makes once the
-- trainer knows the gradient's size (attach). Several machines (`--nnodes`, `--node-rank`,
-- `--master`): every rank joins one TCP group before its trainer is made (join), a leader after
-- starting its machine's others, and rank 0 says which checkpoint they all start from. GPU ranks
-- add an NCCL communicator when rank 0 finds one usable. Rank 0 alone writes logs, checkpoints,
-- demos and the export; every rank holds the same weights.
--
--   local dp = ddp.layout(opts)                  -- rank, world, ...
--   local run = ddp.new(opts, dp, {run_dir =, checkpoint =, device =})
--   run:join()                                   -- before the trainer (workers; TCP)
--   ... trainer with comm = run.group, nccl = run.nccl ...
--   run:attach(trainer)                          -- one machine's leader: the group file, the others
--   ... steps ...; on an error run:fail(); at the end run:finish()
local ffi = require "ffi"
local sao = require "sao"
local common = require "sao.pipeline.common"
local comm = require "sao.comm"

pcall(ffi.cdef, "int kill(int pid, int sig); int getpid(void);")

local M = {}

local function alive(pid) return pid and ffi.C.kill(pid, 0) == 0 end

--- The data-parallel layout of this process from the options: {rank, world, nproc (this machine's
--- processes), local_rank, nnodes, node_rank, master ("host:port" or nil), leader (this process
--- starts its machine's others)}.
--- When MASTER_ADDR is set (a launch script's word that this is a multi-machine run), the
--- launcher's environment fills in what the options leave out: NNODES and NODE_RANK (torchrun's
--- names), else SLURM's SLURM_NNODES and SLURM_NODEID (one task per machine), and MASTER_ADDR with
--- MASTER_PORT (default 29500) for --master.
function M.layout(opts)
  local env = os.getenv
  local launched = env("MASTER_ADDR") ~= nil and env("MASTER_ADDR") ~= ""
  local function from_env(a, b) return launched and tonumber(env(a) or env(b) or "") or nil end
  local nproc = common.num(opts.nproc, 1)
  local nnodes = common.num(opts.nnodes, from_env("NNODES", "SLURM_NNODES") or 1)
  local node = common.num(opts.node_rank, from_env("NODE_RANK", "SLURM_NODEID") or 0)
  if opts.master == nil and nnodes > 1 and launched then
    opts.master = env("MASTER_ADDR") .. ":" .. (env("MASTER_PORT") or "29500")
  end
  if nproc < 1 or nproc ~= math.floor(nproc) then error("train: --nproc " .. tostring(opts.nproc) .. ": expected a count >= 1", 0) end
  if nnodes < 1 or nnodes ~= math.floor(nnodes) then error("train: --nnodes " .. tostring(opts.nnodes) .. ": expected a count >= 1", 0) end
  if node < 0 or node >= nnodes or node ~= math.floor(node) then
    error(("train: --node-rank %s: expected 0..%d (--nnodes %d)"):format(tostring(opts.node_rank), nnodes - 1, nnodes), 0)
  end
  local master = opts.master ~= true and opts.master or nil
  if nnodes > 1 and not master then
    error("train: --nnodes " .. nnodes .. " needs --master HOST:PORT (where the machine of --node-rank 0 listens)", 0)
  end
  if master and not tostring(master):match("^.+:%d+$") then
    error("train: --master " .. tostring(master) .. ": expected HOST:PORT", 0)
  end
  local d = { nproc = nproc, nnodes = nnodes, node_rank = node, master = master, world = nproc * nnodes }
  if opts._rank then
    d.rank, d.world, d.local_rank, d.leader = opts._rank, opts._world or d.world, opts._local_rank or opts._rank, false
  else
    d.rank, d.local_rank, d.leader = node * nproc, 0, true
  end
  return d
end

--- The GPU of a data-parallel rank of a `--device cuda` run: its place on its machine, modulo the
--- GPUs there (ranks share a GPU when there are fewer: then they exchange through host copies).
--- Other devices (and one-rank runs) as asked.
function M.device(opts, dp)
  local dev = opts.device ~= true and opts.device or nil
  if not dev or dp.world < 2 or not tostring(dev):match("^cuda") then return dev end
  local base = tonumber(tostring(dev):match("^cuda:(%d+)$")) or 0
  local n = sao.C.sao_cuda_device_count()
  if n < 1 then return dev end   -- the model load says why there is no GPU
  return "cuda:" .. ((base + dp.local_rank) % n)
end

local Run = {}
Run.__index = Run

--- The data-parallel side of one train stage process. where: {run_dir, checkpoint ({dir, step} or
--- nil: where this rank starts), device (M.device's)}.
function M.new(opts, dp, where)
  return setmetatable({ opts = opts, dp = dp, run_dir = where.run_dir, ck = where.checkpoint, dev = where.device,
    timeout = common.num(opts.comm_timeout, 600) }, Run)
end

-- Starts this machine's other ranks, each told to join `addr` (the group file, or "tcp:HOST:PORT")
-- and to start from the same checkpoint; their stderr goes to dir/rankN.log.
function Run:start_workers(addr)
  local dp, opts = self.dp, self.opts
  self.dir = self.run_dir .. "/.ddp-" .. (dp.nnodes > 1 and (dp.node_rank .. "-") or "") .. tostring(ffi.C.getpid())
  common.mkdir_p(self.dir)
  local o = {}
  for k, v in pairs(opts) do if type(v) ~= "table" and type(v) ~= "function" then o[k] = v end end
  o._checkpoint, o._checkpoint_step = self.ck and self.ck.dir or nil, self.ck and self.ck.step or nil
  common.write_atomic(self.dir .. "/opts.json", require("cjson").encode(o))
  local exe = common.sao_binary()
  self.workers = {}
  for l = 1, dp.nproc - 1 do
    local r = dp.rank + l
    local code = ("require('sao.pipeline.train').worker(%q, %d, %q, %d, %d)"):format(self.dir .. "/opts.json", r,
      addr, dp.world, l)
    local cmd = ("%s -e %s > %s 2>&1 & echo $!"):format(common.shell_quote(exe), common.shell_quote(code),
      common.shell_quote(("%s/rank%d.log"):format(self.dir, r)))
    local p = io.popen(cmd)
    self.workers[r] = tonumber(p:read("*l"))
    p:close()
  end
end

-- NCCL for a GPU run's device tensors: rank 0 decides (--comm-backend auto|nccl|host) and tells
-- the others; then every rank makes its communicator.
function Run:join_nccl()
  if not (self.dev and self.group) then return end
  local choice = "host"
  if self.dp.rank == 0 then
    local want = self.opts.comm_backend ~= true and self.opts.comm_backend or "auto"
    if want ~= "auto" and want ~= "nccl" and want ~= "host" then
      error("train: --comm-backend " .. tostring(want) .. ": expected auto, nccl or host", 0)
    end
    local ok, why = true, nil
    if want ~= "host" then ok, why = require("sao.nccl").available() end
    if want == "nccl" and not ok then error("train: --comm-backend nccl: " .. tostring(why), 0) end
    if want == "nccl" or (want == "auto" and ok and self.dp.nproc <= sao.C.sao_cuda_device_count()) then
      choice = "nccl"
    end
  end
  choice = self.group:broadcast_string(choice, 0)
  if choice == "nccl" then self.nccl = require("sao.nccl").init(self.group, self.dev) end
end

-- What this machine's other ranks said (their logs), on stderr.
function Run:their_words()
  for r in pairs(self.workers or {}) do
    local text = common.read(("%s/rank%d.log"):format(self.dir, r)) or ""
    if text:match("%S") then io.stderr:write(("train: rank %d said:\n%s\n"):format(r, text)) end
  end
end

local function cleanup(self)
  if self.group and self.group:transport() == "file" then os.remove(self.group.path) end
  if self.dir then require("sao.fs").rm_rf(self.dir) end
end

--- After a failure: breaks the group (the other ranks stop at their next exchange instead of
--- waiting), ends this machine's other ranks, prints what they said, removes the work folder.
function Run:fail()
  if self.group then self.group:abort() end
  if self.workers then
    for _, pid in pairs(self.workers) do if alive(pid) then ffi.C.kill(pid, 9) end end
    self:their_words()
  end
  cleanup(self)
end

-- Runs f; on an error, fail() and raise it again.
function Run:guard(f)
  local ok, err = pcall(f)
  if not ok then
    self:fail()
    error(err, 0)
  end
end

--- Before the trainer: a worker joins its group (file or TCP); in a multi-machine run a leader
--- starts its machine's others and joins the TCP group (failing at once when one of them exits
--- before the group formed), and every rank checks that rank 0 starts from its checkpoint. Then
--- NCCL when usable. Sets self.group and self.nccl (nil in a one-rank run).
function Run:join()
  local dp, opts = self.dp, self.opts
  if opts._comm then
    if opts._comm:match("^tcp:") then
      self.group = comm.tcp(opts._comm:sub(5), dp.rank, dp.world, { timeout = self.timeout })
    else
      self.group = comm.open(opts._comm, dp.rank)
    end
  elseif dp.world > 1 and dp.nnodes > 1 then
    if dp.nproc > 1 then self:start_workers("tcp:" .. dp.master) end
    local watch = {}
    for _, pid in pairs(self.workers or {}) do watch[#watch + 1] = pid end
    self:guard(function()
      self.group = comm.tcp(dp.master, dp.rank, dp.world, { timeout = self.timeout, watch = watch })
    end)
  end
  if not self.group then return end
  self:guard(function()
    if dp.nnodes > 1 then
      -- every machine reads the run folder: they must resume from the same checkpoint
      local mine = self.ck and tostring(self.ck.step) or "none"
      local first = self.group:broadcast_string(mine, 0)
      if first ~= mine then
        error(("train: rank %d: rank 0 starts from checkpoint %s but this machine's %s has %s: a run over several " ..
          "machines needs its run folder on a shared file system (or the same checkpoints on each)"):format(dp.rank,
          first, self.run_dir, mine), 0)
      end
    end
    self:join_nccl()
  end)
end

--- After the trainer: one machine's leader of several ranks makes the group file (room for a
--- gradient's floats, or loss, lr, |g|² and the stop flag, per rank), starts the other ranks
--- (which resume from the same checkpoint, or start fresh, and join at the first step's exchange),
--- then NCCL, and attaches the trainer to them.
function Run:attach(trainer)
  local dp = self.dp
  if not (dp.leader and dp.world > 1 and dp.nnodes == 1) then return end
  self.group = comm.create(comm.default_path(tostring(ffi.C.getpid())), dp.world, trainer:grad_floats() + 4,
                           { timeout = self.timeout })
  self:start_workers(self.group.path)
  for r, pid in pairs(self.workers) do self.group:set_pid(r, pid) end
  self:guard(function() self:join_nccl() end)
  trainer:attach(self.group, self.nccl)
end

--- One line for the log: how many processes, machines, threads, the GPU and the exchange.
function Run:describe(batch, trainer)
  local dp, dev = self.dp, self.dev
  return string.format("train: data parallel over %d processes%s (%d thread(s) each%s), global batch %d%s", dp.world,
    dp.nnodes > 1 and (" on " .. dp.nnodes .. " machines") or "", sao.threads(),
    dev and (", " .. dev .. (self.nccl and ", NCCL" or ", host copies")) or "", batch * dp.world,
    trainer.opt.shard and ", ZeRO-1" or "")
end

--- At the end: waits (up to a minute each) for this machine's other ranks, which finish the same
--- steps and have nothing left to write, and removes the work folder and the group file.
function Run:finish()
  if not self.workers then return end
  local now, sleep = require("sao.progress").now, require("sao.http").sleep
  for _, pid in pairs(self.workers) do
    local t0 = now()
    while alive(pid) and now() - t0 < 60 do sleep(0.02) end
  end
  cleanup(self)
end

return M
