-- CUDA device runtime and kernels against their CPU twins (tag: gpu). Without a usable GPU every
-- test here is reported as pending (skipped), never as passed.
local sao = require "sao"
require "spec.support.near"

local has_gpu = sao.C.sao_cuda_device_count() > 0

local function gpu_it(name, f)
  if has_gpu then it(name, f) else pending(name .. " (no CUDA device: skipped)") end
end

describe("CUDA #gpu", function()
  it("reports no device rather than failing when none is usable", function()
    local n = sao.C.sao_cuda_device_count()
    assert.is_true(n >= 0)
    if not sao.has_cuda() then
      assert.equal(0, n)
      assert.error_matches(function() sao.checkp(sao.C.sao_tensor_to_cuda(sao.ctx, sao.zeros(2):raw(), 0)) end,
        "built without CUDA")
    end
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
