-- sao.data — training data loaders. A loader has :next() -> batch, :state() -> a plain table and
-- :set_state(t), so a checkpoint can record where it was and a resumed run continues from there.
--
-- sao.data.memory(items, {batch=, seed=, shuffle=true}): items are tables of same-shaped tensors (e.g.
-- {latents=[io,T], cross=[L,Dc], global=[Dg]}); a batch stacks `batch` of them along a new first
-- dimension. Each epoch visits every item once in an order drawn from Philox(seed, epoch), so the
-- order is the same on every machine and restartable at any position.
local sao = require "sao"

local M = {}

--- sao.data.midi — the instrumental dataset's building blocks under one name (docs/dataset.md):
--- read/parse/write (sao.midi; song.instruments is the pretty_midi split), render/render_song/
--- render_mix (sao.synth), clips (sao.clips.plan), ingest (sao.corpus.ingest: the seed's
--- de-duplication) and build (sao.pipeline.dataset.run: the whole stage). Loaded on first use.
local MIDI_API = {
  read = { "sao.midi", "read" }, parse = { "sao.midi", "parse" }, write = { "sao.midi", "write" },
  bars = { "sao.midi", "bars" }, render = { "sao.synth", "render_instrument" },
  render_song = { "sao.synth", "render_song" }, render_mix = { "sao.synth", "render_mix" },
  clips = { "sao.clips", "plan" }, ingest = { "sao.corpus", "ingest" }, build = { "sao.pipeline.dataset", "run" },
}
M.midi = setmetatable({}, { __index = function(t, k)
  local where = MIDI_API[k]
  if not where then error("sao.data.midi has no '" .. tostring(k) .. "'", 2) end
  local f = require(where[1])[where[2]]
  rawset(t, k, f)
  return f
end })
local Memory = {}
Memory.__index = Memory

local function permutation(n, seed, epoch, shuffle)
  if shuffle == false then
    local idx = {}
    for i = 1, n do idx[i] = i end
    return idx
  end
  local keys = sao.rand { { n }, seed = seed, offset = epoch * (math.ceil(n / 4) + 1), dtype = "f64" }:totable()
  local idx = {}
  for i = 1, n do idx[i] = i end
  table.sort(idx, function(a, b)
    if keys[a] ~= keys[b] then return keys[a] < keys[b] end
    return a < b
  end)
  return idx
end
M.permutation = permutation

function M.memory(items, opts)
  opts = opts or {}
  if #items == 0 then error("data.memory: no items", 2) end
  local self = setmetatable({ items = items, batch = opts.batch or 1, seed = opts.seed or 0, epoch = 0, pos = 0,
    shuffle = opts.shuffle }, Memory)
  self.order = permutation(#items, self.seed, 0, self.shuffle)
  return self
end

function Memory:next()
  local picked = {}
  for i = 1, self.batch do
    if self.pos >= #self.items then
      self.epoch = self.epoch + 1
      self.pos = 0
      self.order = permutation(#self.items, self.seed, self.epoch, self.shuffle)
    end
    self.pos = self.pos + 1
    picked[i] = self.items[self.order[self.pos]]
  end
  local out = {}
  for k, v in pairs(picked[1]) do
    if sao.is_tensor(v) then
      local list = {}
      for i = 1, #picked do list[i] = picked[i][k] end
      out[k] = sao.stack(list, 1)
    else
      local list = {}
      for i = 1, #picked do list[i] = picked[i][k] end
      out[k] = list
    end
  end
  return out
end

function Memory:state() return { epoch = self.epoch, pos = self.pos } end
function Memory:set_state(s)
  self.epoch, self.pos = s.epoch, s.pos
  self.order = permutation(#self.items, self.seed, self.epoch, self.shuffle)
end

return M
