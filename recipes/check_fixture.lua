-- recipes/check_fixture.lua — compare sao with an upstream parity fixture.
--
--   sao recipes/check_fixture.lua [--device cuda|cuda:N] FILE.safetensors [FILE2.safetensors ...]
--
-- Reads each fixture and its JSON manifest (same stem), runs the matching sao module on the stored
-- parameters and inputs (on that GPU with --device: the DiT, VAE, T5, trainer and optimiser run
-- there), and prints one JSON line per stored output:
--   {"fixture":…, "name":…, "max_abs":…, "max_rel":…, "tol_abs":…, "tol_rel":…, "ok":true|false}
-- Exit status 1 if any output is out of tolerance (or a fixture cannot be run), else 0.
local cjson = require "cjson"
local fixtures = require "sao.fixtures"

local files, device = {}, nil
local i = 1
while i <= #arg do
  if arg[i] == "--device" then
    device = arg[i + 1]
    if not device then io.stderr:write("check_fixture: --device needs a value (cuda, cuda:N or cpu)\n") os.exit(2) end
    i = i + 2
  else
    files[#files + 1] = arg[i]
    i = i + 1
  end
end
if #files == 0 then
  io.stderr:write("usage: sao recipes/check_fixture.lua [--device cuda|cuda:N] FILE.safetensors [...]\n")
  os.exit(2)
end
local bad = 0
for _, path in ipairs(files) do
  local ok, rows, all = pcall(fixtures.check, path, { device = device })
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
