-- sao.cluster — k-means (k-means++ or random init, Lloyd, best of N restarts) and the silhouette
-- score, for StableBeaT's tag analysis (DSP_SPEC §3.10.9: embed every tag, k = 5, 100 restarts
-- with a fixed seed, mean silhouette; their value 0.095). Pure LuaJIT: the rows are copied once
-- into FFI double arrays, so it needs no libsao and is fast enough for hundreds of 768-d rows.
-- Checked against scikit-learn (spec/cluster_spec.lua, spec/fixtures/cluster_refs.json).
--
--   local cluster = require "sao.cluster"
--   local r = cluster.kmeans(X, 5)              -- X: list of rows (number lists, same length d)
--   -- r.labels (1-based per row), r.centers (k rows), r.inertia, r.iterations, r.restarts
--   local s, per_point = cluster.silhouette(X, r.labels)          -- { metric = "cosine" } too
--   for c, g in ipairs(cluster.describe(r.labels, names, r.centers, X)) do ... g.members ... end
--
-- Definitions follow sklearn so that its numbers are the oracle:
--   inertia   sum over rows of the squared Euclidean distance to the row's center.
--   tol       relative: Lloyd stops when the summed squared center shift <= tol * (mean over the
--             columns of the column variance), or when no label changed (sklearn's strict
--             convergence); after a tol stop the labels are recomputed from the final centers.
--   k-means++ greedy (sklearn): first center uniform; each next one is the best, by resulting
--             potential, of 2 + floor(ln k) candidates drawn with probability ~ D(x)^2.
--   empty     a cluster left empty takes the row farthest from its own center (among rows of
--             clusters with more than one member), so every cluster ends non-empty.
--   silhouette s_i = (b_i - a_i) / max(a_i, b_i); a_i = mean distance to the other members of
--             i's cluster, b_i = lowest mean distance to another cluster's members; s_i = 0 in a
--             singleton cluster (and where a_i = b_i = 0); the score is the mean of s_i.
-- The random numbers come from sao.lcg (a 32-bit LCG, pure Lua) seeded by opts.seed (no math.random), so a
-- seed gives the same result on every machine.
local ffi = require "ffi"

local M = {}

local floor, sqrt, log, huge = math.floor, math.sqrt, math.log, math.huge

local dbl = ffi.typeof("double[?]")
local i32 = ffi.typeof("int32_t[?]")

-- ---- random numbers: sao.lcg (pure Lua), the generator of sao.musicgen --------------------------

local rng = require("sao.lcg").new
M.rng = rng

-- ---- input ------------------------------------------------------------------------------------

-- X (list of rows) -> n, d, double[n*d] (row-major). `who` prefixes the error messages.
local function pack(X, who)
  if type(X) ~= "table" then
    error(who .. ": X must be a list of rows (lists of numbers), got " .. type(X), 3)
  end
  local n = #X
  if n == 0 then error(who .. ": X has no rows", 3) end
  if type(X[1]) ~= "table" then
    error(who .. ": row 1 is a " .. type(X[1]) .. ", expected a list of numbers", 3)
  end
  local d = #X[1]
  if d == 0 then error(who .. ": row 1 is empty (rows need at least one value)", 3) end
  local data = dbl(n * d)
  for i = 1, n do
    local row = X[i]
    if type(row) ~= "table" then
      error(who .. ": row " .. i .. " is a " .. type(row) .. ", expected a list of numbers", 3)
    end
    if #row ~= d then
      error(string.format("%s: row %d has %d values but row 1 has %d (all rows need the same length)",
        who, i, #row, d), 3)
    end
    local o = (i - 1) * d
    for j = 1, d do
      local v = row[j]
      if type(v) ~= "number" then
        error(string.format("%s: row %d, column %d is a %s, expected a number", who, i, j, type(v)), 3)
      end
      if v ~= v or v == huge or v == -huge then
        error(string.format("%s: row %d, column %d is %s (drop or fix non-finite values first)",
          who, i, j, tostring(v)), 3)
      end
      data[o + j - 1] = v
    end
  end
  return n, d, data
end

-- ---- k-means ----------------------------------------------------------------------------------

-- squared distance between row i of A (width d) and row j of B
local function dist2(A, i, B, j, d)
  local a, b, s = i * d, j * d, 0
  for t = 0, d - 1 do
    local e = A[a + t] - B[b + t]
    s = s + e * e
  end
  return s
end

-- The state of one k-means run, allocated once and reused by every restart.
local function workspace(n, d, k)
  return {
    C = dbl(k * d), Cnew = dbl(k * d),               -- centers (k, d)
    labels = i32(n), prev = i32(n),                   -- 0-based cluster of each row
    dist = dbl(n),                                    -- squared distance to the row's center
    counts = i32(k),
    closest = dbl(n), cand = dbl(n), cum = dbl(n),    -- k-means++ scratch
  }
end

-- k-means++ (greedy, as sklearn's _kmeans_plusplus): centers into w.C
local function init_pp(X, n, d, k, w, r)
  local C, closest, cand, cum = w.C, w.closest, w.cand, w.cum
  local trials = 2 + floor(log(k))
  local first = r:int(0, n - 1)
  ffi.copy(C, X + first * d, d * 8)
  local pot = 0
  for i = 0, n - 1 do
    local v = dist2(X, i, C, 0, d)
    closest[i] = v
    pot = pot + v
  end
  for c = 1, k - 1 do
    local acc = 0
    for i = 0, n - 1 do acc = acc + closest[i]; cum[i] = acc end
    local best_id, best_pot = -1, huge
    for _ = 1, trials do
      -- searchsorted(cum, u * pot, side = "left"), clipped to n - 1
      local target = r:next() * pot
      local lo, hi = 0, n - 1
      while lo < hi do
        local mid = floor((lo + hi) / 2)
        if cum[mid] < target then lo = mid + 1 else hi = mid end
      end
      local p = 0
      for i = 0, n - 1 do
        local v = dist2(X, i, X, lo, d)
        local cl = closest[i]
        p = p + (v < cl and v or cl)
      end
      if p < best_pot then best_pot, best_id = p, lo end
    end
    ffi.copy(C + c * d, X + best_id * d, d * 8)
    pot = 0
    for i = 0, n - 1 do
      local v = dist2(X, i, X, best_id, d)
      if v < closest[i] then closest[i] = v end
      pot = pot + closest[i]
    end
  end
end

-- random init (sklearn "random"): k distinct rows, by a partial Fisher-Yates shuffle
local function init_random(X, n, d, k, w, r)
  local perm = w.cum            -- reuse as an index scratch
  for i = 0, n - 1 do perm[i] = i end
  for c = 0, k - 1 do
    local j = c + r:int(0, n - c - 1)
    perm[c], perm[j] = perm[j], perm[c]
    ffi.copy(w.C + c * d, X + perm[c] * d, d * 8)
  end
end

-- Assign every row to its nearest center in w.C (ties: keep the row's previous cluster when it
-- is among the nearest, else the lowest index). Fills labels, dist, counts.
local function assign(X, n, d, k, w, keep)
  local C, labels, dist, counts = w.C, w.labels, w.dist, w.counts
  for c = 0, k - 1 do counts[c] = 0 end
  for i = 0, n - 1 do
    local bj, bv = 0, huge
    local xo = i * d
    for c = 0, k - 1 do
      local co, s = c * d, 0
      for t = 0, d - 1 do
        local e = X[xo + t] - C[co + t]
        s = s + e * e
        if s > bv then break end             -- already farther than the best
      end
      if s < bv then bv, bj = s, c end
    end
    if keep then
      local p = labels[i]
      if p ~= bj and dist2(X, i, C, p, d) == bv then bj = p end
    end
    labels[i] = bj
    dist[i] = bv
    counts[bj] = counts[bj] + 1
  end
end

-- Give every empty cluster the row farthest from its center (from clusters with > 1 member);
-- that row's center becomes the row itself. Returns true when something moved.
local function fill_empty(X, n, d, k, w)
  local labels, dist, counts, C = w.labels, w.dist, w.counts, w.C
  local moved = false
  for c = 0, k - 1 do
    if counts[c] == 0 then
      local far, fv = -1, -1
      for i = 0, n - 1 do
        if counts[labels[i]] > 1 and dist[i] > fv then far, fv = i, dist[i] end
      end
      -- k <= n, so some cluster has more than one member while one is empty
      counts[labels[far]] = counts[labels[far]] - 1
      labels[far], counts[c], dist[far] = c, 1, 0
      ffi.copy(C + c * d, X + far * d, d * 8)
      moved = true
    end
  end
  return moved
end

-- w.Cnew = mean of the rows of each cluster (every cluster non-empty here)
local function update(X, n, d, k, w)
  local Cn, labels, counts = w.Cnew, w.labels, w.counts
  ffi.fill(Cn, k * d * 8)
  for i = 0, n - 1 do
    local co, xo = labels[i] * d, i * d
    for t = 0, d - 1 do Cn[co + t] = Cn[co + t] + X[xo + t] end
  end
  for c = 0, k - 1 do
    local inv, co = 1 / counts[c], c * d
    for t = 0, d - 1 do Cn[co + t] = Cn[co + t] * inv end
  end
end

-- One Lloyd run from the centers in w.C. Returns inertia, iterations.
local function lloyd(X, n, d, k, w, max_iter, tol)
  local C, Cn, labels, prev = w.C, w.Cnew, w.labels, w.prev
  local iters, strict = 0, false
  for it = 1, max_iter do
    iters = it
    assign(X, n, d, k, w, it > 1)
    local moved = fill_empty(X, n, d, k, w)
    update(X, n, d, k, w)
    local same = it > 1 and not moved
    if same then
      for i = 0, n - 1 do
        if labels[i] ~= prev[i] then same = false; break end
      end
    end
    local shift = 0
    for t = 0, k * d - 1 do
      local e = Cn[t] - C[t]
      shift = shift + e * e
    end
    ffi.copy(C, Cn, k * d * 8)
    ffi.copy(prev, labels, n * 4)
    if same then strict = true; break end
    if not moved and shift <= tol then break end
  end
  if not strict then                  -- labels consistent with the final centers
    assign(X, n, d, k, w, true)
    fill_empty(X, n, d, k, w)
  end
  local inertia = 0
  for i = 0, n - 1 do inertia = inertia + dist2(X, i, C, labels[i], d) end
  return inertia, iters
end

--- k-means of the rows of X into k clusters; the best of opts.restarts runs by inertia.
--- opts: restarts (100), max_iter (300), tol (1e-4, relative to the mean column variance),
---       seed (0), init ("k-means++" | "random").
--- Returns { labels = {1-based per row}, centers = {{d numbers} x k}, inertia =, iterations =
--- (of the best run), restarts =, seed = }.
function M.kmeans(X, k, opts)
  opts = opts or {}
  local n, d, data = pack(X, "kmeans")
  if type(k) ~= "number" or k ~= floor(k) then
    error("kmeans: k must be a whole number, got " .. tostring(k), 2)
  end
  if k < 1 or k > n then
    error(string.format("kmeans: k = %d is out of range; need 1 <= k <= n (X has %d rows)", k, n), 2)
  end
  local restarts = opts.restarts or 100
  local max_iter = opts.max_iter or 300
  local tol = opts.tol or 1e-4
  local seed = opts.seed or 0
  local init = opts.init or "k-means++"
  if restarts < 1 or restarts ~= floor(restarts) then
    error("kmeans: restarts must be a whole number >= 1, got " .. tostring(restarts), 2)
  end
  if max_iter < 1 then error("kmeans: max_iter must be >= 1, got " .. tostring(max_iter), 2) end
  if tol < 0 then error("kmeans: tol must be >= 0, got " .. tostring(tol), 2) end
  local init_fn = (init == "k-means++" and init_pp) or (init == "random" and init_random)
  if not init_fn then
    error("kmeans: unknown init '" .. tostring(init) .. "' (k-means++ or random)", 2)
  end

  -- absolute tol = tol * mean over columns of the (population) column variance
  local var = 0
  for t = 0, d - 1 do
    local m = 0
    for i = 0, n - 1 do m = m + data[i * d + t] end
    m = m / n
    local v = 0
    for i = 0, n - 1 do local e = data[i * d + t] - m; v = v + e * e end
    var = var + v / n
  end
  local abs_tol = tol * var / d

  local w = workspace(n, d, k)
  local r = rng(seed)
  local best_inertia, best_iters = huge, 0
  local best_labels, best_C = i32(n), dbl(k * d)
  for _ = 1, restarts do
    init_fn(data, n, d, k, w, r)
    ffi.fill(w.labels, n * 4)
    local inertia, iters = lloyd(data, n, d, k, w, max_iter, abs_tol)
    if inertia < best_inertia then
      best_inertia, best_iters = inertia, iters
      ffi.copy(best_labels, w.labels, n * 4)
      ffi.copy(best_C, w.C, k * d * 8)
    end
  end

  local labels, centers = {}, {}
  for i = 1, n do labels[i] = best_labels[i - 1] + 1 end
  for c = 1, k do
    local row = {}
    for t = 1, d do row[t] = best_C[(c - 1) * d + t - 1] end
    centers[c] = row
  end
  return { labels = labels, centers = centers, inertia = best_inertia, iterations = best_iters,
           restarts = restarts, seed = seed }
end

-- ---- silhouette -------------------------------------------------------------------------------

-- labels (any non-nil values) -> int32 0-based cluster ids, number of clusters, the values by id
local function encode_labels(labels, n, who)
  if type(labels) ~= "table" then error(who .. ": labels must be a list, got " .. type(labels), 3) end
  if #labels ~= n then
    error(string.format("%s: %d labels for %d rows (one label per row)", who, #labels, n), 3)
  end
  local ids, values, out = {}, {}, i32(n)
  for i = 1, n do
    local v = labels[i]
    if v == nil or v ~= v then error(string.format("%s: label %d is %s", who, i, tostring(v)), 3) end
    local id = ids[v]
    if not id then
      values[#values + 1] = v
      id = #values - 1
      ids[v] = id
    end
    out[i - 1] = id
  end
  return out, #values, values
end

--- Mean silhouette of a labelling (sklearn's silhouette_score) and the per-row values (a list,
--- as sklearn's silhouette_samples). labels: one value per row (numbers or strings).
--- opts.metric: "euclidean" (default) or "cosine" (1 - cosine similarity; a zero row is at
--- distance 1 from everything, as sklearn).
function M.silhouette(X, labels, opts)
  opts = opts or {}
  local n, d, data = pack(X, "silhouette")
  local lab, k = encode_labels(labels, n, "silhouette")
  if k < 2 or k > n - 1 then
    error(string.format("silhouette: %d distinct labels for %d rows; valid values are 2 to n - 1 = %d",
      k, n, n - 1), 2)
  end
  local metric = opts.metric or "euclidean"
  local cosine = metric == "cosine"
  if not cosine and metric ~= "euclidean" then
    error("silhouette: unknown metric '" .. tostring(metric) .. "' (euclidean or cosine)", 2)
  end
  local inv = dbl(n)                 -- 1 / |row| for cosine
  if cosine then
    for i = 0, n - 1 do
      local s, o = 0, i * d
      for t = 0, d - 1 do s = s + data[o + t] * data[o + t] end
      inv[i] = s > 0 and 1 / sqrt(s) or 0
    end
  end
  -- sums[i*k + c] = summed distance from row i to the rows of cluster c
  local sums = dbl(n * k)
  local counts = i32(k)
  for i = 0, n - 1 do counts[lab[i]] = counts[lab[i]] + 1 end
  for i = 0, n - 2 do
    local io, li = i * d, lab[i]
    for j = i + 1, n - 1 do
      local jo, v = j * d, 0
      if cosine then
        local s = 0
        for t = 0, d - 1 do s = s + data[io + t] * data[jo + t] end
        v = 1 - s * inv[i] * inv[j]
        if v < 0 then v = 0 elseif v > 2 then v = 2 end
      else
        local s = 0
        for t = 0, d - 1 do local e = data[io + t] - data[jo + t]; s = s + e * e end
        v = sqrt(s)
      end
      sums[i * k + lab[j]] = sums[i * k + lab[j]] + v
      sums[j * k + li] = sums[j * k + li] + v
    end
  end
  local per, total = {}, 0
  for i = 0, n - 1 do
    local li, s = lab[i], 0
    local ni = counts[li]
    if ni > 1 then
      local a = sums[i * k + li] / (ni - 1)
      local b = huge
      for c = 0, k - 1 do
        if c ~= li then
          local m = sums[i * k + c] / counts[c]
          if m < b then b = m end
        end
      end
      local mx = a > b and a or b
      if mx > 0 then s = (b - a) / mx end
    end
    per[i + 1] = s
    total = total + s
  end
  return total / n, per
end

-- ---- report -------------------------------------------------------------------------------------

--- Per cluster, for reports: { cluster = c, size =, members = {names...}, distances = {...},
--- rows = {row numbers} }, members sorted by Euclidean distance to the cluster's center (nearest
--- first; ties by row order; distances and rows in the same order). centers may be nil (then the mean of the members); X may be nil (then members keep
--- row order and distances is empty). names may be nil (then row numbers). Clusters are
--- 1 .. max(#centers, largest label); labels must be whole numbers >= 1.
function M.describe(labels, names, centers, X)
  if type(labels) ~= "table" then error("describe: labels must be a list, got " .. type(labels), 2) end
  local n = #labels
  if names and #names ~= n then
    error(string.format("describe: %d names for %d labels", #names, n), 2)
  end
  if X and #X ~= n then error(string.format("describe: X has %d rows for %d labels", #X, n), 2) end
  local k = centers and #centers or 0
  for i = 1, n do
    local l = labels[i]
    if type(l) ~= "number" or l < 1 or l ~= floor(l) then
      error("describe: label " .. i .. " is " .. tostring(l) .. " (expected whole numbers >= 1)", 2)
    end
    if l > k then k = l end
  end
  local groups = {}
  for c = 1, k do groups[c] = { cluster = c, size = 0, members = {}, distances = {}, rows = {} } end
  for i = 1, n do
    local g = groups[labels[i]]
    g.size = g.size + 1
    g.rows[#g.rows + 1] = i
  end
  for c = 1, k do
    local g = groups[c]
    local dist = {}
    if X and g.size > 0 then
      local d = #X[g.rows[1]]
      local ctr = centers and centers[c]
      if not ctr then
        ctr = {}
        for t = 1, d do ctr[t] = 0 end
        for _, i in ipairs(g.rows) do for t = 1, d do ctr[t] = ctr[t] + X[i][t] end end
        for t = 1, d do ctr[t] = ctr[t] / g.size end
      end
      for _, i in ipairs(g.rows) do
        local s = 0
        for t = 1, d do local e = X[i][t] - ctr[t]; s = s + e * e end
        dist[i] = sqrt(s)
      end
      table.sort(g.rows, function(a, b)
        if dist[a] ~= dist[b] then return dist[a] < dist[b] end
        return a < b
      end)
    end
    for j, i in ipairs(g.rows) do
      g.members[j] = names and names[i] or i
      if X then g.distances[j] = dist[i] end
    end
  end
  return groups
end

return M
