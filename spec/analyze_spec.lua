-- recipes/analyze.lua and sao.analysis.file: the CLI contract of issue 4 on real files (WAV and
-- FLAC, mono and stereo, 22.05/44.1/48 kHz), bad files reported and skipped, exit statuses, the
-- table output. Runs ./sao from the repository root (where busted runs).
local sao = require "sao"
local cjson = require "cjson"

local G = sao.musicgen
local shell = require "support.shell"
local SAO, q, slurp, sh = shell.SAO, shell.q, shell.slurp, shell.sh

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local REQUIRED = { "path", "duration", "sample_rate", "channels", "lufs", "peak", "bpm", "bpm_confidence", "key",
                   "scale", "key_strength", "centroid", "flatness", "hp_ratio", "transient_sharpness" }

local dir, good
setup(function()
  dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. q(dir .. "/sub"))
  -- a drum kit over a progression in E minor at 112 BPM, at three rates and in two formats
  local function piece(sr)
    local d = G.drums { bpm = 112, pattern = "rock", seconds = 12, sr = sr, seed = 3 }
    local c = G.chords { tonic = 4, minor = true, progression = 1, bpm = 112, bars = 6, sr = sr, seed = 3 }
    return sao.audio.mix({ d, sao.audio.fit(c, d:size(2)) }, { gains_db = { 0, 6 } })
  end
  good = {
    { name = "mono_22k.wav", sr = 22050, ch = 1, subtype = "pcm16" },
    { name = "stereo_44k.flac", sr = 44100, ch = 2 },
    { name = "sub/stereo_48k.wav", sr = 48000, ch = 2, subtype = "pcm24" },
  }
  for _, g in ipairs(good) do
    local a = piece(g.sr)
    if g.ch == 2 then a = sao.audio.to_channels(a, 2) end
    sao.audio.save(dir .. "/" .. g.name, a, g.sr, { subtype = g.subtype })
  end
  local f = assert(io.open(dir .. "/corrupt.wav", "wb"))
  f:write("RIFF\0\0\0\0WAVEjunk")
  f:close()
  local whole = slurp(dir .. "/mono_22k.wav")
  f = assert(io.open(dir .. "/sub/truncated.wav", "wb"))
  f:write(whole:sub(1, 3000))
  f:close()
  f = assert(io.open(dir .. "/notes.txt", "wb"))      -- not audio: not listed
  f:write("hello")
  f:close()
end)

teardown(function()
  if dir then os.execute("rm -rf " .. q(dir)) end
end)

describe("recipes/analyze.lua", function()
  it("prints one JSON object per file with the contract's fields, reports bad files and goes on", function()
    local code, out, err = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir) .. " --json")
    local rows = {}
    for _, l in ipairs(lines(out)) do
      local r = cjson.decode(l)
      rows[r.path:sub(#dir + 2)] = r
    end
    assert.are.equal(5, #lines(out))
    for _, g in ipairs(good) do
      local r = rows[g.name]
      assert.is_table(r, g.name)
      for _, k in ipairs(REQUIRED) do assert.is_not_nil(r[k], g.name .. " lacks " .. k) end
      assert.is_nil(r.error)
      assert.are.equal(g.sr, r.sample_rate)
      assert.are.equal(g.ch, r.channels)
      assert.near(12, r.duration, 0.01)
      assert.near(112, r.bpm, 112 * 0.02)
      assert.are.equal("E", r.key, g.name)
      assert.are.equal("minor", r.scale, g.name)
      assert.is_true(r.key_strength > 0.5)
      assert.is_true(r.bpm_confidence > 0.3 and r.bpm_confidence <= 1)
      assert.is_true(r.lufs < 0 and r.lufs > -40)
      assert.is_true(r.peak > 0 and r.peak <= 1)
      assert.is_true(r.centroid > 100 and r.flatness > 0 and r.flatness < 1 and r.hp_ratio > 0)
      assert.is_true(r.transient_sharpness > 0)
    end
    assert.is_truthy(rows["corrupt.wav"].error:find("corrupt.wav", 1, true))
    assert.is_truthy(rows["sub/truncated.wav"].error:find("truncated.wav", 1, true))
    assert.are.equal(1, code)                                   -- not every file succeeded
    assert.is_truthy(err:find("corrupt.wav", 1, true))          -- named on stderr too
    assert.is_truthy(err:find("2 of 5 files failed", 1, true))
  end)

  it("exits 0 when every file succeeds, and with --ok-if-any when one did", function()
    local code, out = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir .. "/mono_22k.wav") .. " " ..
                         q(dir .. "/stereo_44k.flac") .. " --json --quiet")
    assert.are.equal(0, code)
    assert.are.equal(2, #lines(out))
    code = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir .. "/mono_22k.wav") .. " " .. q(dir .. "/nope.wav") ..
              " --json --ok-if-any")
    assert.are.equal(0, code)
    local c2, o2 = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir .. "/nope.wav") .. " --json --ok-if-any")
    assert.are.equal(1, c2)
    assert.is_truthy(cjson.decode(o2).error:find("nope.wav", 1, true))
  end)

  it("prints a table without --json, and both key presets on request", function()
    local code, out = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir .. "/stereo_44k.flac") .. " --both-presets")
    assert.are.equal(0, code)
    local l = lines(out)
    assert.are.equal(2, #l)
    assert.is_truthy(l[1]:find("BPM", 1, true) and l[1]:find("LUFS", 1, true))
    assert.is_truthy(l[2]:find("E min", 1, true))
    local _, js = sh(q(SAO) .. " recipes/analyze.lua " .. q(dir .. "/stereo_44k.flac") .. " --json --both-presets")
    local r = cjson.decode(js)
    assert.is_string(r.key_edma)
    assert.is_string(r.scale_edma)
  end)

  it("rejects bad usage with exit 2", function()
    assert.are.equal(2, (sh(q(SAO) .. " recipes/analyze.lua")))
    assert.are.equal(2, (sh(q(SAO) .. " recipes/analyze.lua --bogus " .. q(dir))))
    assert.are.equal(2, (sh(q(SAO) .. " recipes/analyze.lua " .. q(dir) .. " --preset jazz")))
  end)
end)

describe("sao.analysis.file", function()
  it("leaves undefined parts empty with a note: tempo of a short file, key of silence", function()
    local p = dir .. "/silence.wav"
    sao.audio.save(p, sao.zeros(1, 22050), 22050)
    local r = sao.analysis.file(p)
    assert.is_nil(r.bpm)
    assert.is_nil(r.key)
    assert.is_nil(r.lufs)                           -- -inf LUFS is not a number JSON can hold
    assert.are.equal(0, r.peak)
    assert.is_truthy(r.notes:find("too short", 1, true))
    assert.is_truthy(r.notes:find("key undefined", 1, true))
    os.remove(p)
    assert.error_matches(function() sao.analysis.file(dir .. "/corrupt.wav") end, "corrupt.wav")
  end)
end)
