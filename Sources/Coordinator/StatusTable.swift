import Core
import Foundation

/// `svite status` as a table: the run's figures, then one row per worker with its speed,
/// and a mark on a straggler (a ready worker well below the others' median speed, which
/// holds every step back when the batch is split evenly).
public enum StatusTable {
    /// A ready worker below this fraction of the median images/s of the ready workers is a straggler.
    public static let stragglerFraction = 0.67

    /// `columns`: the terminal's width; the worker table leaves out its least needed
    /// columns (host, then bytes, then heard) until it fits.
    public static func render(_ d: StatusDocument, columns: Int = 80) -> String {
        var lines: [String] = []
        let workers = d.workers ?? []
        let ready = workers.filter(\.state.joined)
        lines.append("run \(d.runId ?? "?")  config \(d.config ?? "?")  state \(d.stateText)")
        if d.state == .starting || (d.step ?? 0) == 0 {
            // No step yet: there is no loss or speed to show, only who has come.
            lines.append("waiting for workers: \(ready.count) joined" + (d.totalSteps.map { ", \($0) steps to run" } ?? ""))
        } else {
            // The step follows the rounds as they finish; loss, lr and speed come with the
            // first log window ("–" until then).
            func shown(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "–" }
            lines.append(String(format: "step %d/%d  epoch %.2f  loss %@  lr %@  %@ img/s  ETA %@",
                                d.step ?? 0, d.totalSteps ?? 0, d.epoch ?? 0, shown(d.window?.loss, "%.4f"), shown(d.window?.lr, "%.2e"),
                                shown(d.window?.imagesPerSecond, "%.0f"), d.window.map { clockText($0.etaSeconds) } ?? "–"))
        }
        if let e = d.lastEval {
            lines.append(String(format: "last eval: top-1 %.2f%%, loss %.4f (step %d)", e.accuracy * 100, e.loss, e.step))
        }
        if let sp = d.window?.sparsity {
            lines.append(String(format: "sparsity %.1f%%: %.2fM active, FLOPs -%.1f%%, explored %.1f%%, masks v%d",
                                (1 - sp.density) * 100, Double(sp.activeParameters) / 1e6, sp.flopsSaving * 100,
                                sp.explorationRate * 100, sp.maskVersion))
        }
        if let b = d.lastStepBytes {
            lines.append(String(format: "per step: up %@ (%.3f× dense fp32), down %@ (%.3f×)",
                                bytes(Double(b.up)), b.upRatioToDenseFp32, bytes(Double(b.down)), b.downRatioToDenseFp32))
        }
        lines.append("")
        lines += workerRows(workers, columns: columns)
        if workers.isEmpty { lines.append("(no worker has joined)") }
        if let bad = d.badFrames, bad > 0 { lines.append("bad frames dropped: \(bad)") }
        if let c = d.curve {
            lines.append("CURVE: \(c.authorizedKeys.count) key(s) listed, \(c.admitted) let in, \(c.refusedKeys) refused for their key,")
            lines.append("       \(c.refusedHandshakes) refused before it (plaintext, wrong coordinator key)")
            if let last = c.lastRefusal { lines.append("       last refused: \(last)") }
        }
        return lines.joined(separator: "\n")
    }

    /// One row per worker, in columns chosen to fit `columns` characters; the straggler
    /// and refusal notes go on a line of their own under the row.
    static func workerRows(_ workers: [StatusDocument.WorkerStatus], columns: Int) -> [String] {
        typealias W = StatusDocument.WorkerStatus
        struct Column { var title: String; var width: Int; var right: Bool; var priority: Int; var value: (W) -> String }
        func cut(_ v: String, _ n: Int) -> String { v.count <= n ? v : String(v.prefix(n - 1)) + "…" }
        let all = [
            Column(title: "rank", width: 4, right: true, priority: 0) { "\($0.rank)" },
            Column(title: "id", width: 18, right: false, priority: 0) { cut($0.id, 18) },
            Column(title: "host", width: 12, right: false, priority: 4) { cut($0.host, 12) },
            Column(title: "state", width: 5, right: false, priority: 0) { $0.state.rawValue },
            Column(title: "heard", width: 6, right: true, priority: 2) { String(format: "%.1fs", $0.secondsSinceHeard) },
            Column(title: "steps", width: 6, right: true, priority: 0) { "\($0.stepsDone)" },
            Column(title: "share", width: 5, right: true, priority: 1) { "\($0.share)" },
            Column(title: "img/s", width: 6, right: true, priority: 0) { String(format: "%.0f", $0.imagesPerSecond) },
            Column(title: "up", width: 9, right: true, priority: 3) { bytes(Double($0.bytesUp)) },
            Column(title: "down", width: 9, right: true, priority: 3) { bytes(Double($0.bytesDown)) },
        ]
        var shown = all
        for drop in [4, 3, 2, 1] where shown.map({ $0.width + 2 }).reduce(-2, +) > columns - 1 {
            shown.removeAll { $0.priority == drop }
        }
        func row(_ cells: [String]) -> String {
            zip(shown, cells).map { c, v in
                let pad = String(repeating: " ", count: max(0, c.width - v.count))
                return c.right ? pad + v : v + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var lines = [row(shown.map(\.title))]
        let slow = stragglers(workers)
        for w in workers {
            lines.append(row(shown.map { $0.value(w) }))
            var notes: [String] = []
            if let f = slow[w.id] { notes.append(String(format: "straggler: %.2f× the median img/s", f)) }
            if w.refused > 0 { notes.append("\(w.refused) answer(s) refused") }
            if let missed = w.missedSteps {
                let last = w.secondsSinceAnswer.map { String(format: "last answer in time %.1f s ago", $0) } ?? "no answer in time yet"
                notes.append("missed \(missed) step deadline(s) (\(w.missedImages ?? 0) images left out); \(last)"
                    + (w.state == .stuck ? "; benched: no share until it is tried again" : ""))
            }
            if !notes.isEmpty { lines.append("      ↳ \(w.id): " + notes.joined(separator: "; ")) }
        }
        return lines
    }

    /// Ready workers with a measured speed below `stragglerFraction` of the median of
    /// them all, by id, with their fraction of it (none among fewer than two).
    public static func stragglers(_ workers: [StatusDocument.WorkerStatus]) -> [String: Double] {
        let timed = workers.filter { $0.state.takesPart && $0.imagesPerSecond > 0 }
        guard timed.count >= 2 else { return [:] }
        let speeds = timed.map(\.imagesPerSecond).sorted()
        let median = speeds.count % 2 == 1 ? speeds[speeds.count / 2] : (speeds[speeds.count / 2 - 1] + speeds[speeds.count / 2]) / 2
        var out: [String: Double] = [:]
        for w in timed where w.imagesPerSecond < stragglerFraction * median { out[w.id] = w.imagesPerSecond / median }
        return out
    }

    public static func bytes(_ b: Double) -> String {
        if b >= 1_073_741_824 { return String(format: "%.2f GiB", b / 1_073_741_824) }
        if b >= 1_048_576 { return String(format: "%.2f MiB", b / 1_048_576) }
        if b >= 1024 { return String(format: "%.1f KiB", b / 1024) }
        return "\(Int(b)) B"
    }
}
