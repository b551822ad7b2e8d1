import Compression
import Compute
import Config
import Core
import Kernels
import Model
import Optim
import Sparsity
import Steps

/// What the coordinator owns: the parameters, the optimizer and its moments, the step
/// count and the schedule. It takes one averaged gradient per step and applies it; it
/// never sees data. In a single process it sits beside a `Replica`; in the parameter
/// server it lives in the coordinator and the gradient arrives over the wire.
public final class ServerState {
    public let model: ViTModel
    /// The weights, the optimizer's moments and the masks: what an update changes.
    public let state: ModelState
    public let schedule: LRSchedule
    public let clipGradNorm: Double
    /// Updates applied so far; the next update is made at this 0-based step.
    public private(set) var step: Int = 0
    /// The sparsity method in force (nil: dense).
    public private(set) var method: (any SparsityMethod)?
    /// The mean gradient kept before masking for updates that score by it.
    var gradientScore: FloatBuffer?
    /// Seeds what the method draws (S2ViTE's candidate weights, with the step).
    var topologySeed: UInt64 = 0
    /// AdamW's variance freezes for the updates of steps from this one on (nil: never;
    /// top-k runs, see `CompressionSchedule`).
    public var varianceFreezeStep: Int?
    /// Keeps a frozen variance in scale with the workers' gradients (top-k runs with
    /// communication.track_variance; nil: off).
    public var varianceTracker: VarianceTracker?
    /// Whether the update records carry the gradient the optimizer took (someone replays
    /// them: the update downlink, or a test); building it costs a pass over the model.
    public var keepsUpdateGradients = false
    /// How the merged gradient travels down, set per step (`gradient_density: auto` on a
    /// slow wire): it is rounded to the codec (after clipping) before the optimizer takes
    /// it, so its record travels in fewer bytes and still replays exactly. int8 keeps its
    /// rounding in `updateResidual` for the next int8 update; any other codec drops it.
    public var updateCodec: ValueCodec = .fp32
    /// What int8 updates rounded off and have not applied yet (full layout; nil before
    /// the first, or after an update of another codec).
    public internal(set) var updateResidual: FloatBuffer?

    public struct Update: Sendable {
        public var step: Int
        public var lr: Double
        /// ‖g‖₂ of the averaged gradient before clipping.
        public var gradNorm: Double
        /// The prune-and-grow fraction when this step updated the topology.
        public var topologyFraction: Double? = nil
        /// What the update did, for replicas (`ModelState.apply`).
        public var record: ParameterUpdate
    }

    public init(model: ViTModel, optimizer: OptimizerConfig, schedule: LRSchedule) {
        self.model = model
        state = ModelState(layout: model.layout, optimizer: Optimizer(config: optimizer, layout: model.layout))
        self.schedule = schedule
        clipGradNorm = optimizer.clipGradNorm
    }

    public var params: FloatBuffer { state.params }
    public var optimizer: Optimizer { state.optimizer! }
    /// The sparse topology (nil: dense). Inactive weights and their moments stay zero and
    /// their gradients never reach the optimizer.
    public var masks: MaskSet? { state.masks }

    /// The sparsity settings in force (nil: dense).
    public var sparsity: SparsityConfig? { method?.config }

    /// What the update after the next step does and asks of the workers.
    public var pendingPlan: SparsityPlan {
        guard let masks, let method else { return .idle }
        return method.plan(step: step, total: schedule.totalSteps, masks: masks, topologySeed: topologySeed)
    }

    /// Applies the batch-size-weighted mean gradient (clipped in place when clipping is
    /// on), then the method's topology update if the step has one, and advances the step.
    /// `replies`: the workers' merged replies to the plan's request (grow candidates score
    /// in place of the gradient; unit scores).
    /// `meanSquares`: the workers' mean squares per tensor, for the variance tracker.
    /// `estimate`: the step's order said the gradient is the merged change to the shared
    /// estimate (`GradientCompression.estimate`), which AdamW's first moment holds.
    @discardableResult
    public func apply(averagedGradient g: UnsafeMutablePointer<Float>, replies: MergedReplies = MergedReplies(),
                      meanSquares: [Double]? = nil, estimate: Bool = false) -> Update {
        let lr = schedule.lr(step: step)
        let plan = pendingPlan
        if let masks {
            // The gradient an update scores by is kept before masking.
            if plan.event != nil && plan.usesGradient {
                let score = gradientScore ?? FloatBuffer(count: model.layout.count)
                gradientScore = score
                score.pointer.update(from: UnsafePointer(replies.growScore ?? g), count: score.count)
            }
            for t in masks.prunable {
                let gp = g + t.offset, m = masks.mask.pointer + t.offset
                for i in 0 ..< t.count { gp[i] *= m[i] }
            }
        }
        if let ms = meanSquares { varianceTracker?.record(ms) }
        let freeze = varianceFreezeStep.map { step >= $0 } ?? false
        if freeze && !optimizer.varianceFrozen { varianceTracker?.freeze() }
        // A change to the estimate is not a gradient: its norm is reported, not clipped (the
        // workers clip their own gradients before their momentum takes them).
        let norm = estimate ? GradientClipping.norm(g, count: model.layout.count)
            : GradientClipping.clip(g, count: model.layout.count, maxNorm: clipGradNorm)
        // Values a replica must take bit for bit, in fewer bytes than fp32's.
        let sent = round(g)
        let frozen = optimizer.varianceFrozen || (freeze && optimizer.hasVariance)
        var record = ParameterUpdate(step: UInt32(step), applied: true, lr: lr, optimizerUpdates: UInt32(optimizer.updates + 1),
                                     freezeVariance: frozen, varianceScale: frozen ? varianceTracker?.scales : nil, estimate: estimate,
                                     gradient: sent)
        record.gradientCodec = updateCodec
        state.step(record, gradient: g)
        var fraction: Double? = nil
        if let masks, let method, plan.event != nil {
            let moments = [optimizer.firstMoment] + (optimizer.secondMoment.map { [$0] } ?? [])
            let evidence = StepEvidence(gradient: plan.usesGradient ? gradientScore : nil, replies: replies)
            // Without the evidence it needs (a source that cannot give it) the topology stays.
            if let changes = method.update(plan, masks: masks, model: model, params: params, moments: moments, evidence: evidence) {
                if optimizer.varianceFrozen { seedFrozenVariance(changes, masks: masks) }
                record.topology = state.recordTopology(changes)
                fraction = plan.fraction
            }
        }
        step += 1
        return Update(step: step, lr: lr, gradNorm: norm, topologyFraction: fraction, record: record)
    }

    /// Rounds the merged gradient `g` (full layout, masked) in place to `updateCodec`; returns
    /// the update record's values (nil when nobody replays them and nothing needs them).
    /// int8 rounds the very lists the record carries (its blocks follow the non-zero
    /// entries of each tensor), after adding what the last int8 update rounded off, and
    /// keeps what this one rounds off: over int8 updates the rounding is delayed, not lost.
    func round(_ g: UnsafeMutablePointer<Float>) -> SparseGradient? {
        let n = model.layout.count
        guard updateCodec.needsFeedback else {
            updateResidual = nil
            updateCodec.roundTrip(g, count: n)
            return keepsUpdateGradients ? SparseGradient.nonzeros(of: g, layout: model.layout) : nil
        }
        let residual = updateResidual ?? FloatBuffer(count: n)
        updateResidual = residual
        let r = residual.pointer
        // A pruned weight's leftover goes with it.
        masks?.apply(to: residual)
        VectorOps.accumulate(g, r, n)
        var sent = SparseGradient.nonzeros(of: g, layout: model.layout)
        for t in sent.values.indices {
            sent.values[t].withUnsafeMutableBufferPointer { v in if let p = v.baseAddress { updateCodec.roundTrip(p, count: v.count) } }
        }
        r.update(from: g, count: n)
        g.update(repeating: 0, count: n)
        sent.scatter(into: g, layout: model.layout)
        for i in 0 ..< n { r[i] -= g[i] }
        return sent
    }

    /// A grown weight's variance is zeroed with its moments; frozen, it would stay zero and
    /// the first gradient would move the weight by lr·(1−β1)·g/ε. It starts at the mean
    /// variance of its layer's other active weights instead.
    func seedFrozenVariance(_ changes: [PruneAndGrow.LayerChange], masks: MaskSet) {
        guard let v = optimizer.secondMoment else { return }
        for (t, c) in zip(masks.prunable, changes) where !c.grown.isEmpty {
            let base = v.pointer + t.offset, m = masks.mask.pointer + t.offset
            var sum = 0.0, n = 0
            for i in 0 ..< t.count where m[i] != 0 && base[i] > 0 { sum += Double(base[i]); n += 1 }
            let seed = n > 0 ? Float(sum / Double(n)) : 0
            for i in c.grown { base[i] = seed }
        }
    }

    /// Counts a step without an update (a skipped non-finite step): the weights, moments
    /// and masks stay, the optimizer's update count stays (so its bias correction is that
    /// of the updates made), and a topology update due at this step does not happen.
    /// Returns its record and whether one was due.
    @discardableResult
    public func skip() -> (record: ParameterUpdate, topologyWasDue: Bool) {
        let due = pendingPlan.event != nil
        let record = ParameterUpdate.skipped(step: step, optimizerUpdates: optimizer.updates, varianceFrozen: optimizer.varianceFrozen)
        step += 1
        return (record, due)
    }

    /// Starts sparse training: the method's starting topology, applied to the weights.
    public func enableSparsity(_ c: SparsityConfig, seed: UInt64) {
        let method = c.makeMethod()
        guard let m = method.initialMasks(model: model, seed: seed) else { return }
        m.apply(to: params)
        for b in [optimizer.firstMoment] + (optimizer.secondMoment.map { [$0] } ?? []) { m.apply(to: b) }
        state.masks = m
        self.method = method
        topologySeed = seed
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
public final class GradientAverager {
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
