import Kernels
import Logging

extension Engine {
    /// Says what runs the matrix products (info) and what is below the CPU's capability
    /// or could not be met (warnings).
    public static func log(_ report: EngineReport, to log: Logger) {
        log.info("\(report.summary)")
        for w in report.warnings { log.warning("\(w)") }
    }
}
