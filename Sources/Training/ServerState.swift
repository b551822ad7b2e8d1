import Datasets
import Kernels
import Model
import Optim
import Sparsity

/// What the coordinator owns: the parameters, the optimizer and its moments, the step
/// count and the schedule. It takes one averaged gradient per step and applies it; it
/// never sees data. In a single process it sits beside a `Replica`; in the parameter
/// server it lives in the coordinator and the gradient arrives over the wire.
public final class ServerState: @unchecked Sendable {
    public let model: ViTModel
    public let params: FloatBuffer
    public let optimizer: Optimizer
    public let schedule: LRSchedule
    public let clipGradNorm: Double
    /// Updates applied so far; the next update is made at this 0-based step.
    public private(set) var step: Int = 0
    /// The sparse topology (nil: dense). Inactive weights and their moments stay zero and
    /// their gradients never reach the optimizer.
    public private(set) var masks: MaskSet?
    var topologySchedule: UpdateSchedule?
    var growScore: FloatBuffer?
    /// Seeds the candidate weights of S2ViTE's inactive units (with the step).
    var topologySeed: UInt64 = 0
    /// The changes of the last topology update (empty when the last step made none).
    public private(set) var lastChanges: [PruneAndGrow.LayerChange] = []

    public struct Update: Sendable {
        public var step: Int
        public var lr: Double
        /// ‖g‖₂ of the averaged gradient before clipping.
        public var gradNorm: Double
        /// The prune-and-grow fraction when this step updated the topology.
        public var topologyFraction: Double? = nil
    }

    public init(model: ViTModel, optimizer: OptimizerConfig, schedule: LRSchedule) {
        self.model = model
        params = FloatBuffer(count: model.layout.count)
        self.optimizer = Optimizer(config: optimizer, layout: model.layout)
        self.schedule = schedule
        clipGradNorm = optimizer.clipGradNorm
    }

    /// Applies the batch-size-weighted mean gradient (clipped in place when clipping is
    /// on) and advances the step.
    /// The prune-and-grow fraction if the next update ends with a topology change.
    public var pendingTopologyFraction: Double? {
        masks == nil ? nil : topologySchedule?.fraction(step: step + 1, total: schedule.totalSteps)
    }

    /// The sparsity settings in force (nil: dense).
    public private(set) var sparsity: SparsityConfig?

    /// The next step's pruning-baseline event, if any: the density to prune to.
    var pendingPruneDensity: Double? {
        masks == nil ? nil : sparsity?.pruningPlan?.density(step: step + 1, total: schedule.totalSteps)
    }

    /// Structured runs: the candidate-weight seed when the next step must return unit
    /// scores (an S2ViTE update or SSP's pruning step), nil otherwise.
    public var pendingUnitScoreSeed: UInt64? {
        guard let m = masks, m.isStructured, pendingTopologyFraction != nil || pendingPruneDensity != nil else { return nil }
        return Self.unitCandidateSeed(topologySeed: topologySeed, step: step)
    }

    /// Workers draw an inactive unit's candidate weights from this seed when scoring it at
    /// step `step`, and the coordinator draws the same ones when the unit grows there.
    public static func unitCandidateSeed(topologySeed: UInt64, step: Int) -> UInt64 {
        StreamSeed.mix(topologySeed, UInt64(step))
    }

    @discardableResult
    public func apply(averagedGradient g: UnsafeMutablePointer<Float>, growScore given: UnsafePointer<Float>? = nil,
                      unitScores: UnitScores? = nil) -> Update {
        let lr = schedule.lr(step: step)
        var fraction: Double? = nil
        let pruneTo = pendingPruneDensity
        let unitSeed = pendingUnitScoreSeed
        if let masks {
            fraction = pendingTopologyFraction
            // The dense gradient of an update step is the grow score (unless the workers'
            // candidates were given); keep it before masking.
            if fraction != nil || pruneTo != nil, !masks.isStructured, let score = growScore {
                score.pointer.update(from: given ?? UnsafePointer(g), count: score.count)
            }
            for t in masks.prunable {
                let gp = g + t.offset, m = masks.mask.pointer + t.offset
                for i in 0 ..< t.count { gp[i] *= m[i] }
            }
        }
        let norm = GradientClipping.clip(g, count: model.layout.count, maxNorm: clipGradNorm)
        optimizer.step(params: params.pointer, grads: g, lr: lr)
        lastChanges = []
        if let masks {
            masks.apply(to: params)
            let moments = [optimizer.firstMoment] + (optimizer.secondMoment.map { [$0] } ?? [])
            if masks.isStructured, let c = sparsity {
                // Without scores (a source that cannot give them) the topology stays.
                if let scores = unitScores, let seed = unitSeed {
                    if let f = fraction {
                        lastChanges = StructuredPruneAndGrow.update(masks: masks, model: model, params: params, scores: scores,
                                                                    fraction: f, candidateSeed: seed, moments: moments,
                                                                    rule: c.unitExchange)
                    } else if pruneTo != nil {
                        lastChanges = StructuredPruneAndGrow.prune(masks: masks, model: model, params: params, scores: scores,
                                                                   headDensity: c.keptHeadFraction, mlpDensity: c.keptNeuronFraction,
                                                                   moments: moments)
                    }
                } else {
                    fraction = nil
                }
            } else if let f = fraction, let score = growScore {
                lastChanges = PruneAndGrow.update(masks: masks, params: params,
                                                  growScore: { UnsafePointer(score.pointer + $0.offset) },
                                                  fraction: f, moments: moments)
            } else if let d = pruneTo, let plan = sparsity?.pruningPlan, let score = growScore {
                lastChanges = prune(masks, plan: plan, density: d, gradient: score, moments: moments)
            }
        }
        step += 1
        return Update(step: step, lr: lr, gradNorm: norm, topologyFraction: fraction)
    }

    /// A baseline's pruning event: to density `d` by |w| (OMP, GMP) or |w·g| (TP).
    func prune(_ masks: MaskSet, plan: PruningPlan, density d: Double, gradient g: FloatBuffer, moments: [FloatBuffer]) -> [PruneAndGrow.LayerChange] {
        let c = sparsity!
        switch plan.kind {
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
            let counts = c.distribution.counts(masks.prunable.map { ($0.name, $0.shape) }, density: d)
            return MagnitudePruning.pruneLayers(masks: masks, params: params, score: { UnsafePointer(self.params.pointer + $0.offset) },
                                                counts: counts, moments: moments)
        }
    }

    /// Starts sparse training: a random topology with the configured per-layer counts
    /// (ERK or uniform), applied to the weights.
    public func enableSparsity(_ c: SparsityConfig, seed: UInt64) {
        guard let m = MaskSet.initial(c, model: model, seed: seed) else { return }
        m.apply(to: params)
        for b in [optimizer.firstMoment] + (optimizer.secondMoment.map { [$0] } ?? []) { m.apply(to: b) }
        masks = m
        sparsity = c
        topologySeed = seed
        topologySchedule = c.method == .svite || c.method == .s2vite ? c.schedule : nil
        growScore = c.method.isStructured ? nil : FloatBuffer(count: model.layout.count)
    }

    /// Puts the state back to a checkpoint's step (parameters and moments are restored
    /// by the checkpoint reader).
    public func restore(step: Int, optimizerUpdates: Int) {
        self.step = step
        optimizer.updates = optimizerUpdates
    }
}

/// Averages gradients from several replicas weighted by their batch sizes, so the result
/// is the gradient of the mean loss over the union of their batches.
public final class GradientAverager: @unchecked Sendable {
    public let sum: FloatBuffer
    public private(set) var images = 0

    public init(count: Int) { sum = FloatBuffer(count: count) }

    public func reset() { sum.zero(); images = 0 }

    /// Adds a replica's mean gradient over `batch` images.
    public func add(_ g: UnsafePointer<Float>, batch: Int) {
        let n = sum.count, w = Float(batch)
        let s = sum.pointer
        for i in 0 ..< n { s[i] += w * g[i] }
        images += batch
    }

    /// Divides by the images seen; the mean gradient is then in `sum`.
    public func finish() {
        precondition(images > 0, "GradientAverager: no gradients")
        VectorOps.scale(sum.pointer, 1 / Float(images), sum.count)
    }
}
