-- sao.corpus — a MIDI corpus on disk → the list of songs worth rendering, and why the others are not.
--
--   local corpus = require "sao.corpus"
--   local c = corpus.ingest("clean_midi")        -- Lakh "clean_midi" layout: Artist/Song.mid
--   for _, it in ipairs(c.items) do print(it.status, it.source, it.reason) end
--   for _, it in ipairs(c.kept) do ... it.path, it.artist, it.title, it.artist_dir, it.song_dir ... end
--
-- The rules (DSP_SPEC §1.1, as the seed cleaned the Lakh corpus), applied in this order:
--   1. every .mid/.midi/.kar/.rmi file under the folder, sorted by relative path (bytewise), so
--      every run and every shard sees the same order;
--   2. content de-duplication: files whose bytes are identical (SHA-256) are one song; the first
--      in that order is kept, the others are "skipped: same content as <source>";
--   3. each remaining file is parsed (sao.midi): a file that does not parse is "failed" with the
--      parser's message; one without a single note is "skipped: no notes";
--   4. name de-duplication: file names are compared lower-cased, and "Song.1.mid", "Song.2.mid" are
--      copies of "Song.mid" (same artist folder). Of each group the parseable file with the most
--      instruments is kept (ties: the unnumbered original, then the lowest number); the others are
--      "skipped: duplicate of <source>". A group whose only parseable member is a copy keeps it.
-- An item's title is its file name without the extension and without a ".N" copy number (a file
-- that has no original next to it keeps its whole name: "Vol.2.mid" alone is "Vol.2"); its artist
-- is the name of the folder that holds it ("Unknown Artist" at the top level).
--
-- Kept items get artist_dir/song_dir: sanitised names (corpus.sanitize) made unique among kept
-- items without regard to case (" (2)", " (3)" appended in corpus order), so two songs never
-- share an output folder, even on a case-insensitive file system.
local ffi = require "ffi"
local sao = require "sao"

local M = {}

M.EXTENSIONS = { "mid", "midi", "kar", "rmi" }

local fs = require "sao.fs"
local shell_quote, is_dir = fs.quote, fs.is_dir
M.shell_quote, M.is_dir = shell_quote, is_dir

--- Every MIDI file under dir: a list of { path = dir/rel, rel = "Artist/Song.mid" }, sorted by rel.
-- Symbolic links are followed. Raises when dir is not a readable folder.
function M.list(dir, opts)
  assert(type(dir) == "string", "sao.corpus.list(dir): dir must be a string")
  if not is_dir(dir) then
    error("corpus: " .. dir .. ": not a folder (give --midi the folder that holds Artist/Song.mid files)", 2)
  end
  local exts = (opts and opts.extensions) or M.EXTENSIONS
  local names = {}
  for i, e in ipairs(exts) do
    names[#names + 1] = (i > 1 and "-o " or "") .. "-iname " .. shell_quote("*." .. e)
  end
  local root = dir:gsub("/+$", "")
  if root == "" then root = "/" end
  local cmd = "find -L " .. shell_quote(root) .. " -type f \\( " .. table.concat(names, " ") ..
              " \\) -print0 2>/dev/null"
  local p = assert(io.popen(cmd, "r"))
  local all = p:read("*a")
  p:close()
  local out = {}
  local prefix = root == "/" and "/" or root .. "/"
  for path in all:gmatch("([^%z]+)%z") do
    local rel = path:sub(1, #prefix) == prefix and path:sub(#prefix + 1) or path
    out[#out + 1] = { path = path, rel = rel }
  end
  table.sort(out, function(a, b) return a.rel < b.rel end)
  return out
end

--- SHA-256 (hex) of a string.
function M.sha256(s)
  local out = ffi.new("char[65]")
  sao.check(sao.C.sao_sha256_hex(sao.ctx, s, #s, out), 2)
  return ffi.string(out, 64)
end

--- SHA-256 (hex) of a file's bytes, and its size; nil, message when it cannot be read.
function M.hash_file(path)
  local bytes, err = fs.read(path)
  if not bytes then return nil, err end
  return M.sha256(bytes), #bytes
end

--- Shard (1..n) of a source path: a stable hash, the same on every machine and every run.
function M.shard_of(source, n)
  if not n or n <= 1 then return 1 end
  return tonumber(M.sha256(source):sub(1, 8), 16) % n + 1
end

--- Parses "i/n", 1-based ("1/4" .. "4/4"); returns i, n. nil or "" is "1/1". A 0-based "0/4" is
-- an error rather than a guess, so that no shard is silently built twice or never.
function M.parse_shard(s)
  if s == nil or s == "" then return 1, 1 end
  local i, n = tostring(s):match("^%s*(%d+)%s*/%s*(%d+)%s*$")
  i, n = tonumber(i), tonumber(n)
  if not i or not n or n < 1 or i < 1 or i > n then
    error("corpus: --shard '" .. tostring(s) .. "': expected i/n with 1 <= i <= n (e.g. 2/8)", 2)
  end
  return i, n
end

--- A name safe as one path component: drops / \ : * ? " < > | and control characters (the seed
-- also dropped these), folds runs of blanks, trims blanks and leading dots, keeps at most
-- `max_bytes` (120) bytes without cutting a UTF-8 sequence; "" becomes `fallback` ("untitled").
function M.sanitize(name, fallback, max_bytes)
  max_bytes = max_bytes or 120
  local s = tostring(name or "")
  s = s:gsub('[/\\:%*%?"<>|%c]', "")
  s = s:gsub("%s+", " ")
  s = s:gsub("^[%s%.]+", ""):gsub("%s+$", "")
  if #s > max_bytes then
    local cut = max_bytes
    -- back off continuation bytes (10xxxxxx) so that a multi-byte character is not split
    while cut > 0 and s:byte(cut + 1) and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    s = s:sub(1, cut):gsub("%s+$", "")
  end
  if s == "" then s = fallback or "untitled" end
  return s
end

--- Splits a relative path into (artist, file stem, copy number or nil, extension).
-- "ABBA/Dancing Queen.1.mid" -> "ABBA", "Dancing Queen", 1, "mid".
function M.split_name(rel)
  local dir, file = rel:match("^(.*)/([^/]+)$")
  if not dir then dir, file = "", rel end
  local artist = dir:match("([^/]+)$") or ""
  local stem, ext = file:match("^(.*)%.([^%.]+)$")
  if not stem then stem, ext = file, "" end
  local base, n = stem:match("^(.+)%.(%d+)$")
  if base then return artist, base, tonumber(n), ext, stem end
  return artist, stem, nil, ext, stem
end

-- instruments that have at least one note, and the note count
local function count(song)
  local insts, notes = 0, 0
  for _, inst in ipairs(song.instruments or {}) do
    if #(inst.notes or {}) > 0 then insts = insts + 1; notes = notes + #inst.notes end
  end
  return insts, notes
end

--- Reads a corpus folder and classifies every file (see the rules at the top).
-- opts: read (function(path) -> song table, raises on bad input; default sao.midi.read),
--       on_item (function(item, i, n), called after each file is looked at, e.g. a progress bar),
--       extensions, files (a list as corpus.list returns, instead of walking dir).
-- Returns { root = dir, items = {...} (corpus order), kept = {...}, counts = {kind = n} }.
-- An item: { source, path, artist, title, copy, size, hash, status = "kept"|"skipped"|"failed",
--            reason, kind, instruments, notes, length, artist_dir, song_dir }.
-- `kind` is a short label for summaries: kept, same-content, parse-error, no-notes, duplicate-name,
-- unreadable.
function M.ingest(dir, opts)
  opts = opts or {}
  local read = opts.read or function(p) return sao.midi.read(p) end
  local files = opts.files or M.list(dir, opts)
  local items, by_hash = {}, {}
  for i, f in ipairs(files) do
    local artist, base, copy, _, stem = M.split_name(f.rel)
    local it = { source = f.rel, path = f.path, artist = artist ~= "" and artist or "Unknown Artist",
                 base = base, stem = stem, copy = copy }
    local hash, size = M.hash_file(f.path)
    if not hash then
      it.status, it.kind, it.reason = "failed", "unreadable", "cannot read the file: " .. tostring(size)
    else
      it.hash, it.size = hash, size
      local first = by_hash[hash]
      if first then
        it.status, it.kind, it.reason = "skipped", "same-content", "same content as " .. first.source
      else
        by_hash[hash] = it
        local ok, song = pcall(read, f.path)
        if not ok then
          local msg = tostring(song):gsub("^[^\n]-:%d+: ", "")   -- drop a Lua file:line prefix
          it.status, it.kind, it.reason = "failed", "parse-error", "cannot parse: " .. msg
        else
          it.instruments, it.notes = count(song)
          it.length = song.length
          if it.notes == 0 then
            it.status, it.kind, it.reason = "skipped", "no-notes", "no notes"
          else
            it.status, it.kind = "candidate", "kept"
          end
        end
      end
    end
    items[#items + 1] = it
    if opts.on_item then opts.on_item(it, i, #files) end
  end

  -- name groups: (artist folder, lower-cased base name); the folder path is part of the key
  local groups, order = {}, {}
  for _, it in ipairs(items) do
    local folder = it.source:match("^(.*)/[^/]+$") or ""
    local key = folder:lower() .. "\0" .. it.base:lower()
    if not groups[key] then groups[key] = {}; order[#order + 1] = key end
    local g = groups[key]
    g[#g + 1] = it
  end
  for _, key in ipairs(order) do
    local g = groups[key]
    local best
    for _, it in ipairs(g) do
      if it.status == "candidate" then
        if not best or it.instruments > best.instruments
           or (it.instruments == best.instruments and (it.copy or -1) < (best.copy or -1)) then
          best = it
        end
      end
    end
    for _, it in ipairs(g) do
      -- the title: the base name when the file has siblings in its group, else the whole stem
      it.title = (#g > 1) and it.base or it.stem
      if it.status == "candidate" then
        if it == best then
          it.status, it.kind = "kept", "kept"
          it.reason = (#g > 1) and string.format("best of %d copies (%d instruments)", #g, it.instruments) or nil
        else
          it.status, it.kind = "skipped", "duplicate-name"
          it.reason = string.format("duplicate of %s (%d instruments there, %d here)", best.source,
                                    best.instruments, it.instruments)
        end
      end
    end
  end

  -- output folders: sanitised, unique without regard to case
  local kept, claimed, counts = {}, {}, {}
  for _, it in ipairs(items) do
    it.base, it.stem = nil, nil
    counts[it.kind] = (counts[it.kind] or 0) + 1
    if it.status == "kept" then
      local a = M.sanitize(it.artist, "Unknown Artist")
      local s = M.sanitize(it.title, "untitled")
      local sd, n = s, 1
      while claimed[(a .. "/" .. sd):lower()] do
        n = n + 1
        sd = s .. " (" .. n .. ")"
      end
      claimed[(a .. "/" .. sd):lower()] = true
      it.artist_dir, it.song_dir = a, sd
      kept[#kept + 1] = it
    end
  end
  return { root = dir, items = items, kept = kept, counts = counts }
end

return M
