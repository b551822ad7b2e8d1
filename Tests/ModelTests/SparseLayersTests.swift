import Core
import Testing
import Kernels
@testable import Model

/// The sparse block layers against the dense model with the same masked weights: the same
/// loss, the same gradient at every active weight and every other parameter, exact zeros
/// at the inactive weights (or the dense gradient there when asked for it).
@Suite("Sparse block layers", .serialized)
struct SparseLayersTests {
    /// A mask over the model's block layers at `density`, the weights it turns off zeroed in
    /// `params`; every layer runs sparse except those in `dense`.
    static func sparseSetup(_ model: ViTModel, params: FloatBuffer, density: Float, dense: Set<LinearSite> = [],
                            seed: UInt64) -> SparseLayers {
        var rng = Xoshiro256(seed: seed)
        let mask = FloatBuffer(count: model.layout.count)
        for i in 0 ..< mask.count { mask.pointer[i] = 1 }
        for s in model.linearSites {
            for e in 0 ..< s.outFeatures * s.inFeatures where rng.nextUniform() >= density {
                mask.pointer[s.weight + e] = 0
                params.pointer[s.weight + e] = 0
            }
        }
        let layouts = model.linearSites.filter { !dense.contains($0) }.map { ($0, SparseLayers.layout($0, mask: mask.pointer)) }
        return SparseLayers(model: model, layouts: layouts)
    }

    struct Pass {
        var loss: Double
        var grads: [Float]
    }

    static func pass(_ model: ViTModel, params: FloatBuffer, batch: TinyBatch, threads: Int, sparse: SparseLayers?,
                     fullWeightGradient: Bool = false) -> Pass {
        let b = batch.labels.count
        let ws = ViTWorkspace(model: model, batch: b, threads: threads)
        let grads = FloatBuffer(count: model.layout.count)
        let r = batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!, labels: lab.baseAddress!,
                                      smoothing: 0.1, workspace: ws, sparse: sparse, fullWeightGradient: fullWeightGradient)
            }
        }
        // The forward pass alone gives the same loss.
        let eval = ViTWorkspace(model: model, batch: b, threads: threads, training: false)
        let f = batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                model.forward(params: params.pointer, images: img.baseAddress!, labels: lab.baseAddress!, smoothing: 0.1,
                              workspace: eval, sparse: sparse)
            }
        }
        #expect(abs(f.lossSum - r.lossSum) <= 1e-5 * abs(r.lossSum))
        return Pass(loss: r.lossSum, grads: Array(UnsafeBufferPointer(start: grads.pointer, count: grads.count)))
    }

    /// Tokens removed by SViTE+'s selector (keeps 8 of 16 patches: 9 tokens a block).
    static let selectorConfig: ViTConfig = {
        var c = ViTConfig(imageSize: 12, patchSize: 3, inChannels: 1, numClasses: 4, dim: 8, depth: 2, heads: 2, mlpRatio: 2)
        c.tokenKeep = 0.5
        c.selectorHidden = 4
        return c
    }()

    /// Batch 20 of 5 tokens = 100 rows: a full 64-row block and a part one; 1 thread, 3 lanes,
    /// and one lane of 2 threads (batch 1 takes the threads into the kernels); the full
    /// model, a compact one, and one with a token selector.
    @Test(arguments: [(20, 1), (20, 3), (1, 2)], [tinyConfig, tinyConfig.compacted(heads: [1, 2], hidden: [24, 7]), selectorConfig])
    func sparsePathEqualsMaskedDense(shape: (batch: Int, threads: Int), config: ViTConfig) {
        let model = ViTModel(config: config)
        let params = randomParameters(model, seed: 5)
        // One layer of each kind stays dense, to mix the two paths in a block.
        let dense: Set<LinearSite> = [model.site(block: 0, .fc2), model.site(block: 1, .qkv)]
        let sparse = Self.sparseSetup(model, params: params, density: 0.3, dense: dense, seed: 6)
        #expect(sparse.sites.count == model.linearSites.count - 2)
        let batch = TinyBatch(config: config, batch: shape.batch, seed: 7)
        let reference = Self.pass(model, params: params, batch: batch, threads: shape.threads, sparse: nil)
        let got = Self.pass(model, params: params, batch: batch, threads: shape.threads, sparse: sparse)
        let full = Self.pass(model, params: params, batch: batch, threads: shape.threads, sparse: sparse, fullWeightGradient: true)
        #expect(abs(got.loss - reference.loss) <= 1e-5 * abs(reference.loss))

        var inactive = Set<Int>()
        for s in sparse.sites {
            for e in 0 ..< s.outFeatures * s.inFeatures where params.pointer[s.weight + e] == 0 { inactive.insert(s.weight + e) }
        }
        var worst = 0.0, nonzeroInactive = 0, fullWorst = 0.0
        for t in model.layout.tensors {
            let scale = (t.offset ..< t.offset + t.count).map { abs(Double(reference.grads[$0])) }.max() ?? 0
            for i in t.offset ..< t.offset + t.count {
                let want = Double(reference.grads[i])
                // fp32 rounding: 1e-5 relative to the entry, for entries down to a tenth of the
                // tensor's largest; smaller ones are sums that cancel, and any other order of
                // the same fp32 sums moves them by about 1e-6 of the largest.
                let tolerance = 1e-5 * max(abs(want), 0.1 * scale) + 1e-9
                fullWorst = max(fullWorst, abs(Double(full.grads[i]) - want) / tolerance)
                if inactive.contains(i) {
                    if got.grads[i] != 0 { nonzeroInactive += 1 }
                } else {
                    worst = max(worst, abs(Double(got.grads[i]) - want) / tolerance)
                }
            }
        }
        print("sparse layers \(shape): worst error / tolerance \(worst), with the full weight gradient \(fullWorst)")
        #expect(!inactive.isEmpty)
        #expect(nonzeroInactive == 0, "the inactive weights' gradient is exactly zero")
        #expect(worst <= 1)
        #expect(fullWorst <= 1, "the full weight gradient is the dense one, inactive weights included")
    }

    /// The layouts hold the mask's active entries, and a pass takes the current values.
    @Test func layoutsFollowTheMaskAndTheValuesTheParameters() {
        let model = ViTModel(config: tinyConfig)
        let params = randomParameters(model, seed: 8)
        let sparse = Self.sparseSetup(model, params: params, density: 0.5, seed: 9)
        let batch = TinyBatch(config: tinyConfig, batch: 4, seed: 10)
        let before = Self.pass(model, params: params, batch: batch, threads: 1, sparse: sparse)
        // Change an active weight: the sparse pass sees it without a rebuild.
        let s = model.site(block: 1, .fc1)
        let e = (0 ..< s.outFeatures * s.inFeatures).first { params.pointer[s.weight + $0] != 0 }!
        params.pointer[s.weight + e] += 1
        let after = Self.pass(model, params: params, batch: batch, threads: 1, sparse: sparse)
        let dense = Self.pass(model, params: params, batch: batch, threads: 1, sparse: nil)
        #expect(after.loss != before.loss)
        #expect(abs(after.loss - dense.loss) <= 1e-5 * abs(dense.loss))
    }
}

/// The choice of dense or sparse per layer, on made-up costs.
@Suite("Sparse kernel choice")
struct SparseKernelChoiceTests {
    /// Every block layer of the tiny model with the given active counts (all: unmasked).
    static func active(_ model: ViTModel, _ count: (LinearSite) -> Int) -> [(site: LinearSite, activeCount: Int)] {
        model.linearSites.map { ($0, count($0)) }
    }

    @Test func autoTakesSparseOnlyWhereItIsClearlyFaster() {
        let model = ViTModel(config: tinyConfig)
        // fc1 unmasked; qkv at 10%, proj at 50%, fc2 at 80%.
        let density: [BlockLinear: Double] = [.qkv: 0.1, .proj: 0.5, .fc1: 1, .fc2: 0.8]
        let active = Self.active(model) { s in Int((density[s.layer]! * Double(s.outFeatures * s.inFeatures)).rounded()) }
        var asked: [LinearSite] = []
        // Made up: dense 1 ms; sparse 0.2 ms + 2 ms × density, i.e. 0.4, 1.2, 1.8 ms.
        let choice = SparseKernelChoice(mode: .auto, active: active) { site, n in
            asked.append(site)
            return LayerCost(dense: 1e-3, sparse: 2e-4 + 2e-3 * Double(n) / Double(site.outFeatures * site.inFeatures))
        }
        #expect(Set(choice.sparseSites.map(\.layer)) == [.qkv])
        #expect(choice.sparseSites.count == tinyConfig.depth)
        #expect(!asked.contains { $0.layer == .fc1 }, "an unmasked layer is not measured: it has nothing to skip")
        // Both blocks: qkv 1 → 0.4, proj and fc2 stay at 1 ms.
        let e = choice.expectedSeconds!
        #expect(abs(e.dense - 6e-3) < 1e-12 && abs(e.chosen - 4.8e-3) < 1e-5)
        #expect(choice.summary.contains("2 of 8 block layers run sparse (density 0.10)"), "\(choice.summary)")
        #expect(choice.summary.contains("4 masked layer(s) stay dense"), "\(choice.summary)")
        #expect(choice.byKind == "attn.qkv 2/2, attn.proj 0/2, mlp.fc1 0/2, mlp.fc2 0/2")
    }

    /// A layer only a little faster sparse stays dense: the margin is what keeps a noisy
    /// measurement from making the step slower.
    @Test func nearBreakEvenStaysDense() {
        let model = ViTModel(config: tinyConfig)
        let active = Self.active(model) { $0.outFeatures * $0.inFeatures / 10 }
        let slightly = SparseKernelChoice(mode: .auto, active: active) { _, _ in LayerCost(dense: 1, sparse: 0.9) }
        #expect(slightly.sparseSites.isEmpty)
        let clearly = SparseKernelChoice(mode: .auto, active: active) { _, _ in LayerCost(dense: 1, sparse: 0.85) }
        #expect(clearly.sparseSites.count == 8)
        #expect(clearly.expectedSeconds!.chosen <= clearly.expectedSeconds!.dense)
    }

    @Test func onAndOffNeedNoMeasurement() {
        let model = ViTModel(config: tinyConfig)
        let active = Self.active(model) { $0.layer == .fc1 ? $0.outFeatures * $0.inFeatures : 3 }
        let on = SparseKernelChoice(mode: .on, active: active) { _, _ in Issue.record("on measured"); return LayerCost(dense: 0, sparse: 0) }
        #expect(on.sparseSites.count == 6 && !on.sparseSites.contains { $0.layer == .fc1 })
        #expect(on.expectedSeconds == nil)
        let off = SparseKernelChoice(mode: .off, active: active) { _, _ in Issue.record("off measured"); return LayerCost(dense: 0, sparse: 0) }
        #expect(off.sparseSites.isEmpty)
        #expect(off.summary.hasPrefix("sparse kernels (off): 0 of 8"))
    }

    /// The cost line through measured points: linear between them, extended past the ends,
    /// never below zero.
    @Test func costLineThroughThePoints() {
        let points = [(active: 100, seconds: 2.0), (active: 300, seconds: 4.0), (active: 500, seconds: 10.0)]
        #expect(MeasuredLayerCosts.interpolate(points, 200) == 3)
        #expect(MeasuredLayerCosts.interpolate(points, 400) == 7)
        #expect(MeasuredLayerCosts.interpolate(points, 600) == 13)
        #expect(MeasuredLayerCosts.interpolate(points, 0) == 1)
        #expect(MeasuredLayerCosts.interpolate([(100, 1.0), (200, 3.0)], 0) == 0)
    }

    /// Measured on this machine (tiny shapes, so quick): the costs are positive and the
    /// sparse cost grows with the active weights.
    @Test func measuredCostsGrowWithTheActiveWeights() {
        let model = ViTModel(config: tinyConfig)
        let costs = MeasuredLayerCosts(rows: 100, threads: 1, mode: .fp32, training: true, repeats: 2)
        let site = model.site(block: 0, .fc1)
        let total = site.outFeatures * site.inFeatures
        let few = costs.cost(site, active: total / 20), many = costs.cost(site, active: total)
        #expect(few.dense > 0 && few.dense == many.dense)
        #expect(few.sparse > 0 && many.sparse > few.sparse)
    }
}
