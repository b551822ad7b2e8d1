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

    /// Batch 20 of 5 tokens = 100 rows: a full 64-row block and a part one; 1 thread, 3 lanes,
    /// and one lane of 2 threads (batch 1 takes the threads into the kernels).
    @Test(arguments: [(20, 1), (20, 3), (1, 2)], [tinyConfig, tinyConfig.compacted(heads: [1, 2], hidden: [24, 7])])
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
