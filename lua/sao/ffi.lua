-- sao.ffi — loads the C library and its declarations once, and holds the default context.
--
-- The declarations are build/sao_cdef.h: the public headers runtime/include/*.h with their
-- preprocessor lines dropped (the Makefile makes it). The library is build/libsao.so in a source
-- tree, PREFIX/lib/libsao.so when installed; SAO_LIB and SAO_CDEF override both.
local ffi = require "ffi"
-- One library, one set of declarations and one default context per process: a second load (busted
-- reloads modules for every spec file) returns the first instance, whose context the tensor
-- metatype (sao.tensor, also process-wide) reads errors from.
local registry = debug.getregistry()
if registry["sao.ffi"] then return registry["sao.ffi"] end

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/sao/ffi%.lua$") or "./lua"
-- the project root: lua/.. in a source tree, share/sao when installed
local root = (here == "lua") and "." or here:match("^(.*)/lua$") or (here .. "/..")
M.root = root

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function first(cands)
  for i = 1, cands.n do
    local p = cands[i]
    if p and exists(p) then return p end
  end
end

local cdef_path = first { n = 3, os.getenv("SAO_CDEF"), root .. "/build/sao_cdef.h", root .. "/sao_cdef.h" }
local lib_path = first { n = 3, os.getenv("SAO_LIB"), root .. "/build/libsao.so", root .. "/../../lib/libsao.so" }
if not cdef_path or not lib_path then
  error("sao: cannot find " .. (cdef_path and "libsao.so" or "sao_cdef.h") .. " under " .. root ..
        " (run `make` in the source tree, or set SAO_LIB / SAO_CDEF)", 0)
end
M.cdef_path, M.lib_path = cdef_path, lib_path

local f = assert(io.open(cdef_path, "rb"))
local decls = f:read("*a")
f:close()
ffi.cdef(decls)
ffi.cdef [[
typedef struct sao_ref { sao_tensor *p; } sao_ref;
]]

-- Pin the library for the life of the process (RTLD_NODELETE): LuaJIT unloads ffi.load'ed
-- libraries when the state closes, and unloading a library whose OpenMP/OpenBLAS worker threads
-- are still parked crashes the process at exit.
ffi.cdef "void *dlopen(const char *file, int mode);"
-- Idle OpenMP workers must not spin against OpenBLAS's threads (see runtime/main.c); libgomp reads
-- this when the library below loads it. A value already set is kept.
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
ffi.C.setenv("OMP_WAIT_POLICY", "passive", 0)
ffi.C.dlopen(lib_path, 0x2 + 0x100 + 0x1000)   -- RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE
local C = ffi.load(lib_path, true)
M.C = C
M.ctx = ffi.gc(C.sao_ctx_new(), C.sao_ctx_free)

--- Raises the context's last error as a Lua error when rc ~= 0.
function M.check(rc, level)
  if rc ~= 0 then
    local msg = ffi.string(C.sao_ctx_error(M.ctx))
    C.sao_ctx_clear_error(M.ctx)
    error(msg ~= "" and msg or "sao: operation failed", (level or 1) + 1)
  end
  return rc
end

--- Raises the context's last error when ptr is NULL; returns ptr otherwise.
function M.checkp(ptr, level)
  if ptr == nil then
    local msg = ffi.string(C.sao_ctx_error(M.ctx))
    C.sao_ctx_clear_error(M.ctx)
    error(msg ~= "" and msg or "sao: operation failed", (level or 1) + 1)
  end
  return ptr
end

registry["sao.ffi"] = M
return M
