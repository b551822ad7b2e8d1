import Compute
import Core
import Datasets
import Model
import Sparsity
import Steps

/// One step's work: which images of which epoch, and the order every worker gets.
public struct StepWork: Sendable {
    public var step: Int
    public var epoch: Int
    public var stepInEpoch: Int
    /// Positions in the epoch's permutation (see EpochPlan).
    public var positions: Range<Int>
    /// What the step asks besides the gradient, and how workers send it.
    public var order: StepOrder

    public init(step: Int, epoch: Int, stepInEpoch: Int, positions: Range<Int>, order: StepOrder = StepOrder()) {
        self.step = step; self.epoch = epoch; self.stepInEpoch = stepInEpoch; self.positions = positions
        self.order = order
    }
}

/// The batch-mean gradient of one step and what it cost.
/// A round's time, first step frame out to last answer in, and its slowest worker's own
/// seconds on it (replay, compute, encode): the difference is the wire's (and the queues').
public struct RoundTiming: Sendable, Equatable {
    public var roundSeconds: Double
    public var computeSeconds: Double
    public init(roundSeconds: Double, computeSeconds: Double) { self.roundSeconds = roundSeconds; self.computeSeconds = computeSeconds }

    /// The share of the round that was not the slowest worker's computing, in [0, 1].
    public var wireShare: Double { roundSeconds > 0 ? min(1, max(0, (roundSeconds - computeSeconds) / roundSeconds)) : 0 }
}

public struct StepGradient {
    /// Batch-size-weighted mean gradient; the server may clip it in place.
    public var gradient: UnsafeMutablePointer<Float>
    public var result: BatchResult
    /// Bytes received from and sent to workers for this step (0 in one process).
    public var bytesUp: Int = 0
    public var bytesDown: Int = 0
    public var workers: Int = 1
    /// The replies to the step's request, merged: from the cluster, grow scores built from
    /// the workers' top candidates (nil: the dense gradient is the score) and unit scores;
    /// in one process, the replica's unit scores.
    public var replies = MergedReplies()
    /// From the cluster: the images each worker's gradient brought, by worker name (0 for
    /// one that was given a share and missed its deadline, was lost or refused).
    public var workerImages: [Int]?
    /// Images of the step that no gradient brought (a worker late, lost or refused): the
    /// mean is over the others. Zero in one process.
    public var missingImages = 0
    /// From workers that send them (communication.track_variance): the image-weighted
    /// mean of their gradients' mean square per tensor, for `VarianceTracker`.
    public var meanSquares: [Double]?
    /// From the cluster: how long the round took and how much of it the slowest worker
    /// computed (nil in one process, or for a round that measures nothing).
    public var timing: RoundTiming?

    public init(gradient: UnsafeMutablePointer<Float>, result: BatchResult, bytesUp: Int = 0, bytesDown: Int = 0, workers: Int = 1,
                replies: MergedReplies = MergedReplies()) {
        self.gradient = gradient; self.result = result; self.bytesUp = bytesUp; self.bytesDown = bytesDown; self.workers = workers
        self.replies = replies
    }
}

/// What the server did with a step's gradient.
public struct AppliedStep {
    /// The step whose update this was: the weights are now those of step + 1.
    public var step: Int
    /// nil: the step was skipped (non-finite), nothing changed.
    public var report: ServerState.Update?
    /// What the update did (a skipped step's record says so), for replicas.
    public var record: ParameterUpdate
    public init(step: Int, report: ServerState.Update?, record: ParameterUpdate) {
        self.step = step; self.report = report; self.record = record
    }
}

/// Where a step's gradient comes from: the replica in this process, or workers over the
/// network. Returns nil when the run was asked to stop before a gradient was ready.
public protocol GradientSource: AnyObject {
    func gradient(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient?
    /// Called after every step with what was applied (workers that replicate the
    /// optimizer are sent it with the next step).
    func applied(_ step: AppliedStep, server: ServerState)
    /// Called once when the run ends (to release workers).
    func finish(reason: String)
    /// Called once before the first step with the state whose parameters (and masks) the
    /// source serves.
    func attach(server: ServerState)
    /// Whether `StepWork.order.compression` reaches anything: workers compress, the
    /// in-process replica has no wire and computes every value.
    var compressesGradients: Bool { get }
    /// Membership changes since the last call (joins, losses, leaves), for metrics.jsonl.
    func drainWorkerEvents() -> [WorkerEvent]
    /// Waits until a step can be computed (a cluster: enough workers connected), calling
    /// `waiting(connected, needed)` when it starts waiting and as workers arrive; false
    /// when `stop` was raised first.
    func waitUntilReady(stop: StopFlag, waiting: (_ connected: Int, _ needed: Int) -> Void) throws -> Bool
    /// Seconds spent so far waiting for workers: the run's clock (elapsed, images/s, ETA)
    /// leaves them out.
    var waitedSeconds: Double { get }
}

/// A worker joining, rejoining, being lost or leaving, as the trainer records it.
public struct WorkerEvent: Sendable, Equatable {
    /// benched: taken off the steps for a while after missing deadlines in a row;
    /// dropped: refused for good (it never answered a step in time).
    public enum Kind: String, Sendable, Codable { case joined, rejoined, lost, left, benched, dropped }
    public var kind: Kind
    public var worker: String
    public var host: String
    public var rank: Int
    /// Unix time of the change.
    public var time: Double
    /// Why (lost: what was seen; left: what the worker said).
    public var reason: String?
    public init(kind: Kind, worker: String, host: String, rank: Int, time: Double, reason: String? = nil) {
        self.kind = kind; self.worker = worker; self.host = host; self.rank = rank; self.time = time; self.reason = reason
    }
}

extension GradientSource {
    public var compressesGradients: Bool { false }
    public func drainWorkerEvents() -> [WorkerEvent] { [] }
    public func attach(server: ServerState) {}
    public func applied(_ step: AppliedStep, server: ServerState) {}
    public func waitUntilReady(stop: StopFlag, waiting: (_ connected: Int, _ needed: Int) -> Void) throws -> Bool { !stop.isRaised }
    public var waitedSeconds: Double { 0 }
}

/// The replica in this process.
public final class LocalGradientSource: GradientSource {
    public let replica: Replica
    public let plan: EpochPlan
    var order: EpochOrder
    var masks: MaskSet?

    public func attach(server: ServerState) { masks = server.masks }

    public init(replica: Replica, plan: EpochPlan) {
        self.replica = replica
        self.plan = plan
        order = EpochOrder(plan: plan)
    }

    public func gradient(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient? {
        let (indices, next) = replica.shareImages(work.positions, epoch: work.epoch, order: &order)
        let result = replica.computeGradient(params: params, indices: indices, epoch: work.epoch,
                                             masks: masks, request: work.order.request, selector: work.order.selector, next: next)
        // Grow candidates are not needed here: the whole gradient is the grow score.
        return StepGradient(gradient: replica.grads.pointer, result: result,
                            replies: MergedReplies(unitScores: work.order.request.unitScoreSeed == nil ? nil : replica.unitScores))
    }

    public func finish(reason: String) {}
}
