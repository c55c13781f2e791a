-- sao.tensor — the Lua face of runtime/tensor*.c.
--
-- A tensor is a `sao_ref` cdata (a struct holding one sao_tensor*), given a metatype: methods,
-- operators with broadcasting, 1-based indexing, a finalizer and an explicit :free().
-- Index base: everything a Lua user writes is 1-based, as in Torch7: element indices
-- (t[{1,1}] is the first element), dimensions (t:size(1), t:sum(2)), narrow starts, argmax
-- results. Negative dims count from the end (-1 is the last).
local ffi = require "ffi"
-- The tensor metatype is process-wide (a ctype's metatype is set once), so this module is too: a
-- second load (busted reloads modules for every spec file) returns the instance whose closures the
-- metatype holds, and settings such as M.device_gc_bytes reach the code that reads them.
local registry = debug.getregistry()
if registry["sao.tensor"] then return registry["sao.tensor"] end
local core = require "sao.ffi"
local C, ctx, check, checkp = core.C, core.ctx, core.check, core.checkp

local M = {}
local Tensor = {}          -- methods
M.Tensor = Tensor
local Ref = ffi.typeof("sao_ref")
local i64arr = ffi.typeof("int64_t[?]")

local function wrap(p)
  checkp(p, 3)
  local r = Ref()
  r.p = p
  return r
end
M.wrap = wrap

--- Wraps a sao_tensor* returned by C (raising the ctx error on NULL); the tensor owns it.
function M.from_ptr(p) return wrap(p) end

local function is_tensor(x) return ffi.istype(Ref, x) end
M.is_tensor = is_tensor

local function ptr(t)
  if not is_tensor(t) then error("expected a tensor, got " .. type(t), 3) end
  if t.p == nil then error("tensor used after :free()", 3) end
  return t.p
end
M.ptr = ptr
--- t:raw() is the sao_tensor* to hand to C (errors after :free()).
function Tensor.raw(t) return ptr(t) end

--- arg(t, what) -> the sao_tensor* of an argument of a Lua binding; the error names the argument
--- (what, default "audio") and blames the binding's caller.
function M.arg(t, what)
  if not is_tensor(t) then error((what or "audio") .. " must be a sao tensor, got " .. type(t), 3) end
  return ptr(t)
end

local DT = { f32 = 0, f64 = 1, bf16 = 2, f16 = 3, i32 = 4, i64 = 5, u8 = 6 }
local DTNAME = { [0] = "f32", "f64", "bf16", "f16", "i32", "i64", "u8" }
local function dtype_of(d)
  if d == nil then return 0 end
  if type(d) == "number" then return d end
  local v = C.sao_dtype_from_name(d)
  if v < 0 then error("unknown dtype '" .. tostring(d) .. "' (f32 f64 bf16 f16 i32 i64 u8)", 3) end
  return v
end
M.dtype_of = dtype_of

-- Collects a shape from (n1, n2, ...), ({n1, n2, ...}) or (tensor shape table); returns a Lua list.
local function shape_args(...)
  local a = ...
  if type(a) == "table" then
    local s = {}
    for i = 1, #a do s[i] = a[i] end
    return s, select(2, ...)
  end
  local s, n = {}, select("#", ...)
  local rest
  for i = 1, n do
    local v = select(i, ...)
    if type(v) == "number" then s[#s + 1] = v else rest = i break end
  end
  if rest then return s, select(rest, ...) end
  return s
end

local function c_shape(s)
  local n = #s
  if n > 8 then error("at most 8 dimensions", 3) end
  local a = i64arr(math.max(n, 1))
  for i = 1, n do
    if s[i] ~= math.floor(s[i]) or s[i] < 0 then error("bad size " .. tostring(s[i]) .. " in shape", 3) end
    a[i - 1] = s[i]
  end
  return a, n
end

local function norm_dim(t, d, what)
  local nd = t.p.ndim
  if d < 0 then d = nd + d + 1 end
  if d < 1 or d > nd then
    error(string.format("%s: dim %d out of range for a %d-d tensor", what or "tensor", d, nd), 3)
  end
  return d - 1
end

-- ---- construction ----------------------------------------------------------------------
function M.empty(...)
  local s, dt = shape_args(...)
  local a, n = c_shape(s)
  return wrap(C.sao_tensor_empty(ctx, dtype_of(dt), n, a))
end

function M.zeros(...)
  local s, dt = shape_args(...)
  local a, n = c_shape(s)
  return wrap(C.sao_tensor_new(ctx, dtype_of(dt), n, a))
end

function M.full(shape, value, dt)
  local t = M.empty(shape, dt)
  check(C.sao_tensor_fill_(ctx, t.p, value))
  return t
end

function M.ones(...)
  local s, dt = shape_args(...)
  return M.full(s, 1, dt)
end

--- sao.arange(stop) / (start, stop[, step[, dtype]]): start, start+step, ... < stop.
function M.arange(a, b, step, dt)
  if b == nil or type(b) == "string" then a, b, dt = 0, a, b end
  step = step or 1
  if step == 0 then error("arange: step must not be 0", 2) end
  local n = math.max(0, math.ceil((b - a) / step))
  local t = M.empty({ n }, dt or ((a % 1 == 0 and step % 1 == 0) and "i64" or "f32"))
  local idx = i64arr(1)
  for i = 0, n - 1 do
    idx[0] = i
    C.sao_tensor_set(t.p, idx, a + i * step)
  end
  return t
end

local function nested_shape(tbl, shape, depth)
  shape[depth] = #tbl
  if type(tbl[1]) == "table" then nested_shape(tbl[1], shape, depth + 1) end
  return shape
end

--- sao.tensor(nested_table[, dtype]) copies data; sao.tensor{shape={..}} / sao.tensor(2, 3) make zeros.
function M.tensor(x, ...)
  if is_tensor(x) then return x:clone() end
  if type(x) == "number" then return M.zeros(x, ...) end
  if type(x) ~= "table" then error("sao.tensor: expected a table, a shape or a tensor", 2) end
  if x.shape then return M.zeros(x.shape, x.dtype or (...)) end
  local dt = ...
  local shape = #x == 0 and { 0 } or nested_shape(x, {}, 1)
  local t = M.empty(shape, dt)
  local flat = ffi.new("double[?]", math.max(1, t:numel()))
  local k = 0
  local function walk(v, depth)
    if depth > #shape then
      if type(v) ~= "number" and type(v) ~= "boolean" then error("sao.tensor: non-number element", 4) end
      flat[k] = (v == true and 1) or (v == false and 0) or v
      k = k + 1
      return
    end
    if type(v) ~= "table" or #v ~= shape[depth] then
      error("sao.tensor: ragged nested table (dimension " .. depth .. ")", 4)
    end
    for i = 1, #v do walk(v[i], depth + 1) end
  end
  walk(x, 1)
  -- write through an f64 staging tensor so the dtype conversion is C's
  local a, n = c_shape(shape)
  local st = wrap(C.sao_tensor_wrap(ctx, flat, ffi.sizeof(flat), 1, n, a, nil, nil))
  check(C.sao_tensor_copy_(ctx, t.p, st.p))
  st:free()
  return t
end

local function rand_fill(opts, normal, name)
  if type(opts) ~= "table" then error(name .. ": expected {shape..., seed=, offset=, dtype=, device=}", 3) end
  local shape = type(opts[1]) == "table" and opts[1] or opts.shape
  if not shape then
    shape = {}
    for i = 1, #opts do shape[i] = opts[i] end
  end
  local t = M.empty_on(opts.device, shape, opts.dtype)
  local seed = opts.seed or 0
  check(C.sao_rand_fill(ctx, t.p, seed, opts.offset or 0, normal and 1 or 0))
  return t
end
--- sao.randn{2, 3, seed=1} or sao.randn{{2,3}, seed=1, offset=0, dtype="f32"}: standard normal.
--- device = "cuda" makes it on the GPU (f32; the same values as on the host).
function M.randn(opts) return rand_fill(opts, true, "randn") end
--- sao.rand{...}: uniform in [0, 1).
function M.rand(opts) return rand_fill(opts, false, "rand") end

-- ---- inspection ------------------------------------------------------------------------
function Tensor:dim() return ptr(self).ndim end
function Tensor:shape()
  local p, s = ptr(self), {}
  for i = 0, p.ndim - 1 do s[i + 1] = tonumber(p.shape[i]) end
  return s
end
function Tensor:strides()
  local p, s = ptr(self), {}
  for i = 0, p.ndim - 1 do s[i + 1] = tonumber(p.stride[i]) end
  return s
end
function Tensor:size(d)
  if d == nil then return self:shape() end
  return tonumber(ptr(self).shape[norm_dim(self, d, "size")])
end
function Tensor:dtype() return DTNAME[ptr(self).dtype] end
function Tensor:device() return ptr(self).storage.device == 1 and "cuda" or "cpu" end
--- The CUDA device number holding a device tensor (asks the driver); nil for a host tensor.
function Tensor:device_index()
  local p = ptr(self)
  if p.storage.device ~= 1 then return nil end
  local d = C.sao_cuda_tensor_device(ctx, p)
  if d < 0 then check(d, 2) end
  return d
end
function Tensor:numel() return tonumber(C.sao_tensor_numel(ptr(self))) end
function Tensor:is_contiguous() return C.sao_tensor_is_contiguous(ptr(self)) == 1 end
--- Raw pointer to element 1, typed by dtype (float*, double*, ...); valid while the tensor lives.
local CTYPE = { [0] = "float*", "double*", "uint16_t*", "uint16_t*", "int32_t*", "int64_t*", "uint8_t*" }
function Tensor:data() return ffi.cast(CTYPE[ptr(self).dtype], C.sao_tensor_data(self.p)) end

function Tensor:totable()
  local p = ptr(self)
  local n = self:numel()
  local buf = ffi.new("double[?]", math.max(1, n))
  check(C.sao_tensor_to_doubles(ctx, p, buf))
  if p.ndim == 0 then return buf[0] end
  local shape = self:shape()
  local k = 0
  local function build(d)
    local out = {}
    if d == #shape then
      for i = 1, shape[d] do out[i] = buf[k]; k = k + 1 end
    else
      for i = 1, shape[d] do out[i] = build(d + 1) end
    end
    return out
  end
  return build(1)
end

function Tensor:item()
  if self:numel() ~= 1 then error("item: tensor has " .. self:numel() .. " elements, not 1", 2) end
  local buf = ffi.new("double[1]")
  check(C.sao_tensor_to_doubles(ctx, ptr(self), buf))
  return buf[0]
end

-- ---- element access: t[{i, j}] (1-based); t[i] selects along the first dim ------------------
local function index_of(t, idx)
  local p = ptr(t)
  if #idx ~= p.ndim then error(string.format("index has %d entries for a %d-d tensor", #idx, p.ndim), 3) end
  local a = i64arr(math.max(1, p.ndim))
  for d = 1, p.ndim do
    local i, n = idx[d], tonumber(p.shape[d - 1])
    if type(i) ~= "number" or i % 1 ~= 0 then error("index entries must be integers", 3) end
    if i < 0 then i = n + i + 1 end
    if i < 1 or i > n then error(string.format("index %d out of range 1..%d at dimension %d", idx[d], n, d), 3) end
    a[d - 1] = i - 1
  end
  return a
end

function Tensor:get(idx) return C.sao_tensor_get(ptr(self), index_of(self, idx)) end
function Tensor:set(idx, v) C.sao_tensor_set(ptr(self), index_of(self, idx), v) return self end

function Tensor:select(d, i)
  local dd = norm_dim(self, d, "select")
  local n = tonumber(self.p.shape[dd])
  if i < 0 then i = n + i + 1 end
  if i < 1 or i > n then error(string.format("select: index %d out of range 1..%d", i, n), 2) end
  return wrap(C.sao_tensor_select(ctx, self.p, dd, i - 1))
end

-- ---- views -----------------------------------------------------------------------------
function Tensor:view(...)
  local s = shape_args(...)
  local n, known, infer = self:numel(), 1, nil
  for i = 1, #s do
    if s[i] == -1 then infer = i else known = known * s[i] end
  end
  if infer then s[infer] = known > 0 and n / known or 0 end
  local a, nd = c_shape(s)
  return wrap(C.sao_tensor_view(ctx, ptr(self), nd, a))
end

function Tensor:contiguous() return wrap(C.sao_tensor_contiguous(ctx, ptr(self))) end
function Tensor:reshape(...)
  local c = self:contiguous()
  local v = c:view(...)
  c:free()
  return v
end

function Tensor:permute(...)
  local dims = shape_args(...)
  local nd = ptr(self).ndim
  if #dims ~= nd then error("permute: need " .. nd .. " dims, got " .. #dims, 2) end
  local a = ffi.new("int[8]")
  for i = 1, nd do a[i - 1] = norm_dim(self, dims[i], "permute") end
  return wrap(C.sao_tensor_permute(ctx, self.p, a))
end

function Tensor:transpose(d1, d2)
  local nd = ptr(self).ndim
  d1, d2 = d1 or 1, d2 or 2
  local perm = {}
  for i = 1, nd do perm[i] = i end
  local a, b = norm_dim(self, d1, "transpose") + 1, norm_dim(self, d2, "transpose") + 1
  perm[a], perm[b] = perm[b], perm[a]
  return self:permute(perm)
end
Tensor.t = function(self) return self:transpose(1, 2) end

function Tensor:narrow(d, start, len)
  local dd = norm_dim(self, d, "narrow")
  return wrap(C.sao_tensor_narrow(ctx, self.p, dd, start - 1, len))
end

function Tensor:expand(...)
  local s = shape_args(...)
  local cur = self:shape()
  for i = 1, #s do
    if s[i] == -1 then s[i] = cur[i - (#s - #cur)] end
  end
  local a, n = c_shape(s)
  return wrap(C.sao_tensor_expand(ctx, ptr(self), n, a))
end
function Tensor:expand_as(o) return self:expand(o:shape()) end

function Tensor:unsqueeze(d)
  local s = self:shape()
  local nd = #s
  if d < 0 then d = nd + d + 2 end
  table.insert(s, d, 1)
  return self:reshape(s)
end

function Tensor:squeeze(d)
  local s, out = self:shape(), {}
  local dd = d and (norm_dim(self, d, "squeeze") + 1)
  for i = 1, #s do
    if not (s[i] == 1 and (dd == nil or dd == i)) then out[#out + 1] = s[i] end
  end
  return self:reshape(out)
end

-- ---- copies ----------------------------------------------------------------------------
function Tensor:clone() return wrap(C.sao_tensor_clone(ctx, ptr(self))) end
function Tensor:copy_(src)
  check(C.sao_tensor_copy_(ctx, ptr(self), ptr(src)))
  return self
end
function Tensor:fill_(v)
  check(C.sao_tensor_fill_(ctx, ptr(self), v))
  return self
end
function Tensor:zero_() return self:fill_(0) end

-- Device memory and the Lua GC: a device tensor is a small cdata to the collector, however much
-- GPU memory it holds, so garbage device tensors could pile up until the device is full. Every
-- device copy made here counts its bytes; past M.device_gc_bytes (1 GiB by default) since the
-- last collection, a full collection runs first (frees the unreachable ones: their blocks go back
-- to the caching allocator). A copy that fails for lack of device memory collects and tries once
-- more.
M.device_gc_bytes = 2 ^ 30
local device_bytes_since_gc = 0

-- make() returns a new device tensor of `bytes` (NULL on failure, the reason in ctx).
local function device_alloc(bytes, make)
  device_bytes_since_gc = device_bytes_since_gc + bytes
  if device_bytes_since_gc > M.device_gc_bytes then
    device_bytes_since_gc = 0
    collectgarbage("collect")
  end
  local p = make()
  if p == nil and ffi.string(C.sao_ctx_error(ctx)):lower():match("out of memory") then
    device_bytes_since_gc = 0
    collectgarbage("collect")
    p = make()
  end
  return wrap(p)
end

local function to_device(self, dev)
  return device_alloc(self:numel() * tonumber(C.sao_dtype_size(ptr(self).dtype)),
    function() return C.sao_tensor_to_cuda(ctx, ptr(self), dev) end)
end

--- sao.empty_on(device, shape[, dtype]): an uninitialised contiguous tensor on `device` ("cpu",
--- "cuda" or "cuda:N"; "cpu" is sao.empty). Device tensors made this way count towards the GC
--- nudge above, as copies do.
function M.empty_on(device, shape, dt)
  if device == nil or device == "cpu" then return M.empty(shape, dt) end
  local dev = type(device) == "string" and device:match("^cuda:?(%d*)$")
  if not dev then error("device '" .. tostring(device) .. "': expected \"cpu\", \"cuda\" or \"cuda:N\"", 2) end
  if C.sao_cuda_device_count() == 0 then
    local why = C.sao_cuda_unavailable()
    error("device '" .. device .. "': " .. (why ~= nil and ffi.string(why) or
      "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"), 2)
  end
  local a, n = c_shape(shape)
  local code = dtype_of(dt)
  local numel = 1
  for i = 1, #shape do numel = numel * shape[i] end
  return device_alloc(numel * tonumber(C.sao_dtype_size(code)),
    function() return C.sao_tensor_empty_cuda(ctx, code, n, a, tonumber(dev) or 0) end)
end

--- t:to("f64") converts dtype; t:to("cuda") / t:to("cuda:1") copies to a device (an error naming
--- the cause in a CPU-only build or without a GPU); t:to("cpu") copies back (a view when on the CPU).
function Tensor:to(what)
  if what == "cpu" then
    if ptr(self).storage.device == 0 then return wrap(C.sao_tensor_view_of(ctx, self.p)) end
    return wrap(C.sao_tensor_to_cpu(ctx, self.p))
  end
  local dev = type(what) == "string" and what:match("^cuda:?(%d*)$")
  if dev then return to_device(self, tonumber(dev) or 0) end
  return wrap(C.sao_tensor_to_dtype(ctx, ptr(self), dtype_of(what)))
end
function Tensor:float() return self:to("f32") end
function Tensor:double() return self:to("f64") end

function Tensor:free()
  if self.p ~= nil then
    C.sao_tensor_free(self.p)
    self.p = nil
  end
end

-- ---- math --------------------------------------------------------------------------------
local BIN = { add = 0, sub = 1, mul = 2, div = 3, pow = 4, maximum = 5, minimum = 6,
              eq = 7, lt = 8, le = 9, gt = 10, ge = 11 }
local function binary(op, a, b)
  for _, t in ipairs { a, b } do
    if is_tensor(t) and ptr(t).storage.device ~= 0 then
      error("tensor arithmetic: a tensor is on the GPU: copy it to the host first (t:to(\"cpu\"))", 3)
    end
  end
  if is_tensor(a) and is_tensor(b) then return wrap(C.sao_binary(ctx, op, ptr(a), ptr(b))) end
  if is_tensor(a) and type(b) == "number" then return wrap(C.sao_binary_scalar(ctx, op, ptr(a), b, 0)) end
  if type(a) == "number" and is_tensor(b) then return wrap(C.sao_binary_scalar(ctx, op, ptr(b), a, 1)) end
  error("tensor arithmetic needs tensors or numbers, got " .. type(a) .. " and " .. type(b), 3)
end
for name, op in pairs(BIN) do
  Tensor[name] = function(a, b) return binary(op, a, b) end
end

local UN = { neg = 0, abs = 1, exp = 2, log = 3, sqrt = 4, tanh = 5, sigmoid = 6, silu = 7, gelu = 8,
             sin = 9, cos = 10, relu = 11, softplus = 12, square = 13, rsqrt = 14 }
for name, op in pairs(UN) do
  Tensor[name] = function(a) return wrap(C.sao_unary(ctx, op, ptr(a))) end
end

local function reduce(op, name)
  return function(self, d, keepdim)
    if d == nil then
      local r = wrap(C.sao_reduce(ctx, op, ptr(self), -1, 0))
      local v = r:item()
      r:free()
      return v
    end
    local dd = norm_dim(self, d, name)
    local r = wrap(C.sao_reduce(ctx, op, self.p, dd, keepdim and 1 or 0))
    if op == 2 or op == 3 then     -- max/min with a dim also return 1-based indices
      local idx = wrap(C.sao_reduce(ctx, op + 2, self.p, dd, keepdim and 1 or 0))
      local one = binary(0, idx, 1)
      idx:free()
      return r, one
    end
    return r
  end
end
Tensor.sum = reduce(0, "sum")
Tensor.mean = reduce(1, "mean")
Tensor.max = reduce(2, "max")
Tensor.min = reduce(3, "min")
function Tensor:argmax(d)
  if d == nil then
    local r = wrap(C.sao_reduce(ctx, 4, ptr(self), -1, 0))
    local v = r:item() + 1
    r:free()
    return v
  end
  local idx = wrap(C.sao_reduce(ctx, 4, ptr(self), norm_dim(self, d, "argmax"), 0))
  return binary(0, idx, 1)
end

function M.matmul(a, b) return wrap(C.sao_matmul(ctx, ptr(a), ptr(b))) end
Tensor.matmul = M.matmul

function M.cat(list, d)
  d = d or 1
  local n = #list
  if n == 0 then error("cat: empty list", 2) end
  local arr = ffi.new("sao_tensor*[?]", n)
  for i = 1, n do arr[i - 1] = ptr(list[i]) end
  return wrap(C.sao_cat(ctx, arr, n, norm_dim(list[1], d, "cat")))
end

function M.stack(list, d)
  d = d or 1
  local us = {}
  for i = 1, #list do us[i] = list[i]:unsqueeze(d) end
  local r = M.cat(us, d)
  for i = 1, #us do us[i]:free() end
  return r
end

--- Maximum absolute difference between two tensors of the same shape (a number).
function Tensor:maxdiff(o)
  local d = binary(1, self, o)
  local a = d:abs()
  local v = a:max()
  d:free(); a:free()
  return v
end

-- ---- printing ------------------------------------------------------------------------------
local function fmt(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
  return string.format("%.6g", v)
end

function Tensor:summary()
  local p = ptr(self)
  local s = self:shape()
  local head = string.format("sao.Tensor %s [%s] %s", self:dtype(), table.concat(s, ","), self:device())
  local n = self:numel()
  if n == 0 then return head .. " (empty)" end
  local st = ffi.new("double[4]")
  check(C.sao_tensor_summary(ctx, p, st))
  local line = string.format("%s  min %s  max %s  mean %s", head, fmt(st[0]), fmt(st[1]), fmt(st[2]))
  if st[3] > 0 then line = line .. string.format("  nan %d", st[3]) end
  -- first elements, in row-major order, never the whole of a large tensor
  local k = math.min(n, 8)
  local flat = self:reshape(n)
  local first = flat:narrow(1, 1, k)
  local buf = ffi.new("double[?]", k)
  check(C.sao_tensor_to_doubles(ctx, first.p, buf))
  first:free(); flat:free()
  local parts = {}
  for i = 0, k - 1 do parts[#parts + 1] = fmt(buf[i]) end
  return line .. "\n  [" .. table.concat(parts, ", ") .. (n > k and ", ...]" or "]")
end

local function small_tostring(self)
  local s = self:shape()
  if #s == 0 then return fmt(self:item()) end
  local tbl = self:totable()
  local function render(v, depth)
    if type(v) == "number" then return fmt(v) end
    local parts = {}
    for i = 1, #v do parts[i] = render(v[i], depth + 1) end
    local sep = (type(v[1]) == "table") and (",\n" .. string.rep(" ", depth + 1)) or ", "
    return "[" .. table.concat(parts, sep) .. "]"
  end
  return render(tbl, 0)
end

-- A device tensor's data cannot be read on the host: every method that would (arithmetic,
-- reductions, printing the values, get/set, host copies) answers with an error saying what to do
-- instead of crashing. These work on a device tensor: metadata, views, the transfers and copy_.
local ON_DEVICE = {}
for k in ("dim shape strides size dtype device numel is_contiguous data raw to free copy_ fill_ zero_ device_index view select permute " ..
          "transpose narrow expand expand_as unsqueeze squeeze"):gmatch("%S+") do ON_DEVICE[k] = true end
local function on_device(k)
  return function()
    error("tensor:" .. k .. ": the tensor is on the GPU: copy it to the host first (t:to(\"cpu\"))", 2)
  end
end

local mt = {
  __index = function(self, k)
    local m = Tensor[k]
    if m then
      local p = self.p
      if p ~= nil and p.storage.device ~= 0 and not ON_DEVICE[k] then return on_device(k) end
      return m
    end
    if type(k) == "number" then
      if self.p.ndim == 1 then return self:get({ k }) end
      return self:select(1, k)
    end
    if type(k) == "table" then return self:get(k) end
    return nil
  end,
  __newindex = function(self, k, v)
    if type(k) == "table" then self:set(k, v) return end
    if type(k) == "number" and self.p.ndim == 1 then self:set({ k }, v) return end
    if type(k) == "number" then
      local s = self:select(1, k)
      if is_tensor(v) then s:copy_(v) else s:fill_(v) end
      s:free()
      return
    end
    error("cannot set field '" .. tostring(k) .. "' on a tensor", 2)
  end,
  __tostring = function(self)
    if self.p == nil then return "sao.Tensor (freed)" end
    if self.p.storage.device ~= 0 then
      return string.format("sao.Tensor %s [%s] cuda (t:to(\"cpu\") to see the values)", self:dtype(),
        table.concat(self:shape(), ","))
    end
    if self:numel() <= 64 then
      local s = self:shape()
      return string.format("sao.Tensor %s [%s]\n%s", self:dtype(), table.concat(s, ","), small_tostring(self))
    end
    return self:summary()
  end,
  __len = function(self) return self.p.ndim > 0 and tonumber(self.p.shape[0]) or 0 end,
  __add = function(a, b) return binary(0, a, b) end,
  __sub = function(a, b) return binary(1, a, b) end,
  __mul = function(a, b) return binary(2, a, b) end,
  __div = function(a, b) return binary(3, a, b) end,
  __pow = function(a, b) return binary(4, a, b) end,
  __unm = function(a) return a:neg() end,
  __gc = function(self)
    if self.p ~= nil then C.sao_tensor_free(self.p) end
  end,
}
ffi.metatype(Ref, mt)
M.metatable = mt

registry["sao.tensor"] = M
return M
