-- sao.nccl: collectives over device tensors between processes (NCCL; tag: gpu), against the host
-- twin sao.comm and exact means. Two ranks: this process and one `./sao -e` child (it inherits
-- SAO_CUDA_LIB, so under the emulator both run the fake NCCL of spec/support/cuda_emu). Without a
-- usable GPU every device test is reported as pending (skipped), never as passed; the first test
-- runs everywhere.
local ffi = require "ffi"
local sao = require "sao"
local comm = require "sao.comm"
local fs = require "sao.fs"
local nccl = require "sao.nccl"
local gpu = require "support.gpu"
local shell = require "support.shell"

local gpu_it = gpu.it(it, pending)
pcall(ffi.cdef, "int getpid(void);")
-- NCCL refuses two ranks on one GPU: on a real machine the two-rank tests want two devices (rank r
-- on device r); the emulator has one device per process, so both ranks use device 0 there
local emulated = gpu.emulated()
local two_gpus = emulated or sao.cuda.count() >= 2
local DEV1 = emulated and 0 or 1
local two_it = (two_gpus or not gpu.has_gpu) and gpu_it or function(name) pending(name .. " (needs two CUDA devices: skipped)") end
local emu_it = (emulated or not gpu.has_gpu) and gpu_it or function(name) pending(name .. " (the CUDA emulator's fake NCCL only: skipped)") end

-- The code both ranks run (this process loads it; the child gets it as text): the inputs, and every
-- collective over them, on the device (sao.nccl) and on the host (sao.comm, the same group).
local SHARED = [=[
local ffi = require "ffi"
local sao = require "sao"
local S = {}
-- 25 floats (odd: the shards are 13 and 12, the boundary inside the second tensor), an empty tensor
-- among them; TINY has fewer floats than ranks (rank 1's shard is empty)
S.SHAPES = { { 7 }, { 3, 4 }, { 1 }, { 0 }, { 5 } }
S.TINY = { { 1 } }

-- rank's host inputs: `exact` ones are multiples of 1/64 in (-8, 8) (every sum and mean exact in
-- fp32), the others randn (rounded sums: compared with the host twin bit for bit)
function S.inputs(shapes, rank, salt, exact)
  local list = {}
  for i, shape in ipairs(shapes) do
    local t = sao.randn { shape, seed = 1000 * salt + 100 * rank + i }
    if exact then
      local p = t:data()
      for k = 0, t:numel() - 1 do p[k] = math.floor(p[k] * 64) / 64 end
    end
    list[i] = t
  end
  return list
end

-- the list's floats, flat, as their bit patterns
function S.bits(list)
  local out = {}
  for _, t in ipairs(list) do
    local h = t:device() == "cuda" and t:to("cpu") or t
    local u = ffi.cast("uint32_t *", h:data())
    for k = 0, h:numel() - 1 do out[#out + 1] = tonumber(u[k]) end
  end
  return out
end

-- every collective on this rank: results[name] = { dev = bits, host = bits (nil for broadcast) }
function S.work(g, n)
  local rank, R = g:rank(), {}
  local function run(name, op, shapes, salt, exact, root)
    local host = S.inputs(shapes, rank, salt, exact)
    local dev = {}
    for i, t in ipairs(host) do dev[i] = t:to("cuda") end
    if op == "broadcast" then
      n:broadcast(dev, root)
    else
      n[op](n, dev)
      g[op](g, host)
    end
    R[name] = { dev = S.bits(dev), host = op ~= "broadcast" and S.bits(host) or nil }
  end
  for _, exact in ipairs { true, false } do
    local e = exact and "exact" or "randn"
    run("allreduce_mean/" .. e, "allreduce_mean", S.SHAPES, 1, exact)
    run("reduce_scatter_mean/" .. e, "reduce_scatter_mean", S.SHAPES, 2, exact)
    run("allgather/" .. e, "allgather", S.SHAPES, 3, exact)
    run("broadcast1/" .. e, "broadcast", S.SHAPES, 4, exact, 1)
    run("broadcast0/" .. e, "broadcast", S.SHAPES, 5, exact, 0)
    run("allreduce_mean/tiny/" .. e, "allreduce_mean", S.TINY, 6, exact)
    run("reduce_scatter_mean/tiny/" .. e, "reduce_scatter_mean", S.TINY, 7, exact)
    run("allgather/tiny/" .. e, "allgather", S.TINY, 8, exact)
  end
  return R
end

function S.encode(R)
  local lines = {}
  for name, r in pairs(R) do
    for _, side in ipairs { "dev", "host" } do
      if r[side] then
        local hex = {}
        for i, b in ipairs(r[side]) do hex[i] = ("%08x"):format(b) end
        lines[#lines + 1] = name .. " " .. side .. " " .. table.concat(hex, " ")
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

function S.decode(text)
  local R = {}
  for line in text:gmatch("[^\n]+") do
    local name, side, rest = line:match("^(%S+) (%S+) ?(.*)$")
    R[name] = R[name] or {}
    local bits = {}
    for h in rest:gmatch("%x+") do bits[#bits + 1] = tonumber(h, 16) end
    R[name][side] = bits
  end
  return R
end
return S
]=]
local S = assert(loadstring(SHARED, "=shared"))()

local function float_bits(x)
  local f = ffi.new("float[1]", x)
  return tonumber(ffi.cast("uint32_t *", f)[0])
end

local function flat(list)
  local v = {}
  for _, t in ipairs(list) do
    local p = t:data()
    for k = 0, t:numel() - 1 do v[#v + 1] = p[k] end
  end
  return v
end

local function shard(total, rank) return comm.shard(total, 2, rank) end

local tag = ("%d-%d"):format(tonumber(ffi.C.getpid()), os.time())
local n_paths = 0
local function group_path()
  n_paths = n_paths + 1
  return comm.default_path(("nccl-spec-%s-%d"):format(tag, n_paths))
end

-- Starts rank 1 of the group at `path` running `body` (Lua, with `g` the group and `S` the shared
-- code in scope) in a `./sao -e` child, with `env` ("NAME=value ...") before it; returns a function
-- that waits for what the child wrote with `put(s)` (or its error, prefixed "ERROR: ").
local function start_rank1(g, path, body, env)
  local out = os.tmpname()
  os.remove(out)
  local code = ([[
local S = assert(loadstring(%q, "=shared"))()
local sao = require "sao"
local comm, nccl = require "sao.comm", require "sao.nccl"
local function put(s)
  local f = io.open(%q .. ".tmp", "wb"); f:write(s); f:close(); os.rename(%q .. ".tmp", %q)
end
local ok, err = pcall(function()
  local g = comm.open(%q, 1, { timeout = 60 })
  %s
end)
if not ok then put("ERROR: " .. tostring(err)) end
]]):format(SHARED, out, out, out, path, body)
  local pid = tonumber(shell.capture((env or "") .. " " .. shell.q(shell.SAO) .. " -e " .. shell.q(code) ..
                                     " >/dev/null 2>&1 & echo $!"))
  g:set_pid(1, pid)
  return function()
    for _ = 1, 12000 do
      if fs.exists(out) then break end
      shell.sleep_ms(10)
    end
    local s = fs.exists(out) and fs.read(out) or "ERROR: rank 1 wrote nothing in 120 s"
    os.remove(out)
    return s
  end
end

describe("sao.nccl #gpu", function()
  it("without a usable GPU, nccl.init fails with a clear error instead of crashing", function()
    local path = group_path()
    local g = comm.create(path, 1, 16, { timeout = 30 })
    assert.error_matches(function() nccl.init(g, "gpu") end, 'device must be "cuda", "cuda:N" or a number')
    assert.error_matches(function() nccl.init(path, "cuda") end, "must be a sao.comm group")
    local ok, why = nccl.available("gpu")
    assert.is_false(ok)
    assert.matches('device must be "cuda", "cuda:N" or a number', why)
    ok, why = nccl.available()
    if not gpu.has_gpu then
      assert.is_false(ok)
      assert.matches(gpu.no_cuda_reason(), why)
      assert.error_matches(function() nccl.init(g, "cuda") end, gpu.no_cuda_reason())
    else
      -- a GPU: NCCL usable (2.10 or newer) or not, with why
      if ok then assert.is_true(why >= 21000) else assert.matches("NCCL", why) end
      if emulated then assert.same({ true, 22809 }, { ok, why }) end
      assert.error_matches(function() nccl.init(g, 99) end, "device 99: there are %d+ CUDA device")
    end
    g:close()
    os.remove(path)
  end)

  two_it("every collective between two processes: the host twin's bits, exact means, the same on both ranks", function()
    local path = group_path()
    local g = comm.create(path, 2, 64, { timeout = 60 })
    local wait = start_rank1(g, path, ([[
      local n = nccl.init(g, %d)
      local R = S.work(g, n)
      n:close()
      put(S.encode(R))]]):format(DEV1))
    local n = nccl.init(g, "cuda")
    assert.same({ 0, 2, 0 }, { n:rank(), n:world(), n:device() })
    local mine = S.work(g, n)
    n:close()
    local text = wait()
    assert.is_nil(text:match("^ERROR: .*"))
    local theirs = S.decode(text)
    g:close()
    os.remove(path)

    local results = { [0] = mine, [1] = theirs }
    local checked = 0
    for _, exact in ipairs { true, false } do
      local e = exact and "exact" or "randn"
      local function inputs(shapes, salt, r) return flat(S.inputs(shapes, r, salt, exact)) end
      local cases = {
        { "allreduce_mean/", S.SHAPES, 1 }, { "allreduce_mean/tiny/", S.TINY, 6 },
        { "reduce_scatter_mean/", S.SHAPES, 2 }, { "reduce_scatter_mean/tiny/", S.TINY, 7 },
        { "allgather/", S.SHAPES, 3 }, { "allgather/tiny/", S.TINY, 8 },
        { "broadcast1/", S.SHAPES, 4, 1 }, { "broadcast0/", S.SHAPES, 5, 0 },
      }
      for _, case in ipairs(cases) do
        local name, shapes, salt, root = case[1] .. e, case[2], case[3], case[4]
        local x0, x1 = inputs(shapes, salt, 0), inputs(shapes, salt, 1)
        local total = #x0
        for rank = 0, 1 do
          local r = results[rank][name]
          assert.is_table(r, name .. " on rank " .. rank)
          assert.equal(total, #r.dev, name)
          local lo, hi = shard(total, rank)
          for k = 1, total do
            local what = ("%s, rank %d, float %d"):format(name, rank, k)
            if case[1]:match("^allreduce") or (case[1]:match("^reduce_scatter") and k > lo and k <= hi) then
              assert.equal(r.host[k], r.dev[k], what .. ": the host twin's bits")
              if exact then assert.equal(float_bits((x0[k] + x1[k]) / 2), r.dev[k], what .. ": the exact mean") end
            elseif case[1]:match("^allgather") then
              local owner = k > select(2, shard(total, 0)) and 1 or 0
              assert.equal(float_bits(owner == 0 and x0[k] or x1[k]), r.dev[k], what .. ": the owner's value")
              assert.equal(r.host[k], r.dev[k], what .. ": the host twin's bits")
            elseif root then
              assert.equal(float_bits(root == 0 and x0[k] or x1[k]), r.dev[k], what .. ": root's value")
            end
            checked = checked + 1
          end
        end
        if not case[1]:match("^reduce_scatter") then
          assert.same(results[0][name].dev, results[1][name].dev, name .. ": bit-identical on both ranks")
        end
      end
    end
    assert.equal(2 * 2 * (5 * 25 + 3 * 1), checked)   -- every float of every case on both ranks
  end)

  gpu_it("refuses a host tensor, a non-f32 or non-contiguous one (naming it), a bad root, a closed communicator", function()
    local path = group_path()
    local g = comm.create(path, 1, 16, { timeout = 30 })
    local n = nccl.init(g, "cuda:0")
    local a = sao.tensor { 1, 2, 3 }:to("cuda")
    assert.error_matches(function() n:allreduce_mean { a, sao.tensor { 1 } } end,
      "nccl_allreduce_mean: tensor 2 is on the host, not on the GPU")
    assert.error_matches(function() n:allgather { a, a, sao.tensor { 1 }:to("f64"):to("cuda") } end,
      "nccl_allgather: tensor 3 is f64, not f32")
    local m = sao.randn { 3, 4, seed = 1 }:to("cuda")
    assert.error_matches(function() n:reduce_scatter_mean { m:transpose(1, 2) } end,
      "nccl_reduce_scatter_mean: tensor 1 is not contiguous")
    assert.error_matches(function() n:broadcast({ a }, 1) end, "nccl_broadcast: root 1: ranks are 0..0")
    assert.error_matches(function() n:allreduce_mean { a, 3 } end, "tensor 2 must be a sao tensor")
    -- one rank: the mean is the value itself, and nothing was left broken by the refusals
    n:allreduce_mean { a }
    assert.same({ 1, 2, 3 }, a:to("cpu"):totable())
    n:close()
    n:close()
    assert.error_matches(function() n:allreduce_mean { a } end, "the communicator is closed")
    g:close()
    os.remove(path)
  end)

  gpu_it("a rank that cannot load NCCL makes init fail on every rank, with the cannot-load message", function()
    local path = group_path()
    local g = comm.create(path, 2, 64, { timeout = 60 })
    local wait = start_rank1(g, path, [[
      local ok, err = pcall(nccl.init, g, "cuda")
      put(ok and "init succeeded" or tostring(err))]], "SAO_NCCL_LIB=/nonexistent/libnccl.so.2")
    assert.error_matches(function() nccl.init(g, "cuda") end, "rank%(s%) 1 cannot take part")
    local err = wait()
    assert.matches("NCCL: cannot load /nonexistent/libnccl.so.2 %(.*%): install NCCL", err)
    g:close()
    os.remove(path)
    if emulated then
      -- the fake's stand-in of a machine without libnccl.so.2, and of one too old for ncclAvg
      for env, msg in pairs {
        ["EMU_NO_NCCL=1"] = "NCCL: cannot load libnccl.so.2 %(.*EMU_NO_NCCL=1%)%): install NCCL",
        ["EMU_NCCL_VERSION=20800"] = "NCCL at libnccl.so.2 is version 2.8.0 %(code 20800%); sao needs 2.10 or newer",
      } do
        local code, out = shell.sh(env .. " $SAO -e " .. shell.q(([[
          local comm, nccl = require "sao.comm", require "sao.nccl"
          local g = comm.create(%q, 1, 16, { timeout = 30 })
          local ok, err = pcall(nccl.init, g, "cuda")
          io.write(ok and "init succeeded" or tostring(err))]]):format(path)))
        os.remove(path)
        assert.equal(0, code)
        assert.matches(msg, out)
      end
    end
  end)

  -- (a real NCCL's kernels wait for a dead peer: only the fake reports it)
  emu_it("a peer that exits fails the collective at once and leaves the communicator broken", function()
    local path = group_path()
    local g = comm.create(path, 2, 64, { timeout = 60 })
    local wait = start_rank1(g, path, [[
      local n = nccl.init(g, "cuda")
      put("joined")]])   -- and exits without a collective
    local n = nccl.init(g, "cuda")
    assert.equal("joined", wait())
    local a = sao.tensor { 1, 2 }:to("cuda")
    local t0 = os.time()
    assert.error_matches(function() n:allreduce_mean { a } end, "remote process exited.*rank 1 %(process %d+%) has exited")
    assert.is_true(os.time() - t0 < 10)
    assert.error_matches(function() n:allreduce_mean { a } end, "the communicator is broken")
    n:abort()
    g:close()
    os.remove(path)
  end)
end)
