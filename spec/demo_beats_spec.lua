-- spec/demo_beats_spec.lua — the trap recipe's built-in demo beats (sao.pipeline.demo_beats): the
-- song tables (deterministic, 60-75 s, sections that change the parts, the trap grammar), the WAVs
-- that write() renders (length, rate, channels, loudness, README), re-runs that find the work done
-- and reproduce the same bytes, and the DSP estimates of tempo and key on the rendered audio.
-- The four beats are rendered once for the whole file (about 5 s on 2 cores). Needs the GM
-- SoundFont (Debian fluid-soundfont-gm, `make deps`); without it the rendering specs are skipped.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local sao = require "sao"
local fs = require "sao.fs"
local demo = require "sao.pipeline.demo_beats"

local A = sao.analysis
local SF = sao.synth.default_soundfont()
local have_sf = io.open(SF, "rb") ~= nil

local DRUM_BAR = 4 * 60                      -- seconds per bar = DRUM_BAR / bpm

-- the notes of a song's instrument that start in [t0, t1)
local function notes_between(inst, t0, t1)
  local n = 0
  for _, x in ipairs(inst.notes) do if x.start >= t0 - 1e-9 and x.start < t1 - 1e-9 then n = n + 1 end end
  return n
end

local function inst_by_name(song, name)
  for _, inst in ipairs(song.instruments) do if inst.name == name then return inst end end
end

local function drums_of(song)
  for _, inst in ipairs(song.instruments) do if inst.is_drum then return inst end end
end

-- the parts (instrument names) that play in a section
local function parts_in(song, sec)
  local set = {}
  for _, inst in ipairs(song.instruments) do
    if notes_between(inst, sec.start, sec.stop) > 0 then set[#set + 1] = inst.name end
  end
  table.sort(set)
  return table.concat(set, ",")
end

describe("sao.pipeline.demo_beats", function()
  it("describes four minor-key beats with different tonics and tempos", function()
    assert.equal(4, #demo.SPECS)
    local titles, tonics = {}, {}
    for i, s in ipairs(demo.SPECS) do
      assert.is_nil(titles[s.title], s.title)
      titles[s.title] = true
      assert.equal("minor", s.mode)
      local t, minor = A.parse_key(s.key, s.mode)
      assert.equal(s.tonic, t, s.title)
      assert.is_true(minor)
      assert.is_nil(tonics[t], s.title .. ": tonic shared")
      tonics[t] = true
      assert.is_true(s.bpm >= 80 and s.bpm <= 160, s.title)
      assert.equal(s.title, demo.song(i).name)
    end
    assert.same({ "trap", "lofi", "drill", "trap" },
                { demo.SPECS[1].style, demo.SPECS[2].style, demo.SPECS[3].style, demo.SPECS[4].style })
  end)

  it("builds the same song table on every call, every part with notes", function()
    for i, s in ipairs(demo.SPECS) do
      local a, b = demo.song(i), demo.song(i)
      assert.same(a, b)
      local roles = 0
      for _ in pairs(s.instruments) do roles = roles + 1 end
      assert.equal(roles, #a.instruments, s.title .. ": every instrument plays")
      for _, inst in ipairs(a.instruments) do
        assert.is_true(#inst.notes > 0, s.title .. " " .. inst.name)
        for _, n in ipairs(inst.notes) do
          assert.is_true(n.start >= 0 and n.stop > n.start and n.stop <= a.end_time + 1e-9, s.title .. " " .. inst.name)
          assert.is_true(n.pitch >= 0 and n.pitch <= 127 and n.velocity >= 1 and n.velocity <= 127)
        end
      end
      assert.near(demo.music_seconds(i), a.end_time, 1e-9)
    end
  end)

  it("lasts 60-75 s, in whole bars plus the release tail", function()
    for i, s in ipairs(demo.SPECS) do
      local secs = demo.seconds(i)
      assert.is_true(secs >= 60 and secs <= 75, s.title .. ": " .. secs .. " s")
      local bars = demo.music_seconds(i) * s.bpm / DRUM_BAR
      assert.near(math.floor(bars + 0.5), bars, 1e-9)
      assert.near(demo.music_seconds(i) + demo.TAIL, secs, 1 / demo.SAMPLE_RATE)
    end
  end)

  it("has sections: an intro without drums, hooks with every part, verses with fewer", function()
    for i, s in ipairs(demo.SPECS) do
      local song = demo.song(i)
      local drums = drums_of(song)
      local secs = song.sections
      assert.equal(#s.sections, #secs)
      assert.equal(#secs, #song.markers)
      assert.equal("intro", secs[1].name)
      assert.equal("outro", secs[#secs].name)
      assert.is_true(secs[1].bars >= 4 and secs[1].bars <= 8)
      assert.equal(0, notes_between(drums, secs[1].start, secs[1].stop), s.title .. ": drums in the intro")
      assert.equal(0, notes_between(drums, secs[#secs].start, secs[#secs].stop), s.title .. ": drums in the outro")
      local hook, verse
      for _, sec in ipairs(secs) do
        if sec.name == "hook" and not hook then hook = sec end
        if sec.name == "verse" and not verse then verse = sec end
      end
      -- every bar of the hook has drums
      local bar_s = DRUM_BAR / s.bpm
      for b = 0, hook.bars - 1 do
        assert.is_true(notes_between(drums, hook.start + b * bar_s, hook.start + (b + 1) * bar_s) > 0)
      end
      local hp, vp = parts_in(song, hook), parts_in(song, verse)
      assert.is_true(#vp < #hp and hp ~= vp, s.title .. ": hook " .. hp .. " / verse " .. vp)
      assert.is_true(parts_in(song, secs[1]) ~= hp)
    end
  end)

  it("plays trap: a clap on beat 3 of every drum bar, 8th hats with faster rolls, an 808 on the roots", function()
    local s = demo.SPECS[1]
    assert.equal("Night Shift", s.title)
    local song = demo.song(1)
    local drums = drums_of(song)
    local bar_s, s16 = DRUM_BAR / s.bpm, DRUM_BAR / s.bpm / 16
    local claps, hat_gaps, drum_bars = {}, {}, 0
    local prev_hat
    for _, n in ipairs(drums.notes) do
      local bar = math.floor(n.start / bar_s + 1e-6)
      if n.pitch == 39 then claps[bar] = math.abs(n.start - bar * bar_s - 8 * s16) < 1e-6 or claps[bar] end
      if n.pitch == 42 then
        if prev_hat then
          local g = math.floor((n.start - prev_hat) / s16 * 6 + 0.5)     -- in 96ths of a bar
          hat_gaps[g] = (hat_gaps[g] or 0) + 1
        end
        prev_hat = n.start
      end
    end
    for b = 0, math.floor(song.end_time / bar_s) - 1 do
      local kicks = 0
      for _, n in ipairs(drums.notes) do
        if n.pitch == 36 and n.start >= b * bar_s - 1e-6 and n.start < (b + 1) * bar_s - 1e-6 then kicks = kicks + 1 end
      end
      if kicks > 0 then
        drum_bars = drum_bars + 1
        assert.is_true(claps[b] == true, "no clap on beat 3 of bar " .. (b + 1))
      end
    end
    assert.is_true(drum_bars >= 28, "bars with kicks: " .. drum_bars)
    assert.is_true((hat_gaps[12] or 0) > 100, "8th-note hats")          -- 12/96 of a bar = an 8th
    assert.is_true((hat_gaps[6] or 0) > 10, "16th rolls")
    assert.is_true((hat_gaps[4] or 0) > 5, "triplet 16th rolls")
    local bass = inst_by_name(song, "808")
    assert.is_true(bass.program == 38 or bass.program == 39)
    local in_key = 0
    for _, n in ipairs(bass.notes) do
      assert.is_true(n.pitch >= 24 and n.pitch <= 52, "808 pitch " .. n.pitch)
      if (n.pitch - s.tonic) % 12 == 0 then in_key = in_key + 1 end
    end
    assert.is_true(in_key / #bass.notes > 0.4, "808 on the tonic: " .. in_key .. "/" .. #bass.notes)
  end)

  it("refuses a beat that does not exist and a bad count", function()
    assert.has_error(function() demo.song(5) end, "sao.pipeline.demo_beats.song: no beat 5 (1 .. 4)")
    assert.has_error(function() demo.write("/nonexistent/never", { count = 0 }) end,
                     "sao.pipeline.demo_beats.write: count must be 1 .. 4, got 0")
  end)

  if not have_sf then
    it("renders (SKIPPED: no SoundFont at " .. SF .. "; run `make deps`)", function() pending("no SoundFont") end)
    return
  end

  -- one folder for the rendering specs: write(count = 1), then write() for the rest
  local dir, first, all
  local function rendered()
    if not all then
      dir = os.tmpname()
      os.remove(dir)
      first = demo.write(dir, { count = 1, quiet = true })
      all = demo.write(dir, { quiet = true })
    end
    return all
  end
  teardown(function() if dir then fs.rm_rf(dir) end end)

  it("writes 16-bit 44.1 kHz stereo WAVs of the promised length, and a README", function()
    local list = rendered()
    assert.equal(1, #first)
    assert.equal(4, #list)
    for i, b in ipairs(list) do
      local s = demo.SPECS[i]
      assert.equal(dir .. "/" .. s.title .. ".wav", b.path)
      assert.same({ s.title, s.bpm, s.key, "minor" }, { b.title, b.bpm, b.key, b.mode })
      local info = sao.audio.info(b.path)
      assert.equal(44100, info.sample_rate)
      assert.equal(2, info.channels)
      assert.equal(demo.frames(i), info.frames)
      assert.equal("pcm16", info.subtype)
      assert.near(b.seconds, info.duration, 1e-9)
    end
    local readme = fs.read(dir .. "/README.txt")
    assert.truthy(readme:find("sao's synthetic demo beats", 1, true))
    for _, s in ipairs(demo.SPECS) do assert.truthy(readme:find(s.title, 1, true)) end
    assert.same({ "Block Party.wav", "Gold Chains.wav", "Night Shift.wav", "README.txt", "Rain Tape.wav" }, fs.ls(dir))
  end)

  it("renders only what is missing: a re-run finds the work done, a deleted beat comes back the same", function()
    local list = rendered()
    assert.same({ true }, { first[1].rendered })
    assert.same({ false, true, true, true }, { list[1].rendered, list[2].rendered, list[3].rendered, list[4].rendered })
    local mtimes = {}
    for i, b in ipairs(list) do mtimes[i] = sao.C.sao_file_mtime(b.path) end
    local again = demo.write(dir, { quiet = true })
    for i, b in ipairs(again) do
      assert.is_false(b.rendered)
      assert.equal(mtimes[i], sao.C.sao_file_mtime(b.path))
    end
    local path = list[1].path
    local bytes = fs.read(path)
    os.remove(path)
    local back = demo.write(dir, { count = 1, quiet = true })
    assert.is_true(back[1].rendered)
    assert.is_true(fs.read(path) == bytes, "the re-rendered WAV differs")
  end)

  it("is loudness-normalised to about -14 LUFS without clipping", function()
    for _, b in ipairs(rendered()) do
      local a, sr = sao.audio.load(b.path)
      local lufs = sao.audio.loudness(a, sr)
      -- measured: -14.16 (Night Shift, after a second pass behind the limiter), -14.07, -14.08, -14.22
      assert.is_true(math.abs(lufs + 14) < 0.5, b.title .. ": " .. lufs .. " LUFS")
      local st = sao.audio.stats(a)
      assert.is_true(st.peak_db <= -0.9, b.title .. ": peak " .. st.peak_db .. " dBFS")
      a:free()
    end
  end)

  it("has the tempo the DSP estimate finds (or its double or half, within 4 %)", function()
    for _, b in ipairs(rendered()) do
      local a, sr = sao.audio.load(b.path)
      local est = A.tempo(a, sr).bpm
      -- measured: 140.03, 86.06, 142.03, 149.94 (all at the written tempo, not an octave)
      local ok = false
      for _, f in ipairs { 1, 2, 0.5 } do
        if A.tempo_match(est, f * b.bpm, 0.04) then ok = true end
      end
      assert.is_true(ok, ("%s: %s BPM estimated for %d"):format(b.title, tostring(est), b.bpm))
      a:free()
    end
  end)

  it("has the key the DSP estimate finds (or its relative major)", function()
    for _, b in ipairs(rendered()) do
      local a, sr = sao.audio.load(b.path)
      local k = A.key(a, sr)
      local t, minor = A.parse_key(b.key, b.mode)
      local rel = A.key_relation(k.tonic, k.scale == "minor", t, minor)
      -- measured (bgate preset): F# minor, D minor, G minor, C minor, all "same", strength 0.75-0.90
      assert.is_true(rel == "same" or rel == "relative",
                     ("%s: %s %s estimated for %s minor (%s)"):format(b.title, tostring(k.key), tostring(k.scale), b.key, rel))
      a:free()
    end
  end)
end)
