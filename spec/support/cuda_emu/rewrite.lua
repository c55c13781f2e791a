-- rewrite.lua IN.cu OUT.cpp — turns a kernels/cuda file into C++ for the CPU emulation of the CUDA
-- backend (spec/support/cuda_emu): `K<<<cfg>>>(args);` becomes
-- `emu_launch_t(K, emu_config(cfg), args);` (arguments evaluated at the launch, as CUDA copies kernel
-- parameters then) and dynamic shared memory comes from the emulator.
local src = assert(io.open(arg[1], "rb")):read("*a")
src = src:gsub("extern __shared__ float sm%[%];", "float *sm = (float *)emu_dyn_smem();")
src = src:gsub("([%a_][%w_]*)(<?[%w_]*>?)%s*<<<(.-)>>>%s*(%b());", function(k, tpl, cfg, args)
  local inner = args:sub(2, -2):match("^%s*(.-)%s*$")
  return ("emu_launch_t(%s%s, emu_config(%s)%s);"):format(k, tpl, cfg, inner ~= "" and (", " .. inner) or "")
end)
assert(not src:find("<<<", 1, true), arg[1] .. ": a launch the rewrite did not understand")
local f = assert(io.open(arg[2], "wb"))
f:write(src)
f:close()
