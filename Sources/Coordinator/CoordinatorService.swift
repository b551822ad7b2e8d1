import Compression
import Config
import Core
import Datasets
import Foundation
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Steps
import Training
import Transport
import Wire

/// The coordinator's socket thread (ps-lite's Van) and the step round it runs (ps-lite's
/// Customer: assignment, pending replies, refusals). The thread owns the sockets and
/// services them all the time, so the status socket answers and workers hear heartbeats
/// while the trainer evaluates or writes a checkpoint. The trainer's thread talks to it
/// through `cond`: it opens a window (its parameters and masks are readable and do not
/// change), posts a round and waits for its gradient.
final class CoordinatorService: @unchecked Sendable {
    let options: ClusterOptions
    let config: RunConfig
    let layout: ParameterLayout
    let log: Logger
    let runID: UInt64
    let limits: FrameLimits
    let endpoint: String
    let statusEndpoint: String?
    let clock = MonotonicClock()

    // The router, status and wake receiver belong to the service thread; the wake sender
    // to whoever holds `wakeLock`.
    private let context: ZMQContext
    let router: ZMQSocket
    private let status: ZMQSocket?
    private let wakeIn: ZMQSocket
    private let wakeOut: ZMQSocket
    private let wakeLock = NSLock()
    /// The CURVE gatekeeper (ZAP handler and handshake monitors), when the run has keys.
    private let curveGuard: CurveGuard?
    private let statusCurve: Bool

    // Everything below is guarded by `cond`.
    let cond = NSCondition()
    let membership = Membership()
    private let aggregator: GradientAggregator
    private let packedParams: FloatBuffer
    private var balancer: BatchBalancer
    var server: ServerState?
    var runStatus: RunStatus?
    /// The status document as of the last half second, for readers on other threads (the
    /// Prometheus endpoint); membership itself belongs to the socket thread.
    private var snapshot: (doc: StatusDocument, at: Double)?
    private let snapshotLock = NSLock()
    var statusSnapshot: StatusDocument? { snapshotLock.withLock { snapshot?.doc } }
    /// Membership changes the trainer has not yet written to metrics.jsonl (bounded: a
    /// flapping worker must not grow it without end while no step runs).
    private var workerEvents: [WorkerEvent] = []
    func drainWorkerEvents() -> [WorkerEvent] {
        snapshotLock.withLock { defer { workerEvents = [] }; return workerEvents }
    }
    func record(_ kind: WorkerEvent.Kind, _ w: WorkerRecord, reason: String? = nil) {
        let e = WorkerEvent(kind: kind, worker: w.name, host: w.host, rank: w.rank,
                            time: (Date().timeIntervalSince1970 * 1000).rounded() / 1000, reason: reason)
        snapshotLock.withLock {
            workerEvents.append(e)
            if workerEvents.count > 1000 { workerEvents.removeFirst(workerEvents.count - 1000) }
        }
    }
    /// The trainer's parameters while it waits in `gradient` (nil otherwise), and its step.
    private var window: UnsafePointer<Float>?
    var windowStep = 0
    /// The topology version frames carry (0: dense), as of the last window.
    var maskVersion: UInt32 = 0
    private var masks: MaskSet? { server?.masks }

    private var postedRound: StepWork?
    private var roundActive = false
    private var roundDone = false
    private var roundResult: StepGradient?
    var roundStep = 0
    private var roundWorkers = 0
    /// The round's workers whose gradient has not been added yet (arrived or not).
    var pending: Set<[UInt8]> = []
    /// The round's workers in the order their gradients are added: by name, so the sum's
    /// float rounding, and with it the run, does not depend on who answered first or who
    /// joined first (a run resumed after a crash repeats the uninterrupted one bit for bit).
    var roundOrder: [[UInt8]] = []
    private var roundNext = 0
    /// Gradients that arrived before their turn in `roundOrder`.
    var early: [[UInt8]: (payload: [UInt8], bytes: Int, at: Double)] = [:]
    private var roundUp = 0, roundDown = 0
    /// The round's members (benched ones sit it out), in name order, and the images each
    /// one's gradient brought (a late, lost or refused one brings none).
    private var roundMembers: [[UInt8]] = []
    private var roundImages: [[UInt8]: Int] = [:]
    /// The images the step asked for, and the answers so far (images, seconds) that
    /// judge a worker not yet measured (`StepDeadline.roundRate`).
    private var roundPlanned = 0
    var roundAnswers: [(images: Int, seconds: Double)] = []
    /// Workers taken off this step for missing its deadline.
    var lateThisRound: [String] = []
    let deadlines: DeadlinePolicy
    /// Tests: the step frame to this worker at this step is not sent (as a frame lost on
    /// the way), so the round must end by the deadline.
    var dropStepFrame: (worker: String, step: Int)?
    /// Frames refused this round from workers the round waited for, and the last such refusal.
    private(set) var refusedThisRound = 0
    /// Of those, the ones refused for a NaN or infinite loss or gradient.
    private(set) var nonFiniteThisRound = 0
    private(set) var lastRefusal: String?
    private(set) var badFrames: [String: Int] = [:]
    var lastRejectSent: [[UInt8]: Double] = [:]
    private(set) var badFrameTotal = 0

    /// The downlink carries updates (`communication.downlink`): workers replicate the
    /// optimizer and each step's frame is one for all.
    let replicated: Bool
    /// The update that took the server from the previous step's weights to the window's.
    private(set) var lastUpdate: ParameterUpdate?
    /// Tests: CRC-32 of weights and moments after each update, by the step they are of.
    private(set) var stateDigests: [Int: UInt32] = [:]

    private var stopReason: String?
    private var quitting = false
    private var exited = false
    private var failure: Error?

    init(config: RunConfig, options: ClusterOptions, logger: Logger) throws {
        self.config = config
        self.options = options
        log = logger
        layout = ParameterLayout(config: config.model)
        var seed = Xoshiro256(seed: UInt64(ProcessInfo.processInfo.processIdentifier) ^ UInt64(Date().timeIntervalSince1970 * 1e6))
        runID = seed.next()
        context = try ZMQContext()
        let maxBytes = FrameLimits.payloadBound(parameters: layout.count)
        limits = FrameLimits(maxRawBytes: maxBytes, runID: runID, layoutHash: layout.hash)
        // The ZAP handler is bound before any CURVE socket binds: a CURVE server with no
        // handler admits every client that knows its public key.
        let logger = logger, ctx = context
        curveGuard = try options.curve.map { keys in try CurveGuard(ctx, keys: keys) { logger.warning("\($0)") } }
        router = try ZMQSocket.coordinatorRouter(context, maxMessageBytes: Int64(maxBytes + 1 << 20), heartbeatMs: Int32(options.heartbeatSeconds * 1000))
        if let keys = options.curve, let guardian = curveGuard {
            try router.makeCurveServer(secretKey: keys.secretKey)
            try guardian.watch(router, label: "workers")
        }
        endpoint = try router.bind(options.bind)
        if let s = options.statusBind {
            let rep = try ZMQSocket(context, .rep)
            // Status is read-only; on loopback it stays plaintext so `svite status` on the
            // head node needs no keys. Anywhere else it takes the same keys as the workers.
            statusCurve = options.curve != nil && (options.statusCurve ?? !Endpoint.isLoopback(s))
            if statusCurve, let keys = options.curve, let guardian = curveGuard {
                try rep.makeCurveServer(secretKey: keys.secretKey)
                try guardian.watch(rep, label: "status")
            }
            statusEndpoint = try rep.bind(s)
            status = rep
        } else {
            statusEndpoint = nil
            status = nil
            statusCurve = false
        }
        curveGuard?.start()
        let wake = "inproc://svite-coordinator-wake-\(String(runID, radix: 16))"
        wakeIn = try ZMQSocket(context, .pair)
        _ = try wakeIn.bind(wake)
        wakeOut = try ZMQSocket(context, .pair)
        try wakeOut.connect(wake)
        replicated = config.communication.replicatesUpdates
        aggregator = GradientAggregator(layout: layout, model: config.model)
        packedParams = FloatBuffer(count: layout.count)
        balancer = BatchBalancer(mode: options.balance)
        deadlines = config.communication.stepDeadline
        dropStepFrame = options.dropStepFrame
        log.info("coordinator listening on \(endpoint)\(statusEndpoint.map { ", status on \($0)" } ?? "") (run \(String(runID, radix: 16)))")
        if let guardian = curveGuard {
            log.info("CURVE on: admitting \(guardian.allowedNames.count) key(s) from \(options.curve?.authorizedDirectory ?? "?") (\(guardian.allowedNames.joined(separator: ", ")))\(statusCurve ? "; the status socket too" : "")")
        } else if !Endpoint.isLoopback(options.bind) {
            log.warning("no CURVE keys: anyone who reaches \(endpoint) can join the run and send gradients (see `svite keygen --help`)")
        }
        let thread = Thread { [self] in serviceLoop() }
        thread.name = "svite-coordinator"
        thread.start()
    }

    // MARK: the trainer's side

    func attach(server: ServerState) {
        // Replicas replay the records, so they carry the gradient the optimizer took.
        server.keepsUpdateGradients = replicated || options.recordStateDigests
        cond.lock(); self.server = server; cond.unlock()
    }

    /// The trainer waits in `gradient` with these parameters: late joiners may be sent them.
    func openWindow(params: UnsafePointer<Float>, step: Int) {
        cond.lock()
        window = params
        windowStep = step
        maskVersion = UInt32(clamping: masks?.version ?? 0)
        cond.unlock()
    }

    func closeWindow() {
        cond.lock(); window = nil; cond.unlock()
    }

    /// Keeps what the server just applied (its update record) for the next step's frame:
    /// the replicas' update (the update downlink), and the topology change every worker
    /// one mask version behind is sent; every few steps the record carries the weights' CRC.
    func recordApplied(_ a: AppliedStep, server: ServerState) {
        var u = a.record
        if replicated, (a.step + 1) % config.communication.checksumEverySteps == 0 || u.topology != nil {
            u.checksum = ParameterUpdate.checksum(server.params.pointer, count: layout.count)
        }
        let digest = options.recordStateDigests ? server.state.digest : nil
        cond.lock()
        lastUpdate = u
        if let digest { stateDigests[a.step + 1] = digest }
        cond.unlock()
    }

    /// Waits until `need` workers are live, calling `waiting(connected, need)` (outside the
    /// lock) when it starts waiting and whenever the count changes; false when `stop` was
    /// raised first.
    func waitForWorkers(_ need: Int, stop: StopFlag, waiting: (_ connected: Int, _ needed: Int) -> Void = { _, _ in }) throws -> Bool {
        var lastLog = clock.seconds
        var reported: Int?
        while true {
            cond.lock()
            let live = membership.live.count
            if live >= need { cond.unlock(); return true }
            if let failure { cond.unlock(); throw failure }
            if stop.isRaised { cond.unlock(); return false }
            if reported == live { _ = cond.wait(until: Date().addingTimeInterval(0.2)) }
            let now = membership.live.count
            cond.unlock()
            if now < need && reported != now {
                reported = now
                waiting(now, need)
            }
            if now < need && clock.seconds - lastLog > 10 {
                lastLog = clock.seconds
                log.info("waiting for workers: \(now) of \(need) connected")
            }
        }
    }

    /// Sends the step to the live workers and waits until every one has answered, is
    /// gone or has missed its deadline: the merged gradient, or nil when no images arrived.
    /// Once `stop` is raised the round has `stopGrace` seconds more, then is given up
    /// (nil): a stop must not wait on a stuck step.
    func runRound(_ work: StepWork, stop: StopFlag, stopGrace: Double = 2) throws -> StepGradient? {
        cond.lock()
        postedRound = work
        roundDone = false
        cond.unlock()
        wake()
        cond.lock(); defer { cond.unlock() }
        var stopSeen: Double?
        while !roundDone {
            if let failure { throw failure }
            if stop.isRaised {
                let now = clock.seconds
                if stopSeen == nil { stopSeen = now }
                if now - stopSeen! >= stopGrace {
                    let waiting = pending.compactMap { membership[$0]?.name }.sorted()
                    log.warning("stopping: step \(work.step + 1) is given up (still waiting for \(waiting.joined(separator: ", "))); the checkpoint is of the step before")
                    postedRound = nil
                    roundActive = false
                    pending = []; early = [:]
                    return nil
                }
            }
            _ = cond.wait(until: Date().addingTimeInterval(stop.isRaised ? 0.1 : 0.5))
        }
        return roundResult
    }

    /// Tells the workers to stop (when `reason` is given), then ends the thread.
    func shutdown(reason: String?) {
        cond.lock()
        if exited || quitting { cond.unlock(); return }
        stopReason = reason
        quitting = true
        cond.unlock()
        wake()
        cond.lock()
        while !exited { _ = cond.wait(until: Date().addingTimeInterval(0.1)) }
        cond.unlock()
    }

    private func wake() {
        wakeLock.lock(); defer { wakeLock.unlock() }
        _ = try? wakeOut.send([[1]], dontWait: true)
    }

    var curveStatus: StatusDocument.CurveStatus? {
        curveGuard.map {
            let c = $0.snapshot
            return .init(authorizedKeys: $0.allowedNames, admitted: c.admitted, refusedKeys: c.refusedKeys,
                         refusedHandshakes: c.refusedHandshakes, lastRefusal: c.lastRefusal, statusSocketCurve: statusCurve)
        }
    }

    // MARK: the service thread

    private func serviceLoop() {
        let sockets = [router, wakeIn] + (status.map { [$0] } ?? [])
        var timeout = 0
        while true {
            do {
                let ready = try Poller.readable(sockets, timeoutMs: timeout)
                cond.lock()
                let done = try tick(ready)
                cond.broadcast()
                cond.unlock()
                if done { break }
                // Short waits while a round is out (to notice a lost worker soon), longer between.
                timeout = roundActive ? 20 : 100
            } catch {
                cond.lock()
                failure = error
                log.error("coordinator socket thread stops: \(error)")
                cond.broadcast()
                cond.unlock()
                break
            }
        }
        try? router.setLinger(milliseconds: 1000)  // let the stop frames out
        router.close(); status?.close(); wakeIn.close(); wakeOut.close()
        curveGuard?.stop()
        cond.lock(); exited = true; cond.broadcast(); cond.unlock()
    }

    /// One pass over everything that is due. Returns true when the thread should end.
    private func tick(_ ready: [Bool]) throws -> Bool {
        if ready[1] { while try wakeIn.receive() != nil {} }
        if quitting {
            if let reason = stopReason {
                let live = membership.live
                for w in live { _ = send(.stop, Payload.reason(reason), to: w, step: windowStep) }
                log.info("sent stop (\(reason)) to \(live.count) worker(s)")
            }
            return true
        }
        if let work = postedRound {
            postedRound = nil
            startRound(work)
        }
        var more = ready
        while more[0] || (more.count > 2 && more[2]) {
            if more[0] { while let parts = try router.receive() { handle(parts) } }
            if more.count > 2 && more[2], let s = status, try s.receive() != nil {
                let doc = StatusServer.document(run: runStatus, runID: runID, endpoint: endpoint, badFrames: badFrameTotal,
                                                workers: membership.all, curve: curveStatus, now: clock.seconds)
                do { try StatusServer.answer(s, with: doc) } catch { log.warning("status reply failed: \(error)") }
            }
            more = try Poller.readable([router, wakeIn] + (status.map { [$0] } ?? []), timeoutMs: 0)
        }
        let now = clock.seconds
        if now - (snapshotLock.withLock { snapshot?.at } ?? -1) >= 0.5 {
            let doc = StatusServer.document(run: runStatus, runID: runID, endpoint: endpoint, badFrames: badFrameTotal,
                                            workers: membership.all, curve: curveStatus, now: now)
            snapshotLock.withLock { snapshot = (doc, now) }
        }
        for w in membership.silent(now: now, timeout: options.workerTimeout) {
            markLost(w, why: String(format: "silent for %.1f s", now - w.lastHeard))
        }
        // Every worker hears that the coordinator is alive at least once an interval, also
        // while it computes a long step, so a silence of a few intervals means it is gone.
        for w in membership.quiet(now: now, interval: options.heartbeatSeconds) {
            _ = send(.heartbeat, [], to: w, step: windowStep)
        }
        addInOrder()
        if roundActive { checkDeadlines(now: now) }
        if roundActive && pending.isEmpty { completeRound() }
        return false
    }

    // MARK: the step round

    /// What a worker holding mask version `have` needs to reach the current one.
    private func maskUpdate(for have: Int) -> MaskUpdate? {
        guard let m = masks, have != m.version else { return nil }
        if have >= 0, have == m.version - 1, let t = lastUpdate?.topology, t.maskVersion == UInt32(m.version) {
            return .change(version: t.maskVersion, layers: t.layers.map { MaskUpdate.LayerChange(off: $0.off, on: $0.on) })
        }
        return .bitmap(version: UInt32(m.version), bits: m.bitmap)
    }

    /// Each live worker gets its share of the step's images and what it lacks of the
    /// parameters and the mask. Runs while the trainer waits (its window is open).
    private func startRound(_ work: StepWork) {
        let params = window!
        let now = clock.seconds
        let live = membership.live.sorted { ($0.name, $0.rank) < ($1.name, $1.rank) }
        // Benched workers sit the step out, unless every one is benched: the run then goes
        // at the pace of those it has.
        let taking = live.filter { $0.deadline.takesPart(at: now) }
        let members = taking.isEmpty ? live : taking
        let weights = balancer.shares(step: work.step, members: members.map { ($0.rank, $0.throughput) })
        let shares = EpochPlan.split(work.positions, shares: weights)
        roundMembers = members.map(\.identity)
        roundImages = [:]
        roundPlanned = work.positions.count
        roundAnswers = []
        lateThisRound = []
        let m = masks
        aggregator.begin(request: work.order.request, masks: m)
        roundStep = work.step
        roundWorkers = members.count
        roundUp = 0; roundDown = 0
        refusedThisRound = 0
        nonFiniteThisRound = 0
        pending = []
        roundOrder = []; roundNext = 0; early = [:]
        if replicated {
            // Benched workers get no frame: a slow link would only queue more of them. The
            // whole state brings their replicas back when the bench ends.
            startReplicatedRound(work, members: members, shares: shares)
            return
        }
        // Sparse runs send only the active values; both sides know the mask.
        var values = params, count = layout.count
        if let m {
            m.pack(params, into: packedParams.pointer)
            values = UnsafePointer(packedParams.pointer)
            count = m.packedCount
        }
        for (w, range) in zip(members, shares) where !range.isEmpty {
            let a = Assignment(epoch: UInt32(work.epoch), start: UInt32(range.lowerBound), count: UInt32(range.count))
            let fresh = w.version == work.step && w.maskVersion == (m?.version ?? -1)
            let payload = Payload.params(StepFrame(order: work.order, shares: .one(a), mask: maskUpdate(for: w.maskVersion)),
                                         values: fresh ? nil : values, count: count)
            w.share = range.count
            if let drop = dropStepFrame, drop.worker == w.name, drop.step == work.step {
                dropStepFrame = nil
                if options.garbleStepFrame {
                    // As a frame damaged where no checksum sees it (a bug, a hostile peer).
                    var noise = Xoshiro256(seed: UInt64(work.step))
                    _ = send(.params, (0 ..< max(64, payload.count / 8)).map { _ in UInt8(truncatingIfNeeded: noise.next()) }, to: w, step: work.step)
                }
                // As a frame lost on the way: the worker never sees the step.
                w.sentAt = clock.seconds
                pending.insert(w.identity)
                roundOrder.append(w.identity)
                continue
            }
            if send(.params, payload, to: w, step: work.step) {
                w.sentAt = clock.seconds
                w.version = work.step
                w.maskVersion = m?.version ?? -1
                pending.insert(w.identity)
                roundOrder.append(w.identity)
            }
        }
        roundActive = true
    }

    /// The replicated downlink: one frame for every live worker, encoded once, with the
    /// update that takes the replicas to this step and everyone's share (a worker with none
    /// still applies the update). A worker whose replica is not at the previous step (it
    /// joined between steps, or asked for a resync) is first sent the whole state.
    private func startReplicatedRound(_ work: StepWork, members: [WorkerRecord], shares: [Range<Int>]) {
        let m = masks
        let update = lastUpdate.flatMap { Int($0.step) + 1 == work.step ? $0 : nil }
        let table = zip(members, shares).filter { !$0.1.isEmpty }.map {
            RankAssignment(rank: UInt32($0.0.rank), assignment: Assignment(epoch: UInt32(work.epoch), start: UInt32($0.1.lowerBound), count: UInt32($0.1.count)))
        }
        let payload = Payload.params(StepFrame(order: work.order, shares: .table(table), update: update), layout: layout)
        let header = FrameHeader(type: .params, runID: runID, step: UInt64(work.step), maskVersion: maskVersion, layoutHash: layout.hash)
        let frame = Frame(header: header, payload: payload).encoded(compress: options.compress)
        for (w, range) in zip(members, shares) {
            let inSync = w.version == work.step || (update != nil && w.version == work.step - 1)
            if !inSync {
                // A member of the round gets the whole state, benched or not (every worker may be).
                guard send(.welcome, welcomePayload(for: w, withState: true), to: w, step: work.step) else { continue }
                w.stateSentInRound = work.step
                w.version = work.step
            }
            guard sendEncoded(.params, frame, to: w) else { continue }
            w.version = work.step
            w.maskVersion = m?.version ?? -1
            w.share = range.count
            if !range.isEmpty {
                w.sentAt = clock.seconds
                pending.insert(w.identity)
                roundOrder.append(w.identity)
            }
        }
        roundActive = true
    }

    /// The welcome a worker gets: while the trainer waits, the weights of the step being
    /// gathered and the whole mask (and, replicated, the optimizer's state), and the worker
    /// takes part from the next step; between steps, neither (the next step brings both).
    private func welcomePayload(for record: WorkerRecord, withState: Bool? = nil) -> [UInt8] {
        let info = WelcomeInfo(rank: record.rank, runID: runID, config: config.yaml,
                               heartbeatSeconds: options.heartbeatSeconds, gradientCodec: options.gradientCodec,
                               replicated: replicated ? true : nil)
        // A benched worker gets the weights with its next share, not now: on a slow link
        // they would take seconds that its next try then waits behind.
        if let p = window, withState ?? record.deadline.takesPart(at: clock.seconds) {
            record.version = windowStep
            record.maskVersion = masks?.version ?? -1
            let snapshot = replicated ? server.map { s in
                OptimizerSnapshot(updates: s.optimizer.updates, varianceFrozen: s.optimizer.varianceFrozen,
                                  buffers: s.optimizer.stateBuffers.map { UnsafePointer($0.buffer.pointer) })
            } : nil
            return Payload.welcome(info, params: p, count: layout.count, mask: masks.map { (UInt32($0.version), $0.bitmap) }, optimizer: snapshot)
        }
        record.version = -1
        record.maskVersion = -1
        return Payload.welcome(info, params: nil, count: 0, mask: nil, sparse: config.sparsity.isSparse)
    }

    private func completeRound() {
        roundActive = false
        roundResult = aggregator.finish(bytesUp: roundUp, bytesDown: roundDown, workers: roundWorkers)
        roundResult?.workerImages = roundMembers.map { roundImages[$0] ?? 0 }
        roundResult?.missingImages = max(0, roundPlanned - aggregator.images)
        if roundResult != nil {
            runStatus?.recordBytes(up: roundUp, down: roundDown, workers: roundWorkers)
            runStatus?.recordStepDone(roundStep + 1)
        }
        roundDone = true
    }

    // MARK: messages

    @discardableResult
    private func send(_ type: MessageType, _ payload: [UInt8], to w: WorkerRecord, step: Int) -> Bool {
        let header = FrameHeader(type: type, runID: runID, step: UInt64(step), maskVersion: maskVersion, layoutHash: layout.hash)
        return sendEncoded(type, Frame(header: header, payload: payload).encoded(compress: options.compress), to: w)
    }

    /// Sends a frame already encoded (the replicated step frame is encoded once for all).
    @discardableResult
    private func sendEncoded(_ type: MessageType, _ bytes: [UInt8], to w: WorkerRecord) -> Bool {
        do {
            _ = try router.send([w.identity, bytes])
            w.bytesDown += bytes.count
            w.lastSent = clock.seconds
            if type == .params { roundDown += bytes.count }
            return true
        } catch {
            log.warning("worker \(w.name): cannot send \(type): \(error); marking it lost")
            markLost(w, why: "unreachable")
            return false
        }
    }

    private func handle(_ parts: [[UInt8]]) {
        guard parts.count == 2 else { return countBad(peer: parts.first ?? [], WireError.malformedPayload("\(parts.count) message parts")) }
        let identity = parts[0], bytes = parts[1]
        let frame: Frame
        do {
            // A join comes before the worker knows the run, so it is checked without the run id.
            frame = try Frame.decode(bytes, limits: limits)
            if membership[identity] == nil && frame.header.type != .join {
                throw WireError.malformedPayload("\(frame.header.type) from a peer that has not joined")
            }
        } catch {
            countBad(peer: identity, error)
            if membership[identity] == nil, let why = Self.refusalForStranger(error, header: Frame.peek(bytes), layout: layout.hash) {
                reject(identity, why)
            }
            return
        }
        if let w = membership[identity] {
            w.lastHeard = clock.seconds
            w.bytesUp += bytes.count
            if w.state == .lost && frame.header.type != .join && frame.header.type != .leave {
                // Silent, not gone: a stopped process continued, or its heartbeats waited
                // behind a big frame on a slow link. It holds what it held; the round
                // sends it whatever it lacks.
                w.state = .ready
                log.info("worker \(w.name) is heard again; it takes part from the next step")
                record(.rejoined, w, reason: "heard again")
            }
        }
        switch frame.header.type {
        case .join:
            admit(identity, frame)
        case .grads:
            guard let w = membership[identity], w.state == .ready else { return countBad(peer: identity, WireError.malformedPayload("grads from a worker not in the run")) }
            if let missed = w.missed, missed.step == Int(frame.header.step) {
                // The late answer to a step it missed, also when that step is being tried
                // again under the same number (its share may differ): timed, not added.
                w.missed = nil
                w.measured(images: missed.images, seconds: clock.seconds - missed.sentAt)
                log.debug("worker \(w.name): late gradient for step \(frame.header.step) dropped")
                return
            }
            guard roundActive, Int(frame.header.step) == roundStep, pending.contains(identity), early[identity] == nil else {
                if let missed = w.missed, missed.step == Int(frame.header.step) {
                    // The answer to a step it missed: it tells how slow the worker really is.
                    w.missed = nil
                    w.measured(images: missed.images, seconds: clock.seconds - missed.sentAt)
                }
                log.debug("worker \(w.name): stale gradient for step \(frame.header.step) dropped (now \(roundStep))")
                return
            }
            // A gradient computed on another topology would land on the wrong weights.
            guard frame.header.maskVersion == maskVersion else {
                return countBad(peer: identity, WireError.malformedPayload(
                    "gradient computed on mask version \(frame.header.maskVersion), the run is at \(maskVersion)"))
            }
            early[identity] = (frame.payload, bytes.count, clock.seconds)
            addInOrder()
        case .heartbeat:
            break
        case .leave:
            if let w = membership[identity] {
                let why = (try? Payload.decodeReason(frame.payload)) ?? "?"
                log.info("worker \(w.name) left (\(why))")
                w.state = .left
                record(.left, w, reason: why)
                stopWaiting(for: identity)
            }
        default:
            countBad(peer: identity, WireError.malformedPayload("\(frame.header.type) is not a worker message"))
        }
    }

    /// Adds the gradients whose turn has come: the next worker of `roundOrder` whose frame
    /// is here; a worker the round no longer waits for (lost, left, refused) is skipped.
    private func addInOrder() {
        guard roundActive else { return }
        while roundNext < roundOrder.count {
            let identity = roundOrder[roundNext]
            if let e = early.removeValue(forKey: identity) {
                roundNext += 1
                guard let w = membership[identity], pending.contains(identity) else { continue }
                do {
                    let summary = try aggregator.add(payload: e.payload)
                    w.measured(images: Int(summary.images), seconds: e.at - w.sentAt)
                    w.deadline.answered(at: e.at)
                    roundImages[identity] = Int(summary.images)
                    roundAnswers.append((Int(summary.images), e.at - w.sentAt))
                    roundUp += e.bytes
                    w.stepsDone += 1
                    pending.remove(identity)
                } catch {
                    countBad(peer: identity, error)
                }
            } else if pending.contains(identity) {
                return  // its turn, not here yet
            } else {
                roundNext += 1
            }
        }
    }

    /// The round stops waiting for a worker (lost, left, rejoined, refused), except for a
    /// gradient of it that is already here: that one is still added in its turn.
    func stopWaiting(for identity: [UInt8]) {
        if early[identity] == nil { pending.remove(identity) }
    }

    private func admit(_ identity: [UInt8], _ frame: Frame) {
        let join: JoinMessage
        do {
            join = try Payload.decodeJSON(JoinMessage.self, frame.payload)
        } catch {
            countBad(peer: identity, error)
            return reject(identity, "the join could not be read (\(error)): is this an svite worker of the same version?")
        }
        guard frame.header.layoutHash == layout.hash || frame.header.layoutHash == 0 else {
            let error = WireError.wrongLayout(expected: layout.hash, found: frame.header.layoutHash)
            countBad(peer: identity, error)
            return reject(identity, Self.anotherModel(layout.hash, theirs: frame.header.layoutHash))
        }
        if let problem = join.problem {
            countBad(peer: identity, WireError.malformedPayload("join refused: \(problem)"))
            return reject(identity, problem)
        }
        let record: WorkerRecord, isNew: Bool
        switch membership.admit(identity, join: join, now: clock.seconds, aliveWithin: max(2 * options.heartbeatSeconds, 1)) {
        case let .admitted(r, fresh):
            (record, isNew) = (r, fresh)
        case let .refused(why):
            countBad(peer: identity, WireError.malformedPayload("join refused: \(why)"))
            return reject(identity, why)
        }
        stopWaiting(for: identity)
        // A restart under the same name replaced an older connection: the round stops
        // waiting for that one too.
        for old in membership.all where old.name == join.name && old.identity != identity && old.state == .left {
            stopWaiting(for: old.identity)
        }
        if isNew {
            // handle() counts the bytes of known workers' frames; a new one's join is counted here.
            record.bytesUp += FrameHeader.size + frame.payload.count
            log.info("worker \(join.name) joined from \(join.host) (pid \(join.pid), \(join.threads) threads) as rank \(record.rank)")
            self.record(.joined, record)
        } else {
            log.info("worker \(join.name) rejoined from \(join.host) (pid \(join.pid))")
            self.record(.rejoined, record)
        }
        _ = send(.welcome, welcomePayload(for: record), to: record, step: windowStep)
    }

    private func markLost(_ w: WorkerRecord, why: String) {
        guard w.state == .ready else { return }
        w.state = .lost
        record(.lost, w, reason: why)
        stopWaiting(for: w.identity)
        log.warning("worker \(w.name) (rank \(w.rank), \(w.host)) lost: \(why); continuing with \(membership.live.count) worker(s)")
    }

    private func countBad(peer: [UInt8], _ error: Error) {
        // A peer that has not joined is named by its routing id, which it chose: escaped.
        let name = membership[peer]?.name ?? String(decoding: peer.prefix(64), as: UTF8.self).escapedForLog
        badFrameTotal += 1
        if pending.contains(peer) {
            // The step's own worker answered with something unusable: it will not send
            // another, so the step goes on without its share instead of waiting for it.
            refusedThisRound += 1
            if case .nonFinite? = error as? WireError { nonFiniteThisRound += 1 }
            lastRefusal = "\(name): \(error)"
            stopWaiting(for: peer)
            membership[peer]?.refused += 1
            log.warning("worker \(name): its answer to step \(roundStep) was refused (\(error)); the step goes on with the other workers")
        }
        let n = badFrames[name, default: 0] + 1
        badFrames[name] = n
        if n == 1 { log.warning("bad frame from \(name.isEmpty ? "<anonymous>" : name) dropped: \(error) (further ones from this peer are counted, not logged)") }
    }
}
