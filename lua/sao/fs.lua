-- sao.fs — the small file helpers every stage needs, in one place: shell quoting, existence,
-- whole-file read, atomic write (temporary file in the same folder + rename, so a reader never
-- sees half a file and a killed job leaves the old file intact), mkdir -p, rm -rf, folder listing.
local ffi = require "ffi"

pcall(ffi.cdef, "int getpid(void);")

local M = {}

--- s quoted for /bin/sh.
function M.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.is_dir(path)
  local p = io.popen("test -d " .. M.quote(path) .. " && echo d")
  local r = p:read("*l")
  p:close()
  return r == "d"
end

--- The whole file as a string, or nil and the reason.
function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local counter = 0
--- Writes text to path atomically: PATH.tmp.PID.N, then rename. Errors name the path.
function M.write_atomic(path, text)
  counter = counter + 1
  local tmp = ("%s.tmp.%d.%d"):format(path, tonumber(ffi.C.getpid()), counter)
  local f, err = io.open(tmp, "wb")
  if not f then error("cannot write " .. path .. ": " .. tostring(err), 2) end
  local ok, werr = f:write(text)
  f:close()
  if ok then ok, werr = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    error("cannot write " .. path .. ": " .. tostring(werr), 2)
  end
  return path
end

function M.mkdir_p(path)
  local ok = os.execute("mkdir -p " .. M.quote(path))
  if ok ~= 0 and ok ~= true then error("cannot create folder " .. path, 2) end
end

function M.rm_rf(path) os.execute("rm -rf " .. M.quote(path)) end

--- Names in a folder (not recursive), sorted; {} when it does not exist.
function M.ls(dir)
  local p = io.popen("ls -1 " .. M.quote(dir) .. " 2>/dev/null")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  table.sort(out)
  return out
end

return M
