import Datasets
import Foundation
import Kernels
import Logging
import Model
import Sparsity
import Training
import Transport
import Wire

/// Settings of the coordinator's side of the wire.
public struct ClusterOptions: Sendable {
    public var bind: String = "tcp://*:5555"
    /// REP socket answering status queries (nil: none).
    public var statusBind: String? = "tcp://*:5556"
    /// Workers to wait for before the first step (later ones join at the next step).
    public var expectedWorkers: Int = 1
    /// A worker silent this long is dropped from the step and marked lost.
    public var workerTimeout: Double = 5
    /// How often workers send heartbeats while computing.
    public var heartbeatSeconds: Double = 1
    public var gradientCodec: ValueCodec = .fp32
    public var compress: Bool = true
    public init() {}
}

/// What the coordinator knows of one worker.
final class WorkerRecord {
    enum State: String { case ready, lost, left }
    let identity: [UInt8]
    let name: String
    var host: String
    var pid: Int32
    var threads: Int
    var rank: Int
    var state: State = .ready
    var lastHeard: Double
    var stepsDone = 0
    var bytesUp = 0
    var bytesDown = 0
    /// The server step whose parameters the worker holds.
    var version: Int
    /// The mask version the worker holds (−1: none yet).
    var maskVersion = -1

    init(identity: [UInt8], join: JoinMessage, rank: Int, now: Double, version: Int) {
        self.identity = identity
        name = join.name; host = join.host; pid = join.pid; threads = join.threads
        self.rank = rank; lastHeard = now; self.version = version
    }
}

/// The coordinator's gradient source: sends each live worker the parameters and its share
/// of the step, gathers their gradients, and averages them weighted by images. Workers
/// that stop answering are dropped from the step; new ones are welcomed with the current
/// weights and take part from the next step. Bad frames are counted and dropped.
public final class ClusterGradientSource: GradientSource, @unchecked Sendable {
    public let options: ClusterOptions
    public let runID: UInt64
    public private(set) var endpoint = ""
    public private(set) var statusEndpoint: String?
    let config: RunConfig
    let layout: ParameterLayout
    let log: Logger
    let context: ZMQContext
    let router: ZMQSocket
    let status: ZMQSocket?
    let clock = MonotonicClock()
    let limits: FrameLimits
    var workers: [[UInt8]: WorkerRecord] = [:]
    var nextRank = 0
    var badFrames: [String: Int] = [:]
    public private(set) var badFrameTotal = 0
    let averager: GradientAverager
    let scratch: FloatBuffer
    /// Active values, packed (sparse runs).
    let packed: FloatBuffer
    /// Σ images·gradient of the workers' grow candidates, then their mean (update steps).
    let candidateScore: FloatBuffer
    /// What the step being gathered asked of the workers, and the reply each must send.
    var request = StepRequest.none
    var expectedReply = Payload.ExpectedReply.none
    /// Unit-score steps: Σ images·scores of the workers so far.
    var unitScoreSum: UnitScores?
    var server: ServerState?
    var masks: MaskSet? { server?.masks }
    /// The topology version frames carry (0: dense).
    var currentMaskVersion: UInt32 { UInt32(clamping: masks?.version ?? 0) }
    var maxLayerSize: Int { masks?.prunable.map(\.count).max() ?? 0 }
    /// The parameters of the step being gathered (for welcoming late joiners).
    var currentParams: UnsafePointer<Float>?
    var currentStep = 0
    var pending: Set<[UInt8]> = []
    var stepResult = BatchResult()
    var stepUp = 0, stepDown = 0
    /// The run's progress, for the status document.
    public var runStatus: RunStatus?

    public init(config: RunConfig, options: ClusterOptions, logger: Logger) throws {
        self.config = config
        self.options = options
        log = logger
        layout = ParameterLayout(config: config.model)
        var seed = Xoshiro256(seed: UInt64(ProcessInfo.processInfo.processIdentifier) ^ UInt64(Date().timeIntervalSince1970 * 1e6))
        runID = seed.next()
        context = try ZMQContext()
        let maxBytes = FrameLimits.payloadBound(parameters: layout.count)
        limits = FrameLimits(maxRawBytes: maxBytes, runID: runID, layoutHash: layout.hash)
        router = try ZMQSocket.coordinatorRouter(context, maxMessageBytes: Int64(maxBytes + 1 << 20), heartbeatMs: Int32(options.heartbeatSeconds * 1000))
        endpoint = try router.bind(options.bind)
        if let s = options.statusBind {
            let rep = try ZMQSocket(context, .rep)
            statusEndpoint = try rep.bind(s)
            status = rep
        } else {
            status = nil
        }
        averager = GradientAverager(count: layout.count)
        scratch = FloatBuffer(count: layout.count)
        packed = FloatBuffer(count: layout.count)
        candidateScore = FloatBuffer(count: layout.count)
        log.info("coordinator listening on \(endpoint)\(statusEndpoint.map { ", status on \($0)" } ?? "") (run \(String(runID, radix: 16)))")
    }

    var live: [WorkerRecord] { workers.values.filter { $0.state == .ready }.sorted { $0.rank < $1.rank } }

    // MARK: GradientSource

    public func attach(server: ServerState) { self.server = server }

    /// What a worker holding mask version `have` needs to reach the current one.
    func maskUpdate(for have: Int) -> MaskUpdate? {
        guard let m = masks, have != m.version else { return nil }
        if have == m.version - 1, let changes = server?.lastChanges, changes.count == m.prunable.count {
            return .change(version: UInt32(m.version), layers: changes.map {
                MaskUpdate.LayerChange(off: $0.pruned.map(UInt32.init), on: $0.grown.map(UInt32.init))
            })
        }
        return .bitmap(version: UInt32(m.version), bits: m.bitmap)
    }

    public func gradient(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient? {
        currentParams = params
        currentStep = work.step
        while true {
            if stop.isRaised { return nil }
            // Wait for the expected workers before the first step; afterwards for any one.
            let need = work.step == 0 && stepsStarted == 0 ? options.expectedWorkers : 1
            while live.count < need {
                if stop.isRaised { return nil }
                try pump(timeoutMs: 200)
                expireSilentWorkers(pending: false)
                if live.count < need && clock.seconds - lastWaitLog > 10 {
                    lastWaitLog = clock.seconds
                    log.info("waiting for workers: \(live.count) of \(need) connected")
                }
            }
            stepsStarted += 1
            refusedThisAttempt = 0
            lastRefusal = nil
            if let g = try runStep(params: params, work: work, stop: stop) {
                rejectedAttempts = 0
                return g
            }
            // Workers that are lost come back and the step is repeated; but when every try
            // ends with the step's own workers' frames refused, repeating cannot help: stop
            // and say why.
            rejectedAttempts = refusedThisAttempt > 0 ? rejectedAttempts + 1 : 0
            if rejectedAttempts >= Self.maxRejectedAttempts, let last = lastRefusal {
                throw ClusterError.stepRefused(step: work.step, attempts: rejectedAttempts, lastReason: last)
            }
            log.warning("step \(work.step): no gradient arrived (every worker left or was lost); repeating the step")
        }
    }
    var stepsStarted = 0
    var rejectedAttempts = 0
    /// Frames refused this try from workers the step was waiting for, and the last reason.
    var refusedThisAttempt = 0
    var lastRefusal: String?
    static let maxRejectedAttempts = 3
    var lastWaitLog = -Double.infinity

    func runStep(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient? {
        let members = live
        let shares = EpochPlan.split(work.positions, shares: members.map { _ in 1 })
        averager.reset()
        stepResult = BatchResult()
        stepUp = 0; stepDown = 0
        pending = []
        // Sparse runs send only the active values; both sides know the mask.
        var values = params, count = layout.count
        if let m = masks {
            m.pack(params, into: packed.pointer)
            values = UnsafePointer(packed.pointer)
            count = m.packedCount
        }
        // What the method asks of this step travels as a generic request; the replies
        // merge by its kind.
        request = work.request
        unitScoreSum = nil
        switch request {
        case .none:
            expectedReply = .none
        case .growCandidates:
            expectedReply = .growCandidates(layerSizes: masks?.prunable.map(\.count) ?? [])
            candidateScore.zero()
        case .unitScores:
            expectedReply = .unitScores(count: UnitScores.count(config: config.model))
            unitScoreSum = UnitScores(config: config.model)
        }
        for (w, range) in zip(members, shares) where !range.isEmpty {
            let a = Assignment(epoch: UInt32(work.epoch), start: UInt32(range.lowerBound), count: UInt32(range.count))
            let fresh = w.version == work.step && w.maskVersion == (masks?.version ?? -1)
            let payload = Payload.params(a, mask: maskUpdate(for: w.maskVersion), request: request, selector: work.selector,
                                         values: fresh ? nil : values, count: count)
            if send(.params, payload, to: w, step: work.step) {
                w.version = work.step
                w.maskVersion = masks?.version ?? -1
                pending.insert(w.identity)
            }
        }
        while !pending.isEmpty {
            try pump(timeoutMs: 20)
            expireSilentWorkers(pending: true)
        }
        guard averager.images > 0 else { return nil }
        let images = averager.images
        averager.finish()
        runStatus?.recordBytes(up: stepUp, down: stepDown, workers: members.count)
        var score: UnsafeMutablePointer<Float>? = nil
        if case .growCandidates = request {
            VectorOps.scale(candidateScore.pointer, 1 / Float(images), candidateScore.count)
            score = candidateScore.pointer
        }
        unitScoreSum?.scale(1 / Float(images))
        return StepGradient(gradient: averager.sum.pointer, result: stepResult, bytesUp: stepUp, bytesDown: stepDown,
                            workers: members.count, growScore: score, unitScores: unitScoreSum)
    }

    public func finish(reason: String) {
        for w in workers.values where w.state == .ready {
            _ = send(.stop, Payload.reason(reason), to: w, step: currentStep)
        }
        log.info("sent stop (\(reason)) to \(live.count) worker(s)")
    }

    // MARK: messages

    @discardableResult
    func send(_ type: MessageType, _ payload: [UInt8], to w: WorkerRecord, step: Int) -> Bool {
        let header = FrameHeader(type: type, runID: runID, step: UInt64(step), maskVersion: currentMaskVersion, layoutHash: layout.hash)
        let frame = Frame(header: header, payload: payload)
        let bytes = frame.encoded(compress: options.compress)
        do {
            try router.send([w.identity, bytes])
            w.bytesDown += bytes.count
            if type == .params { stepDown += bytes.count }
            return true
        } catch {
            log.warning("worker \(w.name): cannot send \(type): \(error); marking it lost")
            markLost(w, why: "unreachable")
            return false
        }
    }

    /// Handles everything waiting on both sockets, waiting up to `timeoutMs` for the first.
    func pump(timeoutMs: Int) throws {
        let sockets = [router] + (status.map { [$0] } ?? [])
        var ready = try Poller.readable(sockets, timeoutMs: timeoutMs)
        while ready.contains(true) {
            if ready[0], let parts = try router.receive() { handle(parts) }
            if ready.count > 1 && ready[1], let s = status, let _ = try s.receive() { answerStatus(s) }
            ready = try Poller.readable(sockets, timeoutMs: 0)
        }
    }

    func handle(_ parts: [[UInt8]]) {
        guard parts.count == 2 else { return countBad(peer: parts.first ?? [], WireError.malformedPayload("\(parts.count) message parts")) }
        let identity = parts[0], bytes = parts[1]
        let frame: Frame
        do {
            // A join comes before the worker knows the run, so it is checked without the run id.
            frame = try Frame.decode(bytes, limits: limits)
            if workers[identity] == nil && frame.header.type != .join {
                throw WireError.malformedPayload("\(frame.header.type) from a peer that has not joined")
            }
        } catch {
            return countBad(peer: identity, error)
        }
        let now = clock.seconds
        if let w = workers[identity] {
            w.lastHeard = now
            w.bytesUp += bytes.count
        }
        switch frame.header.type {
        case .join:
            admit(identity, frame)
        case .grads:
            guard let w = workers[identity], w.state == .ready else { return countBad(peer: identity, WireError.malformedPayload("grads from a worker not in the run")) }
            guard Int(frame.header.step) == currentStep, pending.contains(identity) else {
                log.debug("worker \(w.name): stale gradient for step \(frame.header.step) dropped (now \(currentStep))")
                return
            }
            // A gradient computed on another topology would land on the wrong weights.
            guard frame.header.maskVersion == currentMaskVersion else {
                return countBad(peer: identity, WireError.malformedPayload(
                    "gradient computed on mask version \(frame.header.maskVersion), the run is at \(currentMaskVersion)"))
            }
            do {
                let d: Payload.DecodedGrads
                if let m = masks {
                    d = try Payload.decodeGrads(frame.payload, into: packed.pointer, count: m.packedCount, expecting: expectedReply)
                    m.unpack(packed.pointer, into: scratch.pointer)
                } else {
                    d = try Payload.decodeGrads(frame.payload, into: scratch.pointer, count: layout.count, expecting: expectedReply)
                }
                let s = d.summary
                let weight = Float(s.images)
                switch d.reply {
                case .none:
                    break
                case let .unitScores(flat):
                    guard let u = UnitScores(flat: flat, config: config.model) else { throw WireError.malformedPayload("unit scores do not fit the model") }
                    unitScoreSum?.add(u, weight: weight)
                case let .growCandidates(candidates):
                    for (t, c) in zip(masks?.prunable ?? [], candidates) {
                        let dst = candidateScore.pointer + t.offset
                        for (i, v) in zip(c.indices, c.values) { dst[Int(i)] += weight * v }
                    }
                }
                averager.add(scratch.pointer, batch: Int(s.images))
                stepResult = stepResult + BatchResult(lossSum: s.lossSum, correct: Int(s.correct), count: Int(s.images))
                stepUp += bytes.count
                w.stepsDone += 1
                pending.remove(identity)
            } catch {
                countBad(peer: identity, error)
            }
        case .heartbeat:
            break
        case .leave:
            if let w = workers[identity] {
                let why = (try? Payload.decodeReason(frame.payload)) ?? "?"
                log.info("worker \(w.name) left (\(why))")
                w.state = .left
                pending.remove(identity)
            }
        default:
            countBad(peer: identity, WireError.malformedPayload("\(frame.header.type) is not a worker message"))
        }
    }

    func admit(_ identity: [UInt8], _ frame: Frame) {
        let join: JoinMessage
        do {
            join = try Payload.decodeJSON(JoinMessage.self, frame.payload)
        } catch {
            return countBad(peer: identity, error)
        }
        guard frame.header.layoutHash == layout.hash || frame.header.layoutHash == 0 else {
            return countBad(peer: identity, WireError.wrongLayout(expected: layout.hash, found: frame.header.layoutHash))
        }
        let now = clock.seconds
        let record: WorkerRecord
        let isNew = workers[identity] == nil
        if let old = workers[identity] {
            // A restarted worker reusing its id (ROUTER_HANDOVER): same rank, fresh state.
            old.state = .ready; old.host = join.host; old.pid = join.pid; old.threads = join.threads
            old.lastHeard = now; old.version = -1
            pending.remove(identity)
            record = old
            log.info("worker \(join.name) rejoined from \(join.host) (pid \(join.pid))")
        } else {
            record = WorkerRecord(identity: identity, join: join, rank: nextRank, now: now, version: -1)
            nextRank += 1
            workers[identity] = record
            log.info("worker \(join.name) joined from \(join.host) (pid \(join.pid), \(join.threads) threads) as rank \(record.rank)")
        }
        // handle() counted the bytes of a known worker's join; a new one's are counted here.
        if isNew { record.bytesUp += FrameHeader.size + frame.payload.count }
        let info = WelcomeInfo(rank: record.rank, runID: runID, config: config.yaml,
                               heartbeatSeconds: options.heartbeatSeconds, gradientCodec: options.gradientCodec)
        // Weights of the step being gathered, so the worker can join the next step, and
        // the whole mask of a sparse run.
        let welcome: [UInt8]
        if let p = currentParams {
            welcome = Payload.welcome(info, params: p, count: layout.count, mask: masks.map { (UInt32($0.version), $0.bitmap) })
        } else {
            welcome = Payload.welcome(info, params: scratch.pointer, count: 0, mask: nil)
        }
        _ = send(.welcome, welcome, to: record, step: currentStep)
        record.version = currentParams == nil ? -1 : currentStep
        record.maskVersion = currentParams == nil ? -1 : (masks?.version ?? -1)
    }

    func expireSilentWorkers(pending inStep: Bool) {
        let now = clock.seconds
        for w in workers.values where w.state == .ready && now - w.lastHeard > options.workerTimeout {
            markLost(w, why: String(format: "silent for %.1f s", now - w.lastHeard))
        }
    }

    func markLost(_ w: WorkerRecord, why: String) {
        guard w.state == .ready else { return }
        w.state = .lost
        pending.remove(w.identity)
        log.warning("worker \(w.name) (rank \(w.rank), \(w.host)) lost: \(why); continuing with \(live.count) worker(s)")
    }

    func countBad(peer: [UInt8], _ error: Error) {
        let name = workers[peer]?.name ?? String(decoding: peer.prefix(64), as: UTF8.self)
        badFrameTotal += 1
        if pending.contains(peer) {
            refusedThisAttempt += 1
            lastRefusal = "\(name): \(error)"
        }
        let n = badFrames[name, default: 0] + 1
        badFrames[name] = n
        if n == 1 { log.warning("bad frame from \(name.isEmpty ? "<anonymous>" : name) dropped: \(error) (further ones from this peer are counted, not logged)") }
    }

    // MARK: status

    func answerStatus(_ socket: ZMQSocket) {
        var doc = runStatus?.document ?? [:]
        let now = clock.seconds
        doc["run_id"] = String(runID, radix: 16)
        doc["endpoint"] = endpoint
        doc["bad_frames"] = badFrameTotal
        doc["workers"] = workers.values.sorted { $0.rank < $1.rank }.map { w in
            ["id": w.name, "rank": w.rank, "host": w.host, "pid": Int(w.pid), "threads": w.threads, "state": w.state.rawValue,
             "seconds_since_heard": (now - w.lastHeard * 1).rounded(toPlaces: 2), "steps_done": w.stepsDone,
             "bytes_up": w.bytesUp, "bytes_down": w.bytesDown] as [String: Any]
        }
        let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])) ?? Data("{}".utf8)
        do { try socket.send([Array(data)]) } catch { log.warning("status reply failed: \(error)") }
    }
}

extension Double {
    func rounded(toPlaces p: Int) -> Double {
        let f = Foundation.pow(10.0, Double(p))
        return (self * f).rounded() / f
    }
}

/// Why the coordinator gave up on a run (rather than repeating a step forever).
public enum ClusterError: Error, CustomStringConvertible {
    case stepRefused(step: Int, attempts: Int, lastReason: String)

    public var description: String {
        switch self {
        case let .stepRefused(step, attempts, reason):
            "step \(step) was tried \(attempts) times and every time the workers' frames were refused (last: \(reason)); "
                + "this is a protocol bug or a worker built from other sources; the run stops here and "
                + "resumes from its last checkpoint with --resume once the workers match"
        }
    }
}
