-- Audio I/O, channel/length/level operations, mixing, resampling and loudness (sao.audio).
-- Signals are generated here (spec/support/signals.lua); reference loudness numbers come from
-- pyloudnorm 0.2.0 via spec/fixtures/analysis_refs.json (see spec/fixtures/analysis_refs.py).
local sao = require "sao"
local cjson = require "cjson"
local sig = require "spec.support.signals"
require "spec.support.near"

local A = sao.audio
local refs = cjson.decode(assert(io.open("spec/fixtures/analysis_refs.json")):read("*a"))

local dir
setup(function()
  dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir) == 0)
end)
teardown(function() os.execute("rm -rf " .. dir) end)

local function maxdiff(a, b) return (a - b):abs():max() end
local function read_bytes(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
local function write_bytes(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end
local function snr_db(ref, got)
  local e = (got - ref):pow(2):sum()
  return 10 * math.log10(ref:pow(2):sum() / e)
end

describe("audio files", function()
  local a = sig.mixture(44100, 1.5)           -- stereo, |x| < 1

  it("round-trips WAV float exactly and PCM within one LSB", function()
    A.save(dir .. "/f.wav", a, 44100)
    local b, sr = A.load(dir .. "/f.wav")
    assert.equal(44100, sr)
    assert.same({ 2, 66150 }, b:shape())
    assert.equal(0, maxdiff(a, b))
    for bits, sub in pairs { [16] = "pcm16", [24] = "pcm24" } do
      A.save(dir .. "/p.wav", a, 44100, { subtype = sub })
      local c = A.load(dir .. "/p.wav")
      assert.is_true(maxdiff(a, c) <= 2 ^ -(bits - 1))
      -- quantize() is exactly what the PCM file holds
      assert.equal(0, maxdiff(A.quantize(a, bits), c))
    end
  end)

  it("round-trips FLAC (pcm16/pcm24) and reads OGG and MP3 at high SNR", function()
    A.save(dir .. "/a.flac", a, 44100)
    local b = A.load(dir .. "/a.flac")
    assert.is_true(maxdiff(a, b) <= 2 ^ -23)
    assert.equal("pcm24", A.info(dir .. "/a.flac").subtype)
    A.save(dir .. "/a16.flac", a, 44100, { subtype = "pcm16" })
    assert.is_true(maxdiff(a, A.load(dir .. "/a16.flac")) <= 2 ^ -15)
    -- lossy codecs: same length, channels and rate; waveform SNR measured 28.9 dB (vorbis q0.6)
    -- and 23.8 dB (mp3, lame defaults) on this signal
    for _, ext in ipairs { "ogg", "mp3" } do
      A.save(dir .. "/a." .. ext, a, 44100)
      local inf = A.info(dir .. "/a." .. ext)
      assert.equal(ext, inf.format)
      assert.equal(2, inf.channels)
      local c, sr = A.load(dir .. "/a." .. ext)
      assert.equal(44100, sr)
      assert.equal(66150, c:size(2))
      assert.is_true(snr_db(a, c) > 15, ext .. " SNR " .. snr_db(a, c))
    end
  end)

  it("reports file info", function()
    A.save(dir .. "/i.wav", sig.sine(440, 22050, 0.5, 0.5, 1), 22050, { subtype = "pcm16" })
    local inf = A.info(dir .. "/i.wav")
    assert.same({ frames = 11025, sample_rate = 22050, channels = 1, duration = 0.5, format = "wav",
                  subtype = "pcm16" }, inf)
  end)

  it("loads ranges, converts channels and resamples on load", function()
    A.save(dir .. "/r.wav", a, 44100)
    local b = A.load(dir .. "/r.wav", { start = 1000, frames = 500 })
    assert.equal(0, maxdiff(A.slice(a, 1000, 500), b))
    local c = A.load(dir .. "/r.wav", { offset = 0.5, duration = 0.25 })
    assert.same({ 2, 11025 }, c:shape())
    assert.equal(0, maxdiff(A.slice(a, 22050, 11025), c))
    local m = A.load(dir .. "/r.wav", { mono = true })
    assert.same({ 1, 66150 }, m:shape())
    local r, sr = A.load(dir .. "/r.wav", { sr = 48000 })
    assert.equal(48000, sr)
    assert.same({ 2, 72000 }, r:shape())
    -- a range past the end is clamped
    assert.equal(150, A.load(dir .. "/r.wav", { start = 66000, frames = 1000 }):size(2))
  end)

  it("writes atomically: replaces an existing file and leaves no temporary behind", function()
    local p = dir .. "/atomic.wav"
    write_bytes(p, "old contents")
    A.save(p, a, 44100)
    assert.equal(0, maxdiff(a, (A.load(p))))
    local ls = io.popen("ls " .. dir):read("*a")
    assert.is_nil(ls:find("%.tmp%."))
  end)

  it("errors name the file for missing, empty, directory and non-audio inputs", function()
    assert.error_matches(function() A.load(dir .. "/nope.wav") end, "nope%.wav: No such file")
    write_bytes(dir .. "/empty.wav", "")
    assert.error_matches(function() A.load(dir .. "/empty.wav") end, "empty%.wav: empty file")
    assert.error_matches(function() A.load(dir) end, "is a directory")
    write_bytes(dir .. "/text.wav", string.rep("this is not audio ", 100))
    assert.error_matches(function() A.load(dir .. "/text.wav") end, "text%.wav: cannot decode")
    assert.error_matches(function() A.info(dir .. "/nope.flac") end, "nope%.flac")
  end)

  it("rejects truncated WAV, FLAC, OGG and MP3 files", function()
    for _, f in ipairs { { "wav", "float" }, { "wav", "pcm16" }, { "flac" }, { "ogg" }, { "mp3" } } do
      local p = dir .. "/full." .. f[1]
      A.save(p, a, 44100, { subtype = f[2] })
      local s = read_bytes(p)
      for _, frac in ipairs { 0.999, 0.5 } do
        local q = dir .. "/cut." .. f[1]
        write_bytes(q, s:sub(1, math.floor(#s * frac)))
        local ok, err = pcall(A.load, q)
        assert.is_false(ok, f[1] .. " cut at " .. frac .. " loaded")
        assert.truthy(err:find("cut%." .. f[1] .. ": ") and (err:find("truncated") or err:find("corrupt")),
                      f[1] .. " cut at " .. frac .. ": " .. err)
      end
    end
  end)

  it("rejects corrupt payloads (FLAC lost sync, NaN in float WAV)", function()
    for _, f in ipairs { { "flac" }, { "wav", "float" } } do
      local p = dir .. "/c." .. f[1]
      A.save(p, a, 44100, { subtype = f[2] })
      local s = read_bytes(p)
      local mid = math.floor(#s / 2)
      write_bytes(p, s:sub(1, mid) .. string.rep("\255", 4000) .. s:sub(mid + 4001))
      assert.error_matches(function() A.load(p) end, "c%." .. f[1] .. ": .*corrupt")
    end
  end)

  it("rejects bad save requests", function()
    assert.error_matches(function() A.save(dir .. "/x.flac", a, 44100, { subtype = "float" }) end,
                         "flac holds pcm16 or pcm24")
    assert.error_matches(function() A.save(dir .. "/x.wav", a, 44100, { format = "aac" }) end, "unknown format")
    assert.error_matches(function() A.save(dir .. "/x.wav", a, 44100, { subtype = "pcm12" }) end, "unknown subtype")
    assert.error_matches(function() A.save(dir .. "/no/such/dir/x.wav", a, 44100) end, "cannot create")
    assert.error_matches(function() A.save(dir .. "/x.wav", a, 0) end, "sample rate")
    assert.error_matches(function() A.save(dir .. "/x.wav", sao.zeros(2, 2, 2), 44100) end, "%[C, S%]")
    assert.error_matches(function() A.save(dir .. "/x.wav", "audio", 44100) end, "must be a sao tensor")
    -- a samples-first array (soundfile's layout) is caught with a hint
    assert.error_matches(function() A.loudness(sao.zeros(48000, 2), 48000) end, "needs a transpose")
  end)

  it("clips on integer writes instead of wrapping around", function()
    local loud = sao.tensor { { 0.5, 1.5, -2.0, 0.25 } }
    A.save(dir .. "/clip.wav", loud, 8000, { subtype = "pcm16" })
    local b = A.load(dir .. "/clip.wav")
    assert.tensor_near({ { 0.5, 32767 / 32768, -1, 0.25 } }, b, { abs = 1e-6 })
  end)
end)

describe("channels, length and level", function()
  it("mixes down, duplicates and refuses ambiguous channel maps", function()
    local st = sao.tensor { { 1, 2, 3 }, { 3, 2, 1 } }
    assert.same({ { 2, 2, 2 } }, A.to_mono(st):totable())
    assert.same({ { 1, 2 }, { 1, 2 } }, A.to_channels(sao.tensor { { 1, 2 } }, 2):totable())
    assert.same({ { 1, 2 }, { 1, 2 } }, A.to_channels(sao.tensor { 1, 2 }, 2):totable())   -- [S] is mono
    assert.error_matches(function() A.to_channels(sao.zeros(3, 4), 2) end, "cannot map 3 channels to 2")
  end)

  it("slices, trims, pads and fits", function()
    local x = sao.tensor { { 1, 2, 3, 4, 5 } }
    assert.same({ { 2, 3 } }, A.slice(x, 1, 2):totable())
    assert.same({ { 4, 5 } }, A.slice(x, 3):totable())
    assert.same({ {} }, A.slice(x, 9, 2):totable())
    assert.same({ { 0, 1, 2, 3, 4, 5, 0, 0 } }, A.pad(x, 1, 2):totable())
    assert.same({ { 1, 2, 3 } }, A.fit(x, 3):totable())
    assert.same({ { 1, 2, 3, 4, 5, 0 } }, A.fit(x, 6):totable())
    assert.same({ 1, 4 }, A.trim(sao.zeros(1, 10), 4, 0.5, 1.5):shape())
    assert.error_matches(function() A.pad(x, -1, 0) end, "padding must be >= 0")
  end)

  it("applies gains, peak normalisation, clipping and quantisation", function()
    local x = sao.tensor { { 0.1, -0.5, 0.25 } }
    assert.tensor_near({ { 0.2, -1, 0.5 } }, A.gain(x, 20 * math.log10(2)), { abs = 1e-6 })
    local y, g = A.peak_normalize(x, -6)
    assert.near(10 ^ (-6 / 20), y:abs():max(), 1e-6)
    assert.near(20 * math.log10(10 ^ (-6 / 20) / 0.5), g, 1e-9)
    local z, gz = A.peak_normalize(sao.zeros(1, 4))
    assert.equal(0, z:abs():max())
    assert.equal(0, gz)
    local c, n = A.clip(sao.tensor { { 0.5, 1.5, -3 } })
    assert.same({ { 0.5, 1, -1 } }, c:totable())
    assert.equal(2, n)
    -- 8 bits as libsndfile's WAV writer quantises (clip, round at 32 bits, drop the low bits:
    -- a floor at 8 bits)
    assert.same({ { 0.5, 127 / 128, -1, 0, -1 / 128 } },
                A.quantize(sao.tensor { { 0.5, 1.5, -3, 0.006, -0.006 } }, 8):totable())
  end)

  it("computes level statistics", function()
    local s = A.stats(sig.sine(1000, 48000, 1, 0.5, 2))
    assert.near(0.5, s.peak, 1e-4)
    assert.near(0.5 / math.sqrt(2), s.rms, 1e-5)
    assert.near(20 * math.log10(math.sqrt(2)), s.crest_db, 1e-3)      -- 3.01 dB for a sine
    assert.near(0, s.dc, 1e-6)
    local z = A.stats(sao.zeros(1, 100))
    assert.equal(-math.huge, z.peak_db)
    assert.equal(0, z.crest_db)
    assert.equal(2, A.stats(sao.tensor { { 1, -1, 0.5 } }).clipped)
  end)

  it("finds and trims leading/trailing silence", function()
    local x = A.pad(sig.sine(500, 8000, 1, 0.5), 4000, 2000)          -- 0.5 s, 1 s tone, 0.25 s
    local s, e = A.silence_bounds(x, 8000, { threshold_db = -50, chunk = 0.01 })
    assert.equal(4000, s)
    assert.equal(12000, e)
    local t = A.trim_silence(x, 8000)
    assert.equal(8000, t:size(2))
    local s0, e0 = A.silence_bounds(sao.zeros(1, 800), 8000)
    assert.equal(0, s0)
    assert.equal(0, e0)
  end)

  it("mixes tracks by sum or mean, zero-padding and duplicating mono", function()
    local m = sao.tensor { { 1, 1, 1 } }
    local s = sao.tensor { { 1, 2 }, { 3, 4 } }
    assert.same({ { 2, 3, 1 }, { 4, 5, 1 } }, A.mix({ m, s }):totable())
    assert.same({ { 1, 1.5, 0.5 }, { 2, 2.5, 0.5 } }, A.mix({ m, s }, { mode = "mean" }):totable())
    local g = A.mix({ m, m }, { gains_db = { 0, 20 * math.log10(0.5) } })
    assert.tensor_near({ { 1.5, 1.5, 1.5 } }, g, { abs = 1e-6 })
    assert.error_matches(function() A.mix({ sao.zeros(2, 3), sao.zeros(3, 3) }) end, "track 1 has 2 channels, others 3")
    assert.error_matches(function() A.mix({}) end, "no tracks")
  end)
end)

describe("resampling", function()
  it("keeps a tone and round-trips 44.1 -> 48 -> 44.1 kHz at > 100 dB SNR", function()
    local x = sig.sine(1000, 44100, 1, 0.5)
    local y = A.resample(x, 44100, 48000)
    assert.equal(48000, y:size(2))                          -- ceil(44100 * 48000 / 44100)
    local ref = sig.sine(1000, 48000, 1, 0.5)
    -- away from the edges the converted tone equals the analytic one: measured 147 dB
    local mid = function(t, sr) return A.slice(t, math.floor(sr / 10), math.floor(sr * 0.8)) end
    assert.is_true(snr_db(mid(ref, 48000), mid(y, 48000)) > 100)
    local z = A.resample(y, 48000, 44100)
    assert.equal(44100, z:size(2))
    assert.is_true(snr_db(mid(x, 44100), mid(z, 44100)) > 100)   -- measured 144 dB
  end)

  it("offers the libsamplerate converters and predictable lengths", function()
    local x = sig.noise(22050, 0.5, 0.3, 2)
    for _, q in ipairs { "best", "medium", "fastest", "zoh", "linear" } do
      local y = A.resample(x, 22050, 11025, q)
      assert.same({ 2, 5513 }, y:shape())                   -- ceil(11025 / 2)
    end
    assert.equal(0, maxdiff(x, A.resample(x, 22050, 22050)))
    assert.equal(7, A.resample(sao.zeros(1, 3), 16000, 36000):size(2))
  end)

  it("rejects bad rates and qualities", function()
    local x = sao.zeros(1, 100)
    assert.error_matches(function() A.resample(x, 0, 44100) end, "positive")
    assert.error_matches(function() A.resample(x, 44100, 44) end, "256x")
    assert.error_matches(function() A.resample(x, 44100, 48000, "ultra") end, "unknown resampling quality")
  end)
end)

describe("loudness", function()
  -- EBU Tech 3341 self-generated cases: 1 kHz stereo sine at the given dBFS for the given
  -- seconds, 48 kHz, expected -23.0 LUFS (case 2: -33.0) +- 0.1 LU.
  local function tone(parts)
    local segs = {}
    for i, p in ipairs(parts) do segs[i] = sig.sine(1000, 48000, p[2], 10 ^ (p[1] / 20), 2) end
    return sao.cat(segs, 2)
  end
  local cases = {
    { { { -23, 20 } }, -23 },
    { { { -33, 20 } }, -33 },
    { { { -36, 10 }, { -23, 60 }, { -36, 10 } }, -23 },
    { { { -72, 10 }, { -36, 10 }, { -23, 60 }, { -36, 10 }, { -72, 10 } }, -23 },
    { { { -26, 20 }, { -20, 20.1 }, { -26, 20 } }, -23 },
  }

  it("meets the EBU Tech 3341 integrated-loudness cases in both modes", function()
    for i, c in ipairs(cases) do
      local x = tone(c[1])
      for _, mode in ipairs { "ebur128", "pyloudnorm" } do
        local l = A.loudness(x, 48000, { mode = mode })
        assert.is_true(math.abs(l - c[2]) <= 0.1, ("case %d %s: %.3f LUFS"):format(i, mode, l))
      end
    end
  end)

  it("matches pyloudnorm 0.2.0 to 1e-4 LU in pyloudnorm mode", function()
    -- measured max |diff| 5e-9 LU over the 7 catalogue signals
    for name, v in pairs(sig.catalogue()) do
      local l = A.loudness(v[1], v[2], { mode = "pyloudnorm" })
      assert.near(refs.signals[name].pyloudnorm_lufs, l, 1e-4, name)
      -- libebur128 reads 0.036-0.090 LU higher on these signals (docs/analysis.md)
      local e = A.loudness(v[1], v[2])
      assert.is_true(math.abs(e - l) < 0.15, name)
    end
  end)

  it("measures with its own one-pass meter what libebur128 measures (bs1770 mode)", function()
    -- loud, very quiet (gated out) and loud again, at 5 rates and 1-5 channels; measured max 2e-11 LU
    local worst = 0
    for _, sr in ipairs { 8000, 22050, 44100, 48000, 96000 } do
      for _, ch in ipairs { 1, 2, 3, 5 } do
        local y = sao.cat({ sao.randn { ch, sr * 2 + 17, seed = sr + ch } * 0.05,
                            sao.randn { ch, sr * 2, seed = sr + ch + 100 } * 0.0005,
                            sao.randn { ch, sr + 123, seed = sr + ch + 200 } * 0.2 }, 2)
        worst = math.max(worst, math.abs(A.loudness(y, sr) - A.loudness(y, sr, { mode = "bs1770" })))
      end
    end
    assert.is_true(worst < 1e-6, "max difference " .. worst .. " LU")
    for i, c in ipairs(cases) do
      local l = A.loudness(tone(c[1]), 48000, { mode = "bs1770" })
      assert.is_true(math.abs(l - c[2]) <= 0.1, ("case %d: %.3f LUFS"):format(i, l))
    end
    assert.equal(-math.huge, A.loudness(sao.zeros(2, 48000), 48000, { mode = "bs1770" }))
    assert.equal(-math.huge, A.loudness(sig.sine(1000, 48000, 0.39, 0.5, 2), 48000, { mode = "bs1770" }))
    assert.error_matches(function() A.loudness(sao.zeros(6, 48000), 48000, { mode = "bs1770" }) end,
                         "at most 5 channels")
    assert.error_matches(function() A.loudness(sao.zeros(2, 48000), 48000, { mode = "lufs" }) end,
                         "unknown loudness mode 'lufs'")
  end)

  it("gives -inf for silence and for audio shorter than one 400 ms block", function()
    assert.equal(-math.huge, A.loudness(sao.zeros(2, 48000), 48000))
    assert.equal(-math.huge, A.loudness(sao.zeros(2, 48000), 48000, { mode = "pyloudnorm" }))
    local short = sig.sine(1000, 48000, 0.3, 0.5, 2)
    assert.equal(-math.huge, A.loudness(short, 48000))
    assert.equal(-math.huge, A.loudness(short, 48000, { mode = "pyloudnorm" }))
    assert.error_matches(function() A.loudness(sao.zeros(6, 48000), 48000, { mode = "pyloudnorm" }) end,
                         "at most 5 channels")
  end)

  it("measures true peak and loudness range", function()
    local x = sig.sine(997, 48000, 3, 0.5, 2)
    local tp, tpdb = A.true_peak(x, 48000)
    assert.near(0.5, tp, 0.01)
    assert.near(-6.02, tpdb, 0.2)
    local lra = A.loudness_range(tone { { -30, 10 }, { -20, 10 } }, 48000)
    assert.is_true(lra > 8 and lra < 11, "LRA " .. lra)                 -- a 10 dB step
  end)

  it("normalises to a target within 0.05 LU and reports the peak guard", function()
    local s = sig.sine(440, 44100, 2, 0.1, 2)
    local ys, rs = A.normalize(s, 44100, -12)
    assert.near(-12, A.loudness(ys, 44100), 0.05)        -- measured |error| 4e-7 LU
    assert.near(-12, rs.lufs_after, 0.05)
    assert.near(-12 - rs.lufs_before, rs.gain_db, 1e-9)
    assert.is_false(rs.would_clip)
    assert.is_false(rs.clipped)
    local x = sig.mixture(44100, 4)
    local y, rep = A.normalize(x, 44100, -20)
    assert.near(-20, A.loudness(y, 44100), 0.05)
    assert.near(-20, rep.lufs_after, 0.05)
    assert.is_false(rep.would_clip)
    -- pyloudnorm mode hits its own target
    local yp = A.normalize(x, 44100, -14, { mode = "pyloudnorm" })
    assert.near(-14, A.loudness(yp, 44100, { mode = "pyloudnorm" }), 0.01)
  end)

  it("reports, reduces or limits when the gain would clip", function()
    local x = sig.drums(44100, 4)                           -- crest factor ~ 17 dB
    local y, rep = A.normalize(x, 44100, -6)
    assert.is_true(rep.would_clip)
    assert.is_true(rep.clipped)
    assert.is_true(rep.peak_after > 1)
    local r, rr = A.normalize(x, 44100, -6, { peak_guard = "reduce", ceiling_db = -1 })
    assert.near(10 ^ (-1 / 20), r:abs():max(), 1e-5)
    assert.is_true(rr.lufs_after < -6)
    assert.is_false(rr.clipped)
    local l, rl = A.normalize(x, 44100, -6, { limit = true, ceiling_db = -1 })
    assert.is_true(l:abs():max() <= 10 ^ (-1 / 20) + 1e-7)
    assert.is_true(rl.limited)
    assert.is_true(rl.limiter_max_gr_db > 0)
    assert.is_false(rl.clipped)
    -- limiting lowers the loudness by at most its deepest gain reduction
    assert.is_true(rl.lufs_after < -6 and rl.lufs_after > -6 - rl.limiter_max_gr_db)
    -- a mixture needing 6.8 dB of limiting on its kicks loses only 1.2 LU (measured -11.17)
    local m, rm = A.normalize(sig.mixture(44100, 4), 44100, -10, { limit = true, ceiling_db = -1 })
    assert.is_true(m:abs():max() <= 10 ^ (-1 / 20) + 1e-7)
    assert.is_true(rm.lufs_after > -12, "limited loudness " .. rm.lufs_after .. " GR " .. rm.limiter_max_gr_db)
    local _ = y
  end)

  it("leaves silence alone", function()
    local y, rep = A.normalize(sao.zeros(2, 44100), 44100, -14)
    assert.is_true(rep.silent)
    assert.equal(0, rep.gain_db)
    assert.equal(0, y:abs():max())
    assert.error_matches(function() A.normalize(sao.zeros(1, 100), 44100, 0 / 0) end, "not finite")
  end)

  it("limits a signal to its ceiling", function()
    local x = A.gain(sig.drums(44100, 2), 12)
    local y, gr = A.limit(x, 44100, -1)
    assert.is_true(y:abs():max() <= 10 ^ (-1 / 20) + 1e-7)
    assert.is_true(gr > 10)
  end)
end)
