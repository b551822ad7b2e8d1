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

/// A worker process: joins the coordinator, receives the config and the weights, and
/// answers each step's parameters with the gradient of its share of the batch. The
/// socket lives on the calling thread; gradients are computed on a second thread so
/// heartbeats keep flowing during long steps.
public final class WorkerNode: @unchecked Sendable {
    let options: WorkerOptions
    let log: Logger
    let clock = MonotonicClock()
    /// The connection to the coordinator and what it has seen (the worker's transport).
    let link: WorkerLink

    /// The welcome this worker holds (nil: it is not (or no longer) in a run).
    var info: WelcomeInfo?
    /// What the welcome set up (kept across rejoins to the same run).
    var run: WorkerRun?
    /// Replicas found out of step (a checksum that differs, a missed update) and resynced.
    public private(set) var resyncs = 0
    /// Step frames that could not be read (counted and answered with a resync, never the end).
    public private(set) var badFrames = 0
    /// With `hooks.recordStateDigests`: CRC-32 of weights and moments by the step they are of.
    public var stateDigests: [Int: UInt32] { run?.stateDigests ?? [:] }
    let hooks: WorkerTestHooks

    /// Resyncs asked for because a step frame could not be used, since the last gradient sent.
    var resyncsWithoutProgress = 0
    var job: ComputeJob?
    var queued: Frame?
    public private(set) var stepsDone = 0

    public init(options: WorkerOptions, logger: Logger, hooks: WorkerTestHooks = WorkerTestHooks()) throws {
        self.options = options
        self.hooks = hooks
        log = logger
        link = try WorkerLink(options: options)
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
                if let l = run?.replica.assembler.loader { log.info("\(l.summary)") }
                return "interrupted"
            }
            let now = clock.seconds
            var failures: [HandshakeFailure] = []
            var connectedNow = false
            for event in try link.handshakes.drainEvents() {
                switch event {
                // (The first connection's event may be read after the welcome: only a
                // connection after a drop is a reconnection.)
                case .connected:
                    link.handshakeSeen = true
                    if info != nil && link.disconnected { link.reconnected = true } else { connectedNow = true }
                case .disconnected: if info != nil { link.disconnected = true }
                case let .handshakeFailed(f): failures.append(f)
                }
            }
            if info == nil { try explainMissingWelcome(now: now, failures: failures) }
            if connectedNow { link.joinInterval = 2 }
            if info == nil && Self.joinsNow(now: now, lastJoin: link.lastJoin, joinWentOut: link.joinWentOut, connectedNow: connectedNow, interval: link.joinInterval) {
                if link.joinWentOut && now - link.lastJoin > link.joinInterval { link.joinInterval = min(2 * link.joinInterval, 30) }
                try sendJoin()
            } else if info != nil, link.reconnected, job == nil {
                log.info("worker \(options.name): the connection to \(options.coordinator) came up again; joining again")
                link.reconnected = false; link.disconnected = false
                info = nil
                try sendJoin()
            } else if let i = info, job == nil, now - link.lastReceived > options.rejoinAfter ?? max(30, 3 * i.heartbeatSeconds, 3 * link.slowestFrame) {
                log.warning("no word from the coordinator for \(String(format: "%.1f", now - link.lastReceived)) s; asking to join again")
                info = nil; link.reconnected = false; link.disconnected = false
                try sendJoin()
            }
            // While a gradient is being computed, wake the moment it is ready (and look at
            // the socket between waits); otherwise wait on the socket.
            var socketTimeout = 50
            if let j = job {
                _ = j.done.wait(timeout: .now() + .milliseconds(100))
                socketTimeout = 0
            }
            if try Poller.readable([link.socket], timeoutMs: socketTimeout)[0] {
                while let parts = try link.socket.receive() {
                    if let reason = try handle(parts) { return reason }
                }
            }
            if let j = job, let result = j.finished {
                job = nil
                // Computed for the coordinator before the reconnection: the one there now
                // (or the same one, which has let the step go on without it) has no use for it.
                if link.reconnected { queued = nil; continue }
                try sendGradient(j, result: result)
                if let f = queued { queued = nil; try startOrResync(f) }
            }
            if info != nil && clock.seconds - link.lastSent > (info?.heartbeatSeconds ?? 1) {
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
        guard let layout = run?.layout else { return FrameLimits(maxRawBytes: Int(Int32.max)) }
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
        if info != nil { link.slowestFrame = max(now - link.lastReceived, 0.9 * link.slowestFrame) }
        link.lastReceived = now
        switch frame.header.type {
        case .welcome:
            // The welcome's wait (a join to it) primes the silence bound: it carried the weights.
            // (Only a welcome asked for: one the coordinator sends on its own follows no join.)
            if info == nil { link.slowestFrame = max(link.slowestFrame, now - link.lastJoin) }
            link.joinInterval = 2
            try welcome(frame)
        case .params:
            guard info != nil else { return nil }
            if job != nil { queued = frame } else { try startOrResync(frame) }
        case .stop:
            let why = (try? Payload.decodeReason(frame.payload)) ?? "stop"
            log.info("coordinator says stop (\(why)) after \(stepsDone) steps")
            if let l = run?.replica.assembler.loader { log.info("\(l.summary)") }
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
        if run?.configText != info.config || (run?.state.optimizer != nil) != (info.replicated == true) {
            run = try WorkerRun(info: info, options: options, hooks: hooks, log: log)
        }
        try run!.takeWelcome(&reader, step: Int(frame.header.step))
        self.info = info
    }

    /// A step frame that cannot be read (a damaged or hostile frame under a valid
    /// checksum) is counted and answered: the worker asks for the whole state again, and
    /// the coordinator's deadline lets the step go on without it. It never ends the worker.
    /// One that is read but does not fit this worker (an assignment outside its data set,
    /// a mask of another shape) is resynced too; when it still does not fit after three
    /// resyncs with no gradient sent between them, the worker does not fit the run (its
    /// data set differs) and stops saying why.
    func startOrResync(_ frame: Frame) throws {
        guard let run, let info else { return }
        do {
            switch try run.prepare(frame, rank: info.rank, receivedAt: clock.seconds) {
            case let .compute(job): start(job, on: run)
            case .idle: break
            case let .resync(why): try resync(why)
            }
        } catch let error as WireError {
            badFrames += 1
            try resync("step \(frame.header.step)'s frame could not be read (\(error); \(badFrames) so far)")
        } catch let error as WorkerError {
            resyncsWithoutProgress += 1
            guard resyncsWithoutProgress <= 3 else {
                throw WorkerError(message: "step \(frame.header.step)'s frame cannot be used after \(resyncsWithoutProgress - 1) resyncs: \(error.message)")
            }
            try resync("step \(frame.header.step)'s frame could not be used (\(error.message))")
        }
    }

    func start(_ j: ComputeJob, on run: WorkerRun) {
        job = j
        let delay = hooks.computeDelay.flatMap { Int(j.step) >= $0.fromStep ? $0.seconds : nil }
        Thread.detachNewThread {
            if let delay { Thread.sleep(forTimeInterval: delay) }
            j.finish(run.compute(j))
        }
    }

    /// The replica is out of step with the coordinator: join again, which sends the
    /// whole state (weights, moments, masks); the step goes on without this worker's share.
    func resync(_ why: String) throws {
        resyncs += 1
        run?.encoder.reset()
        run?.version = -1
        log.warning("worker \(options.name): \(why); asking the coordinator for the whole state")
        info = nil
        try sendJoin()
    }

    func sendGradient(_ j: ComputeJob, result: BatchResult) throws {
        guard let run else { return }
        var payload: [UInt8]
        do {
            payload = try run.gradientPayload(j, result: result)
            Payload.stampComputeSeconds(&payload, clock.seconds - j.receivedAt)
            if let d = hooks.answerDelay { Thread.sleep(forTimeInterval: d) }
        } catch {
            // The step asked for what this worker cannot give (the estimate without a
            // replica): it sends nothing and the deadline lets the step go on.
            log.error("worker \(options.name): step \(j.step): \(error)")
            return
        }
        try send(.grads, payload, step: j.step)
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
        link.joinWentOut = try send(.join, Payload.encodeJSON(join), step: 0, dontWait: true)
        link.lastJoin = clock.seconds
    }

    /// Whether the frame left (with `dontWait`, false when there is no connection for it).
    @discardableResult
    func send(_ type: MessageType, _ payload: [UInt8], step: UInt64, dontWait: Bool = false) throws -> Bool {
        // Gradients say which topology they were computed on (0: dense, or none yet).
        let header = FrameHeader(type: type, runID: info?.runID ?? 0, step: step, maskVersion: UInt32(clamping: run?.masks?.version ?? 0),
                                 layoutHash: run?.layout.hash ?? 0)
        guard try link.socket.send([Frame(header: header, payload: payload).encoded()], dontWait: dontWait) else { return false }
        link.lastSent = clock.seconds
        return true
    }
}
