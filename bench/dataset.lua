-- bench/dataset.lua — throughput of the dataset stage (render + normalise + mix + analyse + cut +
-- write) on the three songs of the built-in demo corpus (3.4 min of music, 16 tracks), serially in
-- this process, as one JSON line:
--   {"bench":"dataset","songs":…,"audio_s":…,"cpu_s":…,"wall_s":…,"x_realtime_per_core":…,
--    "x_realtime":…,"goal_x_per_core":50,"ratio_to_goal":…,"peak_rss_mb":…,"soundfont":…,"steps_s":{…}}
-- x_realtime_per_core = seconds of songs built / CPU seconds of this process (all its threads);
-- the comparator is real time itself, and the goal (issue 5) is 50x per core with the 142 MB GM
-- SoundFont. peak_rss_mb is the process's high-water mark (VmHWM), SoundFont included.
-- Run: ./sao bench/dataset.lua  (SAO_SOUNDFONT=/path/x.sf2 to try another SoundFont)
local sao = require "sao"
local dataset = require "sao.pipeline.dataset"
local progress = require "sao.progress"
local cjson = require "cjson"

local out = os.tmpname()
os.remove(out)
require("sao.pipeline.demo_corpus").write(out .. "/midi")
local wall0, cpu0 = progress.now(), os.clock()
local s = dataset.run { out = out, midi = out .. "/midi", quiet = true, jobs = 1 }
local wall, cpu = progress.now() - wall0, os.clock() - cpu0

local rss
local f = io.open("/proc/self/status", "rb")
if f then
  rss = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
  f:close()
end
local steps = {}
for k, v in pairs(dataset.timings) do steps[k] = math.floor(v * 1000 + 0.5) / 1000 end
print(cjson.encode {
  bench = "dataset", songs = s.built, clips = s.clips, audio_s = s.audio_seconds,
  cpu_s = cpu, wall_s = wall, x_realtime_per_core = s.audio_seconds / cpu,
  x_realtime = s.audio_seconds / wall, goal_x_per_core = 50,
  ratio_to_goal = s.audio_seconds / cpu / 50, peak_rss_mb = rss and rss / 1024 or cjson.null,
  soundfont = require("sao.synth").default_soundfont(), threads = sao.threads(), steps_s = steps,
})
os.execute("rm -rf '" .. out .. "'")
