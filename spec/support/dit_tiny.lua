-- spec/support/dit_tiny.lua — the dit_tiny fixture (spec/fixtures/dit_tiny.*: upstream's
-- DiffusionTransformer at a tiny config, its weights and one set of inputs), loaded once for the
-- specs that run the DiT:
--
--   local tiny = require "support.dit_tiny"
--   tiny.config, tiny.params          -- the model config (sao's field names), the weights by name
--   tiny.x, tiny.t, tiny.cross, tiny.global   -- the fixture's inputs
--   tiny.fx, tiny.man                 -- every tensor of the fixture file (references too), its manifest
--   tiny.new_dit([params])            -- a new model with these (or the given) weights loaded
local sao = require "sao"
local fixtures = require "sao.fixtures"

local man = require("cjson").decode(io.open("spec/fixtures/dit_tiny.json"):read("*a"))
local fx = sao.load_safetensors("spec/fixtures/dit_tiny.safetensors")
local M = {
  man = man, config = man.config, fx = fx, params = fixtures.params(fx),
  x = fx["inputs/x"], t = fx["inputs/t"], cross = fx["inputs/cross_attn_cond"], global = fx["inputs/global_cond"],
}

function M.new_dit(params)
  local d = fixtures.new_dit(M.config)
  d:load(params or M.params)
  return d
end

return M
