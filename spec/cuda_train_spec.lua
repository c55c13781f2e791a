-- Training on a GPU (tag gpu): the DiT's training pass (runtime/dit_train.c over the CUDA kernel
-- table) against the same pass on the CPU, a tiny sao.train run against the CPU run's loss curve,
-- bit-exact resume on the device, trained weights coming back with dit:to("cpu"), and the memory
-- plan's predicted device peak against the caching allocator's measured one (within 10 %).
-- Without a usable GPU every device test is pending (skipped), never passed; the messages of a
-- machine without one run everywhere.
--
-- Tolerances are NOT yet measured on a GPU: they are estimates (fp32 everywhere; cuBLASLt and the
-- attention kernels sum in another order than the CPU, ~1e-6 relative per op, growing through
-- depth 2 and the backward). On the first GPU run, write the measured errors next to them.
local sao = require "sao"
require "spec.support.near"
local C = sao.C

local gpu = require "support.gpu"
local gpu_it = gpu.it(it, pending)

local tiny = require "support.dit_tiny"
local cfg = tiny.config
local function new_dit() return tiny.new_dit() end

local B, T, L = 2, 12, 5
local function dataset(n)
  local items = {}
  for i = 1, n do
    items[i] = {
      latents = sao.randn { { cfg.io_channels, T }, seed = 100 + i },
      cross = sao.randn { { L, cfg.cond_token_dim }, seed = 200 + i },
      global = sao.randn { { cfg.global_cond_dim }, seed = 300 + i },
    }
  end
  return items
end

local function trainer(extra)
  local c = { dit = new_dit(), data = sao.data.memory(dataset(6), { batch = B, seed = 5 }), batch = B, frames = T,
    context = L, optimizer = { lr = 1e-3, clip = 1.0 }, schedule = "constant", quiet = true, seed = 7,
    precision = "fp32" }   -- CPU parity; the bf16 test below asks for bf16
  for k, v in pairs(extra or {}) do c[k] = v end
  return sao.train.new(c)
end

local tmpdir = require("support.shell").tmpdir

-- The training pass of `d` on one fixed batch: output, input gradients and every weight gradient.
local function pass(d, recompute)
  local tr = sao.dit_train.new(d, { batch = B, frames = T, context = L, recompute = recompute })
  local x = sao.randn { { B, cfg.io_channels, T }, seed = 1 }
  local t = sao.tensor { 0.25, 0.8 }
  local cross = sao.randn { { B, L, cfg.cond_token_dim }, seed = 2 }
  local global = sao.randn { { B, cfg.global_cond_dim }, seed = 3 }
  tr:zero_grad()
  local out = tr:forward(x, t, cross, global)
  local dx, dc, dg = tr:backward(sao.randn { out:shape(), seed = 4 }, { dx = true, dcross = true, dglobal = true })
  -- host copies: the views of tr:grads() are freed with `tr`
  return { out = out, dx = dx, dc = dc, dg = dg, grads = tr:host_grads() }
end

describe("training on CUDA #gpu", function()
  it("train with device = 'cuda' without a usable GPU says why", function()
    if gpu.has_gpu then return pending("a device is available: see the device tests") end
    assert.error_matches(function() trainer { device = "cuda" } end, gpu.no_cuda_reason())
  end)

  it("refuses a device name it does not know", function()
    assert.error_matches(function() trainer { device = "gpu0" } end, "expected \"cpu\", \"cuda\" or \"cuda:N\"")
  end)

  for _, recompute in ipairs { false, true } do
    gpu_it("the training pass matches the CPU's (recompute " .. tostring(recompute) .. ")", function()
      local want = pass(new_dit(), recompute)
      local got = pass(new_dit():to("cuda"), recompute)
      -- estimates (see the top): outputs ~1e-5, gradients ~1e-4 of their scale
      assert.tensor_near(want.out, got.out, { abs = 1e-4 })
      for _, k in ipairs { "dx", "dc", "dg" } do assert.tensor_near(want[k], got[k], { abs = 1e-4, rel = 1e-3 }) end
      local n = 0
      for k, g in pairs(want.grads) do
        assert.equal("cpu", got.grads[k]:device())
        assert.tensor_near(g, got.grads[k], { abs = 1e-4, rel = 1e-3 }, k)
        n = n + 1
      end
      assert.is_true(n > 30)
    end)
  end

  gpu_it("the v objective on the device: the host path's gradients bit for bit, only the loss comes back", function()
    local d = new_dit():to("cuda")
    local x0 = sao.randn { { B, cfg.io_channels, T }, seed = 11 }
    local noise = sao.randn { { B, cfg.io_channels, T }, seed = 12 }
    local t = sao.tensor { 0.3, 0.9 }
    local cross = sao.randn { { B, L, cfg.cond_token_dim }, seed = 13 }
    local global = sao.randn { { B, cfg.global_cond_dim }, seed = 14 }
    local function run(on_device, noise_)
      local tr = sao.dit_train.new(d, { batch = B, frames = T, context = L })
      tr:zero_grad()
      local loss, out, v, xt = tr:vloss(x0, noise_, t, cross, global, { dloss = 0.5, device = on_device })
      return { loss = loss, out = out:device() == "cpu" and out or out:to("cpu"),
               xt = xt:device() == "cpu" and xt or xt:to("cpu"), grads = tr:host_grads() }
    end
    local host = run(false, noise)
    local dev = run(nil, noise)
    local dev2 = run(nil, noise:to("cuda"))                 -- the trainer's case: noise drawn there
    -- x_t: sao_v_target and its twin; out, every gradient: the same device kernels on the same inputs
    for _, r in ipairs { dev, dev2 } do
      assert.equal(0, host.xt:maxdiff(r.xt))
      assert.equal(0, host.out:maxdiff(r.out))
      local n = 0
      for k, g in pairs(host.grads) do
        assert.equal(0, g:maxdiff(r.grads[k]), k)
        n = n + 1
      end
      assert.is_true(n > 30)
      -- the loss: the GPU's fixed-order reduction against the CPU's blocks (both in double)
      assert.near(host.loss, r.loss, 1e-12 * host.loss)
    end
    assert.is_true(host.loss > 0.1)
  end)

  gpu_it("the gradients are device tensors and the trainer stays with its device", function()
    local d = new_dit():to("cuda")
    local tr = sao.dit_train.new(d, { batch = B, frames = T, context = L })
    for _, g in pairs(tr:grads()) do assert.equal("cuda", g:device()) end
    d:to("cpu")
    assert.error_matches(function()
      tr:forward(sao.randn { { B, cfg.io_channels, T }, seed = 1 }, sao.tensor { 0.5, 0.5 },
        sao.randn { { B, L, cfg.cond_token_dim }, seed = 2 }, sao.randn { { B, cfg.global_cond_dim }, seed = 3 })
    end, "the model moved .* since this trainer was made")
  end)

  gpu_it("a tiny run on the GPU follows the CPU run's loss curve", function()
    local a, b = trainer(), trainer { device = "cuda" }
    assert.equal("cuda", b.cfg.dit:device())
    for _, p in pairs(b.params) do assert.equal("cuda", p:device()) end
    for i = 1, 20 do
      local ra, rb = a:step(), b:step()
      -- estimate: the runs drift apart by rounding only, ~1e-5 relative per step
      assert.near(ra.loss, rb.loss, 1e-3 * math.abs(ra.loss) + 1e-6, "step " .. i)
      assert.near(ra.grad_norm, rb.grad_norm, 1e-3 * ra.grad_norm + 1e-6, "step " .. i)
    end
    for k, p in pairs(a.params) do assert.tensor_near(p, b.params[k]:to("cpu"), { abs = 1e-4, rel = 1e-3 }, k) end
    for k, e in pairs(a.ema.shadow) do assert.tensor_near(e, b.ema.shadow[k]:to("cpu"), { abs = 1e-4, rel = 1e-3 }, k) end
  end)

  gpu_it("bf16 products (the GPU default) train like fp32: same loss curve within bf16 rounding", function()
    local a, b = trainer(), trainer { device = "cuda", precision = "bf16" }
    assert.equal("bf16", sao.cuda.precision())
    local first, last
    for i = 1, 20 do
      local ra, rb = a:step(), b:step()
      -- estimate: bf16 inputs carry 8 bits of mantissa, ~0.4 % per product; the loss averages them
      assert.near(ra.loss, rb.loss, 3e-2 * math.abs(ra.loss), "step " .. i)
      first = first or rb.loss
      last = rb.loss
    end
    sao.cuda.precision("fp32")
    assert.is_true(last < first, string.format("loss %g -> %g", first, last))
  end)

  gpu_it("bf16: the weights' bf16 copy kept by the fused AdamW gives the bits of rounding them at every GEMM", function()
    -- a bf16 run keeps the copy (dit:keep_bf16, set by sao.train); the other run drops it, so its
    -- GEMMs round the current weights each call: nearest rounding of the same fp32 weights
    local a, b = trainer { device = "cuda", precision = "bf16" }, trainer { device = "cuda", precision = "bf16" }
    assert.is_true(a.cfg.dit:keep_bf16())
    b.cfg.dit:keep_bf16(false)
    for i = 1, 6 do
      local ra, rb = a:step(), b:step()
      assert.equal(rb.loss, ra.loss, "step " .. i)
      assert.equal(rb.grad_norm, ra.grad_norm, "step " .. i)
    end
    for k, p in pairs(a.params) do assert.equal(0, p:to("cpu"):maxdiff(b.params[k]:to("cpu")), k) end
    -- stochastic rounding of the copy: other bf16 weights (other losses), the same training within bf16 noise
    local c = trainer { device = "cuda", precision = "bf16", optimizer = { lr = 1e-3, clip = 1.0, stochastic_rounding = true } }
    local a2 = trainer { device = "cuda", precision = "bf16" }
    local differ = 0
    for i = 1, 6 do
      local ra, rc = a2:step(), c:step()
      if ra.loss ~= rc.loss then differ = differ + 1 end
      -- estimate: as the bf16 test above
      assert.near(ra.loss, rc.loss, 3e-2 * math.abs(ra.loss), "step " .. i)
    end
    assert.is_true(differ > 0, "stochastic rounding changed nothing")
    sao.cuda.precision("fp32")
  end)

  gpu_it("LoRA on the GPU: the adapters live there, train like the CPU's, and come back with dit:to('cpu')", function()
    local lora = { rank = 4, alpha = 8 }
    local a, b = trainer { lora = lora }, trainer { device = "cuda", lora = { rank = 4, alpha = 8 } }
    for _, p in pairs(b.params) do assert.equal("cuda", p:device()) end
    for _, g in pairs(require("sao.lora").grads(b.cfg.dit)) do assert.equal("cuda", g:device()) end
    for i = 1, 10 do
      local ra, rb = a:step(), b:step()
      assert.near(ra.loss, rb.loss, 1e-3 * math.abs(ra.loss) + 1e-6, "step " .. i)   -- estimate, as above
    end
    for k, p in pairs(a.params) do assert.tensor_near(p, b.params[k]:to("cpu"), { abs = 1e-4, rel = 1e-3 }, k) end
    local x = sao.randn { { B, cfg.io_channels, T }, seed = 9 }
    local t = sao.tensor { 0.3, 0.6 }
    local cross = sao.randn { { B, L, cfg.cond_token_dim }, seed = 10 }
    local global = sao.randn { { B, cfg.global_cond_dim }, seed = 11 }
    local on_gpu = b.cfg.dit:forward(x, t, cross, global)
    b.cfg.dit:to("cpu")
    for _, p in pairs(require("sao.lora").params(b.cfg.dit)) do assert.equal("cpu", p:device()) end
    assert.tensor_near(on_gpu, b.cfg.dit:forward(x, t, cross, global), { abs = 1e-4 })
    require("sao.lora").merge(b.cfg.dit)                 -- merging runs on the CPU once they are back
    assert.tensor_near(on_gpu, b.cfg.dit:forward(x, t, cross, global), { abs = 1e-4 })
  end)

  gpu_it("ZeRO-1 refuses stochastically rounded bf16 copies (each rank would round the gathered weights apart)", function()
    local comm = require "sao.comm"
    local path = comm.default_path("zero-sr-" .. tostring(os.time()))
    local g = comm.create(path, 2, 0)   -- rank 0 of two; attaching exchanges nothing
    assert.error_matches(function()
      trainer { device = "cuda", precision = "bf16", comm = g, optimizer = { lr = 1e-3, stochastic_rounding = true } }
    end, "use zero = 0")
    local t = trainer { device = "cuda", precision = "bf16", comm = g, zero = 0,
      optimizer = { lr = 1e-3, stochastic_rounding = true } }
    assert.is_nil(t.opt.shard)
    g:close()
    os.remove(path)
  end)

  gpu_it("resumes bit-exactly on the GPU", function()
    local dir = tmpdir()
    local a = trainer { device = "cuda", run_dir = dir }
    for _ = 1, 3 do a:step() end
    local ck = a:save()
    local want = {}
    for i = 1, 3 do want[i] = a:step() end
    local b = sao.train.resume(ck, { dit = new_dit(), data = sao.data.memory(dataset(6), { batch = B, seed = 5 }),
      batch = B, frames = T, context = L, schedule = "constant", quiet = true, device = "cuda" })
    for i = 1, 3 do
      local r = b:step()
      assert.equal(want[i].loss, r.loss)
      assert.equal(want[i].grad_norm, r.grad_norm)
    end
    for k, p in pairs(a.params) do assert.equal(0, p:to("cpu"):maxdiff(b.params[k]:to("cpu")), k) end
    os.execute("rm -rf " .. dir)
  end)

  gpu_it("dit:to('cpu') brings the weights trained on the GPU back; the export has them too", function()
    local tr = trainer { device = "cuda", ema = false }
    for _ = 1, 3 do tr:step() end
    local x = sao.randn { { B, cfg.io_channels, T }, seed = 9 }
    local t = sao.tensor { 0.3, 0.6 }
    local cross = sao.randn { { B, L, cfg.cond_token_dim }, seed = 10 }
    local global = sao.randn { { B, cfg.global_cond_dim }, seed = 11 }
    local on_gpu = tr.cfg.dit:forward(x, t, cross, global)
    local path = os.tmpname()
    tr:export(path)
    local exported = sao.load_safetensors(path)
    os.remove(path)
    local d = tr.cfg.dit:to("cpu")
    assert.tensor_near(on_gpu, d:forward(x, t, cross, global), { abs = 1e-4 })
    local again = sao.dit.new(cfg)
    again:load(exported, "model.model.")
    assert.tensor_near(on_gpu, again:forward(x, t, cross, global), { abs = 1e-4 })
    local fresh = new_dit():forward(x, t, cross, global)
    assert.is_true(fresh:maxdiff(on_gpu) > 1e-3, "training changed the weights")
  end)

  -- with each attention setting whose scratch the plan counts differently: "auto" (the bf16 flash
  -- kernels: delta only) and "cudnn" (cuDNN's SDPA: bf16 copies and a workspace, kernels/cuda/attention_cudnn.cu;
  -- on the emulation its fake cuDNN's workspace)
  for _, impl in ipairs { "auto", "cudnn" } do
    gpu_it("the memory plan predicts the measured device peak within 10 % (attention_impl " .. impl .. ")", function()
      -- a mid-size model so that the run, not the allocator's granularity, decides the peak
      local mid = { io_channels = 64, embed_dim = 512, depth = 4, num_heads = 8, cond_token_dim = 256, global_cond_dim = 256 }
      local d = sao.dit.new(mid)
      d:load(require("sao.model").random_params(d:params(), 1))
      local items = {}
      for i = 1, 4 do
        items[i] = { latents = sao.randn { { 64, 256 }, seed = i }, cross = sao.randn { { 32, 256 }, seed = 10 + i },
          global = sao.randn { { 256 }, seed = 20 + i } }
      end
      local was = sao.cuda.attention_impl(impl)
      local tr = sao.train.new { dit = d, data = sao.data.memory(items, { batch = 4 }), batch = 4, frames = 256,
        context = 32, quiet = true, device = "cuda", precision = "bf16" }   -- the plan counts the bf16 scratch
      local f0, b0 = sao.cuda.sdpa()
      local ok, err = pcall(tr.step, tr)
      local f1, b1 = sao.cuda.sdpa()
      sao.cuda.attention_impl(was)
      if not ok then error(err, 0) end
      if impl == "cudnn" then   -- the plan is only checked where cuDNN ran
        local _, _, why = sao.cuda.sdpa()
        if f1 == f0 or b1 == b0 then pending("cuDNN's SDPA did not run: " .. tostring(why)) return end
      end
      local p = tr.plan.device
      assert.is_number(p.measured_peak)
      -- the peak is process-wide: the run must have raised it, and what it added is compared with
      -- what the plan says it adds (the memory held before the run left out of both)
      assert.is_true(p.measured_peak > p.peak_before, "the run did not raise the process's device peak")
      local want, got = p.predicted_peak - p.before, p.measured_peak - p.before
      assert.is_true(math.abs(got - want) <= 0.10 * want, string.format("the run added %.1f MB, the plan says %.1f MB",
        got / 2 ^ 20, want / 2 ^ 20))
    end)
  end
end)
