import Foundation

/// `compute.backend` and `--backend`: which library runs the fp32 matrix products.
public enum BackendChoice: String, Sendable, CaseIterable, Codable {
    /// oneDNN on x86-64 (it picks kernels from CPU features and was measured faster),
    /// OpenBLAS elsewhere or when oneDNN cannot start.
    case auto
    case onednn
    case openblas
}

/// What runs the matrix products in this process, and what was wrong with the choice.
public struct EngineReport: Sendable, Equatable {
    public var backend: GEMMBackend
    /// The precision the products run in (fp32 when bf16 was asked for on a CPU without
    /// native bf16 products).
    public var precision: Precision
    public var cpuLevel: ISALevel
    /// One line for the log: backend, instruction set, precision.
    public var summary: String
    /// A choice below what the CPU can do, or a request that could not be met.
    public var warnings: [String]
}

/// Chooses the kernels at start-up from the CPU's features and the config, sets them for
/// the process (`MatMul.backend`), and says what runs.
public enum Engine {
    /// The facts a choice depends on, gathered from the process (or given by a test).
    public struct Facts: Sendable {
        public var cpu: CPUFeatures
        public var isX86_64: Bool
        /// oneDNN's CPU engine could be made (the error otherwise).
        public var oneDNNError: String?
        public var oneDNNLevel: ISALevel
        public var oneDNNISA: String
        public var openBLASCore: String
        /// OPENBLAS_CORETYPE as the user set it, if at all.
        public var openBLASCoreType: String?

        public init(cpu: CPUFeatures, isX86_64: Bool, oneDNNError: String?, oneDNNLevel: ISALevel, oneDNNISA: String,
                    openBLASCore: String, openBLASCoreType: String?) {
            self.cpu = cpu; self.isX86_64 = isX86_64; self.oneDNNError = oneDNNError; self.oneDNNLevel = oneDNNLevel
            self.oneDNNISA = oneDNNISA; self.openBLASCore = openBLASCore; self.openBLASCoreType = openBLASCoreType
        }

        public static func current() -> Facts {
            #if arch(x86_64)
            let x86 = true
            #else
            let x86 = false
            #endif
            let err: String? = switch OneDNN.engineResult { case .success: nil; case .failure(let e): e.description }
            return Facts(cpu: .current, isX86_64: x86, oneDNNError: err, oneDNNLevel: OneDNN.effectiveLevel,
                         oneDNNISA: OneDNN.effectiveISA, openBLASCore: BLAS.coreName,
                         openBLASCoreType: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"])
        }
    }

    /// The decision alone, a pure function of the facts (tested with made-up CPUs).
    public static func decide(backend choice: BackendChoice, precision: Precision, facts f: Facts) -> EngineReport {
        let level = f.cpu.level
        var warnings: [String] = []
        var backend: GEMMBackend
        switch choice {
        case .openblas: backend = .openblas
        case .onednn: backend = .onednn
        case .auto: backend = f.isX86_64 ? .onednn : .openblas
        }
        if backend == .onednn, let e = f.oneDNNError {
            warnings.append("oneDNN cannot start (\(e)); the matrix products run on OpenBLAS instead")
            backend = .openblas
        }
        var effective = precision
        if precision == .bf16 {
            if !level.hasNativeBF16 {
                warnings.append("bf16 needs a CPU with AVX512-BF16 or AMX-BF16, this one has \(level): running fp32 (set training.precision: fp32 to silence this)")
                effective = .fp32
            } else if f.oneDNNError != nil {
                warnings.append("bf16 runs on oneDNN, which cannot start: running fp32")
                effective = .fp32
            }
        }
        let usesOneDNN = backend == .onednn || effective == .bf16
        let obLevel = OpenBLASCore.level(ofCore: f.openBLASCore)
        let obBest = OpenBLASCore.bestCore(for: level)
        if backend == .openblas, let obLevel, obLevel < min(level, OpenBLASCore.level(ofCore: obBest) ?? level) {
            let how = f.openBLASCoreType.map { "OPENBLAS_CORETYPE=\($0) is set: unset it or set OPENBLAS_CORETYPE=\(obBest)" }
                ?? "set OPENBLAS_CORETYPE=\(obBest)"
            warnings.append("OpenBLAS runs its \(f.openBLASCore) kernels (\(obLevel)), below what this CPU supports (\(level)): \(how), or use compute.backend: onednn")
        }
        if usesOneDNN, f.oneDNNLevel < level {
            warnings.append("oneDNN runs \(f.oneDNNISA) kernels, below what this CPU supports (\(level)); is ONEDNN_MAX_CPU_ISA set?")
        }
        var what: String
        switch backend {
        case .onednn: what = "oneDNN \(f.oneDNNISA)"
        case .openblas: what = "OpenBLAS \(f.openBLASCore) kernels"
        }
        if effective == .bf16 {
            what = backend == .onednn ? "oneDNN \(f.oneDNNISA), bf16 products" : "\(what) (fp32), oneDNN \(f.oneDNNISA) (bf16 products)"
        } else {
            what += ", fp32 products"
        }
        let summary = "matrix products: \(what); CPU \(level) (\(f.cpu.summaryFlags.joined(separator: " ")))"
        return EngineReport(backend: backend, precision: effective, cpuLevel: level, summary: summary, warnings: warnings)
    }

    /// Decides from this process's facts and sets `MatMul.backend`.
    @discardableResult
    public static func configure(backend: BackendChoice, precision: Precision) -> EngineReport {
        let report = decide(backend: backend, precision: precision, facts: .current())
        MatMul.backend = report.backend
        return report
    }

    /// The OpenBLAS core type to start the process with, or nil to leave it be: only when
    /// the user has not set OPENBLAS_CORETYPE, and OpenBLAS picked kernels below the CPU's
    /// level (its model table does not know the CPU). OpenBLAS reads the variable once,
    /// when it loads, so the CLI sets it and starts itself again (`Relaunch`).
    public static func openBLASCoreToSet(environment: [String: String], runningCore: String, cpu: CPUFeatures) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, environment["SVITE_OPENBLAS_RELAUNCHED"] == nil else { return nil }
        let best = OpenBLASCore.bestCore(for: cpu.level)
        guard let running = OpenBLASCore.level(ofCore: runningCore), let bestLevel = OpenBLASCore.level(ofCore: best),
              running < bestLevel else { return nil }
        return best
    }
}
