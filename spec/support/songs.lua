-- spec/support/songs.lua — small MIDI songs for the dataset specs, built as sao.midi tables.
--
--   local songs = require "support.songs"
--   local song = songs.make { bpm = 120, metre = {4, 4}, sections = {
--     { bars = 8, parts = { "piano" } }, { bars = 8, parts = { "piano", "drums", "bass" } } } }
--   sao.midi.write(path, song)
--
-- Parts: "piano" (a C major triad per beat), "bass" (roots on every beat), "drums" (kick, snare,
-- hats), "lead" (a scale run in eighths). Every part plays in every bar of the sections that list
-- it, so instrumentation changes exactly at section starts.
local sao = require "sao"
local shell = require "support.shell"

local M = {}

local PROGRAMS = { piano = 0, bass = 33, lead = 73, drums = 0 }

function M.make(o)
  local bpm = o.bpm or 120
  local num, den = (o.metre or { 4, 4 })[1], (o.metre or { 4, 4 })[2]
  local spb = 60 / bpm * 4 / den                 -- seconds per metre beat
  local song = sao.midi.new { bpm = bpm, time_signature = { num, den }, key = o.key }
  local insts, order = {}, {}
  local function inst(name)
    if not insts[name] then
      insts[name] = { name = name, program = PROGRAMS[name] or 0, is_drum = name == "drums", notes = {} }
      order[#order + 1] = name
    end
    return insts[name].notes
  end
  local bar = 0
  for _, sec in ipairs(o.sections) do
    for _ = 1, sec.bars do
      local t0 = (o.offset or 0) + bar * num * spb
      for _, part in ipairs(sec.parts) do
        local notes = inst(part)
        for b = 0, num - 1 do
          local t = t0 + b * spb
          if part == "piano" then
            for _, p in ipairs { 60, 64, 67 } do notes[#notes + 1] = { start = t, stop = t + spb * 0.9, pitch = p, velocity = 80 } end
          elseif part == "bass" then
            notes[#notes + 1] = { start = t, stop = t + spb * 0.9, pitch = 36, velocity = 100 }
          elseif part == "drums" then
            notes[#notes + 1] = { start = t, stop = t + 0.1, pitch = (b % 2 == 0) and 36 or 38, velocity = 110 }
            notes[#notes + 1] = { start = t, stop = t + 0.1, pitch = 42, velocity = 70 }
          elseif part == "lead" then
            for e = 0, 1 do
              notes[#notes + 1] = { start = t + e * spb / 2, stop = t + (e + 0.9) * spb / 2,
                                    pitch = 72 + ((2 * b + e) % 8), velocity = 90 }
            end
          end
        end
      end
      bar = bar + 1
    end
  end
  for _, name in ipairs(order) do song.instruments[#song.instruments + 1] = insts[name] end
  return song
end

--- Writes a song under dir/rel (folders created); returns the path.
function M.write(dir, rel, song)
  local path = dir .. "/" .. rel
  local folder = path:match("^(.*)/[^/]+$")
  os.execute("mkdir -p '" .. folder:gsub("'", "'\\''") .. "'")
  sao.midi.write(path, song)
  return path
end

--- Writes raw bytes under dir/rel; returns the path.
function M.write_bytes(dir, rel, bytes)
  local path = dir .. "/" .. rel
  assert(os.execute("mkdir -p " .. shell.q(path:match("^(.*)/[^/]+$"))))
  return shell.write(path, bytes)
end

function M.read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

--- A fresh temporary folder.
M.tmpdir = shell.tmpdir

return M
