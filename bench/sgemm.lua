-- bench/sgemm.lua — sgemm GFLOP/s through sao.matmul, and the ratio to the same sgemm called
-- directly in OpenBLAS in the same run (the ratio shows what the tensor layer costs).
-- Prints one JSON line per size.
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"

ffi.cdef [[
void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
]]
local blas = ffi.load("openblas")

local function now()
  local t = ffi.new("struct { long s; long ns; }")
  ffi.C.clock_gettime(1, ffi.cast("void*", t))
  return tonumber(t.s) + tonumber(t.ns) * 1e-9
end
ffi.cdef "int clock_gettime(int clk, void *ts);"

local function best_of(reps, f)
  f()                                   -- warm-up
  local best = math.huge
  for _ = 1, reps do
    local t0 = now()
    f()
    best = math.min(best, now() - t0)
  end
  return best
end

for _, n in ipairs { 256, 512, 1024 } do
  local a = sao.randn { n, n, seed = 1 }
  local b = sao.randn { n, n, seed = 2 }
  local c = sao.zeros(n, n)
  local flops = 2 * n * n * n
  local reps = n <= 512 and 10 or 4
  local t_sao = best_of(reps, function() local r = sao.matmul(a, b); r:free() end)
  local t_blas = best_of(reps, function()
    blas.cblas_sgemm(101, 111, 111, n, n, n, 1, a:data(), n, b:data(), n, 0, c:data(), n)
  end)
  print(cjson.encode {
    bench = "sgemm", m = n, n = n, k = n, threads = sao.threads(),
    gflops = flops / t_sao / 1e9, openblas_gflops = flops / t_blas / 1e9,
    ratio_to_openblas = t_blas / t_sao,
  })
end
