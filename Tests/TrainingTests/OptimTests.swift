import Config
import Core
import Foundation
import Kernels
import Model
import Optim
import Testing
import TestSupport
@testable import Training

@Suite("optimizer")
struct OptimTests {
    /// A layout with one decayed matrix, one bias and one pos_embed (not decayed).
    let layout = ParameterLayout(tensors: [("w.weight", [2, 2]), ("w.bias", [2]), ("pos_embed", [1, 1, 2])])

    func buffers(_ p: [Float]) -> FloatBuffer {
        let b = FloatBuffer(count: layout.count)
        var k = 0
        for t in layout.tensors { for i in 0 ..< t.count { b[t.offset + i] = p[k]; k += 1 } }
        return b
    }

    func values(_ b: FloatBuffer) -> [Float] {
        layout.tensors.flatMap { t in (0 ..< t.count).map { b[t.offset + $0] } }
    }

    @Test func decayFollowsTimm() {
        #expect(Optimizer.decays(name: "blocks.0.attn.qkv.weight", shape: [288, 96]))
        #expect(Optimizer.decays(name: "patch_embed.proj.weight", shape: [96, 1, 4, 4]))
        #expect(!Optimizer.decays(name: "blocks.0.attn.qkv.bias", shape: [288]))
        #expect(!Optimizer.decays(name: "blocks.0.norm1.weight", shape: [96]))
        #expect(!Optimizer.decays(name: "pos_embed", shape: [1, 50, 96]))
        #expect(!Optimizer.decays(name: "cls_token", shape: [1, 1, 96]))
    }

    /// Frozen, AdamW's variance stays at its bias-corrected value and an update is linear
    /// in the gradient: with β1 = 0, a gradient sent late (g1 + g2 at once, then nothing)
    /// moves the weights as far as g1 then g2 did; live, it moves them less (v sees the
    /// lump's square). That is why top-k with error feedback needs the frozen variance.
    @Test func aFrozenVarianceMakesLateGradientsMoveWeightsAsFar() {
        var c = OptimizerConfig()
        c.beta1 = 0; c.weightDecay = 0; c.lr = 0.01
        func run(frozen: Bool, _ grads: [[Float]]) -> [Float] {
            let o = Optimizer(config: c, layout: layout)
            let p = buffers([0, 0, 0, 0, 0, 0, 0, 0])
            // Warm-up: the same 5 dense gradients for both.
            // (Each gradient buffer is held by a name: a temporary's pointer outlives it.)
            for k in 0 ..< 5 {
                let g = buffers([1, -2, 0.5, 1, 2, -1, 0.3, 1].map { $0 * Float(k + 1) / 5 })
                withExtendedLifetime(g) { o.step(params: p.pointer, grads: g.pointer, lr: c.lr) }
            }
            let v = values(o.secondMoment!)
            if frozen {
                o.freezeVariance()
                let corrected = v.map { Double($0) / (1 - Foundation.pow(c.beta2, 5)) }
                for (a, b) in zip(values(o.secondMoment!), corrected) { #expect(abs(Double(a) - b) <= 1e-6 * b) }
            }
            let before = values(p)
            for values in grads {
                let g = buffers(values)
                withExtendedLifetime(g) { o.step(params: p.pointer, grads: g.pointer, lr: c.lr) }
            }
            if frozen { #expect(o.varianceFrozen) }
            return zip(values(p), before).map { $0 - $1 }
        }
        let g1: [Float] = [0.5, 1, -1, 2, 0.1, 0.2, -0.3, 1], g2: [Float] = [1, -0.5, 2, 1, 0.3, -0.1, 0.3, 0.5]
        let zero = [Float](repeating: 0, count: 8)
        let onTime = run(frozen: true, [g1, g2]), late = run(frozen: true, [zip(g1, g2).map(+), zero])
        for (a, b) in zip(onTime, late) { #expect(abs(a - b) <= 1e-5 * max(abs(a), 1e-3), "\(onTime) against \(late)") }
        let liveOnTime = run(frozen: false, [g1, g2]), liveLate = run(frozen: false, [zip(g1, g2).map(+), zero])
        let gap = zip(liveOnTime, liveLate).map { abs($0 - $1) }.max()!
        #expect(gap > 1e-4, "live variance: \(liveOnTime) against \(liveLate)")
        // SGD has nothing to freeze.
        var sgd = OptimizerConfig(); sgd.kind = .sgd
        let o = Optimizer(config: sgd, layout: layout)
        o.freezeVariance()
        #expect(!o.varianceFrozen)
    }

    /// The compression schedule: dense warm-up steps first (auto: one epoch when AdamW's
    /// variance freezes, none for SGD), then DGC's falling density, then the target.
    @Test func theCompressionScheduleWarmsUpDenseThenSparse() throws {
        var c = CommunicationConfig()
        #expect(c.densityWarmupEpochs == 1)
        c.densityWarmupEpochs = 0
        #expect(try c.schedule(optimizer: .adamw, stepsPerEpoch: 10).density(step: 0) == nil)
        c.gradientDensity = 0.01
        let adam = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10)
        #expect(adam.denseSteps == 10 && adam.freezeStep == 10)
        #expect((0 ..< 10).allSatisfy { adam.density(step: $0) == nil && !adam.freezesVariance(step: $0) })
        #expect(adam.density(step: 10) == 0.01 && adam.freezesVariance(step: 10))
        #expect(try c.schedule(optimizer: .adamw, stepsPerEpoch: 10, lrWarmupSteps: 25).freezeStep == 25)
        let sgd = try c.schedule(optimizer: .sgd, stepsPerEpoch: 10)
        #expect(sgd.denseSteps == 0 && sgd.freezeStep == nil && sgd.density(step: 0) == 0.01)
        c.denseWarmupEpochs = 0.5; c.densityWarmupEpochs = 1
        let dgc = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10)
        #expect(dgc.density(step: 4) == nil && abs(dgc.density(step: 5)! - 0.25) < 1e-12)
        #expect(dgc.density(step: 10)! < 0.25 && dgc.density(step: 10)! > 0.01 && dgc.density(step: 15) == 0.01)
        c.freezeVariance = .off
        #expect(try c.schedule(optimizer: .adamw, stepsPerEpoch: 10).freezeStep == nil)
    }

    /// A variance frozen before any dense step would be zero: auto leaves it live and says
    /// why, as it does for a dense warm-up that ends inside the learning rate's; `on`
    /// without a dense step is refused, naming the key.
    @Test func aVarianceIsNeverFrozenBeforeADenseStep() throws {
        var c = CommunicationConfig()
        c.gradientDensity = 0.01; c.densityWarmupEpochs = 0
        c.denseWarmupEpochs = 0
        let none = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10)
        #expect(none.freezeStep == nil && none.density(step: 0) == 0.01)
        #expect(none.notice?.contains("freeze at zero") == true)
        c.denseWarmupEpochs = 1
        let early = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10, lrWarmupSteps: 25)
        #expect(early.freezeStep == nil && early.denseSteps == 10 && early.notice?.contains("inside the learning rate's") == true)
        #expect(try c.schedule(optimizer: .adamw, stepsPerEpoch: 10, lrWarmupSteps: 10).notice == nil)
        c.freezeVariance = .on
        let asked = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10, lrWarmupSteps: 25)
        #expect(asked.freezeStep == 10 && asked.notice != nil)
        c.denseWarmupEpochs = 0
        #expect(throws: ConfigError.self) { try c.schedule(optimizer: .adamw, stepsPerEpoch: 10) }
        do { _ = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10) } catch let e as ConfigError {
            #expect(e.key == "communication.freeze_variance")
        }
        #expect(try c.schedule(optimizer: .sgd, stepsPerEpoch: 10).notice == nil)
    }

    /// The shared estimate (communication.feedback estimate): from the first compressed step
    /// the merged values are changes to AdamW's first moment (m ← m + g, exactly), the
    /// frozen update takes the new m; a live variance (freeze_variance off) or SGD has no
    /// first moment to stand in for, and the config is refused naming the key.
    @Test func theEstimateIsAdamWsFirstMomentUnderTheFrozenVariance() throws {
        var c = CommunicationConfig()
        c.gradientDensity = 0.01; c.feedback = .estimate
        let s = try c.schedule(optimizer: .adamw, stepsPerEpoch: 10)
        #expect(s.estimateStep == 10 && !s.estimates(step: 9) && s.estimates(step: 10) && s.freezesVariance(step: 10))
        // The log says so: "wire: top-k 1.0% ... from step 10 ..., the shared estimate ...".
        let line = try #require(s.summary(c))
        #expect(line.contains("1.0%") && line.contains("step 10") && line.contains("shared estimate") && line.contains("frozen at step 10"), "\(line)")
        var every = CommunicationConfig()
        every.gradientDensity = 1
        #expect(try every.schedule(optimizer: .adamw, stepsPerEpoch: 10).summary(every) == nil)
        for (kind, freeze, downlink) in [(OptimizerConfig.Kind.sgd, VarianceFreeze.auto, Downlink.auto), (.adamw, .off, .auto), (.adamw, .auto, .weights)] {
            c.freezeVariance = freeze; c.downlink = downlink
            c.feedback = .estimate
            do { _ = try c.schedule(optimizer: kind, stepsPerEpoch: 10); Issue.record("\(kind) \(freeze) \(downlink) accepted") } catch let e as ConfigError {
                #expect(e.key == "communication.feedback" && e.message.contains("residual"))
            }
            c.feedback = .residual
            #expect(try c.schedule(optimizer: kind, stepsPerEpoch: 10).estimateStep == nil)
        }
        var oc = OptimizerConfig()
        oc.weightDecay = 0; oc.lr = 0.01
        let o = Optimizer(config: oc, layout: layout)
        let p = buffers([0, 0, 0, 0, 0, 0, 0, 0])
        for k in 0 ..< 3 {
            let g = buffers([1, -2, 0.5, 1, 2, -1, 0.3, 1].map { $0 * Float(k + 1) })
            withExtendedLifetime(g) { o.step(params: p.pointer, grads: g.pointer, lr: oc.lr) }
        }
        o.freezeVariance()
        let m = values(o.firstMoment), v = values(o.secondMoment!), before = values(p)
        let change: [Float] = [0.25, 0, 0, -1, 0, 0, 0, 0.5]
        let g = buffers(change)
        withExtendedLifetime(g) { o.step(params: p.pointer, grads: g.pointer, lr: oc.lr, estimate: true) }
        let stepSize = Float(oc.lr / (1 - Foundation.pow(oc.beta1, 4)))
        // (Read through `values`: a buffer's pointer outlives the buffer's last use.)
        let after = values(p), moment = values(o.firstMoment)
        for i in 0 ..< 8 {
            #expect(moment[i] == m[i] + change[i])
            let expected = before[i] - stepSize * (m[i] + change[i]) / (v[i].squareRoot() + Float(oc.eps))
            #expect(after[i] == expected, "weight \(i)")
        }
        // Unfrozen, `estimate` is ignored: AdamW's own moving average.
        let live = Optimizer(config: oc, layout: layout)
        let q = buffers([0, 0, 0, 0, 0, 0, 0, 0])
        withExtendedLifetime(g) { live.step(params: q.pointer, grads: g.pointer, lr: oc.lr, estimate: true) }
        #expect(values(live.firstMoment) == change.map { (1 - Float(oc.beta1)) * $0 })
    }

    /// The sixteen-lane AdamW is bit-identical to the scalar loop it replaced (replicas and
    /// resumed runs depend on it), live and frozen, on tensors with and without a tail,
    /// decayed and not.
    @Test func simdAdamWIsBitIdenticalToTheScalarLoop() {
        let shapes: [(String, [Int])] = [("blocks.0.mlp.fc1.weight", [8, 5]), ("blocks.0.mlp.fc1.bias", [37]), ("head.weight", [4, 16])]
        let layout = ParameterLayout(tensors: shapes)
        var c = OptimizerConfig()
        c.weightDecay = 0.05
        let o = Optimizer(config: c, layout: layout)
        var rng = Xoshiro256(seed: 3)
        let n = layout.count
        let p = FloatBuffer(count: n)
        for i in 0 ..< n { p.pointer[i] = rng.nextNormal() }
        var rp = (0 ..< n).map { p.pointer[$0] }, rm = [Float](repeating: 0, count: n), rv = rm
        for step in 1 ... 12 {
            if step == 8 {
                o.freezeVariance()
                let bc = Float(1 / (1 - Foundation.pow(c.beta2, 7)))
                for i in 0 ..< n { rv[i] = rv[i] * bc }
            }
            let g = FloatBuffer(count: n)
            for i in 0 ..< n { g.pointer[i] = rng.nextNormal() * 0.1 }
            let lr = 1e-3 * Double(step)
            o.step(params: p.pointer, grads: g.pointer, lr: lr)
            // The scalar reference, in the order torch writes it.
            let t = Double(step)
            let b1 = Float(c.beta1), b2 = Float(c.beta2), eps = Float(c.eps)
            let stepSize = Float(lr / (1 - Foundation.pow(c.beta1, t)))
            let invSqrtBC2 = Float(1 / (1 - Foundation.pow(c.beta2, t)).squareRoot())
            for spec in layout.tensors {
                let keep: Float = Optimizer.decays(name: spec.name, shape: spec.shape) ? Float(1 - lr * c.weightDecay) : 1
                for i in spec.offset ..< spec.offset + spec.count {
                    let gi = g.pointer[i]
                    let mi = b1 * rm[i] + (1 - b1) * gi
                    rm[i] = mi
                    let denom: Float
                    if step >= 8 {
                        denom = rv[i].squareRoot() + eps
                    } else {
                        let vi = b2 * rv[i] + (1 - b2) * gi * gi
                        rv[i] = vi
                        denom = vi.squareRoot() * invSqrtBC2 + eps
                    }
                    rp[i] = rp[i] * keep - stepSize * mi / denom
                }
            }
            #expect((0 ..< n).allSatisfy { p.pointer[$0].bitPattern == rp[$0].bitPattern }, "step \(step)")
            #expect((0 ..< n).allSatisfy { o.firstMoment.pointer[$0].bitPattern == rm[$0].bitPattern && o.secondMoment!.pointer[$0].bitPattern == rv[$0].bitPattern }, "step \(step)")
        }
    }

    /// Two AdamW steps computed by hand in Double (torch's formulas).
    @Test func adamWMatchesHandComputedSteps() {
        var c = OptimizerConfig()
        c.lr = 0.1; c.weightDecay = 0.5; c.beta1 = 0.9; c.beta2 = 0.99; c.eps = 1e-8
        let p0: [Double] = [0.5, -1, 2, 0.25, 0.1, -0.2, 0.3, 0.4]
        let gs: [[Double]] = [[0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8], [-0.05, 0.1, 0.3, 0, 1, 2, -1, 0.5]]
        let decay = [true, true, true, true, false, false, false, false]
        let params = buffers(p0.map(Float.init))
        let opt = Optimizer(config: c, layout: layout)
        var p = p0, m = [Double](repeating: 0, count: 8), v = m
        for (t, g) in gs.enumerated() {
            let grads = buffers(g.map(Float.init))
            opt.step(params: params.pointer, grads: grads.pointer, lr: c.lr)
            let step = Double(t + 1)
            for i in 0 ..< 8 {
                if decay[i] { p[i] *= 1 - c.lr * c.weightDecay }
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i]
                let denom = (v[i] / (1 - pow(0.99, step))).squareRoot() + 1e-8
                p[i] -= c.lr / (1 - pow(0.9, step)) * m[i] / denom
            }
        }
        let got = values(params)
        for i in 0 ..< 8 { #expect(abs(Double(got[i]) - p[i]) < 2e-6, "param \(i): \(got[i]) vs \(p[i])") }
        #expect(opt.updates == 2)
        // The gap floats between tensors stay untouched.
        #expect(params.count > 8)
    }

    @Test(arguments: [false, true])
    func sgdMatchesHandComputedSteps(nesterov: Bool) {
        var c = OptimizerConfig()
        c.kind = .sgd; c.lr = 0.1; c.weightDecay = 0.01; c.momentum = 0.9; c.nesterov = nesterov
        let p0: [Double] = [0.5, -1, 2, 0.25, 0.1, -0.2, 0.3, 0.4]
        let g: [Double] = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8]
        let decay = [true, true, true, true, false, false, false, false]
        let params = buffers(p0.map(Float.init)), grads = buffers(g.map(Float.init))
        let opt = Optimizer(config: c, layout: layout)
        var p = p0, b = [Double](repeating: 0, count: 8)
        for _ in 0 ..< 3 {
            opt.step(params: params.pointer, grads: grads.pointer, lr: c.lr)
            for i in 0 ..< 8 {
                var d = g[i] + (decay[i] ? 0.01 * p[i] : 0)
                b[i] = 0.9 * b[i] + d
                d = nesterov ? d + 0.9 * b[i] : b[i]
                p[i] -= 0.1 * d
            }
        }
        let got = values(params)
        for i in 0 ..< 8 { #expect(abs(Double(got[i]) - p[i]) < 2e-6, "param \(i)") }
    }

    @Test func warmupThenCosine() {
        let s = LRSchedule(base: 1e-3, totalSteps: 101, warmupSteps: 10, warmupLR: 1e-6, minLR: 1e-5)
        #expect(abs(s.lr(step: 0) - 1e-6) < 1e-15)
        #expect(abs(s.lr(step: 5) - (1e-6 + (1e-3 - 1e-6) * 0.5)) < 1e-15)
        #expect(abs(s.lr(step: 10) - 1e-3) < 1e-15)
        // Halfway through the cosine part (steps 10 ... 100): (base + min) / 2.
        #expect(abs(s.lr(step: 55) - (1e-3 + 1e-5) / 2) < 1e-12)
        #expect(abs(s.lr(step: 100) - 1e-5) < 1e-15)
        for k in 10 ..< 100 { #expect(s.lr(step: k + 1) <= s.lr(step: k)) }
        let steps = LRSchedule(ScheduleConfig(), base: 1e-3, totalSteps: 700, stepsPerEpoch: 100)
        #expect(steps.warmupSteps == 100)
        var constant = ScheduleConfig(); constant.kind = .constant; constant.warmupSteps = 0
        #expect(LRSchedule(constant, base: 0.1, totalSteps: 10, stepsPerEpoch: 5).lr(step: 9) == 0.1)
    }

    @Test func clippingScalesToTheMaximumNorm() {
        var g: [Float] = (0 ..< 1000).map { Float($0 % 7) - 3 }
        let want = g.reduce(0.0) { $0 + Double($1 * $1) }.squareRoot()
        #expect(abs(GradientClipping.norm(&g, count: 1000) - want) < 1e-9 * want)
        let before = GradientClipping.clip(&g, count: 1000, maxNorm: 10)
        #expect(abs(before - want) < 1e-6)
        #expect(abs(GradientClipping.norm(&g, count: 1000) - 10) < 1e-4)
        let small = GradientClipping.clip(&g, count: 1000, maxNorm: 100)
        #expect(abs(small - 10) < 1e-4 && abs(GradientClipping.norm(&g, count: 1000) - 10) < 1e-4)
    }

    @Test func averagingIsWeightedByBatchSize() {
        let avg = GradientAverager(count: 3)
        let a: [Float] = [1, 2, 3], b: [Float] = [4, 5, 6]
        avg.add(a, batch: 1)
        avg.add(b, batch: 3)
        avg.finish()
        let want: [Float] = [3.25, 4.25, 5.25]  // (1·1 + 4·3)/4, (2·1 + 5·3)/4, (3·1 + 6·3)/4
        #expect(avg.sum.array == want)
    }
}
