import Kernels
import Logging

extension Engine {
    /// Says what runs the matrix products (info, or `summaryLevel` where the caller shows
    /// it another way) and what is below the CPU's capability
    /// or could not be met (warnings).
    public static func log(_ report: EngineReport, to log: Logger, summaryLevel: Logger.Level = .info) {
        log.log(level: summaryLevel, "\(report.summary)")
        for w in report.warnings { log.warning("\(w)") }
    }
}
