import Compression
import Foundation
import Compute
import Config
import Core
import Datasets
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Steps
import Synchronization
import Wire

/// What a welcome sets up for a run, none of it optional: the config, the replica that
/// computes gradients, the state the steps change (the weights and masks, and with the
/// update downlink the optimizer's moments), and the encoder of the gradients. A rejoin
/// to the same run keeps it; a welcome with another config makes a new one. It holds no
/// socket: step frames go in, compute jobs and gradient payloads come out.
final class WorkerRun: @unchecked Sendable {
    let configText: String
    let layout: ParameterLayout
    let replica: Replica
    let state: ModelState
    let plan: EpochPlan
    let encoder: GradientEncoder
    /// The step the replica's weights are of (-1: none; the whole state is awaited).
    var version = -1
    private let packed: FloatBuffer
    private var order: EpochOrder
    private let hooks: WorkerTestHooks
    /// With `hooks.recordStateDigests`: CRC-32 of weights and moments by the step they are of.
    private(set) var stateDigests: [Int: UInt32] = [:]

    init(info: WelcomeInfo, options: WorkerOptions, hooks: WorkerTestHooks, log: Logger) throws {
        let config = try RunConfig.parse(yaml: info.config, file: "<config from the coordinator>")
        try config.checkData()
        let train = try config.loadData(.train)
        let t = config.training
        // The precision is the run's (every worker computes alike); the backend is this
        // machine's own choice unless --backend says otherwise.
        let engine = Engine.configure(backend: options.backend ?? config.compute.backend, precision: t.precision)
        Engine.log(engine, to: log)
        replica = Replica(config: config, dataset: train, threads: options.threads, precision: engine.precision,
                          sparseKernels: options.sparseKernels, log: log)
        let model = replica.model
        plan = EpochPlan(datasetSize: train.count, batchSize: t.batchSize, seed: t.seed)
        order = EpochOrder(plan: plan)
        layout = model.layout
        state = ModelState(layout: model.layout,
                           optimizer: info.replicated == true ? Optimizer(config: config.optimizer, layout: model.layout) : nil,
                           masks: config.sparsity.isSparse ? MaskSet(for: config.sparsity, layout: model.layout) : nil)
        packed = FloatBuffer(count: model.layout.count)
        encoder = GradientEncoder(spec: config.compressionSpec(denseCodec: info.gradientCodec), layout: model.layout)
        configText = info.config
        self.hooks = hooks
        log.info("joined run \(String(info.runID, radix: 16)) as rank \(info.rank): \(config.name), \(model.layout.parameterCount) parameters, \(train.count) training images")
    }

    var masks: MaskSet? { state.masks }
    /// The shared estimate of `feedback: estimate`: the replica's first moment (nil: no replica).
    var sharedEstimate: UnsafePointer<Float>? { state.optimizer.map { UnsafePointer($0.firstMoment.pointer) } }

    /// Reads a welcome's state (after its info): the weights, the mask and, with the update
    /// downlink, the optimizer's moments; the replica is then of step `step`. A welcome sent
    /// between steps carries none of it (the next step frame brings it).
    func takeWelcome(_ reader: inout ByteReader, step: Int) throws {
        let count = Int(try reader.u32("weight count"))
        if count > 0 {
            guard count == layout.count else { throw WorkerError(message: "welcome carries \(count) weights, the config's model has \(layout.count)") }
            try reader.floats(into: state.params.pointer, count: count)
        }
        if let m = masks {
            let version = try reader.u32("mask version")
            let bits = try reader.blob("mask bits")
            if version != Payload.noMaskVersion {
                guard m.setBitmap(bits, version: Int(version)) else { throw WorkerError(message: "the welcome's mask does not fit the model") }
            }
        }
        version = -1
        if let o = state.optimizer {
            if count > 0 {
                let updates = Int(try reader.u32("optimizer updates"))
                let frozen = try reader.u8("variance frozen") != 0
                let n = Int(try reader.u32("moment buffers"))
                guard n == o.stateBuffers.count else { throw WorkerError(message: "the welcome carries \(n) moment buffers, this optimizer has \(o.stateBuffers.count)") }
                for (_, b) in o.stateBuffers { try reader.floats(into: b.pointer, count: count) }
                o.updates = updates
                o.restoreFrozenVariance(frozen)
                version = step
            }
        } else if count > 0 {
            version = step
        }
        try reader.expectEnd("welcome")
        // A (re)join starts from the coordinator's weights: what was left unsent belongs
        // to steps the coordinator has finished without it.
        encoder.reset()
    }

    /// What a step frame asks of this worker.
    enum Outcome {
        /// Compute a gradient of these images.
        case compute(ComputeJob)
        /// Nothing this step (a broadcast frame with no share for this worker).
        case idle
        /// The replica is out of step with the coordinator: the whole state is needed.
        case resync(String)
    }

    /// Brings the replica to the frame's step (an update, a mask change, the weights) and
    /// says what to compute. A frame that cannot be read throws `WireError`; one that does
    /// not fit this worker's data or model throws `WorkerError`.
    func prepare(_ frame: Frame, rank: Int, receivedAt: Double) throws -> Outcome {
        let context = state.optimizer.map {
            UpdateContext(layout: layout, layerSizes: masks?.prunable.map(\.count) ?? [], moments: $0.stateBuffers.count)
        }
        let (f, values) = try Payload.decodeParams(frame.payload, maxLayers: masks?.prunable.count ?? 0,
                                                   maxIndices: masks?.prunable.map(\.count).max() ?? 0, updates: context)
        let step = Int(frame.header.step)
        if state.optimizer != nil {
            // The update downlink: bring the replica to this step, or have the whole state sent.
            if let u = f.update, version == Int(u.step), let why = replay(u) { return .resync(why) }
            guard version == step else {
                return .resync("its replica is of step \(version) and the frame of step \(step)"
                    + (f.update.map { " brings the update from step \($0.step)" } ?? " brings no update"))
            }
        }
        if let update = f.mask {
            guard let m = masks else { throw WorkerError(message: "a mask update in a dense run") }
            let ok: Bool
            switch update {
            case let .change(v, layers): ok = m.apply(change: layers.map { ($0.off, $0.on) }, version: Int(v))
            case let .bitmap(v, bits): ok = m.setBitmap(bits, version: Int(v))
            }
            guard ok else { throw WorkerError(message: "mask update to version \(update.version) does not fit this worker's mask (version \(m.version))") }
            encoder.follow(m, estimate: sharedEstimate)
        }
        // The step's frame names the topology its values are packed for.
        if let m = masks, UInt32(clamping: m.version) != frame.header.maskVersion {
            throw WorkerError(message: "step \(step) is for mask version \(frame.header.maskVersion), this worker holds \(m.version)")
        }
        if var r = values {
            if let m = masks {
                try Payload.values(&r, into: packed.pointer, count: m.packedCount)
                m.unpack(packed.pointer, into: state.params.pointer)
            } else {
                try Payload.values(&r, into: state.params.pointer, count: layout.count)
            }
        }
        // A broadcast step names every worker's share; this one may have none.
        guard let a = f.share(rank: rank) else { return .idle }
        let epoch = Int(a.epoch)
        let lo = Int(a.start), hi = lo + Int(a.count)
        guard lo >= 0, hi <= plan.datasetSize, a.count > 0, Int(a.count) <= plan.batchSize else {
            throw WorkerError(message: "assignment \(a) is outside the data set or the batch")
        }
        let (indices, next) = replica.shareImages(lo ..< hi, epoch: epoch, order: &order)
        return .compute(ComputeJob(step: frame.header.step, order: f.order, indices: indices, epoch: epoch, next: next,
                                   receivedAt: receivedAt))
    }

    /// Applies the coordinator's update to the replica (`ModelState.apply`, the rule the
    /// coordinator's state follows too). Returns why a resync is needed, or nil.
    func replay(_ u: ParameterUpdate) -> String? {
        do {
            try state.apply(u)
        } catch {
            return "\(error)"
        }
        if u.topology != nil, let m = masks { encoder.follow(m, estimate: sharedEstimate) }
        version = Int(u.step) + 1
        if hooks.corruptAfterStep == version { state.params.pointer[0] += 1 }
        if hooks.recordStateDigests { stateDigests[version] = state.digest }
        if let expected = u.checksum {
            let crc = ParameterUpdate.checksum(state.params.pointer, count: layout.count)
            guard crc == expected else { return String(format: "its weights after step %d have CRC-32 %08x, the coordinator's %08x", version, crc, expected) }
        }
        return nil
    }

    /// Computes the job's gradient (on the caller's thread).
    func compute(_ job: ComputeJob) -> BatchResult {
        replica.computeGradient(params: UnsafePointer(state.params.pointer), indices: job.indices, epoch: job.epoch, masks: masks,
                                request: job.order.request, selector: job.order.selector, next: job.next)
    }

    /// The gradient frame's payload for a computed job: the summary, the values as the
    /// step's compression says, the mean squares if the run tracks them, the reply.
    func gradientPayload(_ job: ComputeJob, result: BatchResult) throws -> [UInt8] {
        let summary = GradientSummary(images: UInt32(result.count), lossSum: result.lossSum, correct: UInt32(result.correct))
        let g = replica.grads.pointer
        let reply = StepReply.make(job.order.request, gradient: g, masks: masks, unitScores: replica.unitScores)
        // Of the whole local gradient, before top-k keeps most of it back.
        let meanSquares = job.order.meanSquares
            ? VarianceTracker.meanSquares(g, tensors: layout.tensors.map { ($0.offset, $0.count) }, mask: masks.map { UnsafePointer($0.mask.pointer) })
            : nil
        let o = state.optimizer
        let context = CompressionContext(masks: masks,
                                         variance: ((o?.updates ?? 0) > 0 ? o?.secondMoment : nil).map { UnsafePointer($0.pointer) },
                                         varianceScale: state.varianceScale,
                                         estimate: sharedEstimate, denseCodec: job.order.denseCodec)
        // About what the values take: every one in fp32, or k entries of a byte or two each.
        let values = masks?.packedCount ?? layout.count
        let capacity = job.order.compression.density.map { 4096 + Int(6 * $0 * Double(values)) } ?? 4 * values
        return try Payload.grads(summary, reply: reply, meanSquares: meanSquares, capacity: capacity) {
            try encoder.encode(g, job.order.compression, context: context, into: &$0)
        }
    }
}

/// A step's gradient being computed on its own thread, so the socket thread keeps
/// heartbeats flowing during long steps.
final class ComputeJob: Sendable {
    let step: UInt64
    let order: StepOrder
    let indices: [Int32]
    let epoch: Int
    let next: (indices: [Int32], epoch: Int)?
    /// When the worker began on the step's frame (its clock): the summary's compute seconds run from here.
    let receivedAt: Double
    /// Signalled when the gradient is ready, so the socket thread sends it at once.
    let done = DispatchSemaphore(value: 0)
    private let result = Mutex<BatchResult?>(nil)

    init(step: UInt64, order: StepOrder, indices: [Int32], epoch: Int, next: (indices: [Int32], epoch: Int)?, receivedAt: Double = 0) {
        self.step = step; self.order = order; self.indices = indices; self.epoch = epoch; self.next = next; self.receivedAt = receivedAt
    }

    var finished: BatchResult? { result.withLock { $0 } }
    func finish(_ r: BatchResult) { result.withLock { $0 = r }; done.signal() }
}
