-- bench/audio.lua — analysis throughput on a 3-minute stereo 44.1 kHz file, one thread, as JSON
-- lines: one per step ({"bench":"audio","step":…,"cpu_s":…,"x_realtime_per_core":…}) and a
-- total for load + loudness + features + tempo + key (issue 4: goal >= 100x real time per core).
-- x_realtime_per_core = audio seconds / CPU seconds of this process; the comparator is real time.
-- The file is the spec's drums + pad mixture tiled to 180 s (WAV pcm16 and FLAC) in a temp dir.
-- Run: ./sao bench/audio.lua
local sao = require "sao"
local cjson = require "cjson"
local sig = require "spec.support.signals"

local A, D = sao.audio, sao.dsp
local SECONDS = 180
local threads0 = sao.threads()
sao.threads(1)

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p '" .. dir .. "'")
local unit = sig.mixture(44100, 10)
local parts = {}
for i = 1, SECONDS / 10 do parts[i] = unit end
local song = sao.cat(parts, 2)
A.save(dir .. "/song.wav", song, 44100, { subtype = "pcm16" })
A.save(dir .. "/song.flac", song, 44100)
song:free()

local function step(name, f)
  collectgarbage()
  local c = os.clock()
  local r1, r2 = f()
  local cpu = os.clock() - c
  print(cjson.encode { bench = "audio", step = name, audio_s = SECONDS, cpu_s = cpu,
                       x_realtime_per_core = SECONDS / cpu })
  return r1, r2, cpu
end

local x, sr, t_load = step("load_wav", function() return A.load(dir .. "/song.wav") end)
step("load_flac", function() return A.load(dir .. "/song.flac") end)
local _, _, t_lufs = step("loudness_ebur128", function() return A.loudness(x, sr) end)
step("loudness_pyloudnorm", function() return A.loudness(x, sr, { mode = "pyloudnorm" }) end)
step("resample_22050_best", function() return A.resample(x, sr, 22050) end)
step("resample_22050_fastest", function() return A.resample(x, sr, 22050, "fastest") end)
step("stft_stereo", function() return D.stft(x) end)
step("onset_strength", function() return D.onset_strength(x, sr) end)
step("hpcp_keyextractor", function() return D.hpcp_frames(x, sr, "keyextractor") end)
local _, _, t_feat = step("features", function() return D.features(x, sr) end)
step("features_hp_time_domain", function() return D.features(x, sr, { hp_time_domain = true }) end)

local total = t_load + t_lufs + t_feat
local parts_done = { "load", "loudness", "features" }
if sao.analysis then
  local _, _, t_tempo = step("tempo", function() return sao.analysis.tempo(x, sr) end)
  local _, _, t_key = step("key", function() return sao.analysis.key(x, sr) end)
  total = total + t_tempo + t_key
  parts_done[#parts_done + 1] = "tempo"
  parts_done[#parts_done + 1] = "key"
end
print(cjson.encode { bench = "audio", step = "total", parts = table.concat(parts_done, "+"), audio_s = SECONDS,
                     cpu_s = total, x_realtime_per_core = SECONDS / total, goal_x_per_core = 100,
                     ratio_to_goal = SECONDS / total / 100 })
sao.threads(threads0)
os.execute("rm -rf '" .. dir .. "'")
