import Core
import Foundation
import Training
#if canImport(Glibc)
import Glibc
#endif

/// Shows a training run on standard error: a live bar on a terminal, plain periodic
/// lines otherwise (logs, CI, Slurm output files).
final class ProgressDisplay {
    let interactive: Bool
    let plainInterval: Double
    var plan: TrainingPlan?
    var lastPlain = -Double.infinity
    let clock = MonotonicClock()
    var barShown = false
    var last: StepReport?

    init(interactive: Bool? = nil, plainInterval: Double = 15) {
        self.interactive = interactive ?? (isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb")
        self.plainInterval = plainInterval
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .started(let p):
            plan = p
            let resumed = p.startStep > 0 ? ", resuming at step \(p.startStep)" : ""
            line("training \(Format.count(p.parameters)) parameters on \(Format.count(p.trainImages)) images, "
                + "\(p.totalSteps) steps (\(p.stepsPerEpoch) per epoch), \(p.threads) thread(s)\(resumed)")
            line("run directory: \(p.runDirectory)")
        case .step(let r):
            last = r
            if interactive {
                drawBar(r, suffix: nil)
            } else if clock.seconds - lastPlain >= plainInterval || r.step == r.totalSteps {
                lastPlain = clock.seconds
                line(summary(r))
            }
        case .evaluating(let done, let total):
            if interactive, let r = last { drawBar(r, suffix: "evaluating \(done)/\(total)") }
        case .evaluated(let e):
            let perEpoch = plan?.stepsPerEpoch ?? 0
            let when = perEpoch > 0 && e.step % perEpoch == 0 ? "epoch \(e.step / perEpoch)"
                : String(format: "step %d (epoch %.2f)", e.step, perEpoch > 0 ? Double(e.step) / Double(perEpoch) : 0)
            line(String(format: "%@: test accuracy %.2f%%, loss %.4f (%d images, %.1f s)",
                        when, e.accuracy * 100, e.loss, e.images, e.seconds))
        case .checkpointed(let path, let step):
            if !interactive { line("checkpoint at step \(step): \(path)") }
        }
    }

    func summary(_ r: StepReport) -> String {
        String(format: "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.0f img/s  elapsed %@  ETA %@",
               r.step, r.totalSteps, r.epoch, r.loss, r.lr, r.imagesPerSecond,
               Format.duration(r.elapsedSeconds), Format.duration(r.etaSeconds))
    }

    func drawBar(_ r: StepReport, suffix: String?) {
        let width = 24
        let frac = r.totalSteps > 0 ? Double(r.step) / Double(r.totalSteps) : 1
        let filled = Int((frac * Double(width)).rounded(.down))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let epochs = plan.map { Int(ceil(Double($0.totalSteps) / Double($0.stepsPerEpoch))) } ?? 0
        let text = String(format: "epoch %d/%d %@ %d/%d %3.0f%% | loss %.4f | lr %.2e | %.0f img/s | %@ | ETA %@",
                          min(Int(r.epoch) + 1, max(epochs, 1)), max(epochs, 1), bar, r.step, r.totalSteps, frac * 100,
                          r.loss, r.lr, r.imagesPerSecond, Format.duration(r.elapsedSeconds), Format.duration(r.etaSeconds))
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text + (suffix.map { " | " + $0 } ?? "")).utf8))
        barShown = true
    }

    /// A whole line, clearing the bar first (it is redrawn by the next step).
    func line(_ text: String) {
        var out = text + "\n"
        if barShown { out = "\r\u{1B}[K" + out; barShown = false }
        FileHandle.standardError.write(Data(out.utf8))
    }

    func finish() {
        if barShown, let r = last { line(summary(r)) }
    }
}

enum Format {
    static func duration(_ s: Double) -> String {
        guard s.isFinite, s >= 0 else { return "--:--" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }

    static func count(_ n: Int) -> String {
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 10_000 { return String(format: "%.1fk", Double(n) / 1e3) }
        return "\(n)"
    }
}

/// Ctrl-C and SIGTERM ask the run to stop after the current step and checkpoint; a
/// second signal exits at once.
/// The signal sources are made once per process; later calls (an experiment's next
/// variant) only point them at the new run's flag, since a second source for the same
/// signal leaves neither delivering.
enum StopSignals {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []
    nonisolated(unsafe) static var target: (flag: StopFlag, message: @Sendable () -> Void)?
    static let lock = NSLock()

    static func install(_ flag: StopFlag, message: @escaping @Sendable () -> Void) {
        lock.withLock { target = (flag, message) }
        guard sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                guard let t = lock.withLock({ target }), !t.flag.isRaised else { exit(130) }
                t.flag.raise()
                t.message()
            }
            source.resume()
            sources.append(source)
        }
    }
}
