-- sao.conditioning — SAO's conditioners and how their outputs become the DiT's inputs (SAO_SPEC §4).
--
--   local cond = sao.conditioning
--   local ss = cond.number{output_dim = 768, min_val = 0, max_val = 512}      -- NumberConditioner
--   ss:load(tensors, "conditioner.conditioners.seconds_start.")
--   local e, u = ss:forward{0, 30}             -- e f32 [B, 1, 768] (u: normalised values [B])
--   local cross, global = cond.assemble{prompt_emb = emb, seconds_start = e1, seconds_total = e2}
--                                              -- cross [B, 130, 768], global [B, 1536]
--   local c = cond.new{t5 = t5, seconds_start = ss, seconds_total = st}
--   local cross, global = c:forward{prompt = {"..."}, seconds_start = {0}, seconds_total = {30}}
--
-- Cross-attention tokens are [T5 (128) ; seconds_start (1) ; seconds_total (1)] in that order
-- (cross_attention_cond_ids); the global vector is [seconds_start ; seconds_total] on channels
-- (global_cond_ids) — the same two embeddings. The masks are all ones for the number tokens and are
-- ignored downstream (the DiT uses no cross-attention mask); the CFG null (all-zero cross tokens,
-- same global) is made inside the DiT.
local ffi = require "ffi"
local sao = require "sao"
local models = require "sao.models"
local C = sao.C

local M = {}

--- SAO 1.0's number conditioners (model_config.json).
M.SAO_1_0 = {
  seconds_start = { output_dim = 768, min_val = 0, max_val = 512 },
  seconds_total = { output_dim = 768, min_val = 0, max_val = 512 },
}
M.PREFIX = "conditioner.conditioners."

-- ---- NumberConditioner ------------------------------------------------------------------------
local Number = {}
Number.__index = Number

--- cfg: output_dim, min_val (0), max_val (1), features (256: NumberEmbedder's dim).
function M.number(cfg)
  cfg = cfg or {}
  if type(cfg.output_dim) ~= "number" then error("conditioning.number: output_dim is required", 2) end
  local min_val, max_val = cfg.min_val or 0, cfg.max_val or 1
  local h = sao.checkp(C.sao_number_cond_new(sao.ctx, cfg.output_dim, cfg.features or 256, min_val, max_val), 2)
  return setmetatable({ h = ffi.gc(h, C.sao_number_cond_free), config = cfg, dim = cfg.output_dim,
                        min_val = min_val, max_val = max_val }, Number)
end

function Number:params() return C.sao_number_cond_params(self.h) end
function Number:parameter_count() return tonumber(C.sao_params_numel(self:params())) end
--- Binds the tensors under `prefix` (e.g. "conditioner.conditioners.seconds_total."); strict.
function Number:load(tensors, prefix) return models.bind(self:params(), tensors, prefix or "") end

local function values_of(v, what)
  if type(v) == "number" then v = { v } end
  if sao.is_tensor(v) then v = v:reshape(-1):totable() end
  if type(v) ~= "table" or #v == 0 then error(what .. ": expected a number, a list of numbers or a tensor", 3) end
  local buf = ffi.new("double[?]", #v)
  for i = 1, #v do
    local x = v[i]
    if type(x) == "table" and #x == 1 then x = x[1] end   -- upstream unwraps 1-element lists
    x = tonumber(x)
    if not x then error(what .. ": value #" .. i .. " is not a number", 3) end
    buf[i - 1] = x
  end
  return buf, #v
end

--- values (numbers, seconds) -> e f32 [B, 1, dim], u f32 [B] (clamped, normalised).
function Number:forward(values)
  local buf, B = values_of(values, "number conditioner")
  local e = sao.empty(B, 1, self.dim)
  local u = sao.empty(B)
  sao.check(C.sao_number_cond_forward(sao.ctx, self.h, buf, B, u:data(), e:data()), 2)
  return e, u
end

--- Gradients for a training step: demb [B, 1, dim] (or [B, dim]); grads is a table name -> f32
--- tensor of the parameter's shape (accumulated into; missing entries are skipped).
function Number:backward(values, demb, grads)
  local buf, B = values_of(values, "number conditioner")
  demb = models.f32(demb)
  if demb:numel() ~= B * self.dim then error("number conditioner backward: demb must be [B, 1, dim]", 2) end
  local function p(name) return grads[name] and grads[name]:data() or nil end
  sao.check(C.sao_number_cond_backward(sao.ctx, self.h, buf, B, demb:data(), p("embedder.embedding.0.weights"),
    p("embedder.embedding.1.weight"), p("embedder.embedding.1.bias")), 2)
end

--- For the fixture checker: runs the NumberConditioner of a number_cond-style fixture (params and
--- inputs/values only) -> {outputs/embeds [N,1,dim], outputs/normalized [N], outputs/mask [N,1]}.
function M.fixture_outputs(tensors, manifest)
  local p = {}
  for k, v in pairs(tensors) do
    if not k:find("/", 1, true) then p[k] = v end
  end
  local nc = M.number(manifest.config)
  nc:load(p)
  local e, u = nc:forward(tensors["inputs/values"])
  return { ["outputs/embeds"] = e, ["outputs/normalized"] = u, ["outputs/mask"] = sao.ones(e:size(1), 1) }
end

-- ---- assembly ------------------------------------------------------------------------------------
local function shape_str(t) return "[" .. table.concat(t:shape(), ",") .. "]" end

--- {prompt_emb = [B, L, D], seconds_start = [B, 1, D], seconds_total = [B, 1, D]}
--- -> cross f32 [B, L+2, D], global f32 [B, 2D].
function M.assemble(a)
  local p, s0, s1 = a.prompt_emb, a.seconds_start, a.seconds_total
  if not (sao.is_tensor(p) and sao.is_tensor(s0) and sao.is_tensor(s1)) then
    error("conditioning.assemble: needs tensors prompt_emb, seconds_start and seconds_total", 2)
  end
  if s0:dim() == 2 then s0 = s0:unsqueeze(2) end
  if s1:dim() == 2 then s1 = s1:unsqueeze(2) end
  local ps = p:shape()
  local B, D = ps[1], ps[3]
  for name, t in pairs { seconds_start = s0, seconds_total = s1 } do
    local s = t:shape()
    if #ps ~= 3 or #s ~= 3 or s[1] ~= B or s[2] ~= 1 or s[3] ~= D then
      error(string.format("conditioning.assemble: %s is %s but prompt_emb is %s (want [B, 1, D] with the same B, D)",
        name, shape_str(t), shape_str(p)), 2)
    end
  end
  local cross = sao.cat({ p, s0, s1 }, 2)
  local global = sao.cat({ s0, s1 }, 3):reshape(B, 2 * D)
  return models.f32(cross), models.f32(global)
end

-- ---- the whole conditioner of SAO ------------------------------------------------------------------
local Conditioner = {}
Conditioner.__index = Conditioner

--- {t5 = sao.t5 handle (tokenizer + encoder), seconds_start = number cond, seconds_total = number cond}
function M.new(parts)
  for _, k in ipairs { "t5", "seconds_start", "seconds_total" } do
    if not parts[k] then error("conditioning.new: missing '" .. k .. "'", 2) end
  end
  return setmetatable({ t5 = parts.t5, seconds_start = parts.seconds_start, seconds_total = parts.seconds_total }, Conditioner)
end

--- Builds both number conditioners of SAO 1.0 and loads them from a SAO checkpoint table.
function M.sao_numbers(tensors)
  local ss, st = M.number(M.SAO_1_0.seconds_start), M.number(M.SAO_1_0.seconds_total)
  if tensors then
    ss:load(tensors, M.PREFIX .. "seconds_start.")
    st:load(tensors, M.PREFIX .. "seconds_total.")
  end
  return ss, st
end

--- {prompt = text or list, seconds_start = n or list, seconds_total = n or list}
--- -> cross [B, 130, 768], global [B, 1536], prompt mask i64 [B, 128].
function Conditioner:forward(meta)
  local prompts = type(meta.prompt) == "string" and { meta.prompt } or meta.prompt
  if type(prompts) ~= "table" then error("conditioner: prompt must be a string or a list", 2) end
  local B = #prompts
  local function per_item(v, name)
    if type(v) == "number" then
      local t = {}
      for i = 1, B do t[i] = v end
      return t
    end
    if type(v) ~= "table" or #v ~= B then error("conditioner: " .. name .. " needs one value per prompt", 3) end
    return v
  end
  local emb, mask = self.t5:encode(prompts)
  local e0 = self.seconds_start:forward(per_item(meta.seconds_start or 0, "seconds_start"))
  local e1 = self.seconds_total:forward(per_item(meta.seconds_total, "seconds_total"))
  local cross, global = M.assemble { prompt_emb = emb, seconds_start = e0, seconds_total = e1 }
  emb:free(); e0:free(); e1:free()
  return cross, global, mask
end

return M
