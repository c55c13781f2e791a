-- spec/support/signals.lua — deterministic test signals for the audio and DSP specs.
--
-- Every generator returns an f32 tensor [C, S]. Noise comes from xorshift32 (seeded), so the
-- same call always gives the same samples; spec/fixtures/analysis_refs.json holds librosa /
-- pyloudnorm numbers computed from exactly these signals (written to WAV by
-- `luajit spec/support/signals.lua DIR` and read by spec/fixtures/analysis_refs.py).
local bit = require "bit"
local sao = require "sao"

local M = {}

--- xorshift32 generator: returns a function giving uniform numbers in [-1, 1).
function M.rng(seed)
  local s = bit.tobit(seed or 2463534242)
  return function()
    s = bit.bxor(s, bit.lshift(s, 13))
    s = bit.bxor(s, bit.rshift(s, 17))
    s = bit.bxor(s, bit.lshift(s, 5))
    local u = s % 4294967296                      -- as unsigned
    return u / 2147483648 - 1
  end
end

--- A [C, S] tensor filled by f(c, i) with c, i 0-based.
function M.make(channels, n, f)
  local t = sao.zeros(channels, n)
  local d = t:data()
  for c = 0, channels - 1 do
    for i = 0, n - 1 do d[c * n + i] = f(c, i) end
  end
  return t
end

local TWO_PI = 2 * math.pi

--- sine(freq, sr, seconds, amp = 0.5, channels = 1)
function M.sine(freq, sr, seconds, amp, channels)
  amp = amp or 0.5
  local n = math.floor(seconds * sr + 0.5)
  return M.make(channels or 1, n, function(_, i) return amp * math.sin(TWO_PI * freq * i / sr) end)
end

--- noise(sr, seconds, amp = 0.3, channels = 1, seed): uniform white noise
function M.noise(sr, seconds, amp, channels, seed)
  amp = amp or 0.3
  local r = M.rng(seed or 12345)
  local n = math.floor(seconds * sr + 0.5)
  return M.make(channels or 1, n, function() return amp * r() end)
end

--- drums(sr, seconds, bpm = 120): kick (decaying 60 Hz sine) on every beat, noise hat on the
--- off-beats, over a -80 dBFS noise floor (no digitally silent frames).
function M.drums(sr, seconds, bpm)
  bpm = bpm or 120
  local r = M.rng(777)
  local n = math.floor(seconds * sr + 0.5)
  local beat = 60 / bpm
  return M.make(1, n, function(_, i)
    local t = i / sr
    local tb = t % beat
    local th = (t + beat / 2) % beat
    local v = 1e-4 * r()
    v = v + 0.8 * math.exp(-tb * 30) * math.sin(TWO_PI * 60 * tb)
    v = v + 0.3 * math.exp(-th * 80) * r()
    return v
  end)
end

--- pad(sr, seconds): A minor triad (220, 261.63, 329.63 Hz) with 3 harmonics each and a slow
--- swell, over a -80 dBFS noise floor.
function M.pad(sr, seconds)
  local r = M.rng(999)
  local n = math.floor(seconds * sr + 0.5)
  local fs = { 220, 261.63, 329.63 }
  return M.make(1, n, function(_, i)
    local t = i / sr
    local env = 0.5 - 0.3 * math.cos(TWO_PI * 0.25 * t)
    local v = 1e-4 * r()
    for _, f in ipairs(fs) do
      v = v + 0.12 * env * (math.sin(TWO_PI * f * t) + 0.4 * math.sin(TWO_PI * 2 * f * t)
                            + 0.2 * math.sin(TWO_PI * 3 * f * t))
    end
    return v
  end)
end

--- mixture(sr, seconds): stereo pad + drums (left louder drums, right louder pad)
function M.mixture(sr, seconds)
  local d, p = M.drums(sr, seconds, 100):data(), M.pad(sr, seconds):data()
  local n = math.floor(seconds * sr + 0.5)
  return M.make(2, n, function(c, i)
    if c == 0 then return 0.6 * d[i] + 0.4 * p[i] end
    return 0.3 * d[i] + 0.7 * p[i]
  end)
end

--- clicks(sr, seconds, bpm): 10 ms 1 kHz tone bursts every beat
function M.clicks(sr, seconds, bpm)
  local n = math.floor(seconds * sr + 0.5)
  local period = 60 / bpm
  return M.make(1, n, function(_, i)
    local t = i / sr
    local tb = t % period
    if tb < 0.01 then return 0.5 * math.sin(TWO_PI * 1000 * tb) end
    return 0
  end)
end

--- The named signals the fixtures were computed on: name -> {tensor, sr}.
function M.catalogue()
  return {
    sine1k_44k = { M.sine(1000, 44100, 3, 0.5), 44100 },
    noise_44k = { M.noise(44100, 3, 0.3), 44100 },
    drums_44k = { M.drums(44100, 4, 120), 44100 },
    pad_44k = { M.pad(44100, 4), 44100 },
    mixture_22k = { M.mixture(22050, 4), 22050 },
    mixture_48k = { M.mixture(48000, 3), 48000 },
    sine_stereo_48k = { M.make(2, 48000 * 3, function(c, i)
      return (c == 0 and 0.25 or 0.1) * math.sin(TWO_PI * (c == 0 and 440 or 3000) * i / 48000) end), 48000 },
  }
end

-- `luajit spec/support/signals.lua DIR` writes every catalogue signal to DIR/<name>.wav (float).
if arg and arg[0] and arg[0]:match("signals%.lua$") and arg[1] then
  local cat = M.catalogue()
  for name, v in pairs(cat) do
    sao.audio.save(arg[1] .. "/" .. name .. ".wav", v[1], v[2], { subtype = "float" })
    print(name)
  end
end

return M
