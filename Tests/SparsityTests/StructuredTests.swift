import Core
import Kernels
import Model
import Testing
@testable import Sparsity

/// 3 heads of 4, MLP 24, two blocks, 5 tokens: small enough for finite differences.
private let config = ViTConfig(imageSize: 6, patchSize: 3, inChannels: 2, numClasses: 5, dim: 12, depth: 2, heads: 3, mlpRatio: 2)

private func randomParams(_ model: ViTModel, seed: UInt64) -> FloatBuffer {
    var rng = Xoshiro256(seed: seed)
    let p = FloatBuffer(count: model.layout.count)
    for t in model.layout.tensors {
        let isNorm = t.name.contains("norm") && t.name.hasSuffix("weight")
        for i in 0 ..< t.count {
            let z = rng.nextNormal()
            p.pointer[t.offset + i] = isNorm ? 1 + 0.2 * z : (t.name.hasSuffix("bias") ? 0.1 * z : 0.3 * z)
        }
    }
    return p
}

private struct Batch {
    var images: [Float], labels: [Int32]
    init(_ n: Int, seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        images = (0 ..< n * config.imageValues).map { _ in rng.nextNormal() }
        labels = (0 ..< n).map { _ in Int32(rng.next() % 5) }
    }
}

private func structured(_ method: SparsityConfig.Method, heads: Double, mlp: Double) -> SparsityConfig {
    var c = SparsityConfig()
    c.method = method
    c.headDensity = heads
    c.mlpDensity = mlp
    return c
}

@Suite("S2ViTE units and structured updates")
struct StructuredTests {
    let model = ViTModel(config: config)

    @Test func budgetsRoundUpAndEveryBlockKeepsThem() {
        #expect(UnitSelection.budget(density: 0.6, of: 3) == 2)
        #expect(UnitSelection.budget(density: 0.5, of: 384) == 192)
        #expect(UnitSelection.budget(density: 0.01, of: 3) == 1)
        #expect(UnitSelection.budget(density: 1, of: 3) == 3)
        let s = UnitSelection.random(config: config, headDensity: 0.6, mlpDensity: 0.4, seed: 3)
        #expect(s.heads.allSatisfy { $0.filter { $0 }.count == 2 } && s.neurons.allSatisfy { $0.filter { $0 }.count == 10 })
        #expect(s != UnitSelection.random(config: config, headDensity: 0.6, mlpDensity: 0.4, seed: 4))
    }

    @Test func theMaskHoldsExactlyTheUnitsElements() {
        let c = structured(.s2vite, heads: 0.6, mlp: 0.5)
        let masks = MaskSet.initial(c, model: model, seed: 9)!
        #expect(masks.isStructured && masks.version == 1)
        let s = UnitSelection(masks: masks, model: model)
        #expect(s.headCount == 4 && s.neuronCount == 24)
        // Active elements: per block 2 heads × (3·4 rows of 12 + 12 biases + 12·4 proj) and
        // 12 neurons × (12 + 1 + 12).
        #expect(masks.activePrunable == 2 * (2 * (3 * 4 * 12 + 12 + 48) + 12 * 25))
        // Writing it back is the identity; the compact plan keeps the same parameters.
        let copy = MaskSet(for: c, layout: model.layout)
        s.write(to: copy, model: model)
        #expect(copy.mask.array == masks.mask.array)
        let report = SparsityReport(masks: masks, model: model)
        #expect(report.heads == 4 && report.neurons == 24)
        #expect(report.activeParameters == s.plan(full: model).compact.layout.parameterCount)
        #expect(report.sparseFLOPs == s.plan(full: model).compact.forwardFLOPsPerImage && report.flopsSaving > 0.3)
    }

    /// Σ A·∂L/∂A is the derivative of the loss in a scale on the head's output: scaling the
    /// head's attn.proj columns by s scales its contribution, so compare with
    /// (L(1+ε) − L(1−ε)) / 2ε for every head.
    @Test func headTaylorScoreMatchesFiniteDifferences() {
        let params = randomParams(model, seed: 1)
        let batch = Batch(4, seed: 2)
        let ws = ViTWorkspace(model: model, batch: 4, threads: 1)
        let grads = FloatBuffer(count: model.layout.count)
        var saliency = [Float](repeating: 0, count: config.depth * config.heads)
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                saliency.withUnsafeMutableBufferPointer { s in
                    _ = model.forwardBackward(params: params.pointer, grads: grads.pointer, images: img.baseAddress!, labels: lab.baseAddress!,
                                              smoothing: 0.1, workspace: ws, headSaliency: s.baseAddress!)
                }
                for l in 0 ..< config.depth {
                    for h in 0 ..< config.heads {
                        let proj = model.offsets.blocks[l].projWeight
                        func loss(_ scale: Float) -> Double {
                            let p = FloatBuffer(count: params.count)
                            p.pointer.update(from: params.pointer, count: params.count)
                            for r in 0 ..< config.dim { for i in 0 ..< config.headDim { p.pointer[proj + r * config.dim + h * config.headDim + i] *= scale } }
                            return model.forward(params: p.pointer, images: img.baseAddress!, labels: lab.baseAddress!, smoothing: 0.1, workspace: ws).meanLoss
                        }
                        let eps: Float = 1e-2
                        let numeric = (loss(1 + eps) - loss(1 - eps)) / Double(2 * eps)
                        let analytic = Double(saliency[l * config.heads + h])
                        #expect(abs(numeric - analytic) <= 2e-4 + 2e-2 * abs(numeric), "block \(l) head \(h): \(analytic) vs \(numeric)")
                    }
                }
            }
        }
        #expect(saliency.contains { $0 != 0 })
    }

    /// An inactive unit scored with its candidate weights: it changes nothing in the
    /// output, and its grow score is Σ|∂L/∂θ| over its parameters, checked element by
    /// element against central differences (only the outgoing weights carry gradient).
    @Test func growScoresOfCandidateUnitsMatchFiniteDifferences() {
        let params = randomParams(model, seed: 5)
        var selection = UnitSelection(config: config)
        selection.heads[1][1] = false
        selection.neurons[0][7] = false
        // The pruned units are zero in the parameters the server holds.
        let masks = MaskSet(for: structured(.s2vite, heads: 1, mlp: 1), layout: model.layout)
        selection.write(to: masks, model: model)
        masks.apply(to: params)
        let batch = Batch(3, seed: 6)
        let ws = ViTWorkspace(model: model, batch: 3, threads: 1)
        let candidates = FloatBuffer(count: params.count)
        candidates.pointer.update(from: params.pointer, count: params.count)
        UnitCandidates.writeInactive(selection, model: model, seed: 77, into: candidates.pointer)
        let grads = FloatBuffer(count: params.count)
        batch.images.withUnsafeBufferPointer { img in
            batch.labels.withUnsafeBufferPointer { lab in
                func loss(_ p: UnsafePointer<Float>) -> Double {
                    model.forward(params: p, images: img.baseAddress!, labels: lab.baseAddress!, smoothing: 0, workspace: ws).meanLoss
                }
                // Candidates add exactly nothing.
                #expect(loss(params.pointer) == loss(candidates.pointer))
                model.forwardBackward(params: candidates.pointer, grads: grads.pointer, images: img.baseAddress!, labels: lab.baseAddress!,
                                      smoothing: 0, workspace: ws)
                var scores = UnitScores(config: config)
                scores.setGrowScores(gradient: grads.pointer, model: model)
                func numericL1(_ visit: ((Int, Int, UnitElements.Part) -> Void) -> Void) -> Double {
                    var sum = 0.0
                    visit { o, n, _ in
                        for i in o ..< o + n {
                            let h: Float = 1e-2
                            let keep = candidates.pointer[i]
                            candidates.pointer[i] = keep + h; let up = loss(candidates.pointer)
                            candidates.pointer[i] = keep - h; let down = loss(candidates.pointer)
                            candidates.pointer[i] = keep
                            sum += abs(up - down) / Double(2 * h)
                        }
                    }
                    return sum
                }
                let head = numericL1 { UnitElements.head(1, block: 1, model: model, $0) }
                let neuron = numericL1 { UnitElements.neuron(7, block: 0, model: model, $0) }
                let gh = Double(scores.headGrow[1 * config.heads + 1]), gn = Double(scores.neuronGrow[7])
                #expect(gh > 0 && abs(gh - head) <= 1e-3 + 3e-2 * head, "head grow score \(gh) vs \(head)")
                #expect(gn > 0 && abs(gn - neuron) <= 1e-3 + 3e-2 * neuron, "neuron grow score \(gn) vs \(neuron)")
            }
        }
    }

    /// One update: every block keeps its counts; the pruned are the lowest-scoring active
    /// units, the grown the highest-scoring inactive ones; pruned units are zero with zero
    /// moments; grown units hold their candidate weights with zero moments.
    @Test func updateSwapsTheRightUnits() {
        let c = structured(.s2vite, heads: 0.34, mlp: 0.5)  // 2 of 3 heads
        let masks = MaskSet.initial(c, model: model, seed: 21)!
        let params = randomParams(model, seed: 22)
        masks.apply(to: params)
        let moments = [FloatBuffer(count: params.count), FloatBuffer(count: params.count)]
        for b in moments { for i in 0 ..< b.count { b.pointer[i] = 0.5 } }
        var scores = UnitScores(config: config)
        var rng = Xoshiro256(seed: 23)
        for i in scores.headTaylor.indices { scores.headTaylor[i] = rng.nextNormal(); scores.headGrow[i] = abs(rng.nextNormal()) }
        for i in scores.neuronGrow.indices { scores.neuronGrow[i] = abs(rng.nextNormal()) }
        let before = UnitSelection(masks: masks, model: model)
        let magnitude = { (l: Int, j: Int) in StructuredPruneAndGrow.neuronMagnitude(params.pointer, neuron: j, block: l, model: model) }
        let oldMagnitudes = (0 ..< 2).map { l in (0 ..< 24).map { magnitude(l, $0) } }
        let changes = StructuredPruneAndGrow.update(masks: masks, model: model, params: params, scores: scores, fraction: 0.5,
                                                    candidateSeed: 99, moments: moments, rule: .ceil)
        let after = UnitSelection(masks: masks, model: model)
        #expect(masks.version == 2)
        for l in 0 ..< 2 {
            #expect(after.heads[l].filter { $0 }.count == 2 && after.neurons[l].filter { $0 }.count == 12)
            // Heads: k = min(⌈0.5·2⌉, 1 inactive) = 1 swapped.
            let offH = (0 ..< 3).filter { before.heads[l][$0] && !after.heads[l][$0] }
            let onH = (0 ..< 3).filter { !before.heads[l][$0] && after.heads[l][$0] }
            #expect(offH.count == 1 && onH.count == 1)
            let activeBefore = (0 ..< 3).filter { before.heads[l][$0] }
            #expect(offH[0] == activeBefore.min { abs(scores.headTaylor[l * 3 + $0]) < abs(scores.headTaylor[l * 3 + $1]) })
            // Neurons: k = 6 of 12; dropped the smallest weight norms, grew the largest scores.
            let offN = (0 ..< 24).filter { before.neurons[l][$0] && !after.neurons[l][$0] }
            let onN = (0 ..< 24).filter { !before.neurons[l][$0] && after.neurons[l][$0] }
            #expect(offN.count == 6 && onN.count == 6)
            let keptOld = (0 ..< 24).filter { before.neurons[l][$0] && after.neurons[l][$0] }
            #expect(offN.map { oldMagnitudes[l][$0] }.max()! <= keptOld.map { oldMagnitudes[l][$0] }.min()!)
            let stayedOff = (0 ..< 24).filter { !before.neurons[l][$0] && !after.neurons[l][$0] }
            #expect(onN.map { scores.neuronGrow[l * 24 + $0] }.min()! >= stayedOff.map { scores.neuronGrow[l * 24 + $0] }.max()!)
            for j in offN {
                UnitElements.neuron(j, block: l, model: model) { o, n, _ in
                    for i in o ..< o + n { #expect(params[i] == 0 && moments[0][i] == 0 && moments[1][i] == 0) }
                }
            }
            let expected = FloatBuffer(count: params.count)
            for j in onN {
                UnitCandidates.writeNeuron(j, block: l, model: model, seed: 99, into: expected.pointer)
                UnitElements.neuron(j, block: l, model: model) { o, n, part in
                    for i in o ..< o + n {
                        #expect(params[i] == expected[i] && moments[0][i] == 0)
                        if part == .outgoing { #expect(params[i] == 0) } else if part == .incomingWeight { #expect(params[i] != 0) }
                    }
                }
            }
        }
        // The change lists are exactly the mask's differences.
        let total = changes.reduce(0) { $0 + $1.pruned.count + $1.grown.count }
        #expect(total == 2 * 2 * (3 * 4 * 12 + 12 + 48) + 2 * 12 * 25)
    }

    @Test func sspKeepsTheBudgetByScore() {
        let c = structured(.ssp, heads: 0.34, mlp: 0.25)
        let masks = MaskSet.initial(c, model: model, seed: 1)!
        #expect(masks.density == 1)
        let params = randomParams(model, seed: 2)
        var scores = UnitScores(config: config)
        scores.headTaylor = [0.3, -0.1, 0.2, -5, 0.01, 1]
        StructuredPruneAndGrow.prune(masks: masks, model: model, params: params, scores: scores,
                                     headDensity: c.keptHeadFraction, mlpDensity: c.keptNeuronFraction, moments: [])
        let s = UnitSelection(masks: masks, model: model)
        #expect(s.heads == [[true, false, true], [true, false, true]])
        #expect(s.neurons.allSatisfy { $0.filter { $0 }.count == 6 })
    }

    /// ⌊ζ·k⌋ lets a block of few heads settle once ζ is small; ⌈ζ·k⌉ (the paper's) swaps
    /// one of two kept heads at every update while ζ > 0. Both are capped by the inactive units.
    @Test func unitExchangeCounts() {
        #expect(UnitExchange.ceil.count(kept: 2, inactive: 1, fraction: 0.01) == 1)
        #expect(UnitExchange.floor.count(kept: 2, inactive: 1, fraction: 0.49) == 0)
        #expect(UnitExchange.floor.count(kept: 4, inactive: 2, fraction: 0.3) == 1)
        #expect(UnitExchange.floor.count(kept: 4, inactive: 2, fraction: 0.2) == 0)
        #expect(UnitExchange.ceil.count(kept: 4, inactive: 2, fraction: 0.2) == 1)
        #expect(UnitExchange.floor.count(kept: 4, inactive: 1, fraction: 0.5) == 1)
        #expect(UnitExchange.floor.count(kept: 300, inactive: 200, fraction: 0.1) == 30)
    }
}
