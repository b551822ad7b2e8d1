import Core
import Foundation

/// A run as its metrics.jsonl tells it once no coordinator answers for it: how far it got,
/// how well, how long, and how it ended (`svite status RUN_DIR` on a finished, stopped or
/// killed run).
public struct RunHistory: Sendable, Equatable {
    public enum Ending: Sendable, Equatable {
        /// Every step made (an `end` record).
        case finished
        /// Stopped on request or by a problem (a `stopped` record, with its reason).
        case stopped(reason: String?)
        /// No closing record: the process was killed, or it is still running without a
        /// status socket (`--status none`).
        case noEnding
    }

    public var run: String?
    public var steps: Int
    public var totalSteps: Int?
    public var ending: Ending
    public var evalAccuracy: Double?
    public var evalLoss: Double?
    public var evalStep: Int?
    public var elapsedSeconds: Double?
    public var waitedSeconds: Double?
    /// Unix time of the last record.
    public var lastTime: Double?

    /// nil when the file has no records.
    public init?(records: [MetricsRecord]) {
        guard let last = records.last else { return nil }
        run = records.first(where: { $0.kind == .start })?.run
        totalSteps = records.last(where: { $0.totalSteps != nil })?.totalSteps
        steps = records.map(\.step).max() ?? 0
        switch last.kind {
        case .end: ending = .finished
        case .stopped: ending = .stopped(reason: last.reason)
        default: ending = .noEnding
        }
        if let e = records.last(where: { $0.kind == .eval }) { evalAccuracy = e.evalAccuracy; evalLoss = e.evalLoss; evalStep = e.step }
        elapsedSeconds = records.last(where: { $0.elapsedSeconds != nil })?.elapsedSeconds
        // Every session's wait (each end or stopped record names its own).
        let waits = records.compactMap(\.waitedSeconds)
        waitedSeconds = waits.isEmpty ? nil : waits.reduce(0, +)
        lastTime = last.time
    }

    /// For `--json`: the same facts under snake_case keys.
    public var json: [String: Any] {
        var d: [String: Any] = ["step": steps]
        switch ending {
        case .finished: d["state"] = "finished"
        case .stopped(let reason): d["state"] = "stopped"; if let reason { d["reason"] = reason }
        case .noEnding: d["state"] = "not running"
        }
        if let run { d["config"] = run }
        if let totalSteps { d["total_steps"] = totalSteps }
        if let evalAccuracy { d["eval_accuracy"] = evalAccuracy }
        if let evalLoss, evalLoss.isFinite { d["eval_loss"] = evalLoss }
        if let evalStep { d["eval_step"] = evalStep }
        if let elapsedSeconds { d["elapsed_seconds"] = elapsedSeconds }
        if let waitedSeconds { d["waited_seconds"] = waitedSeconds }
        return d
    }

    /// The command that exports a finished run's model for timm (every summary suggests it).
    public static func exportCommand(_ runDirectory: String) -> String {
        "svite export \(runDirectory) --out \(runDirectory)/model.safetensors"
    }

    public static func read(runDirectory: String) -> RunHistory? {
        RunHistory(records: MetricsLog.read("\(runDirectory)/metrics.jsonl"))
    }

    /// A few lines for a person; `runDirectory` goes into the commands suggested.
    public func text(runDirectory: String) -> String {
        var lines: [String] = []
        let of = totalSteps.map { " of \($0)" } ?? ""
        switch ending {
        case .finished:
            lines.append("\(runDirectory): finished, \(steps) steps\(of)")
        case .stopped(let reason):
            lines.append("\(runDirectory): stopped at step \(steps)\(of)" + (reason.map { " (\($0))" } ?? " (Ctrl-C or SIGTERM)"))
        case .noEnding:
            lines.append("\(runDirectory): not running, last record at step \(steps)\(of) and no end record: the process was killed "
                + "or is running without a status socket")
        }
        if let a = evalAccuracy {
            lines.append(String(format: "last eval:  top-1 %.2f%%, loss %.4f (step %d)", a * 100, evalLoss ?? .nan, evalStep ?? 0))
        }
        if let t = elapsedSeconds {
            lines.append("time:       \(clockText(t)) training" + (waitedSeconds.map { ", \(clockText($0)) waiting for workers" } ?? ""))
        }
        if let lastTime {
            lines.append("last word:  \(localTimeText(lastTime))")
        }
        switch ending {
        case _ where steps == 0: lines.append("next:       start it again with the same command (no step was made)")
        case .finished: lines.append("next:       \(Self.exportCommand(runDirectory)); svite plot \(runDirectory)")
        case .stopped, .noEnding: lines.append("next:       svite train --resume \(runDirectory) (or the coordinator with --resume), svite plot \(runDirectory)")
        }
        return lines.joined(separator: "\n")
    }
}
