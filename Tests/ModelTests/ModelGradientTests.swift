import Core
import Testing
import Kernels
@testable import Model

/// A model small enough to check every gradient by finite differences: 6×6 images of 2
/// channels, patch 3 (4 patches + CLS = 5 tokens), dim 12, 2 heads of 6, MLP 24, depth 2.
let tinyConfig = ViTConfig(imageSize: 6, patchSize: 3, inChannels: 2, numClasses: 5,
                           dim: 12, depth: 2, heads: 2, mlpRatio: 2)

/// Parameters far from the timm init so every path carries signal: weights ~ N(0, 0.3²),
/// biases ~ N(0, 0.1²), LayerNorm weights ~ 1 + N(0, 0.2²).
func randomParameters(_ model: ViTModel, seed: UInt64) -> FloatBuffer {
    var rng = Xoshiro256(seed: seed)
    let p = FloatBuffer(count: model.layout.count)
    for t in model.layout.tensors {
        let v = p.view(t)
        let isNorm = t.name.contains("norm") && t.name.hasSuffix("weight")
        let isBias = t.name.hasSuffix("bias")
        for i in v.indices {
            let z = rng.nextNormal()
            v[i] = isNorm ? 1 + 0.2 * z : (isBias ? 0.1 * z : 0.3 * z)
        }
    }
    return p
}

struct TinyBatch {
    let images: [Float]
    let labels: [Int32]
    init(config c: ViTConfig, batch: Int, seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        images = (0 ..< batch * c.imageValues).map { _ in rng.nextNormal() }
        labels = (0 ..< batch).map { _ in Int32(rng.next() % UInt64(c.numClasses)) }
    }
}

@Suite("ViT gradients by central finite differences", .serialized)
struct ModelGradientTests {
    // Bound (Float throughout, loss in Double): with h = 3e-3 and parameters of the size
    // above, float rounding in the logits (~1e-6 relative after two blocks) puts ≲ 5e-5
    // absolute noise on a difference quotient and truncation is ≲ 2e-5; gradients of
    // interest are 1e-3…1e-1. So |analytic − numeric| ≤ 2e-4 + 2e-2·|numeric| passes for a
    // correct backward, while a dropped term or wrong index errs by far more. The
    // measured worst relative error is printed for the record.
    let step: Float = 3e-3
    let atol = 2e-4
    let rtol = 2e-2

    /// The full model, and a compact one (blocks keeping 1 of 2 heads and 24 or 7 of 24
    /// neurons), whose per-block widths run through every kernel call; on each backend.
    @Test(arguments: [tinyConfig, tinyConfig.compacted(heads: [1, 2], hidden: [24, 7])], GEMMBackend.allCases)
    func everyParameterTensorAndTheInput(config: ViTConfig, backend: GEMMBackend) {
        let model = ViTModel(config: config)
        let params = randomParameters(model, seed: 1)
        let batch = TinyBatch(config: config, batch: 3, seed: 2)
        let ws = ViTWorkspace(model: model, batch: 3, threads: 1, backend: backend)
        let grads = FloatBuffer(count: model.layout.count)
        var images = batch.images
        let inputGrad = FloatBuffer(count: images.count)
        let smoothing: Float = 0.1

        batch.labels.withUnsafeBufferPointer { labels in
            images.withUnsafeMutableBufferPointer { img in
                model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!,
                                      labels: labels.baseAddress!, smoothing: smoothing, workspace: ws,
                                      inputGrad: inputGrad.pointer)
                let loss = { () -> Double in
                    model.forward(params: params.pointer, images: img.baseAddress!, labels: labels.baseAddress!,
                                  smoothing: smoothing, workspace: ws).meanLoss
                }
                var worst = 0.0
                var rng = Xoshiro256(seed: 3)
                for t in model.layout.tensors {
                    // Small tensors entirely; large ones at 40 random entries plus the
                    // 8 largest gradients.
                    var idx: [Int]
                    if t.count <= 64 {
                        idx = Array(0 ..< t.count)
                    } else {
                        idx = (0 ..< 40).map { _ in Int(rng.next() % UInt64(t.count)) }
                        let g = grads.view(t)
                        idx += (0 ..< t.count).sorted { abs(g[$0]) > abs(g[$1]) }.prefix(8)
                    }
                    let r = GradientCheck.check(analytic: grads.pointer, input: params.pointer,
                                                indices: idx.map { $0 + t.offset }, step: step,
                                                atol: atol, rtol: rtol, loss: loss)
                    #expect(r.passed, "\(t.name): \(r)")
                    worst = max(worst, r.maxRelativeError)
                    // No tensor's gradient is identically zero: every parameter is used.
                    let g = grads.view(t)
                    #expect(g.contains { $0 != 0 }, "\(t.name) has an all-zero gradient")
                }
                let ri = GradientCheck.check(analytic: inputGrad.pointer, input: img.baseAddress!,
                                             indices: 0 ..< img.count, step: step, atol: atol, rtol: rtol, loss: loss)
                #expect(ri.passed, "input: \(ri)")
                print("ViT finite differences (\(config.isCompact ? "compact" : "full"), \(backend.rawValue)): worst relative error over parameters \(worst), input \(ri.maxRelativeError)")
            }
        }
    }

    /// Mixup/CutMix targets (a second label and a weight per row) through two lanes: the
    /// gradient matches central differences of the mixed loss, the loss is λ·CE(y₁) +
    /// (1 − λ)·CE(y₂), and λ = 1 is the plain loss bit for bit.
    @Test func mixedTargetsAcrossLanes() {
        let model = ViTModel(config: tinyConfig)
        let params = randomParameters(model, seed: 11)
        let batch = TinyBatch(config: tinyConfig, batch: 4, seed: 12)
        let ws = ViTWorkspace(model: model, batch: 4, threads: 2)
        let grads = FloatBuffer(count: model.layout.count), plain = FloatBuffer(count: model.layout.count)
        let second: [Int32] = batch.labels.map { ($0 + 1) % Int32(tinyConfig.numClasses) }
        let weights: [Float] = [0.3, 1, 0.55, 0.9], ones = [Float](repeating: 1, count: 4)
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { labels in
                second.withUnsafeBufferPointer { l2 in
                    weights.withUnsafeBufferPointer { w in
                        ones.withUnsafeBufferPointer { one in
                            let mix = MixedTargets(labels: l2.baseAddress!, weights: w.baseAddress!)
                            model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!,
                                                  labels: labels.baseAddress!, smoothing: 0.1, workspace: ws, mix: mix)
                            let loss = { () -> Double in
                                model.forward(params: params.pointer, images: img.baseAddress!, labels: labels.baseAddress!,
                                              smoothing: 0.1, workspace: ws, mix: mix).meanLoss
                            }
                            var rng = Xoshiro256(seed: 13)
                            for t in model.layout.tensors {
                                let idx = t.count <= 16 ? Array(0 ..< t.count) : (0 ..< 16).map { _ in Int(rng.next() % UInt64(t.count)) }
                                let r = GradientCheck.check(analytic: grads.pointer, input: params.pointer, indices: idx.map { $0 + t.offset },
                                                            step: step, atol: atol, rtol: rtol, loss: loss)
                                #expect(r.passed, "\(t.name): \(r)")
                            }
                            // The loss is the λ-weighted pair of plain losses, row by row.
                            let mixed = model.forward(params: params.pointer, images: img.baseAddress!, labels: labels.baseAddress!,
                                                      smoothing: 0.1, workspace: ws, mix: mix).lossSum
                            var expected = 0.0
                            for r in 0 ..< 4 {
                                let single = ViTWorkspace(model: model, batch: 1, threads: 1)
                                let a = model.forward(params: params.pointer, images: img.baseAddress! + r * tinyConfig.imageValues,
                                                      labels: labels.baseAddress! + r, smoothing: 0.1, workspace: single).lossSum
                                let b = model.forward(params: params.pointer, images: img.baseAddress! + r * tinyConfig.imageValues,
                                                      labels: l2.baseAddress! + r, smoothing: 0.1, workspace: single).lossSum
                                expected += Double(weights[r]) * a + Double(1 - weights[r]) * b
                            }
                            #expect(abs(mixed - expected) < 1e-4 * abs(expected), "\(mixed) against \(expected)")
                            // Weight 1 on the own label is the plain loss and gradient exactly.
                            model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!,
                                                  labels: labels.baseAddress!, smoothing: 0.1, workspace: ws,
                                                  mix: MixedTargets(labels: l2.baseAddress!, weights: one.baseAddress!))
                            model.forwardBackward(params: params.pointer, grads: plain.pointer, images: img.baseAddress!,
                                                  labels: labels.baseAddress!, smoothing: 0.1, workspace: ws)
                            #expect(grads.array == plain.array)
                        }
                    }
                }
            }
        }
    }

    @Test func lanesGiveTheSameGradientAsOneThread() {
        let model = ViTModel(config: tinyConfig)
        let params = randomParameters(model, seed: 4)
        let batch = TinyBatch(config: tinyConfig, batch: 7, seed: 5)
        let g1 = FloatBuffer(count: model.layout.count), g3 = FloatBuffer(count: model.layout.count)
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                let r1 = model.forwardBackward(params: params.pointer, grads: g1.pointer, images: img.baseAddress!,
                                               labels: lab.baseAddress!, smoothing: 0.1,
                                               workspace: ViTWorkspace(model: model, batch: 7, threads: 1))
                let ws3 = ViTWorkspace(model: model, batch: 7, threads: 3)
                #expect(ws3.laneCount == 3)
                // Stale values in the caller's buffer must not leak into the result.
                for i in 0 ..< g3.count { g3.pointer[i] = 1e3 }
                let r3 = model.forwardBackward(params: params.pointer, grads: g3.pointer, images: img.baseAddress!,
                                               labels: lab.baseAddress!, smoothing: 0.1, workspace: ws3)
                #expect(abs(r1.lossSum - r3.lossSum) < 1e-5)
                #expect(r1.correct == r3.correct && r1.count == 7 && r3.count == 7)
                var maxDiff: Float = 0, maxG: Float = 0
                for i in 0 ..< g1.count { maxDiff = max(maxDiff, abs(g1[i] - g3[i])); maxG = max(maxG, abs(g1[i])) }
                #expect(maxDiff <= 1e-5 * max(maxG, 1), "max |g1 − g3| = \(maxDiff), max |g| = \(maxG)")
            }
        }
    }

    @Test func forwardIsDeterministicAndLogitsAreCopied() {
        let model = ViTModel(config: tinyConfig)
        let params = randomParameters(model, seed: 6)
        let batch = TinyBatch(config: tinyConfig, batch: 4, seed: 7)
        let ws = ViTWorkspace(model: model, batch: 4, threads: 2, training: false)
        var a = [Float](repeating: 0, count: 4 * 5), b = a
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                let r = model.forward(params: params.pointer, images: img.baseAddress!, labels: lab.baseAddress!, workspace: ws)
                a.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
                model.forward(params: params.pointer, images: img.baseAddress!, labels: nil, workspace: ws)
                b.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
                // Accuracy agrees with the arg-max of the copied logits.
                var correct = 0
                for i in 0 ..< 4 {
                    let row = a[(i * 5) ..< (i * 5 + 5)]
                    if row.firstIndex(of: row.max()!)! - i * 5 == Int(lab[i]) { correct += 1 }
                }
                #expect(correct == r.correct)
            }
        }
        #expect(a == b)
        #expect(a.contains { $0 != 0 })
    }

    @Test func anImageOnlyAffectsItsOwnLogits() {
        let model = ViTModel(config: tinyConfig)
        let params = randomParameters(model, seed: 8)
        var images = TinyBatch(config: tinyConfig, batch: 3, seed: 9).images
        let ws = ViTWorkspace(model: model, batch: 3, threads: 2, training: false)
        var before = [Float](repeating: 0, count: 15), after = before
        _ = images.withUnsafeBufferPointer { model.forward(params: params.pointer, images: $0.baseAddress!, labels: nil, workspace: ws) }
        before.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
        for i in 0 ..< tinyConfig.imageValues { images[tinyConfig.imageValues + i] += 0.5 }
        _ = images.withUnsafeBufferPointer { model.forward(params: params.pointer, images: $0.baseAddress!, labels: nil, workspace: ws) }
        after.withUnsafeMutableBufferPointer { model.copyLogits(from: ws, into: $0.baseAddress!) }
        #expect(before[0 ..< 5] == after[0 ..< 5])
        #expect(before[10 ..< 15] == after[10 ..< 15])
        #expect(before[5 ..< 10] != after[5 ..< 10])
    }
}

@Suite("patch extraction")
struct PatchifyTests {
    @Test func patchesFollowTheConvLayoutAndFoldBack() {
        // 2 channels, 4×4 image, patch 2: value at (c, y, x) = 100c + 10y + x.
        let c = 2, s = 4, p = 2
        var img = [Float](repeating: 0, count: c * s * s)
        for ch in 0 ..< c { for y in 0 ..< s { for x in 0 ..< s { img[ch * s * s + y * s + x] = Float(100 * ch + 10 * y + x) } } }
        var patches = [Float](repeating: 0, count: 4 * c * p * p)
        img.withUnsafeBufferPointer { i in patches.withUnsafeMutableBufferPointer {
            Patchify.forward($0.baseAddress!, i.baseAddress!, batch: 1, channels: c, imageSize: s, patchSize: p) } }
        // Patch 1 is grid (row 0, column 1): pixels x ∈ {2, 3}, y ∈ {0, 1}; order (c, ky, kx).
        #expect(Array(patches[8 ..< 16]) == [2, 3, 12, 13, 102, 103, 112, 113])
        // Patch 2 is grid (row 1, column 0).
        #expect(Array(patches[16 ..< 20]) == [20, 21, 30, 31])
        // Folding the patches back adds every pixel exactly once.
        var back = [Float](repeating: 0, count: img.count)
        patches.withUnsafeBufferPointer { pp in back.withUnsafeMutableBufferPointer {
            Patchify.backward($0.baseAddress!, pp.baseAddress!, batch: 1, channels: c, imageSize: s, patchSize: p) } }
        #expect(back == img)
    }
}

@Suite("ViT in bf16")
struct BF16ModelTests {
    static let base = ViTConfig(imageSize: 16, patchSize: 4, inChannels: 1, numClasses: 10, dim: 48, depth: 3, heads: 3, mlpRatio: 4)
    static var withSelector: ViTConfig { var c = base; c.tokenKeep = 0.75; return c }

    /// The bf16 gradient of the whole model against the fp32 one, at timm's initialisation
    /// on random images: same direction (cosine ≥ 0.999) and close in size (relative
    /// norm of the difference ≤ 5%, the bf16 operand rounding of 2⁻⁸ compounded through
    /// three blocks of forward and backward); and not identical (bf16 really ran). For
    /// the full model, a compact S2ViTE one, and one with a token selector.
    @Test(arguments: [base, base.compacted(heads: [2, 3, 1], hidden: [100, 192, 37]), withSelector])
    func gradientFollowsFP32(config: ViTConfig) {
        let model = ViTModel(config: config)
        let params = FloatBuffer(count: model.layout.count)
        Initializer.initialize(params, layout: model.layout, seed: 21)
        let batch = TinyBatch(config: config, batch: 8, seed: 22)
        let g32 = FloatBuffer(count: model.layout.count), g16 = FloatBuffer(count: model.layout.count)
        var losses: [Double] = []
        for (precision, g) in [(Precision.fp32, g32), (.bf16, g16)] {
            let ws = ViTWorkspace(model: model, batch: 8, threads: 2, precision: precision)
            #expect(ws.precision == precision)
            batch.images.withUnsafeBufferPointer { img in
                batch.labels.withUnsafeBufferPointer { lab in
                    losses.append(model.forwardBackward(params: params.pointer, grads: g.pointer, images: img.baseAddress!,
                                                        labels: lab.baseAddress!, smoothing: 0.1, workspace: ws).meanLoss)
                }
            }
        }
        var dot = 0.0, n32 = 0.0, n16 = 0.0, diff = 0.0
        for i in 0 ..< g32.count {
            let a = Double(g32[i]), b = Double(g16[i])
            dot += a * b; n32 += a * a; n16 += b * b; diff += (a - b) * (a - b)
        }
        let cosine = dot / (n32 * n16).squareRoot(), relative = (diff / n32).squareRoot()
        print("bf16 vs fp32 gradient (\(config.isCompact ? "compact" : config.hasTokenSelector ? "selector" : "full")): cosine \(cosine), relative norm \(relative), loss \(losses[0]) vs \(losses[1])")
        #expect(cosine >= 0.999)
        #expect(relative <= 0.05)
        #expect(relative > 0, "bf16 gradient equals fp32: bf16 did not run")
        #expect(abs(losses[0] - losses[1]) <= 0.01 * abs(losses[0]))
    }
}
