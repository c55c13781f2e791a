-- The train, sample and eval stages of recipes/instrumental.lua on a tiny clip set with the tiny
-- random model: what each stage writes (config, schedule, JSONL log, loss curve, checkpoints,
-- export with upstream key names, samples + JSON, metrics + report), a run continued with the
-- same losses as an uninterrupted one, a run killed mid-way and resumed, and clear errors.
local sao = require "sao"
local cjson = require "cjson"
local clipset = require "support.clipset"
local encode = require "sao.pipeline.encode"
local train = require "sao.pipeline.train"
local sample = require "sao.pipeline.sample"
local eval = require "sao.pipeline.eval"
local common = require "sao.pipeline.common"
require "spec.support.near"

local shell = require "support.shell"
local sleep_ms, sh = shell.sleep_ms, shell.capture

local out = clipset.tmpdir()
clipset.write(out, "Band/Alpha/Alpha_01", { seconds = 3, bpm = 120, key = "A", mode = "Minor" })
clipset.write(out, "Band/Alpha/Alpha_02", { seconds = 3, bpm = 120, key = "C", mode = "Major", hz = 262 })
clipset.write(out, "Other/Beta/Beta_01", { seconds = 2, bpm = 90, key = "G", mode = "Major", hz = 196 })
encode.run { out = out, model = "tiny", quiet = true }

-- a short run: batch 2 x 32 latent frames, a checkpoint every 3 steps, every step logged
local function topts(run, steps, extra)
  local o = { out = out, model = "tiny", quiet = true, run = run, steps = steps, batch = 2, frames = 32,
              checkpoint_every = 3, log_every = 1 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function losses(run)
  local t = {}
  for _, r in ipairs(train.read_log(out .. "/runs/" .. run .. "/log.jsonl")) do
    if not r.event then t[r.step] = r.loss end
  end
  return t
end

describe("train stage", function()
  local res
  setup(function() res = train.run(topts("a", 6)) end)

  it("writes the config, schedule, log, loss curve, checkpoints and export of a run", function()
    local dir = out .. "/runs/a"
    assert.equal(6, res.step)
    for _, f in ipairs { "config.lua", "schedule.lua", "log.jsonl", "loss.png" } do
      assert.is_true(common.exists(dir .. "/" .. f), f)
    end
    assert.equal("\137PNG\r\n\26\n", common.read(dir .. "/loss.png"):sub(1, 8))
    local cfg = dofile(dir .. "/config.lua")
    assert.same({ 6, 2, 32 }, { cfg.steps, cfg.batch, cfg.frames })
    local steps = {}
    for _, c in ipairs(common.checkpoints(dir)) do steps[#steps + 1] = c.step end
    assert.same({ 3, 6 }, steps)
    local l = losses("a")
    for s = 1, 6 do assert.is_true(l[s] and l[s] > 0 and l[s] < 100, "loss at step " .. s) end
    -- the export: a whole checkpoint under SAO's upstream names (the EMA DiT as model.model.*, the
    -- base's VAE and number conditioners), beside its model_config.json; it loads as a model
    assert.equal(dir .. "/export/model.safetensors", res.export)
    local t = sao.load_safetensors(res.export)
    local count, other = {}, {}
    for k in pairs(t) do
      local p = k:match("^model%.model%.") or k:match("^pretransform%.model%.") or
                k:match("^conditioner%.conditioners%.seconds_[a-z]+%.")
      if p then count[p] = (count[p] or 0) + 1 else other[#other + 1] = k end
    end
    assert.same({}, other)
    assert.is_true((count["model.model."] or 0) > 10 and (count["pretransform.model."] or 0) > 10)
    assert.equal(3, count["conditioner.conditioners.seconds_start."])
    assert.truthy(cjson.decode(common.read(dir .. "/export/model_config.json")))
    local m = sao.load_model(dir .. "/export", { quiet = true })
    local ema = sao.load_safetensors(dir .. "/checkpoints/step-6/ema.safetensors")
    local sd = m:state_dict()
    for k, v in pairs(ema) do assert.equal(0, sd["model.model." .. k]:maxdiff(v), k) end
    local base = common.load_model { model = "tiny", quiet = true }:state_dict()
    for k, v in pairs(sd) do
      if not k:match("^model%.model%.") then assert.equal(0, base[k]:maxdiff(v), k) end
    end
    local a = m:generate { prompt = "piano", seconds = 0.5, steps = 2, seed = 3, progress = false }
    assert.is_true(a:abs():max() > 0)
    assert.equal("", sh("find '" .. dir .. "' -name '*.tmp*'"))
  end)

  it("continues a stopped run with the losses of an uninterrupted one", function()
    local r1 = train.run(topts("b", 3))
    assert.equal(3, r1.step)
    local r2 = train.run(topts("b", 6))
    assert.equal(6, r2.step)
    local a, b = losses("a"), losses("b")
    for s = 1, 6 do assert.equal(a[s], b[s], "step " .. s) end
    local events = {}
    for _, r in ipairs(train.read_log(out .. "/runs/b/log.jsonl")) do
      if r.event then events[#events + 1] = r.event .. "@" .. r.step end
    end
    assert.same({ "started@0", "resumed@3" }, events)
  end)

  it("resumes after a kill from the last checkpoint", function()
    local dir = out .. "/runs/k"
    local code = ("require('sao.pipeline.train').run{out=%q, model='tiny', quiet=true, run='k', steps=100000, " ..
                  "batch=2, frames=32, checkpoint_every=2, log_every=1}"):format(out)
    local pid = sh("./sao -e " .. common.shell_quote(code) .. " >/dev/null 2>&1 & echo $!"):match("%d+")
    local waited = 0
    while not common.exists(dir .. "/checkpoints/step-4/state.json") and waited < 60000 do
      sleep_ms(50)
      waited = waited + 50
    end
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    sleep_ms(100)
    assert.is_true(common.exists(dir .. "/checkpoints/step-4/state.json"), "no checkpoint within 60 s")
    local last = common.latest_checkpoint(dir).step
    local r = train.run(topts("k", last + 2, { checkpoint_every = 2 }))
    assert.equal(last + 2, r.step)
    local resumed
    for _, rec in ipairs(train.read_log(dir .. "/log.jsonl")) do
      if rec.event == "resumed" then resumed = rec.step end
    end
    assert.equal(last, resumed)
    -- the log holds each step once, in order, up to the end
    local prev = 0
    for _, rec in ipairs(train.read_log(dir .. "/log.jsonl")) do
      if not rec.event then
        assert.equal(prev + 1, rec.step)
        prev = rec.step
      end
    end
    assert.equal(last + 2, prev)
    assert.equal("", sh("find '" .. dir .. "' -name '*.tmp*'"))
  end)

  it("keeps the last --keep checkpoints", function()
    train.run(topts("keep", 5, { checkpoint_every = 1, keep = 4 }))
    local steps = {}
    for _, c in ipairs(common.checkpoints(out .. "/runs/keep")) do steps[#steps + 1] = c.step end
    assert.same({ 2, 3, 4, 5 }, steps)
  end)

  it("says what to do when nothing is encoded", function()
    local empty = clipset.tmpdir()
    assert.error_matches(function() train.run { out = empty, model = "tiny", quiet = true, steps = 1 } end,
                         "no encoded clips .*run the encode stage")
  end)
end)

describe("sample stage", function()
  local written
  setup(function()
    written = sample.run { out = out, model = "tiny", quiet = true, run = "a", cfg_scales = "4,7", sample_steps = 2,
                           seconds = 1, num_demos = 2, prompts = { "Calm piano in the key of D Minor at 96 BPM" } }
  end)

  it("generates every prompt x CFG scale from the EMA weights of the last checkpoint", function()
    assert.equal(1, #written)
    local dir = out .. "/runs/a/samples/step-6"
    assert.equal(dir, written[1].dir)
    local recs = cjson.decode(common.read(dir .. "/index.json"))
    assert.equal(2, #recs)
    assert.same({ 4, 7 }, { recs[1].cfg_scale, recs[2].cfg_scale })
    for _, r in ipairs(recs) do
      assert.equal("ema", r.weights)
      assert.equal(6, r.step)
      assert.same({ bpm = 96, key = "D", mode = "Minor" }, r.reference)
      local a, sr = sao.audio.load(dir .. "/" .. r.file)
      assert.equal(44100, sr)
      assert.equal(2, a:size(1))
      assert.is_true(math.abs(a:size(2) - 44100) <= 256, "samples " .. a:size(2))
      assert.is_true(a:abs():max() > 0)
    end
  end)

  it("keeps what it wrote on a re-run, and samples the base model with --baseline", function()
    local dir = out .. "/runs/a/samples/step-6"
    local before = sh("find '" .. dir .. "' -name '*.wav' -printf '%p %T@\\n' | sort")
    local w = sample.run { out = out, model = "tiny", quiet = true, run = "a", cfg_scales = "4,7", sample_steps = 2,
                           seconds = 1, prompts = { "Calm piano in the key of D Minor at 96 BPM" }, baseline = true }
    assert.equal(before, sh("find '" .. dir .. "' -name '*.wav' -printf '%p %T@\\n' | sort"))
    assert.equal(2, #w)
    assert.equal(out .. "/runs/a/samples/step-0", w[2].dir)
    assert.equal("base", w[2].records[1].weights)
  end)

  it("a negative prompt conditions the CFG's other half and is recorded", function()
    local w = sample.run { out = out, model = "tiny", quiet = true, run = "neg", cfg_scales = "7", sample_steps = 2,
                           seconds = 1, prompts = { "Calm piano in the key of D Minor at 96 BPM" },
                           negative_prompt = "drums" }
    local plain = sample.run { out = out, model = "tiny", quiet = true, run = "neg2", cfg_scales = "7", sample_steps = 2,
                               seconds = 1, prompts = { "Calm piano in the key of D Minor at 96 BPM" } }
    local r, r0 = w[1].records[1], plain[1].records[1]
    assert.equal("drums", r.negative_prompt)
    assert.is_nil(r0.negative_prompt)
    assert.equal("drums", cjson.decode(common.read(w[1].dir .. "/" .. r.file:gsub("%.wav$", ".json"))).negative_prompt)
    local a = sao.audio.load(w[1].dir .. "/" .. r.file)
    local b = sao.audio.load(plain[1].dir .. "/" .. r0.file)
    assert.is_true(a:maxdiff(b) > 1e-6)
  end)

  it("takes a profile's settings, the noise range and a peak level", function()
    local d = sample.defaults({ random = false }, "stablebeat")
    assert.same({ 7 }, d.cfg_scales)
    assert.same({ 200, 47, 0.01, 100, 0 }, { d.steps, d.seconds, d.sigma_min, d.sigma_max, d.peak_db })
    local t = sample.defaults({ random = true }, "stablebeat")   -- the tiny model keeps its quick steps
    assert.same({ 8, 4, 0.01, 7 }, { t.steps, t.seconds, t.sigma_min, t.cfg_scales[1] })
    assert.error_matches(function() sample.defaults({ random = true }, "stablebeet") end,
      "unknown %-%-sample%-profile 'stablebeet' %(profiles: stablebeat%)")
    local w = sample.run { out = out, model = "tiny", quiet = true, run = "prof", sample_profile = "stablebeat",
                           sample_steps = 2, seconds = 1, prompts = { "A dark trap beat at 140 BPM" }, peak_db = "-3" }
    local r = w[1].records[1]
    assert.same({ 7, 0.01, 100, -3 }, { r.cfg_scale, r.sigma_min, r.sigma_max, r.peak_db })
    local a = sao.audio.load(w[1].dir .. "/" .. r.file)
    assert.near(-3, sao.audio.stats(a).peak_db, 1e-3)
    -- another noise range gives another sample from the same seed
    local w2 = sample.run { out = out, model = "tiny", quiet = true, run = "prof2", cfg_scales = "7", sample_steps = 2,
                            seconds = 1, prompts = { "A dark trap beat at 140 BPM" }, peak_db = "-3" }
    assert.is_true(a:maxdiff(sao.audio.load(w2[1].dir .. "/" .. w2[1].records[1].file)) > 1e-4)
  end)

  it("--sample-batch generates several clips per call, each as its single generation, and resumes alike", function()
    local prompts = { "Calm piano in the key of D Minor at 96 BPM", "Fast drums at 140 BPM", "A jazz song at 75 BPM" }
    local base = { out = out, model = "tiny", quiet = true, cfg_scales = "4,7", sample_steps = 2, seconds = 1,
                   prompts = prompts }
    local function run(name, batch)
      local o = { run = name, sample_batch = batch }
      for k, v in pairs(base) do o[k] = v end
      return sample.run(o)[1]
    end
    local one, three = run("b1", nil), run("b3", "3")
    assert.equal(6, #three.records)
    for i, r in ipairs(three.records) do
      local r1 = one.records[i]
      -- the same (prompt, scale) order, seeds and names; the batch is recorded
      assert.same({ r1.file, r1.prompt, r1.cfg_scale, r1.seed }, { r.file, r.prompt, r.cfg_scale, r.seed })
      assert.is_nil(r1.batch)
      assert.equal(3, r.batch)
      -- each clip is its single generation up to the batch-size rounding of the GEMMs (measured here
      -- 1.5e-5 of a peak near 1.5 for 6 steps at CFG 7; 2 steps less), not another draw (differences ~1)
      local a = sao.audio.load(three.dir .. "/" .. r.file)
      local b = sao.audio.load(one.dir .. "/" .. r1.file)
      assert.is_true(b:abs():max() > 0.01)
      assert.tensor_near(b, a, { abs = 1e-4 })
    end
    -- a clip removed is made again (alone in its batch), the others are kept
    local gone = three.dir .. "/" .. three.records[3].file
    os.remove(gone)
    local before = sh("find '" .. three.dir .. "' -name '*.wav' -printf '%p %T@\\n' | sort")
    assert.equal(6, #run("b3", "3").records)
    local after = sh("find '" .. three.dir .. "' -name '*.wav' -printf '%p %T@\\n' | sort")
    assert.equal(before, (after:gsub("[^\n]*" .. three.records[3].file:gsub("%p", "%%%0") .. "[^\n]*\n", "")))
    assert.tensor_near(sao.audio.load(one.dir .. "/" .. one.records[3].file), sao.audio.load(gone), { abs = 1e-4 })
  end)

  it("builds the seed's evaluation grids of tempo and key prompts", function()
    local t = sample.eval_set("tempo")
    assert.equal(36, #t)
    assert.equal("A rock song at 75 BPM", t[1].prompt)
    assert.same({ bpm = 160 }, t[36].reference)
    local k = sample.eval_set("key")
    assert.equal(768, #k)                                   -- 4 genres x 24 keys x 8
    local keys = {}
    for _, it in ipairs(k) do
      local name = it.reference.key .. " " .. it.reference.mode
      keys[name] = (keys[name] or 0) + 1
    end
    local n = 0
    for _, c in pairs(keys) do n = n + 1; assert.equal(32, c) end
    assert.equal(24, n)
    local few = sample.eval_set("key", 1, 24)               -- an even spread: both modes, all genres
    assert.equal(24, #few)
    assert.same({ key = "C", mode = "Major" }, few[1].reference)
    assert.equal("An electronic song in the key of G# Minor", few[24].prompt)
    assert.error_matches(function() sample.eval_set("timbre") end, "unknown %-%-eval%-set 'timbre' %(tempo, key%)")
    -- through the stage: one file per grid prompt, each with its reference
    local w = sample.run { out = out, model = "tiny", quiet = true, run = "grid", cfg_scales = "7", sample_steps = 2,
                           seconds = 1, eval_set = "tempo", eval_limit = "3" }
    local recs = w[1].records
    assert.equal(3, #recs)
    for _, r in ipairs(recs) do
      assert.equal("eval-tempo", r.source)
      assert.is_number(r.reference.bpm)
    end
  end)

  it("reads the prompt and its BPM, key and mode", function()
    assert.same({ bpm = 120, key = "A#", mode = "Major" }, sample.reference("Rock in the key of A# Major at 120 BPM"))
    assert.same({ bpm = 86 }, sample.reference("A lo-fi beat at 86 beats per minute"))
    assert.same({ bpm = 90.5, key = "Eb", mode = "Minor" }, sample.reference("eb? no: Eb minor groove, 90.5 bpm"))
    assert.same({}, sample.reference("ambient drone"))
    assert.error_matches(function() sample.prompts({ prompts = out .. "/nope.txt" }, 4) end, "no such file")
  end)
end)

describe("eval stage", function()
  it("scores the samples and the dataset clips into metrics.json and an HTML report", function()
    local m = eval.run { out = out, run = "a", quiet = true, reference_clips = 3 }
    local names = {}
    for _, g in ipairs(m.groups) do names[#names + 1] = g.name .. ":" .. g.n end
    assert.same({ "step-6:2", "step-0 (base):2", "reference (dataset clips):3" }, names)
    assert.truthy(m.warning:find("random weights", 1, true))
    local saved = cjson.decode(common.read(out .. "/eval/metrics.json"))
    assert.equal(#m.samples, #saved.samples)
    local html = common.read(out .. "/eval/report.html")
    assert.truthy(html:find("<html", 1, true))
    assert.truthy(html:find("step-6", 1, true))
    -- memorization: every sample of the two sample groups against the training clips
    local mrep = m.memorization
    assert.is_table(mrep)
    assert.is_true(mrep.training_clips >= 2)
    assert.same({ "step-6", "step-0 (base)" }, { mrep.groups[1].name, mrep.groups[2].name })
    assert.equal(2, mrep.groups[1].summary.n)
    for _, x in ipairs(mrep.groups[1].items) do
      assert.is_true(x.timbre >= -1 and x.timbre <= 1)
      assert.matches("^%a+/%a+/", x.timbre_match)   -- a training clip, relative to dataset/clips
    end
    assert.truthy(html:find("<h2>Memorization</h2>", 1, true))
    -- the same rows as CSV: a header, one line per file
    local csv = common.read(out .. "/eval/samples.csv")
    local lines = {}
    for l in csv:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(table.concat(eval.CSV_COLUMNS, ","), lines[1])
    assert.equal(#m.samples + 1, #lines)
    local row = eval.csv({ { group = "g", file = 'a "b", c', acc1_4pct = true, clap_score = 0.5, reference = {} } })
    assert.equal('g,"a ""b"", c",,,,,,1,,,,,,,,,,,,0.5\n', row:match("\n(.*)$"))
    -- the training clips' features are cached by content: a second eval reads them and agrees
    -- (one file per distinct content: clips with the same audio share it)
    local n_cache = 0
    for _ in io.popen("ls " .. out .. "/cache/memorization"):lines() do n_cache = n_cache + 1 end
    assert.is_true(n_cache >= 2 and n_cache <= mrep.training_clips)
    local again = eval.run { out = out, run = "a", quiet = true, reference_clips = 0 }.memorization
    assert.equal(again.training_clips, again.features_cached)
    assert.same(mrep.thresholds, again.thresholds)
    assert.same(mrep.groups[1].items, again.groups[1].items)
    assert.is_nil(eval.run { out = out, run = "a", quiet = true, reference_clips = 0, memorization = 0 }.memorization)
    -- the 3 s clips are click tracks at 120 BPM: their rows score the tempo right
    local scored = 0
    for _, r in ipairs(m.samples) do
      if r.group == "reference (dataset clips)" and r.file:match("^Band/Alpha") then
        assert.near(120, r.bpm, 2.4)
        assert.is_true(r.acc1_2pct)
        scored = scored + 1
      end
    end
    assert.equal(2, scored)
  end)

  it("adds the CLAP score of every file against its prompt when a CLAP service is set", function()
    local fake = require "spec.support.fake"
    local srv = fake.start()
    -- every audio embeds to e1; a prompt embeds by its hash, except the first sample's prompt: e1
    local first
    for _, r in ipairs(eval.groups { out = out, run = "a", reference_clips = 0 }[1].items) do first = first or r.prompt end
    local e1 = { 1, 0, 0, 0, 0, 0, 0, 0 }
    srv:configure { clap = { dim = 8, audio = e1, text = { [first] = e1 } } }
    local m = eval.run { out = out, run = "a", quiet = true, reference_clips = 1, clap_url = srv.url }
    assert.matches("CLAP score from " .. srv.url:gsub("%p", "%%%0"), m.settings.clap)
    local n = 0
    for _, r in ipairs(m.samples) do
      assert.is_number(r.clap_score, r.file)
      assert.is_true(r.clap_score >= -1 and r.clap_score <= 1)
      if r.prompt == first then assert.near(1, r.clap_score, 1e-9) end
      n = n + 1
    end
    assert.equal(5, n)
    local g1 = {}
    for _, r in ipairs(m.samples) do if r.group == m.groups[1].name then g1[#g1 + 1] = r.clap_score end end
    assert.equal(2, m.groups[1].features.clap_score.n)
    assert.near((g1[1] + g1[2]) / 2, m.groups[1].features.clap_score.mean, 1e-12)
    srv:stop()
    -- a service that does not answer: the scores stop with a note, the rest of the evaluation goes on
    local dead = "http://127.0.0.1:" .. fake.dead_port()
    local m2 = eval.run { out = out, run = "a", quiet = true, reference_clips = 1, clap_url = dead }
    assert.matches("CLAP score stopped", m2.notes[1])
    assert.is_nil(m2.samples[1].clap_score)
    assert.is_number(m2.samples[1].centroid_hz)
  end)

  it("says when a reference BPM came from the estimator itself, not when the MIDI file agreed", function()
    local path = out .. "/dataset/clips/Band/Alpha/Alpha_01.json"
    local saved = common.read(path)
    local m = cjson.decode(saved)
    m.tempo_source = "midi+audio"
    common.write_atomic(path, cjson.encode(m))
    local ref
    for _, g in ipairs(eval.groups { out = out, run = "a", reference_clips = 3 }) do
      if g.kind == "reference" then ref = g end
    end
    local flags = {}
    for _, it in ipairs(ref.items) do flags[(it.file:gsub("%.wav$", ""))] = it.self_tempo or false end
    assert.is_false(flags["Band/Alpha/Alpha_01"])             -- the file's tempo, confirmed by the audio
    assert.is_true(flags["Band/Alpha/Alpha_02"])              -- no tempo_source: measured on the audio
    common.write_atomic(path, saved)
  end)

  it("explains that there is nothing to score", function()
    local empty = clipset.tmpdir()
    assert.error_matches(function() eval.run { out = empty, quiet = true } end, "no samples under")
  end)
end)
