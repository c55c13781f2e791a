-- Tensor core: construction, views and strides, broadcasting, reductions, dtype conversion,
-- matmul against a naive loop, RNG reproducibility. Index base is 1 (elements and dims).
local sao = require "sao"
require "spec.support.near"

describe("tensor construction", function()
  it("builds from nested tables and reads back", function()
    local t = sao.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    assert.same({ 2, 3 }, t:shape())
    assert.equal("f32", t:dtype())
    assert.equal(6, t:numel())
    assert.same({ { 1, 2, 3 }, { 4, 5, 6 } }, t:totable())
    assert.equal(6, t[{ 2, 3 }])
    assert.equal(4, t[{ -1, 1 }])
  end)

  it("rejects ragged tables and bad dtypes", function()
    assert.has_error(function() sao.tensor { { 1, 2 }, { 3 } } end)
    assert.error_matches(function() sao.zeros(2, "f99") end, "unknown dtype")
  end)

  it("makes zeros/ones/full/arange of each dtype", function()
    for _, dt in ipairs { "f32", "f64", "bf16", "f16", "i32", "i64", "u8" } do
      local o = sao.ones({ 2, 2 }, dt)
      assert.equal(dt, o:dtype())
      assert.equal(4, o:sum())
      assert.equal(0, sao.zeros({ 3 }, dt):sum())
    end
    assert.same({ 7, 7 }, sao.full({ 2 }, 7):totable())
    assert.same({ 0, 1, 2, 3 }, sao.arange(4):totable())
    assert.same({ 1, 3, 5 }, sao.arange(1, 7, 2):totable())
    assert.equal("i64", sao.arange(3):dtype())
    local f = sao.arange(0, 1, 0.25)
    assert.equal("f32", f:dtype())
    assert.same({ 0, 0.25, 0.5, 0.75 }, f:totable())
  end)

  it("supports up to 8 dims and refuses 9", function()
    local t = sao.zeros(1, 2, 1, 2, 1, 2, 1, 2)
    assert.equal(8, t:dim())
    assert.has_error(function() sao.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end)
  end)

  it("item() and element set", function()
    local t = sao.zeros(2, 2)
    t[{ 1, 2 }] = 5
    assert.equal(5, t[{ 1, 2 }])
    assert.equal(5, t:sum())
    assert.equal(3, sao.tensor { 3 }:item())
    assert.error_matches(function() t:item() end, "4 elements")
    assert.error_matches(function() return t[{ 3, 1 }] end, "out of range")
  end)
end)

describe("views and strides", function()
  it("shares storage between a tensor and its views", function()
    local t = sao.arange(12, "f32"):view(3, 4)
    local v = t:narrow(2, 2, 2)          -- columns 2..3
    assert.same({ 3, 2 }, v:shape())
    assert.same({ 4, 1 }, v:strides())
    assert.same({ { 1, 2 }, { 5, 6 }, { 9, 10 } }, v:totable())
    v:fill_(-1)
    assert.same({ 0, -1, -1, 3 }, t[1]:totable())
    assert.is_false(v:is_contiguous())
  end)

  it("transposes and permutes without copying", function()
    local t = sao.arange(6, "f32"):view(2, 3)
    local tt = t:t()
    assert.same({ 3, 2 }, tt:shape())
    assert.same({ 1, 3 }, tt:strides())
    assert.same({ { 0, 3 }, { 1, 4 }, { 2, 5 } }, tt:totable())
    tt[{ 1, 2 }] = 100
    assert.equal(100, t[{ 2, 1 }])
    local p = sao.arange(24, "f32"):view(2, 3, 4):permute(3, 1, 2)
    assert.same({ 4, 2, 3 }, p:shape())
    assert.equal(13, p[{ 2, 2, 1 }])     -- element [1][0][1] (0-based) of the original
  end)

  it("view needs contiguity; reshape copies when it must", function()
    local t = sao.arange(6, "f32"):view(2, 3):t()
    assert.error_matches(function() t:view(6) end, "not contiguous")
    assert.same({ 0, 3, 1, 4, 2, 5 }, t:reshape(6):totable())
    assert.same({ 2, 3 }, sao.arange(6):view(-1, 3):shape())
  end)

  it("expands with zero strides, select, unsqueeze, squeeze", function()
    local r = sao.tensor { 1, 2, 3 }
    local e = r:expand(2, 3)
    assert.same({ 0, 1 }, e:strides())
    assert.same({ { 1, 2, 3 }, { 1, 2, 3 } }, e:totable())
    assert.same({ 1, 3 }, r:unsqueeze(1):shape())
    assert.same({ 3, 1 }, r:unsqueeze(2):shape())
    assert.same({ 3 }, r:unsqueeze(1):squeeze():shape())
    local m = sao.arange(6, "f32"):view(2, 3)
    assert.same({ 1, 4 }, m:select(2, 2):totable())
    assert.error_matches(function() r:expand(2, 4) end, "cannot be expanded")
  end)

  it("clone and contiguous give independent/packed copies", function()
    local t = sao.arange(6, "f32"):view(2, 3):t()
    local c = t:contiguous()
    assert.is_true(c:is_contiguous())
    assert.same(t:totable(), c:totable())
    local k = t:clone()
    k:fill_(0)
    assert.equal(15, t:sum())
  end)

  it("frees explicitly and reports use after free", function()
    local t = sao.zeros(4)
    local v = t:view(2, 2)
    t:free()
    assert.equal(0, v:sum())             -- the view keeps the storage alive
    assert.error_matches(function() t:sum() end, "after :free")
    t:free()                              -- double free is harmless
  end)
end)

describe("arithmetic with broadcasting", function()
  it("broadcasts rows and columns", function()
    local a = sao.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    local row = sao.tensor { 10, 20, 30 }
    local col = sao.tensor { { 100 }, { 200 } }
    assert.same({ { 11, 22, 33 }, { 14, 25, 36 } }, (a + row):totable())
    assert.same({ { 101, 102, 103 }, { 204, 205, 206 } }, (a + col):totable())
    assert.same({ { 110, 120, 130 }, { 210, 220, 230 } }, (row + col):totable())
    assert.error_matches(function() return a + sao.tensor { 1, 2 } end, "broadcast")
  end)

  it("works on non-contiguous operands and with scalars on either side", function()
    local a = sao.arange(6, "f32"):view(2, 3):t()      -- [[0,3],[1,4],[2,5]]
    assert.same({ { 0, 6 }, { 2, 8 }, { 4, 10 } }, (a * 2):totable())
    assert.same({ { 1, -2 }, { 0, -3 }, { -1, -4 } }, (1 - a):totable())
    assert.same({ { 0, 9 }, { 1, 16 }, { 4, 25 } }, (a ^ 2):totable())
    assert.same({ { -0, -3 }, { -1, -4 }, { -2, -5 } }, (-a):totable())
    assert.same({ { 0, 1.5 }, { 0.5, 2 }, { 1, 2.5 } }, (a / 2):totable())
  end)

  it("promotes dtypes: int/int division is float, f64 wins, comparisons are u8", function()
    local i = sao.tensor({ 1, 2, 3 }, "i32")
    assert.equal("f32", (i / 2):dtype())
    assert.equal("i32", (i + 1):dtype())
    assert.equal("f64", (sao.ones(3) + sao.ones(3, "f64")):dtype())
    local c = sao.tensor { 1, 5, 3 }:gt(2)
    assert.equal("u8", c:dtype())
    assert.same({ 0, 1, 1 }, c:totable())
  end)

  it("unary math matches Lua's math library", function()
    local x = sao.tensor({ -1.5, -0.2, 0, 0.7, 2 }, "f64")
    local ref = {
      exp = math.exp, tanh = math.tanh, sin = math.sin, cos = math.cos, abs = math.abs,
      sigmoid = function(v) return 1 / (1 + math.exp(-v)) end,
      silu = function(v) return v / (1 + math.exp(-v)) end,
      relu = function(v) return math.max(v, 0) end,
      softplus = function(v) return math.log(1 + math.exp(v)) end,
    }
    local xs = x:totable()
    for name, f in pairs(ref) do
      local want = {}
      for k, v in ipairs(xs) do want[k] = f(v) end
      assert.tensor_near(want, x[name](x), { abs = 1e-12, rel = 1e-12 })
    end
  end)
end)

describe("reductions", function()
  local a = sao.tensor { { 1, 5, 3 }, { 4, 2, 6 } }
  it("over everything returns numbers", function()
    assert.equal(21, a:sum())
    assert.equal(3.5, a:mean())
    assert.equal(6, a:max())
    assert.equal(1, a:min())
    assert.equal(6, a:argmax())
  end)
  it("over a dim returns tensors (keepdim optional) and 1-based indices", function()
    assert.same({ 5, 7, 9 }, a:sum(1):totable())
    assert.same({ 3, 4 }, a:mean(2):totable())
    assert.same({ 2, 1 }, a:sum(2, true):shape())
    local v, i = a:max(2)
    assert.same({ 5, 6 }, v:totable())
    assert.same({ 2, 3 }, i:totable())
    local mv, mi = a:min(1)
    assert.same({ 1, 2, 3 }, mv:totable())
    assert.same({ 1, 2, 1 }, mi:totable())
    assert.same({ 9, 12 }, a:sum(-1):totable())
    assert.same({ 2, 3 }, a:argmax(-1):totable())
  end)
  it("reduces non-contiguous views and integer tensors", function()
    local t = a:t()
    assert.same({ 9, 12 }, t:sum(1):totable())
    local i = sao.tensor({ 200, 100 }, "u8")
    assert.equal(300, i:sum())        -- accumulates wider than u8
  end)
  it("propagates NaN through max", function()
    local n = sao.tensor { 1, 0 / 0, 3 }
    assert.is_true(n:max() ~= n:max())
  end)
end)

describe("dtype conversion", function()
  it("rounds f32 to bf16 to nearest even", function()
    -- 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1+2^-7: ties to even -> 1
    -- 1 + 3*2^-8 is halfway between 1+2^-7 and 1+2^-6: ties to even -> 1+2^-6
    local t = sao.tensor({ 1 + 2 ^ -8, 1 + 3 * 2 ^ -8, 1 + 2 ^ -8 + 2 ^ -12, -2.5, 1e30 }, "f64")
    local b = t:to("bf16")
    assert.equal("bf16", b:dtype())
    local back = b:to("f64"):totable()
    assert.equal(1, back[1])
    assert.equal(1 + 2 ^ -6, back[2])
    assert.equal(1 + 2 ^ -7, back[3])
    assert.equal(-2.5, back[4])
    assert.is_true(math.abs(back[5] - 1e30) / 1e30 < 2 ^ -8)
  end)
  it("rounds f32 to f16 including subnormals and overflow", function()
    local t = sao.tensor({ 1 + 2 ^ -11, 65504, 65520, 2 ^ -24, 2 ^ -25, 3 * 2 ^ -25, 0.1 }, "f64")
    local back = t:to("f16"):to("f64"):totable()
    assert.equal(1, back[1])                 -- tie to even
    assert.equal(65504, back[2])
    assert.equal(math.huge, back[3])          -- rounds past the largest half
    assert.equal(2 ^ -24, back[4])            -- smallest subnormal
    assert.equal(0, back[5])                  -- tie to even (0)
    assert.equal(2 ^ -23, back[6])            -- tie to even (2 subnormal units)
    assert.is_true(math.abs(back[7] - 0.1) < 0.1 * 2 ^ -10)
  end)
  it("casts floats to ints by truncation and saturates", function()
    local t = sao.tensor { -1.7, 2.9, 300, -5 }
    assert.same({ -1, 2, 300, -5 }, t:to("i32"):totable())
    assert.same({ 0, 2, 255, 0 }, t:to("u8"):totable())
  end)
  it("copy_ converts and broadcasts", function()
    local d = sao.zeros({ 2, 3 }, "f64")
    d:copy_(sao.tensor({ 1, 2, 3 }, "i32"))
    assert.same({ { 1, 2, 3 }, { 1, 2, 3 } }, d:totable())
  end)
end)

describe("matmul and cat", function()
  local function naive(a, b)
    local A, B = a:totable(), b:totable()
    local out = {}
    for i = 1, #A do
      out[i] = {}
      for j = 1, #B[1] do
        local s = 0
        for k = 1, #B do s = s + A[i][k] * B[k][j] end
        out[i][j] = s
      end
    end
    return out
  end

  it("matches a naive loop on odd sizes, f32 and f64", function()
    for _, dt in ipairs { "f32", "f64" } do
      local a = sao.randn { 17, 33, seed = 1, dtype = dt }
      local b = sao.randn { 33, 9, seed = 2, dtype = dt }
      local c = sao.matmul(a, b)
      assert.same({ 17, 9 }, c:shape())
      -- f32: sums of 33 products of N(0,1): measured max err ~1e-6
      assert.tensor_near(naive(a, b), c, { abs = dt == "f32" and 1e-5 or 1e-12 })
    end
  end)

  it("handles transposed operands, batches with broadcasting, and vectors", function()
    local a = sao.randn { 5, 4, seed = 3 }
    local b = sao.randn { 5, 6, seed = 4 }
    assert.tensor_near(naive(a:t(), b), sao.matmul(a:t(), b), { abs = 1e-5 })
    local x = sao.randn { 3, 2, 4, seed = 5 }
    local w = sao.randn { 4, 7, seed = 6 }
    local y = sao.matmul(x, w)
    assert.same({ 3, 2, 7 }, y:shape())
    assert.tensor_near(naive(x[2], w), y[2], { abs = 1e-5 })
    local v = sao.tensor { 1, 2, 3, 4 }
    assert.same({ 7 }, sao.matmul(v, w):shape())
    assert.same({ 3, 2 }, sao.matmul(x, v):shape())
    assert.error_matches(function() sao.matmul(a, a) end, "inner dimensions differ")
  end)

  it("cat and stack along any dim", function()
    local a, b = sao.tensor { { 1, 2 } }, sao.tensor { { 3, 4 }, { 5, 6 } }
    assert.same({ { 1, 2 }, { 3, 4 }, { 5, 6 } }, sao.cat({ a, b }, 1):totable())
    assert.same({ { 1, 2, 1, 2 } }, sao.cat({ a, a }, 2):totable())
    assert.same({ 2, 1, 2 }, sao.stack({ a, a }, 1):shape())
    assert.error_matches(function() sao.cat({ a, b }, 2) end, "differs in size")
  end)
end)

describe("random numbers (Philox4x32-10)", function()
  it("matches the Philox4x32-10 known-answer vectors", function()
    -- Random123's kat_vectors: counter 0, key 0 and counter all-ones, key all-ones
    local ffi = require "ffi"
    local out = ffi.new("uint32_t[4]")
    sao.C.sao_philox4x32(0, 0, out)
    assert.same({ 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
      { tonumber(out[0]), tonumber(out[1]), tonumber(out[2]), tonumber(out[3]) })
  end)

  it("is reproducible per seed and differs across seeds and offsets", function()
    local a = sao.randn { 1000, seed = 42 }
    local b = sao.randn { 1000, seed = 42 }
    assert.equal(0, a:maxdiff(b))
    assert.is_true(a:maxdiff(sao.randn { 1000, seed = 43 }) > 0.1)
    -- the same seed with offset k starts at element 4k of the offset-0 stream
    local c = sao.randn { 8, seed = 42, offset = 2 }
    assert.equal(0, c:maxdiff(a:narrow(1, 9, 8)))
  end)

  it("does not depend on the thread count", function()
    local n0 = sao.threads()
    sao.threads(1)
    local a = sao.randn { 200000, seed = 7 }
    sao.threads(2)
    local b = sao.randn { 200000, seed = 7 }
    sao.threads(n0)
    assert.equal(0, a:maxdiff(b))
  end)

  it("has the right moments", function()
    local n = sao.randn { 200000, seed = 1, dtype = "f64" }
    assert.is_true(math.abs(n:mean()) < 0.01)
    assert.is_true(math.abs((n * n):mean() - 1) < 0.02)
    local u = sao.rand { 200000, seed = 1, dtype = "f64" }
    assert.is_true(u:min() >= 0 and u:max() < 1)
    assert.is_true(math.abs(u:mean() - 0.5) < 0.01)
  end)
end)

describe("printing", function()
  it("summarises large tensors without dumping them", function()
    local s = tostring(sao.zeros(1000, 1000))
    assert.matches("f32 %[1000,1000%] cpu", s)
    assert.matches("min 0", s)
    assert.is_true(#s < 300)
    assert.matches("%[%[1, 2%]", tostring(sao.tensor { { 1, 2 }, { 3, 4 } }))
  end)
end)

describe("device tensors on the host", function()
  -- A host tensor marked as a device one: if a guard were missing the read would still be safe
  -- here (the data is host memory), so the missing error is what fails the test.
  local function pretend(t, f)
    t:raw().storage.device = 1
    local ok, err = pcall(f, t)
    t:raw().storage.device = 0
    if not ok then error(err, 0) end
  end

  it("refuse every read of their values with what to do; metadata and views still work", function()
    pretend(sao.randn { 3, 4, seed = 1 }, function(t)
      assert.equal("cuda", t:device())
      assert.same({ 3, 4 }, t:shape())
      assert.equal(12, t:numel())
      assert.same({ 4, 3 }, t:transpose(1, 2):shape())
      assert.same({ 12 }, t:view(12):shape())
      assert.matches("sao.Tensor f32 %[3,4%] cuda %(t:to%(\"cpu\"%) to see the values%)", tostring(t))
      local hint = "the tensor is on the GPU: copy it to the host first"
      assert.error_matches(function() return t:sum() end, "tensor:sum: " .. hint)
      assert.error_matches(function() return t:totable() end, "tensor:totable: " .. hint)
      assert.error_matches(function() return t:clone() end, "tensor:clone: " .. hint)
      assert.error_matches(function() return t + 1 end, "tensor arithmetic: a tensor is on the GPU")
      assert.error_matches(function() return 2 * t end, "tensor arithmetic: a tensor is on the GPU")
      assert.error_matches(function() return -t end, "tensor:neg: " .. hint)
      assert.error_matches(function() return t[{ 1, 2 }] end, "tensor:get: " .. hint)
      -- the module-level functions are refused in C
      assert.error_matches(function() return sao.matmul(t, sao.randn { 4, 2, seed = 2 }) end, "matmul: " .. hint)
      assert.error_matches(function() return sao.cat({ t, t }, 1) end, "cat: " .. hint)
      assert.error_matches(function() return t:mean() end, "tensor:mean: " .. hint)
    end)
  end)
end)
