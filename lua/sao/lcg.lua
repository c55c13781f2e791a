-- sao.lcg — a small deterministic random number generator for material and algorithms that must
-- give the same numbers on every machine (demo songs, segment draws, k-means restarts). Pure Lua,
-- no libsao: a 32-bit LCG (Numerical Recipes constants) whose products stay below 2^53, so doubles
-- are exact. Not for tensors (those use Philox, sao.randn / sao.rand).
--
--   local r = require("sao.lcg").new(7)
--   r:next()  r:uniform(a, b)  r:int(a, b)  r:pick(list)  r:normal()
local M = {}

local Rng = {}
Rng.__index = Rng

--- new(seed = 1) -> generator
function M.new(seed)
  return setmetatable({ x = (math.floor(seed or 1) * 2654435761 + 12345) % 4294967296 }, Rng)
end
function Rng:next()               -- uniform in [0, 1)
  self.x = (1664525 * self.x + 1013904223) % 4294967296
  return self.x / 4294967296
end
function Rng:uniform(a, b) return a + (b - a) * self:next() end
function Rng:int(a, b) return a + math.floor(self:next() * (b - a + 1)) end   -- a..b inclusive
function Rng:pick(list) return list[self:int(1, #list)] end
function Rng:normal()             -- Box-Muller
  local u1, u2 = self:next(), self:next()
  if u1 < 1e-12 then u1 = 1e-12 end
  return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
end

return M
