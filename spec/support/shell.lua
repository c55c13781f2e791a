-- spec/support/shell.lua — what the specs that drive ./sao and the shell share.
--
--   local shell = require "support.shell"
--   local code, out, err = shell.sh("$SAO -e 'print(1)'")   -- $SAO is ./sao (absolute)
--   local text = shell.capture("ls " .. shell.q(dir))        -- stdout only
--   shell.sleep_ms(50)
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local M = {}

M.ROOT = io.popen("pwd"):read("*l")
M.SAO = M.ROOT .. "/sao"

--- s quoted for /bin/sh.
function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- A new empty directory under the system's temporary folder.
function M.tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. M.q(d)))
  return d
end

--- A file's bytes ("" when it does not exist).
function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- sh(command) -> exit code, stdout, stderr (stdin from /dev/null; $SAO exported).
function M.sh(cmd)
  local out, err, rc = os.tmpname(), os.tmpname(), os.tmpname()
  os.execute(("SAO=%s; export SAO; { %s ; } >%s 2>%s </dev/null; echo $? >%s")
             :format(M.q(M.SAO), cmd, out, err, rc))
  local code = tonumber(M.slurp(rc):match("%d+"))
  local o, e = M.slurp(out), M.slurp(err)
  os.remove(out); os.remove(err); os.remove(rc)
  return code, o, e
end

--- The standard output of a shell line.
function M.capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return s
end

function M.sleep_ms(ms) ffi.C.poll(nil, 0, ms) end

return M
