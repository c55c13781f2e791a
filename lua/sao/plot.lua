-- sao.plot — small PNG charts with no dependencies: a raster canvas, a 3×5 bitmap font, line and
-- scatter charts with axes and ticks, and a PNG writer (deflate with fixed Huffman codes, CRC-32, Adler-32).
-- Used for the training loss curve (OUT/runs/<name>/loss.png) and the evaluation report's plots.
--
--   local plot = require "sao.plot"
--   local png = plot.chart {
--     width = 640, height = 360, title = "loss", xlabel = "step", logy = "auto",
--     series = { { x = steps, y = losses, color = plot.colors.light }, { x = steps, y = smooth } },
--     lines = { { 0, 0, 100, 100, color = plot.colors.grey } },   -- extra segments in data units
--   }
--   plot.write("loss.png", png)                  -- atomic
--   local uri = plot.data_uri(png)              -- "data:image/png;base64,..." for HTML
--
-- The PNG is 8-bit RGB; its zlib stream is one deflate block with the fixed Huffman codes whose
-- only matches repeat the pixel to the left or the row above, which suits flat charts (a 640×360
-- chart is a few tens of KB).
local ffi = require "ffi"
local bit = require "bit"

local M = {}

M.colors = {
  black = { 0, 0, 0 }, white = { 255, 255, 255 }, grey = { 170, 170, 170 }, grid = { 232, 232, 232 },
  blue = { 31, 119, 180 }, orange = { 255, 127, 14 }, green = { 44, 160, 44 }, red = { 214, 39, 40 },
  purple = { 148, 103, 189 }, light = { 160, 195, 230 },
}
M.palette = { M.colors.blue, M.colors.orange, M.colors.green, M.colors.red, M.colors.purple }

-- ---- PNG encoding ------------------------------------------------------------------------------
local crc_table = ffi.new("uint32_t[256]")
for n = 0, 255 do
  local c = n
  for _ = 1, 8 do
    if bit.band(c, 1) ~= 0 then c = bit.bxor(0xEDB88320, bit.rshift(c, 1)) else c = bit.rshift(c, 1) end
  end
  crc_table[n] = bit.tobit(c) % 2 ^ 32
end

--- CRC-32 (the PNG/zlib polynomial) of a string, continuing from `crc` (default 0).
function M.crc32(s, crc)
  local c = bit.bnot(crc or 0)
  local p = ffi.cast("const uint8_t *", s)
  for i = 0, #s - 1 do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, p[i]), 0xFF)], bit.rshift(c, 8))
  end
  return bit.bnot(c) % 2 ^ 32
end

--- Adler-32 of n bytes at p (a uint8_t pointer) or of a string.
function M.adler32(p, n)
  if type(p) == "string" then n = #p; p = ffi.cast("const uint8_t *", p) end
  local a, b = 1, 0
  local i = 0
  while i < n do
    local stop = math.min(n, i + 3800)      -- sums stay far below 2^53 between the reductions
    for k = i, stop - 1 do
      a = a + p[k]
      b = b + a
    end
    a, b = a % 65521, b % 65521
    i = stop
  end
  return b * 65536 + a
end

local function be32(v)
  v = v % 2 ^ 32
  return string.char(math.floor(v / 2 ^ 24) % 256, math.floor(v / 2 ^ 16) % 256, math.floor(v / 256) % 256, v % 256)
end

local function chunk(kind, data)
  return be32(#data) .. kind .. data .. be32(M.crc32(kind .. data))
end

-- ---- deflate: fixed Huffman codes, matches at distance 3 (the pixel to the left) or one row up ----
local LBASE = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163,
  195, 227, 258 }
local LEXTRA = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 }
local DBASE = { 1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
  3073, 4097, 6145, 8193, 12289, 16385, 24577 }
local DEXTRA = { 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 }

local function code_of(base, v)            -- index k (1-based) with base[k] <= v < base[k+1]
  local k = #base
  while base[k] > v do k = k - 1 end
  return k
end

--- zlib stream (RFC 1950/1951) of n bytes at p: one fixed-Huffman block; a byte run repeating the
--- previous pixel (`bpp` bytes back) or the row above (`stride` bytes back) becomes a match.
function M.deflate(p, n, bpp, stride)
  local cap = n + math.floor(n / 4) + 64
  local out = ffi.new("uint8_t[?]", cap)
  local o, acc, nbits = 0, 0, 0
  local function put(v, len)                -- LSB first
    acc = acc + v * 2 ^ nbits
    nbits = nbits + len
    while nbits >= 8 do
      out[o] = acc % 256
      o = o + 1
      acc = math.floor(acc / 256)
      nbits = nbits - 8
    end
  end
  local function huff(code, len)            -- Huffman codes go most significant bit first
    local r = 0
    for _ = 1, len do
      r = r * 2 + code % 2
      code = math.floor(code / 2)
    end
    put(r, len)
  end
  local function literal(v)
    if v < 144 then huff(0x30 + v, 8)
    elseif v < 256 then huff(0x190 + v - 144, 9)
    elseif v < 280 then huff(v - 256, 7)
    else huff(0xC0 + v - 280, 8) end
  end
  out[0], out[1] = 0x78, 0x01
  o = 2
  put(1, 1)                                 -- BFINAL
  put(1, 2)                                 -- BTYPE 01: fixed Huffman codes
  local i = 0
  while i < n do
    local best, dist = 0, 0
    for _, d in ipairs { bpp, stride } do
      if d and i >= d then
        local len = 0
        while len < 258 and i + len < n and p[i + len] == p[i + len - d] do len = len + 1 end
        if len > best then best, dist = len, d end
      end
    end
    if best >= 3 then
      local lc = code_of(LBASE, best)
      literal(256 + lc)
      if LEXTRA[lc] > 0 then put(best - LBASE[lc], LEXTRA[lc]) end
      local dc = code_of(DBASE, dist)
      huff(dc - 1, 5)
      if DEXTRA[dc] > 0 then put(dist - DBASE[dc], DEXTRA[dc]) end
      i = i + best
    else
      literal(p[i])
      i = i + 1
    end
    if o > cap - 16 then error("plot.deflate: output buffer overflow", 2) end
  end
  literal(256)                              -- end of block
  if nbits > 0 then put(0, 8 - nbits) end
  return ffi.string(out, o) .. be32(M.adler32(p, n))
end

--- PNG bytes of an 8-bit RGB image: rgb is a uint8_t buffer of w*h*3 bytes, rows top to bottom.
function M.encode_png(w, h, rgb)
  local stride = 1 + 3 * w
  local n = stride * h
  local raw = ffi.new("uint8_t[?]", n)
  for y = 0, h - 1 do
    raw[y * stride] = 0                                   -- filter type 0 (none)
    ffi.copy(raw + y * stride + 1, rgb + y * 3 * w, 3 * w)
  end
  local ihdr = be32(w) .. be32(h) .. string.char(8, 2, 0, 0, 0)
  return "\137PNG\r\n\26\n" .. chunk("IHDR", ihdr) .. chunk("IDAT", M.deflate(raw, n, 3, stride)) .. chunk("IEND", "")
end

-- ---- canvas --------------------------------------------------------------------------------------
local Canvas = {}
Canvas.__index = Canvas

function M.canvas(w, h, bg)
  local self = setmetatable({ w = w, h = h, px = ffi.new("uint8_t[?]", w * h * 3) }, Canvas)
  self:fill(0, 0, w, h, bg or M.colors.white)
  return self
end

function Canvas:set(x, y, c)
  x, y = math.floor(x + 0.5), math.floor(y + 0.5)
  if x < 0 or y < 0 or x >= self.w or y >= self.h then return end
  local i = (y * self.w + x) * 3
  self.px[i], self.px[i + 1], self.px[i + 2] = c[1], c[2], c[3]
end

function Canvas:fill(x0, y0, w, h, c)
  for y = math.max(0, math.floor(y0)), math.min(self.h, math.floor(y0 + h)) - 1 do
    for x = math.max(0, math.floor(x0)), math.min(self.w, math.floor(x0 + w)) - 1 do
      local i = (y * self.w + x) * 3
      self.px[i], self.px[i + 1], self.px[i + 2] = c[1], c[2], c[3]
    end
  end
end

--- A straight segment (DDA), `thick` pixels wide (1 or 2).
function Canvas:line(x0, y0, x1, y1, c, thick)
  local n = math.max(math.abs(x1 - x0), math.abs(y1 - y0), 1)
  n = math.min(math.ceil(n), 20000)
  for k = 0, n do
    local x, y = x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n
    self:set(x, y, c)
    if thick and thick > 1 then self:set(x + 1, y, c); self:set(x, y + 1, c) end
  end
end

function Canvas:dot(x, y, c, r)
  r = r or 2
  for dy = -r, r do
    for dx = -r, r do
      if dx * dx + dy * dy <= r * r then self:set(x + dx, y + dy, c) end
    end
  end
end

-- 3×5 glyphs, rows top to bottom; lower case is drawn as upper case.
local GLYPHS = {
  ["0"] = "###|#.#|#.#|#.#|###", ["1"] = ".#.|##.|.#.|.#.|###", ["2"] = "###|..#|###|#..|###",
  ["3"] = "###|..#|.##|..#|###", ["4"] = "#.#|#.#|###|..#|..#", ["5"] = "###|#..|###|..#|###",
  ["6"] = "###|#..|###|#.#|###", ["7"] = "###|..#|.#.|.#.|.#.", ["8"] = "###|#.#|###|#.#|###",
  ["9"] = "###|#.#|###|..#|###",
  A = ".#.|#.#|###|#.#|#.#", B = "##.|#.#|##.|#.#|##.", C = ".##|#..|#..|#..|.##", D = "##.|#.#|#.#|#.#|##.",
  E = "###|#..|##.|#..|###", F = "###|#..|##.|#..|#..", G = ".##|#..|#.#|#.#|.##", H = "#.#|#.#|###|#.#|#.#",
  I = "###|.#.|.#.|.#.|###", J = "..#|..#|..#|#.#|.#.", K = "#.#|#.#|##.|#.#|#.#", L = "#..|#..|#..|#..|###",
  M = "#.#|###|###|#.#|#.#", N = "##.|#.#|#.#|#.#|#.#", O = ".#.|#.#|#.#|#.#|.#.", P = "##.|#.#|##.|#..|#..",
  Q = ".#.|#.#|#.#|###|.##", R = "##.|#.#|##.|#.#|#.#", S = ".##|#..|.#.|..#|##.", T = "###|.#.|.#.|.#.|.#.",
  U = "#.#|#.#|#.#|#.#|###", V = "#.#|#.#|#.#|#.#|.#.", W = "#.#|#.#|###|###|#.#", X = "#.#|#.#|.#.|#.#|#.#",
  Y = "#.#|#.#|.#.|.#.|.#.", Z = "###|..#|.#.|#..|###",
  ["."] = "...|...|...|...|.#.", ["-"] = "...|...|###|...|...", ["+"] = "...|.#.|###|.#.|...",
  [":"] = "...|.#.|...|.#.|...", ["%"] = "#.#|..#|.#.|#..|#.#", ["/"] = "..#|..#|.#.|#..|#..",
  ["("] = ".#.|#..|#..|#..|.#.", [")"] = ".#.|..#|..#|..#|.#.", ["="] = "...|###|...|###|...",
  ["_"] = "...|...|...|...|###", [","] = "...|...|...|.#.|#..", ["#"] = "#.#|###|#.#|###|#.#",
  ["&"] = ".#.|#.#|.#.|#.#|.##", ["'"] = ".#.|.#.|...|...|...",
  [" "] = "...|...|...|...|...",
}

--- Width in pixels of `s` drawn at `scale`.
function M.text_width(s, scale) return #s * 4 * (scale or 2) - (scale or 2) end

function Canvas:text(x, y, s, c, scale)
  scale = scale or 2
  for k = 1, #s do
    local g = GLYPHS[s:sub(k, k):upper()] or GLYPHS["#"]
    local row = 0
    for r in g:gmatch("[^|]+") do
      for col = 1, 3 do
        if r:sub(col, col) == "#" then
          self:fill(x + (k - 1) * 4 * scale + (col - 1) * scale, y + row * scale, scale, scale, c)
        end
      end
      row = row + 1
    end
  end
end

function Canvas:png() return M.encode_png(self.w, self.h, self.px) end

-- ---- charts ---------------------------------------------------------------------------------------
local function nice_step(span, n)
  local raw = span / math.max(n, 1)
  local mag = 10 ^ math.floor(math.log10(raw))
  for _, m in ipairs { 1, 2, 2.5, 5, 10 } do
    if raw <= m * mag then return m * mag end
  end
  return 10 * mag
end

--- Tick values covering [lo, hi] (about n of them).
function M.ticks(lo, hi, n)
  if hi <= lo then return { lo } end
  local step = nice_step(hi - lo, n or 5)
  local out = {}
  local v = math.ceil(lo / step - 1e-9) * step
  while v <= hi + step * 1e-9 do
    out[#out + 1] = math.abs(v) < step * 1e-9 and 0 or v
    v = v + step
  end
  return out
end

--- Short tick label: 3 significant digits, exponent form for very large/small values.
function M.label(v)
  if v == 0 then return "0" end
  local a = math.abs(v)
  if a >= 1e5 or a < 1e-3 then return (string.format("%.1e", v):gsub("e%+?(%-?)0*(%d)", "e%1%2")) end
  local s = string.format("%.3g", v)
  return s
end

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

--- Draws a chart and returns PNG bytes. o: width (640), height (360), title, xlabel, ylabel,
--- series = {{x = {...}, y = {...}, color = {r,g,b}, style = "line"|"points", thick = 1|2}, ...},
--- lines = {{x0, y0, x1, y1, color =}} (data units), logy (true | false | "auto": when all y > 0
--- and they span more than a factor of 20), xmin/xmax/ymin/ymax (fixed ranges).
function M.chart(o)
  local W, H = o.width or 640, o.height or 360
  local cv = M.canvas(W, H)
  local xs, ys = {}, {}
  for _, s in ipairs(o.series or {}) do
    for i = 1, #s.x do
      if finite(s.x[i]) and finite(s.y[i]) then xs[#xs + 1] = s.x[i]; ys[#ys + 1] = s.y[i] end
    end
  end
  local xmin, xmax, ymin, ymax = o.xmin, o.xmax, o.ymin, o.ymax
  if #xs == 0 then xs, ys = { 0, 1 }, { 0, 1 } end
  local function lo_hi(t)
    local lo, hi = math.huge, -math.huge
    for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
    return lo, hi
  end
  local dx0, dx1 = lo_hi(xs)
  local dy0, dy1 = lo_hi(ys)
  xmin, xmax = xmin or dx0, xmax or dx1
  ymin, ymax = ymin or dy0, ymax or dy1
  local logy = o.logy
  if logy == "auto" then logy = dy0 > 0 and dy1 / dy0 > 20 end
  if logy and ymin <= 0 then logy = false end
  local ty = logy and math.log10 or function(v) return v end
  local y0, y1 = ty(ymin), ty(ymax)
  if xmax <= xmin then xmin, xmax = xmin - 0.5, xmax + 0.5 end
  if y1 <= y0 then y0, y1 = y0 - 0.5, y1 + 0.5 end
  if not logy and not o.ymin then
    local pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
  end
  local L, R, T, B = 64, 16, o.title and 30 or 14, o.xlabel and 44 or 30
  local pw, ph = W - L - R, H - T - B
  local function px(x) return L + (x - xmin) / (xmax - xmin) * pw end
  local function py(y) return T + ph - (ty(y) - y0) / (y1 - y0) * ph end
  local black, grid = M.colors.black, M.colors.grid
  -- grid and ticks
  local xt = M.ticks(xmin, xmax, 6)
  for _, v in ipairs(xt) do
    local x = px(v)
    cv:line(x, T, x, T + ph, grid)
    local s = M.label(v)
    cv:text(x - M.text_width(s) / 2, T + ph + 6, s, black)
  end
  local yt
  if logy then
    yt = {}
    for e = math.floor(y0), math.ceil(y1) do
      for _, m in ipairs((y1 - y0 < 2) and { 1, 2, 5 } or { 1 }) do
        local v = m * 10 ^ e
        if math.log10(v) >= y0 - 1e-9 and math.log10(v) <= y1 + 1e-9 then yt[#yt + 1] = v end
      end
    end
  else
    yt = M.ticks(y0, y1, 8)
  end
  for _, v in ipairs(yt) do
    local y = py(v)
    cv:line(L, y, L + pw, y, grid)
    local s = M.label(v)
    cv:text(L - 6 - M.text_width(s), y - 5, s, black)
  end
  -- extra segments, then the series, clipped to the plot area
  local function clip_set(x, y, c, r)
    if x >= L and x <= L + pw and y >= T and y <= T + ph then
      if r then cv:dot(x, y, c, r) else cv:set(x, y, c) end
    end
  end
  local function seg(xa, ya, xb, yb, c, thick)
    local n = math.min(math.ceil(math.max(math.abs(xb - xa), math.abs(yb - ya), 1)), 20000)
    for k = 0, n do
      local x, y = xa + (xb - xa) * k / n, ya + (yb - ya) * k / n
      clip_set(x, y, c)
      if thick and thick > 1 then clip_set(x + 1, y, c); clip_set(x, y + 1, c) end
    end
  end
  for _, l in ipairs(o.lines or {}) do
    if (not logy) or (l[2] > 0 and l[4] > 0) then
      seg(px(l[1]), py(l[2]), px(l[3]), py(l[4]), l.color or M.colors.grey, 1)
    end
  end
  for k, s in ipairs(o.series or {}) do
    local c = s.color or M.palette[(k - 1) % #M.palette + 1]
    local prev
    for i = 1, #s.x do
      local x, y = s.x[i], s.y[i]
      if finite(x) and finite(y) and (not logy or y > 0) then
        local X, Y = px(x), py(y)
        if s.style == "points" then clip_set(X, Y, c, s.radius or 3)
        elseif prev then seg(prev[1], prev[2], X, Y, c, s.thick or 2)
        else clip_set(X, Y, c) end
        prev = { X, Y }
      else
        prev = nil
      end
    end
  end
  -- frame and labels
  cv:line(L, T, L, T + ph, black)
  cv:line(L, T + ph, L + pw, T + ph, black)
  cv:line(L + pw, T, L + pw, T + ph, black)
  cv:line(L, T, L + pw, T, black)
  if o.title then cv:text(L, 8, o.title, black) end
  if o.xlabel then cv:text(L + pw / 2 - M.text_width(o.xlabel) / 2, H - 16, o.xlabel, black) end
  if o.ylabel then cv:text(4, 8, o.ylabel, black) end
  if o.legend then
    local y = T + 6
    for k, name in ipairs(o.legend) do
      local s = o.series[k]
      local c = s and s.color or M.palette[(k - 1) % #M.palette + 1]
      local w = M.text_width(name)
      cv:fill(L + pw - w - 26, y + 3, 14, 4, c)
      cv:text(L + pw - w - 8, y, name, black)
      y = y + 14
    end
  end
  return cv:png()
end

--- Horizontal bar chart; returns PNG bytes. o: width (640), title, sections = {{title =, items =
--- {{label, value}, ...}}, ...} (bars in the given order; one colour per section), or items alone.
--- The longest bar spans the plot; each bar ends with its value.
function M.bars(o)
  local sections = o.sections or { { items = o.items or {} } }
  local W, row, scale = o.width or 640, 14, 2
  local n = 0
  for _, s in ipairs(sections) do n = n + #s.items + (s.title and 1 or 0) + 1 end
  local H = 16 + (o.title and 22 or 0) + n * row
  local cv = M.canvas(W, H)
  local black = { 20, 20, 20 }
  local y = 8
  if o.title then cv:text(8, y, o.title, black, scale); y = y + 22 end
  local labw, vmax = 0, 0
  for _, s in ipairs(sections) do
    for _, it in ipairs(s.items) do
      labw = math.max(labw, M.text_width(tostring(it[1]), scale))
      if finite(it[2]) then vmax = math.max(vmax, it[2]) end
    end
  end
  local x0 = 12 + labw + 8
  local span = W - x0 - 60
  for k, s in ipairs(sections) do
    local c = s.color or M.palette[(k - 1) % #M.palette + 1]
    if s.title then cv:text(8, y, s.title, black, scale); y = y + row end
    for _, it in ipairs(s.items) do
      cv:text(12, y, tostring(it[1]), black, scale)
      local v = finite(it[2]) and it[2] or 0
      local w = vmax > 0 and math.max(1, math.floor(span * v / vmax + 0.5)) or 1
      cv:fill(x0, y, w, 10, c)
      cv:text(x0 + w + 6, y, M.label(v), black, scale)
      y = y + row
    end
    y = y + row
  end
  return cv:png()
end

--- Centred moving average over `k` points (for smoothing a loss curve).
function M.smooth(y, k)
  local out = {}
  local h = math.floor((k or 9) / 2)
  for i = 1, #y do
    local s, n = 0, 0
    for j = math.max(1, i - h), math.min(#y, i + h) do
      if finite(y[j]) then s, n = s + y[j], n + 1 end
    end
    out[i] = n > 0 and s / n or 0 / 0
  end
  return out
end

-- ---- files and embedding ----------------------------------------------------------------------------
--- Writes bytes to path atomically (temporary file + rename).
M.write = require("sao.fs").write_atomic

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64c = {}
for i = 1, 64 do b64c[i - 1] = B64:sub(i, i) end

function M.base64(s)
  local out = {}
  local p = ffi.cast("const uint8_t *", s)
  local n = #s
  for i = 0, n - 1, 3 do
    local a, b, c = p[i], i + 1 < n and p[i + 1] or 0, i + 2 < n and p[i + 2] or 0
    local v = a * 65536 + b * 256 + c
    out[#out + 1] = b64c[math.floor(v / 262144)] .. b64c[math.floor(v / 4096) % 64] ..
      (i + 1 < n and b64c[math.floor(v / 64) % 64] or "=") .. (i + 2 < n and b64c[v % 64] or "=")
  end
  return table.concat(out)
end

function M.data_uri(png) return "data:image/png;base64," .. M.base64(png) end

return M
