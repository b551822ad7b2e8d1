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

/// What tests make a coordinator do that a shipping one never does.
public struct CoordinatorTestHooks: Sendable {
    /// Keep a CRC-32 of the weights and moments after every update (`stateDigests`).
    public var recordStateDigests = false
    /// The step frame to this worker at this step is not sent (a frame lost on the way),
    /// or with `garbleStepFrame` sent with its payload replaced by noise under a valid checksum.
    public var dropStepFrame: (worker: String, step: Int)?
    public var garbleStepFrame = false
    /// Every step frame to this worker is noise under a valid checksum.
    public var garbleEveryStepFrameTo: String?
    public init() {}
}

/// The coordinator's service thread (ps-lite's server side over its Van): it owns the
/// sockets (`CoordinatorSockets`) and services them all the time, so the status socket
/// answers and workers hear heartbeats while the trainer evaluates or writes a checkpoint.
/// Membership (`Membership`) says who is in the run, the round (`StepRound`, no sockets)
/// what the step waits for, `StatusPublisher` what other threads may read. The trainer's
/// thread talks to it through `cond`: it opens a window (its parameters and masks are
/// readable and do not change), posts a round and waits for its gradient.
final class CoordinatorService: @unchecked Sendable {
    let options: ClusterOptions
    let config: RunConfig
    let layout: ParameterLayout
    let log: Logger
    let runID: UInt64
    let clock = MonotonicClock()
    let sockets: CoordinatorSockets
    let status = StatusPublisher()
    var hooks: CoordinatorTestHooks

    // Everything below is guarded by `cond`.
    let cond = NSCondition()
    let membership = Membership()
    let aggregator: GradientAggregator
    let packedParams: FloatBuffer
    var balancer: BatchBalancer
    var server: ServerState?
    var runStatus: RunStatus?
    var trainer = TrainerHandoff()
    /// The step's round (kept after it ends, for its refusals).
    var round: StepRound?
    private(set) var updates = UpdateLog()
    var refusals = Refusals()

    /// What the trainer's thread and the service thread hand each other.
    struct TrainerHandoff {
        /// The trainer's parameters while it waits in `gradient` (nil otherwise), and its step.
        var window: UnsafePointer<Float>?
        var step = 0
        /// The topology version frames carry (0: dense), as of the last window.
        var maskVersion: UInt32 = 0
        /// A round the trainer posted that the service thread has not started yet.
        var posted: StepWork?
        var done = false
        var result: StepGradient?
        var stopReason: String?
        var quitting = false
        var exited = false
        var failure: Error?
    }

    /// The server's update records as the downlink needs them.
    struct UpdateLog {
        /// The update that took the server from the previous step's weights to the window's.
        var last: ParameterUpdate?
        /// With `hooks.recordStateDigests`: CRC-32 of weights and moments after each update,
        /// by the step they are of.
        var digests: [Int: UInt32] = [:]
    }

    /// Frames refused, by peer name, and when each peer was last told why.
    struct Refusals {
        var byPeer: [String: Int] = [:]
        var total = 0
        /// The last answer of a round's member that was refused.
        var last: String?
        var lastRejectSent: [[UInt8]: Double] = [:]
    }

    var masks: MaskSet? { server?.masks }
    /// The downlink carries updates (`communication.downlink`): workers replicate the
    /// optimizer and each step's frame is one for all.
    var replicated: Bool { config.communication.replicatesUpdates }
    /// What a frame from a worker of this run must fit.
    var limits: FrameLimits {
        FrameLimits(maxRawBytes: FrameLimits.payloadBound(parameters: layout.count), runID: runID, layoutHash: layout.hash)
    }
    var deadlines: DeadlinePolicy { config.communication.stepDeadline }

    init(config: RunConfig, options: ClusterOptions, hooks: CoordinatorTestHooks, logger: Logger) throws {
        self.config = config
        self.options = options
        self.hooks = hooks
        log = logger
        layout = ParameterLayout(config: config.model)
        var seed = Xoshiro256(seed: UInt64(ProcessInfo.processInfo.processIdentifier) ^ UInt64(Date().timeIntervalSince1970 * 1e6))
        runID = seed.next()
        sockets = try CoordinatorSockets(options: options, runID: runID, maxMessageBytes: FrameLimits.payloadBound(parameters: layout.count) + 1 << 20,
                                         log: logger)
        aggregator = GradientAggregator(layout: layout, model: config.model)
        packedParams = FloatBuffer(count: layout.count)
        balancer = BatchBalancer(mode: options.balance)
        log.info("coordinator listening on \(sockets.endpoint)\(sockets.statusEndpoint.map { ", status on \($0)" } ?? "") (run \(String(runID, radix: 16)))")
        let thread = Thread { [self] in serviceLoop() }
        thread.name = "svite-coordinator"
        thread.start()
    }

    var endpoint: String { sockets.endpoint }
    var statusEndpoint: String? { sockets.statusEndpoint }

    // MARK: the trainer's side

    func attach(server: ServerState) {
        // Replicas replay the records, so they carry the gradient the optimizer took.
        server.keepsUpdateGradients = replicated || hooks.recordStateDigests
        cond.lock(); self.server = server; cond.unlock()
    }

    /// The trainer waits in `gradient` with these parameters: late joiners may be sent them.
    func openWindow(params: UnsafePointer<Float>, step: Int) {
        cond.lock()
        trainer.window = params
        trainer.step = step
        trainer.maskVersion = UInt32(clamping: masks?.version ?? 0)
        cond.unlock()
    }

    func closeWindow() {
        cond.lock(); trainer.window = nil; cond.unlock()
    }

    /// Keeps what the server just applied (its update record) for the next step's frame:
    /// the replicas' update (the update downlink), and the topology change every worker
    /// one mask version behind is sent; every few steps the record carries the weights' CRC.
    func recordApplied(_ a: AppliedStep, server: ServerState) {
        var u = a.record
        if replicated, (a.step + 1) % config.communication.checksumEverySteps == 0 || u.topology != nil {
            u.checksum = ParameterUpdate.checksum(server.params.pointer, count: layout.count)
        }
        let digest = hooks.recordStateDigests ? server.state.digest : nil
        cond.lock()
        updates.last = u
        if let digest { updates.digests[a.step + 1] = digest }
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
            if let failure = trainer.failure { cond.unlock(); throw failure }
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
        trainer.posted = work
        trainer.done = false
        cond.unlock()
        sockets.wake()
        cond.lock(); defer { cond.unlock() }
        var stopSeen: Double?
        while !trainer.done {
            if let failure = trainer.failure { throw failure }
            if stop.isRaised {
                let now = clock.seconds
                if stopSeen == nil { stopSeen = now }
                if now - stopSeen! >= stopGrace {
                    let waiting = (round?.pending ?? []).compactMap { membership[$0]?.name }.sorted()
                    log.warning("stopping: step \(work.step + 1) is given up (still waiting for \(waiting.joined(separator: ", "))); the checkpoint is of the step before")
                    trainer.posted = nil
                    round?.active = false
                    return nil
                }
            }
            _ = cond.wait(until: Date().addingTimeInterval(stop.isRaised ? 0.1 : 0.5))
        }
        return trainer.result
    }

    /// Tells the workers to stop (when `reason` is given), then ends the thread.
    func shutdown(reason: String?) {
        cond.lock()
        if trainer.exited || trainer.quitting { cond.unlock(); return }
        trainer.stopReason = reason
        trainer.quitting = true
        cond.unlock()
        sockets.wake()
        cond.lock()
        while !trainer.exited { _ = cond.wait(until: Date().addingTimeInterval(0.1)) }
        cond.unlock()
    }

    func drainWorkerEvents() -> [WorkerEvent] { status.drain() }
    var statusSnapshot: StatusDocument? { status.document }

    // MARK: the service thread

    private func serviceLoop() {
        var timeout = 0
        while true {
            do {
                let ready = try sockets.poll(timeoutMs: timeout)
                cond.lock()
                let done = try tick(ready)
                cond.broadcast()
                cond.unlock()
                if done { break }
                // Short waits while a round is out (to notice a lost worker soon), longer between.
                timeout = round?.active == true ? 20 : 100
            } catch {
                cond.lock()
                trainer.failure = error
                log.error("coordinator socket thread stops: \(error)")
                cond.broadcast()
                cond.unlock()
                break
            }
        }
        sockets.close()
        cond.lock(); trainer.exited = true; cond.broadcast(); cond.unlock()
    }

    /// One pass over everything that is due. Returns true when the thread should end.
    private func tick(_ ready: CoordinatorSockets.Ready) throws -> Bool {
        if trainer.quitting {
            if let reason = trainer.stopReason {
                let live = membership.live
                for w in live { _ = send(.stop, Payload.reason(reason), to: w, step: trainer.step) }
                log.info("sent stop (\(reason)) to \(live.count) worker(s)")
            }
            return true
        }
        if let work = trainer.posted {
            trainer.posted = nil
            startRound(work)
        }
        var more = ready
        while more.workers || more.status {
            if more.workers { while let parts = try sockets.receive() { handle(parts) } }
            if more.status {
                do { _ = try sockets.answerStatus { statusDocument(now: clock.seconds) } } catch { log.warning("status reply failed: \(error)") }
            }
            more = try sockets.poll(timeoutMs: 0)
        }
        let now = clock.seconds
        status.refresh(now: now) { statusDocument(now: now) }
        for w in membership.silent(now: now, timeout: options.workerTimeout) {
            markLost(w, why: String(format: "silent for %.1f s", now - w.lastHeard))
        }
        // Every worker hears that the coordinator is alive at least once an interval, also
        // while it computes a long step, so a silence of a few intervals means it is gone.
        for w in membership.quiet(now: now, interval: options.heartbeatSeconds) {
            _ = send(.heartbeat, [], to: w, step: trainer.step)
        }
        addInOrder()
        if let round, round.active {
            checkDeadlines(now: now)
            if round.isComplete { completeRound() }
        }
        return false
    }

    func statusDocument(now: Double) -> StatusDocument {
        StatusServer.document(run: runStatus, runID: runID, endpoint: endpoint, badFrames: refusals.total,
                              workers: membership.all, curve: sockets.curveStatus, now: now)
    }

    var curveStatus: StatusDocument.CurveStatus? { sockets.curveStatus }
}
