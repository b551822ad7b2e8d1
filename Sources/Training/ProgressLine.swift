import Core
import Foundation

/// The live progress bar's text, fitted to the terminal: fields are dropped from the least
/// needed end until the line fits in `columns − 1` characters (a line as wide as the
/// terminal wraps on some terminals and leaves a stale line behind), and the bar itself
/// narrows on small terminals. `elapsed` and `eta` are given separately so the bar can be
/// redrawn between reports with the clock moving.
public enum ProgressLine {
    public static func bar(_ r: StepReport, epochs: Int, elapsed: Double, eta: Double, phase: String?, columns: Int) -> String {
        let limit = max(20, columns - 1)
        let frac = r.totalSteps > 0 ? min(1, Double(r.step) / Double(r.totalSteps)) : 1
        let epochs = max(epochs, 1)
        let epochText = "epoch \(min(Int(r.epoch) + 1, epochs))/\(epochs)"
        let counts = String(format: "%d/%d %3.0f%%", r.step, r.totalSteps, frac * 100)
        // Optional fields, most wanted first.
        let fields = [phase, "ETA \(clockText(eta))", String(format: "loss %.4f", r.loss), clockText(elapsed),
                      String(format: "%.0f img/s", r.imagesPerSecond), String(format: "lr %.2e", r.lr)].compactMap { $0 }
        for keep in stride(from: fields.count, through: 0, by: -1) {
            let tail = fields.prefix(keep).map { " | " + $0 }.joined()
            let fixed = epochText.count + 2 + counts.count + tail.count
            let width = min(24, limit - fixed)
            if width >= 8 || keep == 0 {
                let w = max(0, width)
                let filled = Int((frac * Double(w)).rounded(.down))
                let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: w - filled)
                let text = epochText + " " + bar + " " + counts + tail
                return text.count <= limit ? text : String(text.prefix(limit))
            }
        }
        return String((epochText + " " + counts).prefix(limit))
    }
}
