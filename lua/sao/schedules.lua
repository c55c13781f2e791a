-- sao.schedules — learning-rate schedules as plain Lua functions `function(step, cfg) -> lr`.
-- `step` is the 0-based count of optimiser steps already taken (the step about to run), `cfg` the
-- optimiser config table (cfg.lr is the base rate). A schedule can be swapped while training runs:
-- the trainer calls whatever function its config holds at each step (see sao.train).
local M = {}

--- SAO's InverseLR (stable-audio-tools training/utils.py):
--- lr = base (1 - warmup^(n+1)) (1 + n/inv_gamma)^(-power), floored at final_lr.
function M.inverse_lr(opts)
  opts = opts or {}
  local inv_gamma, power, warmup = opts.inv_gamma or 1e6, opts.power or 0.5, opts.warmup or 0.99
  local final = opts.final_lr or 0
  return function(n, cfg)
    local lr = cfg.lr * (1 - warmup ^ (n + 1)) * (1 + n / inv_gamma) ^ (-power)
    return math.max(lr, final)
  end
end

function M.constant() return function(_, cfg) return cfg.lr end end

--- Linear warm-up over `warmup` steps, then cosine decay to `min_lr` at `total` steps.
function M.cosine(opts)
  local warm, total, min_lr = opts.warmup or 0, assert(opts.total, "cosine: total steps needed"), opts.min_lr or 0
  return function(n, cfg)
    if n < warm then return cfg.lr * (n + 1) / warm end
    local p = math.min(1, (n - warm) / math.max(1, total - warm))
    return min_lr + (cfg.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
  end
end

--- Linear warm-up over `warmup` steps, then constant.
function M.warmup(opts)
  local warm = opts.warmup or 100
  return function(n, cfg) return cfg.lr * math.min(1, (n + 1) / warm) end
end

--- A schedule by name with options, or a function as it is.
function M.resolve(s)
  if type(s) == "function" then return s end
  if s == nil then return M.inverse_lr() end
  if type(s) == "string" then
    local f = M[s:gsub("%-", "_")]
    if not f or s == "resolve" or s == "load_file" then error("unknown schedule '" .. s .. "'", 2) end
    return f({})
  end
  if type(s) == "table" and s.name then
    local f = M[s.name:gsub("%-", "_")]
    if not f then error("unknown schedule '" .. s.name .. "'", 2) end
    return f(s)
  end
  error("schedule must be a function, a name or {name=, ...}", 2)
end

--- Loads a schedule file: a Lua chunk returning a function(step, cfg) (or a name/table accepted
--- by resolve). Errors name the file.
function M.load_file(path)
  local chunk, err = loadfile(path)
  if not chunk then error("schedule file " .. path .. ": " .. err, 2) end
  local ok, v = pcall(chunk)
  if not ok then error("schedule file " .. path .. ": " .. tostring(v), 2) end
  local ok2, f = pcall(M.resolve, v)
  if not ok2 then error("schedule file " .. path .. ": " .. tostring(f), 2) end
  return f
end

return M
