-- cli_spec.lua — the `sao` command: arguments, the `arg` table, -e/-i/-, stdin scripts, exit
-- codes, error reports, finding the Lua tree from another directory, strict mode, Ctrl-C.
-- Runs ./sao from the repository root (where busted runs).

local shell = require "support.shell"
local ROOT, SAO = shell.ROOT, shell.SAO
local slurp, write, q, sh = shell.slurp, shell.write, shell.q, shell.sh   -- sh: $SAO is ./sao

-- The same with `input` on stdin.
local function sh_in(cmd, input)
  local inp = write(os.tmpname(), input)
  local code, o, e = sh(("%s < %s"):format(cmd, inp))
  os.remove(inp)
  return code, o, e
end

local tmpdir
setup(function()
  tmpdir = os.tmpname()
  os.remove(tmpdir)
  assert(os.execute("mkdir -p " .. tmpdir))
end)
teardown(function() os.execute("rm -rf " .. q(tmpdir)) end)

describe("sao command line", function()
  it("prints its version and the LuaJIT version", function()
    local code, out = sh("$SAO --version")
    assert.are.equal(0, code)
    assert.truthy(out:match("^sao %d+%.%d+%.%d+ %(LuaJIT 2%.%d"), out)
    local code2, out2 = sh("$SAO -v")
    assert.are.equal(0, code2)
    assert.are.equal(out, out2)
  end)

  it("prints usage with --help", function()
    local code, out = sh("$SAO --help")
    assert.are.equal(0, code)
    assert.truthy(out:find("usage: sao", 1, true))
    assert.truthy(out:find("-e code", 1, true))
  end)

  it("rejects an unknown option with exit 1 and usage on stderr", function()
    local code, out, err = sh("$SAO --frobnicate")
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:find("unrecognized option '--frobnicate'", 1, true), err)
    local code2, _, err2 = sh("$SAO -e")
    assert.are.equal(1, code2)
    assert.truthy(err2:find("'-e' needs an argument", 1, true), err2)
  end)

  it("runs a script with the arg table and ... as lua does", function()
    local s = write(tmpdir .. "/args.lua", [[
      print(arg[-1], arg[0], arg[1], arg[2], #arg)
      print(select("#", ...), ...)
    ]])
    local code, out, err = sh("$SAO " .. s .. " one 'two words'")
    assert.are.equal(0, code, err)
    assert.are.equal(SAO .. "\t" .. s .. "\tone\ttwo words\t2\n2\tone\ttwo words\n", out)
  end)

  it("puts interpreter options at negative arg indices", function()
    local s = write(tmpdir .. "/neg.lua", "print(arg[-3], arg[-2], arg[-1], arg[0], arg[1])")
    local code, out, err = sh("$SAO -e 'x=1' " .. s .. " a")
    assert.are.equal(0, code, err)
    assert.are.equal(SAO .. "\t-e\tx=1\t" .. s .. "\ta\n", out)
  end)

  it("runs -e chunks in order, then the script", function()
    local s = write(tmpdir .. "/after.lua", "io.write(tostring(n), '\\n')")
    local code, out, err = sh("$SAO -e 'n = 1' -e 'n = n * 10; io.write(n, \" \")' " .. s)
    assert.are.equal(0, code, err)
    assert.are.equal("10 10\n", out)
  end)

  it("runs -l name as name = require(name)", function()
    local code, out, err
    code, out, err = sh("$SAO -l string -e 'print(string == require(\"string\"))'")
    assert.are.equal(0, code, err)
    assert.are.equal("true\n", out)
  end)

  it("exits with the status given to os.exit", function()
    assert.are.equal(3, (sh("$SAO -e 'os.exit(3)'")))
    assert.are.equal(0, (sh("$SAO -e 'os.exit(true)'")))
    assert.are.equal(0, (sh("$SAO -e 'x = 1'")))
  end)

  it("reports a runtime error with a traceback and exits 1", function()
    local s = write(tmpdir .. "/boom.lua", "local function inner()\n  error('boom')\nend\ninner()\n")
    local code, out, err = sh("$SAO " .. s)
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.truthy(err:find("^sao: " .. s:gsub("%p", "%%%0") .. ":2: boom\n"), err)
    assert.truthy(err:find("stack traceback:", 1, true), err)
    assert.truthy(err:find("in function 'inner'", 1, true), err)
  end)

  it("reports non-string error objects", function()
    local code, _, err = sh("$SAO -e 'error({})'")
    assert.are.equal(1, code)
    assert.truthy(err:find("sao: (error object is a table value)", 1, true), err)
    code, _, err = sh("$SAO -e 'error(setmetatable({}, {__tostring = function() return \"custom\" end}))'")
    assert.are.equal(1, code)
    assert.truthy(err:find("sao: custom", 1, true), err)
  end)

  it("reports a syntax error and exits 1", function()
    local s = write(tmpdir .. "/syntax.lua", "x = = 1\n")
    local code, _, err = sh("$SAO " .. s)
    assert.are.equal(1, code)
    assert.truthy(err:find("sao: " .. s .. ":1: unexpected symbol near '='", 1, true), err)
    code, _, err = sh("$SAO -e 'if'")
    assert.are.equal(1, code)
    assert.truthy(err:find("(command line):1:", 1, true), err)
  end)

  it("says clearly when the script does not exist", function()
    local code, _, err = sh("$SAO " .. tmpdir .. "/missing.lua")
    assert.are.equal(1, code)
    assert.truthy(err:find("sao: cannot open " .. tmpdir .. "/missing.lua", 1, true), err)
  end)

  it("reads the script from stdin with '-', passing the rest as arguments", function()
    local code, out, err = sh_in("$SAO - a b", "print(arg[0], select('#', ...), ...)\n")
    assert.are.equal(0, code, err)
    assert.are.equal("-\t2\ta\tb\n", out)
  end)

  it("runs stdin as a script when it is not a terminal and nothing else is given", function()
    local code, out, err = sh_in("$SAO", "local t = {}\nfor i = 1, 3 do t[i] = i * i end\nprint(table.concat(t, ','))\n")
    assert.are.equal(0, code, err)
    assert.are.equal("1,4,9\n", out)
    code, _, err = sh_in("$SAO", "error('from stdin')\n")
    assert.are.equal(1, code)
    assert.truthy(err:find("sao: stdin:1: from stdin", 1, true), err)
  end)

  it("-i runs the script, then the REPL on the rest of stdin", function()
    local s = write(tmpdir .. "/pre.lua", "answer = 41 + 1\n")
    local code, out, err = sh_in("$SAO -i " .. s, "answer\nanswer * 2\n")
    assert.are.equal(0, code, err)
    assert.are.equal("42\n84\n", out)
  end)

  it("--repl and SAO_REPL=1 force the REPL on a pipe", function()
    local code, out, err = sh_in("$SAO --repl", "1 + 2\n")
    assert.are.equal(0, code, err)
    assert.are.equal("3\n", out)
    code, out, err = sh_in("SAO_REPL=1 $SAO", "'via env'\n")
    assert.are.equal(0, code, err)
    assert.are.equal("via env\n", out)
  end)

  it("finds its Lua tree from another working directory and sets SAO_HOME", function()
    local code, out, err = sh("cd / && $SAO -e 'print(SAO_HOME); print(require(\"sao.strict\") ~= nil)'")
    assert.are.equal(0, code, err)
    assert.are.equal(ROOT .. "\ntrue\n", out)
  end)

  local have_init = io.open(ROOT .. "/lua/sao/init.lua") ~= nil
  local it_init = have_init and it or pending
  it_init("require 'sao' works from another working directory", function()
    local code, out, err = sh("cd / && $SAO -e 'local sao = require \"sao\"; print(type(sao))'")
    assert.are.equal(0, code, err)
    assert.are.equal("table\n", out)
  end)

  it("keeps its own tree first and LUA_PATH after it", function()
    os.execute("mkdir -p " .. tmpdir .. "/lp/sao")
    write(tmpdir .. "/lp/extra_mod.lua", "return 'extra'")
    write(tmpdir .. "/lp/sao/strict.lua", "return 'shadow'")
    local code, out, err = sh(("LUA_PATH='%s/lp/?.lua;;' $SAO -e 'print(require \"extra_mod\", type(require \"sao.strict\"))'")
                              :format(tmpdir))
    assert.are.equal(0, code, err)
    assert.are.equal("extra\ttable\n", out)
  end)

  it("turns Ctrl-C into an 'interrupted!' error in running Lua code", function()
    -- The interpreter (jit.off) reaches the hook; JIT-compiled loops do not (see docs/repl.md).
    local code, out, err = sh("$SAO -e 'jit.off() while true do end' & p=$!; sleep 0.3; kill -INT $p; wait $p")
    assert.are.equal(1, code, out)
    assert.truthy(err:find("interrupted!", 1, true), err)
  end)
end)

describe("sao.strict", function()
  it("rejects undeclared globals inside functions, allows top-level declarations", function()
    local s = write(tmpdir .. "/strict.lua", [[
      require "sao.strict"
      declared = 1                         -- top level: declares
      local function set() declared = 2 end
      set()
      local ok1, e1 = pcall(function() typo_global = 3 end)
      local ok2, e2 = pcall(function() return never_set end)
      local ok3 = pcall(function() return declared end)
      require("sao.strict").declare("later")
      local ok4 = pcall(function() later = 5 end)
      print(declared, ok1, ok2, ok3, ok4, later)
      print(e1)
      print(e2)
    ]])
    local code, out, err = sh("$SAO " .. s)
    assert.are.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("2\tfalse\tfalse\ttrue\ttrue\t5", lines[1])
    assert.truthy(lines[2]:find("assignment to undeclared global 'typo_global'", 1, true), lines[2])
    assert.truthy(lines[3]:find("undeclared global 'never_set'", 1, true), lines[3])
  end)

  it("errors on reading an undeclared global at top level in a script", function()
    local code, _, err = sh("$SAO -e 'require \"sao.strict\"; print(nope)'")
    assert.are.equal(1, code)
    assert.truthy(err:find("undeclared global 'nope'", 1, true), err)
  end)
end)
