import Config
import Core
import Foundation
import Model
import Optim
import Testing
import TestSupport
@testable import Training
import Compression
import Steps
@testable import Wire

/// AdamW's frozen variance under top-k, kept in scale with the gradients
/// (communication.track_variance).
@Suite("variance tracking")
struct VarianceTrackerTests {
    let layout = ParameterLayout(tensors: [("w.weight", [4, 4]), ("w.bias", [4]), ("v.weight", [2, 8])])

    /// The average is AdamW's (β2, bias-corrected), so a constant mean square reads back
    /// as itself from the first step; frozen, each tensor's factor is √(now / at the
    /// freeze): 1 at the freeze, → ½ when its gradients' mean square falls to a quarter,
    /// untouched for a tensor whose gradients did not move, clamped far out.
    @Test func theFactorFollowsEachTensorsMeanSquareFromTheFreeze() {
        var t = VarianceTracker(tensors: 3, beta2: 0.999)
        #expect(t.scales == nil)
        for _ in 0 ..< 50 { t.record([4, 1, 2]) }
        for (a, b) in zip(t.corrected, [4.0, 1, 2]) { #expect(abs(a - b) < 1e-12 * b) }
        t.freeze()
        #expect(t.scales == [1, 1, 1])
        let frozen = t.atFreeze
        for _ in 0 ..< 8000 { t.record([1, 1, 1e-9]) }
        t.freeze()  // once only
        #expect(t.atFreeze == frozen)
        let s = t.scales!
        // After 8000 steps the old level's weight in the average is 0.999^8000 ≈ 3e-4.
        #expect(abs(s[0] - 0.5) < 1e-3 && s[1] == 1 && s[2] == Float(1 / VarianceTracker.limit), "\(s)")
        // A step that names the wrong number of tensors is not a record.
        let before = t
        t.record([1, 2])
        #expect(t == before)
    }

    /// Frozen, a factor c on a tensor's √v is the step AdamW would take with that tensor's
    /// variance times c²; a factor of 1 is bit for bit the unscaled step, and an unfrozen
    /// optimizer ignores factors.
    @Test func aScaledFrozenStepIsTheStepOfAScaledVariance() {
        var c = OptimizerConfig()
        c.weightDecay = 0.05; c.lr = 0.01
        func make() -> (Optimizer, FloatBuffer) {
            let o = Optimizer(config: c, layout: layout)
            let p = FloatBuffer(count: layout.count)
            var rng = Xoshiro256(seed: 7)
            for i in 0 ..< layout.count { p[i] = rng.nextUniform() - 0.5 }
            for k in 0 ..< 4 {
                let g = FloatBuffer(count: layout.count)
                for i in 0 ..< layout.count { g[i] = Float((i * 7 + k * 3) % 11) / 11 - 0.4 }
                withExtendedLifetime(g) { o.step(params: p.pointer, grads: g.pointer, lr: c.lr) }
            }
            o.freezeVariance()
            return (o, p)
        }
        let g = FloatBuffer(count: layout.count)
        for i in 0 ..< layout.count { g[i] = Float(i % 5) / 5 - 0.3 }
        let factors: [Float] = [0.5, 1, 2]
        let (a, pa) = make(), (b, pb) = make(), (u, pu) = make()
        a.step(params: pa.pointer, grads: g.pointer, lr: c.lr, varianceScale: factors)
        for (t, f) in zip(layout.tensors, factors) { for i in t.offset ..< t.offset + t.count { b.secondMoment![i] *= f * f } }
        b.step(params: pb.pointer, grads: g.pointer, lr: c.lr)
        u.step(params: pu.pointer, grads: g.pointer, lr: c.lr, varianceScale: [1, 1, 1])
        let (n, pn) = make()
        n.step(params: pn.pointer, grads: g.pointer, lr: c.lr)
        var moved = false
        for i in 0 ..< layout.count {
            #expect(abs(pa[i] - pb[i]) <= 1e-6 * max(1, abs(pb[i])), "weight \(i): \(pa[i]) against \(pb[i])")
            #expect(pu[i].bitPattern == pn[i].bitPattern)
            if pa[i] != pn[i] { moved = true }
        }
        #expect(moved)
        // Live (not frozen), the factors change nothing.
        let live = Optimizer(config: c, layout: layout), live2 = Optimizer(config: c, layout: layout)
        let q = FloatBuffer(count: layout.count), q2 = FloatBuffer(count: layout.count)
        live.step(params: q.pointer, grads: g.pointer, lr: c.lr, varianceScale: factors)
        live2.step(params: q2.pointer, grads: g.pointer, lr: c.lr)
        #expect((0 ..< layout.count).allSatisfy { q[$0].bitPattern == q2[$0].bitPattern })
    }

    /// Mean squares are over a tensor's active weights only, in Double, for tensors whose
    /// sizes are and are not multiples of sixteen.
    @Test func meanSquaresCountOnlyActiveWeights() {
        let sizes = [(0, 5000), (5000, 7), (5007, 33)]
        let n = 5040
        let g = FloatBuffer(count: n), m = FloatBuffer(count: n)
        var rng = Xoshiro256(seed: 3)
        for i in 0 ..< n { g[i] = rng.nextUniform() * 4 - 2; m[i] = rng.nextUniform() < 0.3 ? 0 : 1 }
        g[5001] = 1e4; m[5001] = 0  // an inactive weight's gradient counts for nothing
        let got = VarianceTracker.meanSquares(g.pointer, tensors: sizes, mask: UnsafePointer(m.pointer))
        let all = VarianceTracker.meanSquares(g.pointer, tensors: sizes, mask: nil)
        for (k, t) in sizes.enumerated() {
            var s = 0.0, c = 0.0, s2 = 0.0
            for i in t.0 ..< t.0 + t.1 {
                s += m[i] != 0 ? Double(g[i]) * Double(g[i]) : 0; c += Double(m[i])
                s2 += Double(g[i]) * Double(g[i])
            }
            #expect(abs(Double(got[k]) - s / c) <= 1e-5 * s / c, "tensor \(k): \(got[k]) against \(s / c)")
            #expect(abs(Double(all[k]) - s2 / Double(t.1)) <= 1e-5 * s2 / Double(t.1))
        }
        let none = FloatBuffer(count: n)
        #expect(VarianceTracker.meanSquares(g.pointer, tensors: sizes, mask: UnsafePointer(none.pointer)) == [0, 0, 0])
    }

    /// Gradient frames carry the mean squares when given, dense and top-k alike; a count
    /// that does not fit the layout, a negative or NaN value, or a receiver without the
    /// layout is refused. Update frames carry the factors; a zero or NaN one is refused.
    @Test func meanSquaresAndFactorsTravelAndAreChecked() throws {
        let s = GradientSummary(images: 32, lossSum: 10, correct: 3)
        let values = (0 ..< layout.count).map { Float($0) / 10 }
        let ms: [Float] = [0.25, 1e-6, 3]
        var out = [Float](repeating: 0, count: layout.count)
        let dense = Payload.grads(s, codec: .fp32, values: values, count: layout.count, meanSquares: ms)
        #expect(try Payload.decodeGrads(dense, into: &out, count: layout.count, layout: layout).meanSquares == ms)
        #expect(out == values)
        #expect(try Payload.decodeGrads(Payload.grads(s, codec: .bf16, values: values, count: layout.count), into: &out, count: layout.count,
                                        layout: layout).meanSquares == nil)
        #expect(throws: WireError.self) { _ = try Payload.decodeGrads(dense, into: &out, count: layout.count) }
        let sparse = SparseGradient(indices: [[1, 3], [], [0]], values: [[0.5, -1], [], [2]])
        let top = Payload.sparseGrads(s, codec: .int8, sparse: sparse, layout: layout, meanSquares: ms)
        let d = try Payload.decodeGrads(top, into: &out, count: layout.count, layout: layout)
        #expect(d.meanSquares == ms && d.sparse?.indices == sparse.indices)
        for bad in [[Float](arrayLiteral: 1, 2), [1, -1, 2], [1, .nan, 2]] {
            let p = Payload.sparseGrads(s, codec: .int8, sparse: sparse, layout: layout, meanSquares: bad)
            #expect(throws: WireError.self) { _ = try Payload.decodeGrads(p, into: &out, count: layout.count, layout: layout) }
        }
        var u = ParameterUpdate(step: 3, applied: true, lr: 1e-3, optimizerUpdates: 3, freezeVariance: true, varianceScale: [0.5, 1, 1.75],
                                gradient: sparse)
        var w = ByteWriter()
        u.encode(into: &w, layout: layout)
        var r = ByteReader(w.bytes)
        #expect(try ParameterUpdate.decode(&r, context: UpdateContext(layout: layout, layerSizes: [], moments: 2)) == u)
        for bad in [[Float](arrayLiteral: 0, 1, 1), [1, .nan, 1], [1, 1]] {
            u.varianceScale = bad
            var w2 = ByteWriter()
            u.encode(into: &w2, layout: layout)
            var r2 = ByteReader(w2.bytes)
            #expect(throws: WireError.self) { _ = try ParameterUpdate.decode(&r2, context: UpdateContext(layout: layout, layerSizes: [], moments: 2)) }
        }
    }
}
