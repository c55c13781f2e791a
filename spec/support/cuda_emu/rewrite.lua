-- rewrite.lua IN.cu OUT.cpp — turns a kernels/cuda file into C++ for the CPU emulation of the CUDA
-- backend (spec/support/cuda_emu): `K<<<cfg>>>(args);` becomes
-- `emu_launch_t(K, emu_config(cfg), args);` (arguments evaluated at the launch, as CUDA copies kernel
-- parameters then); dynamic shared memory comes from the emulator, and so does every static
-- `__shared__ T a[..], b[..];` array: `auto &a = *(T (*)[..])emu_static_smem("FILE:a:N", sizeof(T[..]));`,
-- one region per declaration and block, NaN-filled when the block starts (as a GPU's shared memory
-- holds garbage, not the previous block's values).
local src = assert(io.open(arg[1], "rb")):read("*a")
local file = arg[1]:match("([^/]+)$")
src = src:gsub("extern __shared__ float sm%[%];", "float *sm = (float *)emu_dyn_smem();")
local site = 0
src = src:gsub("__shared__%s+([%a_][%w_ ]-)%s+([%a_][%w_]*%s*%[[^;]*);", function(ty, decls)
  local out = {}
  for d in (decls .. ","):gmatch("%s*([^,]-)%s*,") do
    local name, dims = d:match("^([%a_][%w_]*)%s*(%[.*%])$")
    assert(name, arg[1] .. ": a __shared__ declaration the rewrite did not understand: " .. d)
    site = site + 1
    out[#out + 1] = ('auto &%s = *(%s (*)%s)emu_static_smem("%s:%s:%d", sizeof(%s%s));'):format(
      name, ty, dims, file, name, site, ty, dims)
  end
  return table.concat(out, " ")
end)
assert(not src:find("__shared__%s+[%a_]"), arg[1] .. ": a __shared__ declaration the rewrite did not understand")
src = src:gsub("([%a_][%w_]*)(<?[%w_]*>?)%s*<<<(.-)>>>%s*(%b());", function(k, tpl, cfg, args)
  local inner = args:sub(2, -2):match("^%s*(.-)%s*$")
  return ("emu_launch_t(%s%s, emu_config(%s)%s);"):format(k, tpl, cfg, inner ~= "" and (", " .. inner) or "")
end)
assert(not src:find("<<<", 1, true), arg[1] .. ": a launch the rewrite did not understand")
local f = assert(io.open(arg[2], "wb"))
f:write(src)
f:close()
