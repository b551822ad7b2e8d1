import Core
import Foundation
import Training
#if canImport(Glibc)
import Glibc
#endif

/// Shows a training run on standard error: a live bar on a terminal, plain periodic
/// lines otherwise (logs, CI, Slurm output files). The bar is redrawn every second between
/// the trainer's reports (elapsed and ETA moving with the clock), fits the terminal's
/// width, and stays through an evaluation with the phase in it.
final class ProgressDisplay: @unchecked Sendable {
    let interactive: Bool
    let plainInterval: Double
    var plan: TrainingPlan?
    var lastPlain = -Double.infinity
    let clock = MonotonicClock()
    var barShown = false
    var last: StepReport?
    /// When `last` arrived, and what the run is doing now (nil: training).
    var lastAt = 0.0
    var phase: String?
    /// When the current wait for workers began (nil: not waiting).
    var waitingSince: Double?
    let lock = NSLock()
    var ticker: DispatchSourceTimer?

    init(interactive: Bool? = nil, plainInterval: Double = 15) {
        self.interactive = interactive ?? (isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb")
        self.plainInterval = plainInterval
        if self.interactive {
            let t = DispatchSource.makeTimerSource(queue: .global())
            t.schedule(deadline: .now() + 1, repeating: 1)
            t.setEventHandler { [weak self] in self?.tick() }
            t.resume()
            ticker = t
            TerminalLog.setWriter { [weak self] text in self?.writeLog(text) ?? FileHandle.standardError.write(text) }
        }
    }

    deinit { ticker?.cancel() }

    func handle(_ event: TrainingEvent) {
        lock.lock(); defer { lock.unlock() }
        switch event {
        case .started(let p):
            plan = p
            let resumed = p.startStep > 0 ? ", resuming at step \(p.startStep)" : ""
            line(p.engine)
            line("training \(Format.count(p.parameters)) parameters on \(Format.count(p.trainImages)) images, "
                + "\(p.totalSteps) steps (\(p.stepsPerEpoch) per epoch), \(p.threads) thread(s)\(resumed)")
            if let wire = p.wire { line(wire) }
            line("run directory: \(p.runDirectory)")
        case .waiting(let connected, let needed):
            phase = "waiting for workers (\(connected)/\(needed))"
            // Said once a wait (the joins are logged as they come); the bar shows the count.
            if interactive && last != nil { drawBar() } else if waitingSince == nil { line("\(phase!): the clock starts at the first step") }
            waitingSince = waitingSince ?? clock.seconds
        case .ready:
            // The wait's seconds are not training time: the bar's clock goes on from where
            // it stopped when the wait began.
            if let since = waitingSince, last != nil { lastAt += clock.seconds - since }
            if phase?.hasPrefix("waiting") ?? false { phase = nil }
            waitingSince = nil
        case .advanced(let step):
            guard var r = last, step > r.step else { return }
            // Between log windows the bar moves with every step; the ETA is the last
            // window's speed over the steps left.
            let perStep = r.etaSeconds / Double(max(1, r.totalSteps - r.step))
            r.elapsedSeconds += clock.seconds - lastAt
            r.step = step
            r.epoch = Double(step) / Double(max(1, plan?.stepsPerEpoch ?? 1))
            r.etaSeconds = perStep * Double(r.totalSteps - step)
            last = r
            lastAt = clock.seconds
            if interactive { drawBar() }
        case .step(let r):
            last = r
            lastAt = clock.seconds
            phase = nil
            waitingSince = nil
            if interactive {
                drawBar()
            } else if clock.seconds - lastPlain >= plainInterval || r.step == r.totalSteps {
                lastPlain = clock.seconds
                line(summary(r))
            }
        case .evaluating(let done, let total):
            phase = "evaluating \(done)/\(total)"
            if interactive { drawBar() }
        case .evaluated(let e):
            phase = nil
            let perEpoch = plan?.stepsPerEpoch ?? 0
            let when = perEpoch > 0 && e.step % perEpoch == 0 ? "epoch \(e.step / perEpoch)"
                : String(format: "step %d (epoch %.2f)", e.step, perEpoch > 0 ? Double(e.step) / Double(perEpoch) : 0)
            line(String(format: "%@: test accuracy %.2f%%, loss %.4f (%d images, %.1f s)",
                        when, e.accuracy * 100, e.loss, e.images, e.seconds))
            if interactive { drawBar() }
        case .checkpointed(let path, let step):
            if !interactive { line("checkpoint at step \(step): \(path)") }
        }
    }

    /// The timer: the bar again, with the clock moved on since the last report.
    func tick() {
        lock.lock(); defer { lock.unlock() }
        if last != nil { drawBar() }
    }

    /// A log line, written with the bar cleared first (the next step or tick redraws it),
    /// under the display's lock so no redraw comes between.
    func writeLog(_ text: Data) {
        lock.lock(); defer { lock.unlock() }
        if barShown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)); barShown = false }
        FileHandle.standardError.write(text)
    }

    func summary(_ r: StepReport) -> String {
        String(format: "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.0f img/s  elapsed %@  ETA %@",
               r.step, r.totalSteps, r.epoch, r.loss, r.lr, r.imagesPerSecond,
               Format.duration(r.elapsedSeconds), Format.duration(r.etaSeconds))
    }

    /// (Under `lock`.)
    func drawBar() {
        guard let r = last else { return }
        let since = max(0, clock.seconds - lastAt)
        let epochs = plan.map { Int(ceil(Double($0.totalSteps) / Double(max(1, $0.stepsPerEpoch)))) } ?? 0
        // The clocks move only while training (an evaluation is not in the ETA, a wait for
        // workers in neither).
        let waiting = waitingSince != nil
        let eta = phase == nil ? max(0, r.etaSeconds - since) : r.etaSeconds
        let text = ProgressLine.bar(r, epochs: epochs, elapsed: r.elapsedSeconds + (waiting ? 0 : since), eta: eta, phase: phase,
                                    columns: Self.terminalColumns())
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
        barShown = true
    }

    /// The terminal's width (80 when it does not say).
    static func terminalColumns(_ fd: Int32 = STDERR_FILENO) -> Int {
        var w = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0 { return Int(w.ws_col) }
        return Int(ProcessInfo.processInfo.environment["COLUMNS"] ?? "") ?? 80
    }

    /// A whole line, clearing the bar first (it is redrawn by the next step or tick).
    func line(_ text: String) {
        var out = text + "\n"
        if barShown { out = "\r\u{1B}[K" + out; barShown = false }
        FileHandle.standardError.write(Data(out.utf8))
    }

    func finish() {
        lock.lock(); defer { lock.unlock() }
        ticker?.cancel()
        ticker = nil
        TerminalLog.setWriter(nil)
        if barShown, let r = last { line(summary(r)) }
        last = nil
    }
}

enum Format {
    static func duration(_ s: Double) -> String { clockText(s) }

    static func count(_ n: Int) -> String {
        if n >= 1_000_000 { return String(format: "%.2fM", Double(n) / 1e6) }
        if n >= 10_000 { return String(format: "%.1fk", Double(n) / 1e3) }
        return "\(n)"
    }
}

/// Ctrl-C and SIGTERM ask the run to stop after the current step and checkpoint; a second
/// Ctrl-C exits at once. A second SIGTERM does not: supervisors send it more than once (Slurm's
/// `scancel --full` reaches a job step directly and through its batch script), and one that
/// wants the process gone sends SIGKILL.
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
                guard let t = lock.withLock({ target }) else { exit(130) }
                if t.flag.isRaised {
                    if sig == SIGINT { exit(130) }
                    return
                }
                t.flag.raise()
                t.message()
            }
            source.resume()
            sources.append(source)
        }
    }
}
