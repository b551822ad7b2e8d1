import Core
import Foundation

/// `svite status` as a table: the run's figures, then one row per worker with its speed,
/// and a mark on a straggler (a ready worker well below the others' median speed, which
/// holds every step back when the batch is split evenly).
public enum StatusTable {
    /// A ready worker below this fraction of the median images/s of the ready workers is a straggler.
    public static let stragglerFraction = 0.67

    public static func render(_ d: StatusDocument) -> String {
        var lines: [String] = []
        let workers = d.workers ?? []
        let ready = workers.filter { $0.state == "ready" }
        lines.append("run \(d.runId ?? "?")  config \(d.config ?? "?")  state \(d.state ?? "?")")
        if d.state == "starting" || (d.step ?? 0) == 0 {
            // No step yet: there is no loss or speed to show, only who has come.
            lines.append("waiting for workers: \(ready.count) joined" + (d.totalSteps.map { ", \($0) steps to run" } ?? ""))
        } else {
            // The step follows the rounds as they finish; loss, lr and speed come with the
            // first log window ("–" until then).
            func shown(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "–" }
            lines.append(String(format: "step %d/%d  epoch %.2f  loss %@  lr %@  %@ img/s  ETA %@",
                                d.step ?? 0, d.totalSteps ?? 0, d.epoch ?? 0, shown(d.loss, "%.4f"), shown(d.lr, "%.2e"),
                                shown(d.imagesPerSecond, "%.0f"), d.etaSeconds.map { clockText($0) } ?? "–"))
        }
        if let acc = d.evalAccuracy {
            lines.append(String(format: "last eval: top-1 %.2f%%, loss %.4f (step %d)", acc * 100, d.evalLoss ?? .nan, d.evalStep ?? 0))
        }
        if let sp = d.sparsity {
            lines.append(String(format: "sparsity %.1f%%: %.2fM parameters active, FLOPs saving %.1f%%, explored %.1f%%, mask version %d",
                                (1 - sp.density) * 100, Double(sp.activeParameters) / 1e6, sp.flopsSaving * 100,
                                sp.explorationRate * 100, sp.maskVersion))
        }
        if let up = d.bytesUpPerStep, let down = d.bytesDownPerStep {
            lines.append(String(format: "bytes per step: up %@ (%.3f× dense fp32), down %@ (%.3f×)",
                                bytes(Double(up)), d.bytesUpRatioToDenseFp32 ?? 0, bytes(Double(down)), d.bytesDownRatioToDenseFp32 ?? 0))
        }
        lines.append("")
        lines.append("rank  id                        host              state   heard   steps  share    img/s  up          down")
        let slow = stragglers(workers)
        for w in workers {
            func pad(_ v: String, _ n: Int) -> String { String(v.prefix(n)).padding(toLength: n, withPad: " ", startingAt: 0) }
            var row = String(format: "%4d  ", w.rank) + pad(w.id, 24) + "  " + pad(w.host, 16) + "  " + pad(w.state, 6)
                + String(format: "  %5.1fs  %6d  %5d  %7.0f  ", w.secondsSinceHeard, w.stepsDone, w.share, w.imagesPerSecond)
                + pad(bytes(Double(w.bytesUp)), 10) + "  " + bytes(Double(w.bytesDown))
            if let f = slow[w.id] { row += String(format: "  ← straggler (%.2f× the median img/s)", f) }
            if w.refused > 0 { row += "  \(w.refused) answer(s) refused" }
            lines.append(row)
        }
        if workers.isEmpty { lines.append("(no worker has joined)") }
        if let bad = d.badFrames, bad > 0 { lines.append("bad frames dropped: \(bad)") }
        if let c = d.curve {
            lines.append("CURVE: \(c.authorizedKeys.count) key(s) admitted by the allow-list, \(c.admitted) handshake(s) let in, \(c.refusedKeys) refused for their key, \(c.refusedHandshakes) refused before (plaintext, wrong coordinator key)"
                + (c.lastRefusal.map { "; last: \($0)" } ?? ""))
        }
        return lines.joined(separator: "\n")
    }

    /// Ready workers with a measured speed below `stragglerFraction` of the median of
    /// them all, by id, with their fraction of it (none among fewer than two).
    public static func stragglers(_ workers: [StatusDocument.WorkerStatus]) -> [String: Double] {
        let timed = workers.filter { $0.state == "ready" && $0.imagesPerSecond > 0 }
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
