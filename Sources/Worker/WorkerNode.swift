import Compute
import Compression
import Config
import Core
import Datasets
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Transport
import Wire

public struct WorkerOptions: Sendable {
    public var coordinator: String
    /// The id the coordinator knows this worker by; a restarted worker that reuses it takes
    /// over its place.
    public var name: String
    public var threads: Int
    /// With no word from the coordinator for this long, ask to join again. nil: 30 s, or
    /// three of its heartbeat intervals or three times the slowest frame seen, if longer.
    /// A restarted coordinator is noticed at once (the connection drops and comes back);
    /// one that marked this worker lost takes it back when it hears it again. What is left
    /// is a coordinator gone without closing the connection, and a short bound would make
    /// a worker whose step frames take seconds on its link ask to join over and over.
    public var rejoinAfter: Double? = nil
    /// The matrix-product backend, overriding the run config's compute.backend.
    public var backend: BackendChoice?
    /// The masked block layers' kernels, overriding the run config's compute.sparse_kernels.
    public var sparseKernels: SparseKernelMode?
    /// A local worker's parent (`svite train`): when it is gone, the worker leaves.
    public var parentPID: Int32?
    /// CURVE: this worker's key pair and the coordinator's public key (nil: plaintext).
    public var curve: CurveClientKeys?
    /// Tests: keep a CRC-32 of the replica's weights and moments after each update.
    public var recordStateDigests = false
    /// Tests: after replaying the update to this step, change one weight (as a bit flip in
    /// memory would), so the next checksum differs and the worker resyncs.
    public var corruptAfterStep: Int?
    /// Tests: each step from `fromStep` on takes `seconds` longer to compute (a straggler,
    /// or with a long delay a compute that is stuck while the socket thread heartbeats).
    public var computeDelay: (seconds: Double, fromStep: Int)?
    public init(coordinator: String, name: String, threads: Int, backend: BackendChoice? = nil) {
        self.coordinator = coordinator; self.name = name; self.threads = threads; self.backend = backend
    }
}

public struct WorkerError: Error, CustomStringConvertible {
    public var message: String
    /// The exit status a worker process ends with: 1, or 75 (EX_TEMPFAIL) when starting it
    /// again would help (its coordinator now trains another model), 78 (EX_CONFIG) when
    /// only changing its flags would (plaintext against a CURVE coordinator).
    public var exitCode: Int32 = 1
    public var description: String { message }
    public init(message: String, exitCode: Int32 = 1) { self.message = message; self.exitCode = exitCode }
}

/// A worker process: joins the coordinator, receives the config and the weights, and
/// answers each step's parameters with the gradient of its share of the batch. The
/// socket lives on the calling thread; gradients are computed on a second thread so
/// heartbeats keep flowing during long steps.
public final class WorkerNode: @unchecked Sendable {
    let options: WorkerOptions
    let log: Logger
    let context: ZMQContext
    let socket: ZMQSocket
    /// The connection's handshakes: one that completes after the worker was welcomed means
    /// a coordinator came back (restarted, or the network did), so the worker joins again
    /// at once instead of after seconds of silence; with CURVE, the refused ones say why
    /// no welcome comes.
    let handshakes: HandshakeMonitor
    /// The connection dropped after the welcome (the coordinator died, or the network).
    var disconnected = false
    /// ... and a new one came up: join again when no step is computing.
    var reconnected = false
    var lastRefusalLog = -Double.infinity
    /// Before the welcome: when the worker last said it hears nothing, and whether any
    /// connection has come up (a coordinator is there) or none has.
    var lastSilenceLog = 0.0
    var handshakeSeen = false
    let clock = MonotonicClock()

    // Set by the welcome.
    var info: WelcomeInfo?
    var layout: ParameterLayout?
    var replica: Replica?
    var params: FloatBuffer?
    var plan: EpochPlan?
    var permutation: (epoch: Int, order: [Int32])?
    var loadedConfig: String?
    /// The topology of a sparse run, kept in step with the coordinator's.
    var masks: MaskSet?
    var packed: FloatBuffer?
    /// What this worker's gradients become on the wire, built from the run's spec: its
    /// compressors' state (a residual, a momentum) is this worker's alone, so a worker that
    /// leaves (or rejoins) loses only what it had not sent.
    var encoder: GradientEncoder?
    /// The frozen variance's factors the last update took (ranks compare across tensors).
    var lastVarianceScale: [Float]?
    /// Send each tensor's mean square with the gradient (communication.track_variance).
    var sendsMeanSquares = false
    /// The replicated downlink: this worker's copy of the optimizer, whose moments follow
    /// the coordinator's through the updates it is sent, and the step its weights are of.
    var optimizer: Optimizer?
    var version = -1
    var updateGradient: FloatBuffer?
    /// Replicas found out of step (a checksum that differs, a missed update) and resynced.
    public private(set) var resyncs = 0
    /// With `recordStateDigests`: CRC-32 of weights and moments by the step they are of.
    public private(set) var stateDigests: [Int: UInt32] = [:]

    var lastSent = -Double.infinity
    var lastReceived: Double = 0
    /// The longest wait that ended with a frame arriving (a decaying maximum): a big frame
    /// on a slow link holds back the coordinator's heartbeats behind it, so silence is
    /// judged against it.
    var slowestFrame = 0.0
    var lastJoin = -Double.infinity
    /// Seconds between joins while no welcome comes on a connection that is up: doubles
    /// (a welcome with the weights can take seconds on a slow link, and every join would
    /// bring another), back to 2 s when a connection comes up or a welcome arrives.
    var joinInterval = 2.0
    /// Handshakes that failed while this worker has no CURVE keys and none succeeded.
    var failedHandshakes = 0
    /// Resyncs asked for because a step frame could not be used, since the last gradient sent.
    var resyncsWithoutProgress = 0
    /// Whether the last join left this socket (false: there was no connection to take it).
    var joinWentOut = false
    var job: ComputeJob?
    var queued: Frame?
    public private(set) var stepsDone = 0

    final class ComputeJob: @unchecked Sendable {
        let step: UInt64
        /// What the coordinator asked of this step besides the gradient.
        var request = StepRequest.none
        /// How this step's gradient goes on the wire.
        var compression = GradientCompression.dense
        let lock = NSLock()
        /// Signalled when the gradient is ready, so the socket thread sends it at once.
        let done = DispatchSemaphore(value: 0)
        var result: BatchResult?
        init(step: UInt64) { self.step = step }
        var finished: BatchResult? { lock.lock(); defer { lock.unlock() }; return result }
        func finish(_ r: BatchResult) { lock.lock(); result = r; lock.unlock(); done.signal() }
    }

    public init(options: WorkerOptions, logger: Logger) throws {
        self.options = options
        log = logger
        context = try ZMQContext()
        // The routing id is this process's own (name, pid, a random part), so two processes
        // given one --name do not take each other's connection; the coordinator knows the
        // worker by the name in its join and refuses a second live one.
        var rng = SystemRandomNumberGenerator()
        let identity = "\(options.name)#\(getpid())#\(String(rng.next() as UInt32, radix: 16))"
        socket = try ZMQSocket.workerDealer(context, identity: identity, maxMessageBytes: -1, heartbeatMs: 1000)
        if let keys = options.curve { try socket.makeCurveClient(keys) }
        handshakes = try HandshakeMonitor(context, watching: socket, label: "worker", connections: true)
        try socket.connect(options.coordinator)
    }

    /// Runs until the coordinator says stop (returns its reason), `stop` is raised (the
    /// worker says leave and returns), or the coordinator refuses this worker (throws).
    public func run(stop: StopFlag = StopFlag()) throws -> String {
        // However the loop ends (a reject throws out of it), the process must not exit
        // while the compute thread is inside OpenBLAS or oneDNN (a dropped straggler at 2%
        // of a CPU segfaulted in exit otherwise).
        defer { finishComputing() }
        log.info("worker \(options.name) connecting to \(options.coordinator) with \(options.threads) thread(s)")
        while true {
            if let parent = options.parentPID, getppid() != parent {
                finishComputing()
                if info != nil { try send(.leave, Payload.reason("its parent process exited"), step: 0) }
                log.warning("worker \(options.name): the svite process that started it (pid \(parent)) is gone; leaving after \(stepsDone) steps")
                return "parent exited"
            }
            if stop.isRaised {
                finishComputing()
                if info != nil { try send(.leave, Payload.reason("interrupted"), step: 0) }
                log.info("worker \(options.name) leaving after \(stepsDone) steps")
                if let l = replica?.assembler.loader { log.info("\(l.summary)") }
                return "interrupted"
            }
            let now = clock.seconds
            var failures: [HandshakeFailure] = []
            var connectedNow = false
            for event in try handshakes.drainEvents() {
                switch event {
                // (The first connection's event may be read after the welcome: only a
                // connection after a drop is a reconnection.)
                case .connected:
                    handshakeSeen = true
                    if info != nil && disconnected { reconnected = true } else { connectedNow = true }
                case .disconnected: if info != nil { disconnected = true }
                case let .handshakeFailed(f): failures.append(f)
                }
            }
            if info == nil { try explainMissingWelcome(now: now, failures: failures) }
            if connectedNow { joinInterval = 2 }
            if info == nil && Self.joinsNow(now: now, lastJoin: lastJoin, joinWentOut: joinWentOut, connectedNow: connectedNow, interval: joinInterval) {
                if joinWentOut && now - lastJoin > joinInterval { joinInterval = min(2 * joinInterval, 30) }
                try sendJoin()
            } else if info != nil, reconnected, job == nil {
                log.info("worker \(options.name): the connection to \(options.coordinator) came up again; joining again")
                reconnected = false; disconnected = false
                info = nil
                try sendJoin()
            } else if let i = info, job == nil, now - lastReceived > options.rejoinAfter ?? max(30, 3 * i.heartbeatSeconds, 3 * slowestFrame) {
                log.warning("no word from the coordinator for \(String(format: "%.1f", now - lastReceived)) s; asking to join again")
                info = nil; reconnected = false; disconnected = false
                try sendJoin()
            }
            // While a gradient is being computed, wake the moment it is ready (and look at
            // the socket between waits); otherwise wait on the socket.
            var socketTimeout = 50
            if let j = job {
                _ = j.done.wait(timeout: .now() + .milliseconds(100))
                socketTimeout = 0
            }
            if try Poller.readable([socket], timeoutMs: socketTimeout)[0] {
                while let parts = try socket.receive() {
                    if let reason = try handle(parts) { return reason }
                }
            }
            if let j = job, let result = j.finished {
                job = nil
                // Computed for the coordinator before the reconnection: the one there now
                // (or the same one, which has let the step go on without it) has no use for it.
                if reconnected { queued = nil; continue }
                try sendGradient(step: j.step, result: result, request: j.request, compression: j.compression)
                if let f = queued { queued = nil; try startOrResync(f) }
            }
            if info != nil && clock.seconds - lastSent > (info?.heartbeatSeconds ?? 1) {
                try send(.heartbeat, [], step: 0)
            }
        }
    }

    /// Waits for a gradient being computed to finish: the process must not exit while the
    /// compute thread is inside OpenBLAS or oneDNN (a SIGTERM a few seconds into a run
    /// crashed in 4 of 16 tries with "BLAS : Bad memory unallocation!").
    func finishComputing() {
        guard let j = job else { return }
        if j.finished == nil, j.done.wait(timeout: .now() + 120) == .timedOut {
            log.warning("worker \(options.name): the step being computed did not finish within 120 s; leaving anyway")
        }
        job = nil
    }

    func limits() -> FrameLimits {
        guard let layout else { return FrameLimits(maxRawBytes: Int(Int32.max)) }
        return FrameLimits(maxRawBytes: FrameLimits.payloadBound(parameters: layout.count), runID: info?.runID, layoutHash: layout.hash)
    }

    /// Returns a reason when the worker should stop.
    func handle(_ parts: [[UInt8]]) throws -> String? {
        guard parts.count == 1 else { log.warning("dropped a message of \(parts.count) parts"); return nil }
        let frame: Frame
        do {
            var lim = limits()
            if info == nil { lim.runID = nil; lim.layoutHash = nil }
            frame = try Frame.decode(parts[0], limits: lim)
        } catch {
            if let reason = try rejectReason(parts[0]) { throw reason }
            if case let .unsupportedVersion(v)? = error as? WireError {
                throw WorkerError(message: "the coordinator at \(options.coordinator) speaks svite wire protocol \(v), this worker \(FrameHeader.protocolVersion): run the same svite version on both")
            }
            log.warning("dropped a bad frame from the coordinator: \(error)")
            return nil
        }
        let now = clock.seconds
        if info != nil { slowestFrame = max(now - lastReceived, 0.9 * slowestFrame) }
        lastReceived = now
        switch frame.header.type {
        case .welcome:
            // The welcome's wait (a join to it) primes the silence bound: it carried the weights.
            // (Only a welcome asked for: one the coordinator sends on its own follows no join.)
            if info == nil { slowestFrame = max(slowestFrame, now - lastJoin) }
            joinInterval = 2
            try welcome(frame)
        case .params:
            guard info != nil else { return nil }
            if job != nil { queued = frame } else { try startOrResync(frame) }
        case .stop:
            let why = (try? Payload.decodeReason(frame.payload)) ?? "stop"
            log.info("coordinator says stop (\(why)) after \(stepsDone) steps")
            if let l = replica?.assembler.loader { log.info("\(l.summary)") }
            return why
        case .heartbeat:
            break  // the coordinator is alive (it sends these between steps, e.g. while it evaluates)
        case .reject:
            throw refusal(frame.header, reason: (try? Payload.decodeReason(frame.payload)) ?? "?")
        default:
            log.warning("unexpected \(frame.header.type) from the coordinator")
        }
        return nil
    }

    func welcome(_ frame: Frame) throws {
        var (info, reader) = try Payload.welcomeInfo(frame.payload)
        if loadedConfig != info.config {
            let config = try RunConfig.parse(yaml: info.config, file: "<config from the coordinator>")
            try config.checkData()
            let train = try config.loadData(.train)
            let model = ViTModel(config: config.model)
            let d = config.data, t = config.training
            // The precision is the run's (every worker computes alike); the backend is this
            // machine's own choice unless --backend says otherwise.
            let engine = Engine.configure(backend: options.backend ?? config.compute.backend, precision: t.precision)
            Engine.log(engine, to: log)
            replica = Replica(model: model,
                              assembler: BatchAssembler(dataset: train, mean: d.mean, std: d.std, augmentation: d.augmentation, seed: t.seed, prefetch: d.prefetch),
                              threads: options.threads, smoothing: Float(t.labelSmoothing), maxBatch: t.batchSize,
                              precision: engine.precision, selectorRelaxation: t.selectorRelaxation,
                              selectorObjective: t.selectorObjective,
                              sparseKernels: options.sparseKernels ?? config.compute.sparseKernels, log: log)
            plan = EpochPlan(datasetSize: train.count, batchSize: t.batchSize, seed: t.seed)
            layout = model.layout
            params = FloatBuffer(count: model.layout.count)
            packed = FloatBuffer(count: model.layout.count)
            permutation = nil
            loadedConfig = info.config
            masks = config.sparsity.isSparse
                ? MaskSet(for: config.sparsity, layout: model.layout)
                : nil
            encoder = GradientEncoder(spec: config.compressionSpec(denseCodec: info.gradientCodec), layout: model.layout)
            sendsMeanSquares = config.communication.compresses && config.communication.trackVariance
                && config.optimizer.kind == .adamw && config.communication.freezeVariance != .off
            optimizer = info.replicated == true ? Optimizer(config: config.optimizer, layout: model.layout) : nil
            updateGradient = info.replicated == true ? FloatBuffer(count: model.layout.count) : nil
            log.info("joined run \(String(info.runID, radix: 16)) as rank \(info.rank): \(config.name), \(model.layout.parameterCount) parameters, \(train.count) training images")
        }
        let count = Int(try reader.u32("weight count"))
        if count > 0 {
            guard count == layout!.count else { throw WorkerError(message: "welcome carries \(count) weights, the config's model has \(layout!.count)") }
            try reader.floats(into: params!.pointer, count: count)
        }
        if let m = masks {
            // A welcome sent between steps has no mask (nor weights); the first params
            // frame brings both.
            let version = try reader.u32("mask version")
            let bits = try reader.blob("mask bits")
            if version != Payload.noMaskVersion {
                guard m.setBitmap(bits, version: Int(version)) else { throw WorkerError(message: "the welcome's mask does not fit the model") }
            }
        }
        version = -1
        if let o = optimizer {
            if count > 0 {
                // The whole state: the replica is at the welcome's step.
                let updates = Int(try reader.u32("optimizer updates"))
                let frozen = try reader.u8("variance frozen") != 0
                let n = Int(try reader.u32("moment buffers"))
                guard n == o.stateBuffers.count else { throw WorkerError(message: "the welcome carries \(n) moment buffers, this optimizer has \(o.stateBuffers.count)") }
                for (_, b) in o.stateBuffers { try reader.floats(into: b.pointer, count: count) }
                o.updates = updates
                o.restoreFrozenVariance(frozen)
                version = Int(frame.header.step)
            }
        } else if count > 0 {
            version = Int(frame.header.step)
        }
        try reader.expectEnd("welcome")
        // A (re)join starts from the coordinator's weights: what was left unsent belongs
        // to steps the coordinator has finished without it.
        encoder?.reset()
        self.info = info
    }

    /// A step frame that checks out on the wire but cannot be used (a malformed header,
    /// an update that does not fit) is not a reason to stop: the worker asks for the whole
    /// state again, and the coordinator's deadline lets the step go on without it.
    /// Resyncs in a row with no gradient sent between them: a frame that still cannot be
    /// used after the whole state came again is not a damaged frame but a worker that does
    /// not fit the run (its data set differs), and it stops saying why.
    func startOrResync(_ frame: Frame) throws {
        do {
            try start(frame)
        } catch let error where error is WireError || error is WorkerError {
            resyncsWithoutProgress += 1
            let why = (error as? WorkerError)?.message ?? "\(error)"
            guard resyncsWithoutProgress <= 3 else {
                throw WorkerError(message: "step \(frame.header.step)'s frame cannot be used after \(resyncsWithoutProgress - 1) resyncs: \(why)")
            }
            try resync("step \(frame.header.step)'s frame could not be used (\(why))")
        }
    }

    func start(_ frame: Frame) throws {
        guard let replica, let params, let plan, let packed, let info, let layout else { return }
        let context = optimizer.map {
            Payload.UpdateContext(layout: layout, layerSizes: masks?.prunable.map(\.count) ?? [], moments: $0.stateBuffers.count)
        }
        var (header, reader) = try Payload.decodeParamsHeader(frame.payload, maxLayers: masks?.prunable.count ?? 0,
                                                              maxIndices: masks?.prunable.map(\.count).max() ?? 0, updates: context)
        if optimizer != nil {
            // Replicated: bring the replica to this step, or have the whole state sent.
            let step = Int(frame.header.step)
            if let u = header.update, version == Int(u.step) {
                guard try replay(u) else { return }
            }
            guard version == step else {
                return try resync("its replica is of step \(version) and the frame of step \(step)"
                    + (header.update.map { " brings the update from step \($0.step)" } ?? " brings no update"))
            }
        }
        if let update = header.mask {
            guard let m = masks else { throw WorkerError(message: "a mask update in a dense run") }
            let ok: Bool
            switch update {
            case let .change(v, layers): ok = m.apply(change: layers.map { ($0.off, $0.on) }, version: Int(v))
            case let .bitmap(v, bits): ok = m.setBitmap(bits, version: Int(v))
            }
            guard ok else { throw WorkerError(message: "mask update to version \(update.version) does not fit this worker's mask (version \(m.version))") }
            // Pruned weights drop their residual; grown ones start from zero.
            encoder?.follow(m, estimate: optimizer.map { UnsafePointer($0.firstMoment.pointer) })
        }
        // The step's frame names the topology its values are packed for.
        if let m = masks, UInt32(clamping: m.version) != frame.header.maskVersion {
            throw WorkerError(message: "step \(frame.header.step) is for mask version \(frame.header.maskVersion), this worker holds \(m.version)")
        }
        if header.hasValues {
            if let m = masks {
                try Payload.values(&reader, into: packed.pointer, count: m.packedCount)
                m.unpack(packed.pointer, into: params.pointer)
            } else {
                try Payload.values(&reader, into: params.pointer, count: layout.count)
            }
        }
        // A broadcast step names every worker's share; this one may have none.
        guard let a = header.share(rank: info.rank) else { return }
        let epoch = Int(a.epoch)
        if permutation?.epoch != epoch { permutation = (epoch, plan.permutation(epoch: epoch)) }
        let lo = Int(a.start), hi = lo + Int(a.count)
        guard lo >= 0, hi <= plan.datasetSize, a.count > 0, Int(a.count) <= plan.batchSize else {
            throw WorkerError(message: "assignment \(a) is outside the data set or the batch")
        }
        let indices = Array(permutation!.order[lo ..< hi])
        // An image folder decodes the likely next share while this one computes.
        var next: (indices: [Int32], epoch: Int)? = nil
        if replica.assembler.loader != nil {
            let n = plan.nextPositions(after: lo ..< hi, epoch: epoch)
            next = (Array((n.epoch == epoch ? permutation!.order : plan.permutation(epoch: n.epoch))[n.positions]), n.epoch)
        }
        let j = ComputeJob(step: frame.header.step)
        j.request = header.request
        j.compression = header.gradientDensity.map { header.estimate ? .estimate(density: $0) : .topK(density: $0) } ?? .dense
        job = j
        let p = UnsafePointer(params.pointer)
        // The request (with its seed) and the selector's τ and noise come with the step.
        let m = masks, request = header.request, selector = header.selector
        let delay = options.computeDelay.flatMap { Int(frame.header.step) >= $0.fromStep ? $0.seconds : nil }
        nonisolated(unsafe) let work = {
            if let delay { Thread.sleep(forTimeInterval: delay) }
            j.finish(replica.computeGradient(params: p, indices: indices, epoch: epoch, masks: m, request: request, selector: selector, next: next))
        }
        Thread.detachNewThread { work() }
    }

    /// Applies the coordinator's update to the replica in `ServerState.apply`'s order:
    /// freeze, the optimizer step on exactly the values its optimizer took, the old mask,
    /// then the topology change. False (after asking for a resync) when the weights' CRC
    /// then differs from the coordinator's.
    func replay(_ u: ParameterUpdate) throws -> Bool {
        guard let o = optimizer, let params, let layout, let g = updateGradient else { return false }
        if u.applied {
            if u.freezeVariance { o.freezeVariance() }
            g.zero()
            u.gradient.scatter(into: g.pointer, layout: layout)
            o.updates = Int(u.optimizerUpdates) - 1
            o.step(params: params.pointer, grads: g.pointer, lr: u.lr, varianceScale: u.varianceScale, estimate: u.estimate)
            lastVarianceScale = u.varianceScale
            if let m = masks {
                m.apply(to: params)
                if let change = u.topology {
                    guard m.apply(change: change.map { ($0.off, $0.on) }, version: Int(u.maskVersion)) else {
                        try resync("the topology update to mask version \(u.maskVersion) does not fit mask version \(m.version)")
                        return false
                    }
                    let buffers = o.stateBuffers.map(\.buffer)
                    for ((t, c), values) in zip(zip(m.prunable, change), u.grown) {
                        for i in c.off {
                            params.pointer[t.offset + Int(i)] = 0
                            for b in buffers { b.pointer[t.offset + Int(i)] = 0 }
                        }
                        let n = c.on.count
                        for (j, i) in c.on.enumerated() {
                            params.pointer[t.offset + Int(i)] = values[j]
                            for (k, b) in buffers.enumerated() { b.pointer[t.offset + Int(i)] = values[(k + 1) * n + j] }
                        }
                    }
                    encoder?.follow(m, estimate: o.firstMoment.pointer)
                }
            }
        }
        version = Int(u.step) + 1
        if options.corruptAfterStep == version { params.pointer[0] += 1 }
        if options.recordStateDigests { stateDigests[version] = o.stateDigest(params: params.pointer) }
        if let expected = u.checksum {
            let crc = ParameterUpdate.checksum(params.pointer, count: layout.count)
            guard crc == expected else {
                try resync(String(format: "its weights after step %d have CRC-32 %08x, the coordinator's %08x", version, crc, expected))
                return false
            }
        }
        return true
    }

    /// The replica is out of step with the coordinator: join again, which sends the
    /// whole state (weights, moments, masks); the step goes on without this worker's share.
    func resync(_ why: String) throws {
        resyncs += 1
        encoder?.reset()
        log.warning("worker \(options.name): \(why); asking the coordinator for the whole state")
        info = nil
        version = -1
        try sendJoin()
    }

    func sendGradient(step: UInt64, result: BatchResult, request: StepRequest, compression: GradientCompression) throws {
        guard let replica, let layout, let encoder else { return }
        let summary = GradientSummary(images: UInt32(result.count), lossSum: result.lossSum, correct: UInt32(result.correct))
        let g = replica.grads.pointer
        let reply = StepReply.make(request, gradient: g, masks: masks, unitScores: replica.unitScores)
        // Of the whole local gradient, before top-k keeps most of it back.
        let meanSquares = sendsMeanSquares
            ? VarianceTracker.meanSquares(g, tensors: layout.tensors.map { ($0.offset, $0.count) }, mask: masks.map { UnsafePointer($0.mask.pointer) })
            : nil
        let context = CompressionContext(masks: masks,
                                         variance: ((optimizer?.updates ?? 0) > 0 ? optimizer?.secondMoment : nil).map { UnsafePointer($0.pointer) },
                                         varianceScale: lastVarianceScale,
                                         estimate: optimizer.map { UnsafePointer($0.firstMoment.pointer) })
        let payload = try Payload.grads(summary, reply: reply, meanSquares: meanSquares, capacity: 4 * (masks?.packedCount ?? layout.count)) {
            try encoder.encode(g, compression, context: context, into: &$0)
        }
        try send(.grads, payload, step: step)
        stepsDone += 1
        resyncsWithoutProgress = 0
    }

    /// Whether a worker not yet welcomed sends a join now: every 2 s, and the moment a
    /// connection comes up, unless a join went out in the last half second. At start the
    /// connection's event comes up just after the first join went, and that join arrives;
    /// a second would reach the coordinator as a rejoin, which stops it waiting for this
    /// worker's share of the step under way (about one run in five took another path from
    /// the same seed: the first step without one worker's half of the batch).
    public static func joinsNow(now: Double, lastJoin: Double, joinWentOut: Bool, connectedNow: Bool, interval: Double = 2) -> Bool {
        now - lastJoin > interval || (connectedNow && (!joinWentOut || now - lastJoin > 0.5))
    }

    func sendJoin() throws {
        let join = JoinMessage(name: options.name, host: ProcessInfo.processInfo.hostName,
                               pid: ProcessInfo.processInfo.processIdentifier, threads: options.threads)
        // Without a connection (a refused CURVE handshake tears it down) a blocking send
        // would wait forever, deaf to SIGTERM; a join that cannot go now is retried in 2 s.
        joinWentOut = try send(.join, Payload.encodeJSON(join), step: 0, dontWait: true)
        lastJoin = clock.seconds
    }

    /// Whether the frame left (with `dontWait`, false when there is no connection for it).
    @discardableResult
    func send(_ type: MessageType, _ payload: [UInt8], step: UInt64, dontWait: Bool = false) throws -> Bool {
        // Gradients say which topology they were computed on (0: dense, or none yet).
        let header = FrameHeader(type: type, runID: info?.runID ?? 0, step: step, maskVersion: UInt32(clamping: masks?.version ?? 0),
                                 layoutHash: layout?.hash ?? 0)
        guard try socket.send([Frame(header: header, payload: payload).encoded()], dontWait: dontWait) else { return false }
        lastSent = clock.seconds
        return true
    }
}
