-- repl_spec.lua — the REPL: driven through a pipe (`./sao --repl`), and its pieces (completion,
-- printing, compiling) called directly from Lua.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local repl = require "sao.repl"

local shell = require "support.shell"
local SAO, slurp, write = shell.SAO, shell.slurp, shell.write

-- session(lines, env_prefix) -> exit code, stdout, stderr of `./sao --repl` fed `lines`.
local function session(input, env)
  local inp, out, err, rc = write(os.tmpname(), input), os.tmpname(), os.tmpname(), os.tmpname()
  os.execute(("%s %s --repl <%s >%s 2>%s; echo $? >%s"):format(env or "", SAO, inp, out, err, rc))
  local code = tonumber(slurp(rc):match("%d+"))
  local o, e = slurp(out), slurp(err)
  for _, p in ipairs { inp, out, err, rc } do os.remove(p) end
  return code, o, e
end

describe("REPL session on a pipe", function()
  it("prints expression results, several values, and nothing for statements", function()
    local code, out, err = session('x = 20 + 1\nx * 2\n1, "two", nil, true\nlocal y = 3\n"raw string"\n')
    assert.are.equal(0, code, err)
    assert.are.equal('42\n1\ttwo\tnil\ttrue\nraw string\n', out)
    assert.are.equal("", err)
  end)

  it("suppresses printing when the line ends with ';' but still evaluates it", function()
    local code, out, err = session('t = {}\ntable.insert(t, 5);\n#t;\n#t\n')
    assert.are.equal(0, code, err)
    assert.are.equal("1\n", out)
  end)

  it("continues a chunk over several lines until it is complete", function()
    local code, out, err = session([[
function fact(n)
  if n <= 1 then return 1 end
  return n * fact(n - 1)
end
fact(5)
s = [==[a
b]==]
#s
{
  1,
  2,
}
]])
    assert.are.equal(0, code, err)
    assert.are.equal("120\n3\n{1, 2}\n", out)
  end)

  it("prints tables prettily with nesting", function()
    local code, out, err = session('{a = 1, b = {c = "x"}, 10, 20}\n')
    assert.are.equal(0, code, err)
    assert.are.equal('{10, 20, a = 1, b = {c = "x"}}\n', out)
  end)

  it("prints values with __tostring through it", function()
    local code, out, err = session('setmetatable({}, {__tostring = function() return "Tensor[f32 2x3]" end})\n')
    assert.are.equal(0, code, err)
    assert.are.equal("Tensor[f32 2x3]\n", out)
  end)

  it("reports errors with a short traceback and keeps going", function()
    local code, out, err = session([[
local function inner() error("boom") end inner()
print("still here")
x = = 1
"after syntax error"
error({})
]])
    assert.are.equal(0, code, err)
    assert.are.equal("still here\nafter syntax error\n", out)
    assert.truthy(err:find("stdin:1: boom\nstack traceback:", 1, true), err)
    assert.truthy(err:find("in function 'inner'", 1, true), err)
    assert.falsy(err:find("repl.lua", 1, true), err)                -- the REPL's own frames are cut
    assert.truthy(err:find("stdin:1: unexpected symbol near '='", 1, true), err)
    assert.truthy(err:find("(error object is a table value)", 1, true), err)
  end)

  it("checks function bodies for undeclared globals, not top-level lines", function()
    local code, out, err = session([[
never_defined
function leak() leaked = 1 end
leak()
function readtypo() return no_such_name end
readtypo()
declared_at_top = 5
function use() declared_at_top = declared_at_top + 1 return declared_at_top end
use()
]])
    assert.are.equal(0, code, err)
    assert.are.equal("nil\n6\n", out)
    assert.truthy(err:find("assignment to undeclared global 'leaked'", 1, true), err)
    assert.truthy(err:find("undeclared global 'no_such_name'", 1, true), err)
  end)

  it("accepts =expr as lua 5.1 does", function()
    local _, out = session("=1+1\n")
    assert.are.equal("2\n", out)
  end)

  it("says so when input ends inside an unfinished chunk", function()
    local code, out, err = session("for i = 1, 3 do\n  print(i)\n")
    assert.are.equal(0, code)
    assert.are.equal("", out)
    assert.truthy(err:find("'end' expected", 1, true), err)
  end)

  it("writes history to $SAO_HISTORY and caps it", function()
    local hist = os.tmpname()
    local old = {}
    for i = 1, repl.history_size + 5 do old[i] = "old_" .. i end
    write(hist, table.concat(old, "\n") .. "\n")
    local code, _, err = session("a_first = 1\n\nrepeated = 2\nrepeated = 2\n", "SAO_HISTORY=" .. hist)
    assert.are.equal(0, code, err)
    local lines = {}
    for l in slurp(hist):gmatch("[^\n]+") do lines[#lines + 1] = l end
    os.remove(hist)
    assert.are.equal(repl.history_size, #lines)
    assert.are.equal("repeated = 2", lines[#lines])       -- blank line and repeat not stored
    assert.are.equal("a_first = 1", lines[#lines - 1])
    assert.are.equal("old_" .. (repl.history_size + 5), lines[#lines - 2])
  end)

  it("returns to the prompt after Ctrl-C interrupts a running computation", function()
    local inp, out, err = write(os.tmpname(), 'jit.off() while true do end\nprint("alive")\n'),
                          os.tmpname(), os.tmpname()
    local rc = os.tmpname()
    os.execute(("%s --repl <%s >%s 2>%s & p=$!; sleep 0.3; kill -INT $p; wait $p; echo $? >%s")
               :format(SAO, inp, out, err, rc))
    local o, e, code = slurp(out), slurp(err), tonumber(slurp(rc):match("%d+"))
    for _, p in ipairs { inp, out, err, rc } do os.remove(p) end
    assert.are.equal(0, code, e)
    assert.truthy(e:find("interrupted!", 1, true), e)
    assert.are.equal("alive\n", o)
  end)
end)

describe("REPL pieces", function()
  describe("complete", function()
    local env = {
      print = print, pairs = pairs, pcall = pcall,
      math = math,
      cfg = { alpha = 1, beta = function() end, nested = { deep = true } },
      s = "text",
      obj = setmetatable({ own = 1 }, { __index = { method_a = function() end, field_b = 2 } }),
    }

    it("completes globals and keywords", function()
      assert.are.same({ "pairs(", "pcall(", "print(" }, repl.complete("p", env))
      assert.are.same({ "print(" }, repl.complete("pri", env))
      assert.are.same({ "function" }, repl.complete("func", env))
      assert.are.same({ "local" }, repl.complete("loc", env))
    end)

    it("completes table fields after '.', functions with '('", function()
      assert.are.same({ "cfg.alpha", "cfg.beta(", "cfg.nested" }, repl.complete("cfg.", env))
      assert.are.same({ "cfg.nested.deep" }, repl.complete("cfg.nested.d", env))
      assert.are.same({ "math.floor(" }, repl.complete("math.flo", env))
    end)

    it("completes only methods after ':', through __index tables", function()
      assert.are.same({ "obj:method_a(" }, repl.complete("obj:", env))
      assert.are.same({ "obj.field_b", "obj.method_a(", "obj.own" }, repl.complete("obj.", env))
      assert.are.same({ "s:upper(" }, repl.complete("s:up", env))
    end)

    it("returns nothing for unknown paths and non-identifiers", function()
      assert.are.same({}, repl.complete("nope.x", env))
      assert.are.same({}, repl.complete("cfg.alpha.x", env))
      assert.are.same({}, repl.complete("1.5", env))
    end)

    it("completes ffi cdata methods through require('sao').Tensor", function()
      local ffi = require "ffi"
      ffi.cdef "typedef struct repl_spec_fake { int n; } repl_spec_fake;"
      local methods = { shape = function() end, sum = function() end, numel = function() end }
      local mt = { __index = methods, __tostring = function() return "fake" end }
      local ct = ffi.metatype("repl_spec_fake", mt)
      local saved = package.loaded.sao
      package.loaded.sao = { Tensor = mt }
      local t = ct()
      local ok, got = pcall(repl.complete, "t:s", { t = t })
      local ok2, plain = pcall(repl.complete, "c:", { c = ffi.new("int[2]") })   -- not a tensor
      package.loaded.sao = saved
      assert.is_true(ok, got)
      assert.are.same({ "t:shape(", "t:sum(" }, got)
      assert.is_true(ok2, plain)
      assert.are.same({}, plain)
    end)

    it("is defensive when sao is not loaded or has no Tensor", function()
      local ffi = require "ffi"
      local saved = package.loaded.sao
      package.loaded.sao = nil
      assert.are.same({}, repl.complete("c:", { c = ffi.new("int[2]") }))
      package.loaded.sao = {}
      assert.are.same({}, repl.complete("c:", { c = ffi.new("int[2]") }))
      package.loaded.sao = saved
    end)
  end)

  describe("format", function()
    it("prints arrays, maps and nesting on one line when short", function()
      assert.are.equal('{1, 2, 3}', repl.format({ 1, 2, 3 }))
      assert.are.equal('{[2.5] = "v", ["not ident"] = true, x = 1}',
                       repl.format({ x = 1, ["not ident"] = true, [2.5] = "v" }))
      assert.are.equal('"a\\nb"', repl.format("a\nb"))
      assert.are.equal("{}", repl.format({}))
    end)

    it("limits depth and the number of items", function()
      local deep = { a = { b = { c = { d = 1 } } } }
      assert.are.equal("{a = {b = {c = {...1 entries}}}}", repl.format(deep, { depth = 3 }))
      local big = {}
      for i = 1, 100 do big[i] = i end
      local s = repl.format(big, { items = 5 })
      assert.are.equal("{1, 2, 3, 4, 5, ...(95 more)}", s)
    end)

    it("breaks long tables over lines", function()
      local t = { alpha = string.rep("a", 30), beta = string.rep("b", 30), gamma = string.rep("c", 30) }
      local s = repl.format(t, { width = 60 })
      assert.are.equal('{\n  alpha = "' .. t.alpha .. '",\n  beta = "' .. t.beta .. '",\n  gamma = "' ..
                       t.gamma .. '"\n}', s)
    end)

    it("marks cycles and truncates long strings", function()
      local t = { name = "loop" }
      t.self = t
      assert.truthy(repl.format(t):find('self = <cycle: table: ', 1, true))
      local s = repl.format(string.rep("z", 500), { string_len = 10 })
      assert.are.equal('"zzzzzzzzzz"...(500 bytes)', s)
    end)

    it("uses __tostring and survives one that fails", function()
      local ok = setmetatable({}, { __tostring = function() return "summary" end })
      local bad = setmetatable({}, { __tostring = function() error("nope") end })
      assert.are.equal("{summary}", repl.format({ ok }))
      assert.truthy(repl.format(bad):find("__tostring failed", 1, true))
    end)
  end)

  describe("compile", function()
    it("tells expressions, statements, incomplete chunks and errors apart", function()
      local fn, is_expr = repl.compile("1 + 1")
      assert.are.equal(2, fn())
      assert.is_true(is_expr)
      fn, is_expr = repl.compile("local a = 1")
      assert.is_function(fn)
      assert.is_false(is_expr)
      for _, src in ipairs { "function f()", "t = {", "x =", "--[[ open", "s = [[", "if x then" } do
        local f, _, incomplete = repl.compile(src)
        assert.is_nil(f)
        assert.is_true(incomplete, src)
      end
      local f, msg, incomplete = repl.compile("x = = 1")
      assert.is_nil(f)
      assert.is_false(incomplete)
      assert.truthy(msg:find("unexpected symbol", 1, true))
    end)

    it("keeps the error position of error() called at the prompt", function()
      local fn = repl.compile('error("pos")')
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.are.equal("stdin:1: pos", err)
    end)
  end)
end)
