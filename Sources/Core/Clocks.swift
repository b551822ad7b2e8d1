import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Seconds since creation on the monotonic clock.
public struct MonotonicClock: Sendable {
    let start = DispatchTime.now().uptimeNanoseconds
    public init() {}
    public var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}

/// Wall-clock timing of a body, and the median of such timings.
public enum Stopwatch {
    public static func seconds(_ body: () -> Void) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The fastest of `repeats` timings of `body`, after one untimed run.
    public static func best(of repeats: Int, _ body: () -> Void) -> Double {
        body()
        return (0 ..< max(1, repeats)).map { _ in seconds(body) }.min()!
    }

    public static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        if s.isEmpty { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

/// CPU seconds (user + system, every thread) this process has used since creation. It is
/// less sensitive to a busy machine than wall time, but not immune: oneDNN's and OpenMP's
/// threads spin while they wait for a core, so a starved run burns more (one run used 2.8x
/// its idle CPU seconds beside a build). Step-time comparisons belong in `svite bench`.
public struct ProcessCPUClock: Sendable {
    let start = ProcessCPUClock.now()
    public init() {}
    public var seconds: Double { ProcessCPUClock.now() - start }

    static func now() -> Double {
        var u = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &u) == 0 else { return 0 }
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(u.ru_utime) + s(u.ru_stime)
    }
}

/// Set from a signal handler or another thread; the run checkpoints and returns at the
/// end of the current step.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    public init() {}
    public func raise() { lock.lock(); raised = true; lock.unlock() }
    public var isRaised: Bool { lock.lock(); defer { lock.unlock() }; return raised }
}
