-- sao.lora — LoRA adapters on the DiT (runtime/dit_lora.c): add, train (sao.train with
-- cfg.lora), save separately from the base, load with a strength, or merge into the base.
--
--   sao.lora.add(dit, {rank = 16, alpha = 16, targets = "self_attn.to_qkv,cross_attn.to_q", seed = 0})
--   sao.lora.save(dit, "adapters.safetensors")
--   sao.lora.load(dit, "adapters.safetensors", {strength = 0.8, merge = false})
local ffi = require "ffi"
local sao = require "sao"
local models = require "sao.models"
local C = sao.C

local M = {}

local function registry_tensors(p)
  local out = {}
  if p == nil then return out end
  for i = 0, C.sao_params_count(p) - 1 do
    local t = C.sao_params_tensor(p, i)
    out[ffi.string(C.sao_params_name(p, i))] = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_view_of(sao.ctx, t)))
  end
  return out
end

function M.rank(dit) return C.sao_dit_lora_rank(dit.h) end
-- The views follow the adapters to the model's device first (tensors bound from a file included).
function M.params(dit)
  sao.check(C.sao_dit_lora_place(sao.ctx, dit.h), 2)
  return registry_tensors(C.sao_dit_lora_params(dit.h))
end
function M.grads(dit)
  sao.check(C.sao_dit_lora_place(sao.ctx, dit.h), 2)
  return registry_tensors(C.sao_dit_lora_grads(dit.h))
end

--- Adds adapters: A ~ U(-1/sqrt(in), 1/sqrt(in)) from Philox(seed), B = 0 (the model's output is
--- unchanged until training moves B).
function M.add(dit, opts)
  opts = opts or {}
  local rank = opts.rank or 16
  sao.check(C.sao_dit_lora_add(sao.ctx, dit.h, rank, opts.alpha or rank, opts.targets), 2)
  dit.lora = { rank = rank, alpha = opts.alpha or rank, targets = opts.targets }
  local k = 0
  local names = {}
  local ps = M.params(dit)
  for name in pairs(ps) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    if name:match("lora_A") then
      local a = ps[name]
      local bound = 1 / math.sqrt(a:size(2))
      local u = sao.rand { a:shape(), seed = opts.seed or 0, offset = k * 1000003 }
      a:copy_((u * 2 - 1) * bound)
      k = k + 1
    end
  end
  return dit
end

function M.strength(dit, s) sao.check(C.sao_dit_lora_set_strength(sao.ctx, dit.h, s), 2) end

function M.save(dit, path)
  if M.rank(dit) == 0 then error("lora.save: the model has no adapters", 2) end
  local meta = { format = "sao-lora", rank = dit.lora.rank, alpha = dit.lora.alpha, targets = dit.lora.targets or "" }
  return sao.save_safetensors(path, M.params(dit), meta)
end

--- Loads adapters saved by lora.save (adding them to the model first); opts.strength (1) scales
--- them, opts.merge folds them into the base weights (lora.merge).
function M.load(dit, path, opts)
  opts = opts or {}
  local t, meta = sao.load_safetensors(path)
  if not meta or meta.format ~= "sao-lora" then error("lora.load: " .. path .. ": not a sao LoRA file (no format=sao-lora metadata)", 2) end
  if M.rank(dit) == 0 then
    local targets = meta.targets ~= "" and meta.targets or nil
    sao.check(C.sao_dit_lora_add(sao.ctx, dit.h, tonumber(meta.rank), tonumber(meta.alpha), targets), 2)
    dit.lora = { rank = tonumber(meta.rank), alpha = tonumber(meta.alpha), targets = targets }
  end
  models.bind(C.sao_dit_lora_params(dit.h), t, "")
  if opts.strength then M.strength(dit, opts.strength) end
  if opts.merge then M.merge(dit) end
  return dit
end

local SLOTS = { "self_attn.to_qkv", "self_attn.to_out", "cross_attn.to_q", "cross_attn.to_kv", "cross_attn.to_out",
                "ff.ff.0.proj", "ff.ff.2" }

-- Rebinds private copies of the block linears' weights: the tensors the model was loaded from (a
-- checkpoint mapping, a table the caller still uses) are never written by a merge.
local function own_block_weights(dit)
  local p = dit:params()
  for i = 0, C.sao_params_count(p) - 1 do
    local name = ffi.string(C.sao_params_name(p, i))
    local mod = name:match("^transformer%.layers%.%d+%.(.+)%.weight$")
    local t = C.sao_params_tensor(p, i)
    if mod and t ~= nil then
      for _, s in ipairs(SLOTS) do
        if mod == s then
          local own = sao.tensor_from_ptr(sao.checkp(C.sao_tensor_clone(sao.ctx, t)))
          sao.check(C.sao_params_bind(sao.ctx, p, name, own:raw()), 3)
          break
        end
      end
    end
  end
end

--- Folds the adapters into the base weights and removes them. The merged weights are the model's
--- own copies; the tensors it was loaded from are left as they were.
function M.merge(dit)
  if M.rank(dit) == 0 then error("lora.merge: the model has no adapters", 2) end
  dit:sync_host()        -- a model trained on a GPU: its host copies first, so the private copies are current
  own_block_weights(dit)
  sao.check(C.sao_dit_lora_merge(sao.ctx, dit.h), 2)
  dit.lora = nil
end

return M
