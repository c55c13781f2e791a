-- T5 tokenizer: exact ids against the HF fast tokenizer on a small SentencePiece unigram model made
-- for this test (spec/fixtures/t5_tokenizer_tiny.model, nmt_nfkc normaliser like t5-base's; how it
-- was made and which tool produced the ids: spec/fixtures/t5_tokenizer_tiny.json "how_made" and
-- "reference"), plus the file-format errors.
local ffi = require "ffi"
local sao = require "sao"
local cjson = require "cjson"

local function esc(s) return (s:gsub("%p", "%%%0")) end

local function fixture()
  local f = assert(io.open("spec/fixtures/t5_tokenizer_tiny.json", "rb"))
  local m = cjson.decode(f:read("*a"))
  f:close()
  return m
end

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- protobuf helpers to build malformed or unusual models by hand
local function varint(n)
  local s = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    s[#s + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(s)
end
local function field_bytes(num, bytes) return varint(num * 8 + 2) .. varint(#bytes) .. bytes end
local function field_varint(num, v) return varint(num * 8) .. varint(v) end
local function field_float(num, x) return varint(num * 8 + 5) .. ffi.string(ffi.new("float[1]", x), 4) end
local function piece(str, score, ptype)
  local m = field_bytes(1, str) .. field_float(2, score)
  if ptype then m = m .. field_varint(3, ptype) end
  return field_bytes(1, m)
end

describe("T5 tokenizer (t5_tokenizer_tiny)", function()
  local m = fixture()
  local tok = sao.t5.tokenizer("spec/fixtures/" .. m.model)

  it("reads the model: pieces, sentinels and special ids", function()
    assert.equal(m.pieces, tok:piece_count())         -- 292
    assert.equal(m.vocab_size, tok:vocab_size())      -- 392 = 292 + 100 <extra_id_N>
    assert.equal(0, tok:special_id("pad"))
    assert.equal(1, tok:special_id("eos"))
    assert.equal(2, tok:special_id("unk"))
    assert.equal("</s>", tok:piece(1))
    assert.equal("\u{2581}", tok:piece(3))
    assert.equal("<extra_id_0>", tok:piece(391))
    assert.equal("<extra_id_99>", tok:piece(292))
    assert.is_nil(tok:piece(392))
  end)

  it("gives exactly the reference ids and mask for every case, padded to 128", function()
    local texts = {}
    for i, c in ipairs(m.cases) do texts[i] = c.text end
    local ids, mask = sao.t5.tokenize(tok, texts)
    assert.same({ #texts, 128 }, ids:shape())
    assert.same({ #texts, 128 }, mask:shape())
    assert.equal("i64", ids:dtype())
    local got_ids, got_mask = ids:totable(), mask:totable()
    for i, c in ipairs(m.cases) do
      local want_ids, want_mask = {}, {}
      for j = 1, 128 do
        want_ids[j] = c.ids[j] or 0
        want_mask[j] = j <= c.n and 1 or 0
      end
      assert.are.same(want_ids, got_ids[i], "case " .. i .. ": " .. c.text .. "\n  pieces want: "
        .. table.concat(c.pieces, " ") .. "\n  pieces got:  " .. table.concat(tok:pieces(c.text), " "))
      assert.are.same(want_mask, got_mask[i], "mask of case " .. i)
    end
  end)

  it("covers the cases the brief names (punctuation, digits, accents, whitespace, unknowns, long, empty)", function()
    local seen = {}
    for _, c in ipairs(m.cases) do seen[c.text] = c end
    assert.is_truthy(seen[""])                          -- empty prompt: just </s>
    assert.same({ 1 }, seen[""].ids)
    assert.same({ 1 }, seen["   "].ids)                 -- whitespace only
    assert.same({ "\u{2581}tra", "p", "</s>" }, seen["trap"].pieces)
    local long = 0
    for _, c in ipairs(m.cases) do
      if c.n == 128 then long = long + 1 end
    end
    assert.equal(4, long)   -- 127 pieces + </s> exactly, 128 pieces (truncated), two far past 128
  end)

  it("truncates to max_len - 1 pieces and keeps </s> last", function()
    local text = "soft piano and strings, soft piano and strings"
    local all = tok:encode(text)
    assert.is_true(#all > 7)
    local ids, mask = sao.t5.tokenize(tok, { text }, 8)
    local want = {}
    for i = 1, 7 do want[i] = all[i] end
    want[8] = 1
    assert.same({ want }, ids:totable())
    assert.same({ { 1, 1, 1, 1, 1, 1, 1, 1 } }, mask:totable())
  end)

  it("collapses whitespace and fuses runs of unknown characters into one <unk>", function()
    assert.same(tok:encode("soft piano"), tok:encode("  soft \t\n piano  "))
    local ids = tok:encode("\u{94A2}\u{7434}")          -- two CJK characters outside the model: one <unk>
    assert.same({ 3, 2 }, ids)                          -- '▁', <unk>
  end)

  it("turns malformed UTF-8 bytes into U+FFFD after normalisation, as SentencePiece (-> <unk>)", function()
    -- A valid U+FFFD in the input is mapped to a space by nmt_nfkc. A malformed byte becomes an
    -- unnormalised U+FFFD, one per byte, fused into one <unk>. Reference: slow sentencepiece 0.2.0
    -- encoding the same raw bytes (the fast tokenizer only ever sees valid UTF-8).
    assert.same(tok:encode("a b"), tok:encode("a\u{FFFD}b"))
    assert.same({ 10, 2, 63 }, tok:encode("a\255b"))                 -- ▁a <unk> b
    assert.same({ 3, 62, 3, 2 }, tok:encode("x \192\128"))          -- ▁ x ▁ <unk> (overlong NUL)
    assert.same({ 34, 49, 14, 2 }, tok:encode("piano\226\150"))     -- ▁p ian o <unk> (cut character)
  end)

  it("matches special tokens in the raw text only in their exact spelling", function()
    assert.same({ 391 }, tok:encode("<extra_id_0>"))
    assert.same({ 292 }, tok:encode("<extra_id_99>"))
    assert.is_true(#tok:encode("<extra_id_100>") > 1)
    assert.is_true(#tok:encode("<extra_id_07>") > 1)
    assert.same({ 0, 1, 2 }, tok:encode("<pad></s><unk>"))
  end)
end)

describe("T5 tokenizer model files", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local good = read("spec/fixtures/t5_tokenizer_tiny.model")
  local basic = piece("<pad>", 0, 3) .. piece("</s>", 0, 3) .. piece("<unk>", 0, 2)

  it("says which file is missing and where t5-base's spiece.model goes", function()
    assert.error_matches(function() sao.t5.tokenizer(dir .. "/nope.model") end,
      esc(dir .. "/nope.model: cannot open (put t5-base's spiece.model there; see checkpoints/README.md)"))
  end)

  it("rejects a truncated file, a JSON file and an empty file", function()
    local p = write(dir .. "/cut.model", good:sub(1, math.floor(#good / 2)))
    assert.error_matches(function() sao.t5.tokenizer(p) end, "cut%.model: .*malformed")
    p = write(dir .. "/tok.model", '{"version": "1.0", "model": {"type": "Unigram"}}')
    assert.error_matches(function() sao.t5.tokenizer(p) end, "not a SentencePiece model")
    p = write(dir .. "/empty.model", "")
    assert.error_matches(function() sao.t5.tokenizer(p) end, "empty%.model: no pieces")
  end)

  it("refuses BPE models and models without </s>", function()
    local p = write(dir .. "/bpe.model", basic .. piece("a", -1) .. field_bytes(2, field_varint(3, 2)))
    assert.error_matches(function() sao.t5.tokenizer(p) end, "model_type 2 is not unigram")
    p = write(dir .. "/noeos.model", piece("<unk>", 0, 2) .. piece("a", -1))
    assert.error_matches(function() sao.t5.tokenizer(p) end, "has no </s> piece")
  end)

  it("runs a hand-made model without a charsmap (identity normaliser) by Viterbi on the scores", function()
    -- pieces: ▁ab (-1) beats ▁a + b (-1.5 + -1.0); 'c' is unknown (min score -3 - 10)
    local p = write(dir .. "/mini.model", basic .. piece("\u{2581}", -3) .. piece("\u{2581}a", -1.5)
      .. piece("b", -1) .. piece("\u{2581}ab", -1) .. piece("a", -2))
    local t = sao.t5.tokenizer(p)
    assert.equal(8, t:piece_count())
    assert.same({ 6 }, t:encode("ab"))
    assert.same({ 4, 3, 2 }, t:encode("a c"))            -- ▁a, then ▁ and <unk> for c
    assert.same({ 6, 2 }, t:encode("ab\u{00C9}"))        -- no charsmap: É stays unknown
    local ids = sao.t5.tokenize(t, { "ab ab" }, 4)
    assert.same({ { 6, 6, 1, 0 } }, ids:totable())
  end)

  teardown(function() os.execute("rm -rf " .. dir) end)
end)
