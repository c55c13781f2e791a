-- sao.pipeline.eval — the `eval` stage: how well generations follow their prompts (DSP_SPEC §1.5,
-- §3.10), written to OUT/eval/metrics.json, OUT/eval/samples.csv (one row per file) and
-- OUT/eval/report.html (self-contained: tables, embedded PNG plots, <audio> players linking the WAVs).
--
--   sao recipes/instrumental.lua --stages eval [--run main] [--samples DIR] [--reference-clips 8]
--
-- Groups evaluated: the run's latest samples/step-N, samples/step-0 (the base model, from
-- `sample --baseline`) when present, or --samples DIR; and a "reference" group of dataset clips
-- (held-out ones first) scored against their own metadata, which shows what the estimators
-- themselves reach on real material (--reference-clips 0 turns it off).
-- Per file: tempo (sao.analysis.tempo, the DSP estimator: the seed's deeprhythm/TempoCNN weights
-- are not available offline) with Acc1/Acc2 at 2 % and 4 % against the prompt's BPM; key and
-- scale (sao.analysis.key, Essentia KeyExtractor defaults) against the prompt's key: exact
-- accuracy, MIREX weighted score (mir_eval's fifth-above rule, and the symmetric variant),
-- relation histogram, 24x24 confusion matrix; features at the native 44.1 kHz (sao.dsp.features):
-- spectral centroid, flatness, H/P ratio, transient sharpness, onset rate, RMS, LUFS; the CLAP
-- score against the prompt when a CLAP service is set (SAO_CLAP_URL, docs/clap.md); and
-- memorization (sao.memorization): each sample's nearest training clip by chroma and by timbre,
-- against thresholds from the training clips' nearest other songs (--memorization N training clips,
-- default 200; 0: off).
local cjson = require "cjson"
local sao = require "sao"
local plot = require "sao.plot"
local progress = require "sao.progress"
local common = require "sao.pipeline.common"
local sample = require "sao.pipeline.sample"

local M = {}

M.VERSION = 1
M.TOLERANCES = { 0.02, 0.04 }
M.FEATURES = { "centroid_hz", "flatness", "hp_ratio", "transient_sharpness", "onset_rate", "rms_db", "lufs",
  "clap_score" }   -- clap_score: cosine of the CLAP audio and prompt embeddings, when a service is set

local function finite(x)
  if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

local function tol_name(t) return string.format("%gpct", t * 100) end

--- The 24 key labels in confusion-matrix order: C..B major, then C..B minor.
function M.key_labels()
  local out = {}
  for m = 0, 1 do
    for t = 0, 11 do out[#out + 1] = sao.analysis.key_name(t) .. (m == 1 and " minor" or " major") end
  end
  return out
end

local function key_index(tonic, minor) return tonic + (minor and 12 or 0) + 1 end

--- Scores one audio file against its reference {bpm, key, mode}. Returns a row (numbers may be
--- nil where undefined, with `notes` saying why). with_audio (optional): function(audio, sr, row)
--- called before the audio is freed (the CLAP score uses the same decoded audio).
function M.score_file(path, ref, tolerances, with_audio)
  tolerances = tolerances or M.TOLERANCES
  ref = ref or {}
  local row, notes = { reference = ref }, {}
  local audio, sr = sao.audio.load(path)
  row.duration = audio:size(2) / sr
  local f = sao.dsp.features(audio, sr)
  for _, k in ipairs(M.FEATURES) do row[k] = finite(f[k]) end
  row.lufs = finite(sao.audio.loudness(audio, sr))
  local ok, t = pcall(sao.analysis.tempo, audio, sr)
  if ok then
    row.bpm, row.bpm_confidence = finite(t.bpm), finite(t.confidence)
    if not t.bpm then notes[#notes + 1] = "no periodicity: tempo undefined" end
  else
    local msg = tostring(t):gsub("^[^:]*%.lua:%d+: ", "")
    notes[#notes + 1] = msg:match("^tempo") and msg or ("tempo: " .. msg)
  end
  if ref.bpm then
    for _, tol in ipairs(tolerances) do
      local a1, a2 = sao.analysis.tempo_match(row.bpm, ref.bpm, tol)
      row["acc1_" .. tol_name(tol)], row["acc2_" .. tol_name(tol)] = a1, a2
    end
  end
  local k = sao.analysis.key(audio, sr)
  row.key, row.scale, row.key_strength = k.key, k.scale, finite(k.strength)
  if ref.key then
    local okr, rt, rm = pcall(sao.analysis.parse_key, ref.key, ref.mode)
    if okr then
      row.ref_key_index = key_index(rt, rm)
      if k.tonic then
        local rel, w = sao.analysis.key_relation(k.tonic, k.scale == "minor", rt, rm)
        local _, ws = sao.analysis.key_relation(k.tonic, k.scale == "minor", rt, rm, true)
        row.key_relation, row.key_score, row.key_score_symmetric = rel, w, ws
        row.key_correct = rel == "same"
        row.est_key_index = key_index(k.tonic, k.scale == "minor")
      else
        row.key_relation, row.key_score, row.key_score_symmetric, row.key_correct = "other", 0, 0, false
        notes[#notes + 1] = "silent: key undefined"
      end
    else
      notes[#notes + 1] = "reference key '" .. tostring(ref.key) .. "' unreadable"
    end
  end
  if #notes > 0 then row.notes = table.concat(notes, "; ") end
  if with_audio then with_audio(audio, sr, row) end
  audio:free()
  return row
end

local function mean(list)
  local s, n = 0, 0
  for _, v in ipairs(list) do s, n = s + v, n + 1 end
  return n > 0 and s / n or nil
end

local function median(list)
  if #list == 0 then return nil end
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local m = (#t + 1) / 2
  return (t[math.floor(m)] + t[math.ceil(m)]) / 2
end

--- Aggregates the rows of one group.
function M.summarize(rows, tolerances)
  tolerances = tolerances or M.TOLERANCES
  local g = { n = #rows, tempo = { n_ref = 0, n_est = 0 }, key = { n_ref = 0, n_est = 0, relations = {} }, features = {} }
  for _, tol in ipairs(tolerances) do
    local a1, a2 = {}, {}
    for _, r in ipairs(rows) do
      if r.reference.bpm then
        a1[#a1 + 1] = r["acc1_" .. tol_name(tol)] and 1 or 0
        a2[#a2 + 1] = r["acc2_" .. tol_name(tol)] and 1 or 0
      end
    end
    g.tempo["acc1_" .. tol_name(tol)], g.tempo["acc2_" .. tol_name(tol)] = mean(a1), mean(a2)
  end
  local exact, score, scores = {}, {}, {}
  local matrix = {}
  for i = 1, 24 do
    matrix[i] = {}
    for j = 1, 24 do matrix[i][j] = 0 end
  end
  for _, r in ipairs(rows) do
    if r.reference.bpm then g.tempo.n_ref = g.tempo.n_ref + 1 end
    if r.bpm then g.tempo.n_est = g.tempo.n_est + 1 end
    if r.key_relation then
      g.key.n_ref = g.key.n_ref + 1
      if r.est_key_index then g.key.n_est = g.key.n_est + 1 end
      exact[#exact + 1] = r.key_correct and 1 or 0
      score[#score + 1] = r.key_score
      scores[#scores + 1] = r.key_score_symmetric
      g.key.relations[r.key_relation] = (g.key.relations[r.key_relation] or 0) + 1
      if r.ref_key_index and r.est_key_index then
        matrix[r.ref_key_index][r.est_key_index] = matrix[r.ref_key_index][r.est_key_index] + 1
      end
    end
  end
  g.key.accuracy, g.key.mirex, g.key.mirex_symmetric = mean(exact), mean(score), mean(scores)
  g.key.confusion = { labels = M.key_labels(), matrix = matrix }
  for _, k in ipairs(M.FEATURES) do
    local v = {}
    for _, r in ipairs(rows) do if r[k] then v[#v + 1] = r[k] end end
    g.features[k] = { mean = mean(v), median = median(v), n = #v }
  end
  return g
end

-- ---- what to evaluate ------------------------------------------------------------------------------
local function records_of(dir)
  local text = common.read(dir .. "/index.json")
  local ok, recs = pcall(cjson.decode, text or "")
  if ok and type(recs) == "table" and #recs > 0 then return recs end
  recs = {}
  for _, name in ipairs(common.ls(dir)) do
    if name:match("%.json$") and name ~= "index.json" then
      local okr, r = pcall(cjson.decode, common.read(dir .. "/" .. name) or "")
      if okr and type(r) == "table" and r.prompt then
        r.file = r.file or name:gsub("%.json$", ".wav")
        recs[#recs + 1] = r
      end
    end
  end
  return recs
end

--- Groups of files to score: {{name=, kind=, dir=, step=, items = {{path=, link=, prompt=, reference=, ...}}}}.
function M.groups(opts)
  local out = opts.out or "out"
  local run_dir = common.run_dir(opts)
  local groups = {}
  local function add_dir(name, dir, step)
    local items = {}
    for _, r in ipairs(records_of(dir)) do
      items[#items + 1] = { path = dir .. "/" .. r.file, file = r.file, prompt = r.prompt, cfg_scale = r.cfg_scale,
        reference = r.reference or sample.reference(r.prompt or ""), source = r.source }
    end
    if #items > 0 then groups[#groups + 1] = { name = name, kind = "samples", dir = dir, step = step, items = items } end
  end
  if opts.samples and opts.samples ~= true then
    add_dir("samples", opts.samples, nil)
  else
    local steps = {}
    for _, name in ipairs(common.ls(run_dir .. "/samples")) do
      local n = tonumber(name:match("^step%-(%d+)$"))
      if n then steps[#steps + 1] = n end
    end
    table.sort(steps)
    local last = steps[#steps]
    if last then add_dir("step-" .. last, run_dir .. "/samples/step-" .. last, last) end
    if last and last > 0 and steps[1] == 0 then add_dir("step-0 (base)", run_dir .. "/samples/step-0", 0) end
  end
  local nref = common.num(opts.reference_clips, 8)
  if nref > 0 then
    local items, entries = {}, require("sao.latents").read_index(out .. "/cache/latents")
    table.sort(entries, function(a, b)
      if (a.status == "heldout") ~= (b.status == "heldout") then return a.status == "heldout" end
      return tostring(a.clip) < tostring(b.clip)
    end)
    for _, e in ipairs(entries) do
      if #items >= nref then break end
      if (e.status == "ok" or e.status == "heldout") and e.audio then
        local ok, m = pcall(cjson.decode, common.read(out .. "/dataset/clips/" .. e.clip .. ".json") or "")
        local ref = sample.clip_reference(e.prompt, ok and m or nil)
        items[#items + 1] = { path = out .. "/dataset/clips/" .. e.audio, file = e.audio, prompt = e.prompt,
          reference = ref, source = e.status == "heldout" and "heldout" or "train",
          -- a tempo from the audio itself (beats; MIDI songs whose file said nothing): the same estimator
          self_tempo = ok and type(m) == "table" and (m.tempo_source == nil or m.tempo_source == "audio") or nil }
      end
    end
    if #items > 0 then
      groups[#groups + 1] = { name = "reference (dataset clips)", kind = "reference", dir = out .. "/dataset/clips",
        items = items }
    end
  end
  return groups
end

-- ---- report --------------------------------------------------------------------------------------------
local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function fmt(v, f)
  if v == nil then return "–" end
  if type(v) == "boolean" then return v and "yes" or "no" end
  if type(v) == "number" then return string.format(f or "%.3g", v) end
  return esc(v)
end

local function pct(v) return v and string.format("%.0f %%", v * 100) or "–" end

local function rel_link(path, eval_dir)
  local out = eval_dir:match("^(.*)/eval$")
  if out and path:sub(1, #out + 1) == out .. "/" then return "../" .. path:sub(#out + 2) end
  return path
end

function M.tempo_plot(metrics)
  local series, legend = {}, {}
  local hi = 0
  for _, g in ipairs(metrics.groups) do
    local xs, ys = {}, {}
    for _, s in ipairs(metrics.samples) do
      if s.group == g.name and s.reference.bpm and s.bpm then
        xs[#xs + 1], ys[#ys + 1] = s.reference.bpm, s.bpm
        hi = math.max(hi, s.reference.bpm, s.bpm)
      end
    end
    if #xs > 0 then
      series[#series + 1] = { x = xs, y = ys, style = "points" }
      legend[#legend + 1] = g.name
    end
  end
  if #series == 0 then return nil end
  hi = math.max(200, hi * 1.05)
  return plot.chart { title = "estimated vs prompted bpm", xlabel = "prompted bpm", series = series, legend = legend,
    xmin = 0, xmax = hi, ymin = 0, ymax = hi,
    lines = { { 0, 0, hi, hi, color = plot.colors.grey }, { 0, 0, hi / 2, hi, color = plot.colors.grid },
              { 0, 0, hi, hi / 2, color = plot.colors.grid } } }
end

function M.report_html(metrics, eval_dir, run_dir)
  local h = {}
  local function w(...) for _, s in ipairs { ... } do h[#h + 1] = s end end
  w([[<!doctype html><html><head><meta charset="utf-8"><title>sao eval</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:10px 14px;margin:12px 0}.cm td{padding:1px 3px;font-size:11px}
.small{color:#666;font-size:12px}</style></head><body>]])
  w("<h1>sao evaluation</h1>")
  w(string.format("<p>Run <b>%s</b>, model <b>%s</b>, created %s.</p>", esc(metrics.run), esc(metrics.model.name or "?"), esc(metrics.created)))
  if metrics.model.random_weights then
    w([[<div class="warn"><b>Random weights.</b> These samples come from the tiny model with random weights
(no Stable Audio Open checkpoint was found). The numbers below are meaningless as a judgement of
fine-tuning: they only show that the pipeline runs end to end.</div>]])
  elseif metrics.warning then
    w('<div class="warn">', esc(metrics.warning), "</div>")
  end
  for _, n in ipairs(metrics.notes) do w("<p class=small>", esc(n), "</p>") end
  -- summary
  w("<h2>Summary</h2><table><tr><th class=l>group</th><th>n</th>")
  for _, tol in ipairs(metrics.settings.tempo_tolerances) do
    w(string.format("<th>tempo Acc1 %g%%</th><th>Acc2 %g%%</th>", tol * 100, tol * 100))
  end
  w("<th>key exact</th><th>MIREX</th><th>MIREX sym.</th>")
  for _, k in ipairs(M.FEATURES) do w("<th>", esc(k), "</th>") end
  w("</tr>")
  for _, g in ipairs(metrics.groups) do
    w("<tr><td class=l>", esc(g.name), "</td><td>", g.n, "</td>")
    for _, tol in ipairs(metrics.settings.tempo_tolerances) do
      w("<td>", pct(g.tempo["acc1_" .. tol_name(tol)]), "</td><td>", pct(g.tempo["acc2_" .. tol_name(tol)]), "</td>")
    end
    w("<td>", pct(g.key.accuracy), "</td><td>", fmt(g.key.mirex, "%.2f"), "</td><td>", fmt(g.key.mirex_symmetric, "%.2f"), "</td>")
    for _, k in ipairs(M.FEATURES) do w("<td>", fmt(g.features[k].mean), "</td>") end
    w("</tr>")
  end
  w("</table>")
  w("<p class=small>Tempo: ", esc(metrics.settings.tempo_estimator), ". Key: ", esc(metrics.settings.key_estimator),
    ". Features: ", esc(metrics.settings.features), ". ", esc(metrics.settings.clap),
    ". Feature columns are group means.</p>")
  -- plots
  local tp = M.tempo_plot(metrics)
  if tp then w('<h2>Tempo</h2><img alt="estimated vs prompted BPM" src="', plot.data_uri(tp), '">') end
  if run_dir and common.exists(run_dir .. "/log.jsonl") then
    local png = require("sao.pipeline.train").plot_loss(run_dir, eval_dir .. "/loss.png")
    if png then w('<h2>Training loss</h2><img alt="loss curve" src="', plot.data_uri(png), '">') end
  end
  -- key relations and confusion
  w("<h2>Key</h2><table><tr><th class=l>group</th>")
  local rels = { "same", "fifth", "fifth_below", "relative", "parallel", "other" }
  for _, r in ipairs(rels) do w("<th>", r, "</th>") end
  w("</tr>")
  for _, g in ipairs(metrics.groups) do
    w("<tr><td class=l>", esc(g.name), "</td>")
    for _, r in ipairs(rels) do w("<td>", g.key.relations[r] or 0, "</td>") end
    w("</tr>")
  end
  w("</table>")
  for _, g in ipairs(metrics.groups) do
    local m, labels = g.key.confusion.matrix, g.key.confusion.labels
    local any = false
    for i = 1, 24 do for j = 1, 24 do if m[i][j] > 0 then any = true end end end
    if any then
      w("<h3>Confusion: ", esc(g.name), " (rows prompted, columns estimated)</h3><table class=cm><tr><th></th>")
      for j = 1, 24 do w("<th>", esc(labels[j]:gsub(" major", ""):gsub(" minor", "m")), "</th>") end
      w("</tr>")
      for i = 1, 24 do
        local row_n = 0
        for j = 1, 24 do row_n = row_n + m[i][j] end
        if row_n > 0 then
          w("<tr><th class=l>", esc(labels[i]), "</th>")
          for j = 1, 24 do
            local v = m[i][j]
            local shade = v > 0 and math.floor(255 - 160 * v / row_n) or 255
            w(string.format('<td style="background:rgb(%d,%d,255)">%s</td>', shade, shade, v > 0 and v or ""))
          end
          w("</tr>")
        end
      end
      w("</table>")
    end
  end
  -- the dataset's tags (the trap recipe's tag stage): counts as bars, the T5 tag clusters
  local ds = metrics.out .. "/dataset"
  local tags_png = common.read(ds .. "/tags.png")
  if tags_png then
    w('<h2>Dataset tags</h2><img alt="tag counts" src="', plot.data_uri(tags_png), '">')
    local okc, tc = pcall(cjson.decode, common.read(ds .. "/tag_clusters.json") or "")
    if okc and type(tc) == "table" and type(tc.clusters) == "table" then
      w("<p>", #tc.clusters, " clusters of ", tc.tags, " tags in T5 space, silhouette ", fmt(tc.silhouette, "%.3f"),
        " (StableBeaT: 0.095). ", esc(tc.encoder or ""), "</p><table><tr><th class=l>cluster</th><th>size</th>",
        "<th class=l>members (nearest the centre first)</th></tr>")
      for _, g in ipairs(tc.clusters) do
        w("<tr><td class=l>", esc(g.name or ""), "</td><td>", g.size, "</td><td class=l>",
          esc(table.concat(g.members, ", ")), "</td></tr>")
      end
      w("</table>")
    end
  end
  -- memorization
  local mrep = metrics.memorization
  if mrep then
    w("<h2>Memorization</h2><p class=small>", esc(mrep.method), ". ", mrep.training_clips, " training clips, ",
      mrep.thresholds.queries, " as queries; thresholds (whole clips): chroma ", fmt(mrep.thresholds.chroma, "%.3f"), ", timbre ",
      fmt(mrep.thresholds.timbre, "%.3f"), ".</p>")
    w("<table><tr><th class=l>group</th><th>n</th><th>chroma mean</th><th>median</th><th>max</th><th>above</th>",
      "<th>timbre mean</th><th>median</th><th>max</th><th>above</th></tr>")
    for _, g in ipairs(mrep.groups) do
      local c, t = g.summary.chroma, g.summary.timbre
      w("<tr><td class=l>", esc(g.name), "</td><td>", g.summary.n, "</td><td>", fmt(c.mean, "%.3f"), "</td><td>",
        fmt(c.median, "%.3f"), "</td><td>", fmt(c.max, "%.3f"), "</td><td>", c.above, "</td><td>", fmt(t.mean, "%.3f"),
        "</td><td>", fmt(t.median, "%.3f"), "</td><td>", fmt(t.max, "%.3f"), "</td><td>", t.above, "</td></tr>")
    end
    w("</table>")
    for _, g in ipairs(mrep.groups) do
      w("<h3>Closest to the training audio: ", esc(g.name), "</h3><table><tr><th class=l>sample</th><th>chroma</th>",
        "<th class=l>nearest (chroma)</th><th>threshold</th><th>lag (beats)</th><th>timbre</th><th class=l>nearest (timbre)</th><th>flag</th></tr>")
      for i = 1, math.min(5, #g.items) do
        local x = g.items[i]
        local ref = x.chroma_match and rel_link(metrics.out .. "/dataset/clips/" .. x.chroma_match, eval_dir)
        w("<tr><td class=l>", esc(x.file), "</td><td>", fmt(x.chroma, "%.3f"), "</td><td class=l>",
          ref and ('<audio controls preload="none" src="' .. esc(ref) .. '"></audio><br><span class=small>' ..
                   esc(x.chroma_match) .. "</span>") or "–",
          "</td><td>", fmt(x.chroma_threshold, "%.3f"), "</td><td>", fmt(x.chroma_lag_beats), "</td><td>",
          fmt(x.timbre, "%.3f"), "</td><td class=l>",
          esc(x.timbre_match or "–"), "</td><td>", x.flagged and "listen" or "", "</td></tr>")
      end
      w("</table>")
    end
  end
  -- per file
  w("<h2>Files</h2>")
  for _, g in ipairs(metrics.groups) do
    w("<h3>", esc(g.name), "</h3><table><tr><th class=l>audio</th><th class=l>prompt</th><th>cfg</th><th>ref BPM</th>",
      "<th>est BPM</th><th>Acc1 4%</th><th>Acc2 4%</th><th>ref key</th><th>est key</th><th>relation</th>",
      "<th>centroid</th><th>flatness</th><th>H/P</th><th>transients</th><th>LUFS</th><th>CLAP</th><th class=l>notes</th></tr>")
    for _, s in ipairs(metrics.samples) do
      if s.group == g.name then
        local r = s.reference
        w('<tr><td class=l><audio controls preload="none" src="', esc(s.link), '"></audio><br><span class=small>',
          esc(s.file), "</span></td><td class=l>", esc(s.prompt or ""), "</td><td>", fmt(s.cfg_scale), "</td><td>",
          fmt(r.bpm, "%.0f"), "</td><td>", fmt(s.bpm, "%.1f"), "</td><td>", fmt(s.acc1_4pct), "</td><td>", fmt(s.acc2_4pct),
          "</td><td>", r.key and esc(r.key .. " " .. (r.mode or "")) or "–", "</td><td>",
          s.key and esc(s.key .. " " .. s.scale) or "–", "</td><td>", fmt(s.key_relation), "</td><td>",
          fmt(s.centroid_hz, "%.0f"), "</td><td>", fmt(s.flatness, "%.2e"), "</td><td>", fmt(s.hp_ratio, "%.3f"),
          "</td><td>", fmt(s.transient_sharpness, "%.3g"), "</td><td>", fmt(s.lufs, "%.1f"), "</td><td>",
          fmt(s.clap_score, "%.3f"), "</td><td class=l>", esc(s.notes or ""), "</td></tr>")
      end
    end
    w("</table>")
  end
  w("</body></html>\n")
  return table.concat(h)
end

M.CSV_COLUMNS = { "group", "file", "prompt", "cfg_scale", "ref_bpm", "ref_key", "bpm", "acc1_4pct", "acc2_4pct",
  "key", "scale", "key_relation", "centroid_hz", "flatness", "hp_ratio", "transient_sharpness", "onset_rate",
  "rms_db", "lufs", "clap_score" }

--- One row per scored file (the per-file table of the report, StableBeaT's metric columns among
--- them) as CSV (RFC 4180 quoting), for a spreadsheet.
function M.csv(rows)
  local function cell(v)
    if v == nil then return "" end
    if type(v) == "boolean" then return v and "1" or "0" end
    if type(v) == "number" then return string.format("%.10g", v) end
    local s = tostring(v)
    if s:find('[,"\r\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
    return s
  end
  local out = { table.concat(M.CSV_COLUMNS, ",") }
  for _, r in ipairs(rows) do
    local ref = r.reference or {}
    local vals = {}
    for i, c in ipairs(M.CSV_COLUMNS) do
      local v
      if c == "ref_bpm" then v = ref.bpm
      elseif c == "ref_key" then v = ref.key and (ref.key .. " " .. (ref.mode or "")) or nil
      else v = r[c] end
      vals[i] = cell(v)
    end
    out[#out + 1] = table.concat(vals, ",")
  end
  return table.concat(out, "\n") .. "\n"
end

--- Memorization (sao.memorization, DSP_SPEC §3.10.8): the nearest training clip of every sample
--- (up to `max_train` training clips, the encode stage's "ok" entries, taken in a fixed spread
--- over the list), thresholds from pairs of different training songs. Returns the report table
--- of metrics.json, or nil with no training clips.
function M.memorization(out, groups, max_train, log)
  local mem = require "sao.memorization"
  local train = {}
  local seen = {}   -- a clip encoded for several models (or seeds) is one training clip
  for _, e in ipairs(require("sao.latents").read_index(out .. "/cache/latents")) do
    if e.status == "ok" and e.audio and not seen[e.clip] then
      seen[e.clip] = true
      train[#train + 1] = { path = out .. "/dataset/clips/" .. e.audio, song = tostring(e.clip):match("^(.*)/[^/]+$") or e.clip,
                            name = e.clip,   -- features kept by the clip's content (the encode stage's hash)
                            cache = e.audio_sha256 and (out .. "/cache/memorization/" .. e.audio_sha256 .. ".safetensors") }
    end
  end
  if #train == 0 or max_train <= 0 then return nil end
  table.sort(train, function(a, b) return a.name < b.name end)
  if #train > max_train then   -- an even spread over the sorted list: every part of the corpus
    local picked = {}
    for i = 1, max_train do picked[i] = train[math.floor((i - 1) * #train / max_train) + 1] end
    train = picked
  end
  common.mkdir_p(out .. "/cache/memorization")
  local set = mem.prepare(train)
  log(("eval: memorization: features of %d training clips (%d from the cache)"):format(#set.clips, set.cached))
  local rep = { training_clips = #set.clips, features_cached = set.cached, thresholds = set.thresholds, groups = {},
    method = "nearest training clip by beat-synchronous chroma (best mean cosine over lags, >= 8 beats) and by " ..
             "standardised 40-band log-mel mean/std (cosine); thresholds = quantile " .. set.thresholds.quantile ..
             " of the training clips' similarity to their nearest clip of another song (chroma: at each " ..
             "sample's length in beats)" }
  for _, g in ipairs(groups) do
    if g.kind == "samples" then
      local items = {}
      for _, it in ipairs(g.items) do items[#items + 1] = { path = it.path, name = it.file, features = it.mem_features } end
      local r = mem.analyse(set, items)
      local rows = {}
      local prefix = #(out .. "/dataset/clips/")
      local function rel(path) return path and path:sub(prefix + 1) or nil end
      for _, x in ipairs(r.items) do
        rows[#rows + 1] = { file = x.name, flagged = x.flagged,
          chroma = x.chroma.score, chroma_match = rel(x.chroma.match), chroma_threshold = x.chroma.threshold,
          chroma_lag_beats = x.chroma.lag,
          timbre = x.timbre.score, timbre_match = rel(x.timbre.match) }
      end
      table.sort(rows, function(a, b) return (a.chroma or -2) > (b.chroma or -2) end)
      rep.groups[#rep.groups + 1] = { name = g.name, summary = r.summary, items = rows }
    end
  end
  return rep
end

function M.run(opts)
  opts = opts or {}
  local quiet = common.flag(opts.quiet)
  local log = function(msg) if not quiet then io.stderr:write(msg, "\n") end end
  local out = opts.out or "out"
  local eval_dir = out .. "/eval"
  local run_dir = common.run_dir(opts)
  local tolerances = common.list(opts.tempo_tolerances, true) or M.TOLERANCES
  local groups = M.groups(opts)
  local nsamples = 0
  for _, g in ipairs(groups) do if g.kind == "samples" then nsamples = nsamples + #g.items end end
  if nsamples == 0 then
    error("eval: no samples under " .. run_dir .. "/samples (run the sample stage, or give --samples DIR)", 0)
  end
  common.mkdir_p(eval_dir)
  local metrics = {
    version = M.VERSION, created = os.date("!%Y-%m-%dT%H:%M:%SZ"), run = tostring(opts.run or "main"), out = out,
    model = {}, groups = {}, samples = {}, notes = {},
    settings = { tempo_tolerances = tolerances,
      tempo_estimator = "sao.analysis.tempo (DSP tempogram estimator; deeprhythm/TempoCNN weights are not available offline)",
      key_estimator = "sao.analysis.key, preset bgate (Essentia KeyExtractor defaults); MIREX weights as mir_eval",
      features = "sao.dsp.features at the file's rate (44.1 kHz; librosa would resample to 22.05 kHz)" },
  }
  -- the CLAP prompt score (DSP_SPEC §3.10.7) needs a CLAP embedding service (docs/clap.md)
  local clap = require("sao.clap").from_env { url = opts.clap_url ~= true and opts.clap_url or nil,
                                              model = opts.clap_model, cache_dir = out .. "/cache/http" }
  metrics.settings.clap = clap and ("CLAP score from " .. clap:describe()) or
    "no CLAP service (SAO_CLAP_URL): CLAP score not computed"
  local function clap_score(it, audio, sr, row)
    if not clap or not it.prompt then return end
    local ok, v = pcall(clap.score, clap, audio, sr, it.prompt)
    if ok then row.clap_score = finite(v); return end
    local msg = tostring(v):gsub("^[^:]*%.lua:%d+: ", "")
    row.notes = (row.notes and (row.notes .. "; ") or "") .. "clap: " .. msg
    if msg:match("running%?") or msg:match("connect") then   -- the service is down: stop asking
      metrics.notes[#metrics.notes + 1] = "CLAP score stopped: " .. msg
      clap = nil
    end
  end
  local total = 0
  for _, g in ipairs(groups) do total = total + #g.items end
  local max_train = common.num(opts.memorization, 200)
  local bar = progress.new { total = total, label = "eval", unit = "files", quiet = quiet }
  for _, g in ipairs(groups) do
    local rows = {}
    for _, it in ipairs(g.items) do
      bar:start(it.file)
      local ok, row = pcall(M.score_file, it.path, it.reference, tolerances, function(audio, sr, r)
        clap_score(it, audio, sr, r)
        -- the memorization check's features of a sample, while its audio is decoded
        if g.kind == "samples" and max_train > 0 then
          local okf, f = pcall(require("sao.memorization").features, audio, sr)
          if okf then it.mem_features = f end
        end
      end)
      if not ok then
        row = { reference = it.reference or {}, notes = "unreadable: " .. tostring(row):gsub("^[^:]*%.lua:%d+: ", "") }
        bar:print("eval: " .. it.path .. ": " .. row.notes)
      end
      row.group, row.file, row.prompt, row.cfg_scale, row.source = g.name, it.file, it.prompt, it.cfg_scale, it.source
      row.link = rel_link(it.path, eval_dir)
      rows[#rows + 1] = row
      metrics.samples[#metrics.samples + 1] = row
      bar:advance(1, it.file)
    end
    local s = M.summarize(rows, tolerances)
    s.name, s.kind, s.dir, s.step = g.name, g.kind, g.dir, g.step
    local self_n = 0
    for _, it in ipairs(g.items) do if it.self_tempo and it.reference.bpm then self_n = self_n + 1 end end
    if self_n > 0 then
      metrics.notes[#metrics.notes + 1] = ("%s: the reference BPM of %d of its clips was measured on the audio by the " ..
        "same estimator (no MIDI tempo): their tempo accuracy shows that the estimate is stable, not that it is " ..
        "right"):format(g.name, self_n)
    end
    metrics.groups[#metrics.groups + 1] = s
    if g.kind == "samples" then
      local f = common.read(g.items[1].path:gsub("%.wav$", ".json"))
      local ok, r = pcall(cjson.decode, f or "")
      if ok and type(r) == "table" then
        metrics.model.name = metrics.model.name or r.model
        if r.random_weights then metrics.model.random_weights = true end
      end
    end
  end
  bar:finish()
  if metrics.model.random_weights then
    metrics.warning = "The samples come from a model with random weights (the tiny test model): " ..
      "the metrics are meaningless as a measure of quality or prompt adherence."
  end
  if max_train > 0 then
    local ok, rep = pcall(M.memorization, out, groups, max_train, log)
    if ok then metrics.memorization = rep
    else metrics.notes[#metrics.notes + 1] = "memorization: " .. tostring(rep):gsub("^[^:]*%.lua:%d+: ", "") end
  end
  for _, s in ipairs(metrics.samples) do s.ref_key_index, s.est_key_index = nil, nil end
  common.write_atomic(eval_dir .. "/metrics.json", cjson.encode(metrics))
  common.write_atomic(eval_dir .. "/samples.csv", M.csv(metrics.samples))
  common.write_atomic(eval_dir .. "/report.html", M.report_html(metrics, eval_dir, run_dir))
  for _, g in ipairs(metrics.groups) do
    log(string.format("eval: %-28s n=%-3d tempo Acc1 4%% %s Acc2 4%% %s | key exact %s MIREX %s", g.name, g.n,
      pct(g.tempo.acc1_4pct), pct(g.tempo.acc2_4pct), pct(g.key.accuracy), fmt(g.key.mirex, "%.2f")))
  end
  log("eval: wrote " .. eval_dir .. "/metrics.json and report.html")
  return metrics
end

return M
