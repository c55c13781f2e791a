-- recipes/analyze.lua — analyse audio files: loudness, level, tempo, key and the evaluation
-- features (docs/analysis.md, "The analyze recipe").
--
--   sao recipes/analyze.lua FILE_OR_DIR... [--json] [--preset bgate|edma] [--both-presets]
--                                          [--quiet] [--ok-if-any]
--
-- Folders are searched recursively for wav, flac, ogg, oga, opus, mp3, aif(f) and au files.
-- --json prints one JSON object per file and line, in a fixed key order:
--   path, duration, sample_rate, channels, format, subtype, lufs, peak, peak_db, rms_db, crest_db, bpm,
--   bpm_confidence, bpm_alt, key, scale, key_strength, centroid, flatness, hp_ratio,
--   transient_sharpness, onset_rate (+ key_edma/scale_edma/key_strength_edma with
--   --both-presets, notes when something is undefined for that audio)
-- Without --json a table is printed instead. A file that cannot be analysed gives
-- {"path": ..., "error": ...} (or a table row saying so) and the run goes on; the error also goes
-- to stderr. A progress bar goes to stderr when a folder is given (--quiet: none).
-- Exit status: 0 when every file was analysed, 1 otherwise (--ok-if-any: 0 when at least one
-- was), 2 for a usage error or when no audio file was found.
require "sao.strict"
local sao = require "sao"
local ojson = require "sao.ojson"
local progress = require "sao.progress"
local corpus = require "sao.corpus"

local USAGE = "usage: sao recipes/analyze.lua FILE_OR_DIR... [--json] [--preset bgate|edma] [--both-presets] " ..
              "[--quiet] [--ok-if-any]\n"
local EXTENSIONS = { "wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "au" }
local FIELDS = { "path", "duration", "sample_rate", "channels", "format", "subtype", "lufs", "peak", "peak_db", "rms_db",
                 "crest_db", "bpm", "bpm_confidence", "bpm_alt", "key", "scale", "key_strength", "centroid",
                 "flatness", "hp_ratio", "transient_sharpness", "onset_rate", "key_edma", "scale_edma",
                 "key_strength_edma", "key_bgate", "scale_bgate", "key_strength_bgate", "notes", "error" }
-- decimals kept in the output (full precision is noise for these measurements)
local DIGITS = { duration = 4, lufs = 2, peak = 6, peak_db = 2, rms_db = 2, crest_db = 2, bpm = 2,
                 bpm_confidence = 3, bpm_alt = 2, key_strength = 4, key_strength_edma = 4, key_strength_bgate = 4,
                 centroid = 1, flatness = 6, hp_ratio = 4, transient_sharpness = 3, onset_rate = 3 }

local function fail(msg)
  io.stderr:write("analyze: " .. msg .. "\n" .. USAGE)
  os.exit(2)
end

-- ---- arguments ----------------------------------------------------------------------------------
local opts = { json = false, preset = "bgate", both = false, quiet = false, ok_if_any = false }
local inputs = {}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--json" then opts.json = true
  elseif a == "--preset" then
    opts.preset = arg[i + 1] or fail("--preset needs a value")
    if opts.preset ~= "bgate" and opts.preset ~= "edma" then fail("--preset is bgate or edma, not " .. opts.preset) end
    i = i + 1
  elseif a == "--both-presets" then opts.both = true
  elseif a == "--quiet" then opts.quiet = true
  elseif a == "--ok-if-any" then opts.ok_if_any = true
  elseif a == "-h" or a == "--help" then io.stdout:write(USAGE) os.exit(0)
  elseif a:sub(1, 2) == "--" then fail("unknown option " .. a)
  else inputs[#inputs + 1] = a end
  i = i + 1
end
if #inputs == 0 then fail("no file or folder given") end

-- ---- the file list: files as given, folders searched -------------------------------------------
local files, any_dir = {}, false
for _, p in ipairs(inputs) do
  if corpus.is_dir(p) then
    any_dir = true
    local found = corpus.list(p, { extensions = EXTENSIONS })
    if #found == 0 then io.stderr:write("analyze: " .. p .. ": no audio files (" .. table.concat(EXTENSIONS, ", ") .. ")\n") end
    for _, f in ipairs(found) do files[#files + 1] = f.path end
  else
    files[#files + 1] = p                       -- missing or unreadable: reported as that file's error
  end
end
if #files == 0 then
  io.stderr:write("analyze: no audio files to analyse\n")
  os.exit(2)
end

-- ---- output ---------------------------------------------------------------------------------------
local function round(x, d)
  if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then return x end
  local m = 10 ^ d
  return math.floor(x * m + 0.5) / m
end

local function json_line(row)
  local out = {}
  for k, v in pairs(row) do out[k] = DIGITS[k] and round(v, DIGITS[k]) or v end
  for _, k in ipairs(FIELDS) do
    if out[k] == nil and k ~= "error" and k ~= "notes" and not k:match("_edma$") and not k:match("_bgate$")
       and not row.error then
      out[k] = ojson.null                       -- undefined values are explicit nulls
    end
  end
  return ojson.encode(ojson.object(out, FIELDS))
end

local COLS = {
  { "file", 28 }, { "dur s", 7 }, { "sr", 6 }, { "ch", 2 }, { "LUFS", 6 }, { "peak dB", 7 }, { "BPM", 6 },
  { "conf", 4 }, { "key", 8 }, { "str", 4 }, { "centroid", 8 }, { "flat", 6 }, { "H/P", 6 }, { "trans", 7 },
}
local function fmt(v, f)
  if v == nil then return "-" end
  return string.format(f, v)
end
local function cell(s, w, left)
  s = tostring(s)
  if #s > w then s = left and ("…" .. s:sub(-(w - 1))) or s:sub(1, w) end
  return left and (s .. string.rep(" ", w - #s)) or (string.rep(" ", w - #s) .. s)
end
local function table_line(row)
  if row.error then return cell(row.path, COLS[1][2], true) .. "  error: " .. row.error end
  local v = {
    row.path, fmt(row.duration, "%.2f"), row.sample_rate, row.channels, fmt(row.lufs, "%.1f"),
    fmt(row.peak_db, "%.1f"), fmt(row.bpm, "%.1f"), fmt(row.bpm_confidence, "%.2f"),
    row.key and (row.key .. (row.scale == "minor" and " min" or " maj")) or "-", fmt(row.key_strength, "%.2f"),
    fmt(row.centroid, "%.0f"), fmt(row.flatness, "%.4f"), fmt(row.hp_ratio, "%.2f"),
    fmt(row.transient_sharpness, "%.1f"),
  }
  local s = {}
  for c, col in ipairs(COLS) do s[c] = cell(v[c], col[2], c == 1) end
  return table.concat(s, " ")
end

if not opts.json then
  local h = {}
  for c, col in ipairs(COLS) do h[c] = cell(col[1], col[2], c == 1) end
  print(table.concat(h, " "))
end

-- ---- the run ---------------------------------------------------------------------------------------
local bar = (any_dir and not opts.quiet) and progress.new { total = #files, label = "analyze", unit = "files" } or nil
local ok_count, failed = 0, 0
for _, path in ipairs(files) do
  local ok, row = pcall(sao.analysis.file, path, { key_preset = opts.preset, both_presets = opts.both })
  if not ok then
    local msg = tostring(row):gsub("^[^:]*%.lua:%d+: ", "")
    row = { path = path, error = msg }
    failed = failed + 1
    local line = "analyze: " .. path .. ": " .. msg
    if bar then bar:print(line) else io.stderr:write(line, "\n") end
  else
    ok_count = ok_count + 1
  end
  print(opts.json and json_line(row) or table_line(row))
  io.stdout:flush()
  if bar then bar:advance(1, path:match("[^/]*$")) end
  collectgarbage()
end
if bar then bar:finish() end
if failed > 0 and not opts.quiet then
  io.stderr:write(string.format("analyze: %d of %d files failed\n", failed, #files))
end
if failed == 0 or (opts.ok_if_any and ok_count > 0) then os.exit(0) end
os.exit(1)
