-- sao.fixtures — runs sao's modules on an upstream parity fixture (../shared/fixtures layout:
-- NAME.safetensors + NAME.json manifest) and compares every stored output with the manifest's
-- tolerances. The computed values come only from the fixture's parameters and inputs/*; a stored
-- output is read only as the reference it is compared with.
local cjson = require "cjson"
local sao = require "sao"

local M = {}

--- The parameters of a fixture's tensors: every name without a '/' (inputs/*, outputs/*, grads/*
--- ... left out).
local function params_of(t)
  local p = {}
  for k, v in pairs(t) do
    if not k:find("/", 1, true) then p[k] = v end
  end
  return p
end

M.params = params_of

-- the fixture named by params_from (same directory), for fixtures that reuse the DiT's params
local function sibling(path, manifest)
  local from = manifest.params_from and manifest.params_from:match("^([%w_%.]+%.safetensors)")
  if not from then return nil end
  local dir = path:match("^(.*)/[^/]*$") or "."
  return sao.load_safetensors(dir .. "/" .. from)
end

--- A DiT of a fixture manifest's config (no weights yet).
local function new_dit(cfg)
  return sao.dit.new { io_channels = cfg.io_channels, embed_dim = cfg.embed_dim, depth = cfg.depth,
    num_heads = cfg.num_heads, cond_token_dim = cfg.cond_token_dim, global_cond_dim = cfg.global_cond_dim }
end
M.new_dit = new_dit

local runners = {}

runners.dit_tiny = function(t, man, _, _, dev)
  local dit = new_dit(man.config)
  dit:load(params_of(t))
  if dev then dit:to(dev) end
  local x, tt, cross, g = t["inputs/x"], t["inputs/t"], t["inputs/cross_attn_cond"], t["inputs/global_cond"]
  local out, hidden = dit:forward(x, tt, cross, g, { cfg_scale = 1, hidden = true })
  local r = { ["outputs/out_cfg1"] = out }
  for i = 1, man.config.depth do r["outputs/hidden_layer" .. (i - 1)] = hidden[i] end
  r["outputs/out_cfg7"] = dit:forward(x, tt, cross, g, { cfg_scale = 7 })
  r["outputs/out_uncond"] = dit:forward(x, tt, sao.zeros(cross:shape()), g, { cfg_scale = 1 })
  local B, E = x:size(1), man.config.embed_dim
  local te, ge = sao.empty(B, E), sao.empty(B, E)
  sao.check(sao.C.sao_dit_token(sao.ctx, dit.h, sao.models.f32(tt):data(), sao.models.f32(g):data(), B, te:data(), ge:data()))
  r["outputs/timestep_embed"], r["outputs/global_embed"], r["outputs/prepend_token"] = te, ge, te + ge
  return r
end

local function sampler_runner(name)
  return function(t, man, path, _, dev)
    local cfg = man.config
    local dit = new_dit(cfg.dit_config)
    dit:load(params_of(sibling(path, man)))
    if dev then dit:to(dev) end
    local cross, g = t["inputs/cross_attn_cond"], t["inputs/global_cond"]
    local r = {}
    r["outputs/final"] = sao.sampler.sample {
      model = function(x, tv) return dit:forward(x, sao.full({ x:size(1) }, tv), cross, g, { cfg_scale = cfg.cfg_scale }) end,
      noise = t["inputs/noise"], steps = cfg.steps, sigma_min = cfg.sigma_min, sigma_max = cfg.sigma_max,
      rho = cfg.rho, sampler = name,
      step_noise = function(i) return t["inputs/step_noise_" .. i]:clone() end,
      callback = function(i, x, den) r["outputs/x_" .. i] = x:clone(); r["outputs/denoised_" .. i] = den:clone() end,
    }
    r["outputs/sigmas"] = sao.tensor(sao.sampler.sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho))
    return r
  end
end
runners.sampler_dpmpp3msde = sampler_runner("dpmpp-3m-sde")
runners.sampler_dpmpp2msde = sampler_runner("dpmpp-2m-sde")
runners.sampler_euler = sampler_runner("euler")

runners.train_step_vobjective = function(t, man, path, _, dev)
  local cfg = man.config
  local dit = new_dit(cfg)
  dit:load(params_of(sibling(path, man)))
  if dev then dit:to(dev) end   -- the trainer's arenas and gradients then live there too
  local x0 = t["inputs/x0"]
  local cross = t["inputs/cross_attn_cond"]
  local tr = sao.dit_train.new(dit, { batch = x0:size(1), frames = x0:size(3), context = cross:size(2) })
  local tt = t["inputs/t"]
  local loss, out, v, xt, dx = tr:vloss(x0, t["inputs/noise"], tt, cross, t["inputs/global_cond"], { dx = true })
  local a, s = {}, {}
  for i, tv in ipairs(tt:totable()) do a[i] = math.cos(tv * math.pi / 2); s[i] = math.sin(tv * math.pi / 2) end
  local r = { ["outputs/loss"] = sao.tensor { loss }, ["outputs/model_out"] = out, ["outputs/v_target"] = v,
    ["outputs/x_noised"] = xt, ["outputs/alphas"] = sao.tensor(a), ["outputs/sigmas"] = sao.tensor(s), ["grads/x"] = dx }
  for name, g in pairs(tr:host_grads()) do r["grads/" .. name] = g end
  return r
end

runners.train_step_vobjective_update = function(t, man, path, names, dev)
  local function place(x) return dev and x:to(dev) or x end
  local p0 = params_of(sibling(path, man))
  local dir = path:match("^(.*)/[^/]*$") or "."
  local gfx = sao.load_safetensors(dir .. "/train_step_vobjective.safetensors")
  local params, grads = {}, {}
  for _, k in ipairs(names) do
    local name = k:match("^updated/(.*)$")
    if name then params[name] = place(p0[name]:clone()); grads[name] = place(gfx["grads/" .. name]) end
  end
  local a = man.adamw
  local before = {}   -- the weights before the step, as host tensors
  for k in pairs(params) do before[k] = p0[k]:clone() end
  sao.optim.adamw(params, grads, { lr = a.lr, betas = a.betas, eps = a.eps, weight_decay = a.weight_decay }, dev):step()
  local r = {}
  for k, v in pairs(params) do r["updated/" .. k] = v end
  local decay = t["inputs/ema_decay"]:item()
  for _, k in ipairs(names) do
    local name = k:match("^ema/(.*)$")
    if name then
      local e = place(before[name]:clone())
      sao.check(sao.optim.kernel(e, "ema_update")(sao.ctx, e:data(), params[name]:data(), e:numel(), decay))
      r[k] = e
    end
  end
  return r
end

runners.oobleck_tiny = function(t, man, _, _, dev) return sao.vae.fixture_outputs(t, man, dev) end
runners.t5_encoder_tiny = function(t, man, _, _, dev) return sao.t5.fixture_outputs(t, man, dev) end
-- the number conditioner (two small linears) has no device path: it runs on the host either way
runners.number_cond = function(t, man) return sao.conditioning.fixture_outputs(t, man) end

--- The tolerance entry for an output: exact name, then a wildcard ("outputs/x_*"), else nil.
local function tolerance(man, name)
  local tol = man.tolerances or {}
  if tol[name] then return tol[name] end
  for pat, v in pairs(tol) do
    if pat:find("*", 1, true) then
      local lua_pat = "^" .. pat:gsub("[%-%.%+%[%]%(%)%$%^%%%?]", "%%%0"):gsub("%*", ".*") .. "$"
      if name:match(lua_pat) then return v end
    end
  end
end

-- max |a-b| and max |a-b| / max(|b|, 1e-3 max|b|) (the fixtures' README definition)
local function errors(got, want)
  local d = (got:to("f64") - want:to("f64")):abs()
  local max_abs = d:max()
  local wabs = want:to("f64"):abs()
  local floor = 1e-3 * wabs:max()
  local denom = wabs:maximum(floor > 0 and floor or 1e-30)
  local max_rel = (d / denom):max()
  return max_abs, max_rel
end

--- Checks one fixture file. Returns a list of {name, max_abs, max_rel, ok, tol_abs, tol_rel} and
--- whether everything passed. Outputs without a tolerance of their own are checked against the
--- README's floors (abs 1e-5, rel 1e-4) scaled like their closest named sibling when one exists.
--- opts.device ("cuda", "cuda:N"): the models (DiT, VAE, T5, the trainer, the optimiser's
--- tensors) run there, the fixture's inputs and outputs stay host tensors.
function M.check(path, opts)
  local dev = opts and opts.device
  if dev == "cpu" then dev = nil end
  local jpath = path:gsub("%.safetensors$", "") .. ".json"
  local f = io.open(jpath, "rb")
  if not f then error("check_fixture: " .. jpath .. ": manifest not found (it must sit beside the .safetensors)", 2) end
  local man = cjson.decode(f:read("*a"))
  f:close()
  local kind = man.fixture or path:match("([^/]+)%.safetensors$")
  local run = runners[kind]
  if not run then error("check_fixture: " .. path .. ": no sao runner for fixture '" .. tostring(kind) .. "'", 2) end
  local t = sao.load_safetensors(path)
  -- hand the runner everything but the stored outputs, so it cannot read them by mistake
  local inputs = {}
  for k, v in pairs(t) do
    if not (k:match("^outputs/") or k:match("^grads/") or k:match("^updated/") or k:match("^ema/")) then inputs[k] = v end
  end
  local names = {}
  for k in pairs(t) do
    if k:match("^outputs/") or k:match("^grads/") or k:match("^updated/") or k:match("^ema/") then names[#names + 1] = k end
  end
  table.sort(names)
  local got = run(inputs, man, path, names, dev)   -- names only: the stored values stay unread
  local rows, all_ok = {}, true
  for _, name in ipairs(names) do
    local want, g = t[name], got[name]
    if g and g:device() ~= "cpu" then g = g:to("cpu") end
    local row = { name = name, device = dev }
    if not g then
      row.ok, row.error = false, "not produced"
    else
      local tol = tolerance(man, name) or tolerance(man, name:gsub("_long$", ""))
        or tolerance(man, (name:gsub("sao_cond_tokens", "last_hidden_state"))) or { max_abs = 1e-5, max_rel = 1e-4 }
      if want:numel() ~= g:numel() then
        row.ok, row.error = false, "shape " .. table.concat(g:shape(), "x") .. " vs " .. table.concat(want:shape(), "x")
      else
        local flat_g = g:reshape(want:shape())
        row.max_abs, row.max_rel = errors(flat_g, want)
        row.tol_abs, row.tol_rel = tol.max_abs, tol.max_rel
        row.ok = row.max_abs <= tol.max_abs and (tol.max_rel == nil or tol.max_rel == cjson.null or row.max_rel <= tol.max_rel)
      end
    end
    all_ok = all_ok and row.ok
    rows[#rows + 1] = row
  end
  return rows, all_ok
end

return M
