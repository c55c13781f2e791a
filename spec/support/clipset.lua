-- spec/support/clipset.lua — a tiny dataset in the dataset stage's layout, for the encode / train /
-- sample / eval specs: OUT/dataset/clips/<Artist>/<Song>/<clip>.{wav,json} with a "prompt".
--
--   local clipset = require "support.clipset"
--   local out = clipset.tmpdir()
--   clipset.write(out, "Band/Song/Song_01", { seconds = 2, bpm = 120, key = "A", mode = "Minor" })
local sao = require "sao"
local cjson = require "cjson"

local M = {}

M.tmpdir = require("support.shell").tmpdir

--- A stereo test signal: a tone at `hz` plus a click every beat at `bpm` (f32 [2, S]).
function M.signal(seconds, o)
  o = o or {}
  local sr = 44100
  local n = math.floor(seconds * sr)
  local hz, bpm = o.hz or 220, o.bpm or 120
  local period = math.floor(60 / bpm * sr + 0.5)
  local buf = {}
  for i = 0, n - 1 do
    local v = 0.2 * math.sin(2 * math.pi * hz * i / sr)
    local k = i % period
    if k < 400 then v = v + 0.6 * math.exp(-k / 60) * ((i * 7919) % 13 / 6.5 - 1) end
    buf[i + 1] = v
  end
  return sao.tensor({ buf, buf })
end

--- Writes clips/<rel>.wav and .json under out/dataset. o: seconds, bpm, key, mode, prompt
--- (false: none), hz. Returns the WAV path.
function M.write(out, rel, o)
  o = o or {}
  local base = out .. "/dataset/clips/" .. rel
  os.execute("mkdir -p '" .. base:match("^(.*)/") .. "'")
  local wav = base .. ".wav"
  sao.audio.save(wav, M.signal(o.seconds or 2, o), 44100)
  local meta = { Song = rel:match("([^/]+)/[^/]+$"), Artist = rel:match("^([^/]+)"), Tags = {},
    Instruments = { "Piano" }, tempo = o.bpm or 120, key = o.key or "A", mode = o.mode or "Minor",
    duration = o.seconds or 2 }
  if o.prompt ~= false then
    meta.prompt = o.prompt or string.format("Calm piano in the key of %s %s at %d BPM", meta.key, meta.mode, meta.tempo)
  end
  local f = assert(io.open(base .. ".json", "wb"))
  f:write(cjson.encode(meta))
  f:close()
  return wav
end

function M.set_prompt(out, rel, prompt)
  local path = out .. "/dataset/clips/" .. rel .. ".json"
  local f = assert(io.open(path, "rb"))
  local meta = cjson.decode(f:read("*a"))
  f:close()
  meta.prompt = prompt
  f = assert(io.open(path, "wb"))
  f:write(cjson.encode(meta))
  f:close()
end

--- The standard small set: three 2-3 s clips of two songs, a corrupt WAV, a clip without prompt.
function M.standard(out)
  M.write(out, "Band/Alpha/Alpha_01", { seconds = 2, bpm = 120, key = "A", mode = "Minor" })
  M.write(out, "Band/Alpha/Alpha_02", { seconds = 3, bpm = 120, key = "C", mode = "Major", hz = 262 })
  M.write(out, "Other/Beta/Beta_01", { seconds = 0.5, bpm = 90, key = "G", mode = "Major", hz = 196 })
  -- a corrupt WAV with a prompt: reported and skipped
  local base = out .. "/dataset/clips/Other/Broken/Broken_01"
  os.execute("mkdir -p '" .. base:match("^(.*)/") .. "'")
  local f = assert(io.open(base .. ".wav", "wb")); f:write("RIFF\0\0\0\0WAVEjunk"); f:close()
  f = assert(io.open(base .. ".json", "wb"))
  f:write(cjson.encode { Song = "Broken", Artist = "Other", Tags = {}, tempo = 100, prompt = "broken" })
  f:close()
  -- no prompt yet: listed, not encoded
  M.write(out, "Other/Gamma/Gamma_01", { seconds = 1, prompt = false })
end

return M
