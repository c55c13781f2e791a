-- sao.midi — Standard MIDI Files as Lua tables: read (with the pretty_midi instrument split),
-- write (format 1, atomic), the tempo map (tick <-> seconds) and the bar/beat grid.
--
--   local song = sao.midi.read("song.mid")
--   for _, inst in ipairs(song.instruments) do print(inst.name, inst.program, #inst.notes) end
--   local bars = sao.midi.bars(song)            -- bar-line times in seconds
--   sao.midi.write("copy.mid", song)
--
-- A song table (every time in seconds, channel and track indices 0-based as in the file):
--   { format=1, ticks_per_beat=480, smpte=nil|{fps=,ticks_per_frame=},
--     tempos={{time=,tick=,bpm=,tempo_us=}...}, time_signatures={{time=,tick=,numerator=,denominator=}...},
--     key_signatures={{time=,tick=,key=0..23,sharps=,minor=,name="A minor"}...},
--     tracks={{name=}...}, markers={{time=,text=}...}, lyrics=, texts=, copyright=,
--     instruments={{name=,program=,is_drum=,channel=,track=,
--                   notes={{start=,stop=,pitch=,velocity=}...},
--                   cc={{time=,number=,value=}...}, bends={{time=,value=}...}}...},
--     end_time=, length=, max_tick=, warnings={...}, path= }
-- See docs/midi.md for the exact pairing/split rules.
local ffi = require "ffi"
local core = require "sao.ffi"
local C = core.C

local M = {}

local KEY_NAMES_SHARP = { [0] = "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B" }
local KEY_NAMES_FLAT = { [0] = "C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B" }

--- Name of a pretty_midi key number (0..11 major, 12..23 minor): "A minor", "Eb major".
-- `sharps` (optional, from the file) picks the spelling; default: flats for 1, 3, 6, 8, 10 major.
function M.key_name(key, sharps)
  local pc, minor = key % 12, key >= 12
  local names
  if sharps ~= nil then names = sharps < 0 and KEY_NAMES_FLAT or KEY_NAMES_SHARP
  elseif minor then names = (pc == 3 or pc == 10) and KEY_NAMES_FLAT or KEY_NAMES_SHARP
  else names = (pc == 1 or pc == 3 or pc == 6 or pc == 8 or pc == 10) and KEY_NAMES_FLAT or KEY_NAMES_SHARP end
  return names[pc] .. (minor and " minor" or " major")
end

local function str(p) return p ~= nil and ffi.string(p) or "" end

-- C song -> Lua table
local function to_table(s, path)
  local t = {
    path = path, format = s.format, ticks_per_beat = s.ticks_per_beat,
    max_tick = tonumber(s.max_tick), end_time = s.end_time, length = s.length,
    tempos = {}, time_signatures = {}, key_signatures = {}, tracks = {},
    markers = {}, lyrics = {}, texts = {}, cues = {}, copyright = {}, instruments = {}, warnings = {},
  }
  if s.smpte_fps ~= 0 then t.smpte = { fps = s.smpte_fps, ticks_per_frame = s.smpte_ticks_per_frame } end
  for i = 0, s.n_tempos - 1 do
    local e = s.tempos[i]
    t.tempos[i + 1] = { time = e.time, tick = tonumber(e.tick), bpm = e.bpm,
                        tempo_us = e.tempo_us > 0 and e.tempo_us or nil }
  end
  for i = 0, s.n_timesigs - 1 do
    local e = s.timesigs[i]
    t.time_signatures[i + 1] = { time = e.time, tick = tonumber(e.tick), numerator = e.numerator,
                                 denominator = e.denominator }
  end
  for i = 0, s.n_keysigs - 1 do
    local e = s.keysigs[i]
    t.key_signatures[i + 1] = { time = e.time, tick = tonumber(e.tick), key = e.key, sharps = e.sharps,
                                minor = e.minor ~= 0, name = M.key_name(e.key, e.sharps) }
  end
  for i = 0, s.n_tracks - 1 do t.tracks[i + 1] = { name = str(s.track_names[i]) } end
  local by_type = { [1] = t.texts, [2] = t.copyright, [5] = t.lyrics, [6] = t.markers, [7] = t.cues }
  for i = 0, s.n_texts - 1 do
    local e = s.texts[i]
    local list = by_type[e.type]
    if list then list[#list + 1] = { time = e.time, tick = tonumber(e.tick), track = e.track, text = str(e.text) } end
  end
  for i = 0, s.n_instruments - 1 do
    local e = s.instruments[i]
    local notes, cc, bends = {}, {}, {}
    for j = 0, e.n_notes - 1 do
      local n = e.notes[j]
      notes[j + 1] = { start = n.start, stop = n["end"], pitch = n.pitch, velocity = n.velocity }
    end
    for j = 0, e.n_cc - 1 do
      local c = e.cc[j]
      cc[j + 1] = { time = c.time, number = c.number, value = c.value }
    end
    for j = 0, e.n_bends - 1 do
      local b = e.bends[j]
      bends[j + 1] = { time = b.time, value = b.value }
    end
    t.instruments[i + 1] = { name = str(e.name), program = e.program, is_drum = e.is_drum ~= 0,
                             channel = e.channel, track = e.track, notes = notes, cc = cc, bends = bends }
  end
  for i = 0, s.n_warnings - 1 do t.warnings[i + 1] = str(s.warnings[i]) end
  return t
end

--- Reads a Standard MIDI File. Raises "midi_read: PATH: cause (hint)" on bad input.
function M.read(path)
  assert(type(path) == "string", "sao.midi.read(path): path must be a string")
  local s = core.checkp(C.sao_midi_read(core.ctx, path), 2)
  local ok, t = pcall(to_table, s, path)
  C.sao_midi_free(s)
  if not ok then error(t, 2) end
  return t
end

--- Parses MIDI bytes held in a Lua string; `name` appears in error messages.
function M.parse(bytes, name)
  assert(type(bytes) == "string", "sao.midi.parse(bytes, name): bytes must be a string")
  local s = core.checkp(C.sao_midi_parse(core.ctx, bytes, #bytes, name), 2)
  local ok, t = pcall(to_table, s, name)
  C.sao_midi_free(s)
  if not ok then error(t, 2) end
  return t
end

-- Lua table -> C song (arrays kept alive in `keep` for the duration of the call)
local function cstr(keep, s)
  s = tostring(s or "")
  local p = ffi.new("char[?]", #s + 1, s)
  keep[#keep + 1] = p
  return p
end

local function num(v, what)
  if type(v) ~= "number" then error("sao.midi.write: " .. what .. " must be a number, got " .. tostring(v), 4) end
  return v
end

local function to_c(song, keep)
  local s = ffi.new("sao_midi_song")
  keep[#keep + 1] = s
  s.format = 1
  s.ticks_per_beat = song.ticks_per_beat or 480
  s.length = song.length or 0
  local tempos = song.tempos or {}
  s.n_tempos = #tempos
  if #tempos > 0 then
    local a = ffi.new("sao_midi_tempo[?]", #tempos)
    keep[#keep + 1] = a
    for i, e in ipairs(tempos) do
      local te = a[i - 1]
      te.time = num(e.time or 0, "tempo time")
      te.bpm = num(e.bpm or (e.tempo_us and 6e7 / e.tempo_us) or 120, "tempo bpm")
      -- the file's exact microseconds when they still agree with bpm (exact round trips)
      if e.tempo_us and math.abs(6e7 / e.tempo_us - te.bpm) < 1e-9 * te.bpm then te.tempo_us = e.tempo_us end
    end
    s.tempos = a
  end
  local ts = song.time_signatures or {}
  s.n_timesigs = #ts
  if #ts > 0 then
    local a = ffi.new("sao_midi_timesig[?]", #ts)
    keep[#keep + 1] = a
    for i, e in ipairs(ts) do
      a[i - 1].time = num(e.time or 0, "time signature time")
      a[i - 1].numerator = num(e.numerator, "time signature numerator")
      a[i - 1].denominator = num(e.denominator, "time signature denominator")
    end
    s.timesigs = a
  end
  local ks = song.key_signatures or {}
  s.n_keysigs = #ks
  if #ks > 0 then
    local a = ffi.new("sao_midi_keysig[?]", #ks)
    keep[#keep + 1] = a
    for i, e in ipairs(ks) do
      a[i - 1].time = num(e.time or 0, "key signature time")
      a[i - 1].key = num(e.key, "key signature key")
      a[i - 1].sharps = e.sharps or 99
      a[i - 1].minor = (e.minor == true or e.minor == 1) and 1 or ((e.key or 0) >= 12 and 1 or 0)
    end
    s.keysigs = a
  end
  local texts = {}
  for ty, list in pairs { [1] = song.texts, [2] = song.copyright, [5] = song.lyrics, [6] = song.markers,
                          [7] = song.cues } do
    for _, e in ipairs(list) do texts[#texts + 1] = { ty, e } end
  end
  table.sort(texts, function(x, y)
    if x[2].time ~= y[2].time then return (x[2].time or 0) < (y[2].time or 0) end
    return x[1] < y[1]
  end)
  s.n_texts = #texts
  if #texts > 0 then
    local a = ffi.new("sao_midi_text[?]", #texts)
    keep[#keep + 1] = a
    for i, te in ipairs(texts) do
      a[i - 1].type = te[1]
      a[i - 1].time = num(te[2].time or 0, "text event time")
      a[i - 1].text = cstr(keep, te[2].text)
    end
    s.texts = a
  end
  local name = song.name or (song.tracks and song.tracks[1] and song.tracks[1].name)
  if name and name ~= "" then
    local names = ffi.new("char*[1]")
    keep[#keep + 1] = names
    names[0] = cstr(keep, name)
    s.track_names = names
    s.n_tracks = 1
  end
  local insts = song.instruments or {}
  s.n_instruments = #insts
  if #insts > 0 then
    local a = ffi.new("sao_midi_instrument[?]", #insts)
    keep[#keep + 1] = a
    for i, inst in ipairs(insts) do
      local ci = a[i - 1]
      M.instrument_to_c(inst, ci, keep)
    end
    s.instruments = a
  end
  return s
end

--- Fills a C sao_midi_instrument from a Lua instrument table (used by sao.synth too).
function M.instrument_to_c(inst, ci, keep)
  ci.name = cstr(keep, inst.name)
  ci.program = inst.program or 0
  ci.is_drum = inst.is_drum and 1 or 0
  ci.channel = inst.channel or (inst.is_drum and 9 or 0)
  ci.track = inst.track or 0
  local notes, cc, bends = inst.notes or {}, inst.cc or {}, inst.bends or {}
  ci.n_notes, ci.n_cc, ci.n_bends = #notes, #cc, #bends
  if #notes > 0 then
    local na = ffi.new("sao_midi_note[?]", #notes)
    keep[#keep + 1] = na
    for j, n in ipairs(notes) do
      local c = na[j - 1]
      c.start = num(n.start, "note start")
      c["end"] = num(n.stop, "note stop")
      c.pitch = num(n.pitch, "note pitch")
      c.velocity = n.velocity or 100
    end
    ci.notes = na
  end
  if #cc > 0 then
    local ca = ffi.new("sao_midi_cc[?]", #cc)
    keep[#keep + 1] = ca
    for j, e in ipairs(cc) do
      ca[j - 1].time = num(e.time, "control change time")
      ca[j - 1].number = num(e.number, "control change number")
      ca[j - 1].value = num(e.value, "control change value")
    end
    ci.cc = ca
  end
  if #bends > 0 then
    local ba = ffi.new("sao_midi_bend[?]", #bends)
    keep[#keep + 1] = ba
    for j, e in ipairs(bends) do
      ba[j - 1].time = num(e.time, "pitch bend time")
      ba[j - 1].value = num(e.value, "pitch bend value")
    end
    ci.bends = ba
  end
  return ci
end

--- Writes a song table as a format 1 file (atomically: PATH.tmp.PID, then rename).
-- Only seconds are read; ticks come from the song's tempo map at song.ticks_per_beat (480).
function M.write(path, song)
  assert(type(path) == "string", "sao.midi.write(path, song): path must be a string")
  assert(type(song) == "table", "sao.midi.write(path, song): song must be a table")
  local keep = {}
  local s = to_c(song, keep)
  M._anchor = keep              -- the arrays C reads through raw pointers stay reachable
  local rc = C.sao_midi_write(core.ctx, path, s)
  M._anchor = nil
  core.check(rc, 2)
  return path
end

--- A new empty song: sao.midi.new{bpm=120, ticks_per_beat=480, time_signature={4,4}, key="A minor"|9+12}
function M.new(o)
  o = o or {}
  local song = {
    format = 1, ticks_per_beat = o.ticks_per_beat or 480,
    tempos = { { time = 0, bpm = o.bpm or 120 } },
    time_signatures = { { time = 0, numerator = (o.time_signature or { 4, 4 })[1],
                          denominator = (o.time_signature or { 4, 4 })[2] } },
    key_signatures = {}, instruments = {}, markers = {}, lyrics = {}, texts = {}, tracks = {},
    name = o.name,
  }
  if o.key then
    local key = o.key
    if type(key) == "string" then key = M.key_number(key) end
    song.key_signatures[1] = { time = 0, key = key, name = M.key_name(key) }
  end
  return song
end

--- Key number of a name: "C major", "A minor", "F# major", "Bb minor", "Am", "CM", "c" (lower case: minor).
local MINOR = { m = true, min = true, minor = true }
local MAJOR = { M = true, maj = true, major = true, Maj = true, Major = true }
function M.key_number(name)
  local root, acc, mode = tostring(name):match("^%s*([A-Ga-g])([#b]?)%s*(%a*)%s*$")
  if not root or not (mode == "" or MAJOR[mode] or MINOR[mode:lower()]) then
    error("sao.midi.key_number: cannot read key '" .. tostring(name) .. "' (e.g. \"F# minor\")", 2)
  end
  local pc = ({ c = 0, d = 2, e = 4, f = 5, g = 7, a = 9, b = 11 })[root:lower()]
  if acc == "#" then pc = pc + 1 elseif acc == "b" then pc = pc - 1 end
  pc = pc % 12
  local minor
  if mode == "" then minor = root:match("%l") ~= nil else minor = not MAJOR[mode] end
  return minor and pc + 12 or pc
end

-- ---- tempo map --------------------------------------------------------------------------------
-- Segments {beat=, time=, spb=} (seconds per beat) built from the song's tempos. Times given by
-- the reader are used as they are; positions in beats come from ticks when the song has them
-- (exact), else from the times.
local function tempo_segments(song)
  local tpb = song.ticks_per_beat or 0
  local use_ticks = tpb > 0 and not song.smpte
  local segs = { { beat = 0, time = 0, spb = 0.5 } }   -- the implicit 120 BPM
  for _, e in ipairs(song.tempos or {}) do
    local spb = 60 / (e.tempo_us and 6e7 / e.tempo_us or e.bpm)
    local prev = segs[#segs]
    local beat, time
    if use_ticks and e.tick then
      beat = e.tick / tpb
      time = e.time or (prev.time + (beat - prev.beat) * prev.spb)
    else
      time = e.time or 0
      beat = prev.beat + (time - prev.time) / prev.spb
    end
    if math.abs(beat - prev.beat) < 1e-12 then
      segs[#segs] = { beat = prev.beat, time = prev.time, spb = spb }   -- replaces, as the reader
    else
      segs[#segs + 1] = { beat = beat, time = time, spb = spb }
    end
  end
  return segs
end

-- the last segment whose `key` (beat or time) is <= v (binary search)
local function seg_at(segs, key, v)
  local lo, hi = 1, #segs
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if segs[mid][key] <= v then lo = mid else hi = mid - 1 end
  end
  return segs[lo]
end
local function seg_at_beat(segs, b) return seg_at(segs, "beat", b) end
local function seg_at_time(segs, t) return seg_at(segs, "time", t) end

--- Seconds at a tick (PPQ songs), with the same arithmetic as the C reader.
function M.tick_to_time(song, tick)
  if song.smpte then
    local fps = song.smpte.fps == 29 and 30000 / 1001 or song.smpte.fps
    return tick / (fps * song.smpte.ticks_per_frame)
  end
  local tpb = song.ticks_per_beat or 480
  local tempos = song.tempos or {}
  local t = { time = 0, tick = 0, bpm = 120 }
  for _, e in ipairs(tempos) do
    if (e.tick or 0) <= tick then t = e else break end
  end
  local bpm = t.tempo_us and 6e7 / t.tempo_us or t.bpm
  return (t.time or 0) + 60.0 / (bpm * tpb) * (tick - (t.tick or 0))
end

--- Tick nearest to a time (PPQ songs).
function M.time_to_tick(song, time)
  local segs = tempo_segments(song)
  local s = seg_at_time(segs, time)
  local beat = s.beat + (time - s.time) / s.spb
  local tpb = (song.ticks_per_beat or 0) > 0 and song.ticks_per_beat or 480
  return math.floor(beat * tpb + 0.5)
end

local function beat_to_time(segs, b)
  local s = seg_at_beat(segs, b)
  return s.time + (b - s.beat) * s.spb
end

local function time_to_beat(segs, t)
  local s = seg_at_time(segs, t)
  return s.beat + (t - s.time) / s.spb
end

-- time signatures as {beat=, num=, den=}, sorted, with 4/4 at beat 0 when none is there
local function signatures(song, segs)
  local tpb = song.ticks_per_beat or 0
  local out = {}
  for _, e in ipairs(song.time_signatures or {}) do
    local beat
    if tpb > 0 and e.tick and not song.smpte then beat = e.tick / tpb else beat = time_to_beat(segs, e.time or 0) end
    if (e.numerator or 0) >= 1 and (e.denominator or 0) >= 1 then
      out[#out + 1] = { beat = beat, num = e.numerator, den = e.denominator, i = #out }
    end
  end
  table.sort(out, function(a, b)   -- stable: of two at one position, the later one wins
    if a.beat ~= b.beat then return a.beat < b.beat end
    return a.i < b.i
  end)
  if #out == 0 or out[1].beat > 1e-9 then table.insert(out, 1, { beat = 0, num = 4, den = 4 }) end
  return out
end

local function song_until(song, opts)
  if opts and opts["until"] then return opts["until"] end
  return song.end_time or song.length or 0
end

--- Bar-line times (seconds) from the tempo and time-signature maps, from 0 up to `until`
-- (default: song.end_time, as pretty_midi's get_downbeats; pass until=song.length for the file's
-- full playing length). A time signature that changes inside a bar starts a new bar there.
-- Also returns, per bar, {numerator=, denominator=, beat=} (beat = quarter notes from the start).
function M.bars(song, opts)
  local segs = tempo_segments(song)
  local sigs = signatures(song, segs)
  local stop = song_until(song, opts)
  local times, info = {}, {}
  local pos, si, eps = 0, 1, 1e-9
  while #times < 1000000 do
    while sigs[si + 1] and sigs[si + 1].beat <= pos + eps do si = si + 1 end
    local sig = sigs[si]
    local t = beat_to_time(segs, pos)
    if t > stop + 1e-9 then break end
    times[#times + 1] = t
    info[#info + 1] = { numerator = sig.num, denominator = sig.den, beat = pos }
    local nextpos = pos + sig.num * 4 / sig.den
    if sigs[si + 1] and sigs[si + 1].beat < nextpos - eps then nextpos = sigs[si + 1].beat end
    pos = nextpos
  end
  return times, info
end

--- Beat times (seconds): the time-signature denominator's note value, from 0 up to `until`.
function M.beats(song, opts)
  local _, info = M.bars(song, opts)
  local segs = tempo_segments(song)
  local stop = song_until(song, opts)
  local out = {}
  for i, b in ipairs(info) do
    local step = 4 / b.denominator
    local bar_end = info[i + 1] and info[i + 1].beat or (b.beat + b.numerator * step)
    local pos = b.beat
    while pos < bar_end - 1e-9 do
      local t = beat_to_time(segs, pos)
      if t > stop + 1e-9 then return out end
      out[#out + 1] = t
      pos = pos + step
    end
  end
  return out
end

--- pretty_midi's get_end_time() for a (possibly edited) song table.
function M.end_time(song)
  local t = 0
  for _, inst in ipairs(song.instruments or {}) do
    for _, n in ipairs(inst.notes or {}) do if n.stop > t then t = n.stop end end
    for _, c in ipairs(inst.cc or {}) do if c.time > t then t = c.time end end
    for _, b in ipairs(inst.bends or {}) do if b.time > t then t = b.time end end
  end
  for _, list in ipairs { song.tempos or {}, song.time_signatures or {}, song.key_signatures or {},
                          song.lyrics or {}, song.texts or {} } do
    for _, e in ipairs(list) do if (e.time or 0) > t then t = e.time end end
  end
  return t
end

--- Number of notes over all instruments.
function M.note_count(song)
  local n = 0
  for _, inst in ipairs(song.instruments or {}) do n = n + #(inst.notes or {}) end
  return n
end

return M
