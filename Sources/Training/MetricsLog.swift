import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Sparsity

/// Metrics as JSON lines, one object per line, appended and flushed as they happen so a
/// crash loses at most the line being written. When the disk refuses a line (full, gone),
/// training goes on: the lines are kept in memory (up to `maxUnwritten`) and written as
/// soon as a write succeeds again.
public final class MetricsLog {
    public let path: String
    let handle: FileHandle
    private var unwritten: [Data] = []
    /// Whether the last write failed part-way (the retry then starts on a new line).
    private var broken = false
    /// Why the last write failed (nil: everything is on disk).
    public private(set) var lastError: String?
    /// Lines dropped because more than `maxUnwritten` were waiting.
    public private(set) var dropped = 0
    public var unwrittenCount: Int { unwritten.count }
    static let maxUnwritten = 100_000

    /// Opens (creating) the log. `keepThroughStep`: when resuming, lines of steps after
    /// the checkpoint are dropped first, since those steps will run again.
    public init(path: String, keepThroughStep: Int? = nil) throws {
        self.path = path
        let fm = FileManager.default
        if let last = keepThroughStep, let data = fm.contents(atPath: path) {
            let kept = String(decoding: data, as: UTF8.self).split(separator: "\n").filter { line in
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let step = obj["step"] as? Int else { return false }
                return step <= last
            }
            try AtomicFile.write(path, data: Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8))
        }
        // A new run starts the file afresh; a resumed one appends.
        let flags = O_WRONLY | O_CREAT | O_APPEND | (keepThroughStep == nil ? O_TRUNC : 0)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else {
            throw CheckpointError(path: path, message: "cannot open the metrics log for writing: \(String(cString: strerror(errno)))")
        }
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Writes one record, stamped with the time; keys sorted so lines diff cleanly.
    public func write(_ record: MetricsRecord) {
        var r = record
        if r.time == nil { r.time = (Date().timeIntervalSince1970 * 1000).rounded() / 1000 }
        unwritten.append(r.encoded() + Data("\n".utf8))
        if unwritten.count > Self.maxUnwritten { unwritten.removeFirst(); dropped += 1 }
        flush()
    }

    /// Writes the waiting lines; false when the disk refused (they stay waiting).
    @discardableResult
    public func flush() -> Bool {
        while let line = unwritten.first {
            do {
                try handle.write(contentsOf: broken ? Data("\n".utf8) + line : line)
            } catch {
                lastError = "\(error)"
                broken = true
                return false
            }
            broken = false
            unwritten.removeFirst()
        }
        lastError = nil
        return true
    }

    /// Reads every record of a log (lines that are not records are skipped).
    public static func read(_ path: String) -> [MetricsRecord] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let decoder = MetricsRecord.decoder()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? decoder.decode(MetricsRecord.self, from: Data($0.utf8))
        }
    }
}

/// One line of metrics.jsonl: written by the trainer, read by experiments, tools and the
/// tests. JSON keys are the fields in snake_case; fields a kind of record does not have
/// are absent; a non-finite number is written as "nan"/"inf" rather than losing the line.
public struct MetricsRecord: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case start, resume, train, eval, stopped, end
        /// A step counted without an update (`training.on_nonfinite: skip`); `reason` says why.
        case skipped
        /// A worker joined, rejoined, was lost or left (`event`, `worker`, `host`, `rank`, `reason`).
        case worker
        /// `gradient_density: auto` decided (`gradient_density` from this step on, `wire_share`, `reason`).
        case wire
    }

    public var kind: Kind
    /// Steps done when the record was written.
    public var step: Int
    /// Unix time of writing (seconds).
    public var time: Double?

    // start
    public var run: String?
    public var totalSteps: Int?
    public var stepsPerEpoch: Int?
    public var parameters: Int?
    public var threads: Int?
    public var trainImages: Int?
    public var testImages: Int?

    // train (means over the window since the last train record) and eval
    public var epoch: Double?
    public var loss: Double?
    public var trainAccuracy: Double?
    public var lr: Double?
    public var gradNorm: Double?
    public var imagesPerSecond: Double?
    public var elapsedSeconds: Double?
    public var bytesUpPerStep: Int?
    public var bytesDownPerStep: Int?
    /// Those bytes per worker against a dense fp32 exchange (4 bytes a parameter each way).
    public var bytesUpRatioToDenseFp32: Double?
    public var bytesDownRatioToDenseFp32: Double?
    /// The window's last step: the images each worker's gradient brought, by worker name
    /// (0: it was given a share and was late, lost or refused).
    public var imagesPerWorker: [Int]?
    /// Images of the window's steps that no gradient brought (a worker late, lost or
    /// refused; the step's mean is over the rest). Absent when none was missing.
    public var imagesMissing: Int?
    /// Top-k with a tracked frozen variance: the median over tensors of the factor on √v
    /// the window's last update took (`VarianceTracker`).
    public var varianceScale: Double?
    /// Train: the share of a round that was not computing (`StepReport.wireShare`), and a round's seconds.
    public var wireShare: Double?
    public var roundSeconds: Double?
    /// Wire: the gradient density auto chose (1: every value).
    public var gradientDensity: Double?
    public var evalAccuracy: Double?
    public var evalLoss: Double?
    public var evalSeconds: Double?

    // sparse runs, as of the record (SparsityReport's figures)
    public var density: Double?
    public var sparsity: Double?
    public var activeParameters: Int?
    public var flops: Double?
    public var denseFlops: Double?
    public var flopsSaving: Double?
    public var explorationRate: Double?
    public var maskVersion: Int?
    public var heads: Int?
    public var neurons: Int?

    // end, stopped
    public var cpuSeconds: Double?
    /// Seconds the session waited for workers, left out of elapsed_seconds and images/s.
    public var waitedSeconds: Double?
    /// Why a run stopped early (a `stopped` record).
    public var reason: String?
    // worker
    public var event: String?
    public var worker: String?
    public var host: String?
    public var rank: Int?

    public init(kind: Kind, step: Int) { self.kind = kind; self.step = step }

    /// A train line: the log window's progress record, flat.
    public init(train r: StepReport) {
        self.init(kind: .train, step: r.step)
        epoch = r.epoch; loss = r.loss; trainAccuracy = r.trainAccuracy; lr = r.lr; gradNorm = r.gradNorm
        imagesPerSecond = r.imagesPerSecond; elapsedSeconds = r.elapsedSeconds
        bytesUpPerStep = r.bytesUpPerStep; bytesDownPerStep = r.bytesDownPerStep
        bytesUpRatioToDenseFp32 = r.bytesUpRatioToDenseFp32; bytesDownRatioToDenseFp32 = r.bytesDownRatioToDenseFp32
        if let s = r.sparsity { add(s) }
        imagesPerWorker = r.imagesPerWorker; imagesMissing = r.imagesMissing; varianceScale = r.varianceScale
        wireShare = r.wireShare; roundSeconds = r.roundSeconds
    }

    /// Adds a sparse run's figures.
    public mutating func add(_ s: SparsityReport) {
        density = s.density; sparsity = 1 - s.density; activeParameters = s.activeParameters; parameters = s.totalParameters
        flops = s.sparseFLOPs; denseFlops = s.denseFLOPs; flopsSaving = s.flopsSaving; explorationRate = s.explorationRate
        maskVersion = s.maskVersion; heads = s.heads; neurons = s.neurons
    }

    public static func encoder() -> JSONEncoder { RecordCoding.encoder() }
    public static func decoder() -> JSONDecoder { RecordCoding.decoder() }

    public func encoded() -> Data { (try? Self.encoder().encode(self)) ?? Data("{}".utf8) }
}

import Model

