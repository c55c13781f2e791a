-- sao.corpus: walking a Lakh-style corpus, content and name de-duplication (the seed's rules),
-- corrupt and empty files reported while the batch goes on, output folder names, shards.
local sao = require "sao"
local corpus = require "sao.corpus"
local songs = require "support.songs"

local function by_source(c)
  local t = {}
  for _, it in ipairs(c.items) do t[it.source] = it end
  return t
end

local function song_with(parts, bars)
  return songs.make { bpm = 120, sections = { { bars = bars or 2, parts = parts } } }
end

describe("corpus", function()
  it("lists MIDI files of any extension case, sorted, and nothing else", function()
    local d = songs.tmpdir()
    songs.write(d, "B/x.mid", song_with { "piano" })
    songs.write(d, "A/y.MID", song_with { "bass" })
    songs.write(d, "A/z.midi", song_with { "lead" })
    songs.write_bytes(d, "A/notes.txt", "hello")
    local files = corpus.list(d)
    local rels = {}
    for i, f in ipairs(files) do rels[i] = f.rel end
    assert.same({ "A/y.MID", "A/z.midi", "B/x.mid" }, rels)
    assert.equal(d .. "/A/y.MID", files[1].path)
  end)

  it("explains a missing corpus folder", function()
    assert.has_error(function() corpus.list("/nonexistent/corpus") end,
      "corpus: /nonexistent/corpus: not a folder (give --midi the folder that holds Artist/Song.mid files)")
  end)

  it("keeps one copy of byte-identical files (content hash), whatever their names", function()
    local d = songs.tmpdir()
    local p = songs.write(d, "Artist A/Song.mid", song_with { "piano", "bass" })
    songs.write_bytes(d, "Artist B/Other Name.mid", songs.read_bytes(p))
    local c = corpus.ingest(d)
    local it = by_source(c)
    assert.equal("kept", it["Artist A/Song.mid"].status)
    assert.equal("skipped", it["Artist B/Other Name.mid"].status)
    assert.equal("same content as Artist A/Song.mid", it["Artist B/Other Name.mid"].reason)
    assert.equal("same-content", it["Artist B/Other Name.mid"].kind)
    assert.equal(it["Artist A/Song.mid"].hash, it["Artist B/Other Name.mid"].hash)
    assert.equal(64, #it["Artist A/Song.mid"].hash)
    assert.equal(1, #c.kept)
  end)

  it("keeps the name duplicate with more instruments (Song.1.mid vs Song.mid)", function()
    local d = songs.tmpdir()
    songs.write(d, "Band/Song.mid", song_with { "piano", "bass" })
    songs.write(d, "Band/Song.1.mid", song_with { "piano", "bass", "drums" })
    songs.write(d, "Band/Song.2.mid", song_with { "piano" })
    local c = corpus.ingest(d)
    local it = by_source(c)
    assert.equal("kept", it["Band/Song.1.mid"].status)
    assert.equal("Song", it["Band/Song.1.mid"].title)
    assert.equal("Song", it["Band/Song.1.mid"].song_dir)
    assert.equal("skipped", it["Band/Song.mid"].status)
    assert.equal("duplicate of Band/Song.1.mid (3 instruments there, 2 here)", it["Band/Song.mid"].reason)
    assert.equal("duplicate-name", it["Band/Song.2.mid"].kind)
    assert.equal(1, #c.kept)
  end)

  it("prefers the original on a tie, and compares names lower-cased", function()
    local d = songs.tmpdir()
    songs.write(d, "Band/Here Comes the Sun.mid", song_with({ "piano" }, 2))
    songs.write(d, "Band/here comes the sun.1.mid", song_with({ "bass" }, 3))
    songs.write(d, "Band/HERE COMES THE SUN.mid", song_with({ "lead" }, 4))
    local c = corpus.ingest(d)
    assert.equal(1, #c.kept)
    -- sorted bytewise: "HERE..." < "Here..." < "here..."; both originals tie, the first one wins
    assert.equal("Band/HERE COMES THE SUN.mid", c.kept[1].source)
    for _, it in ipairs(c.items) do
      if it ~= c.kept[1] then assert.equal("skipped", it.status) end
    end
  end)

  it("keeps the copy when the original does not parse, and reports the corrupt file", function()
    local d = songs.tmpdir()
    songs.write_bytes(d, "Band/Tune.mid", "MThd\0\0\0\6\0\1\0\2\1\224MTrk\0\0\1\0\0\255")   -- truncated
    songs.write(d, "Band/Tune.1.mid", song_with { "piano" })
    local c = corpus.ingest(d)
    local it = by_source(c)
    assert.equal("failed", it["Band/Tune.mid"].status)
    assert.equal("parse-error", it["Band/Tune.mid"].kind)
    assert.matches("^cannot parse: ", it["Band/Tune.mid"].reason)
    assert.matches("Tune%.mid", it["Band/Tune.mid"].reason)
    assert.equal("kept", it["Band/Tune.1.mid"].status)
    assert.equal("Tune", it["Band/Tune.1.mid"].title)
  end)

  it("reports corrupt and empty files and goes on with the batch", function()
    local d = songs.tmpdir()
    songs.write_bytes(d, "A/garbage.mid", "this is not a MIDI file at all")
    songs.write_bytes(d, "A/empty.mid", "")
    local empty = sao.midi.new { bpm = 100 }
    songs.write(d, "A/no notes.mid", empty)
    songs.write(d, "B/good.mid", song_with { "piano", "drums" })
    local seen = 0
    local c = corpus.ingest(d, { on_item = function() seen = seen + 1 end })
    local it = by_source(c)
    assert.equal(4, seen)
    assert.equal("failed", it["A/garbage.mid"].status)
    assert.equal("failed", it["A/empty.mid"].status)
    assert.equal("skipped", it["A/no notes.mid"].status)
    assert.equal("no notes", it["A/no notes.mid"].reason)
    assert.equal("kept", it["B/good.mid"].status)
    assert.equal(2, it["B/good.mid"].instruments)
    assert.same({ ["parse-error"] = 2, ["no-notes"] = 1, kept = 1 }, c.counts)
  end)

  it("keeps a whole name when a file has no original beside it", function()
    local d = songs.tmpdir()
    songs.write(d, "X/Vol.2.mid", song_with { "piano" })
    songs.write(d, "Top level.mid", song_with { "bass" })
    local it = by_source(corpus.ingest(d))
    assert.equal("Vol.2", it["X/Vol.2.mid"].title)
    assert.equal("Unknown Artist", it["Top level.mid"].artist)
    assert.equal("Unknown Artist", it["Top level.mid"].artist_dir)
  end)

  it("sanitises names and never gives two songs one folder", function()
    assert.equal("ACDC", corpus.sanitize("AC/DC"))
    assert.equal("What now", corpus.sanitize('  What?*  "now"  '))
    assert.equal("hidden", corpus.sanitize("..hidden"))
    assert.equal("untitled", corpus.sanitize("\t\n"))
    assert.equal("x", corpus.sanitize(nil, "x"))
    local long = string.rep("é", 100)                 -- 200 bytes of 2-byte characters
    local s = corpus.sanitize(long)
    assert.equal(120, #s)
    assert.equal(string.rep("é", 60), s)
    assert.equal(string.rep("é", 59), corpus.sanitize(long, nil, 119))  -- never half a character

    local d = songs.tmpdir()
    songs.write(d, "AC:DC/Song.mid", song_with { "piano" })
    songs.write(d, "ACDC/Song.mid", song_with { "bass" })
    songs.write(d, "AC|DC/song.mid", song_with { "lead" })
    local c = corpus.ingest(d)
    local dirs = {}
    for _, it in ipairs(c.kept) do dirs[#dirs + 1] = it.artist_dir .. "/" .. it.song_dir end
    table.sort(dirs)
    assert.same({ "ACDC/Song", "ACDC/Song (2)", "ACDC/song (3)" }, dirs)   -- unique ignoring case
  end)

  it("splits names as the seed did", function()
    assert.same({ "ABBA", "Dancing Queen", 1, "mid", "Dancing Queen.1" },
                { corpus.split_name("ABBA/Dancing Queen.1.mid") })
    assert.same({ "", "x", nil, "midi", "x" }, { corpus.split_name("x.midi") })
  end)

  it("shards by a stable hash of the source path", function()
    local counts = { 0, 0, 0, 0 }
    for i = 1, 200 do
      local s = corpus.shard_of("Artist " .. i .. "/Song.mid", 4)
      assert.is_true(s >= 1 and s <= 4)
      counts[s] = counts[s] + 1
      assert.equal(s, corpus.shard_of("Artist " .. i .. "/Song.mid", 4))   -- same every time
    end
    for k = 1, 4 do assert.is_true(counts[k] > 25, "shard " .. k .. " got " .. counts[k]) end
    -- the first 8 hex digits of SHA-256("a/b.mid"), mod 7, plus 1: fixed across machines and runs
    assert.equal(tonumber(corpus.sha256("a/b.mid"):sub(1, 8), 16) % 7 + 1, corpus.shard_of("a/b.mid", 7))
    assert.equal(1, corpus.shard_of("anything", 1))
    assert.same({ 2, 8 }, { corpus.parse_shard("2/8") })
    assert.same({ 1, 1 }, { corpus.parse_shard(nil) })
    assert.has_error(function() corpus.parse_shard("0/4") end)
    assert.has_error(function() corpus.parse_shard("5/4") end)
    assert.has_error(function() corpus.parse_shard("two") end)
  end)

  it("hashes with SHA-256", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", corpus.sha256("abc"))
  end)
end)
