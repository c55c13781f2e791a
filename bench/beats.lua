-- bench/beats.lua — throughput of the trap recipe's data stages on its four demo beats (4.4 min of
-- audio): the dataset stage (decode, silence bounds, beat tracking, segment planning, per-segment
-- tempo and key, write) and the tag stage's audio-features tagger, serially in this process, as
-- one JSON line per stage:
--   {"bench":"beats_dataset"|"beats_tag","audio_s":…,"cpu_s":…,"wall_s":…,"x_realtime_per_core":…,
--    "x_realtime":…,"ratio_to_realtime":…}
-- The comparator is real time itself (seconds of audio per CPU second); a corpus of 20 000 beats
-- of about 3 min is 1000 h of audio, which this figure turns into core-hours.
-- Run: ./sao bench/beats.lua   (the demo beats are rendered first, outside the timing)
local sao = require "sao"
local progress = require "sao.progress"
local cjson = require "cjson"

local out = os.tmpname()
os.remove(out)
local demo = require("sao.pipeline.demo_beats").write(out .. "/beats", { quiet = true })
local audio_s = 0
for _, b in ipairs(demo) do audio_s = audio_s + b.seconds end

local function timed(name, f, seconds)
  local wall0, cpu0 = progress.now(), os.clock()
  local r = f()
  local wall, cpu = progress.now() - wall0, os.clock() - cpu0
  print(cjson.encode { bench = name, audio_s = seconds, cpu_s = cpu, wall_s = wall,
    x_realtime_per_core = seconds / cpu, x_realtime = seconds / wall, ratio_to_realtime = seconds / wall,
    threads = sao.threads() })
  return r
end

local s = timed("beats_dataset", function()
  return require("sao.pipeline.beats").run { out = out, beats = out .. "/beats", jobs = 1, quiet = true }
end, audio_s)
timed("beats_tag", function()
  return require("sao.pipeline.tag").run { out = out, tagger = "features", tag_clusters = 0, quiet = true }
end, s.clip_seconds)
os.execute("rm -rf '" .. out .. "'")
