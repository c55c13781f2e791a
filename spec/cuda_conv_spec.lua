-- cuda_conv_spec.lua — the CUDA twins of conv1d and conv_transpose1d (kernels/cuda/conv1d.cu, on
-- both of its paths: cuDNN, kernels/cuda/conv_cudnn.cu, and im2col + cuBLASLt GEMMs) against their
-- CPU kernels on the same random inputs (tag: gpu): dilation, groups, strides, 'same' padding,
-- output_padding, the Oobleck VAE's k16 s8 transposed conv, a 1x1 conv (always the GEMM path),
-- chunked im2col; forward with and without bias, backward into non-zero d-buffers (the kernels
-- accumulate); the tf32 / bf16 modes; bit-identical repeats; and sao.cuda.conv_backend: switching,
-- and a cuDNN that cannot be loaded (its reason, and the GEMM path still running). Without a usable
-- GPU the comparisons are pending; the "built without CUDA", argument and Lua API checks always run.
-- A cuDNN case is pending, with the reason, where cuDNN cannot be used.
--
-- Tolerances: close(want, got, tol) (spec/support/devcmp.lua) allows tol relative to each tensor's
-- scale. The figures next to each limit were measured on the CPU emulation of the backend
-- (spec/support/cuda_emu: its cuDNN is direct fp32 loops, TF32 inputs rounded in default math);
-- the limits are estimates for a GPU until a GPU run measures them (SAO_SPEC_VERBOSE=1 prints them).
local ffi = require "ffi"
local sao = require "sao"

local C, ctx = sao.C, sao.ctx
local gpu = require "support.gpu"
local gpu_it = gpu.it(it, pending)
local cmp = require "support.devcmp"
local check, fp, dev, close, same_bits = cmp.check, cmp.fp, cmp.dev, cmp.close, cmp.same_bits

-- Runs forward + backward of one conv (transposed when s.opad) with the CPU or CUDA entry points;
-- d-buffers start from the same random values (the kernels accumulate).
local function conv_run(s, x, cuda, mk)
  local r = { x = mk(x.x), w = mk(x.w), b = mk(x.b), dy = mk(x.dy) }
  r.y = mk(sao.full({ x.ny }, 3))
  r.dx, r.dw = mk(x.dx0:clone()), mk(x.dw0:clone())
  r.db = x.b and mk(x.db0:clone()) or nil
  local pre = cuda and "sao_cuda_" or "sao_"
  if s.opad then
    check(C[pre .. "conv_transpose1d_forward"](ctx, fp(r.x), fp(r.w), fp(r.b), s.B, s.cin, s.tin, s.cout,
          s.k, s.stride, s.pad, s.opad, s.dil, s.groups, fp(r.y)))
    check(C[pre .. "conv_transpose1d_backward"](ctx, fp(r.dy), fp(r.x), fp(r.w), s.B, s.cin, s.tin, s.cout,
          s.k, s.stride, s.pad, s.opad, s.dil, s.groups, fp(r.dx), fp(r.dw), fp(r.db)))
  else
    check(C[pre .. "conv1d_forward"](ctx, fp(r.x), fp(r.w), fp(r.b), s.B, s.cin, s.tin, s.cout, s.k,
          s.stride, s.pad, s.dil, s.groups, fp(r.y)))
    check(C[pre .. "conv1d_backward"](ctx, fp(r.dy), fp(r.x), fp(r.w), s.B, s.cin, s.tin, s.cout, s.k,
          s.stride, s.pad, s.dil, s.groups, fp(r.dx), fp(r.dw), fp(r.db)))
  end
  return r
end

local function conv_inputs(s)
  local tout = s.opad and C.sao_conv_transpose1d_out_len(s.tin, s.k, s.stride, s.pad, s.opad, s.dil)
                       or C.sao_conv1d_out_len(s.tin, s.k, s.stride, s.pad, s.dil)
  tout = tonumber(tout)
  local nw = s.opad and s.cin * (s.cout / s.groups) * s.k or s.cout * (s.cin / s.groups) * s.k
  local x = { ny = s.B * s.cout * tout }
  x.x = sao.randn { s.B * s.cin * s.tin, seed = s.seed }
  x.w = sao.randn { nw, seed = s.seed + 1 } * 0.3
  x.b = s.bias and sao.randn { s.cout, seed = s.seed + 2 } or nil
  x.dy = sao.randn { x.ny, seed = s.seed + 3 }
  x.dx0 = sao.randn { s.B * s.cin * s.tin, seed = s.seed + 4 }
  x.dw0 = sao.randn { nw, seed = s.seed + 5 }
  x.db0 = sao.randn { s.cout, seed = s.seed + 6 }
  return x
end

-- Runs f with the conv backend set to name, then back to the default ("auto"), errors and all.
local function with_backend(name, f)
  sao.cuda.conv_backend(name)
  local ok, err = pcall(f)
  sao.cuda.conv_backend("auto")
  if not ok then error(err, 0) end
end

-- A test on one backend: pending where the device or (for cuDNN) cuDNN is missing.
local function backend_it(backend, name, f)
  local label = backend .. ": " .. name
  if not gpu.has_gpu then return gpu_it(label, f) end
  local ver, why = sao.cuda.cudnn()
  if backend == "cudnn" and not ver then return pending(label .. " (cuDNN cannot be used: " .. why .. ")") end
  it(label, function() with_backend(backend, f) end)
end

local cases = {
  { name = "k7 dilation 3 'same' (pad 9), groups 2, bias", B = 2, cin = 4, cout = 6, tin = 37, k = 7,
    stride = 1, pad = 9, dil = 3, groups = 2, bias = true, seed = 100 },
  { name = "k5 stride 3 dilation 2 groups 2, bias", B = 2, cin = 4, cout = 6, tin = 53, k = 5,
    stride = 3, pad = 2, dil = 2, groups = 2, bias = true, seed = 110 },
  { name = "1x1 64 -> 64 (DiT residual; GEMM path on both)", B = 2, cin = 64, cout = 64, tin = 37, k = 1,
    stride = 1, pad = 0, dil = 1, groups = 1, seed = 120 },
  { name = "encoder k4 s2 p1, 8 -> 16", B = 1, cin = 8, cout = 16, tin = 64, k = 4,
    stride = 2, pad = 1, dil = 1, groups = 1, bias = true, seed = 130 },
  { name = "k3 no bias, 5 -> 3", B = 3, cin = 5, cout = 3, tin = 20, k = 3,
    stride = 1, pad = 1, dil = 1, groups = 1, seed = 135 },
  { name = "transposed Oobleck k16 s8 p4, bias", B = 2, cin = 6, cout = 4, tin = 11, k = 16,
    stride = 8, pad = 4, opad = 0, dil = 1, groups = 1, bias = true, seed = 140 },
  { name = "transposed k3 s3 output_padding 2 groups 2 dilation 2", B = 2, cin = 4, cout = 6, tin = 13,
    k = 3, stride = 3, pad = 1, opad = 2, dil = 2, groups = 2, bias = true, seed = 150 },
  { name = "transposed k4 s2 p1 output_padding 1 dilation 3 groups 2, T=37", B = 1, cin = 4, cout = 4,
    tin = 37, k = 4, stride = 2, pad = 1, opad = 1, dil = 3, groups = 2, seed = 160 },
  -- output_padding 2 >= stride 1 (allowed by dilation 3): not a cuDNN convolution, GEMM path on both
  { name = "transposed k3 s1 output_padding 2 dilation 3 (GEMM path on both)", B = 1, cin = 3, cout = 2,
    tin = 9, k = 3, stride = 1, pad = 0, opad = 2, dil = 3, groups = 1, bias = true, seed = 165 },
  -- 512 x 64 = 32768 weights per output channel: the GEMM path's 32M-float chunk scratch takes
  -- 1024 columns, so these run in 3 chunks (the forward's im2col, the transposed forward's Z and gather)
  { name = "chunked: k64 512 -> 2, T=2100", B = 1, cin = 512, cout = 2, tin = 2100, k = 64,
    stride = 1, pad = 31, dil = 1, groups = 1, bias = true, seed = 170, tol = 2e-5 },
  { name = "chunked transposed: k64 2 -> 512, T=2100", B = 1, cin = 2, cout = 512, tin = 2100, k = 64,
    stride = 1, pad = 3, opad = 0, dil = 1, groups = 1, bias = true, seed = 180, tol = 2e-5 },
}

describe("CUDA conv1d #gpu", function()
  it("without CUDA every twin says so; with CUDA the arguments are checked like the CPU kernels'", function()
    local zt = sao.zeros(16)
    local z = fp(zt)
    local calls = {
      function() return C.sao_cuda_conv1d_forward(ctx, z, z, nil, 1, 3, 2, 2, 1, 1, 0, 1, 2, z) end,
      function() return C.sao_cuda_conv1d_backward(ctx, z, z, z, 1, 3, 2, 2, 1, 1, 0, 1, 2, z, z, nil) end,
      function() return C.sao_cuda_conv_transpose1d_forward(ctx, z, z, nil, 1, 3, 2, 2, 1, 1, 0, 0, 1, 2, z) end,
      function() return C.sao_cuda_conv_transpose1d_backward(ctx, z, z, z, 1, 3, 2, 2, 1, 1, 0, 0, 1, 2, z, z, nil) end,
    }
    for _, f in ipairs(calls) do
      assert.are.equal(-1, f())
      local msg = ffi.string(C.sao_ctx_error(ctx))
      if not sao.has_cuda() then
        assert.truthy(msg:match(gpu.no_cuda_reason()), msg)
      else   -- 3 channels with groups 2: the CPU kernels' message, before any device work
        assert.truthy(msg:match("must both be multiples of groups=2"), msg)
      end
    end
    if sao.has_cuda() then
      assert.are.equal(-1, C.sao_cuda_conv1d_forward(ctx, z, z, nil, 1, 1, 2, 1, 5, 1, 0, 1, 1, z))
      assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("output length"))
      assert.are.equal(-1, C.sao_cuda_conv_transpose1d_forward(ctx, z, z, nil, 1, 1, 2, 1, 3, 2, 0, 2, 1, 1, z))
      assert.truthy(ffi.string(C.sao_ctx_error(ctx)):match("output_padding 2 must be smaller"))
    end
  end)

  for _, backend in ipairs { "cudnn", "gemm" } do
    for _, s in ipairs(cases) do
      backend_it(backend, "forward and backward match the CPU kernel: " .. s.name, function()
        local x = conv_inputs(s)
        local want = conv_run(s, x, false, function(t) return t end)
        local got = conv_run(s, x, true, dev)
        -- relative to each output's largest value. Measured on the emulation (both paths: fp32
        -- GEMMs, the fake cuDNN's fp32 loops): y, dx, dw <= 2.4e-7, db 0; the chunked cases'
        -- 32768-term sums 5.4e-6. On a GPU both sum in another order (cuBLASLt tiles, cuDNN's
        -- implicit GEMM): estimate 2e-6, 2e-5 for the chunked cases
        local tol = s.tol or 2e-6
        close(backend .. " " .. s.name .. ": y", want.y, got.y, tol)
        close(backend .. " " .. s.name .. ": dx", want.dx, got.dx, tol)
        close(backend .. " " .. s.name .. ": dw", want.dw, got.dw, tol)
        if x.b then close(backend .. " " .. s.name .. ": db", want.db, got.db, tol) end
      end)
    end

    backend_it(backend, "tf32 and bf16 modes: TF32 tensor-core products, close to fp32", function()
      for _, mode in ipairs { "tf32", "bf16" } do
        local was = sao.cuda.precision(mode)
        local ok, err = pcall(function()
          for _, s in ipairs { cases[1], cases[6], cases[10] } do
            local x = conv_inputs(s)
            local want = conv_run(s, x, false, function(t) return t end)
            local got = conv_run(s, x, true, dev)
            -- TF32 keeps 10 mantissa bits of each input (2^-11 relative); sums of random terms:
            -- estimate 5e-3 of the output's scale (a wrong layout is off by order 1). Measured on the
            -- emulation: cuDNN path (inputs rounded to TF32 there) <= 3.4e-4; GEMM path 5.4e-6 (its
            -- GEMMs stay fp32 there)
            close(mode .. " " .. backend .. " " .. s.name .. ": y", want.y, got.y, 5e-3)
            close(mode .. " " .. backend .. " " .. s.name .. ": dx", want.dx, got.dx, 5e-3)
            close(mode .. " " .. backend .. " " .. s.name .. ": dw", want.dw, got.dw, 5e-3)
          end
        end)
        sao.cuda.precision(was)
        if not ok then error(err, 0) end
      end
    end)

    backend_it(backend, "bit-identical run to run (deterministic algorithms, no atomics)", function()
      for _, s in ipairs { cases[2], cases[6], cases[7] } do
        local x = conv_inputs(s)
        local a, b = conv_run(s, x, true, dev), conv_run(s, x, true, dev)
        for _, n in ipairs { "y", "dx", "dw", "db" } do
          assert.is_true(same_bits(a[n], b[n]), s.name .. ": " .. n .. " differs between two identical runs")
        end
      end
    end)
  end
end)

describe("sao.cuda.conv_backend #gpu", function()
  it("answers in every build: the path and why not cuDNN, or why there is no CUDA at all", function()
    assert.error_matches(function() sao.cuda.conv_backend("cudnn8") end, 'expected "cudnn", "gemm" or "auto"')
    local now, why = sao.cuda.conv_backend()
    local ver, no = sao.cuda.cudnn()
    if not sao.has_cuda() then
      assert.is_nil(now)
      assert.matches(gpu.no_cuda_reason(), why)
      assert.is_nil(ver)
      assert.matches(gpu.no_cuda_reason(), no)
      assert.error_matches(function() sao.cuda.conv_backend("gemm") end, gpu.no_cuda_reason())
    elseif ver then   -- cuDNN 9 loaded: it is the default
      assert.equal("cudnn", now)
      assert.is_nil(why)
      assert.equal(9, math.floor(ver / 10000))
    else
      assert.equal("gemm", now)
      assert.equal(no, why)
      assert.matches("cuDNN", why)
    end
  end)

  gpu_it("switches process-wide between cuDNN and the GEMMs, and back to the default", function()
    local ver, no = sao.cuda.cudnn()
    local ok, err = pcall(function()
      local now, why = sao.cuda.conv_backend("gemm")
      assert.equal("gemm", now)
      assert.matches('conv_backend%("gemm"%)', why)
      assert.equal("gemm", (sao.cuda.conv_backend()))
      now = sao.cuda.conv_backend("auto")
      assert.equal(ver and "cudnn" or "gemm", now)
      if ver then
        assert.equal("cudnn", (sao.cuda.conv_backend("cudnn")))
      else
        assert.error_matches(function() sao.cuda.conv_backend("cudnn") end, "cuDNN is not available: ", nil, true)
        assert.truthy(no)
      end
    end)
    sao.cuda.conv_backend("auto")
    if not ok then error(err, 0) end
  end)

  gpu_it("a cuDNN that cannot be loaded: the reason, and the convolutions still run (GEMM path)", function()
    local shell = require "support.shell"
    local missing = "/nonexistent/dir/libcudnn.so.9"
    local code, out, err = shell.sh(("SAO_CUDNN_LIB=%s $SAO -e %s"):format(missing, shell.q([[
      local sao = require "sao"
      print(sao.cuda.conv_backend())
      print(select(2, pcall(sao.cuda.conv_backend, "cudnn")))
      print(sao.cuda.cudnn())
      -- a k3 conv on the device against the CPU: the GEMM path runs it
      local x, w = sao.randn { 2, 4, 19, seed = 1 }, sao.randn { 6, 4, 3, seed = 2 }
      local y = sao.zeros(2, 6, 17)
      sao.check(sao.C.sao_conv1d_forward(sao.ctx, x:data(), w:data(), nil, 2, 4, 19, 6, 3, 1, 0, 1, 1, y:data()))
      local gx, gw, gy = x:to("cuda"), w:to("cuda"), sao.zeros(2, 6, 17):to("cuda")
      sao.check(sao.C.sao_cuda_conv1d_forward(sao.ctx, gx:data(), gw:data(), nil, 2, 4, 19, 6, 3, 1, 0, 1, 1, gy:data()))
      print(string.format("maxdiff %.3g", y:maxdiff(gy:to("cpu"))))]])))
    assert.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local reason = missing .. ": cannot open shared object file"
    assert.truthy(lines[1]:match("^gemm\t"), lines[1])
    assert.truthy(lines[1]:find(reason, 1, true), lines[1])
    assert.truthy(lines[2]:find("cuDNN is not available: cuDNN could not be loaded: " .. reason, 1, true), lines[2])
    assert.truthy(lines[3]:find("nil\tcuDNN could not be loaded", 1, true), lines[3])
    -- a 12-term fp32 sum in another order: estimate 1e-5 (values of order 1 to 10)
    assert.truthy(tonumber(lines[4]:match("maxdiff (%S+)")) < 1e-5, lines[4])
  end)
end)
