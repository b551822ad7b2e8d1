import Foundation
import Sparsity

/// What a training run tells its observer (the CLI's progress bar, tests).
public enum TrainingEvent: Sendable {
    case started(TrainingPlan)
    case step(StepReport)
    case evaluating(done: Int, total: Int)
    case evaluated(EvalReport)
    case checkpointed(path: String, step: Int)
    /// The run waits for workers before a step (`connected` of `needed` are there); the
    /// next `.step` ends the wait. The run's clock leaves the wait out.
    case waiting(connected: Int, needed: Int)
    /// The workers a wait was for are there: the step starts (only after a `.waiting`).
    case ready
    /// A step was applied: `step` steps are done (every step; `.step` reports come per log window).
    case advanced(step: Int)
}

public struct TrainingPlan: Sendable {
    public var runDirectory: String
    public var startStep: Int
    public var totalSteps: Int
    public var stepsPerEpoch: Int
    public var trainImages: Int
    public var testImages: Int
    public var parameters: Int
    public var threads: Int
    /// What runs the matrix products here (`EngineReport.summary`).
    public var engine: String
    /// What the workers send (`CompressionSchedule.summary`; nil: every value).
    public var wire: String? = nil
}

/// A log window's progress: the run's one progress record. metrics.jsonl's train lines
/// (`MetricsRecord(train:)`), the status document (`StatusDocument.window`), its
/// Prometheus text and the progress display all come from it.
public struct StepReport: Sendable, Codable, Equatable {
    public var step: Int
    public var totalSteps: Int
    /// Fractional epochs done (1.5 = halfway through the second epoch).
    public var epoch: Double
    /// Mean training loss (label-smoothed) over the steps since the last report.
    public var loss: Double
    public var trainAccuracy: Double
    public var lr: Double
    public var gradNorm: Double
    public var imagesPerSecond: Double
    public var elapsedSeconds: Double
    public var etaSeconds: Double
    /// Density, FLOPs and exploration of a sparse run.
    public var sparsity: SparsityReport? = nil
    /// Bytes from and to the workers per step over the window (0 in one process), and per
    /// worker against a dense fp32 exchange (4 bytes a parameter each way; nil in one process).
    public var bytesUpPerStep = 0
    public var bytesDownPerStep = 0
    public var bytesUpRatioToDenseFp32: Double? = nil
    public var bytesDownRatioToDenseFp32: Double? = nil
    /// The window's last step: the images each worker's gradient brought, by worker name
    /// (0: it was given a share and was late, lost or refused; nil in one process).
    public var imagesPerWorker: [Int]? = nil
    /// Images of the window's steps that no gradient brought (nil: none missing).
    public var imagesMissing: Int? = nil
    /// Top-k with a tracked frozen variance: the median over tensors of the factor on √v
    /// the window's last update took.
    public var varianceScale: Double? = nil
    /// From the cluster: the share of the window's measured rounds that was not the slowest
    /// worker's computing (the wire, the queues, the coordinator's encoding), and the
    /// seconds a round took on average (nil: nothing measured).
    public var wireShare: Double? = nil
    public var roundSeconds: Double? = nil
}

public struct EvalReport: Sendable, Codable, Equatable {
    public var step: Int
    public var epoch: Int
    public var accuracy: Double
    public var loss: Double
    public var images: Int
    public var seconds: Double
}

public struct TrainingSummary: Sendable {
    public var runDirectory: String
    public var checkpoint: String?
    public var metrics: String
    public var steps: Int
    public var stopped: Bool
    public var lastEval: EvalReport?
    public var elapsedSeconds: Double
    /// Seconds this session waited for workers, left out of `elapsedSeconds`.
    public var waitedSeconds: Double = 0
    public var sparsity: SparsityReport?
    /// From a cluster: mean bytes per worker and step, up and down, over this session.
    public var wire: WireTotals? = nil
    /// Top-k with a tracked frozen variance: the factors on √v per tensor at the last update.
    public var varianceScale: [Float]? = nil
    /// A sparse run: active prunable weights still exactly zero (grown, no update yet;
    /// `MaskSet.untrainedCounts`). Under top-k they can wait hundreds of steps.
    public var untrainedWeights: Int? = nil
    /// A sparse run: the active prunable weights, of which those are a part.
    public var activePrunableWeights: Int? = nil
}

/// What went over the wire in a session, per worker and step, against a dense fp32 exchange.
public struct WireTotals: Sendable {
    public var upPerWorkerStep: Double
    public var downPerWorkerStep: Double
    /// 4 bytes a parameter: every gradient up, every weight down.
    public var denseFp32Bytes: Int
    public var upRatio: Double { upPerWorkerStep / Double(max(1, denseFp32Bytes)) }
    public var downRatio: Double { downPerWorkerStep / Double(max(1, denseFp32Bytes)) }
}
