-- The DiT forward on a GPU (sao_dit_to_device: weights in one device block, the CUDA kernel table,
-- kernels/cuda/dit_device.cu + dit_glue.cu) against the same model on the CPU, on the dit_tiny
-- fixture's weights and inputs, and tiny-model generation with device = "cuda" (tag gpu).
-- Without a usable GPU every device test is reported as pending (skipped), never as passed; the
-- error messages of a build or a machine without CUDA, and the argument checks, run everywhere.
--
-- Tolerances: |gpu - cpu| <= abs per element. They are NOT yet measured on a GPU. What is
-- measured is this spec run on a CPU emulation of the CUDA build (every kernels/cuda/*.cu file,
-- the real linear.cu with cuBLASLt replaced by a plain column-major float GEMM, run on the CPU):
-- the figures quoted below. A GPU differs from that emulation by FMA contraction and cuBLASLt's
-- summation order, both fp32 rounding effects of the same size, so each limit is about 10x the
-- emulated error while a wrong layout, a missed copy or a stale weight gives errors of order 1.
-- On the first GPU run, note the max error each failure message (or a probe) prints and replace
-- the estimates with the measured figures plus a margin.
local ffi = require "ffi"
local sao = require "sao"
local models = require "sao.models"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local has_gpu = gpu.has_gpu

local gpu_it = gpu.it(it, pending)

local tiny = require "support.dit_tiny"
local fx, man, cfg, params, new_dit = tiny.fx, tiny.man, tiny.config, tiny.params, tiny.new_dit
local x, t, cross, global = tiny.x, tiny.t, tiny.cross, tiny.global

local function scaled(s) return gpu.scaled(params, s) end   -- a different model of the same shapes

local no_cuda_reason = gpu.no_cuda_reason

describe("DiT on CUDA #gpu", function()
  -- ---- everywhere -----------------------------------------------------------------------------
  it("a new model is on the CPU, and dit:to('cpu') there changes nothing", function()
    local d = new_dit()
    assert.equal("cpu", d:device())
    assert.equal(-1, C.sao_dit_device(d.h))
    local before = d:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.75 })
    assert.equal(d, d:to("cpu"))
    assert.equal(0, before:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.75 })))
  end)

  it("dit:to refuses a device name it does not know", function()
    local d = new_dit()
    assert.error_matches(function() d:to("gpu") end, "dit:to: 'gpu': expected \"cpu\", \"cuda\" or \"cuda:N\"")
    assert.error_matches(function() d:to(0) end, "expected \"cpu\", \"cuda\" or \"cuda:N\"")
  end)

  it("dit:to('cuda') without a usable GPU says why, and the model keeps working on the CPU", function()
    local d = new_dit()
    local want = d:forward(x, t, cross, global)
    if has_gpu then
      -- here: a device number past the last one
      local n = sao.cuda.count()
      assert.error_matches(function() d:to("cuda:" .. n) end,
        "dit_to_device: device " .. n .. ": there are " .. n .. " CUDA device%(s%)")
    else
      assert.error_matches(function() d:to("cuda") end, "dit_to_device: device 0: .*" .. no_cuda_reason())
      assert.error_matches(function() d:to("cuda:1") end, "dit_to_device: device 1: .*" .. no_cuda_reason())
    end
    assert.equal("cpu", d:device())
    assert.equal(0, want:maxdiff(d:forward(x, t, cross, global)))
  end)

  -- the device path fetches hidden from the shared orchestration's buffer: pin down which half
  local function check_cfg_hidden(d)
    local _, h1 = d:forward(x, t, cross, global, { cfg_scale = 1, hidden = true })
    local _, h7 = d:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.75, hidden = true })
    local _, hu = d:forward(x, t, sao.zeros(cross:shape()), global, { cfg_scale = 1, hidden = true })
    -- the same rows through a batch twice the size: CPU (OpenBLAS) 2.4e-6, emulated device 0
    assert.tensor_near(h1, h7, { abs = 5e-5 })
    assert.is_true(hu:maxdiff(h7) > 0.1)   -- and not the unconditional half (4.5 apart here)
  end

  it("with CFG, hidden holds the conditional half's states", function() check_cfg_hidden(new_dit()) end)

  it("the device weight block's size: every parameter but the LayerNorm betas, each 256-byte aligned", function()
    local d = new_dit()
    local p = d:params()
    local floats, n = 0, 0
    for i = 0, C.sao_params_count(p) - 1 do
      if not ffi.string(C.sao_params_name(p, i)):match("%.beta$") then
        local k = 1
        for j = 0, C.sao_params_ndim(p, i) - 1 do k = k * tonumber(C.sao_params_shape(p, i)[j]) end
        floats, n = floats + k, n + 1
      end
    end
    local bytes = tonumber(C.sao_dit_device_block_bytes(d.h))
    assert.equal(0, bytes % 256)
    assert.is_true(bytes >= 4 * floats and bytes < 4 * floats + 256 * n, bytes .. " for " .. floats .. " floats")
  end)

  it("dit:graphs on a host model is remembered and changes nothing (no captures)", function()
    local d = new_dit()
    assert.is_false(d:graphs())
    local want = d:forward(x, t, cross, global, { cfg_scale = 7 })
    assert.is_false(d:graphs(true))
    assert.is_true(d:graphs())
    for _ = 1, 3 do assert.equal(0, want:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 7 }))) end
    assert.same({ captures = 0, replays = 0 }, d:graph_stats())
    assert.is_true(d:graphs(false))
  end)

  it("load_model checks the device before reading any weights", function()
    assert.error_matches(function() sao.load_model("tiny", { device = "tpu", quiet = true }) end,
      "load_model: device 'tpu': expected \"cpu\", \"cuda\" or \"cuda:N\"")
    if not has_gpu then
      assert.error_matches(function() sao.load_model("tiny", { device = "cuda", quiet = true }) end,
        "load_model: device 'cuda': .*" .. no_cuda_reason() .. ".*device = \"cpu\"")
    end
    local m = sao.load_model("tiny", { device = "cpu", quiet = true })
    assert.equal("cpu", m.dit:device())
    assert.equal("cpu", m.device)
  end)

  -- ---- on a GPU -------------------------------------------------------------------------------
  gpu_it("forward matches the CPU: CFG 1 with every block's hidden state", function()
    local cpu, gpu = new_dit(), new_dit():to("cuda")
    assert.equal("cuda", gpu:device())
    local want, hw = cpu:forward(x, t, cross, global, { cfg_scale = 1, hidden = true })
    local got, hg = gpu:forward(x, t, cross, global, { cfg_scale = 1, hidden = true })
    -- emulated: out 3.8e-6, hidden 3.6e-6 (|out| <= 15): estimate abs 5e-5
    assert.tensor_near(want, got, { abs = 5e-5 })
    assert.tensor_near(hw, hg, { abs = 5e-5 })
    -- and the float64 reference within the fixture's own tolerance
    assert.tensor_near(fx["outputs/out_cfg1"], got, { abs = man.tolerances["outputs/out_cfg1"].max_abs })
    assert.tensor_near(fx["outputs/hidden_layer0"], hg[1], { abs = man.tolerances["outputs/hidden_layer0"].max_abs })
  end)

  gpu_it("forward matches the CPU: CFG 7 with rescale 0.75 (doubled batch, device combine) and hidden", function()
    local cpu, gpu = new_dit(), new_dit():to("cuda")
    local want, hw = cpu:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.75, hidden = true })
    local got, hg = gpu:forward(x, t, cross, global, { cfg_scale = 7, scale_phi = 0.75, hidden = true })
    -- CFG 7 multiplies the difference of the halves by 7: emulated out 2.4e-5 (|out| <= 12),
    -- hidden (the conditional half) 3.8e-6: estimates abs 3e-4 and 5e-5
    assert.tensor_near(want, got, { abs = 3e-4 })
    assert.tensor_near(hw, hg, { abs = 5e-5 })
    local plain_c = cpu:forward(x, t, cross, global, { cfg_scale = 7 })
    local plain_g = gpu:forward(x, t, cross, global, { cfg_scale = 7 })
    assert.tensor_near(plain_c, plain_g, { abs = 3e-4 })   -- emulated 3.2e-5 (|out| <= 31)
    assert.tensor_near(fx["outputs/out_cfg7"], plain_g, { abs = man.tolerances["outputs/out_cfg7"].max_abs })
    assert.is_true(plain_g:maxdiff(got) > 1e-3)            -- the rescale did act on the device
  end)

  gpu_it("a negative context for the CFG half, and the skipped zero half, match the CPU", function()
    local cpu, gpu = new_dit(), new_dit():to("cuda")
    local neg = sao.randn { cross:shape(), seed = 5 }
    -- estimates as for the CFG 7 path above (abs 3e-4)
    assert.tensor_near(cpu:forward(x, t, cross, global, { cfg_scale = 4, uncond = neg }),
      gpu:forward(x, t, cross, global, { cfg_scale = 4, uncond = neg }), { abs = 3e-4 })
    local skipped = gpu:forward(x, t, cross, global, { cfg_scale = 7 })
    local full = gpu:forward(x, t, cross, global, { cfg_scale = 7, uncond = sao.zeros(cross:shape()) })
    -- the explicit zero half adds exact zeros; the conditional half's kernels see half the rows
    assert.tensor_near(full, skipped, { abs = 1e-5 })
  end)

  gpu_it("with CFG, hidden holds the conditional half's states (device)", function()
    check_cfg_hidden(new_dit():to("cuda"))
  end)

  gpu_it("the prepended token's parts (sao_dit_token) match the CPU", function()
    local cpu, gpu = new_dit(), new_dit():to("cuda")
    local B, E = t:size(1), cfg.embed_dim
    local function token(d)
      local te, ge = sao.zeros(B, E), sao.zeros(B, E)
      sao.check(C.sao_dit_token(sao.ctx, d.h, t:data(), global:data(), B, te:data(), ge:data()))
      return te, ge
    end
    local te_c, ge_c = token(cpu)
    local te_g, ge_g = token(gpu)
    -- emulated 7.2e-7 and 5.4e-7 (|token| <= 1.6): estimate abs 2e-5
    assert.tensor_near(te_c, te_g, { abs = 2e-5 })
    assert.tensor_near(ge_c, ge_g, { abs = 2e-5 })
  end)

  gpu_it("the workspace is cached: a repeated forward makes no cudaMalloc; to('cpu') gives the blocks back", function()
    local d = new_dit()
    local want = d:forward(x, t, cross, global, { cfg_scale = 7 })
    -- no device model of an earlier test may be collected mid-way; the process-wide cuBLASLt
    -- workspace is made by a first device forward
    collectgarbage("collect")
    collectgarbage("collect")
    local w = new_dit():to("cuda")
    w:forward(x, t, cross, global)
    w:to("cpu")
    local m0 = sao.cuda.memory()
    d:to("cuda")
    d:forward(x, t, cross, global, { cfg_scale = 7 })            -- sizes the workspace
    local m1 = sao.cuda.memory()
    assert.is_true(m1.allocated > m0.allocated)
    for _ = 1, 3 do d:forward(x, t, cross, global, { cfg_scale = 7 }) end
    d:forward(x, t, cross, global, { cfg_scale = 1 })            -- smaller: fits
    local m2 = sao.cuda.memory()
    assert.equal(m1.cudamalloc_calls, m2.cudamalloc_calls)
    assert.equal(m1.allocated, m2.allocated)
    d:to("cpu")
    assert.equal("cpu", d:device())
    assert.equal(m0.allocated, sao.cuda.memory().allocated)
    assert.equal(0, want:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 7 })))   -- the CPU path again, bit for bit
  end)

  gpu_it("new weights loaded into a device model are uploaded (dit:load, and a bare rebind)", function()
    local p2 = scaled(0.5)
    local want = new_dit(p2):forward(x, t, cross, global, { cfg_scale = 7 })
    local d = new_dit():to("cuda")
    local before = d:forward(x, t, cross, global, { cfg_scale = 7 })
    d:load(p2)                                                   -- uploads at once
    local got = d:forward(x, t, cross, global, { cfg_scale = 7 })
    assert.tensor_near(want, got, { abs = 5e-5 })   -- emulated 2.5e-6 (|out| <= 1.7)
    assert.is_true(before:maxdiff(got) > 1e-2)
    -- binding through the registry alone: the next forward finds the stale slots and re-uploads
    models.bind(d:params(), params)
    assert.tensor_near(before, d:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 1e-6 })
    -- an in-place edit of the bound host tensors reaches the device with dit:to("cuda") again
    local own = {}
    for k, v in pairs(params) do own[k] = v:clone() end
    local e = new_dit(own):to("cuda")
    for _, v in pairs(own) do v:copy_(v * 0.5) end
    assert.tensor_near(before, e:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 1e-6 })   -- not yet
    e:to("cuda")
    assert.tensor_near(want, e:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 5e-5 })
  end)

  gpu_it("LoRA adapters follow the model to the GPU and back, and adapt the device forward as on the CPU", function()
    -- adapters with a non-zero B (so they change the output), on a host model
    local function adapted()
      local d = new_dit()
      sao.lora.add(d, { rank = 2, alpha = 4, seed = 3 })
      for name, p in pairs(sao.lora.params(d)) do
        if name:match("lora_B") then p:copy_(sao.randn { p:shape(), seed = #name } * 0.05) end
      end
      return d
    end
    local want = adapted():forward(x, t, cross, global, { cfg_scale = 7 })
    local e = adapted():to("cuda")                      -- added on the host, moved with the model
    for _, p in pairs(sao.lora.params(e)) do assert.equal("cuda", p:device()) end
    assert.tensor_near(want, e:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 5e-5 })
    e:to("cpu")
    for _, p in pairs(sao.lora.params(e)) do assert.equal("cpu", p:device()) end
    assert.tensor_near(want, e:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 0 })
    local d = new_dit():to("cuda")                      -- added on a device model: made there
    sao.lora.add(d, { rank = 2 })
    for _, g in pairs(sao.lora.grads(d)) do assert.equal("cuda", g:device()) end
    -- merging on the device gives what merging on the CPU gives (fp32 products either way)
    local hm = adapted()
    sao.lora.merge(hm)
    local want_m = hm:forward(x, t, cross, global, { cfg_scale = 7 })
    local dm = adapted():to("cuda")
    sao.lora.merge(dm)
    assert.equal(0, sao.lora.rank(dm))
    assert.tensor_near(want_m, dm:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 5e-5 })
    assert.tensor_near(want, want_m, { abs = 1e-4 })       -- merged = adapted (CPU: measured in train_spec)
    dm:to("cpu")                                           -- the merged weights come back to the host
    -- the same CPU forward on weights merged by another GEMM (emulated device: 2.3e-5 at CFG 7)
    assert.tensor_near(want_m, dm:forward(x, t, cross, global, { cfg_scale = 7 }), { abs = 5e-5 })
  end)

  gpu_it("bf16 mode: the weight block's bf16 mirror gives what rounding at every call gives", function()
    local was = sao.cuda.precision("bf16")
    local ok, err = pcall(function()
      local d = new_dit():to("cuda")
      local mirrored = d:forward(x, t, cross, global, { cfg_scale = 7 })     -- makes the mirror
      local before = sao.cuda.memory().allocated
      local _ = d:device_tensor("transformer.project_out.weight")   -- handed out for writing: mirror dropped
      local freed = before - sao.cuda.memory().allocated
      assert.is_true(freed >= 1.8 * d:parameter_count(), "the mirror held 2 bytes per weight: " .. freed)
      local rounded = d:forward(x, t, cross, global, { cfg_scale = 7 })
      -- the same rounded inputs; cuBLASLt may pick another algorithm for the mirror's pointer
      -- alignment (128 B vs the scratch's 256 B), so the sums may differ in order: fp32 rounding only
      assert.tensor_near(rounded, mirrored, { abs = 1e-5 * rounded:abs():max(), rel = 1e-5 })
      -- and bf16 stays close to the fp32 CPU forward (estimate: bf16 inputs, ~1e-2 of the scale)
      local want = new_dit():forward(x, t, cross, global, { cfg_scale = 7 })
      assert.tensor_near(want, rounded, { abs = 2e-2 * want:abs():max(), rel = 2e-2 })
    end)
    sao.cuda.precision(was)
    if not ok then error(err, 0) end
  end)

  gpu_it("CUDA graphs: captured on the second call, replayed bit for bit after; a free re-captures", function()
    local cpu = new_dit()
    local d = new_dit():to("cuda")
    local eager = d:forward(x, t, cross, global, { cfg_scale = 7 })
    local x2 = x * 0.5
    local want2 = cpu:forward(x2, t, cross, global, { cfg_scale = 7 })
    -- the counts below assume no device block is freed except where the test frees one: no GC of
    -- earlier tests' device tensors in between
    gpu.without_gc(function()
      d:graphs(true)
      local outs = {}
      for i = 1, 4 do outs[i] = d:forward(x, t, cross, global, { cfg_scale = 7 }) end
      local st = d:graph_stats()
      assert.is_nil(st.why)
      -- call 1 eager (warm: the key and the allocator's free count recorded), 2 captured, 3-4 replayed
      assert.same({ captures = 1, replays = 2 }, st)
      for i = 1, 4 do assert.equal(0, eager:maxdiff(outs[i])) end   -- the same kernels in the same order
      -- new inputs go into the same buffers: the replay reads them (CFG 7 estimate as above)
      assert.tensor_near(want2, d:forward(x2, t, cross, global, { cfg_scale = 7 }), { abs = 3e-4 })
      assert.same({ captures = 1, replays = 3 }, d:graph_stats())
      -- another CFG scale is another key: eager, then captured
      local a = d:forward(x, t, cross, global, { cfg_scale = 3 })
      assert.equal(0, a:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 3 })))
      assert.same({ captures = 2, replays = 3 }, d:graph_stats())
      -- anything freed on the device: the next call runs eagerly, the one after captures anew
      sao.randn { { 1024 }, seed = 1 }:to("cuda"):free()
      assert.equal(0, a:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 3 })))
      assert.same({ captures = 2, replays = 3 }, d:graph_stats())
      assert.equal(0, a:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 3 })))
      assert.same({ captures = 3, replays = 3 }, d:graph_stats())
      -- hidden states are fetched between blocks: eager, the counts stay
      d:forward(x, t, cross, global, { cfg_scale = 3, hidden = true })
      assert.same({ captures = 3, replays = 3 }, d:graph_stats())
      -- weights written in place (as an optimiser step does) are what the replay reads
      assert.equal(0, a:maxdiff(d:forward(x, t, cross, global, { cfg_scale = 3 })))
      local st0 = d:graph_stats()
      local w = d:device_tensor("transformer.project_out.weight")
      w:copy_(w:to("cpu") * 0.5)
      local after = d:forward(x, t, cross, global, { cfg_scale = 3 })
      assert.is_true(d:graph_stats().replays > st0.replays or d:graph_stats().captures > st0.captures)
      assert.is_true(after:maxdiff(a) > 1e-3)
      -- the graph goes with the blocks; the CPU forward of the edited weights agrees
      d:to("cpu")
      assert.tensor_near(after, d:forward(x, t, cross, global, { cfg_scale = 3 }), { abs = 3e-4 })
    end)
  end)

  gpu_it("a tiny model generates with device = 'cuda' as on the CPU", function()
    local opts = { prompt = "a short test", frames = 16, steps = 6, cfg_scale = 7, seed = 3, progress = false }
    local cpu = sao.load_model("tiny", { quiet = true })
    local gpu = sao.load_model("tiny", { quiet = true, device = "cuda", precision = "fp32" })
    assert.equal("cuda", gpu.dit:device())
    local a, ia = cpu:generate(opts)
    local b, ib = gpu:generate(opts)
    assert.equal("cuda", ib.device)
    -- 6 sampler steps at CFG 7 amplify the forward's rounding: emulated latents 3.5e-4 (|latents|
    -- <= 42), audio 1.5e-5 (|audio| <= 1.3). For scale: on the CPU alone, one weight matrix
    -- multiplied by (1 + 1e-7) moves these latents by 1.8e-4. Estimates abs 5e-3 and 2e-4.
    assert.tensor_near(ia.latents, ib.latents, { abs = 5e-3 })
    assert.tensor_near(a, b, { abs = 2e-4 })
  end)
end)
