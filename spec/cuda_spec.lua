-- CUDA device runtime and kernels against their CPU twins (tag: gpu). Without a usable GPU every
-- device test here is reported as pending (skipped), never as passed; the sao.cuda probes at the
-- end run everywhere (CPU-only build, CUDA build without a GPU, GPU).
local ffi = require "ffi"
local sao = require "sao"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local has_gpu = gpu.has_gpu

local gpu_it = gpu.it(it, pending)

describe("CUDA #gpu", function()
  it("reports no device rather than failing when none is usable", function()
    local n = sao.C.sao_cuda_device_count()
    assert.is_true(n >= 0)
    if not sao.has_cuda() then
      assert.equal(0, n)
      assert.error_matches(function() sao.checkp(sao.C.sao_tensor_to_cuda(sao.ctx, sao.zeros(2):raw(), 0)) end,
        gpu.no_cuda_reason())
    end
  end)

  gpu_it("mem_info: free and total as the driver reports them; usable adds sao's cached blocks", function()
    local m = sao.cuda.mem_info(0)
    assert.is_true(m.total > 0 and m.free > 0 and m.free <= m.total)
    assert.is_true(m.usable >= m.free)
    assert.equal(sao.cuda.devices()[1].memory_bytes, m.total)
  end)

  gpu_it("large transfers go through the pinned staging buffers and come back bit for bit", function()
    -- 37 MB + 12 bytes: four full 8 MiB chunks and a ragged fifth; 1 MiB - 4 bytes stays a plain copy
    for _, n in ipairs { 9437187, 262143, 4 * 2 ^ 20 } do
      local a = sao.randn { n, seed = n % 97 }
      local back = a:to("cuda"):to("cpu")
      assert.equal(0, a:maxdiff(back), n .. " floats")
    end
  end)

  gpu_it("copy_ between host and device tensors (any direction), refusing what it cannot copy whole", function()
    local a = sao.randn { 5, 7, seed = 61 }
    local d = sao.zeros(5, 7):to("cuda")
    d:copy_(a)                                     -- host -> device
    assert.equal(0, a:maxdiff(d:to("cpu")))
    local e = sao.zeros(5, 7):to("cuda")
    e:copy_(d)                                     -- device -> device
    local h = sao.zeros(5, 7)
    h:copy_(e)                                     -- device -> host
    assert.equal(0, a:maxdiff(h))
    assert.error_matches(function() d:copy_(sao.randn { 7, 5, seed = 62 }:transpose(1, 2)) end,
      "copy_: with a device tensor, both must be contiguous")
    assert.error_matches(function() d:copy_(sao.zeros(5, 7, "f64")) end, "same dtype")
    -- save_safetensors writes a device tensor through a host copy
    local path = os.tmpname()
    sao.save_safetensors(path, { w = d })
    local back = sao.load_safetensors(path)
    os.remove(path)
    assert.equal(0, a:maxdiff(back.w))
  end)

  gpu_it("device properties", function()
    local ffi = require "ffi"
    local name, mem = ffi.new("char[256]"), ffi.new("int64_t[1]")
    local maj, min = ffi.new("int[1]"), ffi.new("int[1]")
    sao.check(sao.C.sao_cuda_device_props(sao.ctx, 0, name, 256, mem, maj, min))
    assert.is_true(#ffi.string(name) > 0)
    assert.is_true(tonumber(mem[0]) > 0)
  end)

  gpu_it("round-trips a tensor through device memory", function()
    local a = sao.randn { 3, 5, seed = 1 }
    local d = sao.tensor_from_ptr(sao.C.sao_tensor_to_cuda(sao.ctx, a:raw(), 0))
    assert.equal("cuda", d:device())
    local back = sao.tensor_from_ptr(sao.C.sao_tensor_to_cpu(sao.ctx, d:raw()))
    assert.equal(0, a:maxdiff(back))
  end)

  gpu_it("Philox fill matches the CPU stream", function()
    for _, normal in ipairs { 0, 1 } do
      local cpu = normal == 1 and sao.randn { 10001, seed = 9, offset = 3 } or sao.rand { 10001, seed = 9, offset = 3 }
      local d = sao.tensor_from_ptr(sao.C.sao_tensor_to_cuda(sao.ctx, sao.zeros(10001):raw(), 0))
      sao.check(sao.C.sao_cuda_rand_fill(sao.ctx, d:raw(), 9, 3, normal))
      local back = sao.tensor_from_ptr(sao.C.sao_tensor_to_cpu(sao.ctx, d:raw()))
      -- device log/cos/sin may differ from glibc's by an ulp in double: f32 results within 1e-6
      assert.tensor_near(cpu, back, { abs = 1e-6, rel = 1e-6 })
    end
  end)

  gpu_it("SiLU forward/backward match the CPU kernels", function()
    local x, dy = sao.randn { 4097, seed = 1 }, sao.randn { 4097, seed = 2 }
    local y, dx = sao.zeros(4097), sao.zeros(4097)
    sao.check(sao.C.sao_silu_forward(sao.ctx, x:data(), 4097, y:data()))
    sao.check(sao.C.sao_silu_backward(sao.ctx, dy:data(), x:data(), 4097, dx:data()))
    local function dev(t) return sao.tensor_from_ptr(sao.C.sao_tensor_to_cuda(sao.ctx, t:raw(), 0)) end
    local function host(t) return sao.tensor_from_ptr(sao.C.sao_tensor_to_cpu(sao.ctx, t:raw())) end
    local gx, gdy, gy, gdx = dev(x), dev(dy), dev(sao.zeros(4097)), dev(sao.zeros(4097))
    local ffi = require "ffi"
    local function p(t) return ffi.cast("float*", sao.C.sao_tensor_data(t:raw())) end
    sao.check(sao.C.sao_cuda_silu_forward(sao.ctx, p(gx), 4097, p(gy)))
    sao.check(sao.C.sao_cuda_silu_backward(sao.ctx, p(gdy), p(gx), 4097, p(gdx)))
    -- expf on the device vs the CPU kernel: a few ulp
    assert.tensor_near(y, host(gy), { abs = 1e-6, rel = 1e-6 })
    assert.tensor_near(dx, host(gdx), { abs = 1e-6, rel = 1e-6 })
  end)
end)

-- ---- the caching allocator (kernels/cuda/alloc.cu) ---------------------------------------------
describe("CUDA caching allocator #gpu", function()
  gpu_it("garbage device tensors are collected before they pile up (the GC is told about device bytes)", function()
    local tensor = require "sao.tensor"
    local old = tensor.device_gc_bytes
    tensor.device_gc_bytes = 64 * 2 ^ 20
    collectgarbage("collect")
    local base = sao.cuda.memory().allocated
    local host = sao.zeros(2 * 2 ^ 20)            -- 8 MB
    local most = 0
    for _ = 1, 100 do                              -- 800 MB of device copies, none kept
      local _ = host:to("cuda")
      most = math.max(most, sao.cuda.memory().allocated - base)
    end
    tensor.device_gc_bytes = old
    assert.is_true(most <= 80 * 2 ^ 20, string.format("%.0f MB held at most", most / 2 ^ 20))
  end)

  gpu_it("reset_peak starts the peak afresh from the bytes live now", function()
    local big = sao.zeros(4 * 2 ^ 20):to("cuda")   -- 16 MB
    big:free()
    local m = sao.cuda.memory()
    assert.is_true(m.peak >= m.allocated + 16 * 2 ^ 20)
    sao.cuda.reset_peak()
    local r = sao.cuda.memory()
    assert.equal(r.allocated, r.peak)
  end)

  local function alloc(bytes)
    local p = ffi.new("void*[1]")
    sao.check(C.sao_cuda_malloc(sao.ctx, bytes, p))
    return p[0]
  end

  gpu_it("a freed block is reused: the second allocation of a size class calls no cudaMalloc", function()
    sao.cuda.empty_cache()
    local bytes = 3 * 1000 * 1000 + 17
    local class = tonumber(C.sao_cuda_size_class(bytes))
    local m0 = sao.cuda.memory()
    local a = alloc(bytes)
    local m1 = sao.cuda.memory()
    assert.equal(m0.cudamalloc_calls + 1, m1.cudamalloc_calls)
    assert.equal(m0.allocated + class, m1.allocated)
    assert.equal(m0.cached, m1.cached)
    assert.is_true(m1.peak >= m1.allocated)

    assert.equal(0, C.sao_cuda_free(a))
    local m2 = sao.cuda.memory()
    assert.equal(m0.allocated, m2.allocated)
    assert.equal(m1.cached + class, m2.cached)
    assert.equal(-1, C.sao_cuda_free(a))          -- a second free is refused, nothing changes
    assert.same(m2, sao.cuda.memory())

    local b = alloc(bytes - 5)                    -- same class: the cached block, no driver call
    local m3 = sao.cuda.memory()
    assert.is_true(a == b)
    assert.equal(m2.cudamalloc_calls, m3.cudamalloc_calls)
    assert.equal(m2.cached - class, m3.cached)
    assert.equal(m1.allocated, m3.allocated)
    assert.equal(0, C.sao_cuda_free(b))
  end)

  gpu_it("tensor storage comes from the cache and goes back to it", function()
    sao.cuda.empty_cache()
    local class = tonumber(C.sao_cuda_size_class(4 * 1001))
    local m0 = sao.cuda.memory()
    local d = sao.zeros(1001):to("cuda")
    local m1 = sao.cuda.memory()
    assert.equal(m0.allocated + class, m1.allocated)
    d:free()
    local m2 = sao.cuda.memory()
    assert.equal(m0.allocated, m2.allocated)
    assert.equal(m0.cached + class, m2.cached)
    local e = sao.ones(1001):to("cuda")           -- reuses the block: same count, right contents
    assert.equal(m2.cudamalloc_calls, sao.cuda.memory().cudamalloc_calls)
    assert.equal(1001, e:to("cpu"):sum())
    e:free()
  end)

  gpu_it("empty_cache hands every cached block back to the driver", function()
    local a = alloc(100000)
    C.sao_cuda_free(a)
    local before = sao.cuda.memory()
    assert.is_true(before.cached > 0)
    assert.equal(before.cached, sao.cuda.empty_cache())
    local after = sao.cuda.memory()
    assert.equal(0, after.cached)
    assert.equal(before.allocated, after.allocated)
    local b = alloc(100000)                       -- the bin is empty now: a driver allocation
    assert.equal(after.cudamalloc_calls + 1, sao.cuda.memory().cudamalloc_calls)
    C.sao_cuda_free(b)
  end)

  gpu_it("out of device memory is an error message (after emptying the cache), not an abort", function()
    local a = alloc(4096)
    C.sao_cuda_free(a)
    local m0 = sao.cuda.memory()
    assert.is_true(m0.cached > 0)
    assert.error_matches(function() alloc(2 ^ 48) end, "cudaMalloc .* even after emptying the cache")
    local m1 = sao.cuda.memory()
    assert.equal(0, m1.cached)                    -- the retry gave the cache back first
    assert.equal(m0.allocated, m1.allocated)
    assert.equal(m0.cudamalloc_calls, m1.cudamalloc_calls)
    C.sao_cuda_free(alloc(4096))                  -- and the device is still usable
  end)
end)

-- ---- linear (kernels/cuda/linear.cu) vs kernels/cpu/linear.c -------------------------------------
-- Odd sizes on purpose: no dimension a multiple of 4, so cuBLASLt cannot take a vectorised path
-- for granted. Every device output sits between G guard floats on each side that must come back
-- untouched.
-- Tolerances (estimates, not yet measured on a GPU; replace them with the measured max error plus
-- margin on the first GPU run): both sides compute in fp32 with different summation orders, so an
-- output of a length-k dot product of N(0,1) inputs differs by about sqrt(k) * 2^-24 * |terms|
-- ~ 1e-5 at k = 129; abs 1e-4 leaves ~10x room and still catches any indexing or transpose error
-- (which gives errors of order 1).
local N, IN, OUT = 37, 129, 65
local G, SENTINEL = 64, 12345.5
local PATHS = { { 1, "cuBLASLt" }, { 0, "plain cuBLAS" } }

local function fptr(t) return ffi.cast("float*", C.sao_tensor_data(t:raw())) end
local function u16ptr(t) return ffi.cast("const uint16_t*", C.sao_tensor_data(t:raw())) end

-- A device copy of t with G sentinel floats on each side; returns it and a float* to t's first element.
local function guarded(t)
  local n = t:numel()
  local buf = sao.full({ n + 2 * G }, SENTINEL)
  buf:narrow(1, G + 1, n):copy_(t:reshape(n))
  local d = buf:to("cuda")
  return d, fptr(d) + G
end

-- The payload of a guarded device buffer, on the host, shaped like `like`; fails if a guard changed.
local function unguard(d, like)
  local h = d:to("cpu")
  local n, p = like:numel(), h:data()
  local bad = 0
  for i = 0, G - 1 do
    if p[i] ~= SENTINEL then bad = bad + 1 end
    if p[G + n + i] ~= SENTINEL then bad = bad + 1 end
  end
  assert.equal(0, bad, "guard floats overwritten around a device output")
  return h:narrow(1, G + 1, n):view(like:shape()):clone()
end

-- Runs f with the GEMM path set to lt (1 cuBLASLt, 0 plain cuBLAS), restoring it even on error.
local function with_path(lt, f)
  local was = C.sao_cuda_gemm_use_lt(lt)
  local ok, err = pcall(f)
  C.sao_cuda_gemm_use_lt(was)
  if not ok then error(err, 0) end
end

describe("CUDA linear vs the CPU kernel #gpu", function()
  for _, path in ipairs(PATHS) do
    for _, with_bias in ipairs { true, false } do
      for _, acc in ipairs { 0, 1 } do
        gpu_it(string.format("forward, %s, %s bias, accumulate %d", path[2], with_bias and "with" or "no", acc), function()
          local x, w = sao.randn { N, IN, seed = 11 }, sao.randn { OUT, IN, seed = 12 }
          local b = with_bias and sao.randn { OUT, seed = 13 } or nil
          local y0 = sao.randn { N, OUT, seed = 14 }  -- overwritten (acc 0) or added to (acc 1)
          local want = y0:clone()
          sao.check(C.sao_linear_forward(sao.ctx, x:data(), w:data(), b and b:data() or nil, N, IN, OUT, acc, want:data()))
          local gx, gw, gb = x:to("cuda"), w:to("cuda"), b and b:to("cuda") or nil
          local gy, py = guarded(y0)
          with_path(path[1], function()
            sao.check(C.sao_cuda_linear_forward(sao.ctx, fptr(gx), fptr(gw), gb and fptr(gb) or nil, N, IN, OUT, acc, py))
          end)
          -- |y| up to ~40 here; see the note above for abs 1e-4
          assert.tensor_near(want, unguard(gy, want), { abs = 1e-4, rel = 1e-5 })
        end)
      end
    end

    for _, grads in ipairs { { dx = true, dw = true, db = true }, { dw = true, db = true }, { dx = true } } do
      local names = {}
      for _, k in ipairs { "dx", "dw", "db" } do if grads[k] then names[#names + 1] = k end end
      local what = table.concat(names, ", ")
      gpu_it(string.format("backward accumulates %s (%s)", what, path[2]), function()
        local x, w = sao.randn { N, IN, seed = 21 }, sao.randn { OUT, IN, seed = 22 }
        local dy = sao.randn { N, OUT, seed = 23 }
        local start = { dx = sao.randn { N, IN, seed = 24 }, dw = sao.randn { OUT, IN, seed = 25 },
                        db = sao.randn { OUT, seed = 26 } }
        local want, dev, ptr = {}, {}, {}
        for k, t in pairs(start) do
          if grads[k] then
            want[k] = t:clone()
            dev[k], ptr[k] = guarded(t)
          end
        end
        local function hp(k) return want[k] and want[k]:data() or nil end
        -- the CPU kernel needs w only for dx and x only for dW: pass NULL otherwise, as a caller may
        sao.check(C.sao_linear_backward(sao.ctx, dy:data(), grads.dw and x:data() or nil, grads.dx and w:data() or nil,
                                        N, IN, OUT, hp("dx"), hp("dw"), hp("db")))
        local gx, gw, gdy = x:to("cuda"), w:to("cuda"), dy:to("cuda")
        with_path(path[1], function()
          sao.check(C.sao_cuda_linear_backward(sao.ctx, fptr(gdy), grads.dw and fptr(gx) or nil, grads.dx and fptr(gw) or nil,
                                               N, IN, OUT, ptr.dx, ptr.dw, ptr.db))
        end)
        -- dx: dot products of length OUT = 65, |dx| up to ~30: abs 1e-4 as above.
        if grads.dx then assert.tensor_near(want.dx, unguard(dev.dx, want.dx), { abs = 1e-4, rel = 1e-5 }) end
        -- dW: length N = 37, |dW| up to ~25: abs 1e-4.
        if grads.dw then assert.tensor_near(want.dw, unguard(dev.dw, want.dw), { abs = 1e-4, rel = 1e-5 }) end
        -- db: sums of 37 values in another order (16 strided partials): |db| < ~20, error ~ 37 * 2^-24 * 20 ~ 4e-5 worst case.
        if grads.db then assert.tensor_near(want.db, unguard(dev.db, want.db), { abs = 5e-5, rel = 1e-5 }) end
      end)
    end

    for _, case in ipairs { { true, 0 }, { true, 1 }, { false, 0 } } do
      local with_bias, acc = case[1], case[2]
      gpu_it(string.format("bf16 forward, %s, %s bias, accumulate %d, vs the CPU on bf16-rounded inputs", path[2],
                           with_bias and "with" or "no", acc), function()
        local xb, wb = sao.randn({ N, IN, seed = 31 }):to("bf16"), sao.randn({ OUT, IN, seed = 32 }):to("bf16")
        local xr, wr = xb:to("f32"), wb:to("f32")    -- exactly the values the device sees
        local b = with_bias and sao.randn { OUT, seed = 33 } or nil
        local y0 = sao.randn { N, OUT, seed = 34 }
        local want = y0:clone()
        sao.check(C.sao_linear_forward(sao.ctx, xr:data(), wr:data(), b and b:data() or nil, N, IN, OUT, acc, want:data()))
        local gx, gw, gb = xb:to("cuda"), wb:to("cuda"), b and b:to("cuda") or nil
        local gy, py = guarded(y0)
        with_path(path[1], function()
          sao.check(C.sao_cuda_linear_forward_bf16(sao.ctx, u16ptr(gx), u16ptr(gw), gb and fptr(gb) or nil,
                                                   N, IN, OUT, acc, py))
        end)
        -- bf16 x bf16 products are exact in fp32, so only the accumulation differs, but tensor-core
        -- fp32 accumulation is not IEEE-exact at every add: estimate (unmeasured) a few 1e-5 at |y| ~ 40;
        -- abs 5e-4 keeps room while a wrong layout or dtype gives errors of order 1.
        assert.tensor_near(want, unguard(gy, want), { abs = 5e-4, rel = 1e-4 })
      end)
    end
  end

  -- sao.cuda.precision: the same fp32 entry points with tf32 or bf16 products.
  for _, mode in ipairs { "bf16", "tf32" } do
    gpu_it(mode .. " products: forward and backward of the fp32 entry points", function()
      local x, w = sao.randn { N, IN, seed = 51 }, sao.randn { OUT, IN, seed = 52 }
      local b, dy = sao.randn { OUT, seed = 53 }, sao.randn { N, OUT, seed = 54 }
      -- bf16: the device multiplies exactly the bf16-rounded inputs, so the CPU on those is the
      -- reference and only the accumulation differs (as for the bf16 forward above); tf32 rounds
      -- inside the tensor cores (10-bit mantissa), so the fp32 CPU result is compared with a
      -- tolerance of that size (estimate: 65 products of |x w| ~ 1 at 2^-11 relative each).
      local function r(t) return mode == "bf16" and t:to("bf16"):to("f32") or t end
      local tol = mode == "bf16" and { abs = 5e-4, rel = 1e-4 } or { abs = 3e-2, rel = 3e-3 }
      local y = sao.zeros(N, OUT)
      local dx, dw, db = sao.zeros(N, IN), sao.zeros(OUT, IN), sao.zeros(OUT)
      sao.check(C.sao_linear_forward(sao.ctx, r(x):data(), r(w):data(), b:data(), N, IN, OUT, 0, y:data()))
      sao.check(C.sao_linear_backward(sao.ctx, r(dy):data(), r(x):data(), r(w):data(), N, IN, OUT, dx:data(), dw:data(), nil))
      sao.check(C.sao_linear_backward(sao.ctx, dy:data(), nil, nil, N, IN, OUT, nil, nil, db:data()))
      local gx, gw, gb, gdy = x:to("cuda"), w:to("cuda"), b:to("cuda"), dy:to("cuda")
      local gy, gdx, gdw, gdb = sao.zeros(N, OUT):to("cuda"), sao.zeros(N, IN):to("cuda"), sao.zeros(OUT, IN):to("cuda"),
        sao.zeros(OUT):to("cuda")
      local was = sao.cuda.precision(mode)
      local ok, err = pcall(function()
        sao.check(C.sao_cuda_linear_forward(sao.ctx, fptr(gx), fptr(gw), fptr(gb), N, IN, OUT, 0, fptr(gy)))
        sao.check(C.sao_cuda_linear_backward(sao.ctx, fptr(gdy), fptr(gx), fptr(gw), N, IN, OUT, fptr(gdx), fptr(gdw),
          fptr(gdb)))
      end)
      sao.cuda.precision(was)
      if not ok then error(err, 0) end
      assert.tensor_near(y, gy:to("cpu"), tol)
      assert.tensor_near(dx, gdx:to("cpu"), tol)
      assert.tensor_near(dw, gdw:to("cpu"), tol)
      assert.tensor_near(db, gdb:to("cpu"), { abs = 5e-5, rel = 1e-5 })   -- from fp32 dy in every mode
    end)
  end

  it("sao.cuda.precision takes fp32, tf32 or bf16 and refuses anything else", function()
    assert.error_matches(function() sao.cuda.precision("fp16") end, "expected \"fp32\", \"tf32\" or \"bf16\"")
    if not sao.has_cuda() then
      assert.equal("fp32", sao.cuda.precision())        -- nothing to set without a backend
      return
    end
    local was = sao.cuda.precision("bf16")
    assert.equal("bf16", sao.cuda.precision("tf32"))
    assert.equal("tf32", sao.cuda.precision(was))
    assert.equal(was, sao.cuda.precision())
  end)

  gpu_it("db is bit-identical from run to run (deterministic reduction)", function()
    local n = 4099                                  -- many rows per thread, not a multiple of 16
    local dy = sao.randn { n, OUT, seed = 41 }:to("cuda")
    local function run()
      local db = sao.zeros(OUT):to("cuda")
      sao.check(C.sao_cuda_linear_backward(sao.ctx, fptr(dy), nil, nil, n, IN, OUT, nil, nil, fptr(db)))
      return db:to("cpu")
    end
    assert.equal(0, run():maxdiff(run()))
  end)

  gpu_it("a host pointer is refused with a message naming the argument", function()
    local x, w, y = sao.randn { N, IN, seed = 1 }, sao.randn { OUT, IN, seed = 2 }, sao.zeros(N, OUT)
    local gw, gy = w:to("cuda"), y:to("cuda")
    assert.error_matches(function()
      sao.check(C.sao_cuda_linear_forward(sao.ctx, x:data(), fptr(gw), nil, N, IN, OUT, 0, fptr(gy)))
    end, "x is host memory")
  end)
end)

-- ---- sao.cuda: works in every build, with or without a GPU ----------------------------------------
describe("sao.cuda", function()
  it("available() is true exactly when a CUDA build sees a device", function()
    assert.equal(sao.has_cuda() and C.sao_cuda_device_count() > 0, sao.cuda.available())
  end)

  it("devices() lists each device with index, name, memory and capability", function()
    local list = sao.cuda.devices()
    assert.equal(sao.cuda.count(), #list)
    if not sao.cuda.available() then assert.same({}, list) end
    for i, d in ipairs(list) do
      assert.equal(i - 1, d.index)
      assert.is_true(#d.name > 0)
      assert.is_true(d.memory_bytes > 0)
      assert.matches("^%d+%.%d+$", d.capability)
    end
  end)

  it("memory() has the four counters, all zero when nothing could be allocated", function()
    local m = sao.cuda.memory()
    for _, k in ipairs { "allocated", "cached", "peak", "cudamalloc_calls" } do
      assert.is_number(m[k])
      assert.is_true(m[k] >= 0)
    end
    assert.is_true(m.peak >= m.allocated)
    if not sao.cuda.available() then
      assert.same({ allocated = 0, cached = 0, peak = 0, cudamalloc_calls = 0 }, m)
      assert.equal(0, sao.cuda.empty_cache())
    end
  end)

  it("sao_cuda_malloc says why it cannot allocate without a device", function()
    if sao.cuda.available() then return pending("a device is available: see the #gpu tests") end
    local p = ffi.new("void*[1]")
    assert.error_matches(function() sao.check(C.sao_cuda_malloc(sao.ctx, 1024, p)) end,
      sao.has_cuda() and "cuda_malloc" or gpu.no_cuda_reason())
    assert.is_true(p[0] == nil)
    assert.equal(0, sao.cuda.memory().cudamalloc_calls)
  end)

  it("sao_cuda_free ignores NULL and refuses memory it did not hand out", function()
    assert.equal(0, C.sao_cuda_free(nil))
    assert.equal(-1, C.sao_cuda_free(ffi.new("char[16]")))
  end)

  it("size classes: 512 B steps up to 1 MiB, then four per power of two", function()
    local MiB = 2 ^ 20
    local cases = { { 0, 512 }, { 1, 512 }, { 512, 512 }, { 513, 1024 }, { MiB, MiB },
                    { MiB + 1, 1.25 * MiB }, { 2 * MiB, 2 * MiB }, { 3 * MiB, 3 * MiB },
                    { 3 * MiB + 1, 3.5 * MiB }, { 1000 * MiB, 1024 * MiB } }
    for _, c in ipairs(cases) do assert.equal(c[2], tonumber(C.sao_cuda_size_class(c[1]))) end
  end)

  it("the device linear says why there is no backend (a CPU-only build, or one that does not load)", function()
    if sao.has_cuda() then return pending("the CUDA backend is loaded: see the #gpu tests") end
    local why = gpu.no_cuda_reason()
    assert.error_matches(function()
      sao.check(C.sao_cuda_linear_forward(sao.ctx, nil, nil, nil, 1, 1, 1, 0, nil))
    end, why)
    assert.error_matches(function()
      sao.check(C.sao_cuda_linear_backward(sao.ctx, nil, nil, nil, 1, 1, 1, nil, nil, nil))
    end, why)
  end)
end)

-- The CUDA libraries (cudart, cuBLAS, cuBLASLt) are only linked into libsao_cuda.so (which dlopens
-- cuDNN itself when a convolution wants it), which libsao.so loads on the first call that needs a
-- GPU (runtime/cuda_load.c): work that never touches CUDA starts as fast, and as small, as in a
-- CPU-only build.
describe("the CUDA backend is loaded on first use", function()
  local shell = require "support.shell"
  local lib_dir = (os.getenv("SAO_LIB") or shell.ROOT .. "/build/libsao.so"):match("^(.*)/[^/]*$")
  local backend = lib_dir .. "/libsao_cuda.so"
  local built_with = io.open(backend) ~= nil

  -- Runs a Lua chunk in a fresh ./sao (same SAO_LIB) with `env` prepended; returns its stdout lines.
  local function run(env, chunk)
    local code, out, err = shell.sh(("%s $SAO -e %s"):format(env, shell.q(chunk)))
    assert.equal(0, code, err)
    return out
  end
  local mapped = [[local function mapped() local f = io.open("/proc/self/maps") local s = f:read("*a")
    f:close() return s:match("libsao_cuda") and "backend" or s:match("libcudart") and "cudart" or "none" end ]]

  it("libsao.so does not link the CUDA libraries; the backend exports one symbol", function()
    local needed = shell.capture("readelf -d " .. shell.q(lib_dir .. "/libsao.so"))
    assert.matches("NEEDED", needed)
    assert.is_nil(needed:match("libcud"), needed)
    if not built_with then return end
    local syms = shell.capture("nm -D --defined-only " .. shell.q(backend))
    local names = {}
    for name in syms:gmatch("%x+ %u ([%w_]+)") do names[#names + 1] = name end
    assert.same({ "sao_cuda_backend_v1" }, names)
    assert.matches("libcudart", shell.capture("readelf -d " .. shell.q(backend)))
  end)

  it("maps nothing of CUDA until asked, then loads the backend (CUDA build) or says why not", function()
    local out = run("", mapped .. [[local sao = require "sao"
      local x = sao.randn { 64, 64, seed = 1 }; local _ = (x + x):sum()
      io.write(mapped(), " ", tostring(sao.cuda.unavailable()), " ")
      io.write(sao.cuda.count(), " ", mapped(), "\n")]])
    local before, why, count, after = out:match("^(%S+) (.-) (%d+) (%S+)\n$")
    assert.equal("none", before, out)
    if built_with and sao.has_cuda() then
      assert.equal("nil", why)
      assert.equal("backend", after)   -- (it brings cudart with it; an emulated backend does not)
      assert.equal(C.sao_cuda_device_count(), tonumber(count))
    else
      assert.matches(gpu.no_cuda_reason(), why)
      assert.equal("none", after)
      assert.equal("0", count)
    end
  end)

  it("a backend that cannot be loaded is named in every answer, and nothing else breaks", function()
    local missing = "/nonexistent/dir/libsao_cuda.so"
    local out = run("SAO_CUDA_LIB=" .. missing, [[local sao = require "sao"
      local ffi = require "ffi"
      print(sao.has_cuda(), sao.cuda.count(), sao.cuda.memory().allocated, sao.C.sao_cuda_free(nil))
      print(sao.cuda.unavailable())
      print(sao.C.sao_cuda_silu_forward(sao.ctx, nil, 0, nil), ffi.string(sao.C.sao_ctx_error(sao.ctx)))
      print(select(2, pcall(sao.load_model, "tiny", { device = "cuda", quiet = true })))
      print(sao.randn({ 3, seed = 2 }):sum() ~= 0)]])
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("false\t0\t0\t0", lines[1])
    local reason = built_with and "could not be loaded: " .. missing or "built without CUDA"
    assert.truthy(lines[2]:find(reason, 1, true), lines[2])
    assert.truthy(lines[3]:find("-1\tcuda_silu_forward: ", 1, true), lines[3])
    assert.truthy(lines[3]:find(reason, 1, true), lines[3])
    assert.truthy(lines[4]:find("load_model: device 'cuda': ", 1, true), lines[4])
    assert.truthy(lines[4]:find(reason, 1, true), lines[4])
    assert.equal("true", lines[5])
  end)
end)
