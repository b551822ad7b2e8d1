import Compression
import Config
import Core
import Datasets
import Foundation
import Kernels
import Logging
import Model
import Sparsity
import Steps
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
    /// How the global batch is divided among the workers.
    public var balance: BatchBalance = .throughput
    public var compress: Bool = true
    /// CURVE: the coordinator's secret key and the directory of worker keys it admits
    /// (nil: plaintext, anyone who reaches the port can join).
    public var curve: CurveServerKeys?
    /// Whether the status socket takes CURVE too (nil: when the coordinator has keys and
    /// the status socket is not bound to loopback).
    public var statusCurve: Bool?
    public init() {}
}

/// The coordinator's gradient source: sends each live worker the parameters and its share
/// of the step, gathers their gradients, and averages them weighted by images. Workers
/// that stop answering are dropped from the step; new ones are welcomed and take part
/// from the next step. Bad frames are counted and dropped.
///
/// The layers, as ps-lite's: `Membership` (who is in the run), `CoordinatorService` (the
/// socket thread and the step round), `GradientAggregator` (merging replies, no sockets),
/// `StatusServer` (the status document). This type is the trainer's view: one call per step.
public final class ClusterGradientSource: GradientSource, @unchecked Sendable {
    public let options: ClusterOptions
    let service: CoordinatorService
    let log: Logger
    public var runID: UInt64 { service.runID }
    public var endpoint: String { service.endpoint }
    public var statusEndpoint: String? { service.statusEndpoint }
    /// What the status socket would answer, as of the last half second (nil before the
    /// service's first round of its loop).
    public var statusSnapshot: StatusDocument? { service.statusSnapshot }
    var layout: ParameterLayout { service.layout }

    /// The run's progress, for the status document.
    public var runStatus: RunStatus? {
        get { locked { service.runStatus } }
        set { locked { service.runStatus = newValue } }
    }
    public var badFrameTotal: Int { locked { service.refusals.total } }
    var badFrames: [String: Int] { locked { service.refusals.byPeer } }
    var lastRefusal: String? { locked { service.refusals.last } }
    var workers: [[UInt8]: WorkerRecord] { locked { service.membership.records } }
    var live: [WorkerRecord] { locked { service.membership.live } }

    var stepsStarted = 0
    var rejectedAttempts = 0
    static let maxRejectedAttempts = 3

    public init(config: RunConfig, options: ClusterOptions, logger: Logger, hooks: CoordinatorTestHooks = CoordinatorTestHooks()) throws {
        self.options = options
        log = logger
        service = try CoordinatorService(config: config, options: options, hooks: hooks, logger: logger)
    }

    deinit { service.shutdown(reason: nil) }

    private func locked<T>(_ body: () -> T) -> T {
        service.cond.lock(); defer { service.cond.unlock() }
        return body()
    }

    // MARK: GradientSource

    public var compressesGradients: Bool { true }
    public func drainWorkerEvents() -> [WorkerEvent] { service.drainWorkerEvents() }

    public func attach(server: ServerState) { service.attach(server: server) }

    public func applied(_ step: AppliedStep, server: ServerState) { service.recordApplied(step, server: server) }

    /// The server's last update record (what the next step's frame carries down).
    public var lastUpdate: ParameterUpdate? { locked { service.updates.last } }

    /// With `hooks.recordStateDigests`: CRC-32 of weights and moments by the step they are of.
    public var stateDigests: [Int: UInt32] { locked { service.updates.digests } }

    public private(set) var waitedSeconds = 0.0

    /// Waits for the expected workers before this process's first step (also when it
    /// resumes a run, so the workers that come back a few seconds apart all take part);
    /// afterwards for any one.
    public func waitUntilReady(stop: StopFlag, waiting: (_ connected: Int, _ needed: Int) -> Void) throws -> Bool {
        let need = stepsStarted == 0 ? options.expectedWorkers : 1
        let clock = MonotonicClock()
        defer { waitedSeconds += clock.seconds }
        return try service.waitForWorkers(need, stop: stop, waiting: waiting)
    }

    public func gradient(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient? {
        service.openWindow(params: params, step: work.step)
        defer { service.closeWindow() }
        while true {
            if stop.isRaised { return nil }
            guard try waitUntilReady(stop: stop, waiting: { _, _ in }) else { return nil }
            stepsStarted += 1
            if let g = try service.runRound(work, stop: stop) {
                rejectedAttempts = 0
                return g
            }
            if stop.isRaised { return nil }
            // Workers that are lost come back and the step is repeated; but when every try
            // ends with the step's own workers' frames refused, repeating cannot help: stop
            // and say why.
            let (refused, nonFinite, last) = locked { (service.round?.refused ?? 0, service.round?.nonFinite ?? 0, service.refusals.last) }
            rejectedAttempts = refused > 0 ? rejectedAttempts + 1 : 0
            if rejectedAttempts >= Self.maxRejectedAttempts, let last {
                // Every worker's loss or gradient not finite, every time: the weights they
                // share have diverged, which no protocol fix or repetition mends.
                if nonFinite == refused { throw ClusterError.diverged(step: work.step, attempts: rejectedAttempts, lastReason: last) }
                throw ClusterError.stepRefused(step: work.step, attempts: rejectedAttempts, lastReason: last)
            }
            log.warning("step \(work.step + 1): no gradient arrived (every worker with a share was late, left or was lost); repeating the step")
        }
    }

    /// Tells the workers to stop and closes the coordinator's sockets.
    public func finish(reason: String) { service.shutdown(reason: reason) }
}

/// Why the coordinator gave up on a run (rather than repeating a step forever).
public enum ClusterError: Error, CustomStringConvertible {
    case stepRefused(step: Int, attempts: Int, lastReason: String)
    case diverged(step: Int, attempts: Int, lastReason: String)

    public var description: String {
        switch self {
        case let .diverged(step, attempts, reason):
            "step \(step) was tried \(attempts) times and every worker's loss or gradient was NaN or infinite (last: \(reason)): "
                + "the model has diverged. Resume from an earlier checkpoint (--resume) with a lower optimizer.lr or "
                + "optimizer.clip_grad_norm; under top-k, a dense warm-up at least as long as the learning rate's "
                + "(communication.dense_warmup_epochs) keeps AdamW's frozen variance sound"
        case let .stepRefused(step, attempts, reason):
            "step \(step) was tried \(attempts) times and every time the workers' frames were refused (last: \(reason)); "
                + "this is a protocol bug or a worker built from other sources; the run stops here and "
                + "resumes from its last checkpoint with --resume once the workers match"
        }
    }
}
