-- sao.cluster (k-means, silhouette, describe): parity with scikit-learn on the inputs stored in
-- spec/fixtures/cluster_refs.json (written by spec/fixtures/cluster_refs.py: silhouette_score and
-- silhouette_samples for fixed labels, KMeans(n_init=100, random_state=0) inertia and labels),
-- the singleton and tie rules, determinism for a seed, empty clusters, and the error messages.
local cjson = require "cjson"
local cluster = require "sao.cluster"

local refs = cjson.decode(assert(io.open("spec/fixtures/cluster_refs.json")):read("*a"))
local SETS = {}
for _, s in ipairs(refs.sets) do SETS[s.name] = s end

local function kcase(set, k)
  for _, c in ipairs(set.kmeans) do if c.k == k then return c end end
  error("no sklearn k-means case k = " .. k .. " in " .. set.name)
end

local function d2(a, b)
  local s = 0
  for t = 1, #a do local e = a[t] - b[t]; s = s + e * e end
  return s
end

-- a and b are the same partition up to renaming the clusters
local function same_partition(a, b)
  if #a ~= #b then return false end
  local ab, ba = {}, {}
  for i = 1, #a do
    if ab[a[i]] == nil and ba[b[i]] == nil then ab[a[i]], ba[b[i]] = b[i], a[i]
    elseif ab[a[i]] ~= b[i] or ba[b[i]] ~= a[i] then return false end
  end
  return true
end

-- A k-means result is a Lloyd fixed point: k non-empty clusters, each center the mean of its
-- rows, each row at a nearest center, and inertia the summed squared distances.
local function assert_valid(X, k, r)
  assert.are.equal(#X, #r.labels)
  assert.are.equal(k, #r.centers)
  local d = #X[1]
  local sum, cnt = {}, {}
  for c = 1, k do
    cnt[c], sum[c] = 0, {}
    for t = 1, d do sum[c][t] = 0 end
  end
  local inertia = 0
  for i, row in ipairs(X) do
    local l = r.labels[i]
    assert.is_true(l >= 1 and l <= k and l == math.floor(l), "label " .. tostring(l))
    cnt[l] = cnt[l] + 1
    for t = 1, d do sum[l][t] = sum[l][t] + row[t] end
    local own = d2(row, r.centers[l])
    inertia = inertia + own
    for c = 1, k do
      assert.is_true(own <= d2(row, r.centers[c]) + 1e-9, string.format("row %d nearer to center %d than to its own %d", i, c, l))
    end
  end
  for c = 1, k do
    assert.is_true(cnt[c] > 0, "cluster " .. c .. " is empty")
    for t = 1, d do
      local m = sum[c][t] / cnt[c]
      assert.is_true(math.abs(r.centers[c][t] - m) <= 1e-9 * (1 + math.abs(m)),
        string.format("center %d[%d] = %.17g, mean of its rows %.17g", c, t, r.centers[c][t], m))
    end
  end
  assert.is_true(math.abs(inertia - r.inertia) <= 1e-9 * (1 + inertia), "inertia " .. r.inertia .. " vs " .. inertia)
end

describe("silhouette", function()
  it("matches sklearn's silhouette_score and silhouette_samples on every fixture case", function()
    local worst_score, worst_point, cases = 0, 0, 0
    for _, s in ipairs(refs.sets) do
      for _, c in ipairs(s.silhouette) do
        local score, per = cluster.silhouette(s.X, c.labels, { metric = c.metric })
        assert.are.equal(#s.X, #per)
        worst_score = math.max(worst_score, math.abs(score - c.score))
        for i = 1, #per do worst_point = math.max(worst_point, math.abs(per[i] - c.samples[i])) end
        cases = cases + 1
      end
    end
    assert.are.equal(8, cases)                       -- 3 sets, euclidean and cosine
    -- measured: 3.3e-16 (score), 2.7e-15 (per point); sklearn uses |x|^2 - 2x.y + |y|^2
    assert.is_true(worst_score < 1e-12, "max score difference " .. worst_score)
    assert.is_true(worst_point < 1e-12, "max per-point difference " .. worst_point)
  end)

  it("gives 0 to a singleton cluster and where a = b = 0 (two clusters on one point)", function()
    local s = SETS.ties_25x16.silhouette[1]
    local _, per = cluster.silhouette(SETS.ties_25x16.X, s.labels)
    assert.are.equal(4, s.labels[8])                 -- the fixture's singleton
    assert.are.equal(0, per[8])
    -- clusters 1 and 2 on the same point: a = b = 0 for rows 1-4 (sklearn: 0, not NaN)
    local score, p = cluster.silhouette({ { 0 }, { 0 }, { 0 }, { 0 }, { 9 }, { 9 } }, { 1, 1, 2, 2, 3, 3 })
    assert.are.same({ 0, 0, 0, 0, 1, 1 }, p)
    assert.near(1 / 3, score, 1e-15)
    local _, q = cluster.silhouette({ { 0 }, { 1 }, { 10 } }, { 1, 1, 2 })
    assert.are.equal(0, q[3])                        -- singleton
    assert.near(0.9, q[1], 1e-15)                    -- a = 1, b = 10: (10 - 1) / 10
    assert.near(8 / 9, q[2], 1e-15)                  -- a = 1, b = 9
  end)

  it("computes a hand-checked case, cosine too", function()
    -- rows 1,2 in cluster A at 0 and 1; row 3 in B at 4, row 4 in B at 6 (1-D)
    local X = { { 0 }, { 1 }, { 4 }, { 6 } }
    local score, per = cluster.silhouette(X, { "A", "A", "B", "B" })
    -- row 1: a = 1, b = (4 + 6)/2 = 5 -> 0.8; row 2: a = 1, b = 4 -> 0.75
    -- row 3: a = 2, b = (4 + 3)/2 = 3.5 -> 1.5/3.5; row 4: a = 2, b = 5.5 -> 3.5/5.5
    local want = { 0.8, 0.75, 1.5 / 3.5, 3.5 / 5.5 }
    for i = 1, 4 do assert.near(want[i], per[i], 1e-15) end
    assert.near((want[1] + want[2] + want[3] + want[4]) / 4, score, 1e-15)
    -- cosine: direction only; scaled copies are at distance 0, orthogonal ones at 1
    local Y = { { 1, 0 }, { 2, 0 }, { 0, 1 }, { 0, 3 } }
    local cs = cluster.silhouette(Y, { 1, 1, 2, 2 }, { metric = "cosine" })
    assert.near(1, cs, 1e-15)
    -- a zero row is at cosine distance 1 from everything (as sklearn)
    local _, zp = cluster.silhouette({ { 0, 0 }, { 1, 0 }, { 0, 1 } }, { 1, 1, 2 }, { metric = "cosine" })
    assert.near(0, zp[1], 1e-15)                     -- a = 1, b = 1
  end)

  it("labels may be any values; numbers and strings give the same result", function()
    local s = SETS.normal_60x8
    local c = s.silhouette[1]
    local names = {}
    for i, l in ipairs(c.labels) do names[i] = "tag-group-" .. l end
    local a = cluster.silhouette(s.X, c.labels)
    local b = cluster.silhouette(s.X, names)
    assert.are.equal(a, b)
  end)

  it("rejects label counts sklearn rejects, and bad arguments", function()
    local X = { { 0 }, { 1 }, { 2 } }
    assert.error_matches(function() cluster.silhouette(X, { 1, 1, 1 }) end,
      "1 distinct labels for 3 rows; valid values are 2 to n %- 1 = 2")
    assert.error_matches(function() cluster.silhouette(X, { 1, 2, 3 }) end, "3 distinct labels for 3 rows")
    assert.error_matches(function() cluster.silhouette(X, { 1, 2 }) end, "2 labels for 3 rows")
    assert.error_matches(function() cluster.silhouette(X, { 1, 0 / 0, 2 }) end, "label 2 is")
    assert.error_matches(function() cluster.silhouette(X, { 1, 1, 2 }, { metric = "manhattan" }) end,
      "unknown metric 'manhattan'")
    assert.error_matches(function() cluster.silhouette({ { 0 }, { 0 / 0 }, { 1 } }, { 1, 1, 2 }) end,
      "row 2, column 1 is")
    assert.error_matches(function() cluster.silhouette({ { 0, 1 }, { 0 }, { 1, 1 } }, { 1, 1, 2 }) end,
      "row 2 has 1 values but row 1 has 2")
  end)
end)

describe("kmeans", function()
  it("recovers the four blobs exactly (the truth and sklearn's partition)", function()
    local s = SETS.blobs4_40x2
    local r = cluster.kmeans(s.X, 4)
    assert.is_true(same_partition(s.truth, r.labels), "blobs not recovered")
    assert.is_true(same_partition(kcase(s, 4).labels, r.labels), "differs from sklearn's labels")
    assert.are.equal(100, r.restarts)
    assert_valid(s.X, 4, r)
  end)

  it("reaches sklearn's inertia on the easy cases", function()
    -- measured relative difference (ours - sklearn) / sklearn: blobs k=4 -5e-16, k=2 -1e-16,
    -- ties k=3 0, k=8 0 (seed 0, 100 restarts)
    for _, c in ipairs { { "blobs4_40x2", 4 }, { "blobs4_40x2", 2 }, { "ties_25x16", 3 }, { "ties_25x16", 8 } } do
      local s, k = SETS[c[1]], c[2]
      local r = cluster.kmeans(s.X, k)
      local want = kcase(s, k).inertia
      assert.is_true(r.inertia <= want * (1 + 1e-6),
        string.format("%s k=%d: inertia %.12g, sklearn %.12g", c[1], k, r.inertia, want))
      assert_valid(s.X, k, r)
    end
  end)

  it("is within 2 % of sklearn's best of 100 on the hard cases, and finds the best with more restarts", function()
    -- These have many local optima that single runs rarely reach (blobs k=7: ~1 % of our runs,
    -- 1.3 % of sklearn's; normal k=5: 0.05 % both), so best-of-100 depends on the RNG.
    -- measured (ours - sklearn) / sklearn, seed 0: blobs k=7 +0.63 %, normal k=5 +0.060 %,
    -- normal k=3 -0.13 %
    for _, c in ipairs { { "blobs4_40x2", 7 }, { "normal_60x8", 5 }, { "normal_60x8", 3 } } do
      local s, k = SETS[c[1]], c[2]
      local r = cluster.kmeans(s.X, k)
      local want = kcase(s, k).inertia
      assert.is_true(r.inertia <= want * 1.02,
        string.format("%s k=%d: inertia %.12g, sklearn %.12g", c[1], k, r.inertia, want))
      assert_valid(s.X, k, r)
    end
    -- 1000 restarts reach sklearn's best known (min over 20 x 100 runs) on the blobs with k = 7
    local s = SETS.blobs4_40x2
    local r = cluster.kmeans(s.X, 7, { restarts = 1000 })
    local best = kcase(s, 7).inertia_best_known
    assert.is_true(r.inertia <= best * (1 + 1e-9), string.format("%.12g vs %.12g", r.inertia, best))
  end)

  it("is deterministic for a seed; other seeds may differ but are valid", function()
    local s = SETS.normal_60x8
    local a = cluster.kmeans(s.X, 5, { seed = 3, restarts = 10, tol = 0 })
    local b = cluster.kmeans(s.X, 5, { seed = 3, restarts = 10, tol = 0 })
    assert.are.same(a, b)
    local seen = {}
    for seed = 0, 5 do
      local r = cluster.kmeans(s.X, 5, { seed = seed, restarts = 3, tol = 0 })
      assert_valid(s.X, 5, r)
      seen[string.format("%.9f", r.inertia)] = true
    end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    assert.is_true(distinct > 1, "six seeds gave the same inertia on unstructured data")
    local rr = cluster.kmeans(s.X, 5, { seed = 1, init = "random", restarts = 5, tol = 0 })
    assert_valid(s.X, 5, rr)
  end)

  it("fills empty clusters: duplicate rows, k = n, k = 1", function()
    -- 3 distinct points, each 4 times: k = 5 leaves k-means++ and random init with duplicate
    -- centers; every cluster must still end non-empty, at inertia 0
    local X = {}
    for i = 1, 12 do X[i] = ({ { 0, 0 }, { 3, 1 }, { -2, 5 } })[(i - 1) % 3 + 1] end
    for _, init in ipairs { "k-means++", "random" } do
      for _, k in ipairs { 3, 5, 12 } do
        local r = cluster.kmeans(X, k, { init = init, restarts = 5 })
        assert.are.equal(0, r.inertia, init .. " k=" .. k)
        assert_valid(X, k, r)
        -- ties keep a row's cluster, so a re-seeded cluster is not emptied again each
        -- iteration (measured: <= 3 iterations; without that rule it runs to max_iter = 300)
        assert.is_true(r.iterations <= 5, init .. " k=" .. k .. ": " .. r.iterations .. " iterations")
      end
    end
    -- all rows identical
    local same = {}
    for i = 1, 6 do same[i] = { 1, 2, 3 } end
    local r = cluster.kmeans(same, 4, { restarts = 3 })
    assert.are.equal(0, r.inertia)
    assert.is_true(r.iterations <= 5, r.iterations .. " iterations")
    assert_valid(same, 4, r)
    -- k = 1: the mean and the total sum of squares
    local s = SETS.blobs4_40x2
    local one = cluster.kmeans(s.X, 1, { restarts = 2 })
    local m = { 0, 0 }
    for _, row in ipairs(s.X) do m[1], m[2] = m[1] + row[1] / #s.X, m[2] + row[2] / #s.X end
    local ss = 0
    for _, row in ipairs(s.X) do ss = ss + d2(row, m) end
    assert.near(ss, one.inertia, 1e-9 * ss)
    assert_valid(s.X, 1, one)
  end)

  it("names the problem in its errors", function()
    local X = { { 0, 1 }, { 1, 1 }, { 2, 2 } }
    assert.error_matches(function() cluster.kmeans(X, 0) end, "k = 0 is out of range; need 1 <= k <= n %(X has 3 rows%)")
    assert.error_matches(function() cluster.kmeans(X, 4) end, "k = 4 is out of range")
    assert.error_matches(function() cluster.kmeans(X, 1.5) end, "k must be a whole number")
    assert.error_matches(function() cluster.kmeans({ { 0, 1 }, { 1 }, { 2, 2 } }, 2) end,
      "row 2 has 1 values but row 1 has 2 %(all rows need the same length%)")
    assert.error_matches(function() cluster.kmeans({ { 0, 1 }, { 1, 0 / 0 }, { 2, 2 } }, 2) end,
      "row 2, column 2 is .*nan")
    assert.error_matches(function() cluster.kmeans({ { 0, 1 }, { 1, math.huge }, { 2, 2 } }, 2) end,
      "row 2, column 2 is inf")
    assert.error_matches(function() cluster.kmeans({ { 0, "x" } }, 1) end, "row 1, column 2 is a string")
    assert.error_matches(function() cluster.kmeans({}, 1) end, "X has no rows")
    assert.error_matches(function() cluster.kmeans(X, 2, { init = "forgy" }) end, "unknown init 'forgy'")
    assert.error_matches(function() cluster.kmeans(X, 2, { restarts = 0 }) end, "restarts must be")
  end)
end)

describe("describe", function()
  it("lists each cluster's size and members, nearest to the center first", function()
    local X = { { 0 }, { 10 }, { 2 }, { 11 }, { 1 }, { 30 } }
    local names = { "a", "b", "c", "d", "e", "f" }
    local labels = { 1, 2, 1, 2, 1, 3 }
    local centers = { { 1 }, { 10.5 }, { 30 } }
    local g = cluster.describe(labels, names, centers, X)
    assert.are.equal(3, #g)
    assert.are.same({ 3, 2, 1 }, { g[1].size, g[2].size, g[3].size })
    assert.are.same({ "e", "a", "c" }, g[1].members)     -- 0, 1, 1 from the center; ties by row
    assert.are.same({ 0, 1, 1 }, g[1].distances)
    assert.are.same({ "b", "d" }, g[2].members)
    assert.are.same({ "f" }, g[3].members)
    -- without centers: the members' mean; without X: row order; without names: row numbers
    assert.are.same({ "e", "a", "c" }, cluster.describe(labels, names, nil, X)[1].members)
    assert.are.same({ "a", "c", "e" }, cluster.describe(labels, names)[1].members)
    assert.are.same({ 2, 4 }, cluster.describe(labels)[2].members)
    assert.error_matches(function() cluster.describe({ 1, 0 }, { "a", "b" }) end, "label 2 is 0")
    assert.error_matches(function() cluster.describe({ 1, 2 }, { "a" }) end, "1 names for 2 labels")
  end)

  it("reports a k-means result of the blobs", function()
    local s = SETS.blobs4_40x2
    local r = cluster.kmeans(s.X, 4)
    local names = {}
    for i = 1, #s.X do names[i] = "row" .. i end
    local total = 0
    for c, g in ipairs(cluster.describe(r.labels, names, r.centers, s.X)) do
      assert.are.equal(10, g.size)
      for j = 2, #g.distances do assert.is_true(g.distances[j - 1] <= g.distances[j]) end
      for _, name in ipairs(g.members) do assert.are.equal(c, r.labels[tonumber(name:sub(4))]) end
      total = total + g.size
    end
    assert.are.equal(40, total)
  end)
end)
