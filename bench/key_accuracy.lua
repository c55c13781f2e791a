-- bench/key_accuracy.lua — accuracy of sao.analysis.key for both presets (bgate = Essentia
-- KeyExtractor defaults, edma = Essentia's tutorial pipeline), as JSON lines: one per item, then
-- per set and preset a summary with exact key+scale accuracy, the MIREX weighted score (mir_eval
-- convention, fifth above only; and the symmetric one), the relation histogram, accuracy per
-- instrument and the 24x24 confusion matrix (rows = reference, columns = estimate, order C..B
-- major then C..B minor; DSP_SPEC §3.10.6). Target (issue 4): exact >= 0.95.
--   renders:     sao.musicgen.progression songs in all 24 keys x 6 instruments (piano, strings,
--                nylon guitar, organ, e-piano, choir; each with bass and a melody), the
--                progressions of sao.musicgen.progressions in turn, 8 bars at 80-140 BPM,
--                rendered by FluidSynth (FluidR3_GM) at 44.1 kHz;
--   synthesised: sao.musicgen.chords (additive tones, ADSR) in all 24 keys x every progression.
-- Run: ./sao bench/key_accuracy.lua [--seed S (5)] [--quick] [--out DIR]
local sao = require "sao"
local cjson = require "cjson"

local A, G = sao.analysis, sao.musicgen
local NAMES = { [0] = "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B" }
local PRESETS = { "bgate", "edma" }

local seed, quick, out = 5, false, nil
local i = 1
while arg and arg[i] do
  local a = arg[i]
  if a == "--seed" then seed = tonumber(arg[i + 1]); i = i + 1
  elseif a == "--quick" then quick = true
  elseif a == "--out" then out = arg[i + 1]; i = i + 1
  else error("bench/key_accuracy.lua: unknown argument " .. a .. " (--seed S, --quick, --out DIR)") end
  i = i + 1
end
if out then os.execute("mkdir -p '" .. out .. "'") end

local function label(tonic, minor) return NAMES[tonic] .. (minor and " minor" or " major") end
local function index(tonic, minor) return tonic + (minor and 12 or 0) + 1 end

local function new_stats()
  local conf = {}
  for r = 1, 24 do conf[r] = {} for c = 1, 24 do conf[r][c] = 0 end end
  return { n = 0, exact = 0, mirex = 0, mirex_sym = 0, rel = {}, conf = conf, by_inst = {}, strength = 0 }
end

local stats = {}
local function record(set, name, tonic, minor, k, preset, inst)
  local w, rel = A.key_score(k, { tonic = tonic, minor = minor })
  local ws = A.key_score(k, { tonic = tonic, minor = minor }, true)
  local key = set .. "/" .. preset
  local s = stats[key] or new_stats()
  stats[key] = s
  s.n = s.n + 1
  s.mirex = s.mirex + w
  s.mirex_sym = s.mirex_sym + ws
  s.strength = s.strength + (k.strength or 0)
  if rel == "same" then s.exact = s.exact + 1 end
  s.rel[rel] = (s.rel[rel] or 0) + 1
  if k.tonic then
    local c = s.conf[index(tonic, minor)]
    local j = index(k.tonic, k.scale == "minor")
    c[j] = c[j] + 1
  end
  if inst then
    local b = s.by_inst[tostring(inst)] or { n = 0, exact = 0 }
    s.by_inst[tostring(inst)] = b
    b.n = b.n + 1
    if rel == "same" then b.exact = b.exact + 1 end
  end
  print(cjson.encode { bench = "key_accuracy", set = set, preset = preset, name = name, ref = label(tonic, minor),
                       est = k.key and (k.key .. " " .. k.scale) or cjson.null, strength = k.strength,
                       relation = rel, mirex = w, program = inst })
  io.stdout:flush()
end

local function summary(set, t0)
  for _, p in ipairs(PRESETS) do
    local s = stats[set .. "/" .. p]
    if s and s.n > 0 then
      local by = {}
      for k, b in pairs(s.by_inst) do by[k] = b.exact / b.n end
      print(cjson.encode { bench = "key_accuracy", set = set, preset = p, summary = true, n = s.n,
                           exact = s.exact / s.n, mirex_weighted = s.mirex / s.n,
                           mirex_weighted_symmetric = s.mirex_sym / s.n, mean_strength = s.strength / s.n,
                           relations = s.rel, exact_by_program = next(by) and by or nil,
                           target_exact = 0.95, ratio_exact_to_target = s.exact / s.n / 0.95,
                           cpu_s = os.clock() - t0 })
      print(cjson.encode { bench = "key_accuracy", set = set, preset = p, confusion = s.conf,
                           order = "rows reference, columns estimate: C..B major, C..B minor" })
    end
  end
  io.stdout:flush()
end

-- ---- FluidSynth renders ------------------------------------------------------------------------
local t0 = os.clock()
local insts = quick and { 0, 48 } or G.key_instruments
local n = 0
for minor = 0, 1 do
  local progs = G.progressions[minor == 1 and "minor" or "major"]
  for tonic = 0, 11 do
    for ii, prog in ipairs(insts) do
      n = n + 1
      local pi = (tonic + ii) % #progs + 1
      local song = G.progression { tonic = tonic, minor = minor == 1, program = prog, progression = pi,
                                   seed = seed * 1000 + n, bars = 8 }
      local audio = sao.synth.render_mix(song)
      local name = string.format("%s_%s_p%d_prog%d", NAMES[tonic]:gsub("#", "s"), minor == 1 and "minor" or "major",
                                 prog, pi)
      if out then
        sao.midi.write(out .. "/" .. name .. ".mid", song)
        sao.audio.save(out .. "/" .. name .. ".wav", audio, 44100, { subtype = "pcm16" })
      end
      for _, p in ipairs(PRESETS) do
        record("renders", name, tonic, minor == 1, A.key(audio, 44100, { preset = p }), p, prog)
      end
      audio:free()
    end
  end
end
summary("renders", t0)

-- ---- synthesised progressions ---------------------------------------------------------------------
t0 = os.clock()
for minor = 0, 1 do
  local progs = G.progressions[minor == 1 and "minor" or "major"]
  for tonic = 0, 11 do
    for pi = 1, quick and 1 or #progs do
      local a = G.chords { tonic = tonic, minor = minor == 1, progression = pi, seed = seed + tonic, sr = 22050,
                           bpm = 110, bars = 8, partials = 6 }
      local name = string.format("%s_%s_prog%d", NAMES[tonic]:gsub("#", "s"), minor == 1 and "minor" or "major", pi)
      for _, p in ipairs(PRESETS) do
        record("synthesised", name, tonic, minor == 1, A.key(a, 22050, { preset = p }), p)
      end
    end
  end
end
summary("synthesised", t0)
