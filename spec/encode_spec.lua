-- The encode stage and the latent cache (sao.latents): content addressing (a second run encodes
-- nothing, a changed prompt re-encodes that clip only and reuses its latents), bad clips reported
-- and skipped, and the loader's crops, seconds_start/seconds_total, padding, conditioning,
-- seeding and restartable state. Tiny random model, clips of 0.5-3 s.
local sao = require "sao"
local cjson = require "cjson"
local clipset = require "support.clipset"
local latents = require "sao.latents"
local encode = require "sao.pipeline.encode"
local common = require "sao.pipeline.common"

local out = clipset.tmpdir()
clipset.standard(out)
local cache = out .. "/cache/latents"
local first = encode.run { out = out, model = "tiny", quiet = true }
local model, model_id = common.load_model { model = "tiny", quiet = true }

local function by_clip()
  local t = {}
  for _, e in ipairs(latents.read_index(cache)) do t[e.clip] = e end
  return t
end

local function mtime(path) return tonumber(sao.C.sao_file_mtime(path)) end

describe("encode stage", function()
  it("encodes every clip with a prompt, reports a bad WAV and lists clips without a prompt", function()
    assert.same({ 5, 3, 0, 1, 1 }, { first.clips, first.encoded, first.reused, first.failed, first.skipped })
    local idx = by_clip()
    assert.equal("ok", idx["Band/Alpha/Alpha_01"].status)
    assert.equal("failed", idx["Other/Broken/Broken_01"].status)
    assert.truthy(idx["Other/Broken/Broken_01"].reason:find("cannot decode", 1, true))
    assert.equal("skipped", idx["Other/Gamma/Gamma_01"].status)
    assert.truthy(idx["Other/Gamma/Gamma_01"].reason:find("prompts stage", 1, true))
    -- one file per clip: latents [D, ceil(S / ratio)], T5 [128, Dc], seconds_total = ceil(duration)
    local e = idx["Band/Alpha/Alpha_02"]
    local c = latents.load(cache .. "/" .. e.file)
    assert.same({ 16, math.ceil(3 * 44100 / 256) }, c.latents:shape())
    assert.same({ 128, 64 }, c.prompt_emb:shape())
    assert.equal(3, c.info.seconds_total)
    assert.equal(1, idx["Other/Beta/Beta_01"].seconds_total)      -- 0.5 s -> ceil 1
    assert.equal(model_id, e.model_id)
    assert.equal(e.key .. ".safetensors", e.file)
  end)

  it("does no encoding on a second run and leaves the cache files untouched", function()
    local before = {}
    for clip, e in pairs(by_clip()) do if e.file then before[clip] = mtime(cache .. "/" .. e.file) end end
    local s = encode.run { out = out, model = "tiny", quiet = true }
    assert.same({ 0, 3 }, { s.encoded, s.reused })
    for clip, e in pairs(by_clip()) do
      if e.file then assert.equal(before[clip], mtime(cache .. "/" .. e.file)) end
    end
  end)

  it("re-encodes only the clip whose prompt changed, reusing its latents", function()
    local old = by_clip()["Band/Alpha/Alpha_02"]
    clipset.set_prompt(out, "Band/Alpha/Alpha_02", "Bright piano in the key of C Major at 120 BPM")
    local s = encode.run { out = out, model = "tiny", quiet = true }
    assert.same({ 1, 1, 2 }, { s.encoded, s.t5_only, s.reused })
    local new = by_clip()["Band/Alpha/Alpha_02"]
    assert.are_not.equal(old.key, new.key)
    assert.equal(old.latents_key, new.latents_key)
    local a, b = latents.load(cache .. "/" .. old.file), latents.load(cache .. "/" .. new.file)
    assert.equal(0, a.latents:maxdiff(b.latents))
    assert.is_true(a.prompt_emb:maxdiff(b.prompt_emb) > 0)
    assert.equal("Bright piano in the key of C Major at 120 BPM", b.info.prompt)
  end)

  it("keys on audio, prompt, model and seed", function()
    local k = latents.key("a", "p", "m", 1)
    assert.are_not.equal(k, latents.key("b", "p", "m", 1))
    assert.are_not.equal(k, latents.key("a", "q", "m", 1))
    assert.are_not.equal(k, latents.key("a", "p", "n", 1))
    assert.are_not.equal(k, latents.key("a", "p", "m", 2))
    local _, l1 = latents.key("a", "p", "m", 1)
    local _, l2 = latents.key("a", "q", "m", 1)
    assert.equal(l1, l2)                                 -- latents do not depend on the prompt
    assert.are_not.equal(model_id, latents.model_id(model, { seed = 1 }))
    assert.equal(latents.canonical { b = 1, a = { 2, 3 } }, latents.canonical { a = { 2, 3 }, b = 1 })
  end)

  it("holds out a stable fraction of songs", function()
    local songs = {}
    for i = 1, 20 do songs["A/Song " .. i] = true end
    local h = encode.heldout_songs(songs, 0.1)
    local n = 0
    for _ in pairs(h) do n = n + 1 end
    assert.equal(2, n)
    assert.same(h, encode.heldout_songs(songs, 0.1))
    assert.same({}, encode.heldout_songs({ ["A/x"] = true, ["A/y"] = true }, 0.05))
  end)
end)

describe("latent loader", function()
  local entries = latents.select(latents.read_index(cache), model_id, "train")
  local files = {}
  for _, e in ipairs(entries) do files[e.clip] = latents.load(cache .. "/" .. e.file) end
  local function loader(seed, frames)
    return latents.loader(entries, { model = model, cache_dir = cache, batch = 2, frames = frames or 64, seed = seed or 3 })
  end

  it("crops at random, with seconds_start at the crop and seconds_total the file's", function()
    local ld = loader(3, 64)
    local starts = {}
    for _ = 1, 6 do
      local b = ld:next()
      assert.same({ 2, 16, 64 }, b.latents:shape())
      for i = 1, 2 do
        local c = files[b.clips[i]]
        local off = b.offsets[i]
        assert.is_true(off >= 0 and off + 64 <= c.latents:size(2))
        assert.equal(0, b.latents[i]:maxdiff(c.latents:narrow(2, off + 1, 64)))
        assert.equal(math.floor(off * 256 / 44100), b.seconds_start[i])
        assert.equal(c.info.seconds_total, b.seconds_total[i])
        starts[#starts + 1] = off
      end
    end
    table.sort(starts)
    assert.is_true(starts[#starts] > starts[1])           -- not always the same crop
  end)

  it("with seconds = 'source', conditions on the clip's place in the file it was cut from", function()
    -- as the trap recipe's segments: Alpha_02 starts 61 s into a 180 s beat; the others carry nothing
    local src = {}
    for i, e in ipairs(entries) do
      src[i] = {}
      for k, v in pairs(e) do src[i][k] = v end
      if e.clip == "Band/Alpha/Alpha_02" then src[i].source_start, src[i].source_total = 61, 180 end
    end
    local ld = latents.loader(src, { model = model, cache_dir = cache, batch = 2, frames = 64, seed = 3, seconds = "source" })
    local seen = 0
    for _ = 1, 6 do
      local b = ld:next()
      for i = 1, 2 do
        local off = b.offsets[i]
        if b.clips[i] == "Band/Alpha/Alpha_02" then
          assert.equal(math.floor(61 + off * 256 / 44100), b.seconds_start[i])
          assert.equal(180, b.seconds_total[i])
          seen = seen + 1
        else
          assert.equal(math.floor(off * 256 / 44100), b.seconds_start[i])
          assert.equal(files[b.clips[i]].info.seconds_total, b.seconds_total[i])
        end
      end
    end
    assert.is_true(seen > 0)
    assert.has_error(function() latents.loader(src, { model = model, cache_dir = cache, seconds = "song" }) end,
      "latents.loader: seconds must be 'clip' or 'source', got 'song'")
  end)

  it("zero-pads clips shorter than the crop, with seconds_start 0", function()
    local ld = loader(1, 128)                             -- Beta_01 has 87 frames
    local seen = false
    for _ = 1, 3 do
      local b = ld:next()
      for i = 1, 2 do
        if b.clips[i] == "Other/Beta/Beta_01" then
          seen = true
          local L = files[b.clips[i]].latents:size(2)
          assert.equal(0, b.offsets[i])
          assert.equal(0, b.seconds_start[i])
          assert.equal(0, b.latents[i]:narrow(2, 1, L):maxdiff(files[b.clips[i]].latents))
          assert.equal(0, b.latents[i]:narrow(2, L + 1, 128 - L):abs():max())
        end
      end
    end
    assert.is_true(seen)
  end)

  it("assembles cross/global from the cached T5 embedding and the number conditioners", function()
    local b = loader(5):next()
    assert.same({ 2, 130, 64 }, b.cross:shape())
    assert.same({ 2, 128 }, b.global:shape())
    local e0 = model.cond.seconds_start:forward(b.seconds_start)
    local e1 = model.cond.seconds_total:forward(b.seconds_total)
    for i = 1, 2 do
      assert.equal(0, b.cross[i]:narrow(1, 1, 128):maxdiff(files[b.clips[i]].prompt_emb))
      assert.equal(0, b.cross[i]:narrow(1, 129, 1):maxdiff(e0[i]))
      assert.equal(0, b.cross[i]:narrow(1, 130, 1):maxdiff(e1[i]))
      assert.equal(0, b.global[i]:narrow(1, 1, 64):maxdiff(e0[i]:reshape(64)))
      assert.equal(0, b.global[i]:narrow(1, 65, 64):maxdiff(e1[i]:reshape(64)))
    end
  end)

  it("is seeded and restarts exactly from its state", function()
    local a, b = loader(9), loader(9)
    for _ = 1, 2 do a:next(); b:next() end
    local st = a:state()
    local want = {}
    for k = 1, 3 do
      local x = a:next()
      want[k] = { cjson.encode { x.clips, x.offsets }, x.latents }
    end
    local c = loader(9)
    c:set_state(st)
    for k = 1, 3 do
      local x = c:next()
      assert.equal(want[k][1], cjson.encode { x.clips, x.offsets })
      assert.equal(0, want[k][2]:maxdiff(x.latents))
    end
    local d, e = loader(9), loader(10)
    local same = true
    for _ = 1, 3 do
      local x, y = d:next(), e:next()
      if cjson.encode { x.clips, x.offsets } ~= cjson.encode { y.clips, y.offsets } then same = false end
    end
    assert.is_false(same)
  end)
end)
