-- sao.clips — where to cut a song into training clips: on bar lines, preferring section changes.
--
--   local clips = require "sao.clips"
--   local plan = clips.plan(song, { min = 20, max = 35, target = 30, audio_length = 63.2 })
--   for _, c in ipairs(plan.clips) do print(c.start, c.stop, c.first_bar, c.bars) end
--   -- plan.sections: the song's sections; plan.bars: bar-line times; plan.novelty: per bar line
--
-- Everything here reads the MIDI (a sao.midi song table); nothing touches audio, so a plan costs
-- microseconds and is the same on every machine. DSP_SPEC §3.7, option 1 ("MIDI-native"):
--   * bar lines come from the tempo and time-signature maps (sao.midi.bars);
--   * every bar gets a feature vector: which instruments sound in it, its note density
--     (log onsets), mean velocity and a duration-weighted pitch-class histogram;
--   * novelty at a bar line = distance between the mean vector of the `context` bars before it
--     and of those after it (a one-dimensional checkerboard, Foote style), scaled to [0, 1];
--   * sections start at novelty peaks at least `min_section_bars` apart (plus the first and last
--     bar with music);
--   * clips: a dynamic programme over bar lines chooses non-overlapping clips whose lengths lie in
--     [min, max] seconds, maximising the music they cover, then the quality of their boundaries
--     (novelty, section starts, the 4-bar phrase grid counted from the first bar with music), and
--     closeness to `target`. The last clip may run on into the render's release tail.
-- Times are seconds from the start of the song; bar indices are 1-based (bar b spans
-- bars[b] .. bars[b + 1]).
local M = {}

M.defaults = {
  min = 20, max = 35, target = 30,   -- clip length window, seconds
  context = 4,                       -- bars on each side for the novelty
  min_section_bars = 4,              -- sections are at least this long
  section_threshold = 0.35,          -- novelty a section start needs (after scaling to [0, 1])
  w_boundary = 1.0,                  -- weight of boundary quality against coverage
  w_length = 0.5,                    -- weight of the distance to the target length
}

local function opt(o, k) if o and o[k] ~= nil then return o[k] end return M.defaults[k] end

-- index of the bar that holds time t: largest b with bars[b] <= t (1 when t is before the first)
local function bar_at(bars, t)
  local lo, hi = 1, #bars
  if t < bars[1] then return 1 end
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if bars[mid] <= t then lo = mid else hi = mid - 1 end
  end
  return lo
end
M.bar_at = bar_at

--- The song's end in time: the last note's end (pretty_midi end time of the notes only).
function M.music_end(song)
  local e = 0
  for _, inst in ipairs(song.instruments or {}) do
    for _, n in ipairs(inst.notes or {}) do if n.stop > e then e = n.stop end end
  end
  return e
end

function M.music_start(song)
  local s = math.huge
  for _, inst in ipairs(song.instruments or {}) do
    for _, n in ipairs(inst.notes or {}) do if n.start < s then s = n.start end end
  end
  return s == math.huge and 0 or s
end

--- Bar-line times from 0 up to the first bar line at or after the last note's end.
function M.bar_lines(song)
  local midi = require "sao.midi"
  local stop = M.music_end(song)
  local times = midi.bars(song, { ["until"] = stop + 60 })
  local out = {}
  for _, t in ipairs(times) do
    out[#out + 1] = t
    if t >= stop - 1e-9 then break end
  end
  if #out < 2 then out[#out + 1] = math.max(stop, (out[1] or 0) + 2) end   -- at least one bar
  return out
end

--- Per-bar feature vectors (plain Lua arrays) for bars 1 .. #bars - 1, plus per-bar activity.
-- Returns vectors, active (bar has a sounding note), onsets (notes starting in the bar).
function M.bar_features(song, bars)
  local nb = #bars - 1
  local insts = {}
  for _, inst in ipairs(song.instruments or {}) do
    if #(inst.notes or {}) > 0 then insts[#insts + 1] = inst end
  end
  local ni = #insts
  local sound, onsets, vel, pc = {}, {}, {}, {}
  for b = 1, nb do
    sound[b], onsets[b], vel[b], pc[b] = {}, 0, 0, {}
    for k = 1, 12 do pc[b][k] = 0 end
  end
  for k, inst in ipairs(insts) do
    for _, n in ipairs(inst.notes) do
      local b0 = bar_at(bars, n.start)
      if b0 <= nb then
        onsets[b0] = onsets[b0] + 1
        vel[b0] = vel[b0] + n.velocity
      end
      -- sounding bars: from the onset's bar to the bar that holds the note's end (drums: onset only)
      local b1 = inst.is_drum and b0 or bar_at(bars, math.max(n.start, n.stop - 1e-6))
      for b = b0, math.min(b1, nb) do
        sound[b][k] = true
        if not inst.is_drum then
          local s = math.max(n.start, bars[b])
          local e = math.min(n.stop, bars[b + 1])
          if e > s then
            local c = n.pitch % 12 + 1
            pc[b][c] = pc[b][c] + (e - s)
          end
        end
      end
    end
  end
  local max_on = 0
  for b = 1, nb do if onsets[b] > max_on then max_on = onsets[b] end end
  local vectors, active = {}, {}
  for b = 1, nb do
    local v = {}
    local any = false
    for k = 1, ni do
      v[k] = sound[b][k] and 1 or 0
      if sound[b][k] then any = true end
    end
    active[b] = any
    v[ni + 1] = max_on > 0 and math.log(1 + onsets[b]) / math.log(1 + max_on) or 0
    v[ni + 2] = onsets[b] > 0 and 0.5 * vel[b] / onsets[b] / 127 or 0
    local tot = 0
    for c = 1, 12 do tot = tot + pc[b][c] end
    for c = 1, 12 do v[ni + 2 + c] = tot > 0 and 0.5 * pc[b][c] / tot or 0 end
    vectors[b] = v
  end
  return vectors, active, onsets
end

--- Novelty at each bar line (index b = the start of bar b), scaled so the largest is 1.
-- nov[1] and nov[#bars] (the song's edges) are 0 here; callers treat the edges separately.
function M.novelty(vectors, nbars_lines, context)
  context = context or M.defaults.context
  local nb = #vectors
  local nov = {}
  for b = 1, nbars_lines do nov[b] = 0 end
  local dim = vectors[1] and #vectors[1] or 0
  local maxv = 0
  for b = 2, nb do
    local l0, r1 = math.max(1, b - context), math.min(nb, b + context - 1)
    local d2 = 0
    for j = 1, dim do
      local L, R = 0, 0
      for x = l0, b - 1 do L = L + vectors[x][j] end
      for x = b, r1 do R = R + vectors[x][j] end
      local diff = L / (b - l0) - R / (r1 - b + 1)
      d2 = d2 + diff * diff
    end
    nov[b] = math.sqrt(d2)
    if nov[b] > maxv then maxv = nov[b] end
  end
  if maxv > 0 then for b = 1, nbars_lines do nov[b] = nov[b] / maxv end end
  return nov
end

-- first and last+1 bar with music (bar indices)
local function music_span(active)
  local first, last
  for b = 1, #active do
    if active[b] then first = first or b; last = b end
  end
  return first or 1, (last or #active) + 1
end

--- Section starts: novelty peaks >= threshold, greedily by height, min_section_bars apart, plus
-- the first bar with music and the end. Returns a list of { first_bar, last_bar (exclusive), start,
-- stop, confidence } in time order.
function M.sections(bars, nov, active, o)
  local minb = opt(o, "min_section_bars")
  local thr = opt(o, "section_threshold")
  local first, stop_bar = music_span(active)
  local cands = {}
  for b = first + 1, stop_bar - 1 do
    if nov[b] >= thr and nov[b] >= (nov[b - 1] or 0) and nov[b] >= (nov[b + 1] or 0) then
      cands[#cands + 1] = b
    end
  end
  table.sort(cands, function(x, y) if nov[x] ~= nov[y] then return nov[x] > nov[y] end return x < y end)
  local chosen = { first, stop_bar }
  local function far(b)
    for _, c in ipairs(chosen) do if math.abs(c - b) < minb then return false end end
    return true
  end
  for _, b in ipairs(cands) do if far(b) then chosen[#chosen + 1] = b end end
  table.sort(chosen)
  local out = {}
  for i = 1, #chosen - 1 do
    local b0, b1 = chosen[i], chosen[i + 1]
    out[#out + 1] = { first_bar = b0, last_bar = b1, start = bars[b0], stop = bars[b1],
                      confidence = (i == 1) and 1 or nov[b0] }
  end
  return out
end

--- Plans the clips of a song. o: min, max, target (seconds), audio_length (the render's length:
-- the last clip may end there, in the release tail), context, min_section_bars,
-- section_threshold, w_boundary, w_length.
-- audio_length is best the end of the audible audio (after stripping trailing silence): bar lines
-- after it are not used, and a clip may end there.
-- Returns { clips = {{start, stop, first_bar, last_bar, bars, score}...}, sections, bars, novelty,
--           active, music_start_bar, reason (when no clip fits) }.
function M.plan(song, o)
  o = o or {}
  local mn, mx, target = opt(o, "min"), opt(o, "max"), opt(o, "target")
  if mn > mx then error("clips.plan: min (" .. mn .. " s) > max (" .. mx .. " s)", 2) end
  target = math.min(math.max(target, mn), mx)
  local bars = M.bar_lines(song)
  local vectors, active = M.bar_features(song, bars)
  local nov = M.novelty(vectors, #bars, opt(o, "context"))
  local sections = M.sections(bars, nov, active, o)
  local first, stop_bar = music_span(active)

  -- cut points: bar lines (index = bar) up to the end of the audio when it is known, plus that
  -- end itself when it lies past the last bar line kept (the release tail)
  local pts = {}
  local stop_t = o.audio_length
  for b = 1, #bars do
    if not stop_t or bars[b] <= stop_t + 1e-6 or b == 1 then pts[#pts + 1] = { t = bars[b], bar = b } end
  end
  local last_bar = pts[#pts].bar
  local tail_pt
  if stop_t and stop_t > pts[#pts].t + 0.05 then
    tail_pt = { t = stop_t, bar = last_bar, tail = true }
    pts[#pts + 1] = tail_pt
  end
  local is_section = {}
  for _, s in ipairs(sections) do is_section[s.first_bar] = true; is_section[s.last_bar] = true end
  for _, p in ipairs(pts) do
    local b = p.bar
    local grid = (b - first) % 4 == 0 and 1 or 0
    local sec = (is_section[b] or p.tail) and 1 or 0
    p.score = 0.4 * (p.tail and 1 or nov[b]) + 0.3 * sec + 0.3 * grid
  end
  -- music (seconds of bars with sounding notes) before each point, for coverage
  local cum = { [1] = 0 }
  for b = 1, #bars - 1 do cum[b + 1] = cum[b] + (active[b] and (bars[b + 1] - bars[b]) or 0) end
  -- the tail: the release after the last bar line, or the part of a bar before the audio ends
  local tail_music = 0
  if tail_pt and (last_bar >= #bars or active[last_bar]) then tail_music = tail_pt.t - bars[last_bar] end
  local function covered(i, j)
    local pi, pj = pts[i], pts[j]
    local c = cum[pj.bar] - cum[pi.bar]
    if pj.tail then c = c + tail_music end
    return c
  end

  local wb, wl = opt(o, "w_boundary"), opt(o, "w_length")
  local span = math.max(mx - mn, 1)
  local best, from = { [1] = 0 }, {}
  for j = 2, #pts do
    best[j], from[j] = best[j - 1], { j - 1, false }         -- skip the gap pts[j-1] .. pts[j]
    for i = j - 1, 1, -1 do
      local dur = pts[j].t - pts[i].t
      if dur > mx + 1e-9 then break end
      if dur >= mn - 1e-9 then
        local cov = covered(i, j)
        if cov >= mn - 1e-9 then
          local r = cov / target + wb * (cov / target) * 0.5 * (pts[i].score + pts[j].score)
                    - wl * ((dur - target) / span) ^ 2
          if best[i] + r > best[j] + 1e-12 then best[j], from[j] = best[i] + r, { i, true, r } end
        end
      end
    end
  end
  local out = {}
  local j = #pts
  while j > 1 do
    local f = from[j]
    if f[2] then
      local pi, pj = pts[f[1]], pts[j]
      table.insert(out, 1, { start = pi.t, stop = pj.t, first_bar = pi.bar, last_bar = pj.bar,
                             bars = pj.bar - pi.bar, tail = pj.tail or nil, score = f[3] })
    end
    j = f[1]
  end
  local res = { clips = out, sections = sections, bars = bars, novelty = nov, active = active,
                music_start_bar = first, music_stop_bar = stop_bar }
  if #out == 0 then
    local music = cum[last_bar] + tail_music
    res.reason = string.format("no clip fits the %g-%g s window (%.1f s of music)", mn, mx, music)
  end
  return res
end

-- ---- what the MIDI says about a time window ----------------------------------------------------

--- The tempo (BPM) that lasts longest in [t0, t1), and whether the file set it (false: the
-- implicit 120 BPM of a file without tempo events). Also the number of distinct tempi seen.
function M.midi_tempo(song, t0, t1)
  local tempos = song.tempos or {}
  t1 = math.min(t1, math.max(song.end_time or 0, song.length or 0, t0 + 1e-3))
  local total = {}
  local explicit = false
  local n = 0
  for i, e in ipairs(tempos) do
    local s = math.max(e.time or 0, t0)
    local stop = math.min(tempos[i + 1] and tempos[i + 1].time or math.huge, t1)
    if e.tempo_us then explicit = true end
    if stop > s then
      local bpm = math.floor((e.tempo_us and 6e7 / e.tempo_us or e.bpm) * 100 + 0.5) / 100
      if not total[bpm] then n = n + 1 end
      total[bpm] = (total[bpm] or 0) + (stop - s)
    end
  end
  local best, bt = nil, -1
  for bpm, d in pairs(total) do if d > bt or (d == bt and bpm < best) then best, bt = bpm, d end end
  return best or 120, explicit, n
end

--- The key signature that lasts longest in [t0, t1): a table {key = 0..23, name = "A minor",
-- tonic = "A", mode = "Minor"} or nil when the file has none.
function M.midi_key(song, t0, t1)
  local ks = song.key_signatures or {}
  if #ks == 0 then return nil end
  local best, bt
  for i, e in ipairs(ks) do
    local s = math.max(e.time or 0, t0)
    local stop = math.min(ks[i + 1] and ks[i + 1].time or math.huge, t1)
    -- a signature at the window's start that began before it counts from t0
    local d = stop - s
    if d > 0 and (not bt or d > bt) then best, bt = e, d end
  end
  if not best then best = ks[#ks] end
  local name = best.name or require("sao.midi").key_name(best.key, best.sharps)
  local tonic = name:match("^(%S+)")
  return { key = best.key, name = name, tonic = tonic, mode = best.key >= 12 and "Minor" or "Major" }
end

--- The time signature at time t: "4/4".
function M.midi_time_signature(song, t)
  local sig = "4/4"
  for _, e in ipairs(song.time_signatures or {}) do
    if (e.time or 0) <= t + 1e-9 then sig = e.numerator .. "/" .. e.denominator else break end
  end
  return sig
end

--- Indices (into song.instruments) of the instruments with a note sounding in [t0, t1).
function M.instruments_in(song, t0, t1)
  local out = {}
  for k, inst in ipairs(song.instruments or {}) do
    for _, n in ipairs(inst.notes or {}) do
      if n.start < t1 and n.stop > t0 then out[#out + 1] = k; break end
    end
  end
  return out
end

return M
