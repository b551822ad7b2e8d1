import Core
import Kernels
import Model
import Testing
@testable import Sparsity

/// Each method behind the one interface: when it changes the topology, what it asks of
/// the workers for that, and what its update then removes.
@Suite("sparsity methods")
struct SparsityMethodTests {
    let model = ViTModel(config: ViTConfig.presets["fmnist-tiny"]!)

    func config(_ method: SparsityConfig.Method, _ edit: (inout SparsityConfig) -> Void = { _ in }) -> SparsityConfig {
        var c = SparsityConfig()
        c.method = method
        c.updateInterval = 10
        edit(&c)
        return c
    }

    /// The plans of every step of a 100-step run, by step.
    func plans(_ c: SparsityConfig, seed: UInt64 = 3) -> (MaskSet?, [Int: SparsityPlan]) {
        let method = c.makeMethod()
        guard let masks = method.initialMasks(model: model, seed: seed) else { return (nil, [:]) }
        var out: [Int: SparsityPlan] = [:]
        for step in 0 ..< 100 {
            let p = method.plan(step: step, total: 100, masks: masks, topologySeed: seed)
            if p != .idle { out[step] = p }
        }
        return (masks, out)
    }

    @Test func denseHasNoMasksAndAsksNothing() {
        let (masks, plans) = plans(config(.dense))
        #expect(masks == nil && plans.isEmpty)
    }

    /// SViTE updates after steps 10, 20, … up to 80% of the run, asking each worker for
    /// c·k grow candidates per layer with k the layer's exchange count.
    @Test func sviteAsksForGrowCandidatesAtItsUpdates() throws {
        let c = config(.svite) { $0.candidateMultiplier = 3; $0.sparsity = 0.6 }
        let (m, plans) = plans(c)
        let masks = try #require(m)
        #expect(abs(masks.density - 0.4) < 1e-3)
        #expect(plans.keys.sorted() == [9, 19, 29, 39, 49, 59, 69])  // updates at 1-based steps 10 … 70 (< 0.8·100)
        let p = try #require(plans[9])
        let f = try #require(p.fraction)
        #expect(abs(f - c.schedule.fraction(step: 10, total: 100)!) < 1e-15 && p.usesGradient)
        guard case let .growCandidates(multiplier, perLayer) = p.request else { Issue.record("\(p.request)"); return }
        #expect(multiplier == 3 && perLayer.count == masks.prunable.count)
        for (t, k) in zip(masks.prunable, perLayer) {
            let a = masks.activeCount(t)
            #expect(k == PruneAndGrow.exchangeCount(active: a, inactive: t.count - a, fraction: f) && k > 0)
        }
    }

    /// OMP and TP prune once at prune_at, GMP at each of its events; none asks the
    /// workers for anything beyond the gradient. OMP removes the smallest |w|, TP the
    /// smallest |w·g|.
    @Test func baselinesPruneOnTheirScheduleByTheirScore() throws {
        let (omp, ompPlans) = plans(config(.omp) { $0.pruneAt = 0.5; $0.sparsity = 0.5 })
        #expect(omp!.density == 1 && ompPlans.count == 1 && ompPlans[49] == SparsityPlan(event: .prune(density: 0.5), usesGradient: true))
        let (_, gmpPlans) = plans(config(.gmp) { $0.gmpEvents = 4; $0.gmpStart = 0.2; $0.gmpEnd = 0.6 })
        #expect(gmpPlans.count == 4 && gmpPlans.values.allSatisfy { $0.request == .none })

        // One layer's weights and gradient chosen so |w| and |w·g| disagree.
        let layout = ParameterLayout(tensors: [("blocks.0.mlp.fc1.weight", [2, 2])])
        let tiny = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        func pruned(_ method: SparsityConfig.Method) -> [Int] {
            let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
            let w = FloatBuffer(count: 4), g = FloatBuffer(count: 4)
            for (i, v) in [Float(0.1), 2, 3, 4].enumerated() { w[i] = v }
            for (i, v) in [Float(100), 0.01, 1, 1].enumerated() { g[i] = v }
            let m = config(method) { $0.sparsity = 0.5 }.makeMethod()
            let changes = m.update(SparsityPlan(event: .prune(density: 0.5), usesGradient: true), masks: masks, model: model, params: w,
                                   moments: [], evidence: StepEvidence(gradient: g))
            return changes?.first?.pruned ?? [-1]
        }
        #expect(tiny.totalPrunable == 4)
        #expect(pruned(.omp) == [0, 1])  // |w| = 0.1, 2 are the smallest
        #expect(pruned(.tp) == [1, 2])   // |w·g| = 10, 0.02, 3, 4
        // Without the gradient the update cannot score: the topology stays.
        let m = config(.tp).makeMethod()
        #expect(m.update(SparsityPlan(event: .prune(density: 0.5)), masks: tiny, model: model, params: FloatBuffer(count: 4), moments: [],
                         evidence: StepEvidence()) == nil)
    }

    /// S2ViTE and SSP ask for unit scores, with the candidate-weight seed of the step,
    /// on their schedules; an update without scores leaves the topology.
    @Test func structuredMethodsAskForUnitScoresWithTheStepSeed() throws {
        let (m, s2) = plans(config(.s2vite) { $0.sparsity = 0.5 }, seed: 11)
        let masks = try #require(m)
        #expect(masks.isStructured && s2.keys.sorted() == [9, 19, 29, 39, 49, 59, 69])
        for (step, p) in s2 {
            #expect(p.request == .unitScores(seed: unitCandidateSeed(topologySeed: 11, step: step)) && !p.usesGradient && p.fraction != nil)
        }
        #expect(Set(s2.values.map(\.request)).count == s2.count, "every update draws its own candidates")
        let before = masks.mask.array
        let method = config(.s2vite).makeMethod()
        #expect(method.update(s2[9]!, masks: masks, model: model, params: FloatBuffer(count: model.layout.count), moments: [],
                              evidence: StepEvidence()) == nil)
        #expect(masks.mask.array == before)

        let (ssp, sspPlans) = plans(config(.ssp) { $0.pruneAt = 0.3 }, seed: 11)
        #expect(ssp!.density == 1 && sspPlans.keys.sorted() == [29])
        #expect(sspPlans[29]?.request == .unitScores(seed: unitCandidateSeed(topologySeed: 11, step: 29)))
        #expect(sspPlans[29]?.event == .prune(density: 0.5))
    }

    /// A worker's reply is what the request asked for: the top c·k inactive gradients per
    /// layer, largest |g| first by choice and sorted by index, or the unit scores.
    @Test func repliesAnswerTheRequest() throws {
        let layout = ParameterLayout(tensors: [("blocks.0.attn.qkv.weight", [2, 3]), ("blocks.0.mlp.fc1.weight", [2, 2])])
        let masks = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout))
        // Offsets are aligned, so each tensor is addressed through its own offset.
        let qkv = layout.offset("blocks.0.attn.qkv.weight"), fc1 = layout.offset("blocks.0.mlp.fc1.weight")
        for i in [qkv + 0, qkv + 4, fc1 + 0] { masks.mask[i] = 0 }  // inactive: qkv 0 and 4, fc1 0
        let g = FloatBuffer(count: layout.count)
        for (i, v) in [Float(-3), 9, 9, 9, 0.5, 9].enumerated() { g[qkv + i] = v }
        for (i, v) in [Float(2), 9, 9, 9].enumerated() { g[fc1 + i] = v }
        let reply = StepReply.make(.growCandidates(multiplier: 1, perLayer: [1, 5]), gradient: g.pointer, masks: masks, unitScores: nil)
        #expect(reply == .growCandidates([GrowCandidates(indices: [0], values: [-3]), GrowCandidates(indices: [0], values: [2])]))
        #expect(StepReply.make(.none, gradient: g.pointer, masks: masks, unitScores: nil) == .none)
        var scores = UnitScores(config: model.config)
        scores.headGrow[2] = 7
        #expect(StepReply.make(.unitScores(seed: 1), gradient: g.pointer, masks: nil, unitScores: scores) == .unitScores(scores.flat))
    }
}
