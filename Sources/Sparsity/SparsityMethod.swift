import Core
import Kernels
import Model

// One step's sparsity, in the order it happens:
//
//   coordinator: plan = method.plan(step)            what the update after this step does
//                plan.request ──────────────────────▶ worker (StepRequest on the wire)
//   worker:      StepReply.make(request, gradient, …) what it computes besides the gradient
//                reply ◀──────────────────────────── (grow candidates or unit scores)
//   coordinator: merged replies → StepEvidence
//                optimizer step, then method.update(plan, evidence) → the mask changes
//
// The worker and the transport know only the three generic request kinds below; what a
// method asks for, when, and what it does with the answers lives in its type here, so a
// new method touches this module and nothing else.

/// What a step asks of the workers besides the gradient of the active weights.
public enum StepRequest: Sendable, Hashable {
    /// The gradient only.
    case none
    /// Per prunable layer, the `multiplier`·k inactive weights with the largest |gradient|
    /// (k = `perLayer[layer]`, the number of weights that layer will grow).
    case growCandidates(multiplier: Int, perLayer: [Int])
    /// Per head and MLP neuron, the Taylor and grow scores (UnitScores), with every
    /// inactive unit given its candidate weights drawn from `seed`.
    case unitScores(seed: UInt64)

    /// The gradient must cover the inactive weights too: the update ranks them by it (a
    /// sparse layer's weight gradient is otherwise computed at its active weights only).
    public var needsInactiveGradient: Bool {
        if case .growCandidates = self { return true }
        return false
    }

    /// The candidate-weight seed of a unit-score request.
    public var unitScoreSeed: UInt64? {
        if case let .unitScores(seed) = self { return seed }
        return nil
    }
}

/// A worker's answer to a request, beside its gradient.
public enum StepReply: Sendable, Equatable {
    case none
    case growCandidates([GrowCandidates])
    case unitScores([Float])

    /// What a worker sends for `request`, from the gradient of its share (full layout)
    /// and, for a unit-score request, the scores its replica computed.
    public static func make(_ request: StepRequest, gradient: UnsafePointer<Float>, masks: MaskSet?, unitScores: UnitScores?) -> StepReply {
        switch request {
        case .none:
            return .none
        case let .growCandidates(multiplier, perLayer):
            guard let masks else { return .none }
            return .growCandidates(GrowCandidates.top(masks: masks, gradient: gradient, multiplier: multiplier, perLayer: perLayer))
        case .unitScores:
            return .unitScores(unitScores?.flat ?? [])
        }
    }
}

/// One layer's grow candidates: sorted indices into the layer and their gradient values.
public struct GrowCandidates: Sendable, Equatable {
    public var indices: [UInt32]
    public var values: [Float]
    public init(indices: [UInt32], values: [Float]) { self.indices = indices; self.values = values }

    /// Per prunable layer, the multiplier·k inactive weights with the largest |gradient|
    /// (ties by index), sorted by index; layers beyond `perLayer` ask for none.
    public static func top(masks m: MaskSet, gradient g: UnsafePointer<Float>, multiplier: Int, perLayer: [Int]) -> [GrowCandidates] {
        m.prunable.enumerated().map { l, t in
            let k = l < perLayer.count ? perLayer[l] : 0
            let gp = g + t.offset, mp = m.mask.pointer + t.offset
            let want = min(k * multiplier, t.count)
            let inactive = (0 ..< t.count).filter { mp[$0] == 0 }
            let top = inactive.sorted { a, b in
                let x = abs(gp[a]), y = abs(gp[b])
                return x != y ? x > y : a < b
            }.prefix(want).sorted()
            return GrowCandidates(indices: top.map { UInt32($0) }, values: top.map { gp[$0] })
        }
    }
}

/// The topology change a method makes after a step's optimizer update.
public enum TopologyEvent: Sendable, Equatable {
    /// Drop and regrow this fraction (SViTE's ζ; S2ViTE's, per block, of the kept units).
    case pruneAndGrow(fraction: Double)
    /// Prune to this density (the baselines), nothing grows.
    case prune(density: Double)
}

/// What the update after one step does, decided by the coordinator before the step.
public struct SparsityPlan: Sendable, Equatable {
    public var event: TopologyEvent?
    public var request: StepRequest
    /// The update scores weights by the step's mean gradient (before masking and
    /// clipping), or by the workers' merged grow candidates where they sent them.
    public var usesGradient: Bool

    public init(event: TopologyEvent?, request: StepRequest = .none, usesGradient: Bool = false) {
        self.event = event; self.request = request; self.usesGradient = usesGradient
    }

    /// No topology change and nothing asked of the workers.
    public static let idle = SparsityPlan(event: nil)

    /// The prune-and-grow fraction, if the plan is a prune-and-grow.
    public var fraction: Double? {
        if case let .pruneAndGrow(f) = event { return f }
        return nil
    }
}

/// The workers' replies to a step's request, merged (`ReplyMerger.finish`), or what the
/// replica in this process gives: a new kind of request adds its merged form here.
public struct MergedReplies {
    /// The grow candidates' values at their places, zero elsewhere (full layout; nil: none).
    public var growScore: UnsafeMutablePointer<Float>?
    /// Means over the step's images.
    public var unitScores: UnitScores?
    public init(growScore: UnsafeMutablePointer<Float>? = nil, unitScores: UnitScores? = nil) {
        self.growScore = growScore; self.unitScores = unitScores
    }
}

/// What an update has to go on: the step's gradient scores and unit scores, as the plan
/// asked for them.
public struct StepEvidence {
    /// The mean gradient before masking (one process) or the merged grow candidates
    /// (zero elsewhere), full layout; nil when the plan did not use it.
    public var gradient: FloatBuffer?
    /// Means over the step's images; nil when the workers could not give them.
    public var unitScores: UnitScores?

    public init(gradient: FloatBuffer? = nil, unitScores: UnitScores? = nil) {
        self.gradient = gradient; self.unitScores = unitScores
    }

    /// The evidence of a step's merged replies; `gradient` is the score kept for the plan.
    public init(gradient: FloatBuffer?, replies: MergedReplies) {
        self.init(gradient: gradient, unitScores: replies.unitScores)
    }
}

/// A sparsity method: its starting topology, what each step asks of the workers, and its
/// topology update. The coordinator holds one (`SparsityConfig.makeMethod()`); nothing
/// outside this module branches on the method.
public protocol SparsityMethod: Sendable {
    var config: SparsityConfig { get }
    /// The starting mask (nil: dense, no masks at all).
    func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet?
    /// The plan of the update that ends 0-based step `step` of `total`; `topologySeed`
    /// seeds anything the plan draws (S2ViTE's candidate weights).
    func plan(step: Int, total: Int, masks: MaskSet, topologySeed: UInt64) -> SparsityPlan
    /// Carries out `plan` after the optimizer update: zeroes what it prunes (weights and
    /// `moments`), sets what it grows, and returns the per-layer element changes; nil
    /// when the evidence the plan needs is missing (the topology then stays).
    func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                evidence: StepEvidence) -> [PruneAndGrow.LayerChange]?
}

extension SparsityConfig {
    /// The method this config selects.
    public func makeMethod() -> any SparsityMethod {
        switch method {
        case .dense: Dense(config: self)
        case .svite: SViTE(config: self)
        case .omp, .gmp, .tp: MagnitudeBaseline(config: self)
        case .s2vite: S2ViTE(config: self)
        case .ssp: SSP(config: self)
        }
    }
}

/// No masks.
public struct Dense: SparsityMethod {
    public let config: SparsityConfig
    public func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet? { nil }
    public func plan(step: Int, total: Int, masks: MaskSet, topologySeed: UInt64) -> SparsityPlan { .idle }
    public func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                       evidence: StepEvidence) -> [PruneAndGrow.LayerChange]? { nil }
}

/// SViTE: a random topology with the configured per-layer counts; every update interval
/// the smallest active weights are dropped and as many inactive ones with the largest
/// gradient grow. Workers send their top c·k inactive gradients per layer at update steps.
public struct SViTE: SparsityMethod {
    public let config: SparsityConfig

    public func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet? {
        let m = MaskSet(for: config, layout: model.layout)
        m.randomize(counts: config.distribution.counts(m.prunable.map { ($0.name, $0.shape) }, density: config.density), seed: seed)
        return m
    }

    public func plan(step: Int, total: Int, masks m: MaskSet, topologySeed: UInt64) -> SparsityPlan {
        guard let f = config.schedule.fraction(step: step + 1, total: total) else { return .idle }
        let perLayer = m.prunable.map { t in
            let a = m.activeCount(t)
            return PruneAndGrow.exchangeCount(active: a, inactive: t.count - a, fraction: f)
        }
        return SparsityPlan(event: .pruneAndGrow(fraction: f), request: .growCandidates(multiplier: config.candidateMultiplier, perLayer: perLayer),
                            usesGradient: true)
    }

    public func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                       evidence: StepEvidence) -> [PruneAndGrow.LayerChange]? {
        guard let f = plan.fraction, let score = evidence.gradient else { return nil }
        return PruneAndGrow.update(masks: masks, params: params, growScore: { UnsafePointer(score.pointer + $0.offset) },
                                   fraction: f, moments: moments)
    }
}

/// The pruning baselines: dense until their schedule says, then pruned to a density by
/// |w| (OMP globally once, GMP per layer on a cubic schedule) or |w·g| (TP, once).
public struct MagnitudeBaseline: SparsityMethod {
    public let config: SparsityConfig
    var schedule: PruningPlan { config.pruningPlan! }

    public func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet? { MaskSet(for: config, layout: model.layout) }

    public func plan(step: Int, total: Int, masks: MaskSet, topologySeed: UInt64) -> SparsityPlan {
        guard let d = schedule.density(step: step + 1, total: total) else { return .idle }
        return SparsityPlan(event: .prune(density: d), usesGradient: true)
    }

    public func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                       evidence: StepEvidence) -> [PruneAndGrow.LayerChange]? {
        guard case let .prune(d) = plan.event, let g = evidence.gradient else { return nil }
        switch schedule.kind {
        case let .oneShot(_, taylor):
            if taylor {
                for t in masks.prunable {
                    let gp = g.pointer + t.offset, w = params.pointer + t.offset
                    for i in 0 ..< t.count { gp[i] *= w[i] }
                }
            }
            let source = taylor ? g : params
            return MagnitudePruning.pruneGlobal(masks: masks, params: params, score: { UnsafePointer(source.pointer + $0.offset) },
                                                keep: Int((d * Double(masks.totalPrunable)).rounded()), moments: moments)
        case .gradual:
            let counts = config.distribution.counts(masks.prunable.map { ($0.name, $0.shape) }, density: d)
            return MagnitudePruning.pruneLayers(masks: masks, params: params, score: { UnsafePointer(params.pointer + $0.offset) },
                                                counts: counts, moments: moments)
        }
    }
}

/// Workers draw an inactive unit's candidate weights from this seed when scoring it at
/// step `step`, and the coordinator draws the same ones when the unit grows there.
public func unitCandidateSeed(topologySeed: UInt64, step: Int) -> UInt64 {
    StreamSeed.mix(topologySeed, UInt64(step))
}

/// S2ViTE: random heads and MLP neurons per block; on SViTE's schedule each block drops
/// its kept units of least importance and grows inactive ones by their grow scores.
/// Workers send unit scores at update steps.
public struct S2ViTE: SparsityMethod {
    public let config: SparsityConfig

    public func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet? {
        let m = MaskSet(for: config, layout: model.layout)
        UnitSelection.random(config: model.config, headDensity: config.keptHeadFraction, mlpDensity: config.keptNeuronFraction, seed: seed)
            .write(to: m, model: model)
        m.resetExploration()
        m.bumpVersion()
        return m
    }

    public func plan(step: Int, total: Int, masks: MaskSet, topologySeed: UInt64) -> SparsityPlan {
        guard let f = config.schedule.fraction(step: step + 1, total: total) else { return .idle }
        return SparsityPlan(event: .pruneAndGrow(fraction: f), request: .unitScores(seed: unitCandidateSeed(topologySeed: topologySeed, step: step)))
    }

    public func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                       evidence: StepEvidence) -> [PruneAndGrow.LayerChange]? {
        guard let f = plan.fraction, let scores = evidence.unitScores, let seed = plan.request.unitScoreSeed else { return nil }
        return StructuredPruneAndGrow.update(masks: masks, model: model, params: params, scores: scores, fraction: f,
                                             candidateSeed: seed, moments: moments, rule: config.unitExchange)
    }
}

/// SSP: dense until `prune_at`, then the heads of lowest |Taylor| importance and the
/// neurons of smallest weight norm go at once. Workers send unit scores at that step.
public struct SSP: SparsityMethod {
    public let config: SparsityConfig

    public func initialMasks(model: ViTModel, seed: UInt64) -> MaskSet? { MaskSet(for: config, layout: model.layout) }

    public func plan(step: Int, total: Int, masks: MaskSet, topologySeed: UInt64) -> SparsityPlan {
        guard let d = config.pruningPlan?.density(step: step + 1, total: total) else { return .idle }
        return SparsityPlan(event: .prune(density: d), request: .unitScores(seed: unitCandidateSeed(topologySeed: topologySeed, step: step)))
    }

    public func update(_ plan: SparsityPlan, masks: MaskSet, model: ViTModel, params: FloatBuffer, moments: [FloatBuffer],
                       evidence: StepEvidence) -> [PruneAndGrow.LayerChange]? {
        guard case .prune = plan.event, let scores = evidence.unitScores else { return nil }
        return StructuredPruneAndGrow.prune(masks: masks, model: model, params: params, scores: scores,
                                            headDensity: config.keptHeadFraction, mlpDensity: config.keptNeuronFraction, moments: moments)
    }
}
