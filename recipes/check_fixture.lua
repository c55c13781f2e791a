-- recipes/check_fixture.lua — compare sao with an upstream parity fixture.
--
--   sao recipes/check_fixture.lua FILE.safetensors [FILE2.safetensors ...]
--
-- Reads each fixture and its JSON manifest (same stem), runs the matching sao module on the stored
-- parameters and inputs, and prints one JSON line per stored output:
--   {"fixture":…, "name":…, "max_abs":…, "max_rel":…, "tol_abs":…, "tol_rel":…, "ok":true|false}
-- Exit status 1 if any output is out of tolerance (or a fixture cannot be run), else 0.
local cjson = require "cjson"
local fixtures = require "sao.fixtures"

if #arg == 0 then
  io.stderr:write("usage: sao recipes/check_fixture.lua FILE.safetensors [...]\n")
  os.exit(2)
end
local bad = 0
for _, path in ipairs(arg) do
  local ok, rows, all = pcall(fixtures.check, path)
  if not ok then
    print(cjson.encode { fixture = path, ok = false, error = tostring(rows) })
    bad = bad + 1
  else
    for _, r in ipairs(rows) do
      r.fixture = path
      print(cjson.encode(r))
    end
    if not all then bad = bad + 1 end
  end
end
os.exit(bad == 0 and 0 or 1)
