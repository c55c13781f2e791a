-- sao.synth — render MIDI instruments to audio with FluidSynth (runtime/synth.c).
--
--   local song = sao.midi.read("song.mid")
--   local stems = sao.synth.render_song(song, { mode = "notes", tail = 2.0 })
--   for _, s in ipairs(stems) do if s.audio then print(s.instrument.name, s.audio:size(2)) end end
--   local one = sao.synth.render_instrument(song.instruments[1])      -- f32 [2, S] at 44.1 kHz
--
-- The instrument map says which SoundFont preset plays each (program, is_drum); the default
-- covers all 128 GM programs (bank 0) and the drum kits (bank 128) of the default SoundFont:
--   local map = sao.synth.map()                          -- or sao.synth.map{ soundfont = "/x.sf2" }
--   map:set(33, false, { soundfont = "/my/bass.sf2", bank = 0, preset = 5 })
--   map:set(81, false, false)                            -- never render program 81 (skipped)
--   sao.synth.render_song(song, { map = map })
-- Synth handles (a FluidSynth instance with its SoundFonts loaded once) are shared per Lua state
-- and per settings; see docs/midi.md for the options and the timing/determinism guarantees.
local ffi = require "ffi"
local core = require "sao.ffi"
local midi = require "sao.midi"
local gm = require "sao.gm"
local T = require "sao.tensor"
local C = core.C

local M = {}

M.DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

--- The SoundFont used when the map names none: $SAO_SOUNDFONT, else FluidR3_GM (Debian
-- package fluid-soundfont-gm).
function M.default_soundfont()
  local env = os.getenv("SAO_SOUNDFONT")
  if env and env ~= "" then return env end
  return M.DEFAULT_SOUNDFONT
end

M.defaults = {
  mode = "notes",          -- "notes": note on/off only (the seed); "full": + CC, pitch bend, sustain
  sample_rate = 44100,
  tail = 2.0,              -- seconds of release after the last event, at most
  silence_db = -90,        -- the tail ends earlier once below this level; false: fixed tail
  gain = 0.2,              -- FluidSynth's master gain (its default)
  reverb = false,          -- FluidSynth's global reverb / chorus: off for determinism and dry stems
  chorus = false,
  polyphony = 256,
  interpolation = nil,     -- nil: FluidSynth's default (4th order); 1, 2, 4, 7 (sinc)
}

local function opt(opts, k)
  local v = opts and opts[k]
  if v == nil then return M.defaults[k] end
  return v
end

-- ---- synth handles -----------------------------------------------------------------------------
local Synth = {}
Synth.__index = Synth

--- A new synth handle: sao.synth.new{ sample_rate=, gain=, reverb=, chorus=, polyphony=, interpolation= }
function M.new(o)
  o = o or {}
  local cfg = ffi.new("sao_synth_config")
  cfg.sample_rate = opt(o, "sample_rate")
  cfg.gain = opt(o, "gain")
  cfg.polyphony = opt(o, "polyphony")
  cfg.reverb = opt(o, "reverb") and 1 or 0
  cfg.chorus = opt(o, "chorus") and 1 or 0
  cfg.interpolation = opt(o, "interpolation") or 0
  cfg.channels = o.channels or 0
  local p = core.checkp(C.sao_synth_new(core.ctx, cfg), 2)
  return setmetatable({ p = ffi.gc(p, C.sao_synth_free), fonts = {}, sample_rate = cfg.sample_rate,
                        channels = math.max(16, math.ceil((o.channels or 64) / 16) * 16) }, Synth)
end

--- Loads a SoundFont once per handle; returns its id.
function Synth:load(path)
  local id = self.fonts[path]
  if id then return id end
  local out = ffi.new("int32_t[1]")
  core.check(C.sao_synth_load(core.ctx, self.p, path, out), 2)
  self.fonts[path] = out[0]
  return out[0]
end

--- Name of (bank, preset) in a loaded SoundFont, or nil and the reason.
function Synth:preset_name(sfont, bank, preset)
  local buf = ffi.new("char[128]")
  if C.sao_synth_preset(core.ctx, self.p, sfont, bank, preset, buf, 128) ~= 0 then
    local msg = ffi.string(C.sao_ctx_error(core.ctx))
    C.sao_ctx_clear_error(core.ctx)
    return nil, msg
  end
  return ffi.string(buf)
end

local MODES = { notes = 0, full = 1 }

--- Renders parts {{inst=, sfont=, bank=, preset=}...} together; returns an f32 [2, S] tensor.
function Synth:render(parts, opts)
  local mode = MODES[opt(opts, "mode")]
  if not mode then error("sao.synth: mode must be \"notes\" or \"full\", got " .. tostring(opts.mode), 2) end
  local keep = {}
  local cparts = ffi.new("sao_synth_part[?]", math.max(#parts, 1))
  for i, p in ipairs(parts) do
    local ci = ffi.new("sao_midi_instrument")
    keep[#keep + 1] = ci
    midi.instrument_to_c(p.inst, ci, keep)
    cparts[i - 1].inst = ci
    cparts[i - 1].sfont = p.sfont
    cparts[i - 1].bank = p.bank
    cparts[i - 1].preset = p.preset
  end
  local o = ffi.new("sao_synth_render_opts")
  o.mode = mode
  o["until"] = (opts and opts["until"]) or 0
  o.tail = opt(opts, "tail")
  local sdb = opt(opts, "silence_db")
  o.silence_db = sdb and sdb or 1
  self.anchor = keep            -- the arrays C reads through raw pointers stay reachable
  local t = C.sao_synth_render(core.ctx, self.p, #parts, cparts, o)
  self.anchor = nil
  return T.from_ptr(t)          -- raises the render's error when t is NULL
end

function Synth:free()
  if self.p then
    C.sao_synth_free(ffi.gc(self.p, nil))
    self.p = nil
  end
end

local handles = {}

--- The shared handle for these settings (created on first use, kept for the Lua state).
function M.handle(o)
  local key = table.concat({ opt(o, "sample_rate"), opt(o, "gain"), tostring(opt(o, "reverb")),
                             tostring(opt(o, "chorus")), opt(o, "polyphony"), tostring(opt(o, "interpolation")) }, "|")
  local h = handles[key]
  if not h then
    h = M.new(o)
    handles[key] = h
  end
  return h
end

--- Frees every shared handle (their SoundFonts too).
function M.release()
  for k, h in pairs(handles) do h:free() handles[k] = nil end
end

-- ---- the instrument map ------------------------------------------------------------------------
local Map = {}
Map.__index = Map

--- The default map: every GM program -> {bank 0, preset = program}, drums -> {bank 128,
-- preset = program} (missing kits fall back to the standard kit at render time), all from
-- `soundfont` (default: sao.synth.default_soundfont()).
function M.map(o)
  o = o or {}
  local m = setmetatable({ soundfont = o.soundfont or M.default_soundfont(), melodic = {}, drums = {} }, Map)
  for p = 0, 127 do
    m.melodic[p] = { bank = 0, preset = p }
    m.drums[p] = { bank = 128, preset = p }
  end
  return m
end

local default_maps = {}
-- the default map for the default SoundFont, made once per Lua state (do not edit it: make your
-- own with sao.synth.map())
local function default_map()
  local sf = M.default_soundfont()
  default_maps[sf] = default_maps[sf] or M.map { soundfont = sf }
  return default_maps[sf]
end

--- The entry for (program, is_drum): a table {soundfont=, bank=, preset=}, or false (skip).
function Map:lookup(program, is_drum)
  local e = (is_drum and self.drums or self.melodic)[program]
  if e == nil then return false end
  return e
end

--- Sets the entry for (program, is_drum); `entry` false means "do not render".
function Map:set(program, is_drum, entry)
  if type(program) ~= "number" or program < 0 or program > 127 then
    error("sao.synth map:set: program must be 0..127", 2)
  end
  if entry ~= false and type(entry) ~= "table" then
    error("sao.synth map:set: entry must be a table {soundfont=, bank=, preset=} or false", 2)
  end
  (is_drum and self.drums or self.melodic)[program] = entry
  return self
end

-- Resolves an instrument to {sfont=, bank=, preset=, soundfont=, preset_name=}, with the GM
-- fallbacks: a missing drum kit -> the kit below it -> standard kit (bank 128, preset 0); a missing
-- melodic bank variation -> bank 0. Returns nil and a reason when the map skips it.
local function resolve(h, map, inst)
  local entry = map:lookup(inst.program, inst.is_drum)
  if not entry then
    return nil, string.format("no instrument map entry for program %d%s", inst.program,
                              inst.is_drum and " (drums)" or "")
  end
  local sf = entry.soundfont or map.soundfont or M.default_soundfont()
  local id = h:load(sf)
  local tries = { { entry.bank or 0, entry.preset or inst.program } }
  if inst.is_drum then
    local kit = entry.preset or inst.program
    for p = kit, 0, -1 do
      if gm.drum_kits[p] then tries[#tries + 1] = { 128, p } break end
    end
    tries[#tries + 1] = { 128, 0 }
  else
    tries[#tries + 1] = { 0, entry.preset or inst.program }
  end
  for _, t in ipairs(tries) do
    local name = h:preset_name(id, t[1], t[2])
    if name then
      return { sfont = id, bank = t[1], preset = t[2], soundfont = sf, preset_name = name }
    end
  end
  error(string.format("synth_render: %s has no preset %d in bank %d for program %d%s (fix the "
                      .. "instrument map entry)", sf, tries[1][2], tries[1][1], inst.program,
                      inst.is_drum and " (drums)" or ""), 3)
end

--- Renders one instrument table (from sao.midi) to an f32 [2, S] tensor starting at time 0.
-- opts: map, mode ("notes"|"full"), sample_rate, tail, silence_db, until (render at least this
-- long, e.g. song.end_time), gain, reverb, chorus, polyphony, interpolation, synth (a handle).
-- Returns the tensor and {soundfont=, bank=, preset=, preset_name=}; nil and a reason when the
-- map skips the instrument.
function M.render_instrument(inst, opts)
  opts = opts or {}
  local h = opts.synth or M.handle(opts)
  local map = opts.map or default_map()
  local r, why = resolve(h, map, inst)
  if not r then return nil, why end
  local audio = h:render({ { inst = inst, sfont = r.sfont, bank = r.bank, preset = r.preset } }, opts)
  return audio, r
end

--- Renders every instrument of a song separately (stems aligned at time 0; each is rendered at
-- least up to the song's end_time). Returns a list, one entry per instrument, in song order:
-- {index=, instrument=, audio=tensor|nil, skipped=reason|nil, soundfont=, bank=, preset=, preset_name=}.
function M.render_song(song, opts)
  opts = opts or {}
  local o = setmetatable({ ["until"] = opts["until"] or song.end_time or 0 }, { __index = opts })
  local out = {}
  for i, inst in ipairs(song.instruments or {}) do
    local audio, r = M.render_instrument(inst, o)
    local e = { index = i, instrument = inst, audio = audio }
    if audio then
      e.soundfont, e.bank, e.preset, e.preset_name = r.soundfont, r.bank, r.preset, r.preset_name
    else
      e.skipped = r
    end
    out[#out + 1] = e
  end
  return out
end

--- Renders a whole song in one pass (all instruments on their own channels) to one [2, S] tensor.
-- Skipped instruments are left out. Same options as render_instrument.
function M.render_mix(song, opts)
  opts = opts or {}
  local h = opts.synth or M.handle(opts)
  local map = opts.map or default_map()
  local parts = {}
  for _, inst in ipairs(song.instruments or {}) do
    local r = resolve(h, map, inst)
    if r then parts[#parts + 1] = { inst = inst, sfont = r.sfont, bank = r.bank, preset = r.preset } end
  end
  if #parts > h.channels then
    error(string.format("sao.synth.render_mix: %d instruments, the synth has %d channels (use "
                        .. "sao.synth.new{channels=%d})", #parts, h.channels, #parts), 2)
  end
  local o = setmetatable({ ["until"] = opts["until"] or song.end_time or 0 }, { __index = opts })
  return h:render(parts, o)
end

return M
